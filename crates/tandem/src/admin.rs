//! The logger and configuration subcommands: `tandem logger run|seed|verify` and
//! `tandem config apply|export`.

use crate::processes::runtime;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_logger::db::CentralDb;
use tandem_logger::run as logger;
use tandem_mds::{AdminReply, AdminRequest, Side};
use tandem_model::config::ConfigChange;
use tandem_model::topology::Topology;

#[derive(clap::Subcommand)]
pub enum LoggerCommand {
    /// Runs a side's logger.
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_parser = crate::processes::parse_side)]
        side: Side,
    },
    /// Seeds a side's empty central database from a contact-center file (the topology's by
    /// default).
    Seed {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_parser = crate::processes::parse_side)]
        side: Side,
        #[arg(long)]
        contact_center: Option<PathBuf>,
    },
    /// Compares both sides' central databases table by table; exits with status 1 when they
    /// differ.
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Applies a configuration change (TOML or JSON: `ops`, each an `upsert` of an object or a
    /// `delete` of a reference) through the side that orders input, and waits until both
    /// loggers have written it.
    Apply {
        file: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// How long to wait for both central databases to hold the change (0: do not wait).
        #[arg(long, default_value_t = 10_000)]
        wait_logged_ms: u64,
    },
    /// Prints the router's whole configuration as contact-center TOML.
    Export {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn logger_command(command: LoggerCommand) -> Result<()> {
    match command {
        LoggerCommand::Run { config, side } => {
            let topology = Topology::load(&config)?;
            let security = crate::certs::security(&topology, crate::certs::side_cert_name(side))?;
            runtime()?.block_on(async move {
                tokio::select! {
                    result = logger::run(topology, side, security) => result.map_err(anyhow::Error::from),
                    _ = crate::processes::stopped() => Ok(()),
                }
            })
        }
        LoggerCommand::Seed {
            config,
            side,
            contact_center,
        } => {
            let topology = Topology::load(&config)?;
            let cc = contact_center.unwrap_or_else(|| topology.resolve(&topology.contact_center));
            let version = runtime()?.block_on(seed_side(&topology, side, &cc))?;
            println!("side {side}'s central database seeded: configuration version {version}");
            Ok(())
        }
        LoggerCommand::Verify { config } => {
            let topology = Topology::load(&config)?;
            let report = runtime()?.block_on(async {
                let a = CentralDb::open(&logger::location(&topology, Side::A)).await?;
                let b = CentralDb::open(&logger::location(&topology, Side::B)).await?;
                anyhow::Ok(tandem_logger::verify::verify(&a, &b).await?)
            })?;
            print!("{}", report.render(["side A", "side B"]));
            if !report.identical() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Seeds one side's central database (creating its data directory).
pub async fn seed_side(topology: &Topology, side: Side, cc: &Path) -> Result<u64> {
    let location = logger::location(topology, side);
    if let tandem_logger::db::DbLocation::Sqlite(path) = &location {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    Ok(logger::seed(&location, cc).await?)
}

fn public(topology: &Topology, side: Side) -> std::net::SocketAddr {
    match side {
        Side::A => topology.side_a.public,
        Side::B => topology.side_b.public,
    }
}

/// One configuration request to one side.
pub async fn ask(
    topology: &Topology,
    side: Side,
    request: &AdminRequest,
    timeout_ms: u64,
) -> Result<AdminReply> {
    let security = crate::certs::operator_security(topology)?;
    Ok(tandem_mds::admin::ask(public(topology, side), request, timeout_ms, &security).await?)
}

/// Asks side A, then side B when A does not order input.
pub async fn ask_ordering_side(topology: &Topology, request: &AdminRequest) -> Result<AdminReply> {
    let sides = [
        ("a", public(topology, Side::A)),
        ("b", public(topology, Side::B)),
    ];
    let security = crate::certs::operator_security(topology)?;
    Ok(tandem_mds::admin::ask_ordering_side(sides, request, 5_000, &security).await?)
}

/// A side's logger status line, parsed: (committed config version, router config version).
pub async fn logged_config_version(topology: &Topology, side: Side) -> Result<u64> {
    let security = crate::certs::operator_security(topology)?;
    let text =
        tandem_central::rttest::query(public(topology, side), "logger", 1_000, &security).await?;
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("config_version="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("side {side}'s logger status: {text:?}"))
}

pub fn parse_change(path: &Path) -> Result<ConfigChange> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let change: ConfigChange = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?
    };
    Ok(change)
}

pub fn config_command(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Apply {
            file,
            config,
            wait_logged_ms,
        } => {
            let topology = Topology::load(&config)?;
            let mut change = parse_change(&file)?;
            // The side adds the certificate this tool presents.
            change.author = format!(
                "operator {}",
                std::env::var("USER").unwrap_or_else(|_| "(unknown user)".into())
            );
            runtime()?.block_on(async {
                match ask_ordering_side(&topology, &AdminRequest::ApplyConfig(change)).await? {
                    AdminReply::Applied {
                        config_version,
                        recovery_key,
                    } => {
                        println!("applied: configuration version {config_version} (RecoveryKey {recovery_key})");
                        if wait_logged_ms > 0 {
                            wait_logged(&topology, config_version, wait_logged_ms).await?;
                            println!("written by both loggers");
                        }
                        Ok(())
                    }
                    AdminReply::Rejected { reason } => {
                        eprintln!("rejected: {reason}");
                        std::process::exit(1);
                    }
                    other => bail!("unexpected answer: {other:?}"),
                }
            })
        }
        ConfigCommand::Export { config } => {
            let topology = Topology::load(&config)?;
            let reply = runtime()?.block_on(ask_ordering_side_or_any(&topology))?;
            match reply {
                AdminReply::Configuration {
                    contact_center,
                    config_version,
                    ..
                } => {
                    println!("# configuration version {config_version}");
                    print!("{}", contact_center.to_toml_string());
                    Ok(())
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
    }
}

/// Export works on either side that holds a state.
async fn ask_ordering_side_or_any(topology: &Topology) -> Result<AdminReply> {
    ask_ordering_side(topology, &AdminRequest::ExportConfig).await
}

/// Waits until both sides' loggers have committed configuration version `version`.
pub async fn wait_logged(topology: &Topology, version: u64, timeout_ms: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    for side in [Side::A, Side::B] {
        loop {
            if logged_config_version(topology, side).await.unwrap_or(0) >= version {
                break;
            }
            if Instant::now() >= deadline {
                bail!("side {side}'s logger has not written configuration version {version} within {timeout_ms} ms");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_change_parses_and_applies_to_the_example_contact_center() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let change = parse_change(&root.join("examples/config-change.toml")).unwrap();
        assert_eq!(change.ops.len(), 2);
        let cc =
            tandem_model::config::ContactCenter::load(&root.join("examples/contact-center.toml"))
                .unwrap();
        let mut router = tandem_router::Router::from_contact_center(&cc, 0).unwrap();
        let outputs = router.apply(
            1,
            &tandem_model::input::OrderedInput {
                time_ms: 0,
                input: tandem_model::input::Input::ConfigChange(change),
            },
        );
        assert!(
            outputs.iter().any(|o| matches!(
                o,
                tandem_model::output::Output::ConfigResult {
                    config_version: 2,
                    error: None
                }
            )),
            "{outputs:?}"
        );
        // Export gives back what the router holds: building from it gives the same state.
        let exported = router.contact_center();
        let rebuilt = tandem_router::Router::from_contact_center_at(&exported, 2, 7, 0).unwrap();
        assert_eq!(rebuilt.contact_center(), exported);
    }
}
