//! Notify as routing sees it: a gRPC client behind the `DeviceLookup` seam,
//! with short deadlines.

use std::collections::HashSet;
use std::time::Duration;

use super::{Upstream, describe};
use crate::notify::v1 as pb;
use crate::notify::v1::notify_client::NotifyClient as Stub;
use async_trait::async_trait;
use herald_core::devices::{DeviceLookup, DeviceLookupError};

/// Users per `UsersWithDevices` call; more are asked in several calls.
const BATCH: usize = 1000;

/// Notify's gRPC client: the distributed [`DeviceLookup`].
#[derive(Clone)]
pub struct NotifyClient {
    upstream: Upstream,
}

impl NotifyClient {
    /// Connects lazily to `url` (`http://notify:50053`); each call gives up
    /// after `deadline`.
    pub fn new(url: &str, api_key: Option<&str>, deadline: Duration) -> Result<Self, String> {
        Ok(NotifyClient {
            upstream: Upstream::new(url, api_key, deadline).map_err(|e| format!("notify: {e}"))?,
        })
    }
}

#[async_trait]
impl DeviceLookup for NotifyClient {
    async fn with_devices(&self, users: &[String]) -> Result<HashSet<String>, DeviceLookupError> {
        let mut found = HashSet::new();
        for batch in users.chunks(BATCH) {
            let answer = self
                .upstream
                .call(|channel| {
                    let request = self.upstream.request(pb::UsersWithDevicesRequest {
                        users: batch.to_vec(),
                    });
                    async move { Stub::new(channel).users_with_devices(request).await }
                })
                .await
                .map_err(|s| DeviceLookupError(describe(&s)))?;
            found.extend(answer.into_inner().users);
        }
        Ok(found)
    }
}
