//! What one applied input produced, sorted for the side: outputs for the PGs numbered in the
//! output log, the rows and events its logger records, and a configuration change's result.
//!
//! This is the deterministic half of a side's delivery. The side process carries out what it
//! returns over its sockets; the whole-system simulation carries it out over simulated links,
//! so both run the same numbering.

use crate::outputs::OutputLog;
use tandem_mds::OutputId;
use tandem_model::ids::PgId;
use tandem_model::input::{Input, OrderedInput};
use tandem_model::logged::{LoggedConfigChange, LoggedMessage};
use tandem_model::output::Output;

/// An output for one PG with its id in that PG's output stream.
#[derive(Clone, Debug, PartialEq)]
pub struct NumberedOutput {
    pub pg: PgId,
    pub id: OutputId,
    /// The id before it in the PG's stream.
    pub prev: OutputId,
    pub time_ms: u64,
    pub output: Output,
}

/// The result of a configuration change, for whoever asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigResult {
    /// Accepted; the change itself is in `Sorted::logged.config`.
    Applied {
        config_version: u64,
    },
    Rejected {
        reason: String,
    },
}

/// One applied input's outputs, sorted by where they go.
#[derive(Debug)]
pub struct Sorted {
    pub logged: LoggedMessage,
    pub pg_outputs: Vec<NumberedOutput>,
    pub config_result: Option<ConfigResult>,
}

/// The PG an output is addressed to, if any.
pub fn output_pg(output: &Output) -> Option<PgId> {
    match output {
        Output::RouteResponse { pg, .. }
        | Output::DeliverQueuedCall { pg, .. }
        | Output::ReleaseAgent { pg, .. }
        | Output::ReserveAgent { pg, .. } => Some(*pg),
        Output::ConfigResult { .. } | Output::Historical(_) | Output::Event(_) => None,
    }
}

/// Sorts what the router produced for the input ordered at `seq` (draining `outputs`), and
/// gives the PGs' outputs their ids in `log`, in the epoch range `seq` was ordered in.
pub fn sort_outputs(
    seq: u64,
    input: &OrderedInput,
    outputs: &mut Vec<Output>,
    log: &mut OutputLog,
) -> Sorted {
    let epoch = tandem_mds::seq_epoch_range(seq);
    let mut sorted = Sorted {
        logged: LoggedMessage {
            recovery_key: seq,
            time_ms: input.time_ms,
            config: None,
            records: Vec::new(),
            events: Vec::new(),
            dropped: None,
        },
        pg_outputs: Vec::new(),
        config_result: None,
    };
    for output in outputs.drain(..) {
        match output {
            Output::Historical(record) => sorted.logged.records.push(record),
            Output::Event(event) => sorted.logged.events.push(event),
            Output::ConfigResult {
                config_version,
                error,
            } => {
                sorted.config_result = Some(match error {
                    None => {
                        if let Input::ConfigChange(change) = &input.input {
                            sorted.logged.config = Some(LoggedConfigChange {
                                config_version,
                                change: change.clone(),
                            });
                        }
                        ConfigResult::Applied { config_version }
                    }
                    Some(reason) => ConfigResult::Rejected { reason },
                });
            }
            other => {
                if let Some(pg) = output_pg(&other) {
                    let entry = log.record(pg, epoch, input.time_ms, other);
                    sorted.pg_outputs.push(NumberedOutput {
                        pg,
                        id: entry.id,
                        prev: entry.prev,
                        time_ms: entry.time_ms,
                        output: entry.output.clone(),
                    });
                }
            }
        }
    }
    sorted
}
