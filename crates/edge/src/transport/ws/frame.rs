//! WebSocket framing (RFC 6455), the server's side, for connections that
//! are idle most of their life. Nothing is buffered between messages: a
//! read goes through a buffer on the stack and only the bytes of a frame
//! still arriving are kept; frames to send are encoded into a buffer that
//! lives only until they are written. An idle WebSocket is its socket and
//! a few words — not the 4 + 16 KiB of read and write buffers a general
//! WebSocket library keeps for the life of each connection.
//!
//! Every wait is cancel-safe: what was read or written is recorded before
//! the wait returns, so the connection may select on [`WebSocket::recv`]
//! with everything else.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How much one read takes from the socket (on the stack, not held).
const READ_CHUNK: usize = 4096;
/// The longest payload of a control frame (ping, pong, close).
const MAX_CONTROL: usize = 125;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A whole message from the client. Pings are answered and pongs dropped
/// inside [`WebSocket::recv`].
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (checked UTF-8).
    Text(String),
    /// A binary message (Herald takes none: its bytes are dropped).
    Binary,
    /// The client's close frame (answered already), with its code.
    Close(Option<u16>),
}

/// Why a WebSocket cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The client closed its side.
    #[error("connection closed")]
    Gone,
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// A frame RFC 6455 forbids.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// A frame or message over the limit.
    #[error("message over {0} bytes")]
    TooBig(usize),
}

/// One server-side WebSocket over `io`.
pub struct WebSocket<S> {
    io: S,
    max_message: usize,
    /// Bytes read but not parsed yet: the start of a frame still arriving.
    /// Unallocated between frames.
    inbound: Vec<u8>,
    /// A fragmented message so far: its opcode and payload.
    partial: Option<(u8, Vec<u8>)>,
    /// Encoded frames not written yet, from `written` on. Unallocated once
    /// written.
    outbound: Vec<u8>,
    written: usize,
    close_sent: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// `io` after the handshake; messages (and frames) over `max_message`
    /// bytes are refused.
    pub fn new(io: S, max_message: usize) -> Self {
        WebSocket {
            io,
            max_message,
            inbound: Vec::new(),
            partial: None,
            outbound: Vec::new(),
            written: 0,
            close_sent: false,
        }
    }

