//! How many client connections this edge can really hold. `max_connections`
//! is what the operator asked for; the process may not have the descriptors
//! or the memory for that many, and an edge that runs out of either fails
//! everyone at once (accept errors, an OOM kill, and its clients stampede
//! the other edges). So the edge takes the smallest of the three and
//! refuses the next client with 503 — which a load balancer and a client
//! know what to do with.

use herald_core::config::Config;
use herald_proto::service::descriptors;

/// The connections this edge admits, and what bounds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionBudget {
    pub(crate) connections: usize,
    pub(crate) limited_by: &'static str,
}

/// Memory kept from connections: the hub, history, NATS buffers and
/// fan-out bursts need room too.
const MEMORY_FOR_CONNECTIONS: f64 = 0.75;

impl ConnectionBudget {
    pub(crate) fn of(config: &Config) -> ConnectionBudget {
        Self::from_limits(
            config.edge.max_connections,
            descriptors::socket_budget(),
            memory_limit(config),
            config.edge.memory_per_connection_kb.saturating_mul(1024),
        )
    }

    fn from_limits(
        configured: usize,
        sockets: Option<usize>,
        memory: Option<u64>,
        per_connection: u64,
    ) -> ConnectionBudget {
        // A tenth of the sockets stays for what is not a client connection:
        // health checks, metrics, HTTP commands, polls between streams.
        let by_descriptors = sockets.map(|s| s - s / 10);
        let by_memory = memory.map(|bytes| {
            let usable = (bytes as f64 * MEMORY_FOR_CONNECTIONS) as u64;
            usize::try_from(usable / per_connection.max(1)).unwrap_or(usize::MAX)
        });
        let (connections, limited_by) = [
            by_descriptors.map(|n| (n, "descriptors")),
            by_memory.map(|n| (n, "memory")),
        ]
        .into_iter()
        .flatten()
        .fold((configured, "max_connections"), |least, bound| {
            if bound.0 < least.0 { bound } else { least }
        });
        ConnectionBudget {
            connections: connections.max(1),
            limited_by,
        }
    }
}

/// The memory this process may use: `memory_limit_mb`, else its cgroup's
/// limit (a container's), else none.
fn memory_limit(config: &Config) -> Option<u64> {
    if config.edge.memory_limit_mb > 0 {
        return Some(config.edge.memory_limit_mb.saturating_mul(1024 * 1024));
    }
    cgroup_memory_limit()
}

fn cgroup_memory_limit() -> Option<u64> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    // cgroup v2: the process's own group ("0::/path"), else the root a
    // container sees as its own.
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_owned()))
        })
        .and_then(|path| read(&format!("/sys/fs/cgroup{path}/memory.max")));
    own.or_else(|| read("/sys/fs/cgroup/memory.max"))
        // cgroup v1 says "no limit" with a number near 2^63
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .filter(|&bytes| bytes < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_bound_wins_and_says_which_it_is() {
        let kib = 1024;
        let gib = 1024 * 1024 * 1024;
        let budget = |sockets, memory| {
            let b = ConnectionBudget::from_limits(100_000, sockets, memory, 48 * kib);
            (b.connections, b.limited_by)
        };
        assert_eq!(budget(None, None), (100_000, "max_connections"));
        // 1,024 descriptors, less the reserve: 960 sockets, 864 clients
        assert_eq!(budget(Some(960), None), (864, "descriptors"));
        // 4 GiB at 48 KiB: 3 GiB for connections, 65,536 of them
        assert_eq!(budget(Some(1_000_000), Some(4 * gib)), (65_536, "memory"));
        assert_eq!(budget(Some(0), None).0, 1, "never zero");
    }
}
