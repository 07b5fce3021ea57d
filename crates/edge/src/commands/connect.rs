//! `connect`: authenticate with a token. A refused token closes the
//! connection (4501, or 4509 when it has expired) after the error reply.

use herald_core::auth::TokenError;
use herald_core::channel::Channel;
use herald_core::presence::Transport;
use herald_core::protocol::{
    CloseCode, ConnectCommand, ConnectOk, ErrorBody, ErrorCode, ErrorReply, encode,
};

use crate::commands::subscribe::join;
use crate::session::{Outcome, Session, reply};

pub(crate) async fn run(session: &mut Session, id: u64, command: ConnectCommand) -> Outcome {
    if session.is_connected() {
        return reply::<()>(
            id,
            Err(ErrorBody::new(ErrorCode::BadRequest, "already connected")),
        );
    }
    let claims = match session.edge.verifier.verify(&command.token) {
        Ok(c) => c,
        Err(e) => return refuse(id, &e),
    };
    let edge = session.edge.clone();
    if let Err(error) = edge.users.add(
        &claims.sub,
        session.conn,
        session.kicked.clone(),
        edge.config.max_connections_per_user,
    ) {
        return Outcome::Close {
            reply: encode(&ErrorReply {
                id: Some(id),
                error,
            }),
            code: CloseCode::Forbidden,
        };
    }
    // Every connection of a user is subscribed to the user's personal
    // channel, so `SendToUser` reaches all of them; resumed from where the
    // client left off when it says so.
    let mut resumed = None;
    if let Ok(personal) = Channel::personal(&claims.sub) {
        let subscribed = match &command.personal_since {
            Some(since) => join(&edge, session.conn, &session.outbox, &personal, Some(since))
                .await
                .map(|ok| resumed = Some(ok)),
            None => edge
                .hub
                .subscribe(&personal, session.conn, session.outbox.clone())
                .await
                .map(drop),
        };
        if let Err(e) = subscribed {
            tracing::error!(error = %e.message, "personal channel subscription failed");
            edge.users.remove(&claims.sub, session.conn);
            return reply::<()>(
                id,
                Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "temporarily unavailable",
                )),
            );
        }
        session.subscriptions.insert(personal);
    }
    let ok = ConnectOk {
        client: session.client_id.clone(),
        user: claims.sub.clone(),
        ping_interval: session.edge.config.ping_interval_secs,
        personal: resumed,
    };
    edge.reporter
        .connect(session.conn, &claims.sub, Transport::Ws);
    tracing::debug!(client = %session.client_id, user = %claims.sub, "connected");
    session.claims = Some(claims);
    reply(id, Ok(ok))
}

fn refuse(id: u64, error: &TokenError) -> Outcome {
    let code = match error {
        TokenError::Expired => CloseCode::TokenExpired,
        _ => CloseCode::Unauthorized,
    };
    Outcome::Close {
        reply: encode(&ErrorReply {
            id: Some(id),
            error: ErrorBody::new(error.code(), error.to_string()),
        }),
        code,
    }
}
