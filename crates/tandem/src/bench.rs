//! `tandem bench router`: apply throughput, route latency through the five-node script, state
//! export/import speed, state size and memory, snapshot pause, and the cost per input at 1,000
//! versus the chosen number of agents. Prints one JSON line.
//!
//! The input stream is recorded from the closed loop (router + simulator) and then replayed into
//! a copy of the router taken at the same point, so the timings are of `apply` alone, without the
//! simulator's own work.

use crate::driver::{ClosedLoop, TICK_MS_DEFAULT};
use anyhow::Result;
use serde_json::json;
use std::time::Instant;
use tandem_model::generate::{dialed_number_digits, generate, GenerateParams};
use tandem_model::input::{Input, OrderedInput};
use tandem_pg::{LoadParams, TrafficSim};
use tandem_router::records::{export, import};
use tandem_router::Router;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The router state machine alone, on one core.
    Router(RouterBenchArgs),
    /// The latency of a dependent load from memory, by working-set size: how far the machine's
    /// caches reach, which decides what a router state of a given size costs per row it touches.
    MemoryLatency {
        /// Loads timed at each size.
        #[arg(long, default_value_t = 20_000_000)]
        loads: u64,
    },
    /// Both sides and the PGs as processes: route round trips, failover, state transfer.
    Duplex(crate::bench_duplex::DuplexBenchArgs),
    /// The loggers of a paired system: historical write throughput, configuration change
    /// latency, recovery after a long time down.
    Logger(crate::bench_logger::LoggerBenchArgs),
    /// A distributor's AW database: real-time snapshot and frame write throughput and latency,
    /// on SQLite and on PostgreSQL.
    AwDb(crate::bench_aw_db::AwDbBenchArgs),
    /// The real-time tier of a whole system: freshness from a PG event to the AW database and
    /// to a WebSocket client, and fan-out to many distributors and WebSocket clients.
    Aw(crate::bench_aw::AwBenchArgs),
}

/// The working-set sizes `bench memory-latency` walks, from inside one core's L2 to far beyond
/// the router state of 100,000 agents.
const MEMORY_LATENCY_SIZES_MB: [usize; 8] = [1, 4, 16, 32, 64, 128, 256, 1024];

/// One cache line per element, so every load of the chain touches a new line.
#[repr(align(64))]
struct Line {
    next: usize,
}

/// Nanoseconds per load of a pointer chase through `bytes` of memory, visiting the lines in one
/// random cycle, so that neither the prefetcher nor out-of-order execution can overlap loads.
fn chase_ns(bytes: usize, loads: u64) -> f64 {
    let lines = one_random_cycle(bytes / std::mem::size_of::<Line>());
    let mut at = 0;
    let started = Instant::now();
    for _ in 0..loads {
        at = lines[at].next;
    }
    let elapsed = started.elapsed();
    std::hint::black_box(at);
    elapsed.as_nanos() as f64 / loads as f64
}

/// `count` lines (at least one) linked into a single cycle in a seeded random order.
fn one_random_cycle(count: usize) -> Vec<Line> {
    use rand::{seq::SliceRandom, SeedableRng};
    let mut order: Vec<usize> = (0..count.max(1)).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let mut lines: Vec<Line> = order.iter().map(|_| Line { next: 0 }).collect();
    for pair in order.windows(2) {
        lines[pair[0]].next = pair[1];
    }
    lines[order[order.len() - 1]].next = order[0];
    lines
}

fn memory_latency(loads: u64) {
    let by_size: Vec<serde_json::Value> = MEMORY_LATENCY_SIZES_MB
        .iter()
        .map(|&mb| {
            let ns = chase_ns(mb << 20, loads.max(1));
            eprintln!("{mb:>5} MB: {ns:.1} ns per dependent load");
            json!({ "working_set_mb": mb, "ns_per_load": (ns * 10.0).round() / 10.0 })
        })
        .collect();
    println!("{}", json!({ "bench": "memory_latency", "sizes": by_size }));
}

