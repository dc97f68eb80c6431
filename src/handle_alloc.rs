//! Allocation and deallocation of `Handle` and `TimerHandle` objects:
//! allocated outside the cyclic collector's allocation count, built without
//! PyO3's initializer (see `new_handle`), freed without PyO3's trampoline
//! (see `dealloc`), and a `Handle`'s memory kept for the next one (see
//! `FreeList`).
//!
//! PyO3 makes every class a GC type, and CPython counts each new GC object
//! towards the next collection, whether or not it is ever tracked. The loop
//! makes a handle per call_soon, task step and timer and untracks it at once
//! (see `Handle::settle_tracking`), so those objects can never be part of a
//! collection; counting them only made collections more frequent. With
//! 20,000 sleeping tasks each holding a live timer, that was a quarter more
//! full rescans of every task, coroutine and future than a loop whose
//! handles are plain objects (gather of sleeps: 344 collections against 284).
//!
//! So the two classes get their own `tp_alloc`/`tp_free`: the same memory
//! layout as CPython's (a zeroed `PyGC_Head` in front of the object, which
//! reads as "not tracked"), without touching the count. A handle that must be
//! collectable (fd callbacks, signal handlers, debug mode) is tracked by hand
//! after creation and untracked by PyO3's dealloc as usual. Instances of any
//! other type that inherits these slots (a Python subclass) take CPython's
//! own path, since their layout may carry more in front of the object.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::Relaxed};

use pyo3::ffi;
use pyo3::impl_::pycell::PyClassObjectBaseLayout;
use pyo3::impl_::pyclass::PyClassImpl;
use pyo3::prelude::*;
use pyo3::Borrowed;
use pyo3::PyClassInitializer;
use pyo3::PyTypeInfo;

use crate::handles::{Handle, TimerHandle};

/// CPython's `PyGC_Head`: two machine words on every supported version
/// (3.10-3.13, default build).
const GC_HEAD: usize = 2 * std::mem::size_of::<usize>();

static HANDLE_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());
static TIMER_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// Set by `install` once the layout below is confirmed.
static DIRECT: AtomicBool = AtomicBool::new(false);

/// Where PyO3 puts the parts of the two objects (checked by `install`): a
/// handle's Rust value right after the object header, then its weakref
/// list; a timer's own value after all of its handle part.
const HANDLE_VALUE: usize = size_of::<ffi::PyObject>();
const WEAKLIST: usize = HANDLE_VALUE + size_of::<Handle>();
const TIMER_VALUE: usize = WEAKLIST + size_of::<*mut ffi::PyObject>();

/// Whether handles are built by `new_handle`/`new_timer` below rather than
/// PyO3's initializer (false only if PyO3's layout was not recognized).
pub(crate) fn builds_directly() -> bool {
    DIRECT.load(Relaxed)
}

/// A new handle object holding `value`, born untracked (see `alloc`).
///
/// PyO3's initializer calls the base type's `tp_new` (CPython's
/// `object_new`, with an empty argument tuple and its checks) only to reach
/// `tp_alloc`; with it, making the object was 4% of the call_soon row.
/// Here the value and the empty weakref list are written where PyO3's own
/// accessors read them, which `install` checked.
#[inline(always)]
pub(crate) fn new_handle(py: Python<'_>, value: Handle) -> PyResult<Py<Handle>> {
    if !DIRECT.load(Relaxed) {
        return Py::new(py, value);
    }
    // SAFETY: `DIRECT` means the offsets above are those of PyO3's layout
    // for this type, and `alloc` returns room for all of it.
    unsafe {
        let obj = new_object(py, HANDLE_TYPE.load(Relaxed))?;
        write_handle_part(obj, value);
        Ok(Bound::from_owned_ptr(py, obj)
            .cast_into_unchecked::<Handle>()
            .unbind())
    }
}

