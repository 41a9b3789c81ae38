//! `tandem bench aw`: the real-time tier of a whole system on loopback, measured from the
//! outside. Both sides, both loggers, both PGs with load and the distributors run as processes;
//! this process is the WebSocket clients.
//!
//! - Freshness: for every agent state change, the time from when the enabled side ordered the
//!   PG's event to (a) the commit that put it in the AW database (the distributor measures this
//!   per commit) and (b) its arrival at a WebSocket client subscribed to every agent.
//! - Fan-out: with many distributors and many WebSocket clients (each a team wallboard of one
//!   skill group), how late each delta reaches each client after its frame was made, how far
//!   each distributor's AW database lags, and what each process costs in CPU.
//!
//! Each run prints one JSON line.

use crate::bench_duplex::{gen_config, product_timers, PG_NAMES};
use crate::cluster::Installation;
use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_distributor::run::wall_ms;
use tandem_mds::tls::Security;
use tandem_mds::Side;
use tandem_model::topology::SideName;
use tokio_tungstenite::tungstenite::Message;

/// Waits for starts and for every distributor's first initialization.
const START_MS: u64 = 900_000;
/// The longest message a client takes (the snapshot of 100,000 agents is tens of MB).
const CLIENT_MESSAGE_BYTES_MAX: usize = 512 << 20;
/// Clients connect in batches of this many, so the listener's backlog never overflows.
const CONNECT_BATCH: usize = 50;
const LATENCY_MS_MAX: u64 = 600_000;

#[derive(clap::Args)]
pub struct AwBenchArgs {
    /// Calls per second over both PGs; each rate is a run of its own.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    cps: Vec<f64>,
    #[arg(long, default_value_t = 100_000)]
    agents: u32,
    /// Distributors, all fed by side A; the first one serves the WebSocket clients.
    #[arg(long, default_value_t = 1)]
    distributors: usize,
    /// WebSocket clients each subscribed to one skill group (a team wallboard), on the first
    /// distributor.
    #[arg(long, default_value_t = 0)]
    wallboards: usize,
    /// Whether a WebSocket client follows every agent, measuring freshness.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    agent_client: bool,
    /// Seconds of load before the measured window opens.
    #[arg(long, default_value_t = 20)]
    warmup_s: u64,
    /// The measured window (the distributors report the last 60 seconds: keep it at 60 or
    /// less for the AW database figure to cover exactly the window).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The share of agents the calls keep busy (`tandem pg --occupancy`).
    #[arg(long, default_value_t = 0.85)]
    occupancy: f64,
    /// Where installations go (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(LATENCY_MS_MAX, 2).expect("valid bounds")
}

/// What the clients measured inside the window.
#[derive(Default)]
struct Measured {
    /// Arrival minus ordered time of each agent state change.
    agent_freshness: Option<Histogram<u64>>,
    /// Arrival minus frame time of each wallboard delta.
    wallboard_delay: Option<Histogram<u64>>,
}

struct Clients {
    measuring: AtomicBool,
    measured: Mutex<Measured>,
    messages: AtomicU64,
    closed: AtomicU64,
}

impl Clients {
    fn record(&self, which: fn(&mut Measured) -> &mut Option<Histogram<u64>>, value: i64) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        let h = which(&mut measured).get_or_insert_with(histogram);
        h.saturating_record(value.max(0) as u64);
    }
}

type Socket = crate::watch::WebSocket;

async fn connect(security: &Security, addr: SocketAddr, subscribe: Value) -> Result<Socket> {
    let mut socket =
        crate::watch::websocket(security, addr, None, CLIENT_MESSAGE_BYTES_MAX).await?;
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    Ok(socket)
}

/// Follows every agent: each state change is a freshness sample at its arrival.
async fn agent_client(mut socket: Socket, clients: Arc<Clients>) {
    let mut since: HashMap<u64, u64> = HashMap::new();
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let arrived_ms = wall_ms() as i64;
        clients.messages.fetch_add(1, Ordering::Relaxed);
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let rows = match m["type"].as_str() {
            Some("snapshot") => {
                since.clear();
                &m["rows"]
            }
            Some("delta") => &m["upserts"],
            _ => continue,
        };
        let delta = m["type"] == "delta";
        for row in rows.as_array().into_iter().flatten() {
            let (Some(agent), Some(changed)) = (
                row["agent_id"].as_u64(),
                row["date_time_last_state_change_ms"].as_u64(),
            ) else {
                continue;
            };
            let before = since.insert(agent, changed);
            if delta && before.is_some_and(|b| b != changed) {
                clients.record(|m| &mut m.agent_freshness, arrived_ms - changed as i64);
            }
        }
    }
    clients.closed.fetch_add(1, Ordering::Relaxed);
}

