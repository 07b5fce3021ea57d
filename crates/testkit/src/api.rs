//! The server API (`/api/*`) as tests call it: with the test API key,
//! answers read as JSON.

use serde_json::{Value, json};

use crate::{API_KEY, WAIT};

/// An HTTP client for tests: rustls with ring, and no read waits forever.
/// (No overall timeout: long polls and event streams are held on purpose.)
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .read_timeout(WAIT)
        .build()
        .expect("an HTTP client")
}

/// A service's server API at `base` (`http://host:port`), called with a key.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

/// What an API call answered.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body as JSON (`null` if it is none).
    pub body: Value,
}

impl Api {
    /// The API at `base`, called with the test key.
    pub fn new(base: impl Into<String>) -> Api {
        Api::with_key(base, API_KEY)
    }

    /// The API at `base`, called with `key`.
    pub fn with_key(base: impl Into<String>, key: &str) -> Api {
        Api {
            base: base.into(),
            key: key.to_owned(),
            http: http_client(),
        }
    }

    /// `POST <path>` with `body`.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let request = self.http.post(self.url(path)).json(&body);
        self.send(request).await
    }

    /// `GET <path>`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST /api/publish` of `data` to `channel`; answers `{offset, epoch}`.
    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        let answer = self
            .post("/api/publish", json!({"channel": channel, "data": data}))
            .await;
        assert_eq!(answer.status, 200, "publish to {channel}: {}", answer.body);
        answer.body
    }

    /// `GET /api/history` of `channel`.
    pub async fn history(&self, channel: &str) -> Value {
        let answer = self.get(&format!("/api/history?channel={channel}")).await;
        assert_eq!(answer.status, 200, "history of {channel}: {}", answer.body);
        answer.body
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} unreachable: {e}", self.base));
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Answer {
            status,
            retry_after,
            body: response.json().await.unwrap_or(Value::Null),
        }
    }
}

/// A service's Prometheus `/metrics` at `base`, as `name{labels}` → value.
pub async fn metrics(base: &str) -> std::collections::HashMap<String, f64> {
    let response = http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("a content type")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("the metrics");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
