//! FCM HTTP v1: a service account's RS256 assertion buys an OAuth2 access
//! token (cached until shortly before it expires), which authorises
//! `POST /v1/projects/<id>/messages:send`.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Alert, Outcome, now_secs, retry_after, transport_error};
use crate::device::Device;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// Pushes to FCM for one app: its service account and cached access
/// token.
pub struct FcmSender {
    project: String,
    client_email: String,
    key: EncodingKey,
    token_uri: String,
    access: Mutex<Option<(String, Instant)>>,
}

impl FcmSender {
    /// A sender from a Google service-account JSON file's contents.
    pub fn from_service_account(json: &[u8]) -> Result<Self, String> {
        let account: ServiceAccount =
            serde_json::from_slice(json).map_err(|e| format!("not a service-account JSON: {e}"))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| format!("service account private_key: {e}"))?;
        Ok(FcmSender {
            project: account.project_id,
            client_email: account.client_email,
            key,
            token_uri: account.token_uri,
            access: Mutex::new(None),
        })
    }

    /// A valid access token, from the cache or the token endpoint.
    async fn access_token(&self, client: &reqwest::Client) -> Result<String, Outcome> {
        let mut cached = self.access.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now = now_secs();
        let assertion = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600}),
            &self.key,
        )
        .map_err(|e| Outcome::Failed {
            reason: format!("FCM assertion: {e}"),
        })?;
        let response = client
            .post(&self.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let Some(token) = answer["access_token"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            let reason = format!("FCM token endpoint {status}: {}", answer["error"]);
            return Err(if status.is_server_error() {
                Outcome::Retry {
                    after: None,
                    reason,
                }
            } else {
                Outcome::Failed { reason }
            });
        };
        let lifetime = answer["expires_in"].as_u64().unwrap_or(3600);
        // renew a minute early
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        *cached = Some((token.to_owned(), until));
        Ok(token.to_owned())
    }

    /// Pushes `alert` to `device` through FCM at `base`.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        base: &str,
        device: &Device,
        alert: &Alert,
    ) -> Outcome {
        let token = match self.access_token(client).await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let mut message = json!({
            "token": device.token,
            // FCM data values are strings: the app's JSON travels as one.
            "data": {
                "herald_id": alert.id,
                "herald_data": alert.data.to_string(),
            },
            "android": {"priority": "high"},
        });
        if let Some(channel) = &alert.channel {
            message["data"]["herald_channel"] = json!(channel);
        }
        if alert.title.is_some() || alert.body.is_some() {
            message["notification"] = json!({"title": alert.title, "body": alert.body});
        }
        if let Some(key) = &alert.collapse_key {
            message["android"]["collapse_key"] = json!(key);
            message["apns"] = json!({"headers": {"apns-collapse-id": key}});
        }
        let response = match client
            .post(format!("{base}/v1/projects/{}/messages:send", self.project))
            .bearer_auth(&token)
            .json(&json!({ "message": message }))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        // The precise error is in details[].errorCode.
        let code = answer["error"]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|d| d["errorCode"].as_str())
            .unwrap_or_else(|| answer["error"]["status"].as_str().unwrap_or_default())
            .to_owned();
        // A 404 in Google's error shape (`"status": "NOT_FOUND"`) is a token
        // FCM no longer knows, with or without the `UNREGISTERED` detail; a
        // bare 404 (a wrong base URL, a proxy) says nothing about the device.
        let not_found = status == 404 && answer["error"]["status"] == "NOT_FOUND";
        match (status, code.as_str()) {
            (200, _) => Outcome::Sent,
            (_, "UNREGISTERED") => Outcome::Gone {
                since_ms: None,
                reason: "FCM: UNREGISTERED".into(),
            },
            (404, _) if not_found => Outcome::Gone {
                since_ms: None,
                reason: "FCM 404: NOT_FOUND".into(),
            },
            (401, _) => {
                *self.access.lock().await = None;
                Outcome::Retry {
                    after: None,
                    reason: "FCM: access token refused".into(),
                }
            }
            (429 | 500 | 503, _) => Outcome::Retry {
                after,
                reason: format!("FCM {status} {code}"),
            },
            _ => Outcome::Failed {
                reason: format!("FCM {status} {code}"),
            },
        }
    }
}
