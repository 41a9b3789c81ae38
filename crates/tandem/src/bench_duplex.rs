//! `tandem bench duplex`: both sides and the PGs as processes on loopback, measured from the
//! outside. Route request round trips at a fixed offered load, failover after kill -9 and after
//! SIGSTOP of the enabled side, and state transfer of a large state with the sender's route
//! latency during it. Each figure is one JSON line.

use crate::cluster::{Installation, PgCounts};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tandem_mds::tls::Security;
use tandem_mds::Side;

#[derive(clap::Args)]
pub struct DuplexBenchArgs {
    /// What to measure: rtt, failover, transfer (the processes, under load), transfer-pipeline
    /// (one state through the transfer sessions on loopback in this process, for states too
    /// large for a configuration file), throughput, or all (all but transfer-pipeline).
    #[arg(long, default_value = "all")]
    what: String,
    /// Offered loads for the round-trip figure, in calls per second over both PGs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    cps: Vec<f64>,
    /// How long each load runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Agents of the contact center for the round trips and failovers (enough to answer the
    /// offered load).
    #[arg(long, default_value_t = 20_000)]
    agents: u32,
    /// Agents of the contact center whose state is transferred (100,000 make about 46 MB).
    #[arg(long, default_value_t = 65_000)]
    transfer_agents: u32,
    /// Calls per second offered to the sender while it sends its state (0: no PGs, the sides
    /// pair alone).
    #[arg(long, default_value_t = 1_000.0)]
    transfer_cps: f64,
    /// Inputs per second offered for the throughput figure, over both PGs.
    #[arg(long, default_value_t = 200_000)]
    flood_inputs_per_s: u64,
    /// Where installations go (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(crate) const PG_NAMES: [&str; 2] = ["pg1", "pg2"];
/// Waits for starts, pairings and transfers (a side loads a configuration of millions of agents
/// for minutes).
const START_MS: u64 = 900_000;
/// Seconds of load before a round-trip measurement's window opens.
const WARMUP_S: u64 = 3;

pub(crate) fn gen_config(bin: &Path, dir: &Path, agents: u32) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("bench-{agents}-agents.toml"));
    if !path.exists() {
        let status = Command::new(bin)
            .args(["gen-config", "--agents", &agents.to_string()])
            .args(["--skill-groups", &(agents / 50).max(2).to_string()])
            .args(["--call-types", &(agents / 200).max(3).to_string()])
            .args(["--peripherals", "2", "--out"])
            .arg(&path)
            .status()?;
        anyhow::ensure!(status.success(), "gen-config failed");
    }
    Ok(path)
}

/// Both sides paired, both PGs offering `cps` in all, connected to both sides.
/// Benchmarks run with the product's timers, not the tests' (which check digests every second).
pub(crate) fn product_timers(topology: &mut tandem_model::topology::Topology) {
    topology.mds.digest_check_interval_ms =
        tandem_model::topology::MdsTimers::default().digest_check_interval_ms;
}

fn paired_under_load(install: &mut Installation, cps: f64, talk_s: u64, pg_args: &[&str]) {
    install.start_paired(START_MS);
    let config = install.config.clone();
    for name in PG_NAMES {
        install.start_pg_args(name, &config, cps / PG_NAMES.len() as f64, talk_s, pg_args);
    }
    for side in [Side::A, Side::B] {
        install.wait_pgs_reachable(side, PG_NAMES.len(), START_MS);
    }
}

fn worst(counts: &[PgCounts], f: impl Fn(&PgCounts) -> u64) -> u64 {
    counts.iter().map(f).max().unwrap_or(0)
}

pub(crate) fn lost(counts: &[PgCounts]) -> u64 {
    counts
        .iter()
        .map(|c| {
            (c.route_requests_sent - c.route_requests_answered.min(c.route_requests_sent))
                + c.route_requests_answered_more_than_once
                + c.route_requests_timed_out
                + (c.inputs_sent - c.inputs_acknowledged.min(c.inputs_sent))
        })
        .sum()
}

fn rtt(bin: &Path, dir: &Path, cc: &Path, cps: f64, seconds: u64) -> Result<()> {
    let mut install = Installation::new(bin, dir, "rtt", Some(cc), product_timers);
    // The login storm and the first calls settle before the measured window: the PGs leave
    // the requests they send in it out of their round-trip figures.
    let warmup_s = WARMUP_S.to_string();
    paired_under_load(&mut install, cps, 1, &["--rtt-warmup-s", &warmup_s]);
    std::thread::sleep(Duration::from_secs(WARMUP_S));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let counts = install.stop_pgs(&PG_NAMES);
    let elapsed = started.elapsed().as_secs_f64() + WARMUP_S as f64;
    let requests: u64 = counts.iter().map(|c| c.route_requests_sent).sum();
    println!(
        "{}",
        serde_json::json!({
            "bench": "duplex-route-rtt",
            "offered_cps": cps,
            "route_requests_per_s": (requests as f64 / elapsed).round(),
            "rtt_us_p50": worst(&counts, |c| c.route_rtt_us_p50),
            "rtt_us_p99": worst(&counts, |c| c.route_rtt_us_p99),
            "rtt_us_max": worst(&counts, |c| c.route_rtt_us_max),
            "lost_or_repeated": lost(&counts),
        })
    );
    Ok(())
}

