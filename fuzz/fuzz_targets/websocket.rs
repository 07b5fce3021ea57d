//! The WebSocket framing (`herald_edge::websocket`): the bytes a client
//! sends after the upgrade, read message by message.
//!
//! Properties: reading never panics and always ends (every message or
//! error consumes input; the end of the input is `Gone`); no text message
//! is over the limit; once a close arrived or an error ended the read,
//! nothing more is asked; what the server wrote back (pongs, the close
//! echo) is whole server frames: unmasked, final, control frames ≤ 125
//! bytes.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use herald_edge::websocket::{Message, WebSocket, WsError};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 1024;

/// Runs `future` to its end: reading from a slice and writing to a vector
/// never wait.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// The frames the server wrote, checked one by one.
fn check_written(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= 2, "a frame cut short: {out:?}");
        let (b0, b1) = (out[0], out[1]);
        assert_eq!(b0 & 0xF0, 0x80, "final, no reserved bits");
        assert_eq!(b1 & 0x80, 0, "a server frame is not masked");
        let opcode = b0 & 0x0F;
        assert!(matches!(opcode, 0x8 | 0xA), "only pongs and the close echo: {opcode}");
        let len = usize::from(b1 & 0x7F);
        assert!(len <= 125, "a control frame of {len} bytes");
        assert!(out.len() >= 2 + len, "a frame cut short");
        out = &out[2 + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let mut written = Vec::new();
    {
        let io = tokio::io::join(data, &mut written);
        let mut ws = WebSocket::new(io, MAX_MESSAGE);
        loop {
            match now(ws.recv()) {
                Ok(Message::Text(text)) => assert!(text.len() <= MAX_MESSAGE),
                Ok(Message::Binary) => {}
                Ok(Message::Close(_)) => break,
                Err(WsError::Gone | WsError::Protocol(_) | WsError::TooBig(_)) => break,
                Err(WsError::Io(e)) => panic!("reading a slice failed: {e}"),
            }
        }
        let _ = now(ws.flush());
    }
    check_written(&written);
});
