//! Traces leave the process over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set: a minimal OTLP/gRPC collector in the test receives them.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::*;

struct Collector(mpsc::Sender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner()).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp() {
    let (tx, mut rx) = mpsc::channel(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let endpoint = format!("http://{addr}");
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", "otlp-test-secret-0123456789"),
        ("HERALD_API_KEYS", "otlp-test-key"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let herald = Herald::standalone(&env);
    let response = http_client()
        .post(format!("{}/api/publish", herald.http()))
        .bearer_auth("otlp-test-key")
        .json(&json!({"channel": "traced", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("spans within the deadline")
            .expect("collector running");
        for resource_spans in &request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone());
            let names: Vec<&str> = resource_spans
                .scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .map(|s| s.name.as_str())
                .collect();
            if names.contains(&"publish") {
                assert_eq!(
                    service,
                    Some(Value::StringValue("herald-standalone".into()))
                );
                return;
            }
        }
    }
}
