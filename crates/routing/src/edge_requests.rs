//! Requests from edges over the bus: client publishes and history reads,
//! each on its subject in the `routing` queue group so any number of
//! routing replicas share the load.

use std::sync::Arc;

use bytes::Bytes;
use herald_core::auth;
use herald_core::bus::{BusError, Message, respond};
use herald_core::history::Recovery;
use herald_core::shutdown::Shutdown;
use herald_core::subjects::ROUTING_QUEUE_GROUP;
use herald_proto::Refusal;
use herald_protocol::route::{ClientPublish, HistoryQuery, RouteReply};
use herald_protocol::{ErrorBody, StreamPosition};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::routing::Routing;

/// Requests handled at once by one routing process; more wait their turn
/// (the bus buffers them, bounded).
const MAX_IN_FLIGHT: usize = 1024;

impl Routing {
    /// Publishes this instance's numbers on `herald.stats.<node>` once a
    /// second until `shutdown`.
    pub fn publish_stats(&self, node: &str, shutdown: Shutdown) -> JoinHandle<()> {
        herald_core::metrics::install();
        crate::stats::register();
        herald_core::metrics::publish_stats(
            self.bus.clone(),
            &self.subjects,
            node,
            "routing",
            crate::stats::export,
            shutdown,
        )
    }

    /// Subscribes to the edge subjects and answers until `shutdown`. The
    /// subscriptions are in place when this returns.
    pub async fn listen_to_edges(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Result<JoinHandle<()>, BusError> {
        let mut publishes = self
            .bus
            .queue_subscribe(&self.subjects.route_publish(), ROUTING_QUEUE_GROUP)
            .await?;
        let mut reads = self
            .bus
            .queue_subscribe(&self.subjects.route_history(), ROUTING_QUEUE_GROUP)
            .await?;
        self.bus.flush().await?;
        let routing = self.clone();
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        Ok(tokio::spawn(async move {
            loop {
                let (message, kind) = tokio::select! {
                    _ = shutdown.wait() => break,
                    m = publishes.next() => (m, Kind::Publish),
                    m = reads.next() => (m, Kind::History),
                };
                let Some(message) = message else { break };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let routing = routing.clone();
                tokio::spawn(async move {
                    let answer = match kind {
                        Kind::Publish => routing.answer_publish(&message).await,
                        Kind::History => routing.answer_history(&message).await,
                    };
                    if let Err(e) = respond(&*routing.bus, &message, answer).await {
                        tracing::warn!(error = %e, "could not answer an edge");
                    }
                    drop(permit);
                });
            }
        }))
    }

    async fn answer_publish(&self, message: &Message) -> Bytes {
        let result = async {
            let request: ClientPublish = serde_json::from_slice(&message.payload)
                .map_err(|e| Refusal::invalid(format!("bad publish: {e}")))?;
            self.check_client_publish(&request)?;
            Self::check_key(&request.idempotency_key)?;
            // A client's key names its own publications only; one is made
            // when it gave none, so an outcome unknown can name a key to
            // retry with.
            let key = request
                .idempotency_key
                .unwrap_or_else(|| format!("~{:032x}", rand::random::<u128>()));
            let scoped = format!("c:{}:{key}", request.user);
            self.store_and_deliver(
                &request.channel,
                request.data,
                Some(request.user.into()),
                Some(&scoped),
            )
            .await
            .map_err(|e| match e {
                Refusal::OutcomeUnknown { message, .. } => Refusal::outcome_unknown(message, key),
                other => other,
            })
        }
        .await;
        if let Err(e) = &result {
            crate::stats::error("edge", crate::stats::side_of(e.code()));
        }
        RouteReply::<StreamPosition>::from_result(result.map_err(ErrorBody::from)).encode()
    }

    fn check_client_publish(&self, request: &ClientPublish) -> Result<(), Refusal> {
        if !auth::allowed(&request.user, &request.publish, &request.channel) {
            return Err(Refusal::forbidden(format!(
                "not allowed to publish to `{}`",
                request.channel
            )));
        }
        let namespace = self.config.namespace(&request.channel)?;
        if !namespace.allow_publish {
            return Err(Refusal::forbidden(format!(
                "clients may not publish in the namespace of `{}`",
                request.channel
            )));
        }
        Ok(())
    }

    async fn answer_history(&self, message: &Message) -> Bytes {
        let result = async {
            let query: HistoryQuery = serde_json::from_slice(&message.payload)
                .map_err(|e| Refusal::invalid(format!("bad history query: {e}")))?;
            self.history(&query.channel, query.since.as_ref(), query.limit)
                .await
        }
        .await;
        RouteReply::<Recovery>::from_result(result.map_err(ErrorBody::from)).encode()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Publish,
    History,
}