#[derive(clap::Args, Clone)]
pub struct RouterBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    agents: u32,
    /// Skill groups (default: agents / 20).
    #[arg(long)]
    skill_groups: Option<u32>,
    /// Call types (default: agents / 100).
    #[arg(long)]
    call_types: Option<u32>,
    /// Offered calls per second (default: agents / 10, i.e. 10,000 at 100,000 agents).
    #[arg(long)]
    cps: Option<f64>,
    /// Simulated seconds of load that are measured (after a warm-up of twice the handle time).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Skip the comparison run at 1,000 agents.
    #[arg(long)]
    no_baseline: bool,
    /// Measure apply only: skip export, import, the snapshot pause and the per-kind breakdown.
    /// Fully deterministic, so instruction counts (e.g. under valgrind) compare builds exactly.
    #[arg(long)]
    quick: bool,
    /// Replays of the recorded inputs, and timings of export, import and the check; the fastest
    /// is reported (the least disturbed by other work on the machine), with the replays' median
    /// beside it.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Apply the inputs one by one without prefetching the rows of the next ones
    /// (`Router::prefetch`), to see what the prefetch saves.
    #[arg(long)]
    no_prefetch: bool,
}

/// 2026-11-21T10:00:00Z: a fixed start, so every run sees the same calendar.
const START_MS: u64 = 1_795_255_200_000;
const OCCUPANCY: f64 = 0.85;

struct Run {
    agents: u32,
    skill_groups: u32,
    call_types: u32,
    cps: f64,
    handle_time_ms: f64,
    inputs: usize,
    inputs_per_second: f64,
    ns_per_input: f64,
    ns_per_input_median: f64,
    route_request_ns_median: f64,
    route_request_ns_p99: f64,
    route_requests_measured: usize,
    router: Router,
    warm_router: Router,
    replay: Vec<OrderedInput>,
    first_seq: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

/// A copy of `router` that shares no node with it, as a router is when no snapshot is held:
/// replaying into a plain clone would time the copy-on-write of every node the replay touches.
/// The bytes a state transfer's sender hands to its connection at a time.
const STREAM_BUFFER_BYTES: usize = 1 << 20;

/// Seconds to stream the state's records into a connection-sized buffer, flushed (here:
/// emptied) whenever the next record would not fit: what a state transfer's sender does.
fn streamed_export_s(state: &tandem_router::State) -> f64 {
    let mut buffer: Vec<u8> = Vec::with_capacity(STREAM_BUFFER_BYTES);
    let t = Instant::now();
    tandem_router::records::export_to(state, &mut |record| {
        if buffer.len() + record.len() > STREAM_BUFFER_BYTES {
            std::hint::black_box(&buffer);
            buffer.clear();
        }
        if record.len() > STREAM_BUFFER_BYTES {
            // A record larger than the buffer goes to the connection directly.
            std::hint::black_box(record);
        } else {
            buffer.extend_from_slice(record);
        }
    });
    std::hint::black_box(&buffer);
    t.elapsed().as_secs_f64()
}

fn fastest(seconds: &[f64]) -> f64 {
    seconds.iter().copied().fold(f64::INFINITY, f64::min)
}

fn unshared(router: &Router) -> Result<Router> {
    Ok(Router::from_state(import(&export(router.state()))?)?)
}

fn measure(
    agents: u32,
    skill_groups: u32,
    call_types: u32,
    cps: f64,
    seconds: u64,
    repeat: u32,
    prefetch: bool,
) -> Result<Run> {
    let cc = generate(&GenerateParams {
        agents,
        skill_groups,
        call_types,
        peripherals: 10.min(skill_groups),
        skill_groups_per_agent_max: 5,
        ..GenerateParams::default()
    });
    let load = LoadParams::for_occupancy(agents, cps, OCCUPANCY);
    let handle_time_ms = load.busy_time_mean_ms();
    let router = Router::from_contact_center(&cc, START_MS)?;
    let sim = TrafficSim::new(&cc, load, START_MS);
    let mut driver = ClosedLoop::new(router, sim, START_MS, TICK_MS_DEFAULT);
    // Warm up to a steady state: every agent has taken calls and queues have formed.
    let warm_up_ms = (2.0 * handle_time_ms) as u64 + 5_000;
    driver.run_until(START_MS + warm_up_ms, |_| {});
    let warm_router = driver.router.clone();
    let first_seq = driver.seq;
    driver.recorded = Some(Vec::new());
    driver.run_until(START_MS + warm_up_ms + seconds * 1000, |_| {});
    let replay = driver.recorded.take().unwrap_or_default();
    let recorded_digest = driver.router.digest();
    drop(driver);

    // Template 0 (every third call type) is the five-node script: Start, If, Select, Queue, Default.
    let five_node: std::collections::BTreeSet<String> = (0..call_types)
        .step_by(3)
        .map(dialed_number_digits)
        .collect();
    let mut best: Option<(f64, Vec<u64>, Router)> = None;
    let mut elapsed_all = Vec::new();
    for _ in 0..repeat.max(1) {
        let mut router = unshared(&warm_router)?;
        let mut outputs = Vec::with_capacity(64);
        let mut route_ns = Vec::with_capacity(replay.len() / 8);
        let started = Instant::now();
        for (i, input) in replay.iter().enumerate() {
            outputs.clear();
            if prefetch {
                // Outside the timed route request below: it loads the rows of later inputs.
                router.prefetch(&replay[i + 1..]);
            }
            if let Input::RouteRequest(request) = &input.input {
                if five_node.contains(&request.dialed_number) {
                    let t = Instant::now();
                    router.apply_into(first_seq + i as u64 + 1, input, &mut outputs);
                    route_ns.push(t.elapsed().as_nanos() as u64);
                    continue;
                }
            }
            router.apply_into(first_seq + i as u64 + 1, input, &mut outputs);
        }
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            router.digest() == recorded_digest,
            "the replay diverged from the recorded run"
        );
        elapsed_all.push(elapsed);
        if best.as_ref().is_none_or(|(e, _, _)| elapsed < *e) {
            best = Some((elapsed, route_ns, router));
        }
    }
    let (elapsed, mut route_ns, router) = best.expect("at least one replay");
    elapsed_all.sort_by(f64::total_cmp);
    let elapsed_median = elapsed_all[elapsed_all.len() / 2];
    route_ns.sort_unstable();
    Ok(Run {
        agents,
        skill_groups,
        call_types,
        cps,
        handle_time_ms,
        inputs: replay.len(),
        inputs_per_second: replay.len() as f64 / elapsed,
        ns_per_input: elapsed * 1e9 / replay.len() as f64,
        ns_per_input_median: elapsed_median * 1e9 / replay.len() as f64,
        route_request_ns_median: percentile(&route_ns, 0.5),
        route_request_ns_p99: percentile(&route_ns, 0.99),
        route_requests_measured: route_ns.len(),
        router,
        warm_router,
        replay,
        first_seq,
    })
}

