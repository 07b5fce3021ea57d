//! Logging and tracing set-up: human-readable logs on a terminal, JSON
//! lines otherwise, and OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The environment variable that turns on OTLP trace export.
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Libraries whose trace logs hold what clients send (tokens included):
/// never logged below debug.
const SECRET_BEARING_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite", "hyper", "h2"];

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG is not a valid filter: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// Someone installed a subscriber first.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes and stops the trace exporter when dropped (at process exit).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("herald: flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber. Must run inside the tokio runtime (the
/// OTLP exporter's gRPC channel lives there).
pub fn init(service: &str, format: Option<LogFormat>) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => {
            EnvFilter::try_new(directives).map_err(|e| TelemetryError::Filter(e.to_string()))?
        }
        Err(_) => EnvFilter::new("info"),
    };
    // Whatever RUST_LOG says: the WebSocket library logs whole frames at
    // trace, and a client's `connect` frame carries its token.
    let filter = SECRET_BEARING_TARGETS
        .iter()
        .fold(filter, |filter, target| {
            match format!("{target}=debug").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            }
        });
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let fmt_layer = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(false)
            .flatten_event(true)
            .boxed(),
    };

    let provider = match std::env::var(OTLP_ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => Some(otlp_provider(service)?),
        _ => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("herald"))
            .boxed()
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    Ok(TelemetryGuard { provider })
}

/// A tracer provider exporting to the OTLP/gRPC endpoint named by the
/// standard `OTEL_EXPORTER_OTLP_*` variables.
pub fn otlp_provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(format!("herald-{service}"))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Trace context across processes (W3C `traceparent`): routing puts it in
/// the headers of each live publication, edges continue the trace when they
/// deliver, and the server APIs take it from HTTP headers and gRPC
/// metadata — so one publish is one trace from the API call to every edge.
/// Without an OTLP exporter there is no context to carry, and nothing is
/// added to any message.
pub mod propagation {
    use opentelemetry::propagation::{Extractor, Injector};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::bus::Headers;

    /// Writes the current span's context into `carrier`.
    pub fn inject(carrier: &mut dyn Injector) {
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, carrier));
    }

    /// Whether `carrier` carries a trace context (cheap: no span work when
    /// it does not).
    pub fn carries_context(carrier: &dyn Extractor) -> bool {
        carrier.get("traceparent").is_some()
    }

    /// Makes `span` continue the trace `carrier` carries, if any.
    pub fn continue_trace(span: &tracing::Span, carrier: &dyn Extractor) {
        if !carries_context(carrier) {
            return;
        }
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
        let _ = span.set_parent(parent);
    }

    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            self.insert(key, value);
        }
    }

    impl Extractor for Headers {
        fn get(&self, key: &str) -> Option<&str> {
            Headers::get(self, key)
        }

        fn keys(&self) -> Vec<&str> {
            self.iter().map(|(k, _)| k).collect()
        }
    }
}
