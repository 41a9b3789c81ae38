//! The Message Delivery Service (`tandem-mds`): what keeps the two sides in lockstep.
//!
//! - `frame`: the frame codec every link uses (length, checksum, postcard payload, size limit).
//! - `protocol`: the messages of the private link and of the ordered stream.
//! - `sync`: the synchronizer of one side, a sans-IO state machine (states, epochs, ordering,
//!   the delivery rule, acknowledgements, heartbeats, the split-brain guard).
//! - `quarantine`: the identity of an input that panicked the router; once it was in flight
//!   during two crashes, the enabled side orders a placeholder that both sides skip.
//! - `lease`: the PG's half of the split-brain guard: epoch leases and Test Other Side.
//!
//! - `transport`: frames over TCP (tokio), the one transport of every link, in TLS (`tls`)
//!   with mutual authentication from the cluster CA.
//!
//! Apart from `transport`, nothing reads a clock, opens a socket or draws a random number. The
//! side's process (`tandem-central`) and the PG process wrap the state machines with
//! `transport`; the whole-system simulation (`tandem-sim`) runs them on its simulated clock
//! and network.

pub mod admin;
pub mod frame;
pub mod lease;
pub mod protocol;
pub mod quarantine;
pub mod sync;
pub mod tls;
pub mod transport;

pub use protocol::{
    next_seq, seq_epoch_range, AdminReply, AdminRequest, Body, Epoch, Hello, LoggerToSide,
    LogicVersion, Ordered, OutputId, OutputTake, PeerMessage, PgCursorCut, PgToSide, PublicHello,
    Side, SideReport, SideToLogger, SideToPg, Source, SyncCut, SyncReport, TransferMessage,
    TransferRequest, SIDE_REPORT_EVENTS_MAX,
};
pub use quarantine::{input_hash, QuarantineKey, QuarantinedInput};
pub use sync::{
    transfer_buffer_bound, Action, DigestChecks, SyncEvent, SyncSettings, SyncState, Synchronizer,
    TransferError,
};
