//! The bus over core NATS (async-nats).

use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    Bus, BusError, DEFAULT_SUBSCRIPTION_CAPACITY, Headers, Message, Subscription, subject,
};

/// The [`Bus`] over a NATS connection; clones share the connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

impl NatsBus {
    /// Connects to one of `urls` — a comma-separated seed list, as every
    /// NATS client takes (`nats://a:4222,nats://b:4222`) — naming the
    /// connection `name` (visible in the server's `/connz`). Seeds that are
    /// down are skipped; fails if none answers within `timeout`. After
    /// that the client reconnects on its own, to any server of the cluster.
    pub async fn connect(urls: &str, name: &str, timeout: Duration) -> Result<Self, BusError> {
        let seeds = seed_list(urls)?;
        let url = urls;
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(timeout)
            .subscription_capacity(DEFAULT_SUBSCRIPTION_CAPACITY)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "NATS slow consumer: messages dropped")
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            });
        // Each seed gets the whole timeout: the first may be down.
        let overall = timeout.saturating_mul(u32::try_from(seeds.len()).unwrap_or(u32::MAX));
        let client = tokio::time::timeout(overall, options.connect(seeds))
            .await
            .map_err(|_| BusError::Connection(format!("no answer from {url} within {timeout:?}")))?
            .map_err(|e| BusError::Connection(format!("{url}: {e}")))?;
        Ok(NatsBus { client })
    }

    /// Whether the client is connected to a server right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The underlying client, for JetStream.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// The servers of a comma-separated list, each checked.
pub(crate) fn seed_list(urls: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let seeds: Vec<_> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| BusError::Connection(format!("NATS URL {s:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        return Err(BusError::Connection("no NATS URL given".into()));
    }
    Ok(seeds)
}

fn to_nats_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        map.insert(name, value);
    }
    map
}

fn from_nats(message: async_nats::Message) -> Message {
    let mut headers = Headers::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            if let Some(value) = values.first() {
                headers.insert(name.to_string(), value.to_string());
            }
        }
    }
    Message {
        subject: message.subject.to_string(),
        reply: message.reply.map(|r| r.to_string()),
        headers,
        payload: message.payload,
    }
}

fn connection_error(e: impl std::fmt::Display) -> BusError {
    BusError::Connection(e.to_string())
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        subject::validate(subject, false)?;
        let result = if headers.is_empty() {
            self.client.publish(subject.to_owned(), payload).await
        } else {
            self.client
                .publish_with_headers(subject.to_owned(), to_nats_headers(&headers), payload)
                .await
        };
        result.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                BusError::TooLarge(e.to_string())
            }
            async_nats::client::PublishErrorKind::InvalidSubject => {
                BusError::InvalidSubject(subject.to_owned())
            }
            _ => connection_error(e),
        })
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        subject::validate(subject, true)?;
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(connection_error)?;
        Ok(Subscription::new(subscriber.map(from_nats)))
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        subject::validate(subject, true)?;
        let subscriber = self
            .client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map_err(connection_error)?;
        Ok(Subscription::new(subscriber.map(from_nats)))
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        subject::validate(subject, false)?;
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if !headers.is_empty() {
            request = request.headers(to_nats_headers(&headers));
        }
        self.client
            .send_request(subject.to_owned(), request)
            .await
            .map(from_nats)
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders(subject.to_owned()),
                RequestErrorKind::TimedOut => BusError::Timeout(subject.to_owned()),
                RequestErrorKind::InvalidSubject => BusError::InvalidSubject(subject.to_owned()),
                RequestErrorKind::MaxPayloadExceeded => BusError::TooLarge(e.to_string()),
                _ => connection_error(e),
            })
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(connection_error)
    }
}
