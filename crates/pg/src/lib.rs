//! The peripheral gateway side of tandem: a seeded, deterministic traffic simulator that plays
//! the peripherals (ACDs) of one or all PGs.
//!
//! [`TrafficSim`] emits [`tandem_model::OrderedInput`]s (PG events and route requests stamped
//! with their ordered time) and reacts to the router's [`tandem_model::Output`]s. Like the
//! router it is sans-IO: no sockets, no threads, no clock. Time reaches it only through
//! [`TrafficSim::poll`] and [`TrafficSim::on_output`], and its only randomness is one ChaCha8
//! stream seeded from [`LoadParams::seed`]; pending work sits in a BTreeMap keyed by (due time,
//! sequence number). So the same contact center, parameters and fed-back outputs always give
//! the same inputs, and a failing seed replays exactly.
//!
//! # The closed loop
//!
//! ```text
//! let mut sim = TrafficSim::new(&cc, LoadParams::default(), start_ms);
//! loop {
//!     sim.poll(now, &mut inputs);          // every input due at or before `now`, in time order
//!     for input in inputs.drain(..) {
//!         for output in router.apply(seq, &input) { sim.on_output(input.time_ms, &output); }
//!     }
//!     now += 100;                          // or jump to sim.next_due_ms()
//! }
//! ```
//!
//! # What a call does
//!
//! Calls arrive as a Poisson process at [`LoadParams::calls_per_second`]; each picks a call type
//! uniformly among those with a dialed number on a simulated routing client, and is dialed on
//! its first such number. A post-routed call first arrives at the routing client's peripheral
//! (`CallArrived` without router call key), then asks for a route; a pre-routed call only asks.
//! Request keys carry `LoadParams::pg_incarnation` ([`PG_INCARNATION`] unless told another; a
//! PG process takes its start time) and count up from 1 per routing client.
//!
//! - An answer with a reserved simulated agent (`ReserveAgent`, before or after the answer):
//!   0..=[`OFFER_DELAY_MS_MAX`] ms later the call arrives where the agent is (`CallArrived` with
//!   skill group and router call key, unless it is already there) and is offered
//!   (`CallOffered`); after a ring time it is answered (or, rarely, abandoned while ringing),
//!   maybe held and retrieved once, and ends (`CallEnded`) into after-call work, then Ready or a
//!   break.
//! - `Queued`: the caller waits with an exponential patience. A `DeliverQueuedCall` in time
//!   continues as above; otherwise the caller hangs up (`RouteRequestEnded` CallerAbandoned,
//!   plus `CallAbandoned` for a post-routed call).
//! - `Default`, or any answer without a reserved simulated agent (network label, busy, ring,
//!   divert, skill group label): the call leaves the ACD and nothing more is sent for it.
//! - No answer within the routing client's timeout: `RouteRequestEnded` ClientTimeout.
//! - `ReleaseAgent` before the call was offered: the agent is Ready again and a call already
//!   routed to it is forgotten.
//!
//! # Architecture invariants
//!
//! - **The simulator never takes a Ready agent out of Ready on its own.** `poll` hands out a
//!   whole batch of inputs before the router has applied any of them, so within a batch the
//!   router may reserve an agent (answering an earlier input of the batch) after the simulator
//!   decided to move it. Every state change the simulator makes on its own therefore starts
//!   from a state the router never changes: NotReady, after-call work or TalkingOut. That is
//!   why outbound calls ([`LoadParams::outbound_probability`]) are made on the way from
//!   after-call work or a break to Ready, not from Ready.
//! - Only the router takes an agent out of Ready (`ReserveAgent`), and an agent the router
//!   reserved stays reserved in the simulator until the call is offered or the router releases
//!   it, even if the call itself is gone (the caller hung up in the same batch).
//! - Inputs never go back in time: nothing is scheduled before the simulator's current time,
//!   which is the last `poll` bound or output time.
//! - Everything is bounded: calls in flight by [`LoadParams::calls_in_flight_max`] (excess
//!   arrivals are counted in [`SimStats::arrivals_dropped`]), pending events by one per agent,
//!   call and peripheral plus the next arrival.
//! - An output the simulator cannot match is counted ([`SimStats::ignored_outputs`],
//!   [`SimStats::late_outputs`]), never a panic.
//! - Per-PG numbering of inputs is not done here yet; the duplex layer will add it.

#![warn(missing_docs)]

mod client;
mod dist;
pub mod gateway;
pub mod gateway_core;
mod load;
pub mod peripheral;
mod sim;
mod stats;

pub use client::PG_INCARNATION;
pub use load::{
    LoadParams, CALLS_IN_FLIGHT_MAX, CALLS_PER_SECOND_MAX, LOGIN_SPREAD_MS, MEAN_MS_MAX,
    NOT_READY_REASON_CODE_MAX, OFFER_DELAY_MS_MAX, OUTBOUND_TALK_TIME_SHARE,
    RING_ABANDON_PROBABILITY, VIP_SHARE,
};
pub use peripheral::Peripheral;
pub use sim::TrafficSim;
pub use stats::SimStats;
