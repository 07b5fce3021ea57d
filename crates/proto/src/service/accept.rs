//! The one HTTP accept path of every Herald service. Before a request has
//! been read, a socket is untrusted and costs a descriptor, so it is held
//! to account:
//!
//! - its request headers must arrive within `header_timeout` (a socket
//!   that sends nothing, or a byte a second, is closed);
//! - one address holds at most `per_address` sockets (trusted proxies
//!   excepted: they carry many clients);
//! - the process keeps descriptors in reserve (`descriptors` is the
//!   budget for sockets): at a limit, the oldest socket that has not sent
//!   a request yet gives way to the new one, and when none can, the new
//!   one is answered `503` and closed — so health checks, metrics and the
//!   clients already connected keep working while a flood goes on.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use herald_core::shutdown::Shutdown;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::unread::WatchedBody;

/// What an HTTP listener lets one socket and one address hold.
#[derive(Debug, Clone)]
pub struct AcceptLimits {
    /// A new socket's request headers must be in by then.
    pub header_timeout: Duration,
    /// Sockets one address may hold (0: no limit).
    pub per_address: usize,
    /// Peers that speak for many clients (load balancers, proxies).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// Sockets this listener may hold: the descriptors the process has,
    /// less a reserve (`None`: unknown, no limit).
    pub descriptors: Option<usize>,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            header_timeout: Duration::from_secs(10),
            per_address: 0,
            trusted_proxies: Arc::from(Vec::new()),
            descriptors: super::descriptors::socket_budget(),
        }
    }
}

impl AcceptLimits {
    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Every socket the listener holds, and which of them have not sent a
/// request yet (oldest first: the first to give way).
#[derive(Default)]
struct Sockets {
    next: u64,
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    unproven: BTreeMap<u64, Unproven>,
}

/// A socket that has not sent a request yet.
struct Unproven {
    address: IpAddr,
    /// Closes it.
    evict: Shutdown,
    /// Set once it no longer counts (evicted: its ticket gives back nothing).
    released: Arc<AtomicBool>,
}

/// One socket's place in [`Sockets`]; given back when the socket closes
/// (after a WebSocket upgrade, when the WebSocket does).
pub(crate) struct Ticket {
    sockets: Arc<Mutex<Sockets>>,
    id: u64,
    address: IpAddr,
    proven: AtomicBool,
    released: Arc<AtomicBool>,
}

impl Ticket {
    /// The socket sent a request: it is no longer the first to go.
    pub(crate) fn prove(&self) {
        if !self.proven.swap(true, Ordering::AcqRel) {
            lock(&self.sockets).unproven.remove(&self.id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut sockets = lock(&self.sockets);
        sockets.unproven.remove(&self.id);
        if !self.released.swap(true, Ordering::AcqRel) {
            sockets.release(self.address);
        }
    }
}

fn lock(m: &Mutex<Sockets>) -> parking_lot::MutexGuard<'_, Sockets> {
    m.lock()
}

/// Why a socket was turned away.
#[derive(Debug, Clone, Copy)]
enum Full {
    Address,
    Process,
}

impl Sockets {
    /// Takes a place for a socket from `address`, making room by closing
    /// the oldest unproven socket where a limit is reached.
    fn admit(
        this: &Arc<Mutex<Sockets>>,
        address: IpAddr,
        limits: &AcceptLimits,
    ) -> Result<(Ticket, Shutdown), Full> {
        let mut sockets = lock(this);
        let per_address = if limits.per_address == 0 || limits.is_trusted(address) {
            usize::MAX
        } else {
            limits.per_address
        };
        if sockets.by_address.get(&address).copied().unwrap_or(0) >= per_address {
            let oldest = sockets
                .unproven
                .iter()
                .find(|(_, u)| u.address == address)
                .map(|(id, _)| *id);
            sockets.evict(oldest).ok_or(Full::Address)?;
        }
        if limits
            .descriptors
            .is_some_and(|budget| sockets.total >= budget)
        {
            let oldest = sockets.unproven.keys().next().copied();
            sockets.evict(oldest).ok_or(Full::Process)?;
        }
        sockets.next += 1;
        let id = sockets.next;
        sockets.total += 1;
        *sockets.by_address.entry(address).or_default() += 1;
        let evict = Shutdown::new();
        let released = Arc::new(AtomicBool::new(false));
        sockets.unproven.insert(
            id,
            Unproven {
                address,
                evict: evict.clone(),
                released: released.clone(),
            },
        );
        Ok((
            Ticket {
                sockets: this.clone(),
                id,
                address,
                proven: AtomicBool::new(false),
                released,
            },
            evict,
        ))
    }