    /// The next message. Answers pings (before reading on) and a close.
    pub async fn recv(&mut self) -> Result<Message, WsError> {
        loop {
            if self.written < self.outbound.len() {
                self.flush().await?;
            }
            if let Some(message) = self.parse_buffered()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    /// Queues a text frame; [`flush`](Self::flush) writes it.
    pub fn queue_text(&mut self, payload: &[u8]) {
        self.queue(TEXT, payload);
    }

    /// Queues the close frame (once): `code` and `reason` (cut to fit).
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        let mut cut = reason.len().min(MAX_CONTROL - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = Vec::with_capacity(2 + cut);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.queue(CLOSE, &payload);
        self.close_sent = true;
    }

    /// Answers a client's close: its code back, or an empty close frame
    /// to one that gave none.
    fn queue_close_echo(&mut self, code: Option<u16>) {
        match code {
            Some(code) => self.queue_close(code, ""),
            None => {
                self.queue(CLOSE, &[]);
                self.close_sent = true;
            }
        }
    }

    /// Writes what is queued. Cancel-safe: what a cancelled flush wrote is
    /// not written again.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        while self.written < self.outbound.len() {
            let n = self.io.write(&self.outbound[self.written..]).await?;
            if n == 0 {
                return Err(WsError::Gone);
            }
            self.written += n;
        }
        self.outbound = Vec::new();
        self.written = 0;
        self.io.flush().await?;
        Ok(())
    }

    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        if self.close_sent {
            return;
        }
        if self.written == self.outbound.len() {
            self.outbound.clear();
            self.written = 0;
        }
        put_frame(&mut self.outbound, opcode, payload);
    }

    /// Reads once into a chunk on the stack; keeps what came. `Gone` when
    /// the client closed its side.
    async fn fill(&mut self) -> Result<(), WsError> {
        let io = &mut self.io;
        let inbound = &mut self.inbound;
        let n = poll_fn(|cx| {
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    inbound.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        if n == 0 {
            return Err(WsError::Gone);
        }
        Ok(())
    }

    /// The next whole message among the bytes read, if they hold one.
    fn parse_buffered(&mut self) -> Result<Option<Message>, WsError> {
        let mut at = 0;
        let message = loop {
            let Some(frame) = parse_frame(&mut self.inbound[at..], self.max_message)? else {
                break None;
            };
            let payload = &self.inbound[at + frame.payload.start..at + frame.payload.end];
            at += frame.len;
            match (frame.opcode, &mut self.partial) {
                (PING, _) => {
                    let payload = payload.to_vec();
                    self.queue(PONG, &payload);
                }
                (PONG, _) => {}
                (CLOSE, _) => {
                    let code = close_code(payload)?;
                    // the answer echoes the code, as the RFC asks
                    self.queue_close_echo(code);
                    break Some(Message::Close(code));
                }
                (CONTINUATION, None) => {
                    return Err(WsError::Protocol("a continuation of no message"));
                }
                (CONTINUATION, Some((_, so_far))) => {
                    if so_far.len() + payload.len() > self.max_message {
                        return Err(WsError::TooBig(self.max_message));
                    }
                    so_far.extend_from_slice(payload);
                    if frame.fin {
                        let (opcode, whole) = self.partial.take().unwrap_or_default();
                        break Some(message(opcode, whole)?);
                    }
                }
                (_, Some(_)) => {
                    return Err(WsError::Protocol("a new message before the last one ended"));
                }
                (opcode, None) => {
                    if frame.fin {
                        break Some(message(opcode, payload.to_vec())?);
                    }
                    self.partial = Some((opcode, payload.to_vec()));
                }
            }
        };
        if at == self.inbound.len() {
            self.inbound = Vec::new();
        } else {
            self.inbound.drain(..at);
        }
        Ok(message)
    }
}

fn message(opcode: u8, payload: Vec<u8>) -> Result<Message, WsError> {
    match opcode {
        TEXT => String::from_utf8(payload)
            .map(Message::Text)
            .map_err(|_| WsError::Protocol("a text message that is not UTF-8")),
        _ => Ok(Message::Binary),
    }
}

/// A close frame's code; its reason must be UTF-8.
fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("a close frame with half a code")),
        [a, b, reason @ ..] => {
            std::str::from_utf8(reason)
                .map_err(|_| WsError::Protocol("a close reason that is not UTF-8"))?;
            Ok(Some(u16::from_be_bytes([*a, *b])))
        }
    }
}

/// One parsed frame: where its (unmasked) payload is and how many bytes
/// the whole frame took.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: std::ops::Range<usize>,
    len: usize,
}

/// The frame at the start of `buf`, unmasked in place; `None` while it
/// has not all arrived. A frame over `max` is refused from its header,
/// before its payload is read.
fn parse_frame(buf: &mut [u8], max: usize) -> Result<Option<Frame>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol(
            "reserved bits set (no extension was agreed)",
        ));
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(WsError::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("a client frame must be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= CLOSE && (!fin || len > MAX_CONTROL as u64) {
        return Err(WsError::Protocol(
            "a control frame fragmented or over 125 bytes",
        ));
    }
    let len = match usize::try_from(len) {
        Ok(len) if len <= max => len,
        _ => return Err(WsError::TooBig(max)),
    };
    let start = at + 4;
    let end = start + len;
    if buf.len() < end {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[at..start]);
    for (i, byte) in buf[start..end].iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: start..end,
        len: end,
    }))
}

