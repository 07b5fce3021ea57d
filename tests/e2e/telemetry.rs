//! Traces leave the process over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set: a minimal OTLP/gRPC collector in the test receives them.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_json::json;
use std::collections::HashMap;
use tokio::sync::mpsc;

use herald_testkit::*;

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
    let (endpoint, mut rx) = collector().await;
    let env = Env::new()
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .with("OTEL_BSP_SCHEDULE_DELAY", "100");
    let herald = Herald::standalone(&env);
    herald.api().publish("traced", json!(1)).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let request = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("spans within the deadline")
            .expect("collector running");
        for resource_spans in &request.resource_spans {
            let service = service_of(resource_spans);
            let names: Vec<&str> = resource_spans
                .scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .map(|s| s.name.as_str())
                .collect();
            if names.contains(&"publish") {
                assert_eq!(service, "herald-standalone");
                return;
            }
        }
    }
}

/// The `service.name` of a batch of spans.
fn service_of(spans: &ResourceSpans) -> String {
    spans
        .resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Starts an OTLP collector; every export request arrives on the receiver.
async fn collector() -> (String, mpsc::Receiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::channel(256);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), rx)
}

/// One publish is one trace: the caller's `traceparent` on the API call
/// reaches routing's spans and, through the live message's headers, the
/// edge that delivered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_is_one_trace_from_the_api_call_to_the_edge() {
    let (endpoint, mut rx) = collector().await;
    let env = Cluster::new()
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .with("OTEL_BSP_SCHEDULE_DELAY", "100");
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    let token = mint_token(&env, "tess", "traced:*", "");
    let (mut client, _) = herald_client::Client::connect(&edge.ws(), &token)
        .await
        .unwrap();
    client.subscribe("traced:room").await.unwrap();

    let trace_id: [u8; 16] = rand::random();
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    let response = http_client()
        .post(format!("{}/api/publish", routing.http()))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{hex}-00f067aa0ba902b7-01"))
        .json(&json!({"channel": "traced:room", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    within(WAIT, "the delivery", client.next_publication())
        .await
        .unwrap();

    // spans of this trace, by service
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(seen
        .get("herald-routing")
        .is_some_and(|n| n.iter().any(|n| n == "publish"))
        && seen
            .get("herald-edge")
            .is_some_and(|n| n.iter().any(|n| n == "deliver")))
    {
        let request = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("spans of the trace, so far: {seen:?}"))
            .expect("collector running");
        for resource_spans in &request.resource_spans {
            let service = service_of(resource_spans);
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                if span.trace_id == trace_id {
                    seen.entry(service.clone())
                        .or_default()
                        .push(span.name.clone());
                }
            }
        }
    }
}
