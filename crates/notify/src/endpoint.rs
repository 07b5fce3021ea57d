//! Web Push endpoints. A subscription's endpoint is a URL that whoever
//! registers a device chooses, and notify POSTs to it: unchecked, that is a
//! way into the private network (SSRF). So an endpoint must be `https`, carry
//! no credentials, and its host must resolve to public addresses only — no
//! loopback, private, link-local, unique-local, shared (CGNAT), multicast,
//! documentation, reserved or unspecified address, nor an IPv4-mapped,
//! NAT64 or 6to4 form of one. It is checked at registration and again at
//! every send: the Web Push client resolves names through [`PublicOnly`],
//! so the address it connects to is the address that was checked (a name
//! that later resolves inward — DNS rebinding — is refused then). Redirects
//! are never followed.
//!
//! `webpush_allowed_hosts` lists `host` or `host:port` exempt from the
//! address rule (a push service on a private network; the tests' fakes on
//! 127.0.0.1). They must still be `https`.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herald_core::config::{Config, ConfigError};
use url::{Host, Url};

/// How long a name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an endpoint is not pushed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It does not parse as a URL.
    #[error("the endpoint is not a URL")]
    NotUrl,
    /// Its scheme is not `https`: the scheme.
    #[error("the endpoint must be an https URL (got {0}:)")]
    NotHttps(String),
    /// It has a user name or password.
    #[error("the endpoint must not carry a user name or password")]
    Credentials,
    /// It names no host.
    #[error("the endpoint has no host")]
    NoHost,
    /// The host is an address literal that is not public.
    #[error("{host} is {addr}, not a public address")]
    NotPublic {
        /// The host.
        host: String,
        /// The address.
        addr: IpAddr,
    },
    /// The host's name resolves to an address that is not public.
    #[error("{host} resolves to {addr}, not a public address")]
    ResolvesInward {
        /// The name.
        host: String,
        /// The first address that is not public.
        addr: IpAddr,
    },
    /// The name resolves to no address at all.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// The name could not be resolved.
    #[error("{host} does not resolve: {error}")]
    Lookup {
        /// The name.
        host: String,
        /// What the resolver said.
        error: String,
    },
    /// Resolving took too long (5 s).
    #[error("resolving {host} timed out")]
    LookupTimedOut {
        /// The name.
        host: String,
    },
}

impl Refused {
    /// Whether the refusal depends on what DNS answers now (it may change),
    /// rather than on the endpoint itself (it never will).
    pub fn depends_on_dns(&self) -> bool {
        matches!(
            self,
            Refused::ResolvesInward { .. }
                | Refused::NoAddress { .. }
                | Refused::Lookup { .. }
                | Refused::LookupTimedOut { .. }
        )
    }
}

/// Name resolution, replaceable in tests (to play a DNS that changes its
/// answer).
pub trait Lookup: Send + Sync + 'static {
    /// The addresses `host` resolves to.
    fn lookup(&self, host: String)
    -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system's resolver.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// How an endpoint that passed the syntactic checks is to be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Listed in `webpush_allowed_hosts`: any address.
    Allowed,
    /// A public IP address literal: as it is.
    PublicAddress,
    /// A name: resolved through [`PublicOnly`].
    Name(String),
}

/// The rule for Web Push endpoints (see the module's documentation).
#[derive(Clone)]
pub struct EndpointPolicy {
    /// `(host, port)`; no port: any port.
    allowed: HashSet<(String, Option<u16>)>,
    lookup: Arc<dyn Lookup>,
}

