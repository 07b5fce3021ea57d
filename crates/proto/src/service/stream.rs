//! Long-lived responses that own their socket (Server-Sent Events, and
//! WebSockets: an upgrade answered `101` hands the bare socket over too).
//!
//! hyper keeps a whole HTTP/1 connection alive under a streaming body —
//! 8 KB read and write buffers, the dispatcher, the body channel — for a
//! stream that only ever writes: a held SSE stream cost four times a
//! WebSocket. So the accept path looks at a fresh connection's first
//! request line; when it is a `GET` of one of the listener's stream paths
//! it reads the head itself, runs the request through the router with a
//! [`SocketOffer`], and when the handler takes the offer, writes the
//! answer's head and its first bytes and gives the socket to the handler's
//! task: from then on the stream is chunks written to a `TcpStream`.
//! Anything else (another path, the stream path on a connection that
//! already served a request) is hyper's, as before; a stream request over
//! HTTP/1.0 (no chunked bodies) is answered 505.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::accept::Ticket;

/// The longest request head read here (hyper's default limit is larger,
/// but a stream request is a path, a token and a few headers).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// The most a handler's first bytes (or a refusal's body) may be.
const MAX_FIRST: usize = 1024 * 1024;
/// How long writing the head (or a refusal) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's socket, handed to the task that streams to it. It keeps the
/// socket's place in the listener's accounting for as long as it lives.
pub struct ClientSocket {
    stream: TcpStream,
    _ticket: Arc<Ticket>,
}

