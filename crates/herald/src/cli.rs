//! Command-line interface. Flags override `HERALD_*` variables, which
//! override the TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use herald_core::Config;
use herald_core::auth::{JwtAlgorithm, TokenSigner};
use herald_core::config::DEV_JWT_SECRET;
use herald_protocol::UserId;
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Self-hosted real-time push: WebSocket, SSE, long polling and mobile push"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Every service in one process, in-memory bus and history (start here).
    Standalone(ServeArgs),
    /// Client connections (WebSocket), joined to the cluster over NATS.
    Edge(ServeArgs),
    /// The write path and the server API, joined to the cluster over NATS.
    Routing(ServeArgs),
    /// Who is online, from the edges' reports on NATS, answered over gRPC.
    Presence(ServeArgs),
    /// Device tokens and push notifications (APNs, FCM, Web Push).
    Notify(ServeArgs),
    /// Mint a client token with the configured secret (development).
    Token(TokenArgs),
    /// Check a service's configuration without starting it: `herald check
    /// edge` says `ok` or names the setting that is wrong (exit status 1).
    Check(CheckArgs),
    /// Load tools against a running server: `idle` (memory per held
    /// connection), `latency` (publish → deliver time under fan-out).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The configuration: `defaults` prints every setting with its default,
    /// its environment variable and what it does.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Every setting as a commented TOML file that loads as the defaults
    /// (`herald config defaults > herald.toml`), or as Markdown.
    Defaults {
        /// A Markdown table instead (docs/SETTINGS.md).
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Open many client connections and hold them idle.
    Idle(crate::bench::IdleArgs),
    /// Publish → deliver latency under fan-out, against a running server.
    Latency(crate::bench::LatencyArgs),
    /// The same fan-out on the NATS server alone: the baseline.
    Nats(crate::bench::NatsArgs),
}

/// Settings that can be given as flags; only those given are serialized,
/// so they override the other layers and nothing else.
#[derive(Args, Serialize, Debug)]
pub(crate) struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "HERALD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// HTTP listen address (HERALD_HTTP_ADDR).
    #[arg(long = "http", value_name = "ADDR")]
    #[serde(rename = "http_addr", skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// gRPC listen address (HERALD_GRPC_ADDR).
    #[arg(long = "grpc", value_name = "ADDR")]
    #[serde(rename = "grpc_addr", skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    /// NATS server URL (HERALD_NATS_URL).
    #[arg(long = "nats", value_name = "URL")]
    #[serde(rename = "nats_url", skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
    /// This node's name in the cluster (HERALD_NODE_ID).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// standalone, edge, routing, presence or notify.
    pub service: Service,
    #[command(flatten)]
    pub settings: ServeArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Service {
    Standalone,
    Edge,
    Routing,
    Presence,
    Notify,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct TokenArgs {
    /// `verify <jwt>`: what a token says and whether this configuration
    /// accepts it.
    #[command(subcommand)]
    pub command: Option<TokenCommand>,
    /// TOML config file.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The user id (`sub`).
    #[arg(long, required = true)]
    pub user: Option<String>,
    /// Channel patterns the user may subscribe to, comma-separated (`chat:*`).
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub channels: Vec<String>,
    /// Channel patterns the user may publish to, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub publish: Vec<String>,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Print a token's header and claims and check it as an edge would:
    /// signature, algorithm, expiry, user id (exit status 1 if refused).
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The token (a JWT).
    pub token: String,
    /// TOML config file.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(seconds))
}

pub(crate) fn mint_token(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    if config.edge.jwt_algorithm != JwtAlgorithm::HS256 {
        anyhow::bail!(
            "`herald token` signs with the HS256 secret; with {} sign tokens with your private key",
            config.edge.jwt_algorithm.name()
        );
    }
    let secret = config.edge.jwt_secret.as_deref().unwrap_or(DEV_JWT_SECRET);
    let signer = TokenSigner::new(JwtAlgorithm::HS256, secret.as_bytes())?;
    let clean = |v: &[String]| {
        v.iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
    };
    let user = args.user.as_deref().unwrap_or_default();
    let user = UserId::parse(user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    Ok(signer.mint(
        &user,
        &clean(&args.channels),
        &clean(&args.publish),
        args.ttl,
    )?)
}

/// `herald token verify`: the token's parts, then the verdict of the
/// verifier an edge with `config` would use (standalone's development
/// secret when none is set). Answers whether it was accepted.
pub(crate) fn verify_token(config: &Config, token: &str) -> anyhow::Result<bool> {
    use base64::Engine;
    let decode = |part: Option<&str>| -> Option<serde_json::Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part?.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let mut parts = token.trim().split('.');
    let (header, claims) = (decode(parts.next()), decode(parts.next()));
    let (Some(header), Some(claims)) = (header, claims) else {
        println!("not a JWT: expected three base64url parts, the first two JSON");
        return Ok(false);
    };
    println!("header: {header}");
    println!("claims: {}", serde_json::to_string_pretty(&claims)?);
    if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_i64) {
        let left = exp - herald_core::auth::unix_now();
        if left >= 0 {
            println!("expires in {}", human(left));
        } else {
            println!("expired {} ago", human(-left));
        }
    }
    let key = match (config.edge.jwt_algorithm, &config.edge.jwt_secret) {
        (JwtAlgorithm::HS256, None) => "the development secret (no HERALD_JWT_SECRET)",
        (JwtAlgorithm::HS256, Some(_)) => "HERALD_JWT_SECRET",
        _ => "the configured public key",
    };
    let verifier = config.token_verifier(true)?;
    match verifier.verify(token.trim()) {
        Ok(accepted) => {
            println!(
                "accepted ({}, {key}): user {}",
                config.edge.jwt_algorithm.name(),
                accepted.sub
            );
            Ok(true)
        }
        Err(e) => {
            println!("refused ({}, {key}): {e}", config.edge.jwt_algorithm.name());
            Ok(false)
        }
    }
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}

/// For commands that take no setting flags.
#[derive(Serialize)]
pub(crate) struct NoFlags {}
