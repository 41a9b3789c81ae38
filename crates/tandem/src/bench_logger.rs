//! `tandem bench logger`: the loggers of a paired system on loopback, measured from the outside.
//! Historical write throughput under a steady call load (side A's central database on SQLite,
//! side B's on PostgreSQL when a server is given), configuration change latency from
//! `tandem config apply` to committed in both central databases, and a logger's recovery after
//! a long time down. Each figure is one JSON line.

use crate::bench_duplex::{gen_config, lost, product_timers, PG_NAMES};
use crate::cluster::Installation;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_logger::db::CentralDb;
use tandem_logger::schema::{self, TableKind};
use tandem_logger::test_postgres::PostgresDatabase;
use tandem_mds::Side;
use tandem_model::config::{ConfigChange, ConfigObject, ConfigOp};

#[derive(clap::Args)]
pub struct LoggerBenchArgs {
    /// What to measure: write, config, recovery, or all.
    #[arg(long, default_value = "all")]
    what: String,
    /// Calls per second over both PGs for the write figure.
    #[arg(long, default_value_t = 10_000.0)]
    write_cps: f64,
    /// How long the write figure's window is.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Configuration changes applied for the latency figure, one after another.
    #[arg(long, default_value_t = 100)]
    changes: u32,
    /// Calls per second during the configuration changes and the recovery.
    #[arg(long, default_value_t = 1_000.0)]
    cps: f64,
    /// How long the recovering logger is down.
    #[arg(long, default_value_t = 600)]
    down_s: u64,
    /// The side whose logger is down for the recovery figure (side B's central database is the
    /// PostgreSQL one when `--postgres-url` is given).
    #[arg(long, default_value = "a", value_parser = crate::processes::parse_side)]
    recovering_side: Side,
    /// Rows each side holds for its logger (`[logger] buffer_rows`; default the product's).
    /// A bound below what the load writes while the logger is down makes the side release rows,
    /// which the returning logger then recovers from its peer's central database.
    #[arg(long)]
    buffer_rows: Option<u64>,
    /// Agents of the contact center.
    #[arg(long, default_value_t = 20_000)]
    agents: u32,
    /// The share of the agents the PGs' simulated calls keep busy (`tandem pg --occupancy`):
    /// ring, talk, hold and after-call work are scaled so that the agents keep up with the
    /// offered load and the router's queues stay short, as in a contact center staffed for it.
    /// 0 offers the PGs' default mix with 1 s talk times instead, whose 20 s of after-call work
    /// leave most calls queued at high loads.
    #[arg(long, default_value_t = 0.85)]
    occupancy: f64,
    /// An admin URL of a PostgreSQL server (a role that may create databases): side B's central
    /// database goes to a new database there, so that one run measures both backends.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Where installations go (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const START_MS: u64 = 900_000;
/// Seconds of load before a measured window opens: the login storm and the first calls settle.
const WARMUP_S: u64 = 5;
/// How often the write figure samples each side's logger buffer.
const SAMPLE_MS: u64 = 1_000;
/// Samples per minute of the write figure's window, for its per-minute means.
const MINUTE_SAMPLES: usize = (60_000 / SAMPLE_MS) as usize;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A paired installation whose side B is on a new PostgreSQL database when a server is given.
fn installation(
    bin: &Path,
    dir: &Path,
    name: &str,
    cc: &Path,
    args: &LoggerBenchArgs,
) -> Result<(Installation, Option<PostgresDatabase>)> {
    let postgres_url = args.postgres_url.as_deref();
    let database = match postgres_url {
        Some(url) => Some(runtime()?.block_on(PostgresDatabase::create(url))),
        None => None,
    };
    let url = database.as_ref().map(|d| d.url.clone());
    let install = Installation::new(bin, dir, name, Some(cc), |t| {
        product_timers(t);
        t.side_b.central_db_url = url;
        if let Some(rows) = args.buffer_rows {
            t.logger.buffer_rows = rows;
        }
    });
    Ok((install, database))
}

fn start_load(install: &mut Installation, cps: f64, occupancy: f64) {
    install.start_paired(START_MS);
    let config = install.config.clone();
    let occupancy_arg = occupancy.to_string();
    let extra: &[&str] = if occupancy > 0.0 {
        &["--occupancy", &occupancy_arg]
    } else {
        &[]
    };
    for name in PG_NAMES {
        install.start_pg_args(name, &config, cps / PG_NAMES.len() as f64, 1, extra);
    }
    for side in [Side::A, Side::B] {
        install.wait_pgs_reachable(side, PG_NAMES.len(), START_MS);
    }
}

/// The number after `word` in a side's `rttest summary` line.
fn summary_number(summary: &str, word: &str) -> Option<u64> {
    let mut words = summary.split_whitespace();
    words.find(|w| *w == word)?;
    words.next()?.parse().ok()
}

fn number(status: &BTreeMap<String, String>, key: &str) -> u64 {
    status.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Rows in the ordered tables of a side's central database.
fn ordered_rows(install: &Installation, side: Side) -> Result<u64> {
    let rt = runtime()?;
    let location = tandem_logger::run::location(&install.topology, side);
    let db = rt.block_on(CentralDb::open(&location))?;
    let mut rows = 0;
    for table in schema::tables() {
        if table.kind == TableKind::Ordered {
            rows += rt.block_on(db.row_count(table.name))?;
        }
    }
    Ok(rows)
}

fn backend(install: &Installation, side: Side) -> &'static str {
    match tandem_logger::run::location(&install.topology, side) {
        tandem_logger::db::DbLocation::Sqlite(_) => "sqlite",
        tandem_logger::db::DbLocation::Postgres(_) => "postgresql",
    }
}

/// Rows written per second by each logger over a window of steady load, and whether its
/// side's buffer grew: the held rows are sampled every second.
fn write(bin: &Path, dir: &Path, cc: &Path, args: &LoggerBenchArgs) -> Result<()> {
    let (mut install, _database) = installation(bin, dir, "logger-write", cc, args)?;
    start_load(&mut install, args.write_cps, args.occupancy);
    std::thread::sleep(Duration::from_secs(WARMUP_S));
    let rows_before = [
        ordered_rows(&install, Side::A)?,
        ordered_rows(&install, Side::B)?,
    ];
    let delivered_before = install.status(Side::A).map_or(0, |s| s.delivered());
    let started = Instant::now();
    let mut held: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    // A side too busy to answer rttest in time misses a sample; the figure says how many.
    let mut missed = [0u64; 2];
    // Side A's router queue, sampled with the buffers: a queue that grows means the load
    // outruns the agents, not the loggers.
    let mut queued: Vec<u64> = Vec::new();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_millis(SAMPLE_MS));
        for (i, side) in [Side::A, Side::B].into_iter().enumerate() {
            match install.logger_status(side) {
                Some(status) => held[i].push(number(&status, "held_rows")),
                None => missed[i] += 1,
            }
        }
        if let Some(calls) = install
            .rttest(Side::A, "summary")
            .and_then(|summary| summary_number(&summary, "queued"))
        {
            queued.push(calls);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rows_after = [
        ordered_rows(&install, Side::A)?,
        ordered_rows(&install, Side::B)?,
    ];
    let delivered_after = install.status(Side::A).map_or(0, |s| s.delivered());
    let counts = install.stop_pgs(&PG_NAMES);
    let requests: u64 = counts.iter().map(|c| c.route_requests_sent).sum();
    for (i, side) in [Side::A, Side::B].into_iter().enumerate() {
        let samples = &held[i];
        let half = samples.len() / 2;
        let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
        println!(
            "{}",
            serde_json::json!({
                "bench": "logger-historical-write",
                "side": side.to_string(),
                "backend": backend(&install, side),
                "offered_cps": args.write_cps,
                "occupancy": args.occupancy,
                "route_requests_per_s": (requests as f64 / (elapsed + WARMUP_S as f64)).round(),
                "ordered_messages_per_s": ((delivered_after - delivered_before) as f64 / elapsed).round(),
                "rows_per_s": ((rows_after[i] - rows_before[i]) as f64 / elapsed).round(),
                "held_rows_mean_first_half": mean(&samples[..half]).round(),
                "held_rows_mean_second_half": mean(&samples[half..]).round(),
                "held_rows_mean_by_minute": samples
                    .chunks(MINUTE_SAMPLES)
                    .map(|minute| mean(minute).round())
                    .collect::<Vec<_>>(),
                "held_rows_max": samples.iter().max().copied().unwrap_or(0),
                "held_rows_last": samples.last().copied().unwrap_or(0),
                "samples_missed": missed[i],
                "router_queued_calls_max": queued.iter().max().copied().unwrap_or(0),
                "router_queued_calls_last": queued.last().copied().unwrap_or(0),
                "lost_or_repeated": lost(&counts),
            })
        );
    }
    Ok(())
}

/// `tandem config apply` of one change after another under load; each is timed from the
/// command's start until it reports the change committed by both loggers (the command waits
/// for that), so each figure includes starting the process and connecting.
fn config(bin: &Path, dir: &Path, cc: &Path, args: &LoggerBenchArgs) -> Result<()> {
    let (mut install, _database) = installation(bin, dir, "logger-config", cc, args)?;
    start_load(&mut install, args.cps, args.occupancy);
    std::thread::sleep(Duration::from_secs(WARMUP_S));
    let contact_center = tandem_model::config::ContactCenter::load(cc)?;
    let mut agent = contact_center.agents[0].clone();
    let mut ms = Vec::with_capacity(args.changes as usize);
    for n in 0..args.changes {
        agent.name = format!("renamed {n}");
        let change = ConfigChange {
            ops: vec![ConfigOp::Upsert(ConfigObject::Agent(agent.clone()))],
            author: String::new(),
        };
        let path = install.dir.join("bench-change.toml");
        std::fs::write(&path, toml::to_string(&change)?)?;
        let started = Instant::now();
        let out = install.tandem(&["config", "apply", &path.display().to_string()]);
        let elapsed = started.elapsed();
        anyhow::ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("both loggers"),
            "config apply: {out:?}"
        );
        ms.push(elapsed.as_secs_f64() * 1e3);
    }
    let counts = install.stop_pgs(&PG_NAMES);
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    let round = |v: f64| (v * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "logger-config-change",
            "backends": [backend(&install, Side::A), backend(&install, Side::B)],
            "offered_cps": args.cps,
            "occupancy": args.occupancy,
            "changes": ms.len(),
            "apply_to_committed_ms_p50": round(at(0.5)),
            "apply_to_committed_ms_p99": round(at(0.99)),
            "apply_to_committed_ms_max": round(at(1.0)),
            "lost_or_repeated": lost(&counts),
        })
    );
    Ok(())
}

