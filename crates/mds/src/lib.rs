//! The Message Delivery Service (`tandem-mds`): what keeps the two sides in lockstep.
//!
//! - `frame`: the frame codec every link uses (length, checksum, postcard payload, size limit).
//! - `protocol`: the messages of the private link and of the ordered stream.
//! - `sync`: the synchronizer of one side, a sans-IO state machine (states, epochs, ordering,
//!   the delivery rule, acknowledgements, heartbeats, the split-brain guard).
//! - `lease`: the PG's half of the split-brain guard: epoch leases and Test Other Side.
//! - `simulation`: both sides and their PGs on a simulated clock and network, with faults drawn
//!   from a seed, and the invariants checked after every step.
//!
//! Nothing but the simulation reads a clock, opens a socket or draws a random number, and the
//! simulation's clock and random numbers are its own, from its seed. The tokio shell that
//! carries frames over TCP wraps the rest.

pub mod frame;
pub mod lease;
pub mod protocol;
pub mod simulation;
pub mod sync;

pub use protocol::{
    next_seq, Body, Epoch, Hello, LogicVersion, Ordered, PeerMessage, Side, Source,
};
pub use sync::{Action, SyncEvent, SyncSettings, SyncState, Synchronizer};