/// Mean apply cost per input kind, from a second replay that times every input.
fn cost_by_input_kind(run: &Run, prefetch: bool) -> Result<serde_json::Value> {
    let mut router = unshared(&run.warm_router)?;
    let mut outputs = Vec::new();
    let mut by_kind: std::collections::BTreeMap<&'static str, (u64, u128, u128)> =
        Default::default();
    for (i, input) in run.replay.iter().enumerate() {
        outputs.clear();
        if prefetch {
            router.prefetch(&run.replay[i + 1..]);
        }
        let t = Instant::now();
        router.apply_into(run.first_seq + i as u64 + 1, input, &mut outputs);
        let ns = t.elapsed().as_nanos();
        let entry = by_kind.entry(input.input.name()).or_default();
        entry.0 += 1;
        entry.1 += ns;
        entry.2 = entry.2.max(ns);
    }
    Ok(by_kind
        .into_iter()
        .map(|(kind, (count, ns, max))| {
            (kind.to_string(), json!({ "count": count, "mean_ns": (ns / count.max(1) as u128) as u64, "max_ns": max as u64 }))
        })
        .collect::<serde_json::Map<_, _>>()
        .into())
}

fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Applies the recorded inputs again while another thread exports a snapshot taken first, and
/// reports how long the snapshot took and the longest single apply during the export, beside the
/// longest apply of the same inputs with no snapshot at all.
fn snapshot_pause(run: &Run, prefetch: bool) -> Result<(f64, f64, f64, f64)> {
    let longest_apply = |router: &mut Router, until: Option<&std::sync::atomic::AtomicBool>| {
        let mut outputs = Vec::new();
        let mut longest = 0u128;
        for (i, input) in run.replay.iter().enumerate() {
            if until.is_some_and(|done| done.load(std::sync::atomic::Ordering::Relaxed)) {
                break;
            }
            outputs.clear();
            if prefetch {
                router.prefetch(&run.replay[i + 1..]);
            }
            let t = Instant::now();
            router.apply_into(run.first_seq + i as u64 + 1, input, &mut outputs);
            longest = longest.max(t.elapsed().as_nanos());
        }
        longest as f64 / 1e6
    };
    let mut quiet = unshared(&run.warm_router)?;
    let longest_without_ms = longest_apply(&mut quiet, None);

    let mut live = unshared(&run.warm_router)?;
    let t = Instant::now();
    let snapshot = live.snapshot();
    let snapshot_ms = t.elapsed().as_secs_f64() * 1e3;
    let done = std::sync::atomic::AtomicBool::new(false);
    let (longest_during_ms, export_ms) = std::thread::scope(|scope| {
        let exporter = scope.spawn(|| {
            let t = Instant::now();
            let bytes = export(&snapshot);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (bytes.len(), ms)
        });
        let longest = longest_apply(&mut live, Some(&done));
        let (_, export_ms) = exporter.join().expect("export thread");
        (longest, export_ms)
    });
    Ok((
        snapshot_ms,
        longest_during_ms,
        longest_without_ms,
        export_ms,
    ))
}

