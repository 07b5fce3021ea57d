//! `herald bench latency`: how long a publication takes from the server API
//! to every subscriber. `--subscribers` WebSocket clients follow one
//! channel; a publisher posts `--rate` publications a second through the
//! server API — open loop: each is sent at its scheduled time whatever the
//! answers to the earlier ones, with at most `--in-flight` unanswered —
//! each stamped with the time it was due; every subscriber records how long
//! each took to arrive (from when it was due, so a publisher held back by
//! a slow server counts against the server). Prints the elapsed time and
//! the rates achieved, the percentiles of those deliveries, of the
//! publisher's own API round trips (a baseline measured in the same run),
//! and for lost deliveries how the subscribers that missed them ended.
//! Publisher and subscribers share this machine's clock, so run it on the
//! machine the server runs on (or one in sync).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{now_micros, percentiles, ws_subscriber};

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
    /// Publications per second: a target the publisher keeps to (open
    /// loop), not one it slows down from.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes of padding in each publication's data (beside its stamp).
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
    /// Publishes sent and not yet answered, at most; past it the publisher
    /// waits (and says how far behind its schedule it fell).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "pub")]
    publication: Option<Stamped>,
    disconnect: Option<Disconnect>,
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

#[derive(Deserialize)]
struct Disconnect {
    code: u16,
    #[serde(default)]
    reason: String,
}

/// What one subscriber got, and how its connection ended.
struct Heard {
    delays: Vec<u64>,
    ended: String,
}

pub(crate) async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.subscribers > 0 && args.in_flight > 0,
        "rate, subscribers and in-flight must be positive"
    );
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let ws = ws_subscriber(&args.url, &args.token, &args.channel).await?;
        subscribers.push(tokio::spawn(listen(ws)));
    }

    let http = reqwest::Client::new();
    let total = args.rate as u64 * args.duration;
    let padding = "x".repeat(args.payload);
    let round_trips = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let refused = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let in_flight = Arc::new(Semaphore::new(args.in_flight));
    let publish = {
        let (http, api, key, channel) = (
            http.clone(),
            args.api.clone(),
            args.api_key.clone(),
            args.channel.clone(),
        );
        move |data: serde_json::Value| {
            http.post(format!("{api}/api/publish"))
                .bearer_auth(&key)
                .json(&serde_json::json!({"channel": channel, "data": data}))
                .send()
        }
    };
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = Instant::now();
    let started_micros = now_micros();
    let mut behind = Duration::ZERO;
    let mut sends = Vec::with_capacity(total as usize);
    // The run lasts `duration`: beyond saturation, what the server could
    // not take by then is not sent (`unsent`), so a slow server does not
    // stretch the run.
    let ends = started + Duration::from_secs(args.duration);
    let mut unsent = 0;
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let permit =
            match tokio::time::timeout_at(ends.into(), in_flight.clone().acquire_owned()).await {
                Ok(permit) => permit?,
                Err(_) => {
                    unsent = total - i;
                    break;
                }
            };
        behind = behind.max(due.elapsed());
        let sent = started_micros + (interval * i as u32).as_micros() as u64;
        let request = publish(serde_json::json!({"sent": sent, "pad": padding}));
        let (round_trips, refused) = (round_trips.clone(), refused.clone());
        sends.push(tokio::spawn(async move {
            let answer = request.await;
            drop(permit);
            match answer {
                Ok(r) if r.status().is_success() => {
                    round_trips.lock().push(now_micros().saturating_sub(sent));
                }
                Ok(r) => *refused.lock().entry(r.status().to_string()).or_default() += 1,
                Err(e) => *refused.lock().entry(format!("{e}")).or_default() += 1,
            }
        }));
    }
    for send in sends {
        send.await?;
    }
    let publishing = started.elapsed();
    // the last word, so subscribers know the run is over
    publish(serde_json::json!({"sent": now_micros(), "stop": true})).await?;
    let mut heard = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        heard.push(
            match tokio::time::timeout(Duration::from_secs(30), subscriber).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => Heard {
                    delays: Vec::new(),
                    ended: format!("task failed: {e}"),
                },
                Err(_) => Heard {
                    delays: Vec::new(),
                    ended: "still waiting 30 s after the last publication".into(),
                },
            },
        );
    }
    let elapsed = started.elapsed();

    let published = round_trips.lock().len() as u64;
    let mut deliveries: Vec<u64> = heard
        .iter()
        .flat_map(|h| h.delays.iter().copied())
        .collect();
    let received = deliveries.len() as u64;
    let lost = (published * args.subscribers as u64).saturating_sub(received);
    println!(
        "subscribers={} publications={published} deliveries={received} lost={lost}",
        args.subscribers
    );
    println!(
        "elapsed_s={:.2} publishing_s={:.2} target_rate={} publish_rate={:.1} delivery_rate={:.0} payload={} behind_schedule_ms={} unsent={unsent}",
        elapsed.as_secs_f64(),
        publishing.as_secs_f64(),
        args.rate,
        published as f64 / publishing.as_secs_f64(),
        received as f64 / publishing.as_secs_f64(),
        args.payload,
        behind.as_millis()
    );
    let refused = std::mem::take(&mut *refused.lock());
    if !refused.is_empty() {
        println!("refused {refused:?}");
    }
    if lost > 0 {
        println!("lost_by {}", lost_reasons(&heard, published));
    }
    println!("delivery_us {}", percentiles(&mut deliveries));
    println!(
        "publish_rtt_us {}",
        percentiles(&mut std::mem::take(&mut *round_trips.lock()))
    );
    Ok(())
}

/// Reads one subscriber's deliveries until the last word (or its end).
async fn listen(mut ws: super::Ws) -> Heard {
    let mut delays = Vec::new();
    let ended = loop {
        let message = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => break format!("error: {e}"),
            None => break "closed without a close frame".into(),
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(Some(frame)) => {
                break format!("close {} {}", u16::from(frame.code), frame.reason);
            }
            Message::Close(None) => break "close without a code".into(),
            _ => continue,
        };
        if text.contains("\"ping\"") {
            let _ = ws.send(Message::text(r#"{"pong":{}}"#)).await;
            continue;
        }
        match serde_json::from_str::<Frame>(&text) {
            Ok(Frame {
                publication: Some(p),
                ..
            }) => {
                if p.data.stop {
                    break "stayed connected to the end".into();
                }
                delays.push(now_micros().saturating_sub(p.data.sent));
            }
            Ok(Frame {
                disconnect: Some(d),
                ..
            }) => break format!("disconnect {} {}", d.code, d.reason),
            _ => {}
        }
    };
    Heard { delays, ended }
}

/// "close 4001 slow consumer: 3 subscribers, 120 deliveries; …": how the
/// subscribers that missed deliveries ended.
fn lost_reasons(heard: &[Heard], published: u64) -> String {
    let mut by: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for h in heard {
        let missed = published.saturating_sub(h.delays.len() as u64);
        if missed > 0 {
            let entry = by.entry(h.ended.as_str()).or_default();
            entry.0 += 1;
            entry.1 += missed;
        }
    }
    by.iter()
        .map(|(why, (subscribers, missed))| {
            format!("{why}: {subscribers} subscribers, {missed} deliveries")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
