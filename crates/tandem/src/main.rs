//! `tandem`: the one binary with every subcommand. Only this crate knows about the command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tandem::{admin, aw, bench, certs, demo, processes, sim, token, watch};
use tandem_model::config::ContactCenter;
use tandem_model::generate::{generate, GenerateParams};

/// mimalloc: its size-segregated pages keep the router's many small rows and trie nodes closer
/// together than the system allocator does, and it allocates and frees in fewer instructions.
/// Built without transparent huge pages (`no_thp`): faulting in a huge page can stall the
/// faulting thread for milliseconds while the kernel compacts memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (its position there is kept stable
/// across versions, deprecated options keeping their places).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hands freed memory back to the system. Returning it is a burst of `madvise` calls made
/// inside whichever allocation or free comes due, which stalled single inputs for about 5 ms; a
/// router's heap holds steady at its working size anyway.
fn keep_freed_memory() {
    // SAFETY: `mi_option_set` writes one option word and may be called at any time; it runs
    // here, first thing in `main`, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "A duplexed contact-center central controller"
)]
struct Cli {
    /// Run without TLS: links are neither encrypted nor authenticated, and HTTP readers need
    /// no token. Every process of an installation must agree.
    #[arg(long, global = true)]
    insecure_plaintext: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a router fed by simulated peripherals and print a live summary every second.
    Demo(demo::DemoArgs),
    /// Write a synthetic contact-center configuration (TOML).
    GenConfig(GenConfigArgs),
    /// Validate a contact-center configuration and print its size.
    CheckConfig {
        /// The contact-center TOML file.
        file: PathBuf,
    },
    /// Run a benchmark and print its figures as one JSON line.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    /// Write a ready local topology (sides A and B, two PGs, one distributor, loopback ports)
    /// and the example contact center into a directory.
    Init(processes::InitArgs),
    /// Run one side of the central controller (MDS and router).
    Central(processes::CentralArgs),
    /// Run a peripheral gateway with simulated peripherals; prints its counts on SIGTERM.
    Pg(processes::PgArgs),
    /// Ask a side for its status, state-transfer history or events.
    Rttest(processes::RtTestArgs),
    /// Simulate the whole system (both sides with their routers, PGs with their traffic) over
    /// many seeds with faults; a failing seed prints its trace and replays with `--replay SEED`.
    Sim(sim::SimArgs),
    /// A side's logger and central database.
    Logger {
        #[command(subcommand)]
        which: admin::LoggerCommand,
    },
    /// Configuration changes and export, through the side that orders input.
    Config {
        #[command(subcommand)]
        which: admin::ConfigCommand,
    },
    /// Run a Distributor AW: rtdist, updateaw and rtclient with its local AW database and web
    /// client.
    Distributor(aw::DistributorArgs),
    /// The terminal client: a live real-time table from a distributor, failing over to the
    /// other distributors of its site.
    Watch(watch::WatchArgs),
    /// A distributor's status and AW database.
    Aw {
        #[command(subcommand)]
        which: aw::AwCommand,
    },
    /// The cluster CA and the processes' certificates.
    Certs {
        #[command(subcommand)]
        which: certs::CertsCommand,
    },
    /// Tokens for the distributors' HTTP and WebSocket API.
    Token {
        #[command(subcommand)]
        which: token::TokenCommand,
    },
}

#[derive(clap::Args)]
struct GenConfigArgs {
    #[arg(long, default_value_t = 200)]
    agents: u32,
    #[arg(long, default_value_t = 20)]
    skill_groups: u32,
    #[arg(long, default_value_t = 10)]
    call_types: u32,
    #[arg(long, default_value_t = 2)]
    peripherals: u32,
    /// Each agent joins 1..=this many skill groups of its peripheral.
    #[arg(long, default_value_t = 3)]
    skill_groups_per_agent_max: u32,
    #[arg(long, default_value = "UTC")]
    time_zone: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl GenConfigArgs {
    fn params(&self) -> Result<GenerateParams> {
        anyhow::ensure!(
            self.agents > 0 && self.skill_groups > 0 && self.call_types > 0,
            "counts must be positive"
        );
        anyhow::ensure!(
            self.peripherals > 0 && self.peripherals <= self.skill_groups,
            "peripherals must be 1..=skill groups"
        );
        anyhow::ensure!(
            self.skill_groups_per_agent_max > 0,
            "agents need at least one skill group"
        );
        Ok(GenerateParams {
            agents: self.agents,
            skill_groups: self.skill_groups,
            call_types: self.call_types,
            peripherals: self.peripherals,
            skill_groups_per_agent_max: self.skill_groups_per_agent_max,
            time_zone: self.time_zone.clone(),
            seed: self.seed,
        })
    }
}

fn main() -> Result<()> {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    certs::set_insecure_plaintext(cli.insecure_plaintext);
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::GenConfig(args) => {
            let cc = generate(&args.params()?);
            cc.validate()
                .context("generated configuration is invalid")?;
            let text = cc.to_toml_string();
            match args.out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::CheckConfig { file } => {
            let cc = ContactCenter::load(&file)?;
            println!(
                "{}: valid; {} PGs, {} peripherals, {} agents, {} skill groups, {} members, {} call types, {} scripts, {} labels",
                file.display(),
                cc.pgs.len(),
                cc.peripherals.len(),
                cc.agents.len(),
                cc.skill_groups.len(),
                cc.skill_group_members.len(),
                cc.call_types.len(),
                cc.scripts.len(),
                cc.labels.len()
            );
            Ok(())
        }
        Command::Bench { which } => bench::run(which),
        Command::Sim(args) => sim::run(args),
        Command::Init(args) => processes::init(args),
        Command::Central(args) => processes::central(args),
        Command::Pg(args) => processes::pg(args),
        Command::Rttest(args) => processes::rttest(args),
        Command::Logger { which } => admin::logger_command(which),
        Command::Config { which } => admin::config_command(which),
        Command::Distributor(args) => aw::distributor(args),
        Command::Watch(args) => watch::watch(args),
        Command::Aw { which } => aw::aw_command(which),
        Command::Certs { which } => certs::certs_command(which),
        Command::Token { which } => token::token_command(which),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index names the purge delay: it reads mimalloc's default (1,000 ms in
    /// version 3) until `keep_freed_memory`, and -1 (never purge) after it.
    #[test]
    fn the_allocator_keeps_freed_memory() {
        // SAFETY: reading an option word has no precondition.
        let read = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(read(), 1_000);
        }
        keep_freed_memory();
        assert_eq!(read(), -1);
    }
}