/// `new_handle` for a timer: its handle part, then its own value.
#[inline(always)]
pub(crate) fn new_timer(
    py: Python<'_>,
    base: Handle,
    value: TimerHandle,
) -> PyResult<Py<TimerHandle>> {
    if !DIRECT.load(Relaxed) {
        return Py::new(py, PyClassInitializer::from(base).add_subclass(value));
    }
    // SAFETY: as in `new_handle`.
    unsafe {
        let obj = new_object(py, TIMER_TYPE.load(Relaxed))?;
        write_handle_part(obj, base);
        ptr::write(
            obj.cast::<u8>().add(TIMER_VALUE).cast::<TimerHandle>(),
            value,
        );
        Ok(Bound::from_owned_ptr(py, obj)
            .cast_into_unchecked::<TimerHandle>()
            .unbind())
    }
}

/// # Safety
/// `tp` is one of the two types, `alloc` installed on it; GIL held.
#[inline(always)]
unsafe fn new_object(py: Python<'_>, tp: *mut ffi::PyTypeObject) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: by the contract.
    let obj = unsafe { alloc(tp, 0) };
    if obj.is_null() {
        Err(PyErr::fetch(py))
    } else {
        Ok(obj)
    }
}

/// # Safety
/// `obj` is fresh from `new_object`, its contents not written yet.
#[inline(always)]
unsafe fn write_handle_part(obj: *mut ffi::PyObject, value: Handle) {
    // SAFETY: by the contract, both offsets are inside the object and
    // suitably aligned (`install` checked them).
    unsafe {
        let body = obj.cast::<u8>();
        ptr::write(body.add(HANDLE_VALUE).cast::<Handle>(), value);
        ptr::write(
            body.add(WEAKLIST).cast::<*mut ffi::PyObject>(),
            ptr::null_mut(),
        );
    }
}

/// True if PyO3 lays out both classes as the offsets above say: the sizes
/// and weakref offset CPython was given, and where PyO3's accessors find
/// the values of objects its own initializer made.
fn layout_is_known(py: Python<'_>) -> bool {
    let (handle_tp, timer_tp) = (
        Handle::type_object_raw(py),
        TimerHandle::type_object_raw(py),
    );
    // SAFETY: live type objects, GIL held.
    let (handle_tp, timer_tp) = unsafe { (&*handle_tp, &*timer_tp) };
    let word = align_of::<*mut ffi::PyObject>();
    if align_of::<Handle>() > word
        || align_of::<TimerHandle>() > word
        || size_of::<Handle>() % word != 0
        || handle_tp.tp_basicsize as usize != TIMER_VALUE
        || handle_tp.tp_weaklistoffset as usize != WEAKLIST
        || timer_tp.tp_basicsize as usize != TIMER_VALUE + size_of::<TimerHandle>()
        || timer_tp.tp_weaklistoffset as usize != WEAKLIST
    {
        return false;
    }
    let (Ok(handle), Ok(timer)) = (
        Bound::new(py, Handle::probe(py)),
        Bound::new(
            py,
            PyClassInitializer::from(Handle::probe(py)).add_subclass(TimerHandle::new(0.0)),
        ),
    ) else {
        return false;
    };
    let offset =
        |obj: *mut ffi::PyObject, part: *const u8| (part as usize).wrapping_sub(obj as usize);
    offset(handle.as_ptr(), ptr::from_ref(handle.get()).cast()) == HANDLE_VALUE
        && offset(timer.as_ptr(), ptr::from_ref(timer.as_super().get()).cast()) == HANDLE_VALUE
        && offset(timer.as_ptr(), ptr::from_ref(timer.get()).cast()) == TIMER_VALUE
}

fn is_ours(tp: *mut ffi::PyTypeObject) -> bool {
    !tp.is_null() && (tp == HANDLE_TYPE.load(Relaxed) || tp == TIMER_TYPE.load(Relaxed))
}

/// True if `obj` was made by `alloc` above, and so was born untracked.
#[inline]
pub(crate) fn born_untracked(obj: &Bound<'_, PyAny>) -> bool {
    is_ours(obj.get_type_ptr())
}

