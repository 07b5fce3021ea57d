//! The hub: which local connections are subscribed to which channel. An
//! edge subscribes on the bus once per channel that has local subscribers
//! and fans each message out to them — the same bytes, shared, for all.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use herald_core::bus::{Bus, BusError};
use herald_core::channel::Channel;
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

/// An encoded frame for a client: one JSON text, shared between every
/// connection that receives it.
pub type Frame = Utf8Bytes;

/// Connection ids are unique within one edge process.
pub type ConnId = u64;

/// The bounded queue of frames waiting to be written to one connection.
/// When it is full the connection is a slow consumer: `overflow` fires and
/// the connection closes with 4001 rather than slow anyone else down.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Frame>,
    overflow: Shutdown,
}

impl Outbox {
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Frame>, Shutdown) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflow = Shutdown::new();
        (
            Outbox {
                tx,
                overflow: overflow.clone(),
            },
            rx,
            overflow,
        )
    }

    /// Queues a frame without waiting. Returns false if it was not queued.
    pub fn push(&self, frame: Frame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.trigger();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

type Subscribers = Arc<RwLock<HashMap<ConnId, Outbox>>>;

struct ChannelFanout {
    subscribers: Subscribers,
    task: JoinHandle<()>,
}

pub struct Hub {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    channels: Mutex<HashMap<Channel, ChannelFanout>>,
}

impl Hub {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects) -> Self {
        Hub {
            bus,
            subjects,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a local subscriber; the first one for a channel subscribes the
    /// edge on the bus.
    pub async fn subscribe(
        &self,
        channel: &Channel,
        conn: ConnId,
        outbox: Outbox,
    ) -> Result<(), BusError> {
        let mut channels = self.channels.lock().await;
        if let Some(fanout) = channels.get(channel) {
            write(&fanout.subscribers).insert(conn, outbox);
            return Ok(());
        }
        let mut subscription = self.bus.subscribe(&self.subjects.live(channel)).await?;
        let subscribers: Subscribers = Arc::new(RwLock::new(HashMap::from([(conn, outbox)])));
        let fanout_to = subscribers.clone();
        let name = channel.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                // Encoded once by routing; checked once here; then the same
                // bytes go to every local subscriber.
                let frame = match Frame::try_from(message.payload) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(channel = %name, error = %e, "non-UTF-8 live message dropped");
                        continue;
                    }
                };
                for outbox in read(&fanout_to).values() {
                    outbox.push(frame.clone());
                }
            }
        });
        channels.insert(channel.clone(), ChannelFanout { subscribers, task });
        Ok(())
    }

    /// Removes a local subscriber; the last one unsubscribes the edge.
    pub async fn unsubscribe(&self, channel: &Channel, conn: ConnId) {
        let mut channels = self.channels.lock().await;
        let Some(fanout) = channels.get(channel) else {
            return;
        };
        let now_empty = {
            let mut subscribers = write(&fanout.subscribers);
            subscribers.remove(&conn);
            subscribers.is_empty()
        };
        if now_empty && let Some(fanout) = channels.remove(channel) {
            // Aborting drops the bus subscription, which unsubscribes.
            fanout.task.abort();
        }
    }

    /// Channels with at least one local subscriber.
    pub async fn channel_count(&self) -> usize {
        self.channels.lock().await.len()
    }
}

fn read(s: &Subscribers) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Outbox>> {
    s.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(s: &Subscribers) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, Outbox>> {
    s.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use herald_core::bus::{Headers, MemoryBus};
    use std::time::Duration;

    async fn next(rx: &mut mpsc::Receiver<Frame>) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a frame in time")
            .expect("open")
    }

    #[tokio::test]
    async fn one_bus_subscription_per_channel_and_shared_bytes() {
        let bus = MemoryBus::new();
        let subjects = Subjects::new("t");
        let hub = Hub::new(Arc::new(bus.clone()), subjects.clone());
        let channel = Channel::new("chat:1").unwrap();
        let (a, mut rx_a, _) = Outbox::new(8);
        let (b, mut rx_b, _) = Outbox::new(8);
        hub.subscribe(&channel, 1, a).await.unwrap();
        hub.subscribe(&channel, 2, b).await.unwrap();
        assert_eq!(
            bus.subscription_count(),
            1,
            "one bus subscription per channel"
        );

        let payload = Bytes::from_static(br#"{"pub":{"x":1}}"#);
        bus.publish(&subjects.live(&channel), Headers::new(), payload)
            .await
            .unwrap();
        let fa = next(&mut rx_a).await;
        let fb = next(&mut rx_b).await;
        assert_eq!(fa.as_str(), r#"{"pub":{"x":1}}"#);
        assert_eq!(
            fa.as_str().as_ptr(),
            fb.as_str().as_ptr(),
            "every subscriber shares the same bytes"
        );

        hub.unsubscribe(&channel, 1).await;
        assert_eq!(bus.subscription_count(), 1);
        hub.unsubscribe(&channel, 2).await;
        // the fan-out task is aborted; its subscription goes with it
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while bus.subscription_count() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bus subscription leaked"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(hub.channel_count().await, 0);
    }

    #[tokio::test]
    async fn a_full_outbox_signals_overflow_without_blocking_others() {
        let bus = MemoryBus::new();
        let subjects = Subjects::new("t");
        let hub = Hub::new(Arc::new(bus.clone()), subjects.clone());
        let channel = Channel::new("c").unwrap();
        let (slow, _slow_rx, slow_overflow) = Outbox::new(2);
        let (fast, mut fast_rx, fast_overflow) = Outbox::new(64);
        hub.subscribe(&channel, 1, slow).await.unwrap();
        hub.subscribe(&channel, 2, fast).await.unwrap();
        for i in 0..10 {
            bus.publish(
                &subjects.live(&channel),
                Headers::new(),
                Bytes::from(format!("{{\"n\":{i}}}")),
            )
            .await
            .unwrap();
        }
        for i in 0..10 {
            assert_eq!(next(&mut fast_rx).await.as_str(), format!("{{\"n\":{i}}}"));
        }
        assert!(slow_overflow.is_triggered());
        assert!(!fast_overflow.is_triggered());
    }
}
