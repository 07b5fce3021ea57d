//! The operations of the server API — publish, broadcast, send to a user,
//! history, disconnect — shared by HTTP, gRPC and client publishes from
//! edges. Every request is checked completely before anything is stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, Headers};
use herald_core::config::Config;
use herald_core::devices::{DeviceLookup, NoDeviceLookup};
use herald_core::history::{Appended, History, HistoryError, NewPublication, Recovery, Retention};
use herald_core::presence::PresenceLookup;
use herald_core::route::live_message;
use herald_core::subjects::Subjects;
use herald_core::time::unix_millis;
use herald_core::work_queue::{Notification, PushJob, WorkQueue};
use herald_proto::Refusal;
use herald_protocol::channel::Channel;
use herald_protocol::{StreamPosition, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::idempotency::IdempotencyCache;

/// Upper bound of one history read.
pub(crate) const MAX_HISTORY_LIMIT: usize = 1000;
/// Users one publish may name in `notify_offline`.
pub(crate) const MAX_NOTIFY_USERS: usize = 1000;
/// Longest idempotency key, bytes.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest notification title or body, bytes (APNs allows 4 KB in all).
pub(crate) const MAX_NOTIFICATION_TEXT: usize = 1024;

/// `POST /api/publish`, `Publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The channel to publish to.
    pub channel: Channel,
    /// The publication: one JSON document.
    pub data: Box<RawValue>,
    /// Within the idempotency window, a request with the same key gets the
    /// first one's answer and stores nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Users to reach by push notification if they are offline.
    #[serde(default)]
    pub notify_offline: Vec<String>,
    /// What the offline users' devices show; `None` sends a silent push.
    #[serde(default)]
    pub notification: Option<Notification>,
}

/// `POST /api/broadcast`, `Broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// The channels to publish to, each getting its own offset.
    pub channels: Vec<Channel>,
    /// The publication: one JSON document.
    pub data: Box<RawValue>,
    /// Within the idempotency window, a request with the same key gets the
    /// first one's answer and stores nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `POST /api/send`, `SendToUser`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The user, whose personal channel (`#user`) is published to.
    pub user: String,
    /// The publication: one JSON document.
    pub data: Box<RawValue>,
    /// What the user's devices show if they are offline; `None` sends a silent
    /// push.
    #[serde(default)]
    pub notification: Option<Notification>,
    /// Within the idempotency window, a request with the same key gets the
    /// first one's answer and stores nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Who of `notify_offline` got what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyOutcome {
    /// Connected: they got the live publication.
    pub online: Vec<String>,
    /// Not connected: a push job was queued for each.
    pub pushed: Vec<String>,
    /// Presence could not be asked in time: no push was sent (better a
    /// missed alert than a spurious one), the live publication was.
    pub unknown: Vec<String>,
    /// Not connected, and no device registered: nothing to push to.
    #[serde(default)]
    pub no_devices: Vec<String>,
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAnswer {
    /// The offset the publication was stored at.
    pub offset: u64,
    /// The epoch of that offset.
    pub epoch: herald_protocol::Epoch,
    /// Who of `notify_offline` got what; only when the request named any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyOutcome>,
}

/// Where a broadcast's publication went in one of its channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastResult {
    /// The channel.
    pub channel: Channel,
    /// The offset it was stored at.
    pub offset: u64,
    /// The epoch of that offset.
    pub epoch: herald_protocol::Epoch,
}

/// The answer to a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastAnswer {
    /// One result per channel, in the request's order.
    pub results: Vec<BroadcastResult>,
}

/// What `SendToUser` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendResult {
    /// Connected: delivered live.
    Online,
    /// Not connected: a push job was queued.
    Pushed,
    /// Not connected and no device to push to: nothing was queued.
    NoDevices,
    /// Presence did not answer in time: delivered live to any connection,
    /// no push sent.
    Unknown,
}

/// The answer to `SendToUser`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAnswer {
    /// How the user was reached.
    pub result: SendResult,
}

/// Answers remembered for idempotency keys.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Publish(PublishAnswer),
    Broadcast(BroadcastAnswer),
    Send(SendAnswer),
}

/// What routing needs from the rest of the system.
pub struct Deps {
    /// Where live publications go and edges' requests come from.
    pub bus: Arc<dyn Bus>,
    /// Where publications are stored.
    pub history: Arc<dyn History>,
    /// Where push jobs for notify go.
    pub queue: Arc<dyn WorkQueue>,
    /// Who is connected, asked before pushing.
    pub presence: Arc<dyn PresenceLookup>,
}

