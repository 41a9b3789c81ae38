//! `tandem sim`: the deterministic whole-system simulation over many seeds, with a progress
//! bar, or one seed replayed with its whole trace.

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;
use tandem_sim::{run_seeds, simulate, SimOptions, SimReport, TRACE_TAIL_LINES};

#[derive(clap::Args)]
pub struct SimArgs {
    /// Seeds to run, from `--from`.
    #[arg(long, default_value_t = 1_000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Run this one seed and print its whole trace.
    #[arg(long)]
    replay: Option<u64>,
    /// Threads running seeds (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Simulated time with faults per seed, before everything heals.
    #[arg(long, default_value_t = SimOptions::default().duration_ms)]
    duration_ms: u64,
    /// Go on after a failing seed, and report every failure at the end.
    #[arg(long)]
    keep_going: bool,
}

/// Trace lines kept for a replayed seed: all of them.
const REPLAY_TRACE_LINES_MAX: usize = 10_000_000;
/// Failing seeds listed in the summary of a `--keep-going` run.
const FAILURES_LISTED_MAX: usize = 100;

#[derive(Default)]
struct Totals {
    seeds: u64,
    simulated_ms: u64,
    transfers: u64,
    inputs_sent: u64,
    route_requests: u64,
    answers_after_abandoned_history: u64,
    drop_decisions: u64,
    logger_write_failures: u64,
    logger_gaps_recovered: u64,
    logger_gaps_held_by_neither: u64,
    rows_logged: u64,
    config_changes_ordered: u64,
    config_changes_applied: u64,
    config_change_abandoned: u64,
    distributor_frames: u64,
    distributor_snapshots: u64,
    distributor_subscriptions: u64,
    distributor_rebuilds: u64,
    aw_db_write_failures: u64,
    faults: BTreeMap<&'static str, u64>,
    /// Failing seeds, lowest first.
    failures: BTreeMap<u64, SimReport>,
}

