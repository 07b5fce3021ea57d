//! The presence service as routing and edges see it: a gRPC client behind
//! the `PresenceLookup` seam, with short deadlines.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::channel::Channel;
use herald_core::presence::{PresenceError, PresenceLookup};
use herald_proto::presence::v1 as pb;
use herald_proto::presence::v1::presence_client::PresenceClient as Stub;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel as Transport, Endpoint};

/// Users per `GetOnline` call; more are asked in several calls.
const BATCH: usize = 1000;

#[derive(Clone)]
pub struct PresenceClient {
    stub: Stub<Transport>,
    key: Option<MetadataValue<tonic::metadata::Ascii>>,
    deadline: Duration,
}

impl PresenceClient {
    /// Connects lazily to `url` (`http://presence:50052`); each call gives
    /// up after `deadline`.
    pub fn new(
        url: &str,
        api_key: Option<&str>,
        deadline: Duration,
    ) -> Result<Self, PresenceError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| PresenceError(format!("bad presence URL {url}: {e}")))?
            .connect_timeout(deadline)
            .timeout(deadline);
        let key = api_key
            .map(|k| format!("Bearer {k}").parse())
            .transpose()
            .map_err(|_| PresenceError("API key is not valid metadata".into()))?;
        Ok(PresenceClient {
            stub: Stub::new(endpoint.connect_lazy()),
            key,
            deadline,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(key) = &self.key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        request
    }
}

#[async_trait]
impl PresenceLookup for PresenceClient {
    async fn online(&self, users: &[String]) -> Result<HashSet<String>, PresenceError> {
        let mut online = HashSet::new();
        for batch in users.chunks(BATCH) {
            let answer = self
                .stub
                .clone()
                .get_online(self.request(pb::GetOnlineRequest {
                    users: batch.to_vec(),
                }))
                .await
                .map_err(|s| PresenceError(format!("{}: {}", s.code(), s.message())))?;
            online.extend(answer.into_inner().online);
        }
        Ok(online)
    }

    async fn channel_users(&self, channel: &Channel) -> Result<Vec<String>, PresenceError> {
        let answer = self
            .stub
            .clone()
            .channel_presence(self.request(pb::ChannelPresenceRequest {
                channel: channel.to_string(),
            }))
            .await
            .map_err(|s| PresenceError(format!("{}: {}", s.code(), s.message())))?;
        Ok(answer
            .into_inner()
            .members
            .into_iter()
            .map(|m| m.user)
            .collect())
    }
}
