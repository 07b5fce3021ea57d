//! Serving gRPC the same way in every process: the services asked for,
//! plus gRPC health (every listed service SERVING) and reflection (v1 and
//! v1alpha, so both current tools and grpcurl 1.8 can list the API).

use std::future::Future;

use herald_core::api_key::ApiKeys;
use herald_core::shutdown::Shutdown;
use herald_protocol::{ErrorBody, ErrorCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

/// The one gRPC mapping of Herald's errors, for every service.
pub fn status_of(e: ErrorBody) -> Status {
    let code = match e.code {
        ErrorCode::BadRequest => tonic::Code::InvalidArgument,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::UnknownChannel => tonic::Code::NotFound,
        ErrorCode::LimitExceeded | ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
        ErrorCode::Unrecoverable => tonic::Code::OutOfRange,
        // gRPC's "may have completed"; the key rides in metadata.
        ErrorCode::OutcomeUnknown => tonic::Code::DeadlineExceeded,
        // Nothing was done and trying again may work.
        ErrorCode::Internal => tonic::Code::Unavailable,
    };
    let mut status = Status::new(code, e.message);
    if let Some(key) = e
        .idempotency_key
        .and_then(|k| tonic::metadata::MetadataValue::try_from(k).ok())
    {
        status.metadata_mut().insert("idempotency-key", key);
    }
    status
}

/// A tonic interceptor that admits calls carrying one of the API keys in
/// metadata `authorization: Bearer <key>`.
#[derive(Clone, Debug)]
pub struct RequireApiKey {
    keys: ApiKeys,
}

/// The interceptor that admits calls with one of `keys`.
pub fn require_api_key(keys: ApiKeys) -> RequireApiKey {
    RequireApiKey { keys }
}

impl tonic::service::Interceptor for RequireApiKey {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            None => Err(Status::unauthenticated(
                "missing API key: send metadata `authorization: Bearer <key>`",
            )),
            Some(k) if !self.keys.accepts(k.trim()) => {
                Err(Status::unauthenticated("invalid API key"))
            }
            Some(_) => Ok(request),
        }
    }
}

/// Adds health and reflection to `routes`. `names` are the fully qualified
/// names of the services in `routes` (`herald.routing.v1.Routing`); their
/// health follows `readiness` until `shutdown` (the task that keeps it so
/// is answered with the routes, for the service's tasks).
pub async fn with_standard_services(
    routes: Routes,
    names: &[&str],
    readiness: crate::service::Readiness,
    shutdown: Shutdown,
) -> Result<(Routes, JoinHandle<()>), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in names {
        // Not serving until the first checks have run.
        reporter
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    let follow = readiness.drive(
        reporter,
        names.iter().map(|n| n.to_string()).collect(),
        shutdown,
    );
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((
        routes
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha),
        follow,
    ))
}

/// Serves `routes` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // Without TCP_NODELAY small gRPC answers wait on delayed ACKs (40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .layer(crate::trace::grpc_layer())
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_resource_exhausted,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// A request over the size limit is `RESOURCE_EXHAUSTED`, as the gRPC spec
/// says (tonic answers `OUT_OF_RANGE`): in the headers of a trailers-only
/// answer, or in the trailers.
fn too_large_is_resource_exhausted(
    response: axum::http::Response<tonic::body::Body>,
) -> axum::http::Response<Exhausted> {
    let (mut parts, body) = response.into_parts();
    exhausted(&mut parts.headers);
    axum::http::Response::from_parts(parts, Exhausted(body))
}

fn exhausted(headers: &mut axum::http::HeaderMap) {
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            // percent-encoded on the wire
            .is_some_and(|m| m.contains("length too large") || m.contains("length%20too%20large"));
    if too_large {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
}

/// A response body whose trailers say `RESOURCE_EXHAUSTED` for a request
/// over the size limit.
struct Exhausted(tonic::body::Body);

impl http_body::Body for Exhausted {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.0).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(mut frame))) = polled {
            if let Some(trailers) = frame.trailers_mut() {
                exhausted(trailers);
            }
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_grpc_code_a_client_expects() {
        let cases = [
            (ErrorCode::BadRequest, tonic::Code::InvalidArgument),
            (ErrorCode::Unauthorized, tonic::Code::Unauthenticated),
            (ErrorCode::TokenExpired, tonic::Code::Unauthenticated),
            (ErrorCode::PermissionDenied, tonic::Code::PermissionDenied),
            (ErrorCode::UnknownChannel, tonic::Code::NotFound),
            (ErrorCode::Unrecoverable, tonic::Code::OutOfRange),
            (ErrorCode::OutcomeUnknown, tonic::Code::DeadlineExceeded),
            (ErrorCode::LimitExceeded, tonic::Code::ResourceExhausted),
            (ErrorCode::TooManyRequests, tonic::Code::ResourceExhausted),
            (ErrorCode::Internal, tonic::Code::Unavailable),
        ];
        for (code, grpc) in cases {
            let status = status_of(ErrorBody::new(code, "why"));
            assert_eq!((status.code(), status.message()), (grpc, "why"), "{code:?}");
        }
        let unknown = status_of(ErrorBody::outcome_unknown("why", "k1"));
        assert_eq!(
            unknown
                .metadata()
                .get("idempotency-key")
                .map(|v| v.to_str().ok()),
            Some(Some("k1")),
            "the key to retry with"
        );
    }
}
