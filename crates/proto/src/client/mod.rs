//! What every internal gRPC client shares (routing → presence, routing →
//! notify, edge → presence): lazily connected channels to every address of
//! the service, the API key sent as `authorization` metadata, and one
//! short deadline for every call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use targets::Targets;

/// One internal gRPC service as its callers reach it: its addresses (every
/// address its name resolves to, re-resolved as pods come and go), the API
/// key and the deadline.
#[derive(Clone)]
pub struct Upstream {
    targets: Arc<Targets>,
    key: Option<MetadataValue<Ascii>>,
    deadline: Duration,
}

impl Upstream {
    /// Connects lazily to `url` (`http://presence:50052`), to every address
    /// its name resolves to; each call gives up after `deadline`.
    pub fn new(url: &str, api_key: Option<&str>, deadline: Duration) -> Result<Self, String> {
        Upstream::resolved_by(url, api_key, deadline, targets::dns())
    }

    fn resolved_by(
        url: &str,
        api_key: Option<&str>,
        deadline: Duration,
        resolve: targets::Resolver,
    ) -> Result<Self, String> {
        let key = api_key
            .map(|k| format!("Bearer {k}").parse())
            .transpose()
            .map_err(|_| "API key is not valid metadata".to_owned())?;
        Ok(Upstream {
            targets: Targets::new(url, deadline, resolve)?,
            key,
            deadline,
        })
    }

    /// A request with the deadline and the key.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(key) = &self.key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        request
    }

    /// Calls `call` on the next address in turn; when it could not reach
    /// that one (a pod gone before the name stopped naming it), once more
    /// on another.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let pick = self.targets.pick();
        match call(pick.channel.clone()).await {
            // a failure of our own connection, not an answer of the server
            // (a server's `UNAVAILABLE` — shedding load — has no source)
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && std::error::Error::source(&status).is_some() =>
            {
                pick.unreachable();
                call(self.targets.pick().channel).await
            }
            answer => answer,
        }
    }

    /// The channel to the next address in turn, for a stub of one's own.
    pub fn channel(&self) -> Channel {
        self.targets.pick().channel
    }
}

/// A failed call as one line: `Unavailable: connection refused`.
pub fn describe(status: &tonic::Status) -> String {
    format!("{}: {}", status.code(), status.message())
}

mod notify;
mod presence;
mod targets;

pub use notify::NotifyClient;
pub use presence::PresenceClient;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A gRPC server with the health service, counting the calls it gets.
    async fn server() -> (
        SocketAddr,
        Arc<AtomicUsize>,
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let (_, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .layer(tower::util::MapRequestLayer::new(
                    move |request: axum::http::Request<tonic::body::Body>| {
                        counted.fetch_add(1, Ordering::Relaxed);
                        request
                    },
                ))
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        (addr, calls, (stop, task))
    }

    async fn check(upstream: &Upstream) -> Result<(), tonic::Status> {
        upstream
            .call(|channel| {
                let request = upstream.request(HealthCheckRequest {
                    service: String::new(),
                });
                async move { HealthClient::new(channel).check(request).await.map(drop) }
            })
            .await
    }

    #[tokio::test]
    async fn calls_spread_over_every_address_of_the_name_and_pass_over_one_that_is_gone() {
        let (a, calls_a, task_a) = server().await;
        let (b, calls_b, _task_b) = server().await;
        let addrs = Arc::new(parking_lot::Mutex::new(vec![a, b]));
        let answer = addrs.clone();
        let resolve: targets::Resolver = Arc::new(move |host, _port| {
            assert_eq!(host, "presence.test");
            let now = answer.lock().clone();
            Box::pin(async move { Ok(now) })
        });
        let upstream = Upstream::resolved_by(
            "http://presence.test:50052",
            None,
            Duration::from_secs(5),
            resolve,
        )
        .expect("a valid URL");
        // the first resolution runs at once
        while upstream.targets.known() < 2 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            check(&upstream).await.expect("answered");
        }
        let (on_a, on_b) = (
            calls_a.load(Ordering::Relaxed),
            calls_b.load(Ordering::Relaxed),
        );
        assert_eq!((on_a, on_b), (5, 5), "in turn");

        // a pod goes before the name stops naming it: every call is still
        // answered, by the other
        let (stop_a, task_a) = task_a;
        let _ = stop_a.send(());
        let _ = task_a.await;
        for _ in 0..10 {
            check(&upstream).await.expect("answered by the other");
        }
        assert_eq!(calls_a.load(Ordering::Relaxed), on_a);
        assert_eq!(calls_b.load(Ordering::Relaxed), on_b + 10);
    }
}
