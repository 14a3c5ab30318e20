//! `tern`: the command line. This file only parses arguments and hands off to the crates
//! (see ARCHITECTURE.md); the wiring of tiers lives in `serve.rs`.

mod config;
mod devapp;
mod metrics_help;
mod serve;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{AddrOverride, FlagOverrides, GatewayOverride};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, before it allocates much.
///
/// mimalloc asks the kernel for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so
/// with THP in `madvise` or `always` mode memory is committed in 2 MiB steps and what a
/// burst touched stays resident. A gateway holding 15,000 idle connections measured
/// 564-979 B of RSS per connection with huge pages and 343-364 B without
/// (`loadtest/bench/connect.sh`, 3 runs each), and an idle gateway 20 MiB instead of 11.
/// `PR_SET_THP_DISABLE` covers every mapping and thread of the process whatever the
/// system's THP mode; it fails only on kernels older than 3.15, where nothing changes.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and reads or writes no
    // memory of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Tern: an instant-messaging server. With no subcommand, runs everything in one
/// process (`tern all`).
#[derive(Parser, Debug)]
#[command(name = "tern", version, about)]
struct Cli {
    /// TOML configuration file (see `tern config defaults`).
    #[arg(long, global = true, env = "TERN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// HTTP API listen address (overrides `[http] addr`).
    #[arg(long, global = true)]
    http_addr: Option<String>,
    /// Client TCP listen address (overrides `[gateway] tcp_addr`).
    #[arg(long, global = true)]
    tcp_addr: Option<String>,
    /// Client WebSocket listen address (overrides `[gateway] ws_addr`).
    #[arg(long, global = true)]
    ws_addr: Option<String>,
    /// Link address: where logic listens, and where a separate gateway connects
    /// (overrides `[link] addr` and `[gateway] link_addr`).
    #[arg(long, global = true)]
    link_addr: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Gateway + logic + embedded store in one process (the default).
    All,
    /// Only the gateway tier: client connections, linked to a logic process.
    Gateway,
    /// Only the logic tier: HTTP API, link endpoint, store.
    Logic,
    /// Create or upgrade the ScyllaDB schema (`[storage] backend = "scylla"`).
    Migrate,
    /// Print a user signature (`userSign`) for an app.
    Sig(SigArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A small interactive client: logs in and prints every frame it receives.
    Client(tern_loadtest::cli::ClientArgs),
    /// Load tests against a running Tern (loopback only): connect, p2p, sync, ramp.
    Loadtest(Box<tern_loadtest::harness::LoadtestArgs>),
}

#[derive(clap::Args, Debug)]
struct SigArgs {
    #[arg(long)]
    app_id: u32,
    /// The app's secret.
    #[arg(long, env = "TERN_SECRET", hide_env_values = true)]
    secret: String,
    /// User id (login signature), or with `--admin` an admin identifier.
    #[arg(long)]
    user: Option<String>,
    /// Sign an admin identifier for the HTTP management API (a login signature is
    /// never accepted there).
    #[arg(long, value_name = "IDENTIFIER", conflicts_with = "user")]
    admin: Option<String>,
    /// Print the signature in the original system's UserSig format instead (accepted
    /// beside Tern's own for logins and admin calls).
    #[arg(long)]
    usersig: bool,
    /// Seconds until the signature expires.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the full default configuration, commented.
    Defaults,
    /// Print the effective configuration after file, environment and flags.
    Show,
}

fn flag_overrides(cli: &Cli) -> FlagOverrides {
    let gateway =
        (cli.tcp_addr.is_some() || cli.ws_addr.is_some() || cli.link_addr.is_some()).then(|| GatewayOverride {
            tcp_addr: cli.tcp_addr.clone(),
            ws_addr: cli.ws_addr.clone(),
            link_addr: cli.link_addr.clone(),
        });
    FlagOverrides {
        data_dir: cli.data_dir.clone(),
        http: cli.http_addr.clone().map(|addr| AddrOverride { addr }),
        link: cli.link_addr.clone().map(|addr| AddrOverride { addr }),
        gateway,
    }
}

fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let load = || config::load(cli.config.as_deref(), std::env::vars(), &flag_overrides(&cli));
    match cli.command {
        None | Some(Command::All) => serve::all(load()?),
        Some(Command::Gateway) => serve::gateway(load()?),
        Some(Command::Logic) => serve::logic(load()?),
        Some(Command::Migrate) => serve::migrate(load()?),
        Some(Command::Sig(ref a)) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
            let secret = a.secret.as_bytes();
            let sign = match (&a.user, &a.admin, a.usersig) {
                (_, Some(id), false) => tern_schema::sig::sign_admin(secret, a.app_id, id, now + a.ttl),
                (Some(id), None, false) => tern_schema::sig::sign(secret, a.app_id, id, now + a.ttl),
                (Some(id), None, true) | (None, Some(id), true) => {
                    tern_schema::usersig::sign(secret, a.app_id, id, now, a.ttl)
                }
                _ => anyhow::bail!("give --user USER_ID or --admin IDENTIFIER"),
            };
            println!("{sign}");
            Ok(())
        }
        Some(Command::Config(ConfigCommand::Defaults)) => {
            print!("{}", config::DEFAULTS_TOML);
            Ok(())
        }
        Some(Command::Config(ConfigCommand::Show)) => {
            print!("{}", toml::to_string(&load()?).context("rendering the configuration")?);
            Ok(())
        }
        Some(Command::Loadtest(args)) => tern_loadtest::harness::run_loadtest(*args),
        Some(Command::Client(args)) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(tern_loadtest::cli::run_client(args))
        }
    }
}