pub fn run(command: BenchCommand) -> Result<()> {
    let args = match command {
        BenchCommand::Router(args) => args,
        BenchCommand::MemoryLatency { loads } => {
            memory_latency(loads);
            return Ok(());
        }
        BenchCommand::Duplex(args) => return crate::bench_duplex::run(args),
        BenchCommand::Logger(args) => return crate::bench_logger::run(args),
        BenchCommand::AwDb(args) => return crate::bench_aw_db::run(args),
        BenchCommand::Aw(args) => return crate::bench_aw::run(args),
    };
    anyhow::ensure!(args.agents >= 100, "--agents must be at least 100");
    let skill_groups = args.skill_groups.unwrap_or(args.agents / 20).max(1);
    let call_types = args.call_types.unwrap_or(args.agents / 100).max(3);
    let cps = args.cps.unwrap_or(args.agents as f64 / 10.0);
    eprintln!("measuring {} agents, {skill_groups} skill groups, {call_types} call types at {cps} calls/s ...", args.agents);
    let main = measure(
        args.agents,
        skill_groups,
        call_types,
        cps,
        args.seconds,
        args.repeat,
        !args.no_prefetch,
    )?;
    if args.quick {
        println!(
            "{}",
            json!({
                "bench": "router",
                "quick": true,
                "prefetch": !args.no_prefetch,
                "agents": main.agents,
                "inputs": main.inputs,
                "apply_ns_per_input": (main.ns_per_input * 10.0).round() / 10.0,
                "route_request_five_node_ns_median": main.route_request_ns_median,
                "digest": format!("{:032x}", main.router.digest()),
            })
        );
        return Ok(());
    }
    let rss = resident_memory_bytes();

    // Export, import and the check alone, each timed `--repeat` times: the fastest is reported
    // (the least disturbed by the host), like the replays.
    let state = main.router.snapshot();
    let mut export_s = Vec::new();
    let mut export_new_buffer_s = Vec::new();
    let mut import_s = Vec::new();
    let mut invariant_check_s = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..args.repeat.max(1) {
        export_s.push(streamed_export_s(&state));
        drop(std::mem::take(&mut bytes));
        let t = Instant::now();
        bytes = export(&state);
        export_new_buffer_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let imported = import(&bytes)?;
        import_s.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            imported == state,
            "import did not rebuild the exported state"
        );
        let t = Instant::now();
        tandem_router::views::check_invariants(&imported).map_err(anyhow::Error::msg)?;
        invariant_check_s.push(t.elapsed().as_secs_f64());
    }
    let (export_s, export_new_buffer_s, import_s, invariant_check_s) = (
        fastest(&export_s),
        fastest(&export_new_buffer_s),
        fastest(&import_s),
        fastest(&invariant_check_s),
    );
    let (
        snapshot_ms,
        longest_apply_during_export_ms,
        longest_apply_without_snapshot_ms,
        background_export_ms,
    ) = snapshot_pause(&main, !args.no_prefetch)?;

    let baseline = if args.no_baseline || args.agents == 1_000 {
        None
    } else {
        let scale = 1_000.0 / args.agents as f64;
        eprintln!("measuring the 1,000-agent baseline ...");
        Some(measure(
            1_000,
            ((skill_groups as f64 * scale) as u32).max(10),
            ((call_types as f64 * scale) as u32).max(3),
            cps * scale,
            args.seconds * 10,
            args.repeat,
            !args.no_prefetch,
        )?)
    };
    let figures = json!({
        "bench": "router",
        "load": {
            "agents": main.agents,
            "skill_groups": main.skill_groups,
            "call_types": main.call_types,
            "calls_per_second": main.cps,
            "handle_time_mean_s": main.handle_time_ms / 1000.0,
            "occupancy": OCCUPANCY,
            "measured_simulated_s": args.seconds,
        },
        "inputs": main.inputs,
        "prefetch": !args.no_prefetch,
        "apply_mean_ns_by_input_kind": cost_by_input_kind(&main, !args.no_prefetch)?,
        "apply_inputs_per_s": main.inputs_per_second.round(),
        "apply_ns_per_input": (main.ns_per_input * 10.0).round() / 10.0,
        "apply_ns_per_input_median_of_replays": (main.ns_per_input_median * 10.0).round() / 10.0,
        "replays": args.repeat,
        "route_request_five_node_ns_median": main.route_request_ns_median,
        "route_request_five_node_ns_p99": main.route_request_ns_p99,
        "route_requests_measured": main.route_requests_measured,
        "state_size_bytes": main.router.state_size(),
        "state_size_max_bytes": main.router.state_size_max(),
        "state_bytes_by_table": tandem_router::records::table_sizes(main.router.state())
            .into_iter()
            .filter(|(_, rows, _)| *rows > 0)
            .map(|(name, rows, bytes)| (name.to_string(), json!({ "rows": rows, "bytes": bytes })))
            .collect::<serde_json::Map<_, _>>(),
        "resident_memory_bytes": rss,
        "export_mb_per_s": (bytes.len() as f64 / export_s / 1e6).round(),
        "export_into_new_buffer_mb_per_s": (bytes.len() as f64 / export_new_buffer_s / 1e6).round(),
        "import_mb_per_s": (bytes.len() as f64 / import_s / 1e6).round(),
        "import_includes_invariant_check": true,
        "import_invariant_check_ms": (invariant_check_s * 1e3).round(),
        "import_mb_per_s_without_invariant_check": (bytes.len() as f64 / (import_s - invariant_check_s) / 1e6).round(),
        "snapshot_ms": snapshot_ms,
        "longest_apply_during_background_export_ms": longest_apply_during_export_ms,
        "longest_apply_without_snapshot_ms": longest_apply_without_snapshot_ms,
        "background_export_ms": background_export_ms,
        "baseline_1000_agents": baseline.as_ref().map(|b| json!({
            "skill_groups": b.skill_groups,
            "call_types": b.call_types,
            "calls_per_second": b.cps,
            "apply_ns_per_input": (b.ns_per_input * 10.0).round() / 10.0,
            "inputs": b.inputs,
        })),
        "cost_ratio_vs_1000_agents": baseline.as_ref().map(|b| (main.ns_per_input / b.ns_per_input * 100.0).round() / 100.0),
    });
    println!("{figures}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_chase_visits_every_line_once_per_cycle() {
        let lines = one_random_cycle(1_000);
        let mut seen = vec![false; lines.len()];
        let mut at = 0;
        for _ in 0..lines.len() {
            assert!(!seen[at], "line {at} visited twice within one cycle");
            seen[at] = true;
            at = lines[at].next;
        }
        assert_eq!(at, 0, "the chase returns to its start after every line");
    }
}