impl ClientSocket {
    /// Writes `data` as one chunk of the chunked body: its size line, the
    /// bytes and the line end in one vectored write, nothing copied.
    pub async fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut size = [0u8; 18];
        let size = chunk_size_line(data.len(), &mut size);
        let mut parts = [
            io::IoSlice::new(size),
            io::IoSlice::new(data),
            io::IoSlice::new(b"\r\n"),
        ];
        let mut parts = &mut parts[..];
        while !parts.is_empty() {
            let written = self.stream.write_vectored(parts).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut parts, written);
        }
        Ok(())
    }

    /// Ends the body (the last chunk) and closes the socket.
    pub async fn finish(mut self) {
        let _ = self.stream.write_all(b"0\r\n\r\n").await;
        let _ = self.stream.shutdown().await;
    }

    /// Resolves when the client has gone (closed its side, or the socket
    /// failed). Whatever it sends meanwhile is read and dropped: a stream
    /// takes no requests. Cancel-safe.
    pub async fn gone(&mut self) {
        let mut scratch = [0u8; 256];
        loop {
            if self.stream.readable().await.is_err() {
                return;
            }
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

// The raw socket, for a protocol of the handler's own (a WebSocket).
impl tokio::io::AsyncRead for ClientSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ClientSocket {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// In the extensions of a request whose socket the handler may take.
#[derive(Clone)]
pub struct SocketOffer(Arc<Mutex<Option<oneshot::Receiver<ClientSocket>>>>);

impl SocketOffer {
    /// Takes the offer: the socket arrives on the receiver once the
    /// answer's head and body (the stream's first bytes) are written. The
    /// answer must be 200 (a stream) or 101 (an upgrade, with no body) for
    /// the socket to come; a receiver that never gets it is told by its
    /// sender's drop.
    pub fn take(&self) -> Option<oneshot::Receiver<ClientSocket>> {
        self.0.lock().take()
    }

    fn taken(&self) -> bool {
        self.0.lock().is_none()
    }
}

/// Whether `peeked` (the first bytes of a fresh connection) begins a
/// `GET` of one of `paths` over HTTP/1.1; `None` while too few bytes say.
pub(crate) fn is_stream_request(peeked: &[u8], paths: &[&str]) -> Option<bool> {
    // whether `peeked` agrees with `wanted` as far as both go
    let agrees = |peeked: &[u8], wanted: &[u8]| {
        let n = peeked.len().min(wanted.len());
        peeked[..n] == wanted[..n]
    };
    let mut undecided = false;
    for path in paths {
        let line = peeked.strip_prefix(b"GET ".as_slice());
        let Some(rest) = line else {
            undecided |= agrees(peeked, b"GET ");
            continue;
        };
        if !agrees(rest, path.as_bytes()) {
            continue;
        }
        match rest.get(path.len()) {
            Some(b'?' | b' ') => return Some(true),
            Some(_) => {}
            None => undecided = true,
        }
    }
    if undecided { None } else { Some(false) }
}

/// Peeks at a fresh connection until its first request line says whether
/// it is a stream request; `None` when the client closed or sent nothing
/// in `timeout`.
pub(crate) async fn sniff(stream: &TcpStream, paths: &[&str], timeout: Duration) -> Option<bool> {
    tokio::time::timeout(timeout, async {
        let mut peeked = [0u8; 64];
        loop {
            let n = stream.peek(&mut peeked).await.ok()?;
            if n == 0 {
                return None;
            }
            if let Some(decided) = is_stream_request(&peeked[..n], paths) {
                return Some(decided);
            }
            // a request line split over packets (rare): peeking again at
            // once would spin on the same bytes
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()
    .flatten()
}

/// Serves one stream request on `stream`: reads its head, runs it through
/// `app` with a [`SocketOffer`], and hands the socket over when taken; any
/// other answer is written whole and the socket closed.
pub(crate) async fn serve(
    mut stream: TcpStream,
    ticket: Arc<Ticket>,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
) {
    let Ok(Some(head)) = tokio::time::timeout(header_timeout, read_head(&mut stream)).await else {
        return;
    };
    ticket.prove();
    let mut request = match parse_head(&head) {
        Ok(request) => request,
        Err(status) => {
            let answer = Response::builder()
                .status(status)
                .body(Body::empty())
                .unwrap_or_default();
            let _ = write_whole(&mut stream, answer).await;
            return;
        }
    };
    let (tx, rx) = oneshot::channel();
    let offer = SocketOffer(Arc::new(Mutex::new(Some(rx))));
    request.extensions_mut().insert(ConnectInfo(peer));
    request.extensions_mut().insert(offer.clone());
    let Ok(answer) = app.oneshot(request).await;
    let taken = offer.taken();
    if taken
        && matches!(
            answer.status(),
            StatusCode::OK | StatusCode::SWITCHING_PROTOCOLS
        )
    {
        let head = async {
            if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
                write_upgrade_head(&mut stream, answer).await
            } else {
                write_stream_head(&mut stream, answer).await
            }
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, head).await;
        if matches!(written, Ok(Ok(()))) {
            let _ = tx.send(ClientSocket {
                stream,
                _ticket: ticket,
            });
        }
        return;
    }
    drop(offer);
    let _ = write_whole(&mut stream, answer).await;
}

/// The request head, through its blank line (nothing after it is read: a
/// stream request has no body).
async fn read_head(stream: &mut TcpStream) -> Option<BytesMut> {
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if head.len() >= MAX_HEAD {
            return None;
        }
        let mut byte_window = [0u8; 512];
        // only up to the end of the head: peek, then take what belongs to it
        let n = stream.peek(&mut byte_window).await.ok()?;
        if n == 0 {
            return None;
        }
        let seen = head.len();
        head.put_slice(&byte_window[..n]);
        let end = find_end(&head, seen.saturating_sub(3));
        let take = match end {
            Some(end) => end - seen,
            None => n,
        };
        head.truncate(seen + take);
        stream.read_exact(&mut byte_window[..take]).await.ok()?;
        if end.is_some() {
            return Some(head);
        }
    }
}

/// Where the head ends (just past `\r\n\r\n`), searching from `from`.
fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

fn parse_head(head: &[u8]) -> Result<Request<Body>, StatusCode> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Err(StatusCode::BAD_REQUEST),
    }
    // a chunked stream needs HTTP/1.1
    if parsed.version != Some(1) {
        return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
    let mut request = Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"));
    for h in parsed.headers.iter() {
        request = request.header(h.name, h.value);
    }
    let request = request
        .body(Body::empty())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|l| l.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(request)
}

/// The status line and headers of `answer`, with `extra` headers.
fn put_head(out: &mut BytesMut, answer: &Response<Body>, extra: &[(&str, &[u8])]) {
    let status = answer.status();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in answer.headers() {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        put_header(out, name.as_str(), value.as_bytes());
    }
    if !answer.headers().contains_key(header::DATE) {
        put_header(
            out,
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
        );
    }
    for (name, value) in extra {
        put_header(out, name, value);
    }
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn put_chunk(out: &mut BytesMut, data: &[u8]) {
    let mut size = [0u8; 18];
    out.put_slice(chunk_size_line(data.len(), &mut size));
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A chunk's size line, `<hex>\r\n`, written into `buf`.
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    let mut rest = len;
    loop {
        at -= 1;
        buf[at] = HEX[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    &buf[at..]
}

/// The head of a streamed answer, chunked, and its body so far (the
/// stream's first bytes) as the first chunk: one write.
async fn write_stream_head(stream: &mut TcpStream, answer: Response<Body>) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(512);
    put_head(
        &mut out,
        &answer,
        &[("transfer-encoding", b"chunked"), ("connection", b"close")],
    );
    let first = axum::body::to_bytes(answer.into_body(), MAX_FIRST)
        .await
        .map_err(io::Error::other)?;
    if !first.is_empty() {
        put_chunk(&mut out, &first);
    }
    stream.write_all(&out).await
}

/// The head of an upgrade's `101`: from its last byte on, the socket
/// speaks the new protocol.
async fn write_upgrade_head(stream: &mut TcpStream, answer: Response<Body>) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(256);
    put_head(&mut out, &answer, &[("connection", b"upgrade")]);
    drop(answer);
    stream.write_all(&out).await
}

/// A whole answer (a refusal, an error), then the socket is closed.
async fn write_whole(stream: &mut TcpStream, answer: Response<Body>) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, async {
        let (parts, body) = answer.into_parts();
        let body = axum::body::to_bytes(body, MAX_FIRST)
            .await
            .unwrap_or_else(|_| Bytes::new());
        let answer = Response::from_parts(parts, Body::empty());
        let length = HeaderValue::from(body.len());
        let mut out = BytesMut::with_capacity(256 + body.len());
        put_head(
            &mut out,
            &answer,
            &[
                ("content-length", length.as_bytes()),
                ("connection", b"close"),
            ],
        );
        out.put_slice(&body);
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_request_is_told_from_its_first_bytes() {
        let paths = ["/sse"];
        assert_eq!(
            is_stream_request(b"GET /sse?channels=a HTTP/1.1\r\n", &paths),
            Some(true)
        );
        assert_eq!(
            is_stream_request(b"GET /sse HTTP/1.1\r\n", &paths),
            Some(true)
        );
        assert_eq!(
            is_stream_request(b"GET /sseX HTTP/1.1\r\n", &paths),
            Some(false)
        );
        assert_eq!(
            is_stream_request(b"GET /ws HTTP/1.1\r\n", &paths),
            Some(false)
        );
        assert_eq!(
            is_stream_request(b"POST /sse HTTP/1.1\r\n", &paths),
            Some(false)
        );
        assert_eq!(is_stream_request(b"GE", &paths), None);
        assert_eq!(is_stream_request(b"GET /ss", &paths), None);
        assert_eq!(is_stream_request(b"", &paths), None);
    }

    #[test]
    fn a_chunk_size_line_is_hex() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn a_head_ends_at_its_blank_line() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn a_stream_request_with_a_body_or_a_broken_head_is_refused() {
        assert!(parse_head(b"GET /sse?x HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert_eq!(
            parse_head(b"GET /sse HTTP/1.1\r\nContent-Length: 5\r\n\r\n").err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            parse_head(b"GET /sse HTTP/1.1\r\nBad Header\r\n\r\n").err(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            parse_head(b"GET /sse HTTP/1.0\r\n\r\n").err(),
            Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            "a chunked stream needs HTTP/1.1"
        );
    }
}

#[cfg(test)]
mod served {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::service::AcceptLimits;

    /// A stream handler: with an offer it takes the socket and writes two
    /// chunks itself; without one it answers a plain body saying so.
    async fn stream(offer: Option<axum::Extension<SocketOffer>>) -> Response<Body> {
        let Some(socket) = offer.and_then(|axum::Extension(o)| o.take()) else {
            return Response::new(Body::from("through hyper"));
        };
        tokio::spawn(async move {
            let Ok(mut socket) = socket.await else { return };
            for chunk in ["one", "two"] {
                socket.write_chunk(chunk.as_bytes()).await.expect("write");
            }
            socket.finish().await;
        });
        let mut answer = Response::new(Body::from("first"));
        answer
            .headers_mut()
            .insert("x-stream", HeaderValue::from_static("yes"));
        answer
    }

    async fn serving() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/stream", get(stream))
            .route("/other", get(|| async { "other" }))
            .route("/refused", get(|| async { (StatusCode::FORBIDDEN, "no") }));
        tokio::spawn(crate::service::serve_http(
            listener,
            app,
            AcceptLimits::default(),
            &["/stream", "/refused"],
            std::future::pending(),
        ));
        addr
    }

    async fn exchange(addr: SocketAddr, requests: &str) -> String {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket.write_all(requests.as_bytes()).await.expect("send");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(30), socket.read_to_string(&mut answer))
            .await
            .expect("the server closes the connection")
            .expect("read");
        answer
    }

    #[tokio::test]
    async fn a_fresh_connections_stream_is_written_to_its_own_socket_as_chunks() {
        let addr = serving().await;
        let answer = exchange(addr, "GET /stream?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nx-stream: yes"),
            "the handler's headers: {head}"
        );
        assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
        assert_eq!(body, "5\r\nfirst\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn a_refused_stream_is_answered_whole_and_closed() {
        let addr = serving().await;
        let answer = exchange(addr, "GET /refused HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.contains("\r\ncontent-length: 2\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nno"), "{answer}");
    }

    #[tokio::test]
    async fn a_stream_on_a_connection_that_served_a_request_goes_through_hyper() {
        let addr = serving().await;
        let answer = exchange(
            addr,
            "GET /other HTTP/1.1\r\nHost: a\r\n\r\nGET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.contains("other"), "{answer}");
        assert!(answer.ends_with("through hyper"), "{answer}");
    }

    #[tokio::test]
    async fn a_socket_that_has_said_nothing_does_not_hold_up_a_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = AcceptLimits {
            // far beyond the test's wait: only the stop can end it
            header_timeout: Duration::from_secs(3600),
            ..AcceptLimits::default()
        };
        let server = tokio::spawn(crate::service::serve_http(
            listener,
            Router::new(),
            limits,
            &["/stream"],
            async move {
                let _ = stopped.await;
            },
        ));
        let _silent = TcpStream::connect(addr).await.expect("connect");
        // the server has taken the socket once a second one is answered
        let answer = exchange(addr, "GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the listener stops with a silent socket open")
            .expect("task")
            .expect("serve");
    }

    #[tokio::test]
    async fn a_stream_request_with_a_body_is_a_bad_request() {
        let addr = serving().await;
        let answer = exchange(addr, "GET /stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
    }
}
