//! `herald bench`: load tools that run against a live Herald — `idle`
//! (memory per held connection) and `latency` (publish → deliver time under
//! fan-out) — and `nats`, the same fan-out measured on the NATS server
//! alone, the baseline Herald's delivery cost is compared with.

mod idle;
mod latency;
mod nats;

pub(crate) use idle::{IdleArgs, idle};
pub(crate) use latency::{LatencyArgs, latency};
pub(crate) use nats::{NatsArgs, nats};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client of the edge at `url` (its HTTP base), connected with
/// `token` and subscribed to `channel`.
async fn ws_subscriber(url: &str, token: &str, channel: &str) -> anyhow::Result<Ws> {
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    // Small buffers (the library's defaults hold ~139 KiB per connection,
    // which would limit one machine to ~15,000 clients), no Nagle.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(&ws_url, Some(config), true).await?;
    let connect = serde_json::json!({"id": 1, "connect": {"token": token}});
    let subscribe = serde_json::json!({"id": 2, "subscribe": {"channel": channel}});
    ws.send(Message::text(connect.to_string())).await?;
    ws.send(Message::text(subscribe.to_string())).await?;
    let mut replies = 0;
    while replies < 2 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"ok\"") => replies += 1,
            Some(Ok(Message::Text(t))) if t.contains("\"error\"") => anyhow::bail!("{t}"),
            Some(Ok(_)) => {}
            other => anyhow::bail!("closed: {other:?}"),
        }
    }
    Ok(ws)
}

/// Microseconds since the Unix epoch: stamps compared across processes.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// "p50=… p90=… p99=… p999=… max=…" of `samples` (sorted here).
fn percentiles(samples: &mut [u64]) -> String {
    if samples.is_empty() {
        return "none".into();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50={} p90={} p99={} p999={} max={}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    )
}
