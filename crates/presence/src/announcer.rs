//! `join` and `leave` pushes, decided by the one view that sees every edge:
//! a user joins a channel with their first connection to it anywhere in the
//! cluster and leaves with their last — a phone and a laptop on two edges
//! are one member, not two joins and a premature leave. One replica
//! announces, holding a lease in JetStream; the others stand by and take
//! over when the lease lapses. Standalone's only replica always does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use herald_core::bus::{Bus, Headers};
use herald_core::config::Config;
use herald_core::shutdown::Shutdown;
use herald_core::streams::{KeptStream, StreamSettings};
use herald_core::subjects::{HEADER_KIND, Subjects};
use herald_protocol::channel::Channel;
use herald_protocol::{ChannelUser, Push, UserId, encode};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::state::{EventKind, PresenceEvent, PresenceState};

/// The lease lapses this long after its holder last renewed it.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the holder renews, and the others try to take it.
const LEASE_EVERY: Duration = Duration::from_secs(1);

/// Who may announce.
pub enum Leadership {
    /// The only replica (standalone): always.
    Sole,
    /// One of several replicas: while holding the lease, kept in the
    /// JetStream of this NATS connection.
    Elected(async_nats::Client),
}

/// Announces join/leave from `state`'s events until `shutdown`.
pub fn start(
    state: &PresenceState,
    bus: Arc<dyn Bus>,
    config: Arc<Config>,
    node: &str,
    leadership: Leadership,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let subjects = Subjects::new(&config.subject_prefix);
    let leader = Arc::new(AtomicBool::new(false));
    let lease = match leadership {
        Leadership::Sole => {
            leader.store(true, Ordering::Release);
            None
        }
        Leadership::Elected(client) => Some(tokio::spawn(hold_lease(
            client,
            subjects.clone(),
            config.queue_streams(),
            node.to_owned(),
            leader.clone(),
            shutdown.clone(),
        ))),
    };
    let mut events = state.subscribe_events();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = shutdown.wait() => break,
                event = events.recv() => event,
            };
            match event {
                Ok(event) if leader.load(Ordering::Acquire) => {
                    announce(&*bus, &subjects, &config, &event).await;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "join/leave events missed (announcer too slow)");
                }
                Err(RecvError::Closed) => break,
            }
        }
        if let Some(lease) = lease {
            let _ = lease.await;
        }
    })
}

async fn announce(bus: &dyn Bus, subjects: &Subjects, config: &Config, event: &PresenceEvent) {
    // A snapshot rebuilding the view is no news to anyone.
    if event.resync {
        return;
    }
    let Some(channel) = &event.channel else {
        return;
    };
    let (kind, push) = match event.kind {
        EventKind::Join => ("join", Push::Join(member(channel, &event.user))),
        EventKind::Leave => ("leave", Push::Leave(member(channel, &event.user))),
        _ => return,
    };
    let wanted = config
        .namespace(channel)
        .map(|ns| ns.join_leave)
        .unwrap_or(false);
    // The personal `#user` channel has one member and no audience.
    let personal = channel.has_user_boundary() && channel.namespace().is_none();
    if !wanted || personal {
        return;
    }
    let headers = Headers::new().with(HEADER_KIND, kind);
    if let Err(e) = bus
        .publish(&subjects.live(channel), headers, encode(&push).into())
        .await
    {
        tracing::warn!(error = %e, "join/leave not sent");
    }
}

fn member(channel: &Channel, user: &UserId) -> ChannelUser {
    ChannelUser {
        channel: channel.clone(),
        user: user.clone(),
    }
}

/// Takes the lease when it is free and renews it while held; `leader` says
/// whether it is held. The lease is the one message of a JetStream stream
/// that keeps one message for `LEASE_TTL`: taking it is publishing when the
/// subject is empty, renewing is publishing after one's own last message
/// (`Nats-Expected-Last-Subject-Sequence`), so two replicas cannot both hold
/// it. The stream is ensured whenever a publish finds nothing to take it (a
/// NATS restart loses it: it lives in memory), so join/leave never stops
/// for good. Released on shutdown so another replica takes over at once.
async fn hold_lease(
    client: async_nats::Client,
    subjects: Subjects,
    settings: StreamSettings,
    node: String,
    leader: Arc<AtomicBool>,
    shutdown: Shutdown,
) {
    let js = jetstream::new(client);
    let subject = subjects.presence_lease();
    let stream = KeptStream::new(js.clone(), lease_stream(&subjects), settings);
    let mut ensured = false;
    let mut held: Option<u64> = None;
    let mut tick = tokio::time::interval(LEASE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
        }
        if !ensured {
            match stream.ensure().await {
                Ok(_) => ensured = true,
                Err(e) => {
                    tracing::warn!(error = %e, "presence lease stream unavailable");
                    continue;
                }
            }
        }
        let publish = jetstream::message::PublishMessage::build()
            .payload(node.clone().into())
            .expected_last_subject_sequence(held.unwrap_or(0));
        let acked = match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let now = match acked {
            Ok(ack) => Some(ack.sequence),
            // Another replica holds it (or took it over).
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => None,
            Err(e) => {
                // Nothing took it, or no answer: ensure the stream next time.
                tracing::debug!(error = %e, "lease publish failed");
                ensured = false;
                None
            }
        };
        match (held.is_some(), now.is_some()) {
            (false, true) => tracing::info!(node, "announcing join/leave for the cluster"),
            (true, false) => tracing::warn!(node, "lost the join/leave lease"),
            _ => {}
        }
        held = now;
        leader.store(held.is_some(), Ordering::Release);
    }
    if let (Some(stream), Some(_)) = (stream.current(), held) {
        leader.store(false, Ordering::Release);
        let _ = stream.purge().filter(subject).await;
    }
}

fn lease_stream(subjects: &Subjects) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: subjects.stream_name("PRESENCE_LEASE"),
        subjects: vec![subjects.presence_lease()],
        max_messages_per_subject: 1,
        max_age: LEASE_TTL,
        duplicate_window: LEASE_TTL,
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    }
}
