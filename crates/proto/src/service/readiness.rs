//! Whether a service should get traffic now. Liveness (`/healthz`) says
//! the process is up; readiness says what it depends on is there: NATS
//! connected, the database answering, presence's view filled, the edge not
//! draining. A check that fails takes the process out of its Service's
//! endpoints (`/readyz` 503) and out of gRPC clients' rotation (health
//! `NOT_SERVING`) until it holds again — without a restart.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use herald_core::bus::Bus;
use herald_core::shutdown::Shutdown;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// How often gRPC health follows the checks.
const EVERY: Duration = Duration::from_millis(500);
/// A check that does not answer within this fails.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The named checks a service must pass to be ready.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    /// No checks: ready.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Adds the check `name`: `Err(why)` while it does not hold.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Readiness
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()) as CheckFuture)));
        self
    }

    /// Adds `nats`: the bus connected.
    pub fn bus(self, bus: Arc<dyn Bus>) -> Readiness {
        self.check("nats", move || {
            let connected = bus.is_connected();
            async move {
                if connected {
                    Ok(())
                } else {
                    Err("disconnected".to_owned())
                }
            }
        })
    }

    /// Every check's answer, in order.
    pub async fn report(&self) -> Vec<(&'static str, Result<(), String>)> {
        let answers = self.checks.iter().map(|(name, check)| async move {
            let answer = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (*name, answer)
        });
        futures::future::join_all(answers).await
    }

    /// Whether every check holds.
    pub async fn ready(&self) -> bool {
        self.report().await.iter().all(|(_, answer)| answer.is_ok())
    }

    /// `GET /readyz`: 200 or 503 with `{"ready": bool, "checks": {name:
    /// "ok" | why}}`.
    pub fn router(self) -> axum::Router {
        axum::Router::new().route(
            "/readyz",
            axum::routing::get(move || {
                let readiness = self.clone();
                async move {
                    let (status, body) = readiness.answer().await;
                    (status, axum::Json(body))
                }
            }),
        )
    }

    /// The status and JSON body `/readyz` answers.
    pub async fn answer(&self) -> (StatusCode, serde_json::Value) {
        let report = self.report().await;
        let ready = report.iter().all(|(_, answer)| answer.is_ok());
        let checks: serde_json::Map<String, serde_json::Value> = report
            .into_iter()
            .map(|(name, answer)| {
                let said = match answer {
                    Ok(()) => "ok".to_owned(),
                    Err(why) => why,
                };
                (name.to_owned(), serde_json::Value::String(said))
            })
            .collect();
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            serde_json::json!({"ready": ready, "checks": checks}),
        )
    }

    /// Keeps the gRPC health of `names` (and of the whole server, `""`)
    /// following the checks until `shutdown`, when it turns `NOT_SERVING`
    /// (the process is leaving).
    pub(crate) fn drive(
        self,
        reporter: HealthReporter,
        names: Vec<String>,
        shutdown: Shutdown,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut serving = None;
            let mut tick = tokio::time::interval(EVERY);
            loop {
                let ready = tokio::select! {
                    _ = shutdown.wait() => false,
                    _ = tick.tick() => self.ready().await,
                };
                if serving != Some(ready) {
                    let status = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    for name in names.iter().map(String::as_str).chain([""]) {
                        reporter.set_service_status(name, status).await;
                    }
                    if serving.is_some() {
                        tracing::warn!(ready, "readiness changed");
                    }
                    serving = Some(ready);
                }
                if shutdown.is_triggered() {
                    break;
                }
            }
        })
    }
}
