//! The push services: APNs (HTTP/2, ES256 provider tokens), FCM HTTP v1
//! (service account → OAuth2 access token) and Web Push (VAPID + RFC 8291
//! encryption). Credentials are per app; a device's app chooses them.

mod apns;
mod fcm;
mod webpush;

use std::collections::HashMap;
use std::time::Duration;

use herald_core::config::{Config, ConfigError};
use serde_json::Value;

use crate::device::{Device, Environment, Platform};
use crate::endpoint::{EndpointPolicy, Refused, Route};

pub use apns::{ApnsSender, apns_id};
pub use fcm::FcmSender;
pub use webpush::VapidSender;

/// What is pushed, whatever the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The notification id (the push job's): the same on every retry, so
    /// a duplicate can be recognised (APNs `apns-id` is derived from it).
    pub id: String,
    /// The alert's title (with neither title nor body, APNs and FCM get a
    /// data-only push).
    pub title: Option<String>,
    /// The alert's text.
    pub body: Option<String>,
    /// Alerts with the same key replace each other on the device.
    pub collapse_key: Option<String>,
    /// The app's data (a JSON object).
    pub data: Value,
    /// The channel it was published to, for the app.
    pub channel: Option<String>,
}

/// How one push to one device went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The push service took it.
    Sent,
    /// Try again later (429, 5xx, timeouts), no sooner than `after` if the
    /// service said so.
    Retry {
        /// When to retry, if the service said.
        after: Option<Duration>,
        /// What the service answered.
        reason: String,
    },
    /// The device is gone. `since_ms`: since when its token has been
    /// invalid, where the service says (APNs 410 `timestamp`); `None` when
    /// it says only "now" (FCM, Web Push) — the worker then keeps the
    /// device only if it was registered again after the send began.
    Gone {
        /// Since when the token has been invalid (Unix ms), where the service
        /// says.
        since_ms: Option<u64>,
        /// What the service answered.
        reason: String,
    },
    /// APNs `BadDeviceToken`: perhaps a token of the other environment.
    BadToken,
    /// Will never work as sent (bad payload, bad topic, refused credentials).
    Failed {
        /// What the service answered, or what is wrong on this side.
        reason: String,
    },
}

/// The senders of one app.
#[derive(Default)]
struct AppSenders {
    apns: Option<ApnsSender>,
    fcm: Option<FcmSender>,
    vapid: Option<VapidSender>,
}

/// Every app's senders and the HTTP clients they push with.
pub struct Providers {
    apps: HashMap<String, AppSenders>,
    apns_production: String,
    apns_sandbox: String,
    fcm_url: String,
    /// HTTPS (HTTP/2 by ALPN where offered, as APNs requires): APNs, FCM,
    /// and Web Push endpoints in `webpush_allowed_hosts`.
    https: reqwest::Client,
    /// HTTP/2 without TLS (h2c), for APNs base URLs that are `http://`.
    h2c: reqwest::Client,
    /// Web Push to endpoints anyone may register: names resolve through
    /// [`crate::endpoint::PublicOnly`], no proxy (it would resolve them).
    webpush: reqwest::Client,
    endpoints: EndpointPolicy,
}

/// How long one request to a push service may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn setting(app: &str, field: &str) -> String {
    format!("apps.{app}.{field}")
}

