//! Devices: what a push needs to reach a phone or a browser, checked
//! before it is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use herald_protocol::UserId;

/// The push service a device is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Apple Push Notification service (iOS, macOS).
    Apns,
    /// Firebase Cloud Messaging (Android).
    Fcm,
    /// Web Push (browsers).
    Webpush,
}

impl Platform {
    /// Its name in the API, the store and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Webpush => "webpush",
        }
    }

    /// The platform a name stands for.
    pub fn parse(s: &str) -> Option<Platform> {
        Some(match s {
            "apns" => Platform::Apns,
            "fcm" => Platform::Fcm,
            "webpush" => Platform::Webpush,
            _ => return None,
        })
    }
}

/// APNs environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Development builds, pushed through APNs' sandbox.
    Sandbox,
    /// App Store and TestFlight builds.
    #[default]
    Production,
}

impl Environment {
    /// Its name in the API and the store.
    pub fn name(self) -> &'static str {
        match self {
            Environment::Sandbox => "sandbox",
            Environment::Production => "production",
        }
    }

    /// The environment a name stands for.
    pub fn parse(s: &str) -> Option<Environment> {
        match s {
            "sandbox" => Some(Environment::Sandbox),
            "production" => Some(Environment::Production),
            _ => None,
        }
    }

    /// The other one: where a `BadDeviceToken` is tried next.
    pub fn other(self) -> Environment {
        match self {
            Environment::Sandbox => Environment::Production,
            Environment::Production => Environment::Sandbox,
        }
    }
}

/// A Web Push subscription as the browser's `PushSubscription.toJSON()`
/// gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Where pushes are POSTed (the push service's URL for this browser).
    pub endpoint: String,
    /// The keys pushes are encrypted to.
    pub keys: SubscriptionKeys,
    /// Browsers add it; it is not needed to push.
    #[serde(default, rename = "expirationTime", skip_serializing)]
    pub expiration_time: Option<serde_json::Value>,
}

/// A Web Push subscription's keys (RFC 8291), base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key.
    pub p256dh: String,
    /// The 16-byte authentication secret.
    pub auth: String,
}

/// A device as registered (`POST /api/devices`, `RegisterDevice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// The user whose device it is.
    pub user: String,
    /// Which push service reaches it.
    pub platform: Platform,
    /// APNs or FCM token.
    #[serde(default)]
    pub token: Option<String>,
    /// Web Push subscription.
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// App id (APNs topic / bundle id, FCM app): chooses the credentials.
    #[serde(default)]
    pub app: Option<String>,
    /// APNs environment; production when not given.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// The device's language tag (`en-US`), kept for the app.
    #[serde(default)]
    pub locale: Option<String>,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its id, kept when the token is registered again.
    pub id: String,
    /// The user whose device it is.
    pub user: String,
    /// Which push service reaches it.
    pub platform: Platform,
    /// APNs/FCM token, or the Web Push endpoint.
    pub token: String,
    /// Web Push: the browser's public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p256dh: Option<String>,
    /// Web Push: the authentication secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The app whose credentials push to it.
    pub app: String,
    /// APNs environment.
    pub environment: Environment,
    /// The device's language tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// When first registered, Unix milliseconds.
    pub created_ms: u64,
    /// When last registered (again, for a token already known), Unix ms.
    pub updated_ms: u64,
    /// When the device last registered; past the per-user limit the least
    /// recent go first.
    pub last_seen_ms: u64,
}

/// What a registration holds once checked: the columns to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDevice {
    /// The user, checked.
    pub user: UserId,
    /// Which push service reaches it.
    pub platform: Platform,
    /// APNs or FCM token, or the Web Push endpoint.
    pub token: String,
    /// Web Push: the browser's public key.
    pub p256dh: Option<String>,
    /// Web Push: the authentication secret.
    pub auth: Option<String>,
    /// The app ([`DEFAULT_APP`] when none was named).
    pub app: String,
    /// APNs environment.
    pub environment: Environment,
    /// The device's language tag.
    pub locale: Option<String>,
}

/// The app a device belongs to when it names none.
pub const DEFAULT_APP: &str = "default";

fn bad(message: impl Into<String>) -> InvalidDevice {
    InvalidDevice(message.into())
}

/// Why a registration is refused: what is wrong, for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDevice(pub String);

fn b64(field: &str, value: &str) -> Result<Vec<u8>, InvalidDevice> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| bad(format!("{field} is not base64url")))
}

