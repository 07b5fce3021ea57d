//! The life of a connection, once for every transport: one loop that
//! selects on the reasons to end, the commands leaving the pipeline, what
//! the client says, the deliveries waiting in the outbox and the
//! keep-alive. Only writing waits on the client; a command waiting on
//! routing never holds up deliveries, pings or the slow-consumer check.

use herald_protocol::CloseCode;
use tokio::time::{Instant, sleep_until};

use super::lifecycle::far_future;
use super::{Connection, Heard};
use crate::outbox::Inbox;
use crate::transport::{Out, Read, Transport, WriteError};

/// Runs `conn` over `transport` until it ends, then cleans up (the
/// connection's `Drop`) before the goodbye, which may take a while.
///
/// Not an `async fn`: one keeps its arguments twice in its state (once as
/// given, once as the locals it moves them into) — 700 bytes of every idle
/// connection. The block below holds them once.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run<T: Transport>(
    mut conn: Connection,
    mut transport: T,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let end = drive(&mut conn, &mut transport).await;
        let edge = conn.edge.clone();
        let client = conn.client_id.clone();
        drop(conn);
        if end == Some(CloseCode::SlowConsumer) {
            edge.stats.slow_consumer();
            tracing::info!(%client, "slow consumer disconnected");
        }
        transport.close(end).await;
    }
}

/// The loop; answers how the connection ends (`None`: the client left).
async fn drive<T: Transport>(conn: &mut Connection, transport: &mut T) -> Option<CloseCode> {
    let mut out: Vec<Out> = Vec::new();
    let keepalive = transport.keepalive();
    let mut next_ping = keepalive.map(|k| Instant::now() + k.every);
    let mut pong_by: Option<Instant> = None;
    let batch = conn.edge.config.edge.write_batch_frames.max(1);
    loop {
        let reading = conn.reading();
        let pinging = next_ping.is_some() && conn.is_connected();
        // one timer for the keep-alive and its answer, the earlier
        let ping_due = next_ping.filter(|_| pinging);
        let pong_due = pong_by.filter(|_| reading);
        let timer = match (ping_due, pong_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            code = conn.life.ended() => return Some(code),
            done = futures::StreamExt::next(&mut conn.pipeline), if !conn.pipeline.is_empty() => {
                let Some(done) = done else { continue };
                let close = conn.finish(done, &mut out);
                if let Err(e) = write(transport, &mut out, &conn.life.overflow).await {
                    return ended(e);
                }
                release_when_quiet(conn, &mut out);
                if close.is_some() {
                    return close;
                }
            }
            read = transport.read(), if reading => match read {
                Read::Frame(text) => match conn.command(text.as_str()) {
                    Heard::Command => {}
                    Heard::Pong => pong_by = None,
                    Heard::Close(code) => return Some(code),
                },
                Read::Unsupported(why) => conn.answer::<()>(
                    None,
                    Err(herald_protocol::ErrorBody::new(
                        herald_protocol::ErrorCode::BadRequest,
                        why,
                    )),
                ),
                Read::Command(command) => conn.internal(command),
                Read::Idle => {}
                Read::Gone => return None,
                Read::Close(code) => return code,
            },
            first = conn.inbox.recv(), if transport.accepts_deliveries() => {
                let Some(first) = first else { return Some(CloseCode::ServerError) };
                // one latency sample per batch: its first live publication
                let published = first.published_ms;
                let taken = fill(conn, first, batch, &mut out);
                if let Err(code) = taken {
                    return Some(code);
                }
                let frames = out.len() as u64;
                if let Err(e) = write(transport, &mut out, &conn.life.overflow).await {
                    return ended(e);
                }
                release_when_quiet(conn, &mut out);
                conn.edge.stats.delivered(frames);
                if let Some(published) = published {
                    conn.edge.stats.latency.record(herald_core::time::unix_millis().saturating_sub(published));
                }
            }
            _ = sleep_until(timer.unwrap_or_else(far_future)), if timer.is_some() => {
                let now = Instant::now();
                // Only while reading: a pong behind commands we have not
                // read yet (the pipeline is full) is not a missing pong.
                if pong_due.is_some_and(|by| by <= now) {
                    return Some(CloseCode::NoPong);
                }
                if ping_due.is_some_and(|at| at <= now) {
                    let every = keepalive.map(|k| k.every).unwrap_or_default();
                    next_ping = Some(now + every);
                    if let Err(e) = transport.ping().await {
                        return ended(e);
                    }
                    if keepalive.is_some_and(|k| k.answered) {
                        pong_by.get_or_insert(Instant::now() + conn.edge.config.pong_timeout());
                    }
                }
            }
        }
    }
}

/// Gives back the batch's room once nothing more waits: an idle connection
/// holds no buffer (a reply alone would keep a few hundred bytes), a busy
/// one reuses it from batch to batch.
fn release_when_quiet(conn: &Connection, out: &mut Vec<Out>) {
    if out.capacity() > 0 && conn.inbox.queued_bytes() == 0 {
        *out = Vec::new();
    }
}

/// `first` and whatever else is already queued, up to `max` items.
fn fill(
    conn: &mut Connection,
    first: std::sync::Arc<crate::outbox::Delivery>,
    max: usize,
    out: &mut Vec<Out>,
) -> Result<(), CloseCode> {
    conn.take(first, out)?;
    for _ in 1..max {
        match Inbox::try_recv(&mut conn.inbox) {
            Some(d) => conn.take(d, out)?,
            None => break,
        }
    }
    Ok(())
}

/// Writes, but a client that stopped reading is cut even while a write to
/// it is stuck.
async fn write<T: Transport>(
    transport: &mut T,
    out: &mut Vec<Out>,
    overflow: &herald_core::shutdown::Shutdown,
) -> Result<(), WriteError> {
    if out.is_empty() {
        return Ok(());
    }
    tokio::select! {
        biased;
        _ = overflow.wait() => Err(WriteError::Close(CloseCode::SlowConsumer)),
        written = transport.write(out) => written,
    }
}

fn ended(error: WriteError) -> Option<CloseCode> {
    match error {
        WriteError::Gone => None,
        WriteError::Close(code) => Some(code),
    }
}
