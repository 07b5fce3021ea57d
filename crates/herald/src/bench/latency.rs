//! `herald bench latency`: how long a publication takes from the server API
//! to every subscriber. `--subscribers` WebSocket clients follow one
//! channel; a publisher posts `--rate` publications a second through the
//! server API, each stamped with the time it was sent; every subscriber
//! records how long each took to arrive. Prints the percentiles of those
//! deliveries, and of the publisher's own API round trips as a baseline
//! measured in the same run. Publisher and subscribers share this machine's
//! clock, so run it on the machine the server runs on (or one in sync).

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::ws_subscriber;

#[derive(Args, Debug)]
pub(crate) struct LatencyArgs {
    /// The edge's HTTP base URL (subscribers connect here).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server API's base URL (routing; the same as --url in standalone).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    #[arg(long)]
    pub api_key: String,
    /// Client token allowed to subscribe to --channel (from `herald token`).
    #[arg(long)]
    pub token: String,
    #[arg(long, default_value = "bench:latency")]
    pub channel: String,
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "pub")]
    publication: Option<Stamped>,
}

#[derive(Deserialize)]
struct Stamped {
    data: Stamp,
}

#[derive(Deserialize)]
struct Stamp {
    sent: u64,
    /// The last word: the run is over.
    #[serde(default)]
    stop: bool,
}

pub(crate) async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.subscribers > 0,
        "rate and subscribers must be positive"
    );
    let samples: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let mut ws = ws_subscriber(&args.url, &args.token, &args.channel).await?;
        let samples = samples.clone();
        subscribers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if text.contains("\"ping\"") {
                    let _ = ws.send(Message::text(r#"{"pong":{}}"#)).await;
                    continue;
                }
                if let Ok(Frame {
                    publication: Some(p),
                }) = serde_json::from_str::<Frame>(&text)
                {
                    if p.data.stop {
                        break;
                    }
                    mine.push(now_micros().saturating_sub(p.data.sent));
                }
            }
            samples.lock().extend(mine);
        }));
    }

    let http = reqwest::Client::new();
    let total = args.rate as u64 * args.duration;
    let mut round_trips = Vec::with_capacity(total as usize);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let publish = |body: serde_json::Value| {
        http.post(format!("{}/api/publish", args.api))
            .bearer_auth(&args.api_key)
            .json(&body)
            .send()
    };
    for _ in 0..total {
        tick.tick().await;
        let sent = now_micros();
        let response =
            publish(serde_json::json!({"channel": args.channel, "data": {"sent": sent}})).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "publish: {}",
            response.status()
        );
        round_trips.push(now_micros().saturating_sub(sent));
    }
    // the last word, so subscribers know the run is over
    publish(
        serde_json::json!({"channel": args.channel, "data": {"sent": now_micros(), "stop": true}}),
    )
    .await?;
    for subscriber in subscribers {
        let _ = tokio::time::timeout(Duration::from_secs(30), subscriber).await;
    }

    let mut deliveries = std::mem::take(&mut *samples.lock());
    let received = deliveries.len() as u64;
    let lost = (total * args.subscribers as u64).saturating_sub(received);
    println!(
        "subscribers={} publications={total} deliveries={received} lost={lost}",
        args.subscribers
    );
    println!("delivery_us {}", percentiles(&mut deliveries));
    println!("publish_rtt_us {}", percentiles(&mut round_trips));
    Ok(())
}

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
