//! The whole view of who is online: per edge, the connections it reported;
//! aggregated, per user and per channel. Every replica holds all of it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use herald_core::time::unix_millis;
use herald_protocol::UserId;
use herald_protocol::channel::Channel;
use herald_protocol::presence::{
    Change, ConnectionState, Transport, digest_of_connection, digest_of_subscription,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Events buffered for `Watch` streams; a watcher further behind loses the
/// oldest (and is told so by the stream ending).
const EVENT_BUFFER: usize = 16_384;
/// Users whose last-seen time is remembered at most.
const MAX_LAST_SEEN: usize = 1_000_000;

/// What a [`PresenceEvent`] says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The user's first connection anywhere opened.
    Online,
    /// The user's last connection closed and the grace period passed.
    Offline,
    /// The user's first connection to the channel subscribed.
    Join,
    /// The user's last connection to the channel left it.
    Leave,
}

/// A change in who is online or in a channel, as `Watch` streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// What happened.
    pub kind: EventKind,
    /// To whom.
    pub user: UserId,
    /// The channel, for `Join` and `Leave`.
    pub channel: Option<Channel>,
    /// When this replica saw it, Unix milliseconds.
    pub ts_ms: u64,
    /// Raised while an edge's state was being replaced by its snapshot:
    /// the view is rebuilt, and what looks like a change may be none.
    pub resync: bool,
}

struct ConnView {
    user: UserId,
    transport: Transport,
    channels: Vec<Channel>,
}

/// What one edge has told this replica.
pub(crate) struct EdgeView {
    pub incarnation: u64,
    pub seq: u64,
    pub digest: u64,
    conns: HashMap<u64, ConnView>,
    pub last_heard: Instant,
}

#[derive(Default)]
struct UserEntry {
    conns: u32,
    by_transport: [u32; 3],
    /// Set when the last connection went: the user is offline once the
    /// grace period has passed (unless they come back first).
    gone_at: Option<(Instant, u64)>,
}

fn slot(t: Transport) -> usize {
    match t {
        Transport::Ws => 0,
        Transport::Sse => 1,
        Transport::Poll => 2,
    }
}

const TRANSPORTS: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

#[derive(Default)]
pub(crate) struct Inner {
    pub edges: HashMap<String, EdgeView>,
    users: HashMap<UserId, UserEntry>,
    channels: HashMap<Channel, HashMap<UserId, u32>>,
    last_seen: HashMap<UserId, u64>,
    connections: u64,
}

/// One replica's whole view, shared by the intake and every query.
pub struct PresenceState {
    inner: RwLock<Inner>,
    events: broadcast::Sender<PresenceEvent>,
    grace: Duration,
    /// Set (under the write lock) while a snapshot replaces an edge's state.
    resyncing: std::sync::atomic::AtomicBool,
}

/// What `IsOnline` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPresence {
    /// Whether the user counts as online (in the grace period too).
    pub online: bool,
    /// Connections open now, on every edge.
    pub connections: u32,
    /// How they are connected (`ws`, `sse`, `poll`), each named once.
    pub transports: Vec<&'static str>,
}

/// What `Stats` answers: the size of the whole view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Users online (in the grace period too).
    pub users: u64,
    /// Connections open, on every edge.
    pub connections: u64,
    /// Channels with at least one member.
    pub channels: u64,
}

