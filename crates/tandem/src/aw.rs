//! `tandem distributor` (a Distributor AW) and `tandem aw status|digest`.

use crate::processes::runtime;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use tandem_db::aw::AwDb;
use tandem_db::DbLocation;
use tandem_distributor::run::{DistributorSettings, DistributorStatus};
use tandem_mds::tls::Security;
use tandem_model::topology::{DistributorEntry, SideName, Topology};

/// The SQLite file of an AW database in the distributor's data directory.
pub const AW_SQLITE_FILE: &str = "aw.db";

#[derive(clap::Args)]
pub struct DistributorArgs {
    #[arg(long)]
    config: PathBuf,
    /// The distributor's name in the topology.
    #[arg(long)]
    name: String,
}

#[derive(clap::Subcommand)]
pub enum AwCommand {
    /// A distributor's feed, AW database and updateaw status, from its HTTP API.
    Status {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// Print the JSON as the API gives it.
        #[arg(long)]
        json: bool,
    },
    /// The digest of a distributor's AW database real-time tables, with the frame it holds
    /// (compare with `rttest feed-digest`'s aw_digest at the same frame).
    Digest {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
}

/// Where a distributor's AW database is.
pub fn aw_location(topology: &Topology, entry: &DistributorEntry) -> DbLocation {
    match &entry.aw_db_url {
        Some(url) => DbLocation::Postgres(url.clone()),
        None => DbLocation::Sqlite(topology.resolve(&entry.data_dir).join(AW_SQLITE_FILE)),
    }
}

pub fn settings(topology: &Topology, name: &str) -> Result<DistributorSettings> {
    let entry = topology.distributor(name)?;
    let a = ("a".to_string(), topology.side_a.public);
    let b = ("b".to_string(), topology.side_b.public);
    let sides = match entry.preferred_side {
        SideName::A => [a, b],
        SideName::B => [b, a],
    };
    let site_peers = topology
        .distributors
        .iter()
        .filter(|d| d.site == entry.site && d.name != entry.name)
        .map(|d| (d.name.clone(), d.public))
        .collect();
    let distributors = topology
        .distributors
        .iter()
        .filter(|d| d.name != entry.name)
        .map(|d| (d.name.clone(), d.public))
        .collect();
    Ok(DistributorSettings {
        security: crate::certs::security(topology, &entry.name)?,
        tokens_file: topology.tokens_file(),
        limits: topology.limits.clone(),
        name: entry.name.clone(),
        sides,
        db: aw_location(topology, entry),
        http: entry.public,
        site_peers,
        distributors,
    })
}

pub fn distributor(args: DistributorArgs) -> Result<()> {
    let topology = Topology::load(&args.config)?;
    let settings = settings(&topology, &args.name)?;
    if let DbLocation::Sqlite(path) = &settings.db {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    tracing::info!(
        distributor = %settings.name,
        http = %settings.http,
        preferred = %settings.sides[0].0,
        "the distributor starts; its web client is at {}://{}/",
        settings.security.http_scheme(),
        settings.http
    );
    runtime()?.block_on(tandem_distributor::run::run(settings))?;
    Ok(())
}

/// A GET on a distributor's HTTP API with the operator's certificate: the body of a 200
/// answer.
pub async fn http_get(
    security: &Security,
    addr: SocketAddr,
    path: &str,
    timeout_ms: u64,
) -> Result<String> {
    Ok(tandem_distributor::http::get(addr, path, timeout_ms, security, None).await?)
}

pub async fn status(security: &Security, addr: SocketAddr) -> Result<DistributorStatus> {
    let body = http_get(security, addr, "/api/status", 3_000).await?;
    let value: serde_json::Value = serde_json::from_str(&body)?;
    Ok(serde_json::from_value(value["status"].clone())?)
}

pub fn aw_command(command: AwCommand) -> Result<()> {
    match command {
        AwCommand::Status { config, name, json } => {
            let topology = Topology::load(&config)?;
            let entry = topology.distributor(&name)?;
            let security = crate::certs::operator_security(&topology)?;
            let body = runtime()?
                .block_on(http_get(&security, entry.public, "/api/status", 3_000))
                .with_context(|| format!("asking distributor {name} at {}", entry.public))?;
            if json {
                println!("{body}");
                return Ok(());
            }
            let value: serde_json::Value = serde_json::from_str(&body)?;
            let s: DistributorStatus = serde_json::from_value(value["status"].clone())?;
            let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            println!("distributor {} (AW database on {})", s.name, s.backend);
            println!(
                "feed        side={} generation={} frame={} epoch={} frames={} snapshots={} \
                 subscriptions={} lag_ms={}",
                s.side.as_deref().unwrap_or("-"),
                s.generation,
                s.frame_number,
                s.epoch,
                s.frames,
                s.snapshots,
                s.subscriptions,
                opt(s.feed_lag_ms)
            );
            println!(
                "aw_db       frame={} lag_ms={} writes={} rows_written={} queued={} \
                 write_failures={} unwritten={}",
                s.aw_db_frame,
                opt(s.aw_db_lag_ms),
                s.aw_db_writes,
                s.aw_db_rows_written,
                s.aw_db_writes_queued,
                s.aw_db_write_failures,
                s.aw_db_updates_unwritten
            );
            println!(
                "updateaw    state={} config_version={} frame_config_version={} rebuilds={} \
                 rebuild_loops={}",
                s.updateaw,
                s.config_version.map_or("-".into(), |v| v.to_string()),
                s.frame_config_version,
                s.rebuilds,
                s.rebuild_loops
            );
            println!(
                "rtclient    clients={} disconnected_slow={}",
                s.clients, s.clients_disconnected_slow
            );
            Ok(())
        }
        AwCommand::Digest { config, name } => {
            let topology = Topology::load(&config)?;
            let entry = topology.distributor(&name)?;
            let location = aw_location(&topology, entry);
            runtime()?.block_on(async {
                let db = AwDb::open(&location).await?;
                let before = db.feed_state().await?.map_or(0, |s| s.frame_number);
                let digest = db.real_time_digest().await?;
                let after = db.feed_state().await?.map_or(0, |s| s.frame_number);
                // A frame written while reading would mix two frames: say so.
                println!(
                    "aw-digest frame={after} aw_digest={digest:032x} settled={}",
                    before == after
                );
                anyhow::Ok(())
            })
        }
    }
}
