//! A request answered before its body was read leaves that body on the
//! socket: hyper then closes the connection after the answer, and a client
//! that sends its next request on it in the meantime (keep-alive) gets
//! "server disconnected without a response" instead of an answer. So such
//! an answer says `Connection: close`, and the client opens a new
//! connection instead of reusing this one. Refusals before the body is
//! read are the common case: a missing API key, a full edge.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Response, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body that records whether it was read to its end.
pub(crate) struct WatchedBody {
    inner: Incoming,
    finished: Arc<AtomicBool>,
}

/// Whether the request's body was read to its end (or it had none).
#[derive(Clone)]
pub(crate) struct BodyRead(Arc<AtomicBool>);

impl WatchedBody {
    pub(crate) fn new(inner: Incoming) -> (Self, BodyRead) {
        let finished = Arc::new(AtomicBool::new(inner.is_end_stream()));
        (
            WatchedBody {
                inner,
                finished: finished.clone(),
            },
            BodyRead(finished),
        )
    }
}

impl BodyRead {
    /// Adds `Connection: close` to `response` when the body was left
    /// (partly) unread.
    pub(crate) fn mark<B>(&self, response: &mut Response<B>) {
        if !self.0.load(Ordering::Acquire) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

impl Body for WatchedBody {
    type Data = <Incoming as Body>::Data;
    type Error = <Incoming as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
