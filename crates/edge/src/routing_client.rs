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
    /// Stores a client's publication. A request routing did not answer in
    /// time may still be stored (it may have been on its way, or its
    /// answer lost): that is said as outcome unknown (111) with the
    /// request's key, so a retry with it stores the publication once.
    pub async fn publish(&self, request: &ClientPublish) -> Result<StreamPosition, ErrorBody> {
        match self.ask_bus(&self.subjects.route_publish(), request).await {
            Err(Asked::Bus(BusError::Timeout(_))) => {
                let mut unknown = ErrorBody::new(
                    ErrorCode::OutcomeUnknown,
                    "routing did not answer in time; the publication may be stored: \
                     send it again with this idempotency_key to store it once",
                );
                unknown.idempotency_key = request.idempotency_key.clone();
                Err(unknown)
            }
            other => other.map_err(Asked::into_error),
        }
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
        self.ask_bus(subject, question)
            .await
            .map_err(Asked::into_error)
    }

    async fn ask_bus<Q: Serialize, A: Serialize + DeserializeOwned>(
        &self,
        subject: &str,
        question: &Q,
    ) -> Result<A, Asked> {
        let payload = serde_json::to_vec(question)
            .map_err(|e| Asked::Answered(ErrorBody::new(ErrorCode::Internal, e.to_string())))?;
        let answer = self
            .bus
            .request(subject, Headers::new(), Bytes::from(payload), self.timeout)
            .await
            .map_err(|e| {
                tracing::warn!(subject, error = %e, "routing request failed");
                Asked::Bus(e)
            })?;
        RouteReply::<A>::decode(&answer.payload).map_err(Asked::Answered)
    }
}

/// Why a request to routing failed: the bus, or routing's own answer.
enum Asked {
    Bus(BusError),
    Answered(ErrorBody),
}

impl Asked {
    fn into_error(self) -> ErrorBody {
        match self {
            Asked::Answered(e) => e,
            Asked::Bus(BusError::NoResponders(_)) => {
                ErrorBody::new(ErrorCode::Internal, "no routing service is available")
            }
            Asked::Bus(BusError::Timeout(_)) => {
                ErrorBody::new(ErrorCode::Internal, "routing did not answer in time")
            }
            Asked::Bus(BusError::TooLarge(_)) => {
                ErrorBody::new(ErrorCode::LimitExceeded, "message too large")
            }
            Asked::Bus(_) => ErrorBody::new(ErrorCode::Internal, "temporarily unavailable"),
        }
    }
}