impl NewDevice {
    /// Checks every field the way the push services will.
    pub fn check(self) -> Result<CheckedDevice, InvalidDevice> {
        let user = UserId::parse(&self.user).map_err(|e| bad(e.to_string()))?;
        let app = self.app.unwrap_or_else(|| DEFAULT_APP.to_owned());
        if app.is_empty()
            || app.len() > 255
            || !app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad("app must be 1 to 255 characters of A-Z a-z 0-9 . _ -"));
        }
        if let Some(locale) = &self.locale
            && (locale.len() > 35
                || !locale
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(bad("locale must be a language tag like en-US"));
        }
        let (token, p256dh, auth) = match self.platform {
            Platform::Apns | Platform::Fcm => {
                if self.subscription.is_some() {
                    return Err(bad("a subscription is for webpush devices; send a token"));
                }
                let token = self.token.ok_or_else(|| bad("token is required"))?;
                check_token(self.platform, &token)?;
                (token, None, None)
            }
            Platform::Webpush => {
                if self.token.is_some() {
                    return Err(bad("webpush devices send a subscription, not a token"));
                }
                let s = self
                    .subscription
                    .ok_or_else(|| bad("subscription is required for webpush"))?;
                check_subscription(&s)?;
                (s.endpoint, Some(s.keys.p256dh), Some(s.keys.auth))
            }
        };
        Ok(CheckedDevice {
            user,
            platform: self.platform,
            token,
            p256dh,
            auth,
            app,
            environment: self.environment.unwrap_or_default(),
            locale: self.locale,
        })
    }
}

fn check_token(platform: Platform, token: &str) -> Result<(), InvalidDevice> {
    match platform {
        // APNs device tokens are hex: 64 characters today, up to 200 allowed.
        Platform::Apns => {
            if token.len() < 64
                || token.len() > 200
                || !token.chars().all(|c| c.is_ascii_hexdigit())
            {
                return Err(bad("an APNs token is 64 to 200 hex characters"));
            }
        }
        Platform::Fcm => {
            if token.is_empty()
                || token.len() > 4096
                || !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
            {
                return Err(bad(
                    "an FCM registration token is 1 to 4096 characters of A-Z a-z 0-9 _ - : .",
                ));
            }
        }
        Platform::Webpush => {}
    }
    Ok(())
}

fn check_subscription(s: &Subscription) -> Result<(), InvalidDevice> {
    // Where it may point (https, public addresses) is the endpoint
    // policy's to say (`crate::endpoint`), at registration and at each send.
    let endpoint = s.endpoint.as_str();
    if !endpoint.starts_with("https://")
        || endpoint.len() > 2048
        || endpoint.chars().any(char::is_whitespace)
    {
        return Err(bad(
            "subscription.endpoint must be an https URL (at most 2048 characters)",
        ));
    }
    let p256dh = b64("subscription.keys.p256dh", &s.keys.p256dh)?;
    if p256dh.len() != 65 || p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
        return Err(bad("subscription.keys.p256dh is not a P-256 public key"));
    }
    if b64("subscription.keys.auth", &s.keys.auth)?.len() != 16 {
        return Err(bad("subscription.keys.auth must be 16 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apns(token: &str) -> NewDevice {
        NewDevice {
            user: "alice".into(),
            platform: Platform::Apns,
            token: Some(token.into()),
            subscription: None,
            app: Some("com.example.chat".into()),
            environment: None,
            locale: Some("en-US".into()),
        }
    }

    #[test]
    fn tokens_and_subscriptions_are_checked() {
        assert!(apns(&"ab".repeat(32)).check().is_ok());
        assert!(apns("not-hex").check().is_err());
        assert!(apns(&"a".repeat(10)).check().is_err());
        let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let public = URL_SAFE_NO_PAD.encode(key.public_key().to_encoded_point(false).as_bytes());
        let web = |p256dh: &str, auth: &str| NewDevice {
            user: "bob".into(),
            platform: Platform::Webpush,
            token: None,
            subscription: Some(Subscription {
                endpoint: "https://push.example/abc".into(),
                keys: SubscriptionKeys {
                    p256dh: p256dh.into(),
                    auth: auth.into(),
                },
                expiration_time: None,
            }),
            app: None,
            environment: None,
            locale: None,
        };
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert!(web(&public, &auth).check().is_ok());
        assert!(web("AAAA", &auth).check().is_err(), "not a key");
        assert!(web(&public, "AAAA").check().is_err(), "short auth");
        let mut bad_curve = key.public_key().to_encoded_point(false).as_bytes().to_vec();
        bad_curve[40] ^= 1;
        assert!(
            web(&URL_SAFE_NO_PAD.encode(bad_curve), &auth)
                .check()
                .is_err(),
            "off the curve"
        );
    }
}