pub fn run(args: SimArgs) -> Result<()> {
    if let Some(seed) = args.replay {
        return replay(seed, args.duration_ms);
    }
    let options = SimOptions {
        duration_ms: args.duration_ms,
        trace_tail_lines: TRACE_TAIL_LINES,
        ..SimOptions::default()
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let seeds = args.from..args.from.saturating_add(args.seeds);
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {per_sec}, eta {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let totals = Mutex::new(Totals::default());
    let started = Instant::now();
    run_seeds(seeds, threads, &options, !args.keep_going, &|report| {
        let mut totals = totals.lock().expect("no thread panics holding it");
        totals.seeds += 1;
        totals.simulated_ms += report.simulated_ms;
        totals.transfers += report.transfers;
        totals.inputs_sent += report.inputs_sent;
        totals.route_requests += report.route_requests;
        totals.answers_after_abandoned_history += report.answers_after_abandoned_history;
        totals.drop_decisions += report.drop_decisions;
        totals.logger_write_failures += report.logger_write_failures;
        totals.logger_gaps_recovered += report.logger_gaps_recovered;
        totals.logger_gaps_held_by_neither += report.logger_gaps_held_by_neither;
        totals.rows_logged += report.rows_logged;
        totals.config_changes_ordered += report.config_changes_ordered;
        totals.config_changes_applied += report.config_changes_applied;
        totals.config_change_abandoned += u64::from(report.config_change_abandoned);
        totals.distributor_frames += report.distributor_frames;
        totals.distributor_snapshots += report.distributor_snapshots;
        totals.distributor_subscriptions += report.distributor_subscriptions;
        totals.distributor_rebuilds += report.distributor_rebuilds;
        totals.aw_db_write_failures += report.aw_db_write_failures;
        for (kind, n) in &report.faults {
            *totals.faults.entry(kind).or_default() += u64::from(*n);
        }
        if report.violation.is_some() {
            bar.set_message(format!("{} failed", totals.failures.len() + 1));
            if totals.failures.len() < FAILURES_LISTED_MAX {
                totals.failures.insert(report.seed, report);
            }
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let totals = totals.into_inner().expect("no thread panics holding it");
    println!(
        "{}",
        json!({
            "sim": "whole-system",
            "seeds": totals.seeds,
            "from": args.from,
            "threads": threads,
            "seconds": (seconds * 10.0).round() / 10.0,
            "seeds_per_second": (totals.seeds as f64 / seconds * 10.0).round() / 10.0,
            "simulated_seconds_per_second": (totals.simulated_ms as f64 / 1000.0 / seconds).round(),
            "transfers": totals.transfers,
            "inputs_sent": totals.inputs_sent,
            "route_requests": totals.route_requests,
            "answers_after_abandoned_history": totals.answers_after_abandoned_history,
            "drop_decisions": totals.drop_decisions,
            "logger_write_failures": totals.logger_write_failures,
            "logger_gaps_recovered": totals.logger_gaps_recovered,
            "logger_gaps_held_by_neither": totals.logger_gaps_held_by_neither,
            "rows_logged": totals.rows_logged,
            "config_changes_ordered": totals.config_changes_ordered,
            "config_changes_applied": totals.config_changes_applied,
            "seeds_with_a_config_change_abandoned": totals.config_change_abandoned,
            "distributor_frames": totals.distributor_frames,
            "distributor_snapshots": totals.distributor_snapshots,
            "distributor_subscriptions": totals.distributor_subscriptions,
            "distributor_rebuilds": totals.distributor_rebuilds,
            "aw_db_write_failures": totals.aw_db_write_failures,
            "faults": totals.faults,
            "failed": totals.failures.keys().collect::<Vec<_>>(),
        })
    );
    if let Some((seed, report)) = totals.failures.iter().next() {
        let violation = report
            .violation
            .as_ref()
            .expect("a failure has a violation");
        eprintln!("seed {seed}: {violation}");
        eprintln!("replay: tandem sim --replay {seed}");
        bail!(
            "{} seeds failed, the first {seed}: {}",
            totals.failures.len(),
            violation.invariant
        );
    }
    Ok(())
}

fn replay(seed: u64, duration_ms: u64) -> Result<()> {
    let options = SimOptions {
        duration_ms,
        trace_tail_lines: REPLAY_TRACE_LINES_MAX,
        ..SimOptions::default()
    };
    let report = simulate(seed, &options);
    let summary = json!({
        "seed": seed,
        "trace_hash": format!("{:016x}", report.trace_hash),
        "simulated_ms": report.simulated_ms,
        "pgs": report.pgs,
        "delivered": report.delivered,
        "transfers": report.transfers,
        "inputs_sent": report.inputs_sent,
        "route_requests": report.route_requests,
        "route_requests_answered": report.route_requests_answered,
        "answers_after_abandoned_history": report.answers_after_abandoned_history,
        "drop_decisions": report.drop_decisions,
        "logger_write_failures": report.logger_write_failures,
        "logger_gaps_recovered": report.logger_gaps_recovered,
        "logger_gaps_held_by_neither": report.logger_gaps_held_by_neither,
        "rows_logged": report.rows_logged,
        "config_changes_ordered": report.config_changes_ordered,
        "config_changes_applied": report.config_changes_applied,
        "config_change_abandoned": report.config_change_abandoned,
        "distributors": report.distributors,
        "distributor_frames": report.distributor_frames,
        "distributor_snapshots": report.distributor_snapshots,
        "distributor_subscriptions": report.distributor_subscriptions,
        "distributor_rebuilds": report.distributor_rebuilds,
        "aw_db_write_failures": report.aw_db_write_failures,
        "faults": report.faults,
    });
    match report.violation {
        Some(violation) => {
            eprintln!("seed {seed}: {violation}");
            println!("{summary}");
            bail!("seed {seed} violated: {}", violation.invariant)
        }
        None => {
            for line in &report.trace {
                eprintln!("{line}");
            }
            println!("{summary}");
            Ok(())
        }
    }
}
