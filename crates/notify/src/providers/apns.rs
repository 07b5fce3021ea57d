//! APNs over HTTP/2: `POST /3/device/<token>` with an ES256 provider token
//! (renewed every 50 minutes; Apple refuses ones older than an hour), one
//! connection shared by many concurrent streams.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{Alert, Outcome, now_secs, retry_after, transport_error};
use crate::device::Device;

/// Provider tokens are renewed this often.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// APNs refuses bigger payloads.
const MAX_PAYLOAD: usize = 4096;
/// How long APNs keeps trying an offline device.
const EXPIRATION: i64 = 24 * 3600;

/// Pushes to APNs for one app: its provider key and topic.
pub struct ApnsSender {
    team_id: String,
    key_id: String,
    key: EncodingKey,
    topic: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl ApnsSender {
    /// A sender with the app's `.p8` key; fails now if the key cannot sign.
    pub fn new(team_id: &str, key_id: &str, p8_pem: &[u8], topic: &str) -> Result<Self, String> {
        let key =
            EncodingKey::from_ec_pem(p8_pem).map_err(|e| format!("not an ES256 .p8 key: {e}"))?;
        let sender = ApnsSender {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            key,
            topic: topic.to_owned(),
            token: Mutex::new(None),
        };
        sender.provider_token()?;
        Ok(sender)
    }

    /// The cached provider token, renewed when old.
    fn provider_token(&self) -> Result<String, String> {
        let mut cached = self.token.lock();
        if let Some((token, made)) = cached.as_ref()
            && made.elapsed() < TOKEN_LIFETIME
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(
            &header,
            &json!({"iss": self.team_id, "iat": now_secs()}),
            &self.key,
        )
        .map_err(|e| e.to_string())?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    fn forget_token(&self) {
        *self.token.lock() = None;
    }

    /// Pushes `alert` to `device` through the APNs server at `base`
    /// (production or sandbox).
    pub async fn send(
        &self,
        client: &reqwest::Client,
        base: &str,
        device: &Device,
        alert: &Alert,
    ) -> Outcome {
        let token = match self.provider_token() {
            Ok(t) => t,
            Err(e) => return Outcome::Failed { reason: e },
        };
        let Some(body) = payload(alert) else {
            return Outcome::Failed {
                reason: format!("payload over APNs' {MAX_PAYLOAD} bytes"),
            };
        };
        let alerting = alert.title.is_some() || alert.body.is_some();
        let mut request = client
            .post(format!("{base}/3/device/{}", device.token))
            .header("authorization", format!("bearer {token}"))
            .header("apns-topic", &self.topic)
            .header(
                "apns-push-type",
                if alerting { "alert" } else { "background" },
            )
            .header("apns-priority", if alerting { "10" } else { "5" })
            .header("apns-expiration", (now_secs() + EXPIRATION).to_string())
            .header("apns-id", apns_id(&alert.id, &device.id))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = &alert.collapse_key {
            request = request.header("apns-collapse-id", truncate(key, 64));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let reason = answer["reason"].as_str().unwrap_or_default().to_owned();
        match status {
            200 => Outcome::Sent,
            410 => Outcome::Gone {
                since_ms: answer["timestamp"].as_u64(),
                reason: format!("APNs: {reason}"),
            },
            400 if reason == "BadDeviceToken" => Outcome::BadToken,
            403 if reason == "ExpiredProviderToken" || reason == "InvalidProviderToken" => {
                self.forget_token();
                Outcome::Retry {
                    after: None,
                    reason: format!("APNs: {reason}"),
                }
            }
            429 | 500 | 503 => Outcome::Retry {
                after,
                reason: format!("APNs {status} {reason}"),
            },
            _ => Outcome::Failed {
                reason: format!("APNs {status} {reason}"),
            },
        }
    }
}

/// The APNs payload, or `None` when even without the app's data it is too
/// big.
fn payload(alert: &Alert) -> Option<Vec<u8>> {
    let mut aps = serde_json::Map::new();
    if alert.title.is_some() || alert.body.is_some() {
        aps.insert(
            "alert".into(),
            json!({"title": alert.title.clone().unwrap_or_default(), "body": alert.body.clone().unwrap_or_default()}),
        );
        aps.insert("sound".into(), json!("default"));
    } else {
        aps.insert("content-available".into(), json!(1));
    }
    if let Some(channel) = &alert.channel {
        aps.insert("thread-id".into(), json!(channel));
    }
    let full = json!({"aps": aps, "herald": {"id": alert.id, "channel": alert.channel, "data": alert.data}});
    let bytes = serde_json::to_vec(&full).ok()?;
    if bytes.len() <= MAX_PAYLOAD {
        return Some(bytes);
    }
    // Too big with the app's data: the alert alone, the app fetches the rest.
    let lean = json!({"aps": aps, "herald": {"id": alert.id, "channel": alert.channel}});
    serde_json::to_vec(&lean)
        .ok()
        .filter(|b| b.len() <= MAX_PAYLOAD)
}

/// The same notification to the same device always has the same
/// `apns-id`, so a duplicate after a crash is recognisable.
pub fn apns_id(notification: &str, device: &str) -> String {
    let a = fnv(notification.as_bytes(), device.as_bytes(), 0);
    let b = fnv(device.as_bytes(), notification.as_bytes(), 1);
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn fnv(a: &[u8], b: &[u8], salt: u8) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain(&[0xff, salt]).chain(b) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_ids_are_stable_uuids() {
        let a = apns_id("job-1", "device-1");
        assert_eq!(a, apns_id("job-1", "device-1"));
        assert_ne!(a, apns_id("job-1", "device-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn oversized_data_is_dropped_before_the_alert_is() {
        let alert = Alert {
            id: "n".into(),
            title: Some("Hi".into()),
            body: Some("there".into()),
            collapse_key: None,
            data: json!({"blob": "x".repeat(5000)}),
            channel: None,
        };
        let bytes = payload(&alert).unwrap();
        assert!(bytes.len() <= MAX_PAYLOAD);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["aps"]["alert"]["title"], "Hi");
        assert!(v["herald"]["data"].is_null());
    }
}
