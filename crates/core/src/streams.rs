//! The JetStream streams Herald keeps (history, the notify queue, the
//! presence lease). NATS can lose a stream — a server restarted without its
//! data, memory storage after any restart, an operator's `nats stream rm` —
//! so each one is ensured where it is used: created when missing, at start
//! and again whenever an operation finds it gone, never with a restart of
//! Herald. An existing stream is never changed behind the operator's back:
//! where its settings differ from the configuration it is left as it is
//! and the difference is reported (logs, `/readyz`), unless the operator
//! asked for it to be applied (`stream_update`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

/// Why a stream could not be ensured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream {name}: {why}")]
pub struct StreamError {
    /// The stream's name.
    pub name: String,
    /// What JetStream answered.
    pub why: String,
    /// No answer (yet): JetStream may be electing a leader or reconnecting,
    /// and asking again may work. Otherwise JetStream said no.
    pub transient: bool,
}

/// How Herald treats a stream that exists with other settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDrift {
    /// Leave it as it is and report the difference.
    #[default]
    Report,
    /// Change it to the configuration.
    Update,
}

/// How the streams of one kind are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Copies JetStream keeps (1 to 5).
    pub replicas: usize,
    /// What to do with an existing stream that has other settings.
    pub on_drift: OnDrift,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            on_drift: OnDrift::Report,
        }
    }
}

/// A stream after [`KeptStream::ensure`].
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The stream's handle.
    pub stream: Arc<stream::Stream>,
    /// It was missing and has just been created: whatever it held is gone.
    pub created: bool,
}

/// One stream Herald keeps, with the configuration it should have.
pub struct KeptStream {
    js: jetstream::Context,
    config: stream::Config,
    on_drift: OnDrift,
    current: RwLock<Option<Arc<stream::Stream>>>,
    /// How the stream differs from the configuration, when it does.
    drift: Mutex<Option<String>>,
    /// When it was last checked after a failure (checks are spaced out so a
    /// NATS outage does not turn every failed operation into two).
    last_recheck: Mutex<Option<Instant>>,
    recreated: std::sync::atomic::AtomicU64,
}

/// How long a service at start-up keeps asking for its streams while
/// JetStream gives no answer.
pub const START_WITHIN: Duration = Duration::from_secs(60);

/// Failures within this long of the last check reuse its answer.
const RECHECK_EVERY: Duration = Duration::from_millis(500);