#[derive(Deserialize)]
struct FrameTime {
    time_ms: u64,
}

#[derive(Deserialize)]
struct WallboardMessage {
    #[serde(rename = "type")]
    kind: String,
    frame: Option<FrameTime>,
}

/// One team wallboard: each delta's delay after its frame was made.
async fn wallboard(mut socket: Socket, clients: Arc<Clients>) {
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let arrived_ms = wall_ms() as i64;
        clients.messages.fetch_add(1, Ordering::Relaxed);
        if let Ok(m) = serde_json::from_str::<WallboardMessage>(&text) {
            if let (true, Some(frame)) = (m.kind == "delta", m.frame) {
                clients.record(
                    |m| &mut m.wallboard_delay,
                    arrived_ms - frame.time_ms as i64,
                );
            }
        }
    }
    clients.closed.fetch_add(1, Ordering::Relaxed);
}

/// CPU seconds (user and system) a process has used, from /proc.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / per_s.max(1) as f64)
}

fn own_cpu_s() -> f64 {
    cpu_s(std::process::id()).unwrap_or(0.0)
}

fn percentiles(h: &Option<Histogram<u64>>) -> Value {
    match h {
        Some(h) if !h.is_empty() => json!({
            "samples": h.len(),
            "p50_ms": h.value_at_quantile(0.50),
            "p99_ms": h.value_at_quantile(0.99),
            "max_ms": h.max(),
        }),
        _ => Value::Null,
    }
}

