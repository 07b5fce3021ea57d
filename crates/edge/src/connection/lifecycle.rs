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
            // One timer for every deadline, the earliest: each pending
            // timer is a hundred bytes of every connection's task.
            let next = self.next_deadline();
            tokio::select! {
                biased;
                _ = self.shutdown.wait(), if self.drain_at.is_none() => {
                    // Each connection leaves at its own moment of the window.
                    self.drain_at = Some(Instant::now() + self.drain_window.mul_f64(rand::random::<f64>()));
                }
                _ = self.overflow.wait() => return CloseCode::SlowConsumer,
                code = self.handle.closed() => return code,
                _ = sleep_until(next.map_or_else(far_future, |(at, _)| at)), if next.is_some() => {
                    if let Some((_, code)) = next {
                        return code;
                    }
                }
            }
        }
    }

    /// The earliest deadline and the code it ends the connection with (the
    /// first listed wins a tie).
    fn next_deadline(&self) -> Option<(Instant, CloseCode)> {
        [
            (self.drain_at, CloseCode::Shutdown),
            (self.expires, CloseCode::TokenExpired),
            (self.connect_by, CloseCode::Unauthorized),
            (self.retire_at, CloseCode::Rebalance),
        ]
        .into_iter()
        .filter_map(|(at, code)| Some((at?, code)))
        .min_by_key(|(at, _)| *at)
    }
}

pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
