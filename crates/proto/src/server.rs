//! Serving gRPC the same way in every process: the services asked for,
//! plus gRPC health (every listed service SERVING) and reflection (v1 and
//! v1alpha, so both current tools and grpcurl 1.8 can list the API).

use std::future::Future;

use herald_core::api_key::ApiKeys;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

/// A tonic interceptor that admits calls carrying one of the API keys in
/// metadata `authorization: Bearer <key>`.
#[derive(Clone, Debug)]
pub struct RequireApiKey {
    keys: ApiKeys,
}

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
/// names of the services in `routes` (`herald.routing.v1.Routing`).
pub async fn with_standard_services(
    routes: Routes,
    names: &[&str],
) -> Result<Routes, tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
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
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
