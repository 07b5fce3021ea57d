//! File descriptors: how many sockets a process can hold before it can
//! open nothing more (no health check, no log file, no NATS reconnect).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept back from client sockets: NATS, the database pool,
/// gRPC, files, the health checks that must still get through.
fn reserve(limit: usize) -> usize {
    (limit / 16).max(64)
}

/// Raises the soft limit on open files to the hard one (as servers do:
/// container runtimes often leave 1,024); answers the limit now in force.
pub fn raise_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current < maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Sockets one listener may hold: the open-files limit less the reserve
/// (`None` when the limit is unbounded).
pub fn socket_budget() -> Option<usize> {
    let limit = getrlimit(Resource::Nofile).current?;
    let limit = usize::try_from(limit).ok()?;
    Some(limit.saturating_sub(reserve(limit)))
}
