//! Takes in the edges' reports: applies changes, checks heartbeats against
//! what this replica holds, asks for a snapshot when they disagree, and
//! forgets edges that stop beating.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError, Headers};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_protocol::presence::Report;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::state::PresenceState;

/// How long a snapshot request may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often grace periods and dead edges are checked.
const TICK: Duration = Duration::from_millis(100);

/// What takes the edges' reports into a [`PresenceState`].
pub struct Intake {
    state: Arc<PresenceState>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    /// Edges silent for this long are dead.
    edge_timeout: Duration,
    /// Edges with a snapshot request under way.
    resyncing: Mutex<HashSet<String>>,
    /// Every edge answers the start-up resync within moments; until then
    /// (and the snapshots it asks for) the view is not filled.
    fill_until: Instant,
    filled: std::sync::atomic::AtomicBool,
}

/// How long edges have to answer the start-up request for a heartbeat.
const FILL_WINDOW: Duration = Duration::from_secs(1);

impl Intake {
    /// An intake filling `state` from `bus`; an edge silent for three
    /// `heartbeat`s is dropped.
    pub fn new(
        state: Arc<PresenceState>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        heartbeat: Duration,
    ) -> Arc<Self> {
        Arc::new(Intake {
            state,
            bus,
            subjects,
            edge_timeout: heartbeat * 3,
            resyncing: Mutex::new(HashSet::new()),
            fill_until: Instant::now() + FILL_WINDOW.min(heartbeat),
            filled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the view holds every edge's connections (readiness): the
    /// edges have had their moment to answer the start-up resync, and no
    /// snapshot asked for then is still on its way. Once filled it stays
    /// so — later resyncs repair a view that is already there.
    pub fn view_filled(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self.filled.load(Ordering::Acquire) {
            return Ok(());
        }
        if Instant::now() < self.fill_until {
            return Err("waiting for the edges' heartbeats".into());
        }
        let pending = self.resyncing.lock().len();
        if pending > 0 {
            return Err(format!("{pending} edge snapshots on their way"));
        }
        self.filled.store(true, Ordering::Release);
        Ok(())
    }

    /// Listens until `shutdown`. Subscribed (and every edge asked for a
    /// heartbeat, so the view fills within moments) when this returns.
    pub async fn start(self: &Arc<Self>, shutdown: Shutdown) -> Result<JoinHandle<()>, BusError> {
        let mut reports = self.bus.subscribe(&self.subjects.presence_all()).await?;
        self.bus.flush().await?;
        self.bus
            .publish(
                &self.subjects.presence_resync(),
                Headers::new(),
                Bytes::new(),
            )
            .await?;
        let intake = self.clone();
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tick.tick() => {
                        intake.state.settle();
                        intake.reap();
                    }
                    message = reports.next() => {
                        let Some(message) = message else { break };
                        match serde_json::from_slice::<Report>(&message.payload) {
                            Ok(report) => intake.take(report),
                            Err(e) => tracing::warn!(error = %e, "unreadable presence report"),
                        }
                    }
                }
            }
        }))
    }

    fn take(self: &Arc<Self>, report: Report) {
        match report {
            Report::Changes {
                edge,
                incarnation,
                first_seq,
                changes,
            } => {
                if !self.state.apply(&edge, incarnation, first_seq, &changes) {
                    self.resync(edge);
                }
            }
            Report::Heartbeat {
                edge,
                incarnation,
                seq,
                digest,
                ..
            } => {
                let agrees = {
                    let mut inner = self.state.write();
                    match inner.edges.get_mut(&edge) {
                        Some(view) => {
                            view.last_heard = Instant::now();
                            view.incarnation == incarnation
                                && view.seq == seq
                                && view.digest == digest
                        }
                        None => false,
                    }
                };
                if !agrees {
                    self.resync(edge);
                }
            }
            Report::Snapshot {
                edge,
                incarnation,
                seq,
                connections,
            } => self
                .state
                .replace_edge(&edge, incarnation, seq, &connections),
        }
    }

    /// Asks `edge` for its whole state (once at a time per edge).
    fn resync(self: &Arc<Self>, edge: String) {
        if !self.resyncing.lock().insert(edge.clone()) {
            return;
        }
        let intake = self.clone();
        tokio::spawn(async move {
            let subject = intake.subjects.presence_snapshot(&edge);
            match intake
                .bus
                .request(&subject, Headers::new(), Bytes::new(), SNAPSHOT_TIMEOUT)
                .await
            {
                Ok(reply) => match serde_json::from_slice::<Report>(&reply.payload) {
                    Ok(report @ Report::Snapshot { .. }) => intake.take(report),
                    Ok(_) | Err(_) => tracing::warn!(edge, "bad snapshot"),
                },
                Err(e) => tracing::warn!(edge, error = %e, "snapshot request failed"),
            }
            intake.resyncing.lock().remove(&edge);
        });
    }

    /// Drops edges that stopped beating: their users go offline.
    fn reap(&self) {
        let dead: Vec<String> = {
            let inner = self.state.write();
            inner
                .edges
                .iter()
                .filter(|(_, view)| view.last_heard.elapsed() > self.edge_timeout)
                .map(|(edge, _)| edge.clone())
                .collect()
        };
        for edge in dead {
            tracing::warn!(
                edge,
                "edge silent for three heartbeats; its users are offline"
            );
            self.state.drop_edge(&edge);
        }
    }
}
