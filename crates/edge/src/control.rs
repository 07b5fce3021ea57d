//! Who is connected to this edge, and the control messages that act on
//! them (`<p>.ctl.disconnect`). In standalone the edge sees every
//! connection, so it also answers routing's presence lookups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use herald_core::bus::BusError;
use herald_core::presence::{PresenceError, PresenceLookup};
use herald_core::shutdown::Shutdown;
use herald_protocol::route::DisconnectUser;
use herald_protocol::{CloseCode, ErrorBody, ErrorCode};
use tokio::task::JoinHandle;

use crate::Edge;
use crate::connection::handle::Handle;
use crate::hub::ConnId;

type UserMap = HashMap<String, HashMap<ConnId, Handle>>;

/// Connected users → their connections → the handle that closes each.
#[derive(Default)]
pub(crate) struct Users {
    inner: Mutex<UserMap>,
}

impl Users {
    fn lock(&self) -> parking_lot::MutexGuard<'_, UserMap> {
        self.inner.lock()
    }

    /// Registers a connection of `user`, unless the user already has
    /// `max` here (then the error to answer, 106). At the limit, a
    /// long-poll session between polls gives way: its client is not
    /// waiting, and resumes from its cursor if it comes back.
    pub(crate) fn add(
        &self,
        user: &str,
        conn: ConnId,
        handle: Handle,
        max: usize,
    ) -> Result<(), ErrorBody> {
        let mut users = self.lock();
        let conns = users.entry(user.to_owned()).or_default();
        if conns.len() >= max {
            let idle = conns.iter().find(|(_, h)| h.is_idle()).map(|(id, _)| *id);
            match idle.and_then(|id| conns.remove(&id)) {
                Some(evicted) => evicted.close(CloseCode::Shutdown),
                None => {
                    return Err(ErrorBody::new(
                        ErrorCode::LimitExceeded,
                        format!("at most {max} connections per user"),
                    ));
                }
            }
        }
        conns.insert(conn, handle);
        Ok(())
    }

    pub(crate) fn remove(&self, user: &str, conn: ConnId) {
        let mut users = self.lock();
        if let Some(conns) = users.get_mut(user) {
            conns.remove(&conn);
            if conns.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Closes every connection of `user`; returns how many.
    pub(crate) fn kick(&self, user: &str) -> usize {
        let users = self.lock();
        let Some(conns) = users.get(user) else {
            return 0;
        };
        for handle in conns.values() {
            handle.close(CloseCode::Forbidden);
        }
        conns.len()
    }

    /// Users with a connection here.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn online<'a>(
        &self,
        candidates: impl Iterator<Item = &'a String>,
    ) -> HashSet<String> {
        let users = self.lock();
        candidates
            .filter(|u| users.contains_key(u.as_str()))
            .cloned()
            .collect()
    }
}

impl Edge {
    /// Listens for control messages until `shutdown`; subscribed when this
    /// returns.
    pub async fn listen_to_control(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Result<JoinHandle<()>, BusError> {
        let mut disconnects = self.bus.subscribe(&self.subjects.ctl_disconnect()).await?;
        self.bus.flush().await?;
        let edge = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = shutdown.wait() => break,
                    m = disconnects.next() => m,
                };
                let Some(message) = message else { break };
                match serde_json::from_slice::<DisconnectUser>(&message.payload) {
                    Ok(d) => {
                        let closed = edge.users.kick(&d.user);
                        tracing::info!(user = %d.user, connections = closed, "disconnect requested");
                    }
                    Err(e) => tracing::warn!(error = %e, "bad disconnect message"),
                }
            }
        }))
    }
}

/// The edge sees all of standalone's connections, so it can say who is
/// online without a presence service.
#[async_trait]
impl PresenceLookup for Edge {
    async fn online(&self, users: &[String]) -> Result<HashSet<String>, PresenceError> {
        Ok(self.users.online(users.iter()))
    }
}
