//! `herald bench nats`: the fan-out of `bench latency` done by the NATS
//! server alone — `--subscribers` NATS connections subscribed to one
//! subject, a publisher sending `--rate` stamped messages a second (open
//! loop) — so the cost of a delivery through Herald can be set against
//! the cost of one through NATS itself (server CPU per delivery, measured
//! from outside by `scripts/bench-peers.sh`). Prints the same lines as
//! `bench latency`.

use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde::Deserialize;

use super::{now_micros, percentiles};

#[derive(Args, Debug)]
pub(crate) struct NatsArgs {
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    #[arg(long, default_value = "bench.fanout")]
    pub subject: String,
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages per second (open loop).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes of padding in each message (beside its stamp).
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
}

#[derive(Deserialize)]
struct Stamp {
    sent: u64,
    #[serde(default)]
    stop: bool,
}

pub(crate) async fn nats(args: NatsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.subscribers > 0,
        "rate and subscribers must be positive"
    );
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let client = async_nats::connect(&args.nats).await?;
        let mut messages = client.subscribe(args.subject.clone()).await?;
        client.flush().await?;
        subscribers.push(tokio::spawn(async move {
            let mut delays = Vec::new();
            while let Some(message) = messages.next().await {
                let Ok(stamp) = serde_json::from_slice::<Stamp>(&message.payload) else {
                    continue;
                };
                if stamp.stop {
                    break;
                }
                delays.push(now_micros().saturating_sub(stamp.sent));
            }
            drop(client);
            delays
        }));
    }

    let publisher = async_nats::connect(&args.nats).await?;
    let total = args.rate as u64 * args.duration;
    let padding = "x".repeat(args.payload);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = Instant::now();
    let started_micros = now_micros();
    let mut behind = Duration::ZERO;
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        behind = behind.max(due.elapsed());
        let sent = started_micros + (interval * i as u32).as_micros() as u64;
        let body = serde_json::json!({"sent": sent, "pad": padding}).to_string();
        publisher
            .publish(args.subject.clone(), body.into_bytes().into())
            .await?;
    }
    publisher.flush().await?;
    let publishing = started.elapsed();
    let stop = serde_json::json!({"sent": now_micros(), "stop": true}).to_string();
    publisher
        .publish(args.subject.clone(), stop.into_bytes().into())
        .await?;
    publisher.flush().await?;
    let mut deliveries = Vec::new();
    let mut unfinished = 0;
    for subscriber in subscribers {
        match tokio::time::timeout(Duration::from_secs(30), subscriber).await {
            Ok(Ok(delays)) => deliveries.extend(delays),
            _ => unfinished += 1,
        }
    }
    let received = deliveries.len() as u64;
    let lost = (total * args.subscribers as u64).saturating_sub(received);
    println!(
        "subscribers={} publications={total} deliveries={received} lost={lost}",
        args.subscribers
    );
    println!(
        "elapsed_s={:.2} publishing_s={:.2} target_rate={} publish_rate={:.1} delivery_rate={:.0} payload={} behind_schedule_ms={}",
        started.elapsed().as_secs_f64(),
        publishing.as_secs_f64(),
        args.rate,
        total as f64 / publishing.as_secs_f64(),
        received as f64 / publishing.as_secs_f64(),
        args.payload,
        behind.as_millis()
    );
    if unfinished > 0 {
        println!("lost_by no last message within 30 s: {unfinished} subscribers");
    }
    println!("delivery_us {}", percentiles(&mut deliveries));
    Ok(())
}
