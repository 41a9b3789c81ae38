//! `tandem`: the one binary with every subcommand. Only this crate knows about the command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tandem::{bench, demo};
use tandem_model::config::ContactCenter;
use tandem_model::generate::{generate, GenerateParams};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "A duplexed contact-center central controller"
)]
struct Cli {
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
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
    }
}
