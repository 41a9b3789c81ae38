//! Many seeds on several threads. Each seed's run is deterministic on its own, so the threads
//! change only the order in which reports arrive, never a report.

use crate::{simulate, SimOptions, SimReport};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Runs every seed of `seeds` on `threads` threads, handing each report to `on_report` as it
/// finishes. With `stop_at_violation`, threads take no new seed once one has failed.
pub fn run_seeds(
    seeds: Range<u64>,
    threads: usize,
    options: &SimOptions,
    stop_at_violation: bool,
    on_report: &(dyn Fn(SimReport) + Sync),
) {
    let next = AtomicU64::new(seeds.start);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if stop_at_violation && failed.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let report = simulate(seed, options);
                if report.violation.is_some() {
                    failed.store(true, Ordering::Relaxed);
                }
                on_report(report);
            });
        }
    });
}
