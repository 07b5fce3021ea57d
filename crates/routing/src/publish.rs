//! The publish path, shared by the server API and client publishes.

use std::sync::Arc;
use std::time::Duration;

use herald_core::bus::Bus;
use herald_core::channel::Channel;
use herald_core::config::Config;
use herald_core::history::{History, NewPublication, Recovery, Retention};
use herald_core::protocol::{ErrorBody, ErrorCode, StreamPosition};
use herald_core::route::live_message;
use herald_core::subjects::Subjects;
use herald_core::time::unix_millis;
use serde_json::value::RawValue;

/// One publication to store and deliver.
#[derive(Debug)]
pub struct PublishInput {
    pub channel: Channel,
    pub data: Box<RawValue>,
    /// The publishing user; `None` for the server API.
    pub from: Option<String>,
}

pub struct Routing {
    pub(crate) config: Arc<Config>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) history: Arc<dyn History>,
    pub(crate) subjects: Subjects,
}

/// Upper bound of one history read.
pub const MAX_HISTORY_LIMIT: usize = 1000;

impl Routing {
    pub fn new(config: Arc<Config>, bus: Arc<dyn Bus>, history: Arc<dyn History>) -> Self {
        let subjects = Subjects::new(&config.subject_prefix);
        Routing {
            config,
            bus,
            history,
            subjects,
        }
    }

    /// Validates, stores and delivers a publication; answers its position.
    #[tracing::instrument(name = "publish", skip_all, fields(channel = %input.channel))]
    pub async fn publish(&self, input: PublishInput) -> Result<StreamPosition, ErrorBody> {
        let namespace = self.config.namespace(&input.channel)?;
        let size = input.data.get().len();
        if size > self.config.max_message_bytes {
            return Err(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!(
                    "publication data is {size} bytes; the limit is {}",
                    self.config.max_message_bytes
                ),
            ));
        }
        let retention = Retention {
            size: namespace.history_size,
            ttl: Duration::from_secs(namespace.history_ttl_secs),
        };
        let new = NewPublication {
            data: input.data,
            from: input.from,
            ts: unix_millis(),
        };
        let publication = self
            .history
            .append(&input.channel, new, retention)
            .await
            .map_err(|e| {
                tracing::error!(channel = %input.channel, error = %e, "history append failed");
                ErrorBody::new(
                    ErrorCode::Internal,
                    "history unavailable; nothing was stored",
                )
            })?;
        let (headers, payload) = live_message(&publication);
        // The publication is stored: if live delivery fails, subscribers
        // still get it when they fill the gap from history.
        if let Err(e) = self
            .bus
            .publish(&self.subjects.live(&input.channel), headers, payload)
            .await
        {
            tracing::warn!(channel = %input.channel, error = %e, "live delivery failed");
        }
        Ok(StreamPosition {
            offset: publication.offset,
            epoch: publication.epoch,
        })
    }

    /// Publications of `channel` after `since`, at most `limit` (capped).
    pub async fn history(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, ErrorBody> {
        self.config.namespace(channel)?;
        self.history
            .read(channel, since, limit.min(MAX_HISTORY_LIMIT))
            .await
            .map_err(|e| {
                tracing::error!(channel = %channel, error = %e, "history read failed");
                ErrorBody::new(ErrorCode::Internal, "history unavailable")
            })
    }
}
