//! What waits to be written to one connection: a bounded queue of shared
//! deliveries. Bounded twice — by count and by bytes — so a client that
//! stops reading costs a fixed amount of memory; past either bound it is a
//! slow consumer and is disconnected (4001) without slowing anyone else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use axum::extract::ws::Utf8Bytes;
use herald_core::shutdown::Shutdown;
use herald_protocol::StreamPosition;
use herald_protocol::channel::Channel;
use tokio::sync::mpsc;

/// The kind of a push, as SSE names it in `event:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// A publication (`pub`).
    Pub,
    /// A user joined the channel.
    Join,
    /// A user left the channel.
    Leave,
    /// A user is typing.
    Typing,
}

impl PushKind {
    /// The name in frames and SSE `event:` (`pub`, `join`, …).
    pub fn name(self) -> &'static str {
        match self {
            PushKind::Pub => "pub",
            PushKind::Join => "join",
            PushKind::Leave => "leave",
            PushKind::Typing => "typing",
        }
    }

    /// The kind a name stands for (the bus's `Herald-Kind` header), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "pub" => PushKind::Pub,
            "join" => PushKind::Join,
            "leave" => PushKind::Leave,
            "typing" => PushKind::Typing,
            _ => return None,
        })
    }
}

/// One push, encoded once per edge and shared by every connection that
/// receives it.
#[derive(Debug)]
pub struct Delivery {
    /// The whole frame: `{"<kind>":{…}}`.
    pub frame: Utf8Bytes,
    /// What kind of push it is.
    pub kind: PushKind,
    /// The channel it belongs to.
    pub channel: Channel,
    /// Where a stored publication stands; `None` for ephemeral events
    /// (typing, join, leave).
    pub position: Option<StreamPosition>,
    /// The SSE form (`event:` and `data:` lines), made once on first use
    /// and shared by every SSE stream.
    pub sse: OnceLock<Bytes>,
    /// When routing stored it (Unix ms), for a live publication: the
    /// publish → deliver time is measured from it.
    pub published_ms: Option<u64>,
}

impl Delivery {
    /// A delivery of `frame`; its SSE form is made on first use.
    pub fn new(
        frame: Utf8Bytes,
        kind: PushKind,
        channel: Channel,
        position: Option<StreamPosition>,
    ) -> Self {
        Delivery {
            frame,
            kind,
            channel,
            position,
            sse: OnceLock::new(),
            published_ms: None,
        }
    }

    /// This, stored by routing at `ms` (Unix ms).
    pub fn published_at(mut self, ms: Option<u64>) -> Self {
        self.published_ms = ms;
        self
    }

    /// `event: <kind>` and the body as `data:` lines (the id and the blank
    /// line that ends the event are per stream).
    pub fn sse_event(&self) -> Bytes {
        self.sse
            .get_or_init(|| Bytes::from(sse_fields(self.kind.name(), self.body())))
            .clone()
    }

    /// The push's body without the `{"<kind>":` wrapper — the `data:` of an
    /// SSE event. A slice of the shared bytes: nothing is copied.
    pub fn body(&self) -> &str {
        let frame = self.frame.as_str();
        let start = self.kind.name().len() + 4; // {"kind":
        frame
            .get(start..frame.len().saturating_sub(1))
            .unwrap_or("{}")
    }
}

/// `event:` and `data:` lines for an SSE event. A body spanning lines
/// (JSON may hold raw line breaks between tokens) becomes several `data:`
/// lines, which the client joins back with `\n`.
pub(crate) fn sse_fields(event: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + event.len() + 16);
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in body.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The sending half, held by the hub for each subscribed connection. One
/// `Arc`: the hub clones it per subscription, cheaply.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    tx: mpsc::Sender<Arc<Delivery>>,
    bytes: AtomicUsize,
    max_bytes: usize,
    overflow: Shutdown,
}

/// The receiving half, owned by the connection's writer.
pub struct Inbox {
    rx: mpsc::Receiver<Arc<Delivery>>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// A queue of at most `max_len` deliveries and `max_bytes` bytes;
    /// `overflow` fires when either is exceeded.
    pub fn new(max_len: usize, max_bytes: usize) -> (Outbox, Inbox, Shutdown) {
        let (tx, rx) = mpsc::channel(max_len.max(1));
        let overflow = Shutdown::new();
        let shared = Arc::new(Shared {
            tx,
            bytes: AtomicUsize::new(0),
            max_bytes,
            overflow: overflow.clone(),
        });
        (
            Outbox {
                shared: shared.clone(),
            },
            Inbox { rx, shared },
            overflow,
        )
    }

    /// Queues a delivery without waiting; false if it was not queued.
    pub fn push(&self, delivery: Arc<Delivery>) -> bool {
        let shared = &*self.shared;
        if shared.overflow.is_triggered() {
            return false;
        }
        let size = delivery.frame.len();
        let queued = shared.bytes.fetch_add(size, Ordering::Relaxed) + size;
        if queued > shared.max_bytes {
            shared.bytes.fetch_sub(size, Ordering::Relaxed);
            shared.overflow.trigger();
            return false;
        }
        match shared.tx.try_send(delivery) {
            Ok(()) => true,
            Err(e) => {
                shared.bytes.fetch_sub(size, Ordering::Relaxed);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    shared.overflow.trigger();
                }
                false
            }
        }
    }
}

impl Inbox {
    /// The next delivery, waiting for one; `None` once no outbox is left.
    pub async fn recv(&mut self) -> Option<Arc<Delivery>> {
        let d = self.rx.recv().await?;
        self.shared
            .bytes
            .fetch_sub(d.frame.len(), Ordering::Relaxed);
        Some(d)
    }

    /// The next delivery if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Delivery>> {
        let d = self.rx.try_recv().ok()?;
        self.shared
            .bytes
            .fetch_sub(d.frame.len(), Ordering::Relaxed);
        Some(d)
    }

    /// Bytes queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(text: &str) -> Arc<Delivery> {
        Arc::new(Delivery::new(
            Utf8Bytes::from(format!("{{\"pub\":{text}}}")),
            PushKind::Pub,
            Channel::new("c").unwrap(),
            Some(StreamPosition::new(1, "e")),
        ))
    }

    #[test]
    fn body_is_the_push_without_its_wrapper() {
        assert_eq!(delivery(r#"{"a":1}"#).body(), r#"{"a":1}"#);
        assert_eq!(
            &delivery(r#"{"a":1}"#).sse_event()[..],
            b"event: pub\ndata: {\"a\":1}\n"
        );
        // raw line breaks inside the JSON cannot end the event early
        assert_eq!(
            sse_fields("pub", "{\"a\":\r\n1}"),
            "event: pub\ndata: {\"a\":\ndata: \ndata: 1}\n"
        );
    }

    #[tokio::test]
    async fn bounded_by_count_and_by_bytes() {
        let (outbox, mut inbox, overflow) = Outbox::new(3, 1_000_000);
        for _ in 0..3 {
            assert!(outbox.push(delivery("1")));
        }
        assert!(!outbox.push(delivery("1")));
        assert!(overflow.is_triggered());
        assert!(inbox.recv().await.is_some());

        let (outbox, mut inbox, overflow) = Outbox::new(1000, 100);
        let big = delivery(&format!("\"{}\"", "x".repeat(40)));
        assert!(outbox.push(big.clone()));
        assert!(outbox.push(big.clone()));
        assert!(!outbox.push(big.clone()), "third would pass 100 bytes");
        assert!(overflow.is_triggered());
        // reading frees the bytes
        inbox.recv().await.unwrap();
        assert_eq!(inbox.queued_bytes(), big.frame.len());
    }
}
