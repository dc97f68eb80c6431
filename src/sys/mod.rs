//! The operating-system seam: readiness polling and the loop's wake-up channel.
//!
//! Everything above this module speaks in [`Interest`], [`Events`] and
//! tokens; a kqueue back end for macOS is one more file here with the same
//! surface. Polling is level-triggered on purpose: asyncio's `add_reader`
//! contract re-reports an fd until the callback has drained it, which an
//! edge-triggered poller (such as mio) cannot express without re-arming.

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(target_os = "linux")]
pub use epoll::{Events, Poller};

pub mod cpu;
pub mod net;
mod waker;
pub use waker::Waker;

/// Which readiness a registration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };

    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// One readiness report. Errors and hang-ups count as both readable and
/// writable, as the stdlib selectors report them, so the callback finds out
/// by attempting the operation.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
}
