//! `subscribe`: join a channel's live stream at a known position, and
//! replay what was missed when the client says where it left off.

use herald_core::channel::Channel;
use herald_core::history::Recovery;
use herald_core::protocol::{
    ErrorBody, ErrorCode, Publication, StreamPosition, SubscribeCommand, SubscribeOk,
};
use herald_core::route::HistoryQuery;

use crate::Edge;
use crate::hub::ConnId;
use crate::outbox::Outbox;
use crate::session::Session;

/// Channels one connection may be subscribed to at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 512;
/// Publications replayed on one resume; a client further behind is told
/// it cannot recover.
pub(crate) const MAX_RECOVERY: u64 = 1000;

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
    let joined = join(
        &session.edge,
        session.conn,
        &session.outbox,
        &channel,
        command.since.as_ref(),
    )
    .await?;
    session.edge.presence_joined(session.conn, &channel).await;
    session.subscriptions.insert(channel);
    Ok(joined)
}

/// Joins the live stream, then fills in from history what the client
/// missed. Everything after `offset` of the answer goes to the connection's
/// outbox, in order; everything up to it is in `publications`. Shared by
/// every transport.
pub(crate) async fn join(
    edge: &Edge,
    conn: ConnId,
    outbox: &Outbox,
    channel: &Channel,
    since: Option<&StreamPosition>,
) -> Result<SubscribeOk, ErrorBody> {
    let joined = edge.hub.subscribe(channel, conn, outbox.clone()).await?;
    let Some(latest) = joined else {
        edge.hub.unsubscribe(channel, conn).await;
        return Err(ErrorBody::new(
            ErrorCode::Internal,
            "history unavailable; try again",
        ));
    };
    let Some(since) = since else {
        return Ok(SubscribeOk {
            offset: latest.offset,
            epoch: latest.epoch,
            recovered: None,
            publications: None,
        });
    };
    match recover(edge, channel, since, &latest).await {
        Ok(recovered) => {
            let complete = recovered.is_some();
            Ok(SubscribeOk {
                offset: latest.offset,
                epoch: latest.epoch,
                recovered: Some(complete),
                publications: Some(recovered.unwrap_or_default()),
            })
        }
        Err(e) => {
            edge.hub.unsubscribe(channel, conn).await;
            Err(e)
        }
    }
}

/// The publications after `since` up to `latest`, or `None` when they
/// cannot all be had (another epoch, too old, too many).
async fn recover(
    edge: &Edge,
    channel: &Channel,
    since: &StreamPosition,
    latest: &StreamPosition,
) -> Result<Option<Vec<Publication>>, ErrorBody> {
    let from_start = since.epoch.is_empty() && since.offset == 0;
    if (since.epoch != latest.epoch && !from_start) || since.offset > latest.offset {
        return Ok(None);
    }
    let missed = latest.offset - since.offset;
    if missed == 0 {
        return Ok(Some(Vec::new()));
    }
    if missed > MAX_RECOVERY {
        return Ok(None);
    }
    let query = HistoryQuery {
        channel: channel.clone(),
        since: Some(since.clone()),
        limit: missed as usize,
    };
    match edge.routing.history(&query).await? {
        Recovery::Recovered { publications, .. } => {
            let wanted: Vec<Publication> = publications
                .into_iter()
                .filter(|p| p.offset <= latest.offset && p.epoch == latest.epoch)
                .collect();
            // Complete means exactly since+1 ..= latest, in order.
            let complete = wanted.len() as u64 == missed
                && wanted
                    .iter()
                    .zip(since.offset + 1..)
                    .all(|(p, expected)| p.offset == expected);
            Ok(complete.then_some(wanted))
        }
        Recovery::Unrecoverable { .. } => Ok(None),
    }
}
