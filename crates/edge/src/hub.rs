//! The hub: which local connections are subscribed to which channel. An
//! edge subscribes on the bus once per channel that has local subscribers
//! and fans each publication out to them — the same bytes, shared.
//!
//! Per channel the hub delivers strictly in offset order. A publication
//! that arrives ahead of its predecessor (routing replicas race, or a live
//! message was lost) waits briefly for it; then the gap is filled from
//! history. A connection joining a channel learns the last offset the hub
//! delivered *at the moment it was added*: everything after goes to its
//! outbox, everything up to it can be recovered from history — so the
//! hand-over from history to live has no gap and no duplicate.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use herald_core::bus::{Bus, Message, Subscription};
use herald_core::history::Recovery;
use herald_core::subjects::{HEADER_EPOCH, HEADER_KIND, HEADER_OFFSET, HEADER_TS, Subjects};
use herald_core::telemetry::propagation;
use herald_protocol::channel::Channel;
use herald_protocol::route::HistoryQuery;
use herald_protocol::{Epoch, ErrorBody, ErrorCode, Publication, Push, StreamPosition, encode};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until};

use crate::outbox::{Delivery, Outbox, PushKind};
use crate::routing_client::RoutingClient;

/// A connection's id, unique within one edge process (what presence
/// reports name it by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How long a publication that arrived early waits for the ones before it
/// before the gap is filled from history.
const GAP_WAIT: Duration = Duration::from_millis(100);
/// Publications held while waiting for a gap; past this the gap is filled
/// (or skipped) at once.
const MAX_PENDING: usize = 10_000;
/// Publications fetched per gap-fill request.
const GAP_FILL_LIMIT: usize = 1000;

/// Where a channel's stream stands at this edge.
type Position = Option<StreamPosition>;

/// Shards of the channel map: subscribes and unsubscribes on different
/// channels rarely meet on one lock.
const SHARDS: usize = 64;

/// The local subscribers of one channel. Deliveries take a snapshot (one
/// `Arc` clone under the lock) and push to it with no lock held; a change
/// copies the list only while a delivery is still using the old one.
#[derive(Default)]
struct Subscribers {
    list: Arc<Vec<(ConnId, Outbox)>>,
    index: HashMap<ConnId, usize>,
}

impl Subscribers {
    fn insert(&mut self, conn: ConnId, outbox: Outbox) {
        let list = Arc::make_mut(&mut self.list);
        match self.index.get(&conn) {
            Some(&at) => list[at].1 = outbox,
            None => {
                self.index.insert(conn, list.len());
                list.push((conn, outbox));
            }
        }
    }

