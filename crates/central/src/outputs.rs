//! Per-PG output ids and the bounded replay log.
//!
//! Both sides apply the same ordered stream, so both give each PG's outputs the same ids: output
//! `id` of a PG is the same message on either side. An id is the epoch of the ordered message
//! that produced the output and a number within that epoch; each entry also names the id before
//! it, so that a PG can tell whether it holds everything up to an output. When a PG makes a path
//! active it says the last id it took, and that side replays the rest from its log. The ids and
//! the log are part of the side's state and travel with a state transfer.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use tandem_mds::OutputId;
use tandem_model::ids::PgId;
use tandem_model::output::Output;

/// Outputs kept per PG for replay. A PG that fell further behind than this has lost outputs;
/// the side says so in an event.
pub const OUTPUT_REPLAY_LOG_MAX: usize = 65_536;

/// One output in a PG's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedOutput {
    pub id: OutputId,
    /// The id of the output before it (the default id for the first).
    pub prev: OutputId,
    /// The ordered time of the message that produced it.
    pub time_ms: u64,
    pub output: Output,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PgOutputs {
    /// The id of the last output produced for this PG.
    pub last: OutputId,
    /// The newest outputs, oldest first.
    pub log: VecDeque<LoggedOutput>,
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
    pub outputs: Vec<&'a LoggedOutput>,
    /// Whether outputs the PG lacks are no longer in the log (it missed them for good).
    pub lost: bool,
}

impl OutputLog {
    /// Gives `output` for `pg`, produced by a message ordered in epoch range `epoch`, its id and
    /// keeps it for replay; returns the entry.
    pub fn record(&mut self, pg: PgId, epoch: u64, time_ms: u64, output: Output) -> &LoggedOutput {
        let outputs = self.pgs.entry(pg).or_default();
        let prev = outputs.last;
        let id = if epoch == prev.epoch {
            OutputId {
                epoch,
                no: prev.no + 1,
            }
        } else {
            debug_assert!(epoch > prev.epoch, "ordered epochs never go back");
            OutputId { epoch, no: 1 }
        };
        outputs.last = id;
        if outputs.log.len() == OUTPUT_REPLAY_LOG_MAX {
            outputs.log.pop_front();
        }
        outputs.log.push_back(LoggedOutput {
            id,
            prev,
            time_ms,
            output,
        });
        outputs.log.back().expect("just pushed")
    }

    /// The outputs for `pg` after `after`.
    pub fn replay(&self, pg: PgId, after: OutputId) -> Replay<'_> {
        let Some(outputs) = self.pgs.get(&pg) else {
            return Replay {
                outputs: Vec::new(),
                lost: false,
            };
        };
        let start = outputs.log.partition_point(|e| e.id <= after);
        let replay: Vec<&LoggedOutput> = outputs.log.range(start..).collect();
        let lost = replay.first().is_some_and(|first| first.prev > after);
        Replay {
            outputs: replay,
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

    fn id(epoch: u64, no: u64) -> OutputId {
        OutputId { epoch, no }
    }

    #[test]
    fn outputs_are_numbered_per_pg_and_epoch_and_replayed_after_the_last_received() {
        let mut log = OutputLog::default();
        assert_eq!(log.record(PgId(1), 1, 10, output(1)).id, id(1, 1));
        assert_eq!(log.record(PgId(2), 1, 10, output(2)).id, id(1, 1));
        assert_eq!(log.record(PgId(1), 1, 11, output(3)).id, id(1, 2));
        // A new epoch numbers from 1 again, naming the last output of the one before.
        let entry = log.record(PgId(1), 3, 12, output(4));
        assert_eq!((entry.id, entry.prev), (id(3, 1), id(1, 2)));
        let replay = log.replay(PgId(1), id(1, 1));
        assert!(!replay.lost);
        let ids: Vec<OutputId> = replay.outputs.iter().map(|e| e.id).collect();
        assert_eq!(ids, [id(1, 2), id(3, 1)]);
        assert!(log.replay(PgId(1), id(3, 1)).outputs.is_empty());
        assert!(log.replay(PgId(3), id(0, 0)).outputs.is_empty());
        // A PG that took outputs of an abandoned history (1.5, which this side never had) gets
        // what followed the fork.
        let ids: Vec<OutputId> = log
            .replay(PgId(1), id(1, 5))
            .outputs
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, [id(3, 1)]);
    }

    #[test]
    fn the_log_is_bounded_and_says_when_it_lost_outputs() {
        let mut log = OutputLog::default();
        for n in 0..(OUTPUT_REPLAY_LOG_MAX as u32 + 10) {
            log.record(PgId(1), 1, 0, output(n));
        }
        assert_eq!(log.pgs[&PgId(1)].log.len(), OUTPUT_REPLAY_LOG_MAX);
        let replay = log.replay(PgId(1), id(0, 0));
        assert!(replay.lost);
        assert_eq!(replay.outputs.len(), OUTPUT_REPLAY_LOG_MAX);
        assert!(!log.replay(PgId(1), id(1, 10)).lost);
    }
}
