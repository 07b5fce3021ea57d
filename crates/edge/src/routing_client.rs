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
use tokio::time::Instant;

/// The pause before a history read is asked again.
const HISTORY_RETRY_PAUSE: Duration = Duration::from_millis(100);

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
        match self
            .ask_bus(&self.subjects.route_publish(), request, self.timeout)
            .await
        {
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
    ///
    /// A read is safe to ask twice, so one that goes unanswered is asked
    /// again within the timeout: a request handed to a routing replica
    /// that dies with it is never answered, and a resuming client would
    /// otherwise wait the whole timeout — long enough, on a busy channel,
    /// to fall out of the history it came to read.
    pub async fn history(&self, query: &HistoryQuery) -> Result<Recovery, ErrorBody> {
        let deadline = Instant::now() + self.timeout;
        // Half the timeout is more than routing's own deadline on a read.
        let mut wait = self.timeout / 2;
        loop {
            match self
                .ask_bus(&self.subjects.route_history(), query, wait)
                .await
            {
                Err(Asked::Bus(BusError::Timeout(_) | BusError::NoResponders(_)))
                    if deadline.saturating_duration_since(Instant::now()) > HISTORY_RETRY_PAUSE =>
                {
                    // No responders: a replica restarting, or between two.
                    tokio::time::sleep(HISTORY_RETRY_PAUSE).await;
                    wait = deadline.saturating_duration_since(Instant::now());
                }
                other => return other.map_err(Asked::into_error),
            }
        }
    }

    async fn ask_bus<Q: Serialize, A: Serialize + DeserializeOwned>(
        &self,
        subject: &str,
        question: &Q,
        timeout: Duration,
    ) -> Result<A, Asked> {
        let payload = serde_json::to_vec(question)
            .map_err(|e| Asked::Answered(ErrorBody::new(ErrorCode::Internal, e.to_string())))?;
        let answer = self
            .bus
            .request(subject, Headers::new(), Bytes::from(payload), timeout)
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

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::bus::{MemoryBus, respond};
    use herald_protocol::channel::Channel;

    /// A routing replica that takes the first `lost` history requests and
    /// dies with them (never answers), then answers the rest.
    async fn replica_losing(bus: Arc<MemoryBus>, subjects: &Subjects, lost: usize) {
        let mut requests = bus
            .queue_subscribe(&subjects.route_history(), "routing")
            .await
            .expect("subscribe");
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(request) = requests.next().await {
                seen += 1;
                if seen <= lost {
                    continue;
                }
                let answer = RouteReply::from_result(Ok::<_, ErrorBody>(Recovery::Recovered {
                    publications: Vec::new(),
                    latest: StreamPosition::new(7, "e"),
                }));
                respond(bus.as_ref(), &request, answer.encode())
                    .await
                    .expect("respond");
            }
        });
    }

    #[tokio::test]
    async fn a_history_read_lost_with_a_replica_is_asked_again_within_the_timeout() {
        let bus = Arc::new(MemoryBus::new());
        let subjects = Subjects::new("t");
        replica_losing(bus.clone(), &subjects, 1).await;
        let client = RoutingClient::new(bus.clone(), subjects.clone(), Duration::from_secs(2));
        let query = HistoryQuery::position_of(&Channel::new("chat:1").expect("channel"));
        let answer = client
            .history(&query)
            .await
            .expect("answered on the second try");
        assert_eq!(answer.latest(), &StreamPosition::new(7, "e"));
    }

    #[tokio::test]
    async fn a_read_nobody_answers_fails_after_its_retries() {
        let bus = Arc::new(MemoryBus::new());
        let subjects = Subjects::new("t");
        replica_losing(bus.clone(), &subjects, usize::MAX).await;
        let client = RoutingClient::new(bus.clone(), subjects.clone(), Duration::from_secs(1));
        let query = HistoryQuery::position_of(&Channel::new("chat:1").expect("channel"));
        let refused = client.history(&query).await.expect_err("nobody answers");
        assert_eq!(refused.message, "routing did not answer in time");
    }
}
