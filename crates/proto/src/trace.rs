//! A span for every incoming server-API request, HTTP or gRPC, continuing
//! the caller's trace when it sends `traceparent` (gRPC metadata are HTTP/2
//! headers, so one rule serves both).

use axum::http::{HeaderMap, Request};
use herald_core::telemetry::propagation;
use opentelemetry::propagation::Extractor;
use tower_http::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;

/// HTTP headers as a trace context carrier.
pub struct HeaderCarrier<'a>(pub &'a HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    propagation::continue_trace(&span, &HeaderCarrier(request.headers()));
    span
}

type MakeSpan<B> = fn(&Request<B>) -> tracing::Span;

/// For an axum router of a server API.
pub fn http_layer() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    MakeSpan<axum::body::Body>,
    (),
    (),
    (),
    (),
    (),
> {
    TraceLayer::new_for_http()
        .make_span_with(request_span as MakeSpan<axum::body::Body>)
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        // failures are answered and counted; not every 4xx is worth a log line
        .on_failure(())
}

/// For a tonic server.
pub fn grpc_layer() -> TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    MakeSpan<tonic::body::Body>,
    (),
    (),
    (),
    (),
    (),
> {
    TraceLayer::new_for_grpc()
        .make_span_with(request_span as MakeSpan<tonic::body::Body>)
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}
