//! A side's end of its PG paths, sans-IO: what a PG's message does to the synchronizer and the
//! output log, and which of the synchronizer's actions go to PGs as what message.
//!
//! The side process and the whole-system simulation both carry out these decisions, the one
//! over its sockets, the other over simulated links.

use crate::outputs::OutputLog;
use tandem_mds::lease::LeaseAnswer;
use tandem_mds::{Action, PgToSide, SideToPg, Synchronizer};
use tandem_model::ids::PgId;

/// Where a message for PGs goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgAddress {
    /// Every path of this PG, active or not.
    Pg(PgId),
    /// Every path of every PG.
    Every,
}

/// What a PG's message asks of the side's path it came on.
#[derive(Debug, PartialEq)]
pub enum PathChange {
    None,
    /// The path became the PG's active one: these outputs go on it at once, after the last it
    /// received. `lost` when some it lacks are no longer in the log.
    Active {
        replay: Vec<SideToPg>,
        lost: bool,
    },
    /// The PG made its other path active.
    Idle,
}

/// Hands a PG's message to the synchronizer or, for `Active`, gathers the outputs to replay.
pub fn on_pg_message(
    sync: &mut Synchronizer,
    outputs: &OutputLog,
    now_ms: u64,
    pg: PgId,
    message: PgToSide,
) -> PathChange {
    match message {
        PgToSide::Input {
            incarnation,
            input_no,
            input,
        } => sync.on_pg_input(now_ms, pg, incarnation, input_no, input),
        PgToSide::Active { last_output } => {
            let replay = outputs.replay(pg, last_output);
            #[cfg(feature = "planted-bugs")]
            if planted::DROP_OUTPUT_REPLAY.load(std::sync::atomic::Ordering::Relaxed) {
                return PathChange::Active {
                    replay: Vec::new(),
                    lost: replay.lost,
                };
            }
            return PathChange::Active {
                lost: replay.lost,
                replay: replay
                    .outputs
                    .into_iter()
                    .map(|entry| SideToPg::Output {
                        generation: outputs.generation,
                        id: entry.id,
                        prev: entry.prev,
                        time_ms: entry.time_ms,
                        output: entry.output.clone(),
                    })
                    .collect(),
            };
        }
        PgToSide::Idle => return PathChange::Idle,
        PgToSide::LeaseAnswer {
            epoch,
            requested_ms,
            answer,
        } => match answer {
            LeaseAnswer::Granted => sync.on_lease_granted(now_ms, pg, epoch, requested_ms),
            LeaseAnswer::Refused { granted } => sync.on_lease_refused(now_ms, granted),
        },
        PgToSide::TestAnswer { other_enabled } => {
            sync.on_test_other_side(now_ms, pg, other_enabled)
        }
        PgToSide::Heartbeat => {}
    }
    PathChange::None
}

/// The message a synchronizer action sends to PGs, and where; `None` for actions that are not
/// for PGs.
pub fn to_pgs(action: &Action) -> Option<(PgAddress, SideToPg)> {
    Some(match action {
        Action::AckPg {
            pg,
            incarnation,
            input_no,
            durable,
        } => (
            PgAddress::Pg(*pg),
            SideToPg::Ack {
                incarnation: *incarnation,
                input_no: *input_no,
                durable: *durable,
            },
        ),
        Action::ResendFrom {
            pg,
            incarnation,
            input_no,
        } => (
            PgAddress::Pg(*pg),
            SideToPg::ResendFrom {
                incarnation: *incarnation,
                input_no: *input_no,
            },
        ),
        Action::RefuseInput { pg, reason } => (
            PgAddress::Pg(*pg),
            SideToPg::Refuse {
                reason: reason.to_string(),
            },
        ),
        Action::RequestLease {
            epoch,
            requested_ms,
        } => (
            PgAddress::Every,
            SideToPg::LeaseRequest {
                epoch: *epoch,
                requested_ms: *requested_ms,
            },
        ),
        Action::TestOtherSide => (PgAddress::Every, SideToPg::TestOtherSide),
        _ => return None,
    })
}

/// Bugs planted for the whole-system simulation to catch; only its tests turn them on.
#[cfg(feature = "planted-bugs")]
pub mod planted {
    use std::sync::atomic::AtomicBool;

    /// A PG that makes a path active is not given the outputs it missed.
    pub static DROP_OUTPUT_REPLAY: AtomicBool = AtomicBool::new(false);
}
