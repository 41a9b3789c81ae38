//! One side of tandem's central controller (`tandem central --side a|b`): the MDS shell around
//! the sans-IO synchronizer, with the router as its synchronized client.
//!
//! - `machine`: the side's decisions, sans-IO, which the process and the simulation both run.
//! - `side`: the process: the tokio shell around the machine, its listeners and links.
//! - `transfer`: state-transfer sessions, always opened by side A's MDS.
//! - `apply`: the deterministic half of delivery: an applied input's outputs, sorted and
//!   numbered.
//! - `pg_link`: a side's end of its PG paths: PG messages to the synchronizer, actions to PGs.
//! - `outputs`: per-PG output numbers and the bounded replay log.
//! - `quarantine`: the suspect file of inputs that panicked the router, and what it
//!   quarantines.
//! - `status`: what rttest prints about the side; `dumps`: its dumps of the router's live
//!   state.
//! - `metrics`: the side's Prometheus metrics and their endpoint.
//! - `rttest`: the rttest client.

pub mod apply;
pub mod dumps;
pub mod logger_feed;
pub mod machine;
pub mod metrics;
pub mod outputs;
pub mod pg_link;
pub mod quarantine;
pub mod rtsrvr;
pub mod rttest;
pub mod side;
pub mod status;
pub mod transfer;
