//! The synchronizer simulation, run over many seeds: every invariant holds, a seed replays
//! exactly, and planted bugs are caught.

use tandem_mds::simulation::{simulate, SimOptions};
use tandem_mds::sync::PlantedBug;

/// Seeds run by `cargo test`.
const CI_SEEDS: u64 = 1_000;

/// Safety after every simulated millisecond, and liveness once the faults heal: one side
/// enabled, every input acknowledged (sides that lost their state or were fenced rejoin by state
/// transfer).
fn options() -> SimOptions {
    SimOptions::default()
}
/// A planted bug must be caught within this many seeds.
const PLANTED_BUG_SEEDS_MAX: u64 = 300;

#[test]
fn every_seed_keeps_every_invariant() {
    let options = options();
    // Two workers, each taking every other seed: the runs are independent and deterministic.
    let workers: u64 = 2;
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let options = &options;
            scope.spawn(move || {
                let seeds = (worker..CI_SEEDS).step_by(workers as usize);
                for seed in seeds {
                    if let Some(violation) = simulate(seed, options).violation {
                        panic!(
                            "seed {seed}: {} at {} ms: {}\n{}\nreplay: tandem sim-sync --replay {seed}",
                            violation.invariant,
                            violation.at_ms,
                            violation.detail,
                            violation.trace_tail.join("\n")
                        );
                    }
                }
            });
        }
    });
}

#[test]
fn a_seed_run_twice_gives_the_same_trace() {
    let options = options();
    for seed in [3, 17, 4_242] {
        let first = simulate(seed, &options);
        let second = simulate(seed, &options);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.delivered, second.delivered, "seed {seed}");
    }
    assert_ne!(
        simulate(1, &options).trace_hash,
        simulate(2, &options).trace_hash
    );
}

fn first_seed_catching(bug: PlantedBug) -> Option<(u64, &'static str)> {
    let options = SimOptions {
        planted_bug: Some(bug),
        ..options()
    };
    (0..PLANTED_BUG_SEEDS_MAX).find_map(|seed| {
        simulate(seed, &options)
            .violation
            .map(|v| (seed, v.invariant))
    })
}

#[test]
fn delivering_before_both_sides_hold_is_caught() {
    let caught = first_seed_catching(PlantedBug::DeliverBeforeBothHold);
    assert!(
        caught.is_some(),
        "not caught within {PLANTED_BUG_SEEDS_MAX} seeds"
    );
    eprintln!("deliver-before-both-hold caught: {caught:?}");
}

#[test]
fn ordering_after_the_leases_lapse_is_caught() {
    let caught = first_seed_catching(PlantedBug::IgnoreLeaseExpiry);
    assert!(
        caught.is_some(),
        "not caught within {PLANTED_BUG_SEEDS_MAX} seeds"
    );
    eprintln!("ignore-lease-expiry caught: {caught:?}");
}
