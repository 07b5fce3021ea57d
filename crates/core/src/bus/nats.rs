//! The bus over core NATS (async-nats).

use std::path::PathBuf;
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

/// Where NATS is and how to prove who we are to it.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// A comma-separated seed list (`nats://a:4222,nats://b:4222`).
    pub urls: String,
    /// How the connection authenticates.
    pub auth: NatsAuth,
    /// TLS to the servers.
    pub tls: NatsTls,
}

/// How a connection authenticates to NATS.
#[derive(Clone, Default)]
pub enum NatsAuth {
    /// Not at all (the server does not ask).
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A `.creds` file: a user JWT and its NKey seed.
    CredsFile(PathBuf),
    /// A setting that cannot be used as given: the setting and why.
    Incomplete(&'static str, &'static str),
}

impl std::fmt::Debug for NatsAuth {
    // Never prints a password or token (this lands in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
            NatsAuth::Incomplete(key, why) => write!(f, "Incomplete({key} {why})"),
        }
    }
}

/// TLS to the NATS servers.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// PEM CA certificates the servers are verified against (else the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
    /// Refuse a server that does not speak TLS.
    pub required: bool,
}

impl NatsOptions {
    /// Options for `urls` without authentication or TLS settings.
    pub fn new(urls: impl Into<String>) -> NatsOptions {
        NatsOptions {
            urls: urls.into(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
        }
    }

    /// The setting that cannot be used, and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if let NatsAuth::Incomplete(key, why) = self.auth {
            return Err((key, why));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => Err(("nats_tls_key_file", "is required with nats_tls_cert_file")),
            (None, Some(_)) => Err(("nats_tls_cert_file", "is required with nats_tls_key_file")),
            _ => Ok(()),
        }
    }

    async fn connect_options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        self.check()
            .map_err(|(key, why)| BusError::Connection(format!("{key} {why}")))?;
        let mut options = async_nats::ConnectOptions::new();
        options = match &self.auth {
            NatsAuth::None | NatsAuth::Incomplete(..) => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                BusError::Connection(format!("NATS credentials file {}: {e}", path.display()))
            })?,
        };
        let tls = &self.tls;
        for (setting, path) in [
            ("nats_tls_ca_file", &tls.ca_file),
            ("nats_tls_cert_file", &tls.cert_file),
            ("nats_tls_key_file", &tls.key_file),
        ] {
            // Read here, so a missing file is named at start-up rather
            // than as a TLS failure on every reconnect.
            if let Some(path) = path
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(BusError::Connection(format!(
                    "{setting} {}: {e}",
                    path.display()
                )));
            }
        }
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let uses_tls = tls.required
            || tls.ca_file.is_some()
            || tls.cert_file.is_some()
            || self.urls.split(',').any(|u| u.trim().starts_with("tls://"));
        Ok(options.require_tls(uses_tls))
    }
}

impl From<&str> for NatsOptions {
    fn from(urls: &str) -> NatsOptions {
        NatsOptions::new(urls)
    }
}

impl From<&String> for NatsOptions {
    fn from(urls: &String) -> NatsOptions {
        NatsOptions::new(urls.as_str())
    }
}

impl NatsBus {
    /// Connects to one of the seeds of `options` — a comma-separated list,
    /// as every NATS client takes (`nats://a:4222,nats://b:4222`) — naming
    /// the connection `name` (visible in the server's `/connz`). Seeds that
    /// are down are skipped; fails if none answers within `timeout`, or if
    /// the server refuses the credentials. After that the client
    /// reconnects on its own, to any server of the cluster.
    pub async fn connect(
        options: impl Into<NatsOptions>,
        name: &str,
        timeout: Duration,
    ) -> Result<Self, BusError> {
        let settings: NatsOptions = options.into();
        let seeds = seed_list(&settings.urls)?;
        let url = settings.urls.as_str();
        // the recorder first: a handle taken before it records nothing
        crate::metrics::install();
        let connected = metrics::gauge!("herald_nats_connected");
        let options = settings
            .connect_options()
            .await?
            .name(name)
            .connection_timeout(timeout)
            .subscription_capacity(DEFAULT_SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                let connected = connected.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected.set(1.0);
                            tracing::info!("NATS connected")
                        }
                        async_nats::Event::Disconnected => {
                            connected.set(0.0);
                            tracing::warn!("NATS disconnected")
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            tracing::warn!(sid, "NATS slow consumer: messages dropped")
                        }
                        async_nats::Event::ServerError(_)
                        | async_nats::Event::ClientError(_)
                        | async_nats::Event::LameDuckMode => {
                            tracing::warn!(event = %event, "NATS event")
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        // Each seed gets the whole timeout: the first may be down.
        let overall = timeout.saturating_mul(u32::try_from(seeds.len()).unwrap_or(u32::MAX));
        let client = tokio::time::timeout(overall, options.connect(seeds))
            .await
            .map_err(|_| BusError::Connection(format!("no answer from {url} within {timeout:?}")))?
            .map_err(|e| BusError::Connection(format!("{url}: {e}")))?;
        metrics::gauge!("herald_nats_connected").set(1.0);
        Ok(NatsBus { client })
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
    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

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