    /// Closes socket `id`; it stops counting at once (its task goes soon).
    fn evict(&mut self, id: Option<u64>) -> Option<()> {
        let unproven = self.unproven.remove(&id?)?;
        unproven.evict.trigger();
        if !unproven.released.swap(true, Ordering::AcqRel) {
            self.release(unproven.address);
        }
        metrics::counter!("herald_http_sockets_evicted_total").increment(1);
        Some(())
    }

    fn release(&mut self, address: IpAddr) {
        self.total -= 1;
        if let Some(n) = self.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
    }
}

/// A socket that holds its ticket for as long as it lives.
struct Counted {
    stream: TcpStream,
    _ticket: Arc<Ticket>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What a turned-away socket is told before it is closed.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 29\r\nConnection: close\r\n\r\nthis server is at its limits\n";

/// Serves `app` on `listener` (HTTP/1.1, with upgrades) until `stop`
/// resolves, then lets the requests in flight finish. Requests carry the
/// peer address as `ConnectInfo<SocketAddr>`. A fresh connection's `GET` of
/// one of `stream_paths` is served without hyper, its socket offered to
/// the handler ([`super::stream`]).
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: AcceptLimits,
    stream_paths: &'static [&'static str],
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    herald_core::metrics::install();
    for reason in ["address", "descriptors"] {
        metrics::counter!("herald_http_sockets_refused_total", "reason" => reason).increment(0);
    }
    metrics::counter!("herald_http_sockets_evicted_total").increment(0);
    let sockets = Arc::new(Mutex::new(Sockets::default()));
    let stopping = Shutdown::new();
    let tracker = TaskTracker::new();
    let mut refused_logged = tokio::time::Instant::now();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (or another transient error): make
                    // room where it can be made, and do not spin.
                    if refused_logged.elapsed() > Duration::from_secs(1) {
                        tracing::warn!(error = %e, "accept failed");
                        refused_logged = tokio::time::Instant::now();
                    }
                    let oldest = lock(&sockets).unproven.keys().next().copied();
                    lock(&sockets).evict(oldest);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Small answers (subscribe replies, pings) must not wait on Nagle.
        let _ = stream.set_nodelay(true);
        let (ticket, evicted) = match Sockets::admit(&sockets, peer.ip(), &limits) {
            Ok(admitted) => admitted,
            Err(full) => {
                metrics_refused(full);
                tracker.spawn(refuse(stream));
                continue;
            }
        };
        let ticket = Arc::new(ticket);
        let app = app.clone();
        let stopping = stopping.clone();
        let header_timeout = limits.header_timeout;
        tracker.spawn(async move {
            if !stream_paths.is_empty() {
                let sniffed = tokio::select! {
                    sniffed = super::stream::sniff(&stream, stream_paths, header_timeout) => sniffed,
                    _ = evicted.wait() => return,
                    // a socket that has said nothing yet does not hold up a stop
                    _ = stopping.wait() => return,
                };
                match sniffed {
                    None => return,
                    Some(true) => {
                        return super::stream::serve(stream, ticket, peer, app, header_timeout).await;
                    }
                    Some(false) => {}
                }
            }
            serve_with_hyper(stream, ticket, peer, app, header_timeout, evicted, stopping).await;
        });
    }
    stopping.trigger();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// One connection served by hyper until it ends, is evicted (it never
/// sent a request), or the listener stops (then gracefully).
async fn serve_with_hyper(
    stream: TcpStream,
    ticket: Arc<Ticket>,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    evicted: Shutdown,
    stopping: Shutdown,
) {
    let io = TokioIo::new(Counted {
        stream,
        _ticket: ticket.clone(),
    });
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            ticket.prove();
            let (parts, body) = request.into_parts();
            let (body, read) = WatchedBody::new(body);
            let mut request = hyper::Request::from_parts(parts, axum::body::Body::new(body));
            request.extensions_mut().insert(ConnectInfo(peer));
            let answer = app.clone().oneshot(request);
            async move {
                let mut response = answer.await?;
                read.mark(&mut response);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = evicted.wait() => break,
            _ = stopping.wait(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(FULL)).await;
}

fn metrics_refused(full: Full) {
    let reason = match full {
        Full::Address => "address",
        Full::Process => "descriptors",
    };
    metrics::counter!("herald_http_sockets_refused_total", "reason" => reason).increment(1);
}

/// The client's address: the peer's, or when the peer is a trusted proxy
/// the last address in `X-Forwarded-For` that is not one.
pub fn client_address(
    peer: Option<SocketAddr>,
    headers: &axum::http::HeaderMap,
    limits: &AcceptLimits,
) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !limits.is_trusted(peer) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|a| !limits.is_trusted(*a))
            .unwrap_or(peer),
    )
}
