//! Interior mutability for loop state that is only touched while the GIL is held.

use std::cell::RefCell;

use pyo3::Python;

/// A `RefCell` that PyO3 accepts inside a `Sync` pyclass.
///
/// The loop's state is reached from the loop thread and, through
/// `call_soon_threadsafe`, from other threads; every accessor takes a
/// `Python` token, so only a thread attached to the interpreter touches it
/// and the GIL lets one such thread run at a time. The borrow flag stays: it
/// turns re-entrancy (a closure that ends up running Python code which calls
/// back into the loop) into a caught panic instead of aliasing.
///
/// Rule for callers: a closure passed to [`GilCell::with`] must not run
/// Python code. Dropping the last reference to a Python object runs Python
/// code (`__del__`, weakref callbacks), so values that may be the last
/// reference are moved out of the closure and dropped after it returns.
pub struct GilCell<T>(RefCell<T>);

// SAFETY: see the type documentation. Access requires a `Python` token and a
// borrow never spans a point where the GIL can be released (no Python code
// runs inside `with`). The module is declared `gil_used`, so a free-threaded
// interpreter re-enables the GIL before importing it.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        Self(RefCell::new(value))
    }

    /// Runs `f` with exclusive access to the value.
    #[inline]
    pub fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }

    /// Like [`GilCell::with`] but gives up instead of panicking when the value
    /// is already borrowed; for the garbage collector's traversal, which can
    /// run at any allocation.
    pub fn try_with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.0.try_borrow().ok().map(|v| f(&v))
    }

    /// Swaps in a new value and hands back the old one, to be dropped by the
    /// caller outside any borrow.
    #[inline]
    pub fn replace(&self, _py: Python<'_>, value: T) -> T {
        self.0.replace(value)
    }
}

impl<T: Default> GilCell<T> {
    pub fn take(&self, py: Python<'_>) -> T {
        self.replace(py, T::default())
    }

    /// For the garbage collector's `tp_clear`, which runs with the GIL held
    /// but without a token to show for it.
    pub fn try_take(&self) -> Option<T> {
        self.0
            .try_borrow_mut()
            .ok()
            .map(|mut v| std::mem::take(&mut *v))
    }
}