impl PresenceState {
    /// `grace`: how long a user whose last connection closed still counts
    /// as online (a quick reconnect is not an offline moment).
    pub fn new(grace: Duration) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(PresenceState {
            inner: RwLock::new(Inner::default()),
            events,
            grace,
            resyncing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn write(&self) -> parking_lot::RwLockWriteGuard<'_, Inner> {
        self.inner.write()
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Inner> {
        self.inner.read()
    }

    /// Every event from now on; a receiver that lags too far loses the
    /// oldest.
    pub fn subscribe_events(&self) -> broadcast::Receiver<PresenceEvent> {
        self.events.subscribe()
    }

    fn emit(&self, kind: EventKind, user: &UserId, channel: Option<&Channel>) {
        // Nobody watching is fine.
        let _ = self.events.send(PresenceEvent {
            kind,
            user: user.clone(),
            channel: channel.cloned(),
            ts_ms: unix_millis(),
            resync: self.resyncing.load(std::sync::atomic::Ordering::Relaxed),
        });
    }

    // ------------------------------------------------------------ queries

    /// Whether `user` is online, and how.
    pub fn user(&self, user: &str) -> UserPresence {
        let inner = self.read();
        match inner.users.get(user) {
            Some(u) => UserPresence {
                online: true,
                connections: u.conns,
                transports: TRANSPORTS
                    .iter()
                    .filter(|t| u.by_transport[slot(**t)] > 0)
                    .map(|t| t.name())
                    .collect(),
            },
            None => UserPresence::default(),
        }
    }

    /// The subset of `users` that is online.
    pub fn online<'a>(&self, users: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let inner = self.read();
        users
            .into_iter()
            .filter(|u| inner.users.contains_key(*u))
            .map(str::to_owned)
            .collect()
    }

    /// Users in `channel` and their connection counts.
    pub fn channel(&self, channel: &Channel) -> Vec<(String, u32)> {
        let inner = self.read();
        let mut members: Vec<(String, u32)> = inner
            .channels
            .get(channel)
            .map(|m| m.iter().map(|(u, c)| (u.to_string(), *c)).collect())
            .unwrap_or_default();
        members.sort();
        members
    }

    /// (online, last seen in ms since the epoch; now when online).
    pub fn last_seen(&self, user: &str) -> (bool, u64) {
        let inner = self.read();
        if inner.users.contains_key(user) {
            return (true, unix_millis());
        }
        (false, inner.last_seen.get(user).copied().unwrap_or(0))
    }

    /// How big the view is now.
    pub fn stats(&self) -> Stats {
        let inner = self.read();
        Stats {
            users: inner.users.len() as u64,
            connections: inner.connections,
            channels: inner.channels.len() as u64,
        }
    }

    // ------------------------------------------------------------ changes

    /// Applies changes from `edge` numbered from `first_seq`; false if they
    /// do not follow on from what this replica has (then it must resync).
    pub(crate) fn apply(
        &self,
        edge: &str,
        incarnation: u64,
        first_seq: u64,
        changes: &[Change],
    ) -> bool {
        let mut inner = self.write();
        let Some(view) = inner.edges.get(edge) else {
            return false;
        };
        if view.incarnation != incarnation || first_seq > view.seq + 1 {
            return false;
        }
        let skip = (view.seq + 1 - first_seq) as usize;
        for change in changes.iter().skip(skip) {
            self.apply_one(&mut inner, edge, change);
        }
        if let Some(view) = inner.edges.get_mut(edge) {
            view.seq = view.seq.max(first_seq + changes.len() as u64 - 1);
            view.last_heard = Instant::now();
        }
        true
    }

    fn apply_one(&self, inner: &mut Inner, edge: &str, change: &Change) {
        match change {
            Change::Connect {
                conn,
                user,
                transport,
            } => self.connect(inner, edge, *conn, user, *transport),
            Change::Disconnect { conn } => self.disconnect(inner, edge, *conn),
            Change::Subscribe { conn, channel } => self.join(inner, edge, *conn, channel),
            Change::Unsubscribe { conn, channel } => self.leave(inner, edge, *conn, channel),
        }
    }

    fn connect(
        &self,
        inner: &mut Inner,
        edge: &str,
        conn: u64,
        user: &UserId,
        transport: Transport,
    ) {
        // Share one allocation per user name.
        let user: UserId = match inner.users.get_key_value(user.as_str()) {
            Some((name, _)) => name.clone(),
            None => user.clone(),
        };
        let Some(view) = inner.edges.get_mut(edge) else {
            return;
        };
        if view.conns.contains_key(&conn) {
            return;
        }
        view.digest ^= digest_of_connection(conn, &user, transport);
        view.conns.insert(
            conn,
            ConnView {
                user: user.clone(),
                transport,
                channels: Vec::new(),
            },
        );
        inner.connections += 1;
        let entry = inner.users.entry(user.clone()).or_default();
        let came_online = entry.conns == 0 && entry.gone_at.is_none();
        entry.conns += 1;
        entry.by_transport[slot(transport)] += 1;
        entry.gone_at = None;
        if came_online {
            self.emit(EventKind::Online, &user, None);
        }
    }

    fn disconnect(&self, inner: &mut Inner, edge: &str, conn: u64) {
        let Some(view) = inner.edges.get_mut(edge) else {
            return;
        };
        let Some(c) = view.conns.remove(&conn) else {
            return;
        };
        view.digest ^= digest_of_connection(conn, &c.user, c.transport);
        for channel in &c.channels {
            view.digest ^= digest_of_subscription(conn, channel);
        }
        for channel in &c.channels {
            self.channel_left(inner, channel, &c.user);
        }
        inner.connections = inner.connections.saturating_sub(1);
        if let Some(entry) = inner.users.get_mut(&c.user) {
            entry.conns = entry.conns.saturating_sub(1);
            entry.by_transport[slot(c.transport)] =
                entry.by_transport[slot(c.transport)].saturating_sub(1);
            if entry.conns == 0 {
                entry.gone_at = Some((Instant::now(), unix_millis()));
            }
        }
    }

    fn join(&self, inner: &mut Inner, edge: &str, conn: u64, channel: &Channel) {
        let Some(view) = inner.edges.get_mut(edge) else {
            return;
        };
        let Some(c) = view.conns.get_mut(&conn) else {
            return;
        };
        if c.channels.contains(channel) {
            return;
        }
        c.channels.push(channel.clone());
        view.digest ^= digest_of_subscription(conn, channel);
        let user = c.user.clone();
        let members = inner.channels.entry(channel.clone()).or_default();
        let count = members.entry(user.clone()).or_default();
        *count += 1;
        if *count == 1 {
            self.emit(EventKind::Join, &user, Some(channel));
        }
    }

    fn leave(&self, inner: &mut Inner, edge: &str, conn: u64, channel: &Channel) {
        let Some(view) = inner.edges.get_mut(edge) else {
            return;
        };
        let Some(c) = view.conns.get_mut(&conn) else {
            return;
        };
        let Some(at) = c.channels.iter().position(|ch| ch == channel) else {
            return;
        };
        c.channels.swap_remove(at);
        view.digest ^= digest_of_subscription(conn, channel);
        let user = c.user.clone();
        self.channel_left(inner, channel, &user);
    }

    fn channel_left(&self, inner: &mut Inner, channel: &Channel, user: &UserId) {
        let Some(members) = inner.channels.get_mut(channel) else {
            return;
        };
        let Some(count) = members.get_mut(user) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            members.remove(user);
            if members.is_empty() {
                inner.channels.remove(channel);
            }
            self.emit(EventKind::Leave, user, Some(channel));
        }
    }