/// A side's logger is killed under load and started again `down_s` later; the figure is the
/// time from its start until it has committed everything its side had delivered at that start
/// (the rows its side held, and those it recovered from the peer when the side's buffer had
/// released them). Then `logger verify` must find both central databases identical.
fn recovery(bin: &Path, dir: &Path, cc: &Path, args: &LoggerBenchArgs) -> Result<()> {
    let (mut install, _database) = installation(bin, dir, "logger-recovery", cc, args)?;
    start_load(&mut install, args.cps, args.occupancy);
    std::thread::sleep(Duration::from_secs(WARMUP_S));
    let side = args.recovering_side;
    let logger = format!("logger-{}", Installation::side_name(side));
    install.kill(&logger);
    std::thread::sleep(Duration::from_secs(args.down_s));
    let before = install.logger_status(side).context("rttest logger")?;
    let target = number(&before, "delivered_through");
    let started = Instant::now();
    install.start_logger(side);
    let deadline = started + Duration::from_millis(START_MS);
    loop {
        let status = install.logger_status(side).context("rttest logger")?;
        if status.get("connected").map(String::as_str) == Some("true")
            && number(&status, "committed_through") >= target
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no recovery: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovery_ms = started.elapsed().as_millis() as u64;
    let counts = install.stop_pgs(&PG_NAMES);
    install.wait_loggers_caught_up(START_MS);
    let out = install.tandem(&["logger", "verify"]);
    let identical = out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("the central databases are identical");
    // The logger's own log says whether it recovered rows from its peer.
    let logger_log =
        std::fs::read_to_string(install.dir.join("logs").join(format!("{logger}.err")))
            .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "bench": "logger-recovery",
            "side": side.to_string(),
            "backend": backend(&install, side),
            "offered_cps": args.cps,
            "occupancy": args.occupancy,
            "down_s": args.down_s,
            "held_rows_at_restart": number(&before, "held_rows"),
            "released_rows_at_restart": number(&before, "dropped_rows"),
            "recovered_from_peer": logger_log.contains("recovered from the peer"),
            "recovery_ms": recovery_ms,
            "verify_identical": identical,
            "lost_or_repeated": lost(&counts),
        })
    );
    Ok(())
}

pub fn run(args: LoggerBenchArgs) -> Result<()> {
    let bin = std::env::current_exe()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("tandem-bench-logger"));
    std::fs::create_dir_all(&dir)?;
    let cc = gen_config(&bin, &dir, args.agents)?;
    let all = args.what == "all";
    if all || args.what == "write" {
        write(&bin, &dir, &cc, &args)?;
    }
    if all || args.what == "config" {
        config(&bin, &dir, &cc, &args)?;
    }
    if all || args.what == "recovery" {
        recovery(&bin, &dir, &cc, &args)?;
    }
    Ok(())
}
