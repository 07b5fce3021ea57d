//! `Shutdown`: the one signal every long-running task listens to.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal. Triggering it (on SIGTERM, or when a test
/// is done) tells every task holding a clone to finish.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal not triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells every holder to finish; triggering again does nothing.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// A signal that fires with this one but can also be triggered alone
    /// (one connection, one subsystem).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }

    /// Triggers this signal on the first SIGTERM or Ctrl-C.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            this.trigger();
        });
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `fut` to completion, but gives up after `limit` (a wait that could
/// otherwise hang shutdown).
pub async fn with_deadline<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(limit, fut).await.ok()
}
