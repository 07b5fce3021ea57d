//! What the rest of the edge can do to a connection it does not own: close
//! it with a code (the server API's disconnect, an eviction), and see
//! whether it is idle enough to be evicted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use herald_core::shutdown::Shutdown;
use herald_protocol::CloseCode;

#[derive(Clone, Default)]
pub(crate) struct Handle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    closed: Shutdown,
    /// The first close code asked for (0: none yet).
    code: AtomicU16,
    /// A long-poll session between polls: nobody is waiting on it, so it
    /// is the one to give up when its user is at the connection limit.
    idle: AtomicBool,
}

impl Handle {
    /// Asks the connection to close with `code`; the first code asked wins.
    pub(crate) fn close(&self, code: CloseCode) {
        let _ =
            self.inner
                .code
                .compare_exchange(0, code.as_u16(), Ordering::AcqRel, Ordering::Acquire);
        self.inner.closed.trigger();
    }

    /// Resolves with the code once a close was asked for.
    pub(crate) async fn closed(&self) -> CloseCode {
        self.inner.closed.wait().await;
        CloseCode::from_u16(self.inner.code.load(Ordering::Acquire)).unwrap_or(CloseCode::Forbidden)
    }

    pub(crate) fn set_idle(&self, idle: bool) {
        self.inner.idle.store(idle, Ordering::Release);
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.inner.idle.load(Ordering::Acquire)
    }
}
