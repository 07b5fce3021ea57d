//! The edge's requests to routing over the bus.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError, Headers};
use herald_core::history::Recovery;
use herald_core::subjects::Subjects;
use herald_protocol::route::{ClientPublish, HistoryQuery, RouteReply};
use herald_protocol::{ErrorBody, ErrorCode, StreamPosition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Routing as the edge asks it: requests over the bus, each bounded by a
/// timeout.
#[derive(Clone)]
pub struct RoutingClient {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    timeout: Duration,
}

impl RoutingClient {
    /// Asks routing over `bus`, waiting at most `timeout` for each answer.
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, timeout: Duration) -> Self {
        RoutingClient {
            bus,
            subjects,
            timeout,
        }
    }

    /// Forwards a client publish; routing answers with its position.
    pub async fn publish(&self, request: &ClientPublish) -> Result<StreamPosition, ErrorBody> {
        self.ask(&self.subjects.route_publish(), request).await
    }

    /// Reads a channel's history (or only its position, with limit 0).
    pub async fn history(&self, query: &HistoryQuery) -> Result<Recovery, ErrorBody> {
        self.ask(&self.subjects.route_history(), query).await
    }

    async fn ask<Q: Serialize, A: Serialize + DeserializeOwned>(
        &self,
        subject: &str,
        question: &Q,
    ) -> Result<A, ErrorBody> {
        let payload = serde_json::to_vec(question)
            .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
        let answer = self
            .bus
            .request(subject, Headers::new(), Bytes::from(payload), self.timeout)
            .await
            .map_err(|e| {
                tracing::warn!(subject, error = %e, "routing request failed");
                match e {
                    BusError::NoResponders(_) => {
                        ErrorBody::new(ErrorCode::Internal, "no routing service is available")
                    }
                    BusError::Timeout(_) => {
                        ErrorBody::new(ErrorCode::Internal, "routing did not answer in time")
                    }
                    BusError::TooLarge(_) => {
                        ErrorBody::new(ErrorCode::LimitExceeded, "message too large")
                    }
                    _ => ErrorBody::new(ErrorCode::Internal, "temporarily unavailable"),
                }
            })?;
        RouteReply::<A>::decode(&answer.payload)
    }
}