/// The write path: every server-API operation and every client publish,
/// checked, stored, delivered live and handed off to notify.
pub struct Routing {
    pub(crate) config: Arc<Config>,
    pub(crate) bus: Arc<dyn Bus>,
    history: Arc<dyn History>,
    queue: Arc<dyn WorkQueue>,
    presence: Arc<dyn PresenceLookup>,
    /// Who has devices (notify's registry); unknown without one.
    devices: Arc<dyn DeviceLookup>,
    pub(crate) subjects: Subjects,
    idempotency: IdempotencyCache<Answer>,
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::invalid(message)
}

fn too_large(message: impl Into<String>) -> Refusal {
    Refusal::too_large(message)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "{what} failed");
    Refusal::unavailable(format!("{what} unavailable; try again"))
}

impl Routing {
    /// Routing over `deps`, with no device registry to ask.
    pub fn new(config: Arc<Config>, deps: Deps) -> Self {
        let subjects = Subjects::new(&config.subject_prefix);
        Routing {
            idempotency: IdempotencyCache::new(config.idempotency_window()),
            config,
            bus: deps.bus,
            history: deps.history,
            queue: deps.queue,
            presence: deps.presence,
            devices: Arc::new(NoDeviceLookup),
            subjects,
        }
    }

    /// Where routing asks whether offline users have devices, so it can
    /// answer `no_devices` rather than queue pushes that cannot go out.
    /// Without one, offline users are `pushed` (the worker drops a job of a
    /// user without devices).
    pub fn with_device_lookup(mut self, devices: Arc<dyn DeviceLookup>) -> Self {
        self.devices = devices;
        self
    }

    // ------------------------------------------------------------ checks

    fn check_data(&self, data: &RawValue) -> Result<(), Refusal> {
        let size = data.get().len();
        if size > self.config.max_message_bytes {
            return Err(too_large(format!(
                "data is {size} bytes; the limit is {}",
                self.config.max_message_bytes
            )));
        }
        herald_protocol::check_data(data.get(), self.config.max_json_depth)
            .map_err(|e| bad_request(e.to_string()))
    }

