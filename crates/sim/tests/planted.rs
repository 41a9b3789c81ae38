//! Bugs planted in the real components are caught within a bounded number of seeds, and the
//! seed that catches one replays to the same violation.
//!
//! The planted bugs are process-wide switches, so this file holds one test that plants them
//! one at a time.

use tandem_sim::{simulate, PlantedBug, SimOptions};

/// Seeds each planted bug must be caught within.
const SEEDS_MAX: u64 = 300;

#[test]
fn every_planted_bug_is_caught_within_the_bound_and_replays() {
    let cases = [
        (
            PlantedBug::DeliverBeforeBothHold,
            &[
                "a durably acknowledged input lost",
                "every PG input applied exactly once",
            ][..],
        ),
        (
            PlantedBug::IgnoreLeaseExpiry,
            &[
                "two enabled sides",
                "a sequence number delivered with two different messages",
            ][..],
        ),
        (PlantedBug::SkipEpochCheck, &["two enabled sides"][..]),
        (
            PlantedBug::DropOutputReplay,
            &["liveness: every route request answered after the faults heal"][..],
        ),
    ];
    let bugs: Vec<PlantedBug> = cases.iter().map(|(bug, _)| *bug).collect();
    assert_eq!(bugs, PlantedBug::ALL, "every planted bug has its case");
    for (bug, invariants) in cases {
        let options = SimOptions {
            planted_bug: Some(bug),
            ..SimOptions::default()
        };
        let (seed, report) = (0..SEEDS_MAX)
            .map(|seed| (seed, simulate(seed, &options)))
            .find(|(_, report)| report.violation.is_some())
            .unwrap_or_else(|| panic!("{bug:?} was not caught in {SEEDS_MAX} seeds"));
        let violation = report.violation.as_ref().unwrap();
        assert!(
            invariants.contains(&violation.invariant),
            "{bug:?} caught at seed {seed} by another invariant: {violation}"
        );
        let again = simulate(seed, &options);
        assert_eq!(again.trace_hash, report.trace_hash, "{bug:?} seed {seed}");
        assert_eq!(again.violation, report.violation, "{bug:?} seed {seed}");
        // Without the bug the same seed passes.
        let clean = simulate(seed, &SimOptions::default());
        assert!(
            clean.violation.is_none(),
            "seed {seed} fails without {bug:?}"
        );
    }
}
