//! `tandem sim-sync`: the deterministic simulation of the synchronizer protocol over many
//! seeds, or one seed replayed with its whole trace.

use anyhow::{bail, Result};
use serde_json::json;
use std::time::Instant;
use tandem_mds::simulation::{simulate, SimOptions};

#[derive(clap::Args)]
pub struct SimSyncArgs {
    /// Seeds to run, from `--from`.
    #[arg(long, default_value_t = 1_000)]
    seeds: u64,
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Run this one seed and print its whole trace when it fails.
    #[arg(long)]
    replay: Option<u64>,
    /// Check safety only, not liveness after the faults heal (both sides paired, every input
    /// acknowledged).
    #[arg(long)]
    safety_only: bool,
}

/// Trace lines printed for a failing seed when replayed.
const REPLAY_TRACE_LINES_MAX: usize = 1_000_000;

pub fn run(args: SimSyncArgs) -> Result<()> {
    let (first, count, trace_tail_lines) = match args.replay {
        Some(seed) => (seed, 1, REPLAY_TRACE_LINES_MAX),
        None => (
            args.from,
            args.seeds,
            tandem_mds::simulation::TRACE_TAIL_LINES,
        ),
    };
    let options = SimOptions {
        check_liveness: !args.safety_only,
        trace_tail_lines,
        ..SimOptions::default()
    };
    let started = Instant::now();
    let mut simulated_ms = 0u64;
    let mut faults = std::collections::BTreeMap::<&str, u64>::new();
    for seed in first..first.saturating_add(count) {
        let report = simulate(seed, &options);
        simulated_ms += report.simulated_ms;
        for (kind, n) in &report.faults {
            *faults.entry(kind).or_default() += u64::from(*n);
        }
        if let Some(violation) = report.violation {
            eprintln!(
                "seed {seed}: {} at {} ms",
                violation.invariant, violation.at_ms
            );
            eprintln!("  {}", violation.detail);
            eprintln!("trace (last {} lines):", violation.trace_tail.len());
            for line in &violation.trace_tail {
                eprintln!("  {line}");
            }
            eprintln!("replay: tandem sim-sync --replay {seed}");
            bail!("seed {seed} violated: {}", violation.invariant);
        }
        let done = seed - first + 1;
        if done % 500 == 0 {
            eprintln!("{done} of {count} seeds passed");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "sim": "sync",
            "seeds": count,
            "from": first,
            "liveness_checked": !args.safety_only,
            "seeds_per_second": (count as f64 / seconds * 10.0).round() / 10.0,
            "simulated_seconds_per_second": (simulated_ms as f64 / 1000.0 / seconds).round(),
            "faults": faults,
        })
    );
    Ok(())
}
