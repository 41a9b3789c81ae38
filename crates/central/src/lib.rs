//! One side of tandem's central controller (`tandem central --side a|b`): the MDS shell around
//! the sans-IO synchronizer, with the router as its synchronized client.
//!
//! - `side`: the process: its core task, its listeners and the private link.
//! - `transfer`: state-transfer sessions, always opened by side A's MDS.
//! - `outputs`: per-PG output numbers and the bounded replay log.
//! - `status`: what rttest prints.
//! - `rttest`: the rttest client.

pub mod outputs;
pub mod rttest;
pub mod side;
pub mod status;
pub mod transfer;
