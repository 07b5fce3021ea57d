//! `herald bench`: load tools that run against a live Herald — `idle`
//! (memory per held connection) and `latency` (publish → deliver time under
//! fan-out).

mod idle;
mod latency;

pub(crate) use idle::{IdleArgs, idle};
pub(crate) use latency::{LatencyArgs, latency};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client of the edge at `url` (its HTTP base), connected with
/// `token` and subscribed to `channel`.
async fn ws_subscriber(url: &str, token: &str, channel: &str) -> anyhow::Result<Ws> {
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await?;
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