impl Providers {
    /// Loads every app's credentials; a missing or unusable file fails
    /// start-up naming the setting.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::with_endpoints(config, EndpointPolicy::from_config(config)?)
    }

    /// The same, with Web Push endpoints judged by `endpoints` (tests give
    /// it a DNS of their own).
    pub fn with_endpoints(config: &Config, endpoints: EndpointPolicy) -> Result<Self, ConfigError> {
        let mut apps = HashMap::new();
        for (id, creds) in &config.apps {
            let apns = match (
                &creds.apns_team_id,
                &creds.apns_key_id,
                &creds.apns_key_file,
            ) {
                (None, None, None) => None,
                (Some(team), Some(key_id), Some(file)) => {
                    let pem = std::fs::read(file).map_err(|e| {
                        ConfigError::new(
                            &setting(id, "apns_key_file"),
                            format!("{}: {e}", file.display()),
                        )
                    })?;
                    let topic = creds.apns_topic.clone().unwrap_or_else(|| id.clone());
                    Some(
                        ApnsSender::new(team, key_id, &pem, &topic)
                            .map_err(|e| ConfigError::new(&setting(id, "apns_key_file"), e))?,
                    )
                }
                _ => {
                    return Err(ConfigError::new(
                        &setting(id, "apns_team_id"),
                        "APNs needs apns_team_id, apns_key_id and apns_key_file together",
                    ));
                }
            };
            let fcm = match &creds.fcm_service_account_file {
                None => None,
                Some(file) => {
                    let json = std::fs::read(file).map_err(|e| {
                        ConfigError::new(
                            &setting(id, "fcm_service_account_file"),
                            format!("{}: {e}", file.display()),
                        )
                    })?;
                    Some(FcmSender::from_service_account(&json).map_err(|e| {
                        ConfigError::new(&setting(id, "fcm_service_account_file"), e)
                    })?)
                }
            };
            let vapid = match (&creds.vapid_private_key, &creds.vapid_subject) {
                (None, None) => None,
                (Some(key), Some(subject)) => Some(
                    VapidSender::new(key, subject)
                        .map_err(|e| ConfigError::new(&setting(id, "vapid_private_key"), e))?,
                ),
                _ => {
                    return Err(ConfigError::new(
                        &setting(id, "vapid_subject"),
                        "Web Push needs vapid_private_key and vapid_subject together",
                    ));
                }
            };
            apps.insert(id.clone(), AppSenders { apns, fcm, vapid });
        }
        // reqwest brings no TLS crypto of its own: Herald uses ring, once per
        // process (a no-op when the binary installed it already).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let private_ca = match &config.notify.provider_ca_file {
            None => Vec::new(),
            Some(file) => load_ca_file(file)?,
        };
        // No service is followed elsewhere: a redirect is an answer.
        let client = || {
            reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .tls_certs_merge(private_ca.clone())
        };
        let built = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| ConfigError::new("provider_ca_file", error_chain(&e)))
        };
        let https = built(
            client()
                .pool_idle_timeout(Duration::from_secs(600))
                .dns_resolver(endpoints.unchecked_resolver()),
        )?;
        let h2c = built(client().http2_prior_knowledge())?;
        let webpush = built(
            client()
                .pool_idle_timeout(Duration::from_secs(600))
                .no_proxy()
                .dns_resolver(endpoints.resolver()),
        )?;
        Ok(Providers {
            apps,
            apns_production: config.notify.apns_url.trim_end_matches('/').to_owned(),
            apns_sandbox: config
                .notify
                .apns_sandbox_url
                .trim_end_matches('/')
                .to_owned(),
            fcm_url: config.notify.fcm_url.trim_end_matches('/').to_owned(),
            https,
            h2c,
            webpush,
            endpoints,
        })
    }

    /// The rule Web Push endpoints are held to.
    pub fn endpoints(&self) -> &EndpointPolicy {
        &self.endpoints
    }

    /// Whether any credentials exist for a device's platform and app.
    pub fn can_reach(&self, device: &Device) -> bool {
        let Some(app) = self.apps.get(&device.app) else {
            return false;
        };
        match device.platform {
            Platform::Apns => app.apns.is_some(),
            Platform::Fcm => app.fcm.is_some(),
            Platform::Webpush => app.vapid.is_some(),
        }
    }

    /// Pushes `alert` to `device` (APNs: in the device's environment).
    pub async fn send(&self, device: &Device, alert: &Alert) -> Outcome {
        self.send_in(device, alert, device.environment).await
    }

    /// Pushes to an APNs device as if it were of `environment`.
    pub async fn send_in(
        &self,
        device: &Device,
        alert: &Alert,
        environment: Environment,
    ) -> Outcome {
        let Some(app) = self.apps.get(&device.app) else {
            return Outcome::Failed {
                reason: format!("no credentials for app `{}`", device.app),
            };
        };
        let missing = || Outcome::Failed {
            reason: format!(
                "app `{}` has no {} credentials",
                device.app,
                device.platform.name()
            ),
        };
        match device.platform {
            Platform::Apns => match &app.apns {
                Some(sender) => {
                    let base = match environment {
                        Environment::Production => &self.apns_production,
                        Environment::Sandbox => &self.apns_sandbox,
                    };
                    let client = if base.starts_with("http://") {
                        &self.h2c
                    } else {
                        &self.https
                    };
                    sender.send(client, base, device, alert).await
                }
                None => missing(),
            },
            Platform::Fcm => match &app.fcm {
                Some(sender) => sender.send(&self.https, &self.fcm_url, device, alert).await,
                None => missing(),
            },
            Platform::Webpush => match &app.vapid {
                Some(sender) => {
                    let client = match self.endpoints.route(&device.token) {
                        Ok(Route::Allowed) => &self.https,
                        Ok(Route::PublicAddress | Route::Name(_)) => &self.webpush,
                        Err(refused) => return refused_endpoint(refused),
                    };
                    sender.send(client, device, alert).await
                }
                None => missing(),
            },
        }
    }
}

/// `Retry-After` in seconds (or an HTTP date, which is ignored).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Reads `provider_ca_file`: one or more PEM certificates.
fn load_ca_file(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let bad = |why: String| ConfigError::new("provider_ca_file", why);
    let pem = std::fs::read(file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("{}: {}", file.display(), error_chain(&e))))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            file.display()
        )));
    }
    Ok(certs)
}

/// A Web Push endpoint refused before anything was sent. One that can
/// never be pushed to (not https, an inward address literal) is gone, as a
/// subscription the service no longer knows; one refused for what its name
/// resolves to now is failed and kept (DNS may be wrong for a while).
fn refused_endpoint(refused: Refused) -> Outcome {
    let reason = format!("Web Push endpoint refused: {refused}");
    if refused.depends_on_dns() {
        Outcome::Failed { reason }
    } else {
        Outcome::Gone {
            since_ms: None,
            reason,
        }
    }
}

/// The outcome of a request that did not get an answer.
pub(crate) fn transport_error(e: reqwest::Error) -> Outcome {
    // The Web Push resolver refused the name: nothing was sent.
    if let Some(refused) = find_cause::<Refused>(&e) {
        return refused_endpoint(refused.clone());
    }
    // A certificate no root vouches for does not get better by itself.
    if let Some(tls @ rustls::Error::InvalidCertificate(_)) = find_cause::<rustls::Error>(&e) {
        return Outcome::Failed {
            reason: format!(
                "TLS: {tls} — the service's certificate is not trusted; if a private CA \
                 issued it, add the CA to provider_ca_file"
            ),
        };
    }
    Outcome::Retry {
        after: None,
        reason: if e.is_timeout() {
            "timed out".to_owned()
        } else {
            format!("request failed: {}", error_chain(&e))
        },
    }
}

/// An error and its causes in one line (reqwest's own message leaves out
/// why: "error sending request").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// The first cause of type `T`, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap).
fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = find_cause::<T>(inner)
        {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    herald_core::auth::unix_now()
}
