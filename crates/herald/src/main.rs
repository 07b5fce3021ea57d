//! `herald`: one binary, every service. `herald standalone` runs them all in
//! one process; `herald edge|routing` run one each (the Loki/Mimir model).

mod bench;
mod cli;
mod standalone;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use herald_core::Config;
use herald_core::shutdown::Shutdown;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, naming what is wrong.
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // One TLS provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Every connection is a descriptor: take all the system allows.
    herald_proto::service::descriptors::raise_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Token(cli::TokenArgs {
                command: Some(cli::TokenCommand::Verify(verify)),
                ..
            }) => {
                let config = Config::load(verify.config.as_deref(), cli::NoFlags {})?;
                if !cli::verify_token(&config, &verify.token)? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Token(args) => {
                let config = Config::load(args.config.as_deref(), cli::NoFlags {})?;
                println!("{}", cli::mint_token(&config, &args)?);
                Ok(())
            }
            Command::Config(cli::ConfigCommand::Defaults { markdown }) => {
                print!(
                    "{}",
                    if markdown {
                        herald_core::settings_doc::settings_markdown()
                    } else {
                        herald_core::settings_doc::defaults_toml()
                    }
                );
                Ok(())
            }
            Command::Bench(cli::BenchCommand::Idle(args)) => bench::idle(args).await,
            Command::Bench(cli::BenchCommand::Latency(args)) => bench::latency(args).await,
            Command::Bench(cli::BenchCommand::Nats(args)) => bench::nats(args).await,
            Command::Check(args) => {
                let config = Config::load(args.settings.config.as_deref(), &args.settings)?;
                match args.service {
                    cli::Service::Standalone => config.token_verifier(true).map(drop)?,
                    cli::Service::Edge => herald_edge::check(&config)?,
                    cli::Service::Routing => herald_routing::check(&config)?,
                    cli::Service::Presence => herald_presence::check(&config)?,
                    cli::Service::Notify => herald_notify::check(&config)?,
                }
                println!("ok");
                Ok(())
            }
            Command::Standalone(args) => serve("standalone", &args, standalone::serve).await,
            Command::Edge(args) => {
                serve("edge", &args, |c, s| async move {
                    Ok(herald_edge::serve(c, s).await?)
                })
                .await
            }
            Command::Presence(args) => {
                serve("presence", &args, |c, s| async move {
                    Ok(herald_presence::serve(c, s).await?)
                })
                .await
            }
            Command::Notify(args) => {
                serve("notify", &args, |c, s| async move {
                    Ok(herald_notify::serve(c, s).await?)
                })
                .await
            }
            Command::Routing(args) => {
                serve("routing", &args, |c, s| async move {
                    Ok(herald_routing::serve(c, s).await?)
                })
                .await
            }
        }
    })
}

async fn serve<F, Fut>(service: &str, args: &cli::ServeArgs, service_main: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Config>, Shutdown) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = Arc::new(Config::load(args.config.as_deref(), args)?);
    let _telemetry = herald_core::telemetry::init(service, config.log_format)?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    let result = service_main(config, shutdown).await;
    match &result {
        Ok(()) => tracing::info!(service, "stopped"),
        Err(e) => tracing::error!(service, error = %e, "failed"),
    }
    result
}