/// Appends an unmasked, final frame (the server's).
fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

    /// A client frame: masked, as a client must.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    async fn server_with(
        bytes: &[u8],
        max: usize,
    ) -> (WebSocket<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, mut client) = duplex(1 << 20);
        client.write_all(bytes).await.expect("write");
        (WebSocket::new(server, max), client)
    }

    #[tokio::test]
    async fn text_messages_whole_fragmented_and_split_across_reads() {
        let mut bytes = client_frame(true, TEXT, b"{\"id\":1}");
        bytes.extend(client_frame(false, TEXT, b"hel"));
        bytes.extend(client_frame(true, PING, b"p")); // a control frame between fragments
        bytes.extend(client_frame(true, CONTINUATION, "lo ✓".as_bytes()));
        let long = "x".repeat(70_000);
        bytes.extend(client_frame(true, TEXT, long.as_bytes()));
        let (mut ws, mut client) = server_with(&bytes[..3], 100_000).await;
        client.write_all(&bytes[3..]).await.expect("write");
        assert_eq!(
            ws.recv().await.expect("one"),
            Message::Text("{\"id\":1}".into())
        );
        assert_eq!(
            ws.recv().await.expect("two"),
            Message::Text("hello ✓".into())
        );
        assert_eq!(ws.recv().await.expect("three"), Message::Text(long));
        assert!(
            ws.inbound.capacity() == 0,
            "nothing is held between messages"
        );
        // the ping was answered with its payload
        let mut pong = [0u8; 3];
        client.read_exact(&mut pong).await.expect("pong");
        assert_eq!(pong, [0x80 | PONG, 1, b'p']);
    }

    #[tokio::test]
    async fn frames_the_rfc_forbids_are_refused() {
        let unmasked = [0x81, 0x01, b'a'];
        let reserved = {
            let mut f = client_frame(true, TEXT, b"a");
            f[0] |= 0x40;
            f
        };
        let cases: [(&str, Vec<u8>); 6] = [
            ("unmasked", unmasked.to_vec()),
            ("reserved bits", reserved),
            ("unknown opcode", client_frame(true, 0x3, b"a")),
            ("fragmented ping", client_frame(false, PING, b"a")),
            (
                "continuation of nothing",
                client_frame(true, CONTINUATION, b"a"),
            ),
            ("not UTF-8", client_frame(true, TEXT, &[0xff, 0xfe])),
        ];
        for (what, bytes) in cases {
            let (mut ws, _client) = server_with(&bytes, 1000).await;
            assert!(
                matches!(ws.recv().await, Err(WsError::Protocol(_))),
                "{what}"
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_from_its_header_and_fragments_add_up() {
        // only the header of a 10 MB frame: refused without waiting for it
        let header = &client_frame(true, TEXT, &vec![b'a'; 10_000_000])[..14];
        let (mut ws, _client) = server_with(header, 1000).await;
        assert!(matches!(ws.recv().await, Err(WsError::TooBig(1000))));

        let mut bytes = client_frame(false, TEXT, &[b'a'; 600]);
        bytes.extend(client_frame(true, CONTINUATION, &[b'a'; 600]));
        let (mut ws, _client) = server_with(&bytes, 1000).await;
        assert!(matches!(ws.recv().await, Err(WsError::TooBig(1000))));
    }

    #[tokio::test]
    async fn a_close_is_echoed_with_its_code_and_nothing_is_sent_after_it() {
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let (mut ws, mut client) = server_with(&client_frame(true, CLOSE, &payload), 1000).await;
        assert_eq!(ws.recv().await.expect("close"), Message::Close(Some(4000)));
        ws.queue_text(b"late");
        ws.queue_close(1000, "again");
        ws.flush().await.expect("flush");
        drop(ws);
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.expect("read");
        assert_eq!(echoed, [0x80 | CLOSE, 2, 0x0f, 0xa0]);
    }

    #[tokio::test]
    async fn server_frames_are_unmasked_with_the_length_in_the_shortest_form() {
        let (server, mut client) = duplex(1 << 20);
        let mut ws = WebSocket::new(server, 1000);
        ws.queue_text(b"hi");
        ws.queue_text(&[b'x'; 300]);
        ws.queue_text(&vec![b'y'; 70_000]);
        ws.queue_close(4001, &"é".repeat(100));
        ws.flush().await.expect("flush");
        assert_eq!(ws.outbound.capacity(), 0, "nothing is held once written");
        drop(ws);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        assert_eq!(&out[..4], &[0x81, 2, b'h', b'i']);
        assert_eq!(&out[4..8], &[0x81, 126, 0x01, 0x2c]);
        let at = 8 + 300;
        assert_eq!(
            &out[at..at + 10],
            &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
        let close = &out[at + 10 + 70_000..];
        assert_eq!(close[0], 0x88);
        assert!(
            usize::from(close[1]) <= MAX_CONTROL,
            "a close frame fits a control frame"
        );
        assert_eq!(&close[2..4], &4001u16.to_be_bytes());
        assert!(
            std::str::from_utf8(&close[4..]).is_ok(),
            "the reason is cut on a character"
        );
    }

    #[tokio::test]
    async fn a_client_gone_mid_frame_is_gone() {
        let frame = client_frame(true, TEXT, b"hello");
        let (mut ws, client) = server_with(&frame[..4], 1000).await;
        drop(client);
        assert!(matches!(ws.recv().await, Err(WsError::Gone)));
    }
}
