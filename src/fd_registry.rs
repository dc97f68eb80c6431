//! Which callbacks wait on which file descriptor, and the poller
//! registrations that back them.
//!
//! Slots are indexed by fd number. Each registration gets a token carrying a
//! generation next to the fd, so a readiness report queued for a closed fd
//! can never be delivered to a newer registration that reused its number.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use pyo3::prelude::*;

use crate::handles::Handle;
use crate::sys::{Event, Interest, Poller};

/// Token of the loop's signal channel; never issued to an fd.
pub const WAKER_TOKEN: u64 = u64::MAX;
/// Token of the eventfd other threads wake the loop with; never issued
/// either (no fd gets generation u32::MAX).
pub const THREAD_WAKE_TOKEN: u64 = u64::MAX - 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    Read,
    Write,
}

struct FdEntry {
    token: u64,
    reader: Option<Py<Handle>>,
    writer: Option<Py<Handle>>,
    /// The object the user registered (when not a plain int), so a file
    /// object closed while registered can still be found, as selectors do.
    fileobj: Option<Py<PyAny>>,
    /// The reader is a finished `sock_recv` waiter left registered so the
    /// socket's next `sock_recv` re-arms it without a system call. To
    /// everyone else the fd has no reader: a readiness report for it ends
    /// the registration, and `add`/`remove` evict it first.
    parked: bool,
}

impl FdEntry {
    fn interest(&self) -> Interest {
        Interest {
            read: self.reader.is_some(),
            write: self.writer.is_some(),
        }
    }