    fn remove(&mut self, conn: ConnId) {
        let Some(at) = self.index.remove(&conn) else {
            return;
        };
        let list = Arc::make_mut(&mut self.list);
        list.swap_remove(at);
        if let Some((moved, _)) = list.get(at) {
            self.index.insert(*moved, at);
        }
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

struct State {
    /// The last publication delivered to local subscribers; `None` while
    /// unknown (history was unreachable when the channel was opened).
    last: Position,
    subscribers: Subscribers,
}

#[derive(Clone)]
enum Readiness {
    Opening,
    Open,
    Failed(ErrorBody),
}

struct Fanout {
    state: Mutex<State>,
    ready: watch::Sender<Readiness>,
    task: Mutex<Option<AbortHandle>>,
}

impl Fanout {
    fn new() -> Arc<Self> {
        let (ready, _) = watch::channel(Readiness::Opening);
        Arc::new(Fanout {
            state: Mutex::new(State {
                last: None,
                subscribers: Subscribers::default(),
            }),
            ready,
            task: Mutex::new(None),
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Advances the position and pushes to every local subscriber. The lock
    /// covers only the position and the snapshot: a joiner that comes in
    /// after it learns this delivery's offset (and reads it from history),
    /// one that came before is in the snapshot.
    fn deliver(&self, delivery: Delivery) {
        let delivery = Arc::new(delivery);
        let targets = {
            let mut state = self.lock();
            if let Some(position) = &delivery.position {
                state.last = Some(position.clone());
            }
            state.subscribers.list.clone()
        };
        for (_, outbox) in targets.iter() {
            outbox.push(delivery.clone());
        }
    }

    fn abort(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

type Shard = Mutex<HashMap<Channel, Arc<Fanout>>>;

/// The edge's channels: for each, one bus subscription and the local
/// subscribers it fans out to, in offset order.
pub struct Hub {
    inner: Arc<Inner>,
}

/// What the hub and the tasks that open its channels share.
struct Inner {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    routing: RoutingClient,
    shards: Box<[Shard]>,
    hasher: std::hash::RandomState,
}

impl Inner {
    fn shard(
        &self,
        channel: &Channel,
    ) -> parking_lot::MutexGuard<'_, HashMap<Channel, Arc<Fanout>>> {
        let at = self.hasher.hash_one(channel) as usize % self.shards.len();
        self.shards[at].lock()
    }

    /// Forgets `fanout` if it is still the channel's, and stops it.
    fn close(&self, channel: &Channel, fanout: &Arc<Fanout>) {
        let mut shard = self.shard(channel);
        if shard.get(channel).is_some_and(|f| Arc::ptr_eq(f, fanout)) {
            shard.remove(channel);
            fanout.abort();
        }
    }
}

impl Hub {
    /// A hub with no channel; gaps are filled through `routing`.
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, routing: RoutingClient) -> Self {
        Hub {
            inner: Arc::new(Inner {
                bus,
                subjects,
                routing,
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                hasher: std::hash::RandomState::new(),
            }),
        }
    }

    /// Adds a local subscriber. Answers the channel's position at the moment
    /// it was added (`None` if history could not be asked): every later
    /// publication goes to `outbox`, in order.
    pub async fn subscribe(
        &self,
        channel: &Channel,
        conn: ConnId,
        outbox: Outbox,
    ) -> Result<Option<StreamPosition>, ErrorBody> {
        loop {
            let fanout = {
                let mut shard = self.inner.shard(channel);
                match shard.get(channel) {
                    Some(f) => f.clone(),
                    None => {
                        let f = Fanout::new();
                        shard.insert(channel.clone(), f.clone());
                        // Its own task: a subscriber that gives up waiting
                        // (its client left) never abandons an opening.
                        tokio::spawn(open(self.inner.clone(), channel.clone(), f.clone()));
                        f
                    }
                }
            };
            let mut ready = fanout.ready.subscribe();
            let readiness = ready
                .wait_for(|r| !matches!(r, Readiness::Opening))
                .await
                .map(|r| r.clone())
                .unwrap_or(Readiness::Failed(ErrorBody::new(
                    ErrorCode::Internal,
                    "channel closed while opening",
                )));
            if let Readiness::Failed(e) = readiness {
                return Err(e);
            }
            let shard = self.inner.shard(channel);
            // The fanout may have been closed by its last subscriber leaving
            // while we waited; then open it again.
            if !shard.get(channel).is_some_and(|f| Arc::ptr_eq(f, &fanout)) {
                continue;
            }
            let mut state = fanout.lock();
            state.subscribers.insert(conn, outbox);
            return Ok(state.last.clone());
        }
    }

    /// Removes a local subscriber; the last one closes the channel here
    /// (once it is open: an opening closes itself when nobody waits).
    pub fn unsubscribe(&self, channel: &Channel, conn: ConnId) {
        let mut shard = self.inner.shard(channel);
        let Some(fanout) = shard.get(channel) else {
            return;
        };
        let now_empty = {
            let mut state = fanout.lock();
            state.subscribers.remove(conn);
            state.subscribers.is_empty()
        };
        let open = matches!(*fanout.ready.borrow(), Readiness::Open);
        if now_empty
            && open
            && let Some(fanout) = shard.remove(channel)
        {
            // Aborting drops the bus subscription, which unsubscribes.
            fanout.abort();
        }
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Subscribes on the bus, then learns the channel's position, then starts
/// delivering. Subscribing first means nothing published in between is
/// missed. A failed opening is forgotten at once, so the next subscriber
/// tries again.
async fn open(hub: Arc<Inner>, channel: Channel, fanout: Arc<Fanout>) {
    let subscription = match hub.bus.subscribe(&hub.subjects.live(&channel)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(channel = %channel, error = %e, "bus subscribe failed");
            hub.close(&channel, &fanout);
            fanout.ready.send_replace(Readiness::Failed(ErrorBody::new(
                ErrorCode::Internal,
                "temporarily unavailable",
            )));
            return;
        }
    };
    let query = HistoryQuery::position_of(&channel);
    match hub.routing.history(&query).await {
        Ok(recovery) => {
            fanout.lock().last = Some(recovery.latest().clone());
        }
        Err(e) => {
            // Live delivery still works; the position is learned from the
            // first publication.
            tracing::warn!(channel = %channel, error = %e.message, "channel position unknown");
        }
    }
    let task = tokio::spawn(run_fanout(
        channel.clone(),
        fanout.clone(),
        subscription,
        hub.routing.clone(),
    ));
    *fanout.task.lock() = Some(task.abort_handle());
    // Everyone who wanted it may have left while it opened (the last
    // unsubscribe leaves an opening alone): then it closes here. Under the
    // shard's lock, so nobody joins in between.
    let mut shard = hub.shard(&channel);
    fanout.ready.send_replace(Readiness::Open);
    let abandoned = fanout.ready.receiver_count() == 0 && fanout.lock().subscribers.is_empty();
    if abandoned && shard.get(&channel).is_some_and(|f| Arc::ptr_eq(f, &fanout)) {
        shard.remove(&channel);
        fanout.abort();
    }
}

/// Turns a live bus message into a delivery: publications carry offset and
/// epoch headers; other pushes name their kind.
fn delivery_of(channel: &Channel, message: Message) -> Option<Delivery> {
    let frame = match Utf8Bytes::try_from(message.payload) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(channel = %channel, error = %e, "non-UTF-8 live message dropped");
            return None;
        }
    };
    let offset = message
        .headers
        .get(HEADER_OFFSET)
        .and_then(|o| o.parse::<u64>().ok());
    let (kind, position) = match offset {
        Some(offset) => {
            let epoch = message.headers.get(HEADER_EPOCH).unwrap_or_default();
            (PushKind::Pub, Some(StreamPosition::new(offset, epoch)))
        }
        None => {
            let kind = message
                .headers
                .get(HEADER_KIND)
                .and_then(PushKind::from_name)?;
            (kind, None)
        }
    };
    let published = message
        .headers
        .get(HEADER_TS)
        .and_then(|ts| ts.parse::<u64>().ok());
    Some(Delivery::new(frame, kind, channel.clone(), position).published_at(published))
}

/// A stored publication (from history) as a delivery, encoded once.
pub(crate) fn delivery_of_publication(publication: &Publication) -> Delivery {
    Delivery::new(
        Utf8Bytes::from(encode(&Push::Pub(publication.clone()))),
        PushKind::Pub,
        publication.channel.clone(),
        Some(StreamPosition {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
        }),
    )
}

/// Publications that arrived ahead of a gap, by offset.
#[derive(Default)]
struct Pending {
    epoch: Option<Epoch>,
    waiting: BTreeMap<u64, Delivery>,
    since: Option<Instant>,
}

async fn run_fanout(
    channel: Channel,
    fanout: Arc<Fanout>,
    mut subscription: Subscription,
    routing: RoutingClient,
) {
    let mut pending = Pending::default();
    loop {
        let gap_deadline = pending.since.map(|since| since + GAP_WAIT);
        let must_fill = pending.waiting.len() >= MAX_PENDING;
        tokio::select! {
            message = subscription.next(), if !must_fill => {
                let Some(message) = message else { break };
                // a traced publication (routing exports traces) gets a span
                // here; untraced ones cost nothing extra
                let span = propagation::carries_context(&message.headers).then(|| {
                    let span = tracing::info_span!("deliver", channel = %channel);
                    propagation::continue_trace(&span, &message.headers);
                    span
                });
                let _entered = span.as_ref().map(tracing::Span::enter);
                let Some(delivery) = delivery_of(&channel, message) else { continue };
                accept(&fanout, &mut pending, delivery);
            }
            _ = sleep_until(gap_deadline.unwrap_or_else(Instant::now)), if gap_deadline.is_some() || must_fill => {
                fill_gap(&channel, &fanout, &mut pending, &routing).await;
            }
        }
    }
}

/// Delivers `delivery` now if it is next (or ephemeral), holds it if it is
/// early, drops it if it was already delivered.
fn accept(fanout: &Fanout, pending: &mut Pending, delivery: Delivery) {
    let Some(StreamPosition { offset, epoch }) = delivery.position.clone() else {
        fanout.deliver(delivery);
        return;
    };
    let last = fanout.lock().last.clone();
    let next = match last {
        // Position unknown: the first publication seen sets it.
        None => offset,
        Some(StreamPosition {
            epoch: current,
            offset: last,
        }) if current == epoch => {
            if offset <= last {
                return; // already delivered (gap fill won the race)
            }
            last + 1
        }
        // A new epoch: history was reset; its stream starts at 1.
        Some(_) => {
            if pending.epoch.as_ref() != Some(&epoch) {
                pending.waiting.clear();
                pending.epoch = Some(epoch.clone());
            }
            if offset != 1 {
                pending.waiting.insert(offset, delivery);
                pending.since.get_or_insert_with(Instant::now);
                return;
            }
            1
        }
    };
    if offset == next {
        fanout.deliver(delivery);
        release(fanout, pending);
    } else {
        pending.epoch = Some(epoch);
        pending.waiting.insert(offset, delivery);
        pending.since.get_or_insert_with(Instant::now);
    }
}

/// Delivers the waiting publications that now follow on.
fn release(fanout: &Fanout, pending: &mut Pending) {
    loop {
        let Some(StreamPosition {
            epoch,
            offset: last,
        }) = fanout.lock().last.clone()
        else {
            return;
        };
        if pending.epoch.as_ref().is_some_and(|e| *e != epoch) {
            return;
        }
        match pending.waiting.first_key_value() {
            Some((&offset, _)) if offset <= last => {
                pending.waiting.pop_first();
            }
            Some((&offset, _)) if offset == last + 1 => {
                if let Some((_, d)) = pending.waiting.pop_first() {
                    fanout.deliver(d);
                }
            }
            _ => break,
        }
    }
    if pending.waiting.is_empty() {
        pending.since = None;
        pending.epoch = None;
    }
}

/// Fills the gap before the waiting publications from history. If history
/// cannot fill it (lost, or unreachable for too long), the gap is skipped so
/// delivery goes on; clients see the jump in offsets and can resubscribe.
async fn fill_gap(
    channel: &Channel,
    fanout: &Fanout,
    pending: &mut Pending,
    routing: &RoutingClient,
) {
    let last = fanout.lock().last.clone();
    let from = match (&pending.epoch, last) {
        (Some(pe), Some(last)) if *pe == last.epoch => last,
        // A new epoch (or an unknown position): from the epoch's start.
        (Some(pe), _) => StreamPosition::new(0, pe.clone()),
        (None, Some(last)) => last,
        (None, None) => {
            skip_gap(fanout, pending);
            return;
        }
    };
    let epoch = from.epoch.clone();
    let query = HistoryQuery {
        channel: channel.clone(),
        since: Some(from),
        limit: GAP_FILL_LIMIT,
    };
    match routing.history(&query).await {
        Ok(Recovery::Recovered { publications, .. }) => {
            {
                let mut state = fanout.lock();
                if state.last.as_ref().map(|l| &l.epoch) != Some(&epoch) {
                    state.last = Some(StreamPosition::new(0, epoch.clone()));
                }
            }
            let until = pending.waiting.keys().next().copied().unwrap_or(u64::MAX);
            for publication in publications.iter().filter(|p| p.offset < until) {
                let last = fanout.lock().last.as_ref().map_or(0, |l| l.offset);
                if publication.offset == last + 1 {
                    fanout.deliver(delivery_of_publication(publication));
                }
            }
            release(fanout, pending);
            if !pending.waiting.is_empty() {
                // history did not have it either: move on
                skip_gap(fanout, pending);
            }
        }
        Ok(Recovery::Unrecoverable { .. }) => skip_gap(fanout, pending),
        Err(e) => {
            tracing::warn!(channel = %channel, error = %e.message, "gap fill failed; retrying");
            if pending.waiting.len() >= MAX_PENDING {
                skip_gap(fanout, pending);
            } else {
                pending.since = Some(Instant::now());
            }
        }
    }
}

/// Gives up on a gap: delivers what waits, in order, from the first.
fn skip_gap(fanout: &Fanout, pending: &mut Pending) {
    let waiting = std::mem::take(&mut pending.waiting);
    if let Some(first) = waiting.keys().next() {
        tracing::warn!(
            first,
            "gap in a channel's stream could not be filled; skipped"
        );
    }
    for (_, delivery) in waiting {
        fanout.deliver(delivery);
    }
    pending.since = None;
    pending.epoch = None;
}
