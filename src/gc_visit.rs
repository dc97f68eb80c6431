//! Traversing an object the collector does not track, on behalf of its
//! only owner, with the visitor of the traverse in progress.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::ptr::NonNull;

use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

/// Py_TPFLAGS_MANAGED_WEAKREF (3.12+): weak references live in front of
/// the object, where this module does not look.
const MANAGED_WEAKREF: std::ffi::c_ulong = 1 << 3;

/// True if `obj` can be traversed on behalf of its owner: the owner's is the
/// only reference, the collector does not track it, and no weak reference
/// to it exists.
///
/// The last condition matters because the collector clears weak references
/// only to the objects in the garbage it found. A weak reference to a
/// see-through object would survive into the clearing of that garbage, and
/// could hand out the object (a queued handle) after its callback had been
/// cleared. Such an object is visited as it is, and keeps what it holds.
///
/// # Safety
/// `obj` is a live object and the GIL is held (as in every traverse).
pub(crate) unsafe fn owned_alone_and_untracked(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: reads of the refcount, the tracked bit and the type's slots
    // of a live object; no Python code runs.
    unsafe {
        if ffi::Py_REFCNT(obj) != 1 || ffi::PyObject_GC_IsTracked(obj) != 0 {
            return false;
        }
        let tp = ffi::Py_TYPE(obj);
        if (*tp).tp_flags as std::ffi::c_ulong & MANAGED_WEAKREF != 0 {
            return false;
        }
        match (*tp).tp_weaklistoffset {
            0 => true,
            offset if offset > 0 => {
                let list = obj
                    .cast::<u8>()
                    .add(offset as usize)
                    .cast::<*mut ffi::PyObject>();
                (*list).is_null()
            }
            _ => false,
        }
    }
}

/// What `forward` needs: the visitor, and where it leaves a visitor's error
/// (PyO3's error type cannot be made from a bare code).
struct Forwarding<'a, 'v> {
    visit: &'a PyVisit<'v>,
    error: Option<PyTraverseError>,
}

unsafe extern "C" fn forward(obj: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Forwarding` that `traverse_with` passed to the
    // type's traverse, alive until that call returns.
    let forwarding = unsafe { &mut *(arg as *mut Forwarding<'_, '_>) };
    let Some(obj) = NonNull::new(obj) else {
        return 0;
    };
    // SAFETY: `Py<PyAny>` is a transparent non-null object pointer; this one
    // is borrowed for the call only and never dropped.
    let borrowed = unsafe { &*(&obj as *const NonNull<ffi::PyObject> as *const Py<PyAny>) };
    match forwarding.visit.call(borrowed) {
        Ok(()) => 0,
        Err(err) => {
            forwarding.error = Some(err);
            1
        }
    }
}

/// Runs `obj`'s type's traverse with `visit`, as if the collector had
/// reached `obj` itself. Only for an object the caller owns alone: its
/// references are then the caller's to report.
pub(crate) fn traverse_with(
    obj: *mut ffi::PyObject,
    visit: &PyVisit<'_>,
) -> Result<(), PyTraverseError> {
    // SAFETY: `obj` is a live object (the caller holds a reference) and the
    // GIL is held, as in every traverse; a type's traverse only reads.
    let traverse = unsafe { (*ffi::Py_TYPE(obj)).tp_traverse };
    let Some(traverse) = traverse else {
        return Ok(());
    };
    let mut forwarding = Forwarding { visit, error: None };
    unsafe {
        traverse(
            obj,
            forward,
            &mut forwarding as *mut Forwarding<'_, '_> as *mut c_void,
        )
    };
    match forwarding.error.take() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
