//! `herald bench idle`: opens many client connections and holds them, so
//! the memory one idle connection costs a server can be measured (server
//! RSS growth ÷ connections; `scripts/measure-idle.sh` does the sums).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::ws_subscriber;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Transport {
    Ws,
    Sse,
    /// A long-poll session with a poll held at all times.
    Poll,
}

#[derive(Args, Debug)]
pub(crate) struct IdleArgs {
    /// The edge's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Client token (from `herald token`).
    #[arg(long)]
    pub token: String,
    /// The channel every connection subscribes to.
    #[arg(long, default_value = "bench:idle")]
    pub channel: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub parallel: usize,
    /// Seconds to hold the connections once all are open (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
}

/// Opens the connections, prints `open N` once all are up, holds them.
pub(crate) async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(args.parallel.max(1)));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut held = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let permit = gate.clone().acquire_owned().await?;
        let (open, failed, http) = (open.clone(), failed.clone(), http.clone());
        let (url, token, channel, transport) = (
            args.url.clone(),
            args.token.clone(),
            args.channel.clone(),
            args.transport,
        );
        held.push(tokio::spawn(async move {
            let result = match transport {
                Transport::Ws => hold_ws(&url, &token, &channel, permit, &open).await,
                Transport::Sse => hold_sse(&http, &url, &token, &channel, permit, &open).await,
                Transport::Poll => hold_poll(&http, &url, &token, &channel, permit, &open).await,
            };
            if let Err(e) = result {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("connection failed: {e:#}");
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while open.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.connections {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "connections did not open in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "open {} failed {}",
        open.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    if args.hold_secs > 0 {
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    } else {
        tokio::signal::ctrl_c().await?;
    }
    for task in held {
        task.abort();
    }
    Ok(())
}

/// One more connection open; the next may start opening.
fn opened(permit: tokio::sync::OwnedSemaphorePermit, open: &AtomicUsize) {
    open.fetch_add(1, Ordering::Relaxed);
    drop(permit);
}

async fn hold_ws(
    url: &str,
    token: &str,
    channel: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    open: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut ws = ws_subscriber(url, token, channel).await?;
    opened(permit, open);
    // Idle: answer pings, nothing else.
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(t) = message
            && t.contains("\"ping\"")
        {
            ws.send(Message::text(r#"{"pong":{}}"#)).await?;
        }
    }
    Ok(())
}

async fn hold_sse(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    channel: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    open: &AtomicUsize,
) -> anyhow::Result<()> {
    let response = http
        .get(format!("{url}/sse?channels={channel}"))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "SSE: {}", response.status());
    let mut body = response.bytes_stream();
    // Open once the stream says it is subscribed.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("event: subscribe") {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                seen.extend_from_slice(&chunk);
            }
            None => anyhow::bail!("SSE stream ended"),
        }
    }
    opened(permit, open);
    while let Some(chunk) = body.next().await {
        chunk?;
    }
    Ok(())
}

async fn hold_poll(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    channel: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    open: &AtomicUsize,
) -> anyhow::Result<()> {
    let poll = |cursor: Option<String>| {
        // a cursor is base64url: nothing to escape
        let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        http.get(format!("{url}/poll?channels={channel}&timeout=60{cursor}"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(90))
            .send()
    };
    // The first poll opens the session and answers at once with its cursor.
    let first = poll(None).await?;
    anyhow::ensure!(first.status().is_success(), "poll: {}", first.status());
    let mut cursor = first.json::<serde_json::Value>().await?["cursor"]
        .as_str()
        .map(str::to_owned);
    // open: the session exists, and a poll is held from now on
    opened(permit, open);
    loop {
        let answer = poll(cursor.clone()).await?;
        match answer.status().as_u16() {
            204 => {}
            200 => {
                let body = answer.json::<serde_json::Value>().await?;
                cursor = body["cursor"].as_str().map(str::to_owned).or(cursor);
            }
            other => anyhow::bail!("poll: {other}"),
        }
    }
}
