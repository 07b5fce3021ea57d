//! Every reason a connection ends that is not the client's doing: the
//! edge draining, the server API (or an eviction) closing it, a client too
//! slow to keep up, an expired token, no `connect` in time. One future for
//! all of them, whatever the transport.

use std::time::Duration;

use herald_core::auth::unix_now;
use herald_core::shutdown::Shutdown;
use herald_protocol::CloseCode;
use tokio::time::{Instant, sleep_until};

use super::handle::Handle;

pub(crate) struct Lifecycle {
    /// The edge's SIGTERM.
    shutdown: Shutdown,
    drain_window: Duration,
    /// When this connection leaves, once the edge drains.
    drain_at: Option<Instant>,
    /// Fires when the outbox overflows.
    pub(super) overflow: Shutdown,
    pub(super) handle: Handle,
    /// The token's expiry.
    expires: Option<Instant>,
    /// A WebSocket must `connect` by then.
    connect_by: Option<Instant>,
    /// Asked to reconnect then (`max_connection_age_secs`).
    retire_at: Option<Instant>,
}

impl Lifecycle {
    /// `max_age`: the connection is asked to reconnect after it, ±10 %
    /// (spread, so connections accepted together do not leave together).
    pub(crate) fn new(
        shutdown: Shutdown,
        drain_window: Duration,
        overflow: Shutdown,
        max_age: Option<Duration>,
    ) -> Self {
        Lifecycle {
            retire_at: max_age
                .map(|age| Instant::now() + age.mul_f64(0.9 + 0.2 * rand::random::<f64>())),
            shutdown,
            drain_window,
            drain_at: None,
            overflow,
            handle: Handle::default(),
            expires: None,
            connect_by: None,
        }
    }

    pub(crate) fn connect_by(&mut self, at: Option<Instant>) {
        self.connect_by = at;
    }

    /// The token (or its refresh) expires at `exp`, Unix seconds.
    pub(crate) fn expires_at(&mut self, exp: i64) {
        let left = exp.saturating_sub(unix_now()).max(0) as u64;
        self.expires = Some(Instant::now() + Duration::from_secs(left));
    }

    /// Resolves with the code the connection must close with. Cancel-safe:
    /// what it learns (the drain moment) it keeps.
    pub(crate) async fn ended(&mut self) -> CloseCode {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.wait(), if self.drain_at.is_none() => {
                    // Each connection leaves at its own moment of the window.
                    self.drain_at = Some(Instant::now() + self.drain_window.mul_f64(rand::random::<f64>()));
                }
                _ = sleep_until(self.drain_at.unwrap_or_else(far_future)), if self.drain_at.is_some() => {
                    return CloseCode::Shutdown;
                }
                _ = self.overflow.wait() => return CloseCode::SlowConsumer,
                code = self.handle.closed() => return code,
                _ = sleep_until(self.expires.unwrap_or_else(far_future)), if self.expires.is_some() => {
                    return CloseCode::TokenExpired;
                }
                _ = sleep_until(self.connect_by.unwrap_or_else(far_future)), if self.connect_by.is_some() => {
                    return CloseCode::Unauthorized;
                }
                _ = sleep_until(self.retire_at.unwrap_or_else(far_future)), if self.retire_at.is_some() => {
                    return CloseCode::Rebalance;
                }
            }
        }
    }
}

pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
