//! `subscribe`: join a channel's live stream, with its position, and replay
//! what was missed when the client names where it left off.

use herald_core::history::Recovery;
use herald_core::protocol::{ErrorBody, ErrorCode, SubscribeCommand, SubscribeOk};
use herald_core::route::HistoryQuery;

use crate::session::Session;

/// Channels one connection may be subscribed to at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 512;
/// Publications replayed on one resume.
const MAX_RECOVERY: usize = 1000;

pub(crate) async fn run(
    session: &mut Session,
    command: SubscribeCommand,
) -> Result<SubscribeOk, ErrorBody> {
    let channel = command.channel;
    let claims = session.claims()?;
    if !claims.may_subscribe(&channel) {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("not allowed to subscribe to `{channel}`"),
        ));
    }
    session.edge.config.namespace(&channel)?;
    if session.subscriptions.contains(&channel) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("already subscribed to `{channel}`"),
        ));
    }
    if session.subscriptions.len() >= MAX_SUBSCRIPTIONS {
        return Err(ErrorBody::new(
            ErrorCode::LimitExceeded,
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
        ));
    }
    // Live first, then the position: nothing published in between is lost.
    session
        .edge
        .hub
        .subscribe(&channel, session.conn, session.outbox.clone())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "bus subscribe failed");
            ErrorBody::new(ErrorCode::Internal, "temporarily unavailable")
        })?;
    let resume = command.since.is_some();
    let query = HistoryQuery {
        channel: channel.clone(),
        since: command.since,
        limit: if resume { MAX_RECOVERY } else { 0 },
    };
    let recovery = match session.edge.read_history(&query).await {
        Ok(r) => r,
        Err(e) => {
            session.edge.hub.unsubscribe(&channel, session.conn).await;
            return Err(e);
        }
    };
    session.subscriptions.insert(channel);
    Ok(match recovery {
        Recovery::Recovered {
            publications,
            latest,
        } => {
            let complete = publications
                .last()
                .is_none_or(|p| p.offset >= latest.offset);
            SubscribeOk {
                offset: latest.offset,
                epoch: latest.epoch,
                recovered: resume.then_some(complete),
                publications: resume.then_some(publications),
            }
        }
        Recovery::Unrecoverable { latest } => SubscribeOk {
            offset: latest.offset,
            epoch: latest.epoch,
            recovered: resume.then_some(false),
            publications: resume.then(Vec::new),
        },
    })
}
