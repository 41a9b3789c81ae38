//! The deterministic whole-system simulation (`tandem sim`).
//!
//! Both sides of the central controller, both loggers, several PGs and the distributors run in
//! one process on a simulated clock and network, driven by one seed. Each process runs the
//! product's own decisions: each side its `tandem_central::machine::SideMachine`, each logger
//! its `tandem_logger::session::LoggerSession` against a real central database, each PG its
//! `tandem_pg::gateway_core::GatewayCore` with its real traffic simulator, each distributor the
//! real feed assembler, updateaw and AW database writer. Only the shells are the
//! simulation's: links with latency that are cut, clogged and healed, processes that crash,
//! pause and restart, the disks and the time their writes take, and a clock that moves one
//! millisecond per step.
//!
//! Faults are drawn from the seed; invariants are checked after every step and at the end
//! (`World::check_step`, `World::check_end`). A failing seed reports the first violated
//! invariant with the tail of its trace, and replays exactly: the same seed gives the same
//! trace hash.

mod runner;
mod world;

use std::collections::BTreeMap;

pub use runner::run_seeds;
pub use world::TRACE_TAIL_LINES;

/// Bugs planted in the real components; each must be caught within a bounded number of seeds.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The enabled side delivers what it holds without waiting for the peer's ack.
    DeliverBeforeBothHold,
    /// An isolated side keeps ordering after its leases have lapsed.
    IgnoreLeaseExpiry,
    /// A PG grants a lease on an epoch lower than the one it granted last.
    SkipEpochCheck,
    /// A side does not replay the outputs a PG missed when the PG makes its path active.
    DropOutputReplay,
}

#[cfg(feature = "planted-bugs")]
impl PlantedBug {
    pub const ALL: [PlantedBug; 4] = [
        PlantedBug::DeliverBeforeBothHold,
        PlantedBug::IgnoreLeaseExpiry,
        PlantedBug::SkipEpochCheck,
        PlantedBug::DropOutputReplay,
    ];
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Simulated time with faults, before everything heals and the quiet tail.
    pub duration_ms: u64,
    /// Trace lines kept for a failure report.
    pub trace_tail_lines: usize,
    /// Whether the end of a run checks liveness: both sides paired with one enabled, every input
    /// acknowledged, every route request answered.
    pub check_liveness: bool,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            duration_ms: 8_000,
            trace_tail_lines: TRACE_TAIL_LINES,
            check_liveness: true,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

/// The first invariant a run broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at_ms: u64,
    pub invariant: &'static str,
    pub detail: String,
    pub trace_tail: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "at {} ms: {}: {}",
            self.at_ms, self.invariant, self.detail
        )?;
        writeln!(f, "the trace's last {} lines:", self.trace_tail.len())?;
        for line in &self.trace_tail {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What one seed's run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    /// A hash of the whole trace: equal for two runs of one seed.
    pub trace_hash: u64,
    pub simulated_ms: u64,
    pub pgs: usize,
    /// Messages each side delivered.
    pub delivered: [u64; 2],
    /// State transfers completed.
    pub transfers: u64,
    /// Inputs the PGs numbered and sent.
    pub inputs_sent: u64,
    /// Route requests the PGs' routing clients sent, and those answered.
    pub route_requests: u64,
    pub route_requests_answered: u64,
    /// Route requests answered again because a takeover abandoned the history of their first
    /// answer (an isolated side's, after a double fault).
    pub answers_after_abandoned_history: u64,
    /// Historical drop decisions ordered (neither logger took rows while a feed was full).
    pub drop_decisions: u64,
    /// Logger writes or recoveries that failed (a database that refused to grow).
    pub logger_write_failures: u64,
    /// Gaps a logger recovered from its peer.
    pub logger_gaps_recovered: u64,
    /// Of those, gaps the peer logger held only part of and never would hold more of: rows
    /// both sides lost (a double failure), which the loggers then agree to lack.
    pub logger_gaps_held_by_neither: u64,
    /// Ordered rows in side A's central database at the end.
    pub rows_logged: u64,
    /// Configuration changes the administrator got ordered, and those the router applied (the
    /// others it rejected whole).
    pub config_changes_ordered: u64,
    pub config_changes_applied: u64,
    /// A configuration change was ordered in a history abandoned at a takeover (and the end
    /// checks found it in no configuration of record).
    pub config_change_abandoned: bool,
    /// Distributors in the run.
    pub distributors: usize,
    /// Frames and snapshots the distributors wrote to their AW databases.
    pub distributor_frames: u64,
    pub distributor_snapshots: u64,
    /// Subscriptions the distributors made: the first, then one per failover.
    pub distributor_subscriptions: u64,
    /// Times a distributor copied the configuration again after a mismatch.
    pub distributor_rebuilds: u64,
    /// Writes an AW database refused (each tried again later).
    pub aw_db_write_failures: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    pub violation: Option<Violation>,
    /// The trace's last `SimOptions::trace_tail_lines` lines.
    pub trace: Vec<String>,
}

/// Runs one seed to its end, or to its first violated invariant.
pub fn simulate(seed: u64, options: &SimOptions) -> SimReport {
    world::run(seed, options)
}
