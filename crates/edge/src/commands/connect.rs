//! `connect`: authenticate with a token. A refused token closes the
//! connection (4501, or 4509 when it has expired) after the error reply;
//! a user at the per-user limit gets 106 and 4503. Every connection of a
//! user is subscribed to the user's personal channel, so `SendToUser`
//! reaches all of them — resumed from `personal_since` when given.

use herald_core::auth::TokenError;
use herald_protocol::channel::Channel;
use herald_protocol::{CloseCode, ConnectCommand, ConnectOk, ErrorBody, ErrorCode, StreamPosition};

use crate::commands::subscribe::{JoinedAt, join};
use crate::connection::{Connection, Done, Release, reply};
use crate::transport::{Out, Reply, ReplyBody};

/// What connecting came back with.
pub(crate) struct Connected {
    id: u64,
    personal: Option<Channel>,
    joined: Result<Option<JoinedAt>, ErrorBody>,
}

pub(crate) fn start(conn: &mut Connection, id: u64, command: ConnectCommand) {
    if conn.claims.is_some() {
        conn.answer::<()>(
            Some(id),
            Err(ErrorBody::new(ErrorCode::BadRequest, "already connected")),
        );
        return;
    }
    let claims = match conn.edge.verifier.verify(&command.token) {
        Ok(c) => c,
        Err(e) => return close(conn, id, &e),
    };
    let user = claims.sub.clone();
    if let Err(error) = conn.register(claims) {
        let reply = reply::<()>(Some(id), Err(error));
        conn.start(Box::pin(std::future::ready(Done::Close {
            reply,
            code: CloseCode::Forbidden,
        })));
        return;
    }
    conn.connecting = true;
    let personal = Channel::personal(&user).ok();
    if let Some(p) = &personal {
        conn.pending.insert(p.clone());
    }
    let (edge, conn_id, outbox) = (conn.edge.clone(), conn.id, conn.outbox.clone());
    conn.start(Box::pin(async move {
        let joined = match (&personal, &command.personal_since) {
            (None, _) => Ok(None),
            (Some(p), Some(since)) => join(&edge, conn_id, &outbox, p, Some(since))
                .await
                .map(Some),
            (Some(p), None) => edge.hub.subscribe(p, conn_id, outbox).await.map(|_| None),
        };
        Done::Connected(Connected {
            id,
            personal,
            joined,
        })
    }));
}

pub(crate) fn finish(conn: &mut Connection, connected: Connected, out: &mut Vec<Out>) {
    conn.connecting = false;
    let Connected {
        id,
        personal,
        joined,
    } = connected;
    if let Some(p) = &personal {
        conn.pending.remove(p);
    }
    match joined {
        Ok(joined) => {
            let ahead = joined.as_ref().is_some_and(|j| j.ahead);
            let resumed = joined.map(|j| j.ok);
            let user = conn
                .claims
                .as_ref()
                .map(|c| c.sub.to_string())
                .unwrap_or_default();
            tracing::debug!(client = %conn.client_id, %user, "connected");
            let from = resumed.as_ref().map(|ok| StreamPosition {
                offset: ok.offset,
                epoch: ok.epoch.clone(),
            });
            out.push(Out::Reply(Reply {
                id: Some(id),
                body: ReplyBody::Connected(ConnectOk {
                    client: conn.client_id.clone(),
                    user,
                    ping_interval: conn.edge.config.edge.ping_interval_secs,
                    personal: resumed,
                }),
            }));
            if let Some(p) = personal {
                conn.subscriptions.insert(p.clone());
                // (without a resume, everything held is new)
                let release = from.as_ref().map_or(Release::All, Release::After);
                conn.release_held(&p, out, release);
                if let (true, Some(from)) = (ahead, from) {
                    conn.skip_until(&p, from);
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e.message, "personal channel subscription failed");
            if let Some(p) = &personal {
                conn.edge.hub.unsubscribe(p, conn.id);
                conn.release_held(p, out, Release::Nothing);
            }
            conn.unregister();
            out.push(Out::Reply(reply::<()>(
                Some(id),
                Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "temporarily unavailable",
                )),
            )));
        }
    }
}

fn close(conn: &mut Connection, id: u64, error: &TokenError) {
    let code = match error {
        TokenError::Expired => CloseCode::TokenExpired,
        _ => CloseCode::Unauthorized,
    };
    let reply = reply::<()>(
        Some(id),
        Err(ErrorBody::new(error.code(), error.to_string())),
    );
    conn.start(Box::pin(std::future::ready(Done::Close { reply, code })));
}