    pub(crate) fn check_key(key: &Option<String>) -> Result<(), Refusal> {
        match key {
            Some(k) if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY => Err(bad_request(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
            ))),
            _ => Ok(()),
        }
    }

    fn check_notification(notification: &Option<Notification>) -> Result<(), Refusal> {
        if let Some(n) = notification {
            for (field, text) in [("title", &n.title), ("body", &n.body)] {
                if text.len() > MAX_NOTIFICATION_TEXT {
                    return Err(too_large(format!(
                        "notification {field} is over {MAX_NOTIFICATION_TEXT} bytes"
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_user(user: &str) -> Result<(UserId, Channel), Refusal> {
        let invalid = |e: &dyn std::fmt::Display| bad_request(format!("invalid user: {e}"));
        let user = UserId::parse(user).map_err(|e| invalid(&e))?;
        let personal = Channel::personal(&user).map_err(|e| invalid(&e))?;
        Ok((user, personal))
    }

    fn retention(&self, channel: &Channel) -> Result<Retention, Refusal> {
        let namespace = self.config.namespace(channel)?;
        Ok(Retention {
            size: namespace.history_size,
            ttl: Duration::from_secs(namespace.history_ttl_secs),
        })
    }

    // ------------------------------------------------------------ operations

    /// Stores one publication and delivers it live (once: a duplicate is
    /// neither stored nor delivered again).
    #[tracing::instrument(name = "publish", skip_all, fields(channel = %channel))]
    pub(crate) async fn store_and_deliver(
        &self,
        channel: &Channel,
        data: Box<RawValue>,
        from: Option<String>,
        idempotency_key: Option<&str>,
    ) -> Result<StreamPosition, Refusal> {
        let retention = self.retention(channel)?;
        self.check_data(&data)?;
        let started = std::time::Instant::now();
        let new = NewPublication {
            data,
            from,
            ts: unix_millis(),
        };
        let appended = self
            .history
            .append(channel, new, retention, idempotency_key)
            .await
            .map_err(|e| match e {
                HistoryError::OutcomeUnknown { key, why } => {
                    tracing::warn!(channel = %channel, error = %why, "publication perhaps stored");
                    Refusal::outcome_unknown(
                        "history did not confirm in time: the publication may be stored; \
                         send it again with this idempotency_key to store it once",
                        key,
                    )
                }
                e => unavailable("history", e),
            })?;
        if let Appended::New(publication) = &appended {
            let (mut headers, payload) = live_message(publication);
            // edges continue this trace when they deliver
            herald_core::telemetry::propagation::inject(&mut headers);
            // The publication is stored: if live delivery fails, subscribers
            // still get it when they fill the gap from history.
            if let Err(e) = self
                .bus
                .publish(&self.subjects.live(channel), headers, payload)
                .await
            {
                tracing::warn!(channel = %channel, error = %e, "live delivery failed");
            }
            crate::stats::published(channel, started.elapsed());
        }
        Ok(appended.position())
    }

    /// Stores and delivers one publication, then queues pushes for the
    /// `notify_offline` users who are not connected.
    pub async fn publish(&self, request: PublishRequest) -> Result<PublishAnswer, Refusal> {
        self.config.namespace(&request.channel)?;
        self.check_data(&request.data)?;
        Self::check_key(&request.idempotency_key)?;
        Self::check_notification(&request.notification)?;
        if request.notify_offline.len() > MAX_NOTIFY_USERS {
            return Err(too_large(format!(
                "notify_offline names more than {MAX_NOTIFY_USERS} users"
            )));
        }
        for user in &request.notify_offline {
            Self::check_user(user)?;
        }
        let key = request.idempotency_key.clone();
        let answer = self
            .idempotency
            .run(
                key.as_ref()
                    .map(|k| format!("publish|{}|{k}", request.channel)),
                || async {
                    let position = self
                        .store_and_deliver(
                            &request.channel,
                            request.data.clone(),
                            None,
                            key.as_deref(),
                        )
                        .await?;
                    let notify = if request.notify_offline.is_empty() {
                        None
                    } else {
                        Some(
                            self.hand_off(
                                &request.notify_offline,
                                &request.data,
                                request.notification.as_ref(),
                                Some(&request.channel),
                                key.as_deref(),
                            )
                            .await?,
                        )
                    };
                    Ok(Answer::Publish(PublishAnswer {
                        offset: position.offset,
                        epoch: position.epoch,
                        notify,
                    }))
                },
            )
            .await?;
        match answer {
            Answer::Publish(a) => Ok(a),
            _ => Err(Refusal::invalid(
                "idempotency_key was used for another kind of request",
            )),
        }
    }

    /// Publishes the same data to every channel named, after checking them
    /// all.
    pub async fn broadcast(&self, request: BroadcastRequest) -> Result<BroadcastAnswer, Refusal> {
        if request.channels.is_empty() {
            return Err(bad_request("channels is empty"));
        }
        if request.channels.len() > self.config.routing.max_broadcast_channels {
            return Err(too_large(format!(
                "broadcast to {} channels; the limit is {}",
                request.channels.len(),
                self.config.routing.max_broadcast_channels
            )));
        }
        for channel in &request.channels {
            self.config.namespace(channel)?;
        }
        self.check_data(&request.data)?;
        Self::check_key(&request.idempotency_key)?;
        let key = request.idempotency_key.clone();
        let answer = self
            .idempotency
            .run(key.as_ref().map(|k| format!("broadcast|{k}")), || async {
                let mut results = Vec::with_capacity(request.channels.len());
                for channel in &request.channels {
                    let position = self
                        .store_and_deliver(channel, request.data.clone(), None, key.as_deref())
                        .await?;
                    results.push(BroadcastResult {
                        channel: channel.clone(),
                        offset: position.offset,
                        epoch: position.epoch,
                    });
                }
                Ok(Answer::Broadcast(BroadcastAnswer { results }))
            })
            .await?;
        match answer {
            Answer::Broadcast(a) => Ok(a),
            _ => Err(bad_request(
                "idempotency_key was used for another kind of request",
            )),
        }
    }

    /// Publishes to the user's personal channel and, if they are not
    /// connected, queues a push.
    pub async fn send_to_user(&self, request: SendRequest) -> Result<SendAnswer, Refusal> {
        let (_, personal) = Self::check_user(&request.user)?;
        self.check_data(&request.data)?;
        Self::check_key(&request.idempotency_key)?;
        Self::check_notification(&request.notification)?;
        let key = request.idempotency_key.clone();
        let answer = self
            .idempotency
            .run(
                key.as_ref().map(|k| format!("send|{}|{k}", request.user)),
                || async {
                    // Every connection of the user is subscribed to `#user`.
                    self.store_and_deliver(&personal, request.data.clone(), None, key.as_deref())
                        .await?;
                    let outcome = self
                        .hand_off(
                            std::slice::from_ref(&request.user),
                            &request.data,
                            request.notification.as_ref(),
                            None,
                            key.as_deref(),
                        )
                        .await?;
                    let result = if !outcome.online.is_empty() {
                        SendResult::Online
                    } else if !outcome.pushed.is_empty() {
                        SendResult::Pushed
                    } else if !outcome.no_devices.is_empty() {
                        SendResult::NoDevices
                    } else {
                        SendResult::Unknown
                    };
                    Ok(Answer::Send(SendAnswer { result }))
                },
            )
            .await?;
        match answer {
            Answer::Send(a) => Ok(a),
            _ => Err(bad_request(
                "idempotency_key was used for another kind of request",
            )),
        }
    }

    /// Asks presence who of `users` is connected and queues a push job for
    /// each of the others.
    async fn hand_off(
        &self,
        users: &[String],
        data: &RawValue,
        notification: Option<&Notification>,
        channel: Option<&Channel>,
        idempotency_key: Option<&str>,
    ) -> Result<NotifyOutcome, Refusal> {
        let online =
            match tokio::time::timeout(self.config.presence_timeout(), self.presence.online(users))
                .await
            {
                Ok(Ok(online)) => online,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "presence lookup failed; no pushes sent");
                    return Ok(NotifyOutcome {
                        unknown: users.to_vec(),
                        ..NotifyOutcome::default()
                    });
                }
                Err(_) => {
                    tracing::warn!("presence lookup timed out; no pushes sent");
                    return Ok(NotifyOutcome {
                        unknown: users.to_vec(),
                        ..NotifyOutcome::default()
                    });
                }
            };
        let mut outcome = NotifyOutcome::default();
        let offline: Vec<String> = users
            .iter()
            .filter(|u| !online.contains(*u))
            .cloned()
            .collect();
        let with_devices = self.with_devices(&offline).await;
        let scope = channel.map_or("send", |c| c.as_str());
        for user in users {
            if online.contains(user) {
                outcome.online.push(user.clone());
                continue;
            }
            if with_devices.as_ref().is_some_and(|d| !d.contains(user)) {
                outcome.no_devices.push(user.clone());
                continue;
            }
            let job = PushJob {
                id: match idempotency_key {
                    Some(key) => PushJob::id_for_key(scope, key, user),
                    None => PushJob::new_id(),
                },
                user: user.clone(),
                notification: notification.cloned(),
                data: data.to_owned(),
                channel: channel.cloned(),
                created_ms: unix_millis(),
                device_id: None,
                summary: false,
                summarizes: Vec::new(),
            };
            self.queue
                .push(&job)
                .await
                .map_err(|e| unavailable("push queue", e))?;
            outcome.pushed.push(user.clone());
            crate::stats::push_jobs(1);
        }
        Ok(outcome)
    }

    /// Who is subscribed to `channel` now, cluster-wide (the server API's
    /// presence query).
    pub async fn channel_users(&self, channel: &Channel) -> Result<Vec<String>, Refusal> {
        self.config.namespace(channel)?;
        match tokio::time::timeout(
            self.config.presence_timeout(),
            self.presence.channel_users(channel),
        )
        .await
        {
            Ok(Ok(users)) => Ok(users),
            Ok(Err(e)) => Err(Refusal::unavailable(format!(
                "presence is not available: {}",
                e.0
            ))),
            Err(_) => Err(Refusal::unavailable("presence did not answer in time")),
        }
    }

    /// Which of `users` have devices; `None` when the registry does not
    /// answer in time (then every offline user gets a push job, as without
    /// a registry: a job too many is dropped by the worker, an alert too
    /// few is lost).
    async fn with_devices(&self, users: &[String]) -> Option<HashSet<String>> {
        if users.is_empty() {
            return Some(HashSet::new());
        }
        match tokio::time::timeout(
            self.config.presence_timeout(),
            self.devices.with_devices(users),
        )
        .await
        {
            Ok(Ok(found)) => Some(found),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "device lookup failed; pushing to every offline user");
                None
            }
            Err(_) => {
                tracing::warn!("device lookup timed out; pushing to every offline user");
                None
            }
        }
    }

    /// Publications of `channel` after `since`, at most `limit` (capped).
    pub async fn history(
        &self,
        channel: &Channel,
        since: Option<&StreamPosition>,
        limit: usize,
    ) -> Result<Recovery, Refusal> {
        self.config.namespace(channel)?;
        self.history
            .read(channel, since, limit.min(MAX_HISTORY_LIMIT))
            .await
            .map_err(|e| unavailable("history", e))
    }

    /// Closes every connection of `user` on every edge.
    pub async fn disconnect(&self, user: &str) -> Result<(), Refusal> {
        let (user, _) = Self::check_user(user)?;
        let payload = serde_json::to_vec(&herald_protocol::route::DisconnectUser { user })
            .map_err(|e| unavailable("bus", e))?;
        self.bus
            .publish(
                &self.subjects.ctl_disconnect(),
                Headers::new(),
                Bytes::from(payload),
            )
            .await
            .map_err(|e| unavailable("bus", e))
    }
}