/// Memory of freed `Handle` objects, kept for the next ones instead of
/// going back to pymalloc.
///
/// A thread calling `call_soon_threadsafe` in a loop queues callbacks for
/// a whole switch interval while the loop waits for the GIL; the loop then
/// frees them all. Returned to pymalloc, those blocks emptied whole arenas,
/// which pymalloc unmaps, and the next burst faulted fresh pages back in:
/// on two CPUs, four times the page faults of one CPU and a quarter less
/// throughput. Kept here, the next burst reuses them.
struct FreeList {
    /// The last block freed; each block's first word holds the next.
    head: UnsafeCell<*mut u8>,
    len: UnsafeCell<usize>,
}

/// Enough for the bursts above (a switch interval of `call_soon_threadsafe`
/// calls) and bounded: FREE_HANDLES_MAX * 112 bytes at most.
const FREE_HANDLES_MAX: usize = 32 * 1024;

// SAFETY: only `alloc` and `free` touch it, and CPython calls both with the
// GIL held (the module is declared `gil_used`, so a free-threaded build
// re-enables the GIL); neither runs Python code in between.
unsafe impl Sync for FreeList {}

static FREE_HANDLES: FreeList = FreeList {
    head: UnsafeCell::new(ptr::null_mut()),
    len: UnsafeCell::new(0),
};

impl FreeList {
    /// A kept block, or null. Caller holds the GIL.
    #[inline(always)]
    unsafe fn pop(&self) -> *mut u8 {
        // SAFETY: GIL held (see the Sync impl); a non-null head is a block
        // pushed below, whose first word is the next block or null.
        unsafe {
            let block = *self.head.get();
            if !block.is_null() {
                *self.head.get() = *block.cast::<*mut u8>();
                *self.len.get() -= 1;
            }
            block
        }
    }

    /// Keeps `block` if there is room; false if the caller must free it.
    #[inline(always)]
    unsafe fn push(&self, block: *mut u8) -> bool {
        // SAFETY: GIL held (see the Sync impl); `block` is a whole handle
        // allocation no longer in use, at least a word long.
        unsafe {
            if *self.len.get() >= FREE_HANDLES_MAX {
                return false;
            }
            *block.cast::<*mut u8>() = *self.head.get();
            *self.head.get() = block;
            *self.len.get() += 1;
            true
        }
    }
}

unsafe extern "C" fn alloc(
    tp: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY (whole function): called by CPython's object_new with a live
    // type and the GIL held.
    unsafe {
        if nitems != 0 || !is_ours(tp) {
            return ffi::PyType_GenericAlloc(tp, nitems);
        }
        let size = GC_HEAD + (*tp).tp_basicsize as usize;
        // Only the `PyGC_Head` is zeroed ("not tracked"): PyO3 writes every
        // field of the class contents right after this returns, and
        // PyObject_Init the object header. Zeroing the whole block went
        // through a generic memset per handle (2% of the call_soon row).
        let mut memory = ptr::null_mut();
        if tp == HANDLE_TYPE.load(Relaxed) {
            memory = FREE_HANDLES.pop();
        }
        if memory.is_null() {
            memory = ffi::PyObject_Malloc(size).cast::<u8>();
        }
        if memory.is_null() {
            return ffi::PyErr_NoMemory();
        }
        std::ptr::write_bytes(memory, 0, GC_HEAD);
        let obj = memory.add(GC_HEAD).cast::<ffi::PyObject>();
        // Sets the type (a new reference: heap type) and the refcount.
        ffi::PyObject_Init(obj, tp)
    }
}

