//! Where an internal gRPC service is: every address its name resolves to,
//! each with its own connection, a call going to the next in turn. One
//! HTTP/2 connection to a Service name would carry every call of this
//! process to the one pod kube-proxy picked when it connected; with a
//! headless Service (`clusterIP: None`) the name resolves to every ready
//! pod, and calls spread over all of them. The name is resolved again every
//! few seconds, so pods that come and go are followed; an address whose
//! call could not reach it is passed over for a while.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// How often the name is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How long an address that could not be reached is passed over.
const PASS_OVER: Duration = Duration::from_secs(5);

type Resolved = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
/// Resolves a host and port to addresses (DNS; tests give their own).
pub(crate) type Resolver = Arc<dyn Fn(String, u16) -> Resolved + Send + Sync>;

pub(crate) fn dns() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

struct Target {
    addr: SocketAddr,
    channel: Channel,
    passed_over_until: Mutex<Option<Instant>>,
}

/// The connections to one service, by address.
pub(crate) struct Targets {
    /// The URL's own channel: used until the first resolution, when the
    /// host is an address, and when nothing resolves.
    fallback: Channel,
    resolved: RwLock<Vec<Arc<Target>>>,
    next: AtomicUsize,
}

/// One pick: the channel, and the address to pass over if it fails.
pub(crate) struct Pick {
    pub(crate) channel: Channel,
    target: Option<Arc<Target>>,
}

impl Pick {
    /// The call could not reach this address: pass it over for a while.
    pub(crate) fn unreachable(&self) {
        if let Some(target) = &self.target {
            *target.passed_over_until.lock() = Some(Instant::now() + PASS_OVER);
        }
    }
}

impl Targets {
    /// The connections for `endpoint` (`http://presence:50052`). A host
    /// that is a name is resolved with `resolve` now and every few
    /// seconds, for as long as these targets are in use.
    pub(crate) fn new(
        url: &str,
        deadline: Duration,
        resolve: Resolver,
    ) -> Result<Arc<Targets>, String> {
        let endpoint = endpoint(url, deadline)?;
        let targets = Arc::new(Targets {
            fallback: endpoint.connect_lazy(),
            resolved: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        });
        let uri = endpoint.uri().clone();
        let name = uri
            .host()
            .filter(|h| h.parse::<std::net::IpAddr>().is_err() && !h.starts_with('['))
            .map(str::to_owned);
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if let (Some(name), Ok(runtime)) = (name, tokio::runtime::Handle::try_current()) {
            let follow = Follow {
                targets: Arc::downgrade(&targets),
                uri,
                deadline,
                name,
                port,
                resolve,
            };
            runtime.spawn(follow.run());
        }
        Ok(targets)
    }

    /// The next address in turn that is not passed over (any, when all
    /// are); the URL's own channel while none is known.
    pub(crate) fn pick(&self) -> Pick {
        let resolved = self.resolved.read();
        if resolved.is_empty() {
            return Pick {
                channel: self.fallback.clone(),
                target: None,
            };
        }
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let usable = (0..resolved.len())
            .map(|i| &resolved[(start + i) % resolved.len()])
            .find(|t| t.passed_over_until.lock().is_none_or(|until| until <= now));
        let target = usable.unwrap_or(&resolved[start % resolved.len()]).clone();
        Pick {
            channel: target.channel.clone(),
            target: Some(target),
        }
    }

    /// How many addresses are known (tests).
    #[cfg(test)]
    pub(crate) fn known(&self) -> usize {
        self.resolved.read().len()
    }
}

/// Resolves a service's name every few seconds into its targets.
struct Follow {
    targets: Weak<Targets>,
    uri: tonic::codegen::http::Uri,
    deadline: Duration,
    name: String,
    port: u16,
    resolve: Resolver,
}

impl Follow {
    /// Keeps the connections of addresses that stay; ends when the targets
    /// are dropped.
    async fn run(self) {
        let mut complained = false;
        loop {
            let answer =
                tokio::time::timeout(RESOLVE_EVERY, (self.resolve)(self.name.clone(), self.port))
                    .await;
            let Some(targets) = self.targets.upgrade() else {
                return;
            };
            match answer {
                Ok(Ok(addrs)) if !addrs.is_empty() => {
                    complained = false;
                    let next = self.update(&targets, addrs);
                    *targets.resolved.write() = next;
                }
                // Nothing new: keep what is known.
                other => {
                    if !complained {
                        let why = match other {
                            Ok(Ok(_)) => "no address".to_owned(),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "no answer".to_owned(),
                        };
                        tracing::warn!(
                            name = self.name,
                            error = why,
                            "cannot resolve a gRPC service's name"
                        );
                        complained = true;
                    }
                }
            }
            drop(targets);
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    }

    fn update(&self, targets: &Targets, addrs: Vec<SocketAddr>) -> Vec<Arc<Target>> {
        let kept: HashMap<SocketAddr, Arc<Target>> = targets
            .resolved
            .read()
            .iter()
            .map(|t| (t.addr, t.clone()))
            .collect();
        let mut next: Vec<Arc<Target>> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if next.iter().any(|t| t.addr == addr) {
                continue;
            }
            if let Some(target) = kept.get(&addr) {
                next.push(target.clone());
                continue;
            }
            // the original URL's settings, to this address, naming the
            // service as the URL did (`:authority`)
            let scheme = self.uri.scheme_str().unwrap_or("http");
            match endpoint(&format!("{scheme}://{addr}"), self.deadline) {
                Ok(to) => next.push(Arc::new(Target {
                    addr,
                    channel: to.origin(self.uri.clone()).connect_lazy(),
                    passed_over_until: Mutex::new(None),
                })),
                Err(e) => tracing::warn!(%addr, error = e, "unusable address"),
            }
        }
        next
    }
}

/// An endpoint for `url` whose calls give up after `deadline`.
pub(crate) fn endpoint(url: &str, deadline: Duration) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("bad URL {url}: {e}"))?
        .connect_timeout(deadline)
        .timeout(deadline)
        .tcp_nodelay(true))
}