impl EndpointPolicy {
    /// The policy of `webpush_allowed_hosts`, resolving with the system's
    /// resolver; a bad entry fails start-up.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut allowed = HashSet::new();
        for entry in &config.notify.webpush_allowed_hosts {
            let parsed = parse_allowed(entry).ok_or_else(|| {
                ConfigError::new(
                    "webpush_allowed_hosts",
                    format!("`{entry}` is not a host or host:port"),
                )
            })?;
            allowed.insert(parsed);
        }
        Ok(EndpointPolicy {
            allowed,
            lookup: Arc::new(SystemLookup),
        })
    }

    /// The same policy, resolving names with `lookup`.
    pub fn with_lookup(mut self, lookup: Arc<dyn Lookup>) -> Self {
        self.lookup = lookup;
        self
    }

    /// What can be told without resolving anything: the URL's shape, an
    /// address literal, the allowed list.
    pub fn route(&self, endpoint: &str) -> Result<Route, Refused> {
        let url = Url::parse(endpoint).map_err(|_| Refused::NotUrl)?;
        if url.scheme() != "https" {
            return Err(Refused::NotHttps(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let host = match url.host() {
            None => return Err(Refused::NoHost),
            Some(Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(Host::Ipv4(a)) => a.to_string(),
            Some(Host::Ipv6(a)) => a.to_string(),
        };
        if self.allowed.contains(&(host.clone(), Some(port)))
            || self.allowed.contains(&(host.clone(), None))
        {
            return Ok(Route::Allowed);
        }
        let literal = match url.host() {
            Some(Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        match literal {
            Some(addr) if is_public(addr) => Ok(Route::PublicAddress),
            Some(addr) => Err(Refused::NotPublic { host, addr }),
            None => Ok(Route::Name(host)),
        }
    }

    /// The whole check, resolving the host: at registration.
    pub async fn check(&self, endpoint: &str) -> Result<(), Refused> {
        match self.route(endpoint)? {
            Route::Allowed | Route::PublicAddress => Ok(()),
            Route::Name(host) => resolve_public(self.lookup.as_ref(), host).await.map(|_| ()),
        }
    }

    /// The resolver the Web Push client connects through.
    pub fn resolver(&self) -> PublicOnly {
        PublicOnly {
            lookup: self.lookup.clone(),
        }
    }

    /// A resolver through the same lookup that takes any address: for the
    /// services the operator configured (APNs, FCM) and the allowed hosts.
    pub fn unchecked_resolver(&self) -> AnyAddress {
        AnyAddress {
            lookup: self.lookup.clone(),
        }
    }
}

/// Resolves `host` and answers its addresses if every one is public.
async fn resolve_public(lookup: &dyn Lookup, host: String) -> Result<Vec<IpAddr>, Refused> {
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, lookup.lookup(host.clone()))
        .await
        .map_err(|_| Refused::LookupTimedOut { host: host.clone() })?;
    let addrs = answer.map_err(|e| Refused::Lookup {
        host: host.clone(),
        error: e.to_string(),
    })?;
    if addrs.is_empty() {
        return Err(Refused::NoAddress { host });
    }
    // One inward address is enough to refuse the name: a public service has
    // no business resolving into a private network.
    if let Some(addr) = addrs.iter().copied().find(|a| !is_public(*a)) {
        return Err(Refused::ResolvesInward { host, addr });
    }
    Ok(addrs)
}

/// A resolver for reqwest that answers only names whose addresses are all
/// public (and fails with [`Refused`] otherwise), so the connection goes to
/// the address that was checked.
pub struct PublicOnly {
    lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let addrs = resolve_public(lookup.as_ref(), host).await?;
            Ok(socket_addrs(addrs))
        })
    }
}

/// A resolver for reqwest through a [`Lookup`], taking every address.
pub struct AnyAddress {
    lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for AnyAddress {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, lookup.lookup(host.clone()))
                .await
                .map_err(|_| Refused::LookupTimedOut { host })??;
            Ok(socket_addrs(addrs))
        })
    }
}

fn socket_addrs(addrs: Vec<IpAddr>) -> reqwest::dns::Addrs {
    Box::new(
        addrs
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, 0))
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, lower-cased.
fn parse_allowed(entry: &str) -> Option<(String, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    if let Some(rest) = entry.strip_prefix('[') {
        let (v6, tail) = rest.split_once(']')?;
        let addr: Ipv6Addr = v6.parse().ok()?;
        let port = match tail {
            "" => None,
            t => Some(port(t.strip_prefix(':')?)?),
        };
        return Some((addr.to_string(), port));
    }
    let (host, port) = match entry.split_once(':') {
        Some((h, p)) => (h, Some(port(p)?)),
        None => (entry, None),
    };
    if host.is_empty() {
        return None;
    }
    // the form the URL parser gives hosts: IPv4 canonical, names lower-cased
    let host = match host.parse::<Ipv4Addr>() {
        Ok(a) => a.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    };
    Some((host, port))
}

/// Whether `addr` is a public (globally reachable unicast) address.
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