impl KeptStream {
    /// A stream to keep as `config` says, with the replicas of `settings`;
    /// nothing is asked of NATS yet.
    pub fn new(js: jetstream::Context, config: stream::Config, settings: StreamSettings) -> Self {
        KeptStream {
            js,
            config: stream::Config {
                num_replicas: settings.replicas.max(1),
                ..config
            },
            on_drift: settings.on_drift,
            current: RwLock::new(None),
            drift: Mutex::new(None),
            last_recheck: Mutex::new(None),
            recreated: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The handle of the last ensure, if any.
    pub fn current(&self) -> Option<Arc<stream::Stream>> {
        self.current.read().clone()
    }

    /// How the stream differs from the configuration (`None`: it does not,
    /// or it has not been looked at yet).
    pub fn drift(&self) -> Option<String> {
        self.drift.lock().clone()
    }

    /// How many times the stream was found missing and created again.
    pub fn recreated(&self) -> u64 {
        self.recreated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The stream's handle, ensuring it first if it never was.
    pub async fn handle(&self) -> Result<Arc<stream::Stream>, StreamError> {
        match self.current() {
            Some(stream) => Ok(stream),
            None => Ok(self.ensure().await?.stream),
        }
    }

    /// After an operation on the stream failed: ensures it again (at most
    /// every `RECHECK_EVERY`), so a lost stream is back for the retry.
    /// `None` when it was checked a moment ago.
    pub async fn recheck(&self) -> Option<Result<Ensured, StreamError>> {
        {
            let mut last = self.last_recheck.lock();
            if last.is_some_and(|at| at.elapsed() < RECHECK_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        Some(self.ensure().await)
    }

    /// [`KeptStream::ensure`], asked again while JetStream gives no answer
    /// (a cluster electing its leaders, as after a node restart) until
    /// `within` has passed — a service starts while JetStream recovers, and
    /// still fails at once on a real refusal (e.g. more replicas than
    /// servers).
    pub async fn ensure_within(&self, within: Duration) -> Result<Ensured, StreamError> {
        let deadline = Instant::now() + within;
        loop {
            match self.ensure().await {
                Err(e) if e.transient && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "stream not ensured yet; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                result => return result,
            }
        }
    }

    /// Looks the stream up; creates it when missing; reports (or, when
    /// asked to, applies) a difference from the configuration.
    pub async fn ensure(&self) -> Result<Ensured, StreamError> {
        let name = self.config.name.clone();
        let error = |why: String, transient: bool| StreamError {
            name: name.clone(),
            why,
            transient,
        };
        let create_error = |e: jetstream::context::CreateStreamError| {
            use jetstream::context::CreateStreamErrorKind as Kind;
            let transient = matches!(
                e.kind(),
                Kind::TimedOut | Kind::JetStreamUnavailable | Kind::Response
            );
            error(e.to_string(), transient)
        };
        let (stream, created) = match self.js.get_stream(&name).await {
            Ok(mut stream) => {
                let differences = differences(&self.config, &stream.cached_info().config);
                match (differences.is_empty(), self.on_drift) {
                    (true, _) => *self.drift.lock() = None,
                    (false, OnDrift::Update) => {
                        self.js
                            .update_stream(&self.config)
                            .await
                            .map_err(create_error)?;
                        tracing::warn!(stream = %name, changed = %differences, "stream updated to the configuration");
                        *self.drift.lock() = None;
                        stream
                            .info()
                            .await
                            .map_err(|e| error(e.to_string(), true))?;
                    }
                    (false, OnDrift::Report) => {
                        let mut drift = self.drift.lock();
                        if drift.as_deref() != Some(differences.as_str()) {
                            tracing::warn!(
                                stream = %name,
                                differences = %differences,
                                "stream differs from the configuration; left as it is \
                                 (HERALD_STREAM_UPDATE=true applies the configuration)"
                            );
                        }
                        *drift = Some(differences);
                    }
                }
                (stream, false)
            }
            Err(e) if is_stream_not_found(&e) => {
                let stream = self
                    .js
                    .create_stream(self.config.clone())
                    .await
                    .map_err(create_error)?;
                let known = self.current.read().is_some();
                if known {
                    self.recreated
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(stream = %name, "stream was missing: created again (what it held is lost)");
                }
                *self.drift.lock() = None;
                (stream, known)
            }
            Err(e) => {
                let transient = matches!(e.kind(), GetStreamErrorKind::Request);
                return Err(error(e.to_string(), transient));
            }
        };
        let stream = Arc::new(stream);
        *self.current.write() = Some(stream.clone());
        Ok(Ensured { stream, created })
    }
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        GetStreamErrorKind::JetStream(js) if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// What of `wanted` (the settings Herald sets) `actual` does not have, as
/// `setting actual (configured wanted)` pairs.
fn differences(wanted: &stream::Config, actual: &stream::Config) -> String {
    let mut out = Vec::new();
    let mut check = |setting: &str, actual: String, wanted: String| {
        if actual != wanted {
            out.push(format!("{setting} {actual} (configured {wanted})"));
        }
    };
    check(
        "replicas",
        actual.num_replicas.max(1).to_string(),
        wanted.num_replicas.max(1).to_string(),
    );
    check(
        "storage",
        format!("{:?}", actual.storage),
        format!("{:?}", wanted.storage),
    );
    check(
        "retention",
        format!("{:?}", actual.retention),
        format!("{:?}", wanted.retention),
    );
    check(
        "subjects",
        actual.subjects.join(","),
        wanted.subjects.join(","),
    );
    let limit = |n: i64| {
        if n <= 0 {
            "unlimited".to_owned()
        } else {
            n.to_string()
        }
    };
    check(
        "max_msgs_per_subject",
        limit(actual.max_messages_per_subject),
        limit(wanted.max_messages_per_subject),
    );
    check(
        "max_msgs",
        limit(actual.max_messages),
        limit(wanted.max_messages),
    );
    check(
        "max_age",
        format!("{:?}", actual.max_age),
        format!("{:?}", wanted.max_age),
    );
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_setting_with_both_values() {
        let wanted = stream::Config {
            name: "S".into(),
            subjects: vec!["a.>".into()],
            num_replicas: 3,
            max_messages_per_subject: 100,
            ..Default::default()
        };
        let mut actual = wanted.clone();
        assert_eq!(differences(&wanted, &actual), "");
        actual.num_replicas = 1;
        actual.max_messages_per_subject = -1;
        assert_eq!(
            differences(&wanted, &actual),
            "replicas 1 (configured 3), max_msgs_per_subject unlimited (configured 100)"
        );
        // JetStream reports an unset replica count as 1
        let one = stream::Config {
            num_replicas: 0,
            ..wanted.clone()
        };
        let reported = stream::Config {
            num_replicas: 1,
            ..wanted
        };
        assert_eq!(differences(&one, &reported), "");
    }
}
