//! Web Push: the payload encrypted for the subscription (RFC 8291,
//! aes128gcm), a VAPID token (RFC 8292, ES256) for the push service, and the
//! `TTL`, `Urgency` and `Topic` headers.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::json;

use super::{Alert, Outcome, now_secs, retry_after, transport_error};
use crate::device::Device;

/// How long the push service keeps a message for an offline browser, s.
const TTL: u64 = 24 * 3600;
/// VAPID tokens are valid this long (RFC 8292 allows up to 24 h).
const VAPID_LIFETIME: i64 = 12 * 3600;

/// Pushes to Web Push endpoints for one app, signed with its VAPID key.
pub struct VapidSender {
    key: SigningKey,
    /// The public key, uncompressed point, base64url (`k=`).
    public: String,
    subject: String,
}

impl VapidSender {
    /// `private_key`: 32 bytes base64url; `subject`: `mailto:` or `https:`.
    pub fn new(private_key: &str, subject: &str) -> Result<Self, String> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err("vapid_subject must start with mailto: or https://".into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(private_key.trim().trim_end_matches('='))
            .map_err(|_| "the VAPID private key is not base64url".to_owned())?;
        let secret = p256::SecretKey::from_slice(&bytes)
            .map_err(|_| "the VAPID private key is not 32 bytes of a P-256 key".to_owned())?;
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        Ok(VapidSender {
            key: SigningKey::from(secret),
            public,
            subject: subject.to_owned(),
        })
    }

    /// The VAPID JWT for the push service at `origin`.
    fn token(&self, origin: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"aud": origin, "exp": now_secs() + VAPID_LIFETIME, "sub": self.subject})
                .to_string(),
        );
        let signing_input = format!("{header}.{claims}");
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// Encrypts `alert` for `device`'s subscription and POSTs it to its
    /// endpoint.
    pub async fn send(&self, client: &reqwest::Client, device: &Device, alert: &Alert) -> Outcome {
        let (Some(p256dh), Some(auth)) = (&device.p256dh, &device.auth) else {
            return Outcome::Failed {
                reason: "the subscription has no keys".into(),
            };
        };
        let keys = URL_SAFE_NO_PAD
            .decode(p256dh)
            .ok()
            .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
            .zip(URL_SAFE_NO_PAD.decode(auth).ok().filter(|a| a.len() == 16));
        let Some((ua_public, auth)) = keys else {
            return Outcome::Gone {
                since_ms: None,
                reason: "the subscription's keys are unusable".into(),
            };
        };
        let payload = json!({
            "id": alert.id,
            "title": alert.title,
            "body": alert.body,
            "tag": alert.collapse_key,
            "channel": alert.channel,
            "data": alert.data,
        })
        .to_string();
        let auth = web_push_native::Auth::clone_from_slice(&auth);
        let encrypted = match web_push_native::encrypt(payload.into_bytes(), &ua_public, &auth) {
            Ok(e) => e,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("encryption: {e}"),
                };
            }
        };
        let Some(origin) = origin_of(&device.token) else {
            return Outcome::Gone {
                since_ms: None,
                reason: "the subscription endpoint is not a URL".into(),
            };
        };
        let mut request = client
            .post(&device.token)
            .header("TTL", TTL.to_string())
            .header(
                "Urgency",
                if alert.title.is_some() || alert.body.is_some() {
                    "high"
                } else {
                    "normal"
                },
            )
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header(
                "Authorization",
                format!("vapid t={}, k={}", self.token(&origin), self.public),
            )
            .body(encrypted);
        if let Some(topic) = alert.collapse_key.as_deref().map(topic_of) {
            request = request.header("Topic", topic);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status().as_u16();
        match status {
            200..=202 => Outcome::Sent,
            404 | 410 => Outcome::Gone {
                since_ms: None,
                reason: format!("Web Push {status}: subscription expired"),
            },
            300..=399 => Outcome::Failed {
                reason: format!(
                    "Web Push {status}: redirects are not followed (to {})",
                    response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .unwrap_or("nowhere")
                ),
            },
            429 | 500..=599 => Outcome::Retry {
                after: retry_after(response.headers()),
                reason: format!("Web Push {status}"),
            },
            _ => Outcome::Failed {
                reason: format!(
                    "Web Push {status}: {}",
                    response.text().await.unwrap_or_default()
                ),
            },
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// A `Topic` header: at most 32 characters of the base64url alphabet.
fn topic_of(key: &str) -> String {
    let clean: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    if clean.is_empty() {
        "herald".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_topics() {
        assert_eq!(
            origin_of("https://fcm.googleapis.com/wp/abc").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:9/push/x").as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(origin_of("nope"), None);
        assert_eq!(topic_of("chat:room/42 — new!"), "chatroom42new");
        assert_eq!(topic_of(&"a".repeat(40)).len(), 32);
    }
}
