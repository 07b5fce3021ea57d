//! A raw WebSocket speaking protocol v1, for tests that need the frames
//! themselves (the Rust client hides them).

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket to `url` (`ws://…/ws`) connected with `token` and subscribed
/// to `channels` (each reply `ok`); `Err` when the upgrade is refused.
pub async fn raw_ws(
    url: &str,
    token: &str,
    channels: &[&str],
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, Error> {
    let (ws, _) = tokio_tungstenite::connect_async(request(url)).await?;
    Ok(join(ws, token, channels).await)
}

/// [`raw_ws`] over a socket the test made itself (bound to an address of
/// its own, with a small buffer, …).
pub async fn raw_ws_over<S>(
    stream: S,
    url: &str,
    token: &str,
    channels: &[&str],
) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws, _) = tokio_tungstenite::client_async(request(url), stream).await?;
    Ok(join(ws, token, channels).await)
}

fn request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "herald.v1.json".parse().expect("a header value"),
    );
    request
}

/// Sends `connect` and a `subscribe` per channel; waits for every reply.
async fn join<S>(mut ws: WebSocketStream<S>, token: &str, channels: &[&str]) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut commands = vec![json!({"id": 1, "connect": {"token": token}})];
    for (i, channel) in channels.iter().enumerate() {
        commands.push(json!({"id": i + 2, "subscribe": {"channel": channel}}));
    }
    for command in &commands {
        ws.send(Message::text(command.to_string()))
            .await
            .expect("a command sent");
    }
    let mut replies = 0;
    while replies < commands.len() {
        let frame = ws
            .next()
            .await
            .expect("the connection stays open")
            .expect("a frame");
        let Ok(text) = frame.to_text() else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            panic!("not JSON: {text}")
        };
        if frame.get("id").is_some() {
            assert!(frame.get("ok").is_some(), "{frame}");
            replies += 1;
        }
    }
    ws
}
