//! Per-PG output numbers and the bounded replay log.
//!
//! Both sides apply the same ordered stream, so both number each PG's outputs alike: output
//! `n` of a PG is the same message on either side. When a PG makes a path active it says the
//! last number it received, and that side replays the rest from its log. The numbers and the
//! log are part of the side's state and travel with a state transfer.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use tandem_model::ids::PgId;
use tandem_model::output::Output;

/// Outputs kept per PG for replay. A PG that fell further behind than this has lost outputs;
/// the side says so in an event.
pub const OUTPUT_REPLAY_LOG_MAX: usize = 65_536;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PgOutputs {
    /// The number of the last output produced for this PG.
    pub last_no: u64,
    /// The newest outputs, oldest first: (number, ordered time, output).
    pub log: VecDeque<(u64, u64, Output)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputLog {
    /// Chosen when a side builds its state from configuration, and carried by state transfer:
    /// both sides of a pair number outputs in one generation.
    #[serde(default)]
    pub generation: u64,
    pub pgs: BTreeMap<PgId, PgOutputs>,
}

/// What a replay request finds in the log.
#[derive(Debug, PartialEq)]
pub struct Replay<'a> {
    /// Outputs after the PG's last one, in order.
    pub outputs: Vec<&'a (u64, u64, Output)>,
    /// Outputs the log no longer holds (the PG missed them for good).
    pub lost: u64,
}

impl OutputLog {
    /// Numbers `output` for `pg` and keeps it for replay; returns its number.
    pub fn record(&mut self, pg: PgId, time_ms: u64, output: Output) -> u64 {
        let outputs = self.pgs.entry(pg).or_default();
        outputs.last_no += 1;
        if outputs.log.len() == OUTPUT_REPLAY_LOG_MAX {
            outputs.log.pop_front();
        }
        outputs.log.push_back((outputs.last_no, time_ms, output));
        outputs.last_no
    }

    /// The outputs for `pg` after `after_no`.
    pub fn replay(&self, pg: PgId, after_no: u64) -> Replay<'_> {
        let Some(outputs) = self.pgs.get(&pg) else {
            return Replay {
                outputs: Vec::new(),
                lost: 0,
            };
        };
        let first_kept = outputs.log.front().map_or(outputs.last_no + 1, |e| e.0);
        let lost = first_kept.saturating_sub(after_no + 1);
        let start = outputs.log.partition_point(|e| e.0 <= after_no);
        Replay {
            outputs: outputs.log.range(start..).collect(),
            lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::ids::{AgentId, PeripheralId, RouterCallKey};

    fn output(n: u32) -> Output {
        Output::ReleaseAgent {
            pg: PgId(1),
            peripheral: PeripheralId(1),
            agent: AgentId(n),
            router_call_key: RouterCallKey(u64::from(n)),
        }
    }

    #[test]
    fn outputs_are_numbered_per_pg_and_replayed_after_the_last_received() {
        let mut log = OutputLog::default();
        assert_eq!(log.record(PgId(1), 10, output(1)), 1);
        assert_eq!(log.record(PgId(2), 10, output(2)), 1);
        assert_eq!(log.record(PgId(1), 11, output(3)), 2);
        let replay = log.replay(PgId(1), 1);
        assert_eq!(replay.lost, 0);
        assert_eq!(replay.outputs.len(), 1);
        assert_eq!(replay.outputs[0].0, 2);
        assert!(log.replay(PgId(1), 2).outputs.is_empty());
        assert!(log.replay(PgId(3), 0).outputs.is_empty());
    }

    #[test]
    fn the_log_is_bounded_and_says_what_it_lost() {
        let mut log = OutputLog::default();
        for n in 0..(OUTPUT_REPLAY_LOG_MAX as u32 + 10) {
            log.record(PgId(1), 0, output(n));
        }
        assert_eq!(log.pgs[&PgId(1)].log.len(), OUTPUT_REPLAY_LOG_MAX);
        let replay = log.replay(PgId(1), 0);
        assert_eq!(replay.lost, 10);
        assert_eq!(replay.outputs.len(), OUTPUT_REPLAY_LOG_MAX);
    }
}