fn one_run(bin: &Path, dir: &Path, cc: &Path, args: &AwBenchArgs, cps: f64) -> Result<()> {
    let name = format!("aw-{cps}");
    let mut install = Installation::new(bin, dir, &name, Some(cc), |t| {
        product_timers(t);
        for d in &mut t.distributors {
            d.preferred_side = SideName::A;
        }
        for n in 2..=args.distributors {
            crate::cluster::add_distributor(t, &format!("aw{n}"), SideName::A, None);
        }
    });
    // Each side starts with its logger.
    install.start_paired(START_MS);
    let config = install.config.clone();
    let occupancy = args.occupancy.to_string();
    for pg in PG_NAMES {
        install.start_pg_args(
            pg,
            &config,
            cps / PG_NAMES.len() as f64,
            1,
            &["--occupancy", &occupancy],
        );
    }
    for side in [Side::A, Side::B] {
        install.wait_pgs_reachable(side, PG_NAMES.len(), START_MS);
    }
    let names: Vec<String> = install
        .topology
        .distributors
        .iter()
        .map(|d| d.name.clone())
        .collect();
    // One distributor at a time: each initialization exports the whole configuration from the
    // side that orders input, and ten exports of 100,000 agents at once starve the sides'
    // heartbeats on two cores.
    for d in &names {
        install.start_distributor(d);
        install.wait_aw(d, "initialized and following the feed", START_MS, |s| {
            s.updateaw == "ok" && s.frames >= 10
        });
    }
    let first = install.topology.distributors[0].public;
    let security = install.security.clone();
    let skill_groups: Vec<u64> = {
        let cc = tandem_model::config::ContactCenter::from_toml_str(&std::fs::read_to_string(cc)?)?;
        cc.skill_groups.iter().map(|g| u64::from(g.id.0)).collect()
    };

    let clients = Arc::new(Clients {
        measuring: AtomicBool::new(false),
        measured: Mutex::new(Measured::default()),
        messages: AtomicU64::new(0),
        closed: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if args.agent_client {
            let socket = connect(&security, first, json!({ "subscribe": { "table": "agents" } }))
                .await?;
            tokio::spawn(agent_client(socket, clients.clone()));
        }
        for batch in (0..args.wallboards)
            .collect::<Vec<_>>()
            .chunks(CONNECT_BATCH)
        {
            let mut connecting = tokio::task::JoinSet::new();
            for &i in batch {
                let group = skill_groups[i % skill_groups.len()];
                let security = security.clone();
                connecting.spawn(async move {
                    connect(
                        &security,
                        first,
                        json!({ "subscribe": { "table": "skill_groups", "filter": { "id": group } } }),
                    )
                    .await
                });
            }
            for socket in connecting.join_all().await {
                tokio::spawn(wallboard(socket?, clients.clone()));
            }
        }
        anyhow::Ok(())
    })?;

    std::thread::sleep(Duration::from_secs(args.warmup_s));
    let pids = install.pids();
    let cpu_before: Vec<Option<f64>> = pids.iter().map(|(_, pid)| cpu_s(*pid)).collect();
    let own_before = own_cpu_s();
    let messages_before = clients.messages.load(Ordering::Relaxed);
    let before: Vec<_> = names.iter().map(|d| install.aw_status(d)).collect();
    // Whether the sides stayed paired in one epoch through the window: a saturated machine
    // shows here first, as missed heartbeats.
    let sides = |install: &Installation| -> Vec<String> {
        [Side::A, Side::B]
            .into_iter()
            .map(|side| match install.status(side) {
                Some(s) => format!("{side}: {} in epoch {}", s.sync_state(), s.epoch()),
                None => format!("{side}: no answer"),
            })
            .collect()
    };
    let sides_before = sides(&install);
    clients.measuring.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(args.seconds));
    clients.measuring.store(false, Ordering::SeqCst);
    let after: Vec<_> = names.iter().map(|d| install.aw_status(d)).collect();
    let sides_after = sides(&install);
    let cpu: serde_json::Map<String, Value> = pids
        .iter()
        .zip(&cpu_before)
        .filter_map(|((name, pid), before)| {
            let used = cpu_s(*pid)? - (*before)?;
            Some((
                name.clone(),
                json!((used / args.seconds as f64 * 100.0).round()),
            ))
        })
        .chain(std::iter::once((
            "bench clients".to_string(),
            json!(((own_cpu_s() - own_before) / args.seconds as f64 * 100.0).round()),
        )))
        .collect();
    let messages = clients.messages.load(Ordering::Relaxed) - messages_before;
    let distributors: Vec<Value> = names
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(name, (b, a))| match (b, a) {
            (Some(b), Some(a)) => json!({
                "name": name,
                "frames": a.frames - b.frames,
                "aw_db_writes": a.aw_db_writes - b.aw_db_writes,
                "aw_db_rows": a.aw_db_rows_written - b.aw_db_rows_written,
                "aw_db_freshness": a.aw_db_freshness,
                "aw_db_lag_ms_at_end": a.aw_db_lag_ms,
                "feed_lag_ms_at_end": a.feed_lag_ms,
                "snapshots": a.snapshots - b.snapshots,
                "clients": a.clients,
                "clients_disconnected_slow": a.clients_disconnected_slow,
            }),
            _ => json!({ "name": name, "error": "did not answer" }),
        })
        .collect();
    let counts = install.stop_pgs(&PG_NAMES);
    let requests: u64 = counts.iter().map(|c| c.route_requests_sent).sum();
    let measured = clients.measured.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "{}",
        json!({
            "bench": "aw",
            "agents": args.agents,
            "cps": cps,
            "occupancy": args.occupancy,
            "window_s": args.seconds,
            "route_requests": requests,
            "sides_at_window_start": sides_before,
            "sides_at_window_end": sides_after,
            "distributors": distributors,
            "ws_agent_freshness": percentiles(&measured.agent_freshness),
            "wallboards": args.wallboards,
            "wallboard_delay": percentiles(&measured.wallboard_delay),
            "ws_messages_per_s": messages as f64 / args.seconds as f64,
            "ws_clients_closed": clients.closed.load(Ordering::Relaxed),
            "cpu_percent": cpu,
        })
    );
    rt.shutdown_background();
    Ok(())
}

pub fn run(args: AwBenchArgs) -> Result<()> {
    anyhow::ensure!(args.distributors >= 1, "--distributors must be at least 1");
    let bin = std::env::current_exe()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("tandem-bench-aw"));
    let cc = gen_config(&bin, &dir, args.agents)?;
    for &cps in &args.cps {
        one_run(&bin, &dir, &cc, &args, cps)?;
    }
    Ok(())
}