    /// Replaces what is known of `edge` with its snapshot.
    pub fn replace_edge(
        &self,
        edge: &str,
        incarnation: u64,
        seq: u64,
        connections: &[ConnectionState],
    ) {
        let mut inner = self.write();
        self.resyncing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.drop_edge_locked(&mut inner, edge);
        inner.edges.insert(
            edge.to_owned(),
            EdgeView {
                incarnation,
                seq,
                digest: 0,
                conns: HashMap::new(),
                last_heard: Instant::now(),
            },
        );
        for c in connections {
            self.connect(&mut inner, edge, c.conn, &c.user, c.transport);
            for channel in &c.channels {
                self.join(&mut inner, edge, c.conn, channel);
            }
        }
        self.resyncing
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets an edge (it died or restarted): its users go offline unless
    /// connected elsewhere.
    pub(crate) fn drop_edge(&self, edge: &str) {
        let mut inner = self.write();
        self.drop_edge_locked(&mut inner, edge);
    }

    fn drop_edge_locked(&self, inner: &mut Inner, edge: &str) {
        let conns: Vec<u64> = match inner.edges.get(edge) {
            Some(view) => view.conns.keys().copied().collect(),
            None => return,
        };
        for conn in conns {
            self.disconnect(inner, edge, conn);
        }
        inner.edges.remove(edge);
    }

    /// Users whose grace period has ended go offline now.
    pub(crate) fn settle(&self) {
        let now = Instant::now();
        let mut inner = self.write();
        let gone: Vec<(UserId, u64)> = inner
            .users
            .iter()
            .filter_map(|(user, e)| match e.gone_at {
                Some((at, ms)) if e.conns == 0 && now.duration_since(at) >= self.grace => {
                    Some((user.clone(), ms))
                }
                _ => None,
            })
            .collect();
        for (user, ms) in gone {
            inner.users.remove(&user);
            if inner.last_seen.len() >= MAX_LAST_SEEN {
                inner.last_seen.clear();
            }
            inner.last_seen.insert(user.clone(), ms);
            self.emit(EventKind::Offline, &user, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Channel {
        Channel::new(s).unwrap()
    }

    fn connect(conn: u64, user: &str) -> Change {
        Change::Connect {
            conn,
            user: UserId::parse(user).unwrap(),
            transport: Transport::Ws,
        }
    }

    #[tokio::test]
    async fn users_stay_online_until_their_last_connection_goes() {
        let state = PresenceState::new(Duration::ZERO);
        let mut events = state.subscribe_events();
        state.replace_edge("e1", 1, 0, &[]);
        state.replace_edge("e2", 1, 0, &[]);
        assert!(state.apply(
            "e1",
            1,
            1,
            &[
                connect(1, "alice"),
                Change::Subscribe {
                    conn: 1,
                    channel: ch("room")
                }
            ]
        ));
        assert!(state.apply("e2", 1, 1, &[connect(7, "alice")]));
        assert_eq!(state.user("alice").connections, 2);
        assert_eq!(state.channel(&ch("room")), vec![("alice".to_owned(), 1)]);

        assert!(state.apply("e1", 1, 3, &[Change::Disconnect { conn: 1 }]));
        state.settle();
        assert!(state.user("alice").online, "still on e2");
        assert!(state.channel(&ch("room")).is_empty());

        state.drop_edge("e2"); // e2 died
        state.settle();
        assert!(!state.user("alice").online);
        assert!(state.last_seen("alice").1 > 0);
        let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::Online,
                EventKind::Join,
                EventKind::Leave,
                EventKind::Offline
            ]
        );
    }

    #[tokio::test]
    async fn gaps_and_other_incarnations_are_refused() {
        let state = PresenceState::new(Duration::ZERO);
        state.replace_edge("e1", 1, 5, &[]);
        assert!(
            !state.apply("e1", 1, 7, &[connect(1, "a")]),
            "seq 6 is missing"
        );
        assert!(
            !state.apply("e1", 2, 6, &[connect(1, "a")]),
            "another incarnation"
        );
        assert!(!state.apply("e9", 1, 1, &[connect(1, "a")]), "unknown edge");
        // already-applied changes are skipped
        assert!(state.apply(
            "e1",
            1,
            4,
            &[connect(1, "a"), connect(2, "b"), connect(3, "c")]
        ));
        assert_eq!(state.stats().connections, 1, "only seq 6 was new");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_reconnect_within_the_grace_is_not_offline() {
        let state = PresenceState::new(Duration::from_secs(2));
        let mut events = state.subscribe_events();
        state.replace_edge("e1", 1, 0, &[]);
        state.apply(
            "e1",
            1,
            1,
            &[connect(1, "bob"), Change::Disconnect { conn: 1 }],
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        state.settle();
        assert!(state.user("bob").online, "within the grace");
        state.apply("e1", 1, 3, &[connect(2, "bob")]);
        tokio::time::advance(Duration::from_secs(5)).await;
        state.settle();
        assert!(state.user("bob").online);
        let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, [EventKind::Online], "no offline/online flap");
    }
}
