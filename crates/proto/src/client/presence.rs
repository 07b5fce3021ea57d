//! The presence service as routing and edges see it: a gRPC client behind
//! the `PresenceLookup` seam, with short deadlines.

use std::collections::HashSet;
use std::time::Duration;

use super::{Upstream, describe};
use crate::presence::v1 as pb;
use crate::presence::v1::presence_client::PresenceClient as Stub;
use async_trait::async_trait;
use herald_core::presence::{PresenceError, PresenceLookup};
use herald_protocol::channel::Channel;

/// Users per `GetOnline` call; more are asked in several calls.
const BATCH: usize = 1000;

/// The presence service's gRPC client: the distributed [`PresenceLookup`].
#[derive(Clone)]
pub struct PresenceClient {
    upstream: Upstream,
}

impl PresenceClient {
    /// Connects lazily to `url` (`http://presence:50052`); each call gives
    /// up after `deadline`.
    pub fn new(
        url: &str,
        api_key: Option<&str>,
        deadline: Duration,
    ) -> Result<Self, PresenceError> {
        let upstream = Upstream::new(url, api_key, deadline)
            .map_err(|e| PresenceError(format!("presence: {e}")))?;
        Ok(PresenceClient { upstream })
    }
}

#[async_trait]
impl PresenceLookup for PresenceClient {
    async fn online(&self, users: &[String]) -> Result<HashSet<String>, PresenceError> {
        let mut online = HashSet::new();
        for batch in users.chunks(BATCH) {
            let answer = self
                .upstream
                .call(|channel| {
                    let request = self.upstream.request(pb::GetOnlineRequest {
                        users: batch.to_vec(),
                    });
                    async move { Stub::new(channel).get_online(request).await }
                })
                .await
                .map_err(|s| PresenceError(describe(&s)))?;
            online.extend(answer.into_inner().online);
        }
        Ok(online)
    }

    async fn channel_users(&self, channel: &Channel) -> Result<Vec<String>, PresenceError> {
        let answer = self
            .upstream
            .call(|to| {
                let request = self.upstream.request(pb::ChannelPresenceRequest {
                    channel: channel.to_string(),
                });
                async move { Stub::new(to).channel_presence(request).await }
            })
            .await
            .map_err(|s| PresenceError(describe(&s)))?;
        Ok(answer
            .into_inner()
            .members
            .into_iter()
            .map(|m| m.user)
            .collect())
    }
}