/// IPv4 ranges that are not public: (network, prefix length, what).
const V4_NOT_PUBLIC: &[([u8; 4], u32, &str)] = &[
    ([0, 0, 0, 0], 8, "this network, unspecified"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved, broadcast"),
];

fn is_public_v4(a: Ipv4Addr) -> bool {
    let addr = u32::from(a);
    !V4_NOT_PUBLIC.iter().any(|(network, len, _)| {
        let mask = u32::MAX << (32 - len);
        addr & mask == u32::from_be_bytes(*network)
    })
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    // Forms that carry an IPv4 address are judged by it.
    if let Some(v4) = a.to_ipv4_mapped() {
        return is_public_v4(v4); // ::ffff:a.b.c.d
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64, the well-known prefix 64:ff9b::/96
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    // Only global unicast (2000::/3) is public. Outside it: ::, ::1,
    // IPv4-compatible ::a.b.c.d, 64:ff9b:1::/48, 100::/64, fc00::/7,
    // fe80::/10, fec0::/10, ff00::/8, …
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let not_public = match s[0] {
        // IETF protocol assignments 2001::/23 (Teredo, benchmarking,
        // ORCHID), documentation 2001:db8::/32
        0x2001 => s[1] < 0x200 || s[1] == 0x0db8,
        // documentation 3fff::/20
        0x3fff => s[1] < 0x1000,
        _ => false,
    };
    !not_public
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::config::NotifyConfig;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "142.250.74.106",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "223.255.255.255",
            "2a00:1450:4001:82b::200a",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(public)), "{public} is public");
        }
        for inward in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "2002:7f00:1::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
        ] {
            assert!(!is_public(ip(inward)), "{inward} is not public");
        }
    }

    struct Fixed(Vec<IpAddr>);

    impl Lookup for Fixed {
        fn lookup(
            &self,
            _host: String,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            let addrs = self.0.clone();
            Box::pin(async move { Ok(addrs) })
        }
    }

    fn policy(allowed: &[&str], answer: &[&str]) -> EndpointPolicy {
        let config = Config {
            notify: NotifyConfig {
                webpush_allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
                ..NotifyConfig::default()
            },
            ..Config::default()
        };
        EndpointPolicy::from_config(&config)
            .unwrap()
            .with_lookup(Arc::new(Fixed(answer.iter().map(|a| ip(a)).collect())))
    }

    #[tokio::test]
    async fn endpoints_are_checked_by_shape_address_and_list() {
        let p = policy(&["127.0.0.1:8443", "push.internal"], &["8.8.8.8"]);
        assert_eq!(p.check("https://push.example.com/abc").await, Ok(()));
        assert_eq!(p.check("https://8.8.4.4/abc").await, Ok(()));
        for (endpoint, why) in [
            ("http://push.example.com/abc", "plain http"),
            ("ftp://push.example.com/abc", "another scheme"),
            ("https://user:pw@push.example.com/abc", "credentials"),
            ("not a url", "not a URL"),
            ("https://127.0.0.1/x", "loopback"),
            ("https://127.0.0.1:9/x", "loopback, another port"),
            ("https://2130706433/x", "loopback as a number"),
            ("https://0x7f.1/x", "loopback in hex"),
            ("https://[::1]/x", "IPv6 loopback"),
            ("https://[::ffff:169.254.169.254]/x", "mapped link-local"),
            ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
            ("https://10.0.0.1:8500/v1/kv", "private"),
            ("https://100.64.1.1/x", "CGNAT"),
            ("https://[fd00::1]/x", "unique local"),
            ("https://[fe80::1]/x", "link-local"),
            ("https://224.0.0.1/x", "multicast"),
            ("https://0.0.0.0/x", "unspecified"),
        ] {
            assert!(p.check(endpoint).await.is_err(), "{why}: {endpoint}");
        }
        // the allowed list: exactly the host and port listed, still https
        assert_eq!(p.route("https://127.0.0.1:8443/x"), Ok(Route::Allowed));
        assert_eq!(p.route("https://push.internal:1234/x"), Ok(Route::Allowed));
        assert!(p.route("http://127.0.0.1:8443/x").is_err());
        assert!(p.route("https://127.0.0.1:8444/x").is_err());
        // names: refused when any address they resolve to is inward
        for answer in [&["10.0.0.1"][..], &["8.8.8.8", "127.0.0.1"], &["::1"], &[]] {
            let p = policy(&[], answer);
            let e = p.check("https://push.example.com/abc").await.unwrap_err();
            assert!(e.depends_on_dns(), "{e}");
        }
        let e = policy(&[], &["169.254.169.254"])
            .check("https://metadata.example/x")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata.example resolves to 169.254.169.254, not a public address"
        );
    }

    #[test]
    fn allowed_entries_parse() {
        assert_eq!(
            parse_allowed("Push.Test:8443"),
            Some(("push.test".into(), Some(8443)))
        );
        assert_eq!(parse_allowed("[::1]:9"), Some(("::1".into(), Some(9))));
        assert_eq!(parse_allowed("[::1]"), Some(("::1".into(), None)));
        assert_eq!(parse_allowed("h:0"), None);
        assert_eq!(parse_allowed(":1"), None);
        assert_eq!(parse_allowed("[::1"), None);
    }
}
