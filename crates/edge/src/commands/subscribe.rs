//! `subscribe`: join a channel's live stream at a known position, and
//! replay what was missed when the client says where it left off. The
//! HTTP transports subscribe the channels of their request the same way.

use herald_core::history::Recovery;
use herald_protocol::channel::Channel;
use herald_protocol::route::HistoryQuery;
use herald_protocol::{ErrorBody, ErrorCode, Publication, StreamPosition, SubscribeOk};

use crate::Edge;
use crate::connection::{Connection, Done, Release, reply};
use crate::hub::ConnId;
use crate::outbox::Outbox;
use crate::transport::{Out, Reply, ReplyBody};

/// Channels one connection may be subscribed to at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 512;
/// Publications replayed on one resume; a client further behind is told
/// it cannot recover.
pub(crate) const MAX_RECOVERY: u64 = 1000;

/// What joining came back with.
pub(crate) struct Joined {
    id: Option<u64>,
    channel: Channel,
    result: Result<JoinedAt, ErrorBody>,
}

pub(crate) fn start(
    conn: &mut Connection,
    id: Option<u64>,
    channel: Channel,
    since: Option<StreamPosition>,
) {
    if let Err(e) = allowed(conn, &channel) {
        conn.answer::<()>(id, Err(e));
        return;
    }
    conn.pending.insert(channel.clone());
    let (edge, conn_id, outbox) = (conn.edge.clone(), conn.id, conn.outbox.clone());
    conn.start(Box::pin(async move {
        let result = join(&edge, conn_id, &outbox, &channel, since.as_ref()).await;
        Done::Subscribed(Joined {
            id,
            channel,
            result,
        })
    }));
}

fn allowed(conn: &Connection, channel: &Channel) -> Result<(), ErrorBody> {
    let claims = conn.claims()?;
    if !conn.is_personal(channel) {
        if !claims.may_subscribe(channel) {
            return Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!("not allowed to subscribe to `{channel}`"),
            ));
        }
        conn.edge.config.namespace(channel)?;
    }
    let resubscribing = conn.leaving.contains(channel);
    if (conn.subscriptions.contains(channel) && !resubscribing) || conn.pending.contains(channel) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("already subscribed to `{channel}`"),
        ));
    }
    if conn.subscriptions.len() + conn.pending.len() >= MAX_SUBSCRIPTIONS {
        return Err(ErrorBody::new(
            ErrorCode::LimitExceeded,
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
        ));
    }
    Ok(())
}

pub(crate) fn finish(conn: &mut Connection, joined: Joined, out: &mut Vec<Out>) {
    let Joined {
        id,
        channel,
        result,
    } = joined;
    conn.pending.remove(&channel);
    // A refresh while it was in flight may no longer allow it.
    let result = result.and_then(|ok| {
        let still =
            conn.is_personal(&channel) || conn.claims().is_ok_and(|c| c.may_subscribe(&channel));
        if still {
            Ok(ok)
        } else {
            conn.edge.hub.unsubscribe(&channel, conn.id);
            Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!("not allowed to subscribe to `{channel}`"),
            ))
        }
    });
    match result {
        Ok(JoinedAt { ok, ahead }) => {
            conn.subscriptions.insert(channel.clone());
            if !conn.is_personal(&channel) {
                conn.edge.reporter.subscribe(conn.id, &channel);
            }
            let from = StreamPosition {
                offset: ok.offset,
                epoch: ok.epoch.clone(),
            };
            out.push(Out::Reply(Reply {
                id,
                body: ReplyBody::Subscribed(channel.clone(), ok),
            }));
            conn.release_held(&channel, out, Release::After(&from));
            if ahead {
                conn.skip_until(&channel, from);
            }
        }
        Err(e) => {
            conn.release_held(&channel, out, Release::Nothing);
            out.push(Out::Reply(reply::<()>(id, Err(e))));
        }
    }
}

/// Where a join left the client.
pub(crate) struct JoinedAt {
    pub ok: SubscribeOk,
    /// The client had seen more than this edge delivered yet (it came from
    /// an edge further ahead): deliveries up to `ok.offset` still on their
    /// way here are not for it.
    pub ahead: bool,
}

/// Joins the live stream, then fills in from history what the client
/// missed. Everything after `offset` of the answer goes to the connection's
/// outbox, in order; everything up to it is in `publications`.
pub(crate) async fn join(
    edge: &Edge,
    conn: ConnId,
    outbox: &Outbox,
    channel: &Channel,
    since: Option<&StreamPosition>,
) -> Result<JoinedAt, ErrorBody> {
    let joined = edge.hub.subscribe(channel, conn, outbox.clone()).await?;
    let Some(latest) = joined else {
        edge.hub.unsubscribe(channel, conn);
        return Err(ErrorBody::new(
            ErrorCode::Internal,
            "history unavailable; try again",
        ));
    };
    let at = |ok| JoinedAt { ok, ahead: false };
    let Some(since) = since else {
        return Ok(at(SubscribeOk {
            offset: latest.offset,
            epoch: latest.epoch,
            recovered: None,
            publications: None,
        }));
    };
    let since = &crate::cursor::resolve(since, &latest);
    // Ahead of this edge — in its epoch, or of a channel this edge knows
    // only as empty (the first publication still on its way here): routing,
    // which gives the offsets, says whether the position is real.
    let edge_behind =
        since.offset > latest.offset && (since.epoch == latest.epoch || latest.epoch.is_empty());
    if edge_behind {
        let query = HistoryQuery::position_of(channel);
        match edge.routing.history(&query).await {
            Ok(recovery) => {
                let known = recovery.latest();
                let since = crate::cursor::resolve(since, known);
                if known.epoch == since.epoch && since.offset <= known.offset {
                    return Ok(JoinedAt {
                        ok: SubscribeOk {
                            offset: since.offset,
                            epoch: since.epoch.clone(),
                            recovered: Some(true),
                            publications: Some(Vec::new()),
                        },
                        ahead: true,
                    });
                }
            }
            Err(e) => {
                edge.hub.unsubscribe(channel, conn);
                return Err(e);
            }
        }
    }
    let recovered = match recover(edge, channel, since, &latest).await {
        // From another epoch: what the client had is lost (it is told
        // `recovered: false`), but the new epoch is all new to it — given
        // whole, from its first offset, when history still has it.
        Ok(None) if since.epoch != latest.epoch && !latest.epoch.is_empty() => {
            let start = StreamPosition::new(0, latest.epoch.clone());
            recover(edge, channel, &start, &latest)
                .await
                .map(|new_epoch| (false, new_epoch.unwrap_or_default()))
        }
        Ok(recovered) => Ok((recovered.is_some(), recovered.unwrap_or_default())),
        Err(e) => Err(e),
    };
    if let Ok((false, _)) = &recovered {
        tracing::debug!(channel = %channel, since = ?since, latest = ?latest, "resume told recovered: false");
    }
    match recovered {
        Ok((complete, publications)) => Ok(at(SubscribeOk {
            offset: latest.offset,
            epoch: latest.epoch,
            recovered: Some(complete),
            publications: Some(publications),
        })),
        Err(e) => {
            edge.hub.unsubscribe(channel, conn);
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
    let Some(missed) = since.missed_until(latest) else {
        return Ok(None);
    };
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