fn failover(bin: &Path, dir: &Path, cc: &Path, how: &str) -> Result<()> {
    let mut install = Installation::new(bin, dir, "failover", Some(cc), product_timers);
    paired_under_load(&mut install, 1_000.0, 1, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let at = Instant::now();
    match how {
        "kill" => install.kill("side-a"),
        _ => install.pause("side-a"),
    }
    // Polled every millisecond: the side's own view of when it took over.
    let deadline = at + Duration::from_secs(10);
    let takeover = loop {
        if install
            .status(Side::B)
            .is_some_and(|s| s.sync_state() == "Isolated Enabled")
        {
            break at.elapsed();
        }
        anyhow::ensure!(Instant::now() < deadline, "B never took over");
        std::thread::sleep(Duration::from_millis(1));
    };
    // The failed side comes back and rejoins before the PGs stop: side B alone needs both PGs
    // for its majority, and a PG that has drained leaves.
    match how {
        "kill" => install.start_side(Side::A, &[]),
        _ => install.resume("side-a"),
    }
    install.wait_state(Side::A, "Paired Disabled", START_MS);
    std::thread::sleep(Duration::from_secs(1));
    let counts = install.stop_pgs(&PG_NAMES);
    println!(
        "{}",
        serde_json::json!({
            "bench": format!("duplex-failover-{how}"),
            "offered_cps": 1000,
            "b_enabled_ms": takeover.as_millis() as u64,
            // A request sent just before the failure is answered by B: about the time from the
            // failure to B's first route response.
            "longest_route_rtt_ms": worst(&counts, |c| c.route_rtt_us_max) / 1000,
            "timed_out": counts.iter().map(|c| c.route_requests_timed_out).sum::<u64>(),
            "lost_or_repeated": lost(&counts),
        })
    );
    Ok(())
}

fn transfer(bin: &Path, dir: &Path, agents: u32, cps: f64) -> Result<()> {
    let cc = gen_config(bin, dir, agents)?;
    let mut install = Installation::new(bin, dir, "transfer", Some(&cc), product_timers);
    install.start_side(Side::A, &[]);
    install.wait_status(Side::A, START_MS, "answering", |_| true);
    let config = install.config.clone();
    if cps > 0.0 {
        for name in PG_NAMES {
            install.start_pg_load(name, &config, cps / PG_NAMES.len() as f64, 60);
        }
        install.wait_state(Side::A, "Isolated Enabled", START_MS);
        // The login storm settles; the PGs' round trips then cover the load before, during
        // and after the transfer.
        std::thread::sleep(Duration::from_secs(5));
    }
    install.start_side(Side::B, &[]);
    install.wait_state(Side::B, "Paired Disabled", START_MS);
    install.wait_state(Side::A, "Paired Enabled", START_MS);
    let counts = if cps > 0.0 {
        std::thread::sleep(Duration::from_secs(1));
        install.stop_pgs(&PG_NAMES)
    } else {
        Vec::new()
    };
    // rttest sync: "when direction bytes ms stall-us role".
    let last_row = |side: Side, role: &str| -> Result<Vec<String>> {
        let text = install.rttest(side, "sync").context("rttest sync")?;
        let row = text
            .lines()
            .rev()
            .find(|l| l.ends_with(role))
            .with_context(|| format!("no transfer {role} on side {side}"))?;
        Ok(row.split_whitespace().map(str::to_string).collect())
    };
    let sent = last_row(Side::A, "sent")?;
    let received = last_row(Side::B, "received")?;
    let bytes: u64 = received[3].replace(',', "").parse()?;
    let ms: u64 = received[4].parse()?;
    let stall_us: u64 = sent[5].parse()?;
    let mut figures = serde_json::json!({
        "bench": "duplex-state-transfer",
        "agents": agents,
        "state_bytes": bytes,
        "end_to_end_ms": ms,
        "mb_per_s": ((bytes as f64 / 1e6) / (ms.max(1) as f64 / 1e3) * 10.0).round() / 10.0,
        "sender_cut_stall_us": stall_us,
        "offered_cps": cps,
    });
    if !counts.is_empty() {
        figures["route_rtt_us_p50"] = worst(&counts, |c| c.route_rtt_us_p50).into();
        figures["route_rtt_us_p99"] = worst(&counts, |c| c.route_rtt_us_p99).into();
        figures["route_rtt_us_max"] = worst(&counts, |c| c.route_rtt_us_max).into();
        figures["lost_or_repeated"] = lost(&counts).into();
    }
    println!("{figures}");
    Ok(())
}

/// Paired throughput: both PGs offer cheap inputs (peripheral re-reports) as fast as asked
/// beside a light call load; the rate is what both sides deliver, read from rttest.
fn throughput(bin: &Path, dir: &Path, cc: &Path, inputs_per_s: u64, seconds: u64) -> Result<()> {
    let mut install = Installation::new(bin, dir, "throughput", Some(cc), product_timers);
    install.start_paired(START_MS);
    let config = install.config.clone();
    let flood = (inputs_per_s / PG_NAMES.len() as u64).to_string();
    for name in PG_NAMES {
        install.start_pg_args(name, &config, 50.0, 1, &["--flood-inputs-per-s", &flood]);
    }
    std::thread::sleep(Duration::from_secs(3));
    let delivered = |side| install.status(side).map(|s| s.delivered()).unwrap_or(0);
    let (a0, b0, t0) = (delivered(Side::A), delivered(Side::B), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, b1, elapsed) = (
        delivered(Side::A),
        delivered(Side::B),
        t0.elapsed().as_secs_f64(),
    );
    let counts = install.stop_pgs(&PG_NAMES);
    println!(
        "{}",
        serde_json::json!({
            "bench": "duplex-paired-throughput",
            "offered_inputs_per_s": inputs_per_s,
            "a_delivered_per_s": ((a1 - a0) as f64 / elapsed).round(),
            "b_delivered_per_s": ((b1 - b0) as f64 / elapsed).round(),
            "route_rtt_us_p99": worst(&counts, |c| c.route_rtt_us_p99),
            "lost_or_repeated": lost(&counts),
        })
    );
    Ok(())
}

/// The transfer pipeline alone: a contact center of `agents` generated in memory (a TOML file
/// of millions of agents takes more memory to parse than the state it describes), its router
/// state sent through the real transfer sessions over loopback TCP.
fn transfer_pipeline(agents: u32) -> Result<()> {
    use tandem_model::generate::{generate, GenerateParams};
    let cc = generate(&GenerateParams {
        agents,
        skill_groups: (agents / 50).max(2),
        call_types: (agents / 200).max(3),
        peripherals: 2,
        skill_groups_per_agent_max: 3,
        time_zone: "UTC".into(),
        seed: 1,
    });
    let router = tandem_router::Router::from_contact_center(&cc, 1_795_255_200_000)?;
    drop(cc);
    let state_bytes = router.state_size();
    let state = router.snapshot();
    drop(router);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let version = tandem_central::side::logic_version(env!("CARGO_PKG_VERSION"));
    // The same state through plaintext and through TLS with a central certificate of a CA of
    // its own, in one run.
    let tls = crate::certs::ephemeral_security(tandem_mds::tls::Role::Central, "side-a")?;
    for (name, security) in [("plaintext", Security::InsecurePlaintext), ("tls", tls)] {
        let (sent, received) = runtime
            .block_on(tandem_central::transfer::measure_loopback(
                state.clone(),
                version.clone(),
                security,
            ))
            .map_err(anyhow::Error::msg)?;
        println!(
            "{}",
            serde_json::json!({
                "bench": "transfer-pipeline-loopback",
                "link": name,
                "agents": agents,
                "state_bytes": state_bytes,
                "sender_ms": sent.duration_ms,
                "end_to_end_ms": received.duration_ms,
                "mb_per_s": ((state_bytes as f64 / 1e6) / (received.duration_ms.max(1) as f64 / 1e3) * 10.0).round() / 10.0,
            })
        );
    }
    Ok(())
}

pub fn run(args: DuplexBenchArgs) -> Result<()> {
    let bin = std::env::current_exe()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("tandem-bench-duplex"));
    std::fs::create_dir_all(&dir)?;
    let all = args.what == "all";
    if all || ["rtt", "failover", "throughput"].contains(&args.what.as_str()) {
        let cc = gen_config(&bin, &dir, args.agents)?;
        if all || args.what == "rtt" {
            for &cps in &args.cps {
                rtt(&bin, &dir, &cc, cps, args.seconds)?;
            }
        }
        if all || args.what == "throughput" {
            throughput(&bin, &dir, &cc, args.flood_inputs_per_s, args.seconds)?;
        }
        if all || args.what == "failover" {
            failover(&bin, &dir, &cc, "kill")?;
            failover(&bin, &dir, &cc, "sigstop")?;
        }
    }
    if all || args.what == "transfer" {
        transfer(&bin, &dir, args.transfer_agents, args.transfer_cps)?;
    }
    if args.what == "transfer-pipeline" {
        transfer_pipeline(args.transfer_agents)?;
    }
    Ok(())
}
