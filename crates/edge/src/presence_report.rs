//! What this edge tells the presence service: every connect, disconnect,
//! subscribe and unsubscribe as numbered changes, a heartbeat with a digest
//! of the whole state, and a snapshot when a presence replica asks. It also
//! knows when a user's first connection joins a channel here (or the last
//! leaves), for join/leave pushes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError, Headers, respond};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_protocol::UserId;
use herald_protocol::channel::Channel;
use herald_protocol::presence::{
    Change, ConnectionState, Report, Transport, digest_of_connection, digest_of_subscription,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hub::ConnId;

/// Changes waiting to be published; beyond this they are dropped and the
/// replicas, seeing the gap, ask for a snapshot.
const QUEUE: usize = 65_536;
/// Changes per published batch at most.
const BATCH: usize = 1000;

enum Outgoing {
    Change(u64, Change),
    Heartbeat {
        seq: u64,
        digest: u64,
        connections: u64,
    },
}

#[derive(Default)]
struct State {
    seq: u64,
    digest: u64,
    conns: HashMap<ConnId, Conn>,
}

struct Conn {
    user: UserId,
    transport: Transport,
    channels: HashSet<Channel>,
}

pub(crate) struct PresenceReporter {
    edge: String,
    incarnation: u64,
    state: Mutex<State>,
    queue: mpsc::Sender<Outgoing>,
    receiver: Mutex<Option<mpsc::Receiver<Outgoing>>>,
}

impl PresenceReporter {
    pub(crate) fn new(edge: &str) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        PresenceReporter {
            edge: edge.to_owned(),
            // A restarted edge is a new incarnation: replicas drop what they
            // knew of the old one.
            incarnation: rand::random::<u64>() >> 1,
            state: Mutex::new(State::default()),
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    fn record(&self, state: &mut State, change: Change) {
        state.seq += 1;
        // A full queue drops the change; the gap makes replicas resync.
        let _ = self.queue.try_send(Outgoing::Change(state.seq, change));
    }

    pub(crate) fn connect(&self, conn: ConnId, user: &UserId, transport: Transport) {
        let mut state = self.lock();
        state.digest ^= digest_of_connection(conn.0, user, transport);
        state.conns.insert(
            conn,
            Conn {
                user: user.clone(),
                transport,
                channels: HashSet::new(),
            },
        );
        self.record(
            &mut state,
            Change::Connect {
                conn: conn.0,
                user: user.clone(),
                transport,
            },
        );
    }

    /// Connections reported and not yet disconnected.
    pub(crate) fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    pub(crate) fn disconnect(&self, conn: ConnId) {
        let mut state = self.lock();
        let Some(c) = state.conns.remove(&conn) else {
            return;
        };
        state.digest ^= digest_of_connection(conn.0, &c.user, c.transport);
        for channel in c.channels {
            state.digest ^= digest_of_subscription(conn.0, &channel);
        }
        self.record(&mut state, Change::Disconnect { conn: conn.0 });
    }

    pub(crate) fn subscribe(&self, conn: ConnId, channel: &Channel) {
        let mut state = self.lock();
        let Some(c) = state.conns.get_mut(&conn) else {
            return;
        };
        if !c.channels.insert(channel.clone()) {
            return;
        }
        state.digest ^= digest_of_subscription(conn.0, channel);
        self.record(
            &mut state,
            Change::Subscribe {
                conn: conn.0,
                channel: channel.clone(),
            },
        );
    }

    pub(crate) fn unsubscribe(&self, conn: ConnId, channel: &Channel) {
        let mut state = self.lock();
        let Some(c) = state.conns.get_mut(&conn) else {
            return;
        };
        if !c.channels.remove(channel) {
            return;
        }
        state.digest ^= digest_of_subscription(conn.0, channel);
        self.record(
            &mut state,
            Change::Unsubscribe {
                conn: conn.0,
                channel: channel.clone(),
            },
        );
    }

    /// Queues a heartbeat behind the changes already queued.
    pub(crate) fn heartbeat(&self) {
        let state = self.lock();
        let _ = self.queue.try_send(Outgoing::Heartbeat {
            seq: state.seq,
            digest: state.digest,
            connections: state.conns.len() as u64,
        });
    }

    pub(crate) fn snapshot(&self) -> Report {
        let state = self.lock();
        Report::Snapshot {
            edge: self.edge.clone(),
            incarnation: self.incarnation,
            seq: state.seq,
            connections: state
                .conns
                .iter()
                .map(|(conn, c)| ConnectionState {
                    conn: conn.0,
                    user: c.user.clone(),
                    transport: c.transport,
                    channels: c.channels.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    /// Publishes reports, heartbeats every `interval`, and answers snapshot
    /// and resync requests, until `shutdown`.
    pub(crate) async fn run(
        self: &Arc<Self>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        interval: Duration,
        shutdown: Shutdown,
    ) -> Result<JoinHandle<()>, BusError> {
        let mut snapshots = bus
            .subscribe(&subjects.presence_snapshot(&self.edge))
            .await?;
        let mut resyncs = bus.subscribe(&subjects.presence_resync()).await?;
        bus.flush().await?;
        let Some(mut queue) = self.receiver.lock().take() else {
            return Err(BusError::Connection(
                "presence reporter already running".into(),
            ));
        };
        let reporter = self.clone();
        let subject = subjects.presence(&self.edge);
        Ok(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = ticker.tick() => reporter.heartbeat(),
                    Some(_) = resyncs.next() => reporter.heartbeat(),
                    Some(request) = snapshots.next() => {
                        if let Ok(payload) = serde_json::to_vec(&reporter.snapshot()) {
                            let _ = respond(&*bus, &request, Bytes::from(payload)).await;
                        }
                    }
                    Some(first) = queue.recv() => {
                        let mut items = vec![first];
                        while items.len() < BATCH {
                            match queue.try_recv() {
                                Ok(item) => items.push(item),
                                Err(_) => break,
                            }
                        }
                        reporter.publish(&*bus, &subject, items).await;
                    }
                }
            }
        }))
    }

    /// Publishes queued items in order: runs of contiguous changes as one
    /// `Changes` report, heartbeats as they come.
    async fn publish(&self, bus: &dyn Bus, subject: &str, items: Vec<Outgoing>) {
        let mut run: Vec<Change> = Vec::new();
        let mut first_seq = 0;
        let mut reports = Vec::new();
        for item in items {
            match item {
                Outgoing::Change(seq, change) => {
                    if !run.is_empty() && seq != first_seq + run.len() as u64 {
                        reports.push(self.changes(first_seq, std::mem::take(&mut run)));
                    }
                    if run.is_empty() {
                        first_seq = seq;
                    }
                    run.push(change);
                }
                Outgoing::Heartbeat {
                    seq,
                    digest,
                    connections,
                } => {
                    if !run.is_empty() {
                        reports.push(self.changes(first_seq, std::mem::take(&mut run)));
                    }
                    reports.push(Report::Heartbeat {
                        edge: self.edge.clone(),
                        incarnation: self.incarnation,
                        seq,
                        digest,
                        connections,
                    });
                }
            }
        }
        if !run.is_empty() {
            reports.push(self.changes(first_seq, run));
        }
        for report in reports {
            match serde_json::to_vec(&report) {
                Ok(payload) => {
                    if let Err(e) = bus
                        .publish(subject, Headers::new(), Bytes::from(payload))
                        .await
                    {
                        tracing::warn!(error = %e, "presence report not sent");
                    }
                }
                Err(e) => tracing::error!(error = %e, "presence report not encoded"),
            }
        }
    }

    fn changes(&self, first_seq: u64, changes: Vec<Change>) -> Report {
        Report::Changes {
            edge: self.edge.clone(),
            incarnation: self.incarnation,
            first_seq,
            changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::presence::digest_of_snapshot;

    #[test]
    fn the_digest_follows_the_state_and_repeats_are_not_changes() {
        let r = PresenceReporter::new("e1");
        let room = Channel::new("room").unwrap();
        r.connect(ConnId(1), &UserId::parse("alice").unwrap(), Transport::Ws);
        r.connect(ConnId(2), &UserId::parse("alice").unwrap(), Transport::Sse);
        r.subscribe(ConnId(1), &room);
        r.subscribe(ConnId(1), &room); // already subscribed: no change
        r.subscribe(ConnId(2), &room);
        r.unsubscribe(ConnId(1), &room);
        r.unsubscribe(ConnId(1), &room); // not subscribed: no change
        r.disconnect(ConnId(2));
        let Report::Snapshot {
            seq, connections, ..
        } = r.snapshot()
        else {
            panic!()
        };
        assert_eq!(seq, 6);
        assert_eq!(r.lock().digest, digest_of_snapshot(&connections));
        assert_eq!(connections.len(), 1);
    }
}