    fn slot(&mut self, direction: Direction) -> &mut Option<Py<Handle>> {
        match direction {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    fn release_into(self, garbage: &mut Vec<Py<PyAny>>) {
        garbage.extend(self.reader.map(Py::into_any));
        garbage.extend(self.writer.map(Py::into_any));
        garbage.extend(self.fileobj);
    }
}

#[derive(Default)]
pub struct FdRegistry {
    slots: Vec<Option<FdEntry>>,
    generation: u32,
    registered: usize,
    /// fd -> weak reference to the transport using it (asyncio's
    /// `_transports`), so plain fd callbacks cannot be added under it.
    transports: std::collections::HashMap<RawFd, Py<PyAny>>,
}

fn fd_of(token: u64) -> RawFd {
    (token & 0xffff_ffff) as u32 as RawFd
}

impl FdRegistry {
    pub fn registered(&self) -> usize {
        self.registered
    }

    /// Records (or, with None, forgets) the transport owning `fd`; returns
    /// the previous record for the caller to drop.
    pub fn set_transport(&mut self, fd: RawFd, weak: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match weak {
            Some(weak) => self.transports.insert(fd, weak),
            None => self.transports.remove(&fd),
        }
    }

    /// Frees `fd` only if `owns` says its transport entry is the caller's:
    /// a new transport may already hold the same fd number.
    pub fn remove_transport_if(
        &mut self,
        fd: RawFd,
        owns: impl FnOnce(&Py<PyAny>) -> bool,
    ) -> Option<Py<PyAny>> {
        if self.transports.get(&fd).is_some_and(owns) {
            self.transports.remove(&fd)
        } else {
            None
        }
    }

    /// Transports still alive among those that claimed an fd.
    pub fn live_transports(&self, py: Python<'_>) -> usize {
        self.transports
            .values()
            .filter(|weak| {
                weak.bind(py)
                    .cast::<pyo3::types::PyWeakrefReference>()
                    .is_ok_and(|weak| weak.upgrade().is_some())
            })
            .count()
    }

    pub fn transport(&self, py: Python<'_>, fd: RawFd) -> Option<Py<PyAny>> {
        self.transports.get(&fd).map(|w| w.clone_ref(py))
    }

    fn entry(&mut self, fd: RawFd) -> Option<&mut FdEntry> {
        self.slots.get_mut(fd as usize)?.as_mut()
    }

    fn take_entry(&mut self, fd: RawFd) -> Option<FdEntry> {
        let entry = self.slots.get_mut(fd as usize)?.take();
        if entry.is_some() {
            self.registered -= 1;
        }
        entry
    }

    fn next_token(&mut self, fd: RawFd) -> u64 {
        // Generation u32::MAX is never issued, keeping WAKER_TOKEN and
        // THREAD_WAKE_TOKEN unique.
        self.generation = if self.generation >= u32::MAX - 1 {
            1
        } else {
            self.generation + 1
        };
        (u64::from(self.generation) << 32) | u64::from(fd as u32)
    }

    /// The fd under which `obj` was registered, for file objects whose
    /// `fileno()` no longer answers (closed sockets return -1).
    pub fn find_fileobj(&self, obj: &Bound<'_, PyAny>) -> Option<RawFd> {
        self.slots.iter().enumerate().find_map(|(fd, slot)| {
            let registered = slot.as_ref()?.fileobj.as_ref()?;
            registered.is(obj).then_some(fd as RawFd)
        })
    }

    /// The fd's reader or writer callback, parked readers included.
    pub fn handle(&self, fd: RawFd, direction: Direction) -> Option<&Py<Handle>> {
        let entry = self.slots.get(fd as usize)?.as_ref()?;
        match direction {
            Direction::Read => entry.reader.as_ref(),
            Direction::Write => entry.writer.as_ref(),
        }
    }

    /// Marks the fd's reader parked (see `FdEntry::parked`) or active again.
    pub fn set_parked(&mut self, fd: RawFd, parked: bool) {
        if let Some(entry) = self.entry(fd) {
            if entry.reader.is_some() {
                entry.parked = parked;
            }
        }
    }

    /// Drops a parked reader for real. Its fd may have been closed (and its
    /// number reused) while it was parked, so the kernel registration is not
    /// trusted: the entry is deleted outright unless a writer still uses it.
    fn evict_parked(&mut self, poller: &Poller, fd: RawFd, garbage: &mut Vec<Py<PyAny>>) {
        let Some(entry) = self.entry(fd) else { return };
        if !entry.parked {
            return;
        }
        entry.parked = false;
        garbage.extend(entry.reader.take().map(Py::into_any));
        let interest = entry.interest();
        let token = entry.token;
        if interest.is_empty() || poller.modify(fd, token, interest).is_err() {
            if let Some(entry) = self.take_entry(fd) {
                entry.release_into(garbage);
            }
            let _ = poller.delete(fd);
        }
    }

    /// Installs `handle` as the fd's reader or writer. Returns the handle it
    /// replaces, which the caller must cancel. On a poller error the fd is
    /// left unregistered, as the stdlib selectors leave it.
    pub fn add(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        direction: Direction,
        handle: Py<Handle>,
        fileobj: Option<Py<PyAny>>,
        garbage: &mut Vec<Py<PyAny>>,
    ) -> io::Result<Option<Py<Handle>>> {
        self.add_inner(poller, fd, direction, handle, fileobj, garbage, false)
    }

    /// `add` for the loop's own transports: an entry whose fd was closed
    /// and reused behind the registry's back (the kernel dropped it from
    /// the poller) is replaced instead of failing, as the new fd is live.
    pub fn add_replacing_stale(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        direction: Direction,
        handle: Py<Handle>,
        garbage: &mut Vec<Py<PyAny>>,
    ) -> io::Result<Option<Py<Handle>>> {
        self.add_inner(poller, fd, direction, handle, None, garbage, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_inner(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        direction: Direction,
        handle: Py<Handle>,
        fileobj: Option<Py<PyAny>>,
        garbage: &mut Vec<Py<PyAny>>,
        replace_stale: bool,
    ) -> io::Result<Option<Py<Handle>>> {
        // A parked reader gives way to a new reader. Next to a new writer it
        // stays, but its registration may be stale (see `evict_parked`), so
        // a failed update re-registers the fd from scratch.
        let parked = self.entry(fd).is_some_and(|e| e.parked);
        if parked && direction == Direction::Read {
            self.evict_parked(poller, fd, garbage);
        }
        let replace_stale = replace_stale || parked;
        if let Some(entry) = self.entry(fd) {
            let before = entry.interest();
            let replaced = entry.slot(direction).replace(handle);
            let after = entry.interest();
            let token = entry.token;
            garbage.extend(fileobj);
            if after != before {
                if let Err(err) = poller.modify(fd, token, after) {
                    let stale = err.raw_os_error() == Some(libc::ENOENT);
                    let Some(mut entry) = self.take_entry(fd) else {
                        return Err(err);
                    };
                    garbage.extend(replaced.map(Py::into_any));
                    if !(replace_stale && stale) {
                        entry.release_into(garbage);
                        return Err(err);
                    }
                    let handle = entry.slot(direction).take();
                    entry.release_into(garbage);
                    let Some(handle) = handle else {
                        return Err(err);
                    };
                    return self.add_inner(poller, fd, direction, handle, None, garbage, false);
                }
            }
            return Ok(replaced);
        }
        let token = self.next_token(fd);
        let mut entry = FdEntry {
            token,
            reader: None,
            writer: None,
            fileobj,
            parked: false,
        };
        *entry.slot(direction) = Some(handle);
        if let Err(err) = poller.add(fd, token, entry.interest()) {
            entry.release_into(garbage);
            return Err(err);
        }
        let index = fd as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index] = Some(entry);
        self.registered += 1;
        Ok(None)
    }

    /// Removes the fd's reader or writer and returns it (the caller cancels
    /// it); `Ok(None)` when there was none.
    pub fn remove(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        direction: Direction,
        garbage: &mut Vec<Py<PyAny>>,
    ) -> io::Result<Option<Py<Handle>>> {
        if direction == Direction::Read && self.entry(fd).is_some_and(|e| e.parked) {
            self.evict_parked(poller, fd, garbage);
            return Ok(None);
        }
        let Some(entry) = self.entry(fd) else {
            return Ok(None);
        };
        let removed = entry.slot(direction).take();
        let interest = entry.interest();
        let token = entry.token;
        if interest.is_empty() {
            if let Some(entry) = self.take_entry(fd) {
                entry.release_into(garbage);
            }
            // The fd may already be closed, which removed it from the poller.
            let _ = poller.delete(fd);
        } else if removed.is_some() {
            if let Err(err) = poller.modify(fd, token, interest) {
                if let Some(entry) = self.take_entry(fd) {
                    entry.release_into(garbage);
                }
                garbage.extend(removed.map(Py::into_any));
                return Err(err);
            }
        }
        Ok(removed)
    }

    /// Queues the callbacks a readiness report is for. A cancelled callback
    /// is unregistered instead of run, as asyncio does.
    pub fn dispatch(
        &mut self,
        py: Python<'_>,
        poller: &Poller,
        event: Event,
        ready: &mut VecDeque<Py<Handle>>,
        garbage: &mut Vec<Py<PyAny>>,
    ) {
        let fd = fd_of(event.token);
        let Some(entry) = self.entry(fd) else { return };
        if entry.token != event.token {
            return;
        }
        for (wanted, direction) in [
            (event.readable, Direction::Read),
            (event.writable, Direction::Write),
        ] {
            if !wanted {
                continue;
            }
            let Some(entry) = self.entry(fd) else { return };
            if direction == Direction::Read && entry.parked {
                // Nobody waits for this report: stop watching instead of
                // waking up for it on every iteration (level-triggered).
                self.evict_parked(poller, fd, garbage);
                continue;
            }
            let Some(handle) = entry.slot(direction).as_ref() else {
                continue;
            };
            if handle.get().is_cancelled() {
                if let Ok(Some(stale)) = self.remove(poller, fd, direction, garbage) {
                    garbage.push(stale.into_any());
                }
            } else {
                ready.push_back(handle.clone_ref(py));
            }
        }
    }

    pub fn drain(&mut self, garbage: &mut Vec<Py<PyAny>>) {
        for entry in self.slots.drain(..).flatten() {
            entry.release_into(garbage);
        }
        garbage.extend(self.transports.drain().map(|(_, weak)| weak));
        self.registered = 0;
    }

    pub fn for_each_object(&self, mut f: impl FnMut(&Py<PyAny>)) {
        for entry in self.slots.iter().flatten() {
            for handle in [&entry.reader, &entry.writer].into_iter().flatten() {
                f(handle.as_any());
            }
            if let Some(obj) = &entry.fileobj {
                f(obj);
            }
        }
        for weak in self.transports.values() {
            f(weak);
        }
    }
}