unsafe extern "C" fn free(obj: *mut c_void) {
    // SAFETY (whole function): called from the instance's dealloc with the
    // GIL held, while its type is still alive; PyO3's dealloc untracked it.
    unsafe {
        let tp = ffi::Py_TYPE(obj.cast());
        if is_ours(tp) {
            let block = obj.cast::<u8>().sub(GC_HEAD);
            if tp != HANDLE_TYPE.load(Relaxed) || !FREE_HANDLES.push(block) {
                ffi::PyObject_Free(block.cast());
            }
        } else {
            ffi::PyObject_GC_Del(obj);
        }
    }
}

/// tp_dealloc of both classes: PyO3's own steps, without its trampoline.
///
/// The trampoline marks the thread as attached in a thread-local and
/// catches panics. For an object freed per callback, that thread-local
/// alone was about 1.7% of the futures row. Neither is needed here:
/// - the handle's `Py` fields are released with the GIL token first
///   (`Handle::release_held`), and its `Drop` only decrefs, so no `Py` is
///   dropped without proof of the GIL (which PyO3 would defer to its pool);
/// - a panic cannot unwind out of an `extern "C"` function: it aborts, as
///   PyO3's trap does.
///
/// Depends on PyO3's (hidden) layout API, which this crate pins by version.
unsafe extern "C" fn dealloc<T: PyClassImpl>(obj: *mut ffi::PyObject) {
    // SAFETY (whole function): CPython calls tp_dealloc with the GIL held
    // on an object of type T (or a subclass, which extends Handle either
    // way) whose refcount reached zero; the borrowed view takes no
    // reference, and PyO3's layout dealloc is the one this slot held.
    unsafe {
        ffi::PyObject_GC_UnTrack(obj.cast());
        let py = Python::assume_attached();
        Borrowed::from_ptr(py, obj)
            .cast_unchecked::<Handle>()
            .get()
            .release_held(py);
        <T::Layout as PyClassObjectBaseLayout<T>>::tp_dealloc(py, obj);
    }
}

/// Flags that put more than the `PyGC_Head` in front of an object (3.12+);
/// with them the layout above would be wrong, and CPython's slots stay.
const PRE_HEADER_FLAGS: std::ffi::c_ulong = (1 << 3) | (1 << 4);

/// Installs the slots on both classes; called once from module init, before
/// any instance exists.
pub(crate) fn install(py: Python<'_>) {
    // A free-threaded build keeps the collector's state inside the object
    // header, not in a `PyGC_Head` in front of it: the layout above does
    // not apply there.
    if cfg!(Py_GIL_DISABLED) {
        return;
    }
    // Checked before any slot changes, on objects PyO3 makes and frees the
    // usual way.
    let layout_known = layout_is_known(py);
    // SAFETY: as below; no instance exists yet.
    unsafe {
        (*Handle::type_object_raw(py)).tp_dealloc = Some(dealloc::<Handle>);
        (*TimerHandle::type_object_raw(py)).tp_dealloc = Some(dealloc::<TimerHandle>);
    }
    for (tp, slot) in [
        (Handle::type_object_raw(py), &HANDLE_TYPE),
        (TimerHandle::type_object_raw(py), &TIMER_TYPE),
    ] {
        // SAFETY: live heap types made by PyO3, GIL held, no instances yet;
        // tp_alloc/tp_free are read at each allocation, never cached.
        unsafe {
            let flags = (*tp).tp_flags as std::ffi::c_ulong;
            if flags & ffi::Py_TPFLAGS_HAVE_GC as std::ffi::c_ulong == 0
                || flags & PRE_HEADER_FLAGS != 0
                // With an instance dict, PyO3 reads the dict slot of the
                // fresh object before writing it, expecting zeroes.
                || (*tp).tp_dictoffset != 0
            {
                continue;
            }
            slot.store(tp, Relaxed);
            (*tp).tp_alloc = Some(alloc);
            (*tp).tp_free = Some(free);
        }
    }
    let both_ours = is_ours(HANDLE_TYPE.load(Relaxed)) && is_ours(TIMER_TYPE.load(Relaxed));
    DIRECT.store(layout_known && both_ours, Relaxed);
}
