//! A deterministic simulation of the synchronizer protocol: both sides and their PGs in one
//! process, on a simulated clock and network, with faults drawn from a seed.
//!
//! The sides run the real `Synchronizer` and the PGs the real `LeaseGranter`; only the PGs'
//! input traffic is a model (numbered inputs, resent until durably acknowledged, a path switch
//! on refusal). Every message crosses a link with a latency; each link is FIFO, as TCP is, and
//! loses what is in flight when it is cut or its end crashes. The faults: crash and restart of
//! a side (it returns without state), pause and resume (SIGSTOP), private link cut (silently or
//! with a reset) and healed, PG links cut and healed, and latency spikes.
//!
//! A side's clients are modelled by a hash chain over the messages they were delivered: a
//! state transfer copies the source's chain at its cut, after a simulated transfer time during
//! which any of the faults may strike. Two sides that delivered the same sequence number must
//! have the same chain there: the simulation's digest check.
//!
//! A crash while the other side holds no state (it is down, or restarted and not yet rebuilt)
//! would lose both sides' state, which only the logger's cold start recovers; the simulation
//! leaves that double failure out.
//!
//! Invariants are checked after every millisecond; a run ends with every fault healed and a
//! liveness check. A failing seed reports the first violated invariant and the last lines of
//! the trace, and `simulate` with the same seed replays it exactly (`trace_hash` is the same).

use crate::lease::{LeaseAnswer, LeaseGranter};
use crate::protocol::*;
use crate::sync::{Action, SyncEvent, SyncSettings, SyncState, Synchronizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_model::ids::{AgentId, PgId};
use tandem_model::input::Input;
use xxhash_rust::xxh3::Xxh3;

/// Trace lines kept for a failure report.
pub const TRACE_TAIL_LINES: usize = 40;
/// Inputs a simulated PG resends at once from its oldest undurable one.
const PG_RESEND_BATCH_MAX: u64 = 512;
/// A simulated PG resends what is not durably acknowledged this often.
const PG_RESEND_INTERVAL_MS: u64 = 200;
/// A simulated PG switches paths when its inputs go unacknowledged this long.
const PG_PATH_SILENCE_MS_MAX: u64 = 1_000;
/// The PGs stop sending new inputs this long before the end, so that every input can be
/// acknowledged by then.
const INPUT_DRAIN_MS: u64 = 2_000;
/// Simulated time after the last fault heals, for the liveness check.
const QUIET_TAIL_MS: u64 = 6_000;
/// A receiver asks for a transfer again this long after an attempt failed.
const TRANSFER_RETRY_MS: u64 = 200;
/// The simulated sides order a DigestCheck this often.
const DIGEST_CHECK_INTERVAL_MS: u64 = 500;

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Simulated time with faults, before the quiet tail.
    pub duration_ms: u64,
    /// Trace lines kept for a failure report.
    pub trace_tail_lines: usize,
    /// Whether the end of a run checks liveness: both sides paired with one enabled, every input
    /// acknowledged.
    pub check_liveness: bool,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::sync::PlantedBug>,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at_ms: u64,
    pub invariant: &'static str,
    pub detail: String,
    pub trace_tail: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub simulated_ms: u64,
    pub pgs: usize,
    pub delivered: [u64; 2],
    /// State transfers completed.
    pub transfers: u64,
    pub inputs_generated: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    pub violation: Option<Violation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    CutPrivateLinkSilently,
    ResetPrivateLink,
    HealPrivateLink,
    Pause(usize, u64),
    Crash(usize, u64),
    CutPgLink(usize, usize, u64),
    LatencySpike(u64),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::CutPrivateLinkSilently => "private link cut silently",
            Fault::ResetPrivateLink => "private link reset",
            Fault::HealPrivateLink => "private link healed",
            Fault::Pause(..) => "side paused",
            Fault::Crash(..) => "side crashed and restarted",
            Fault::CutPgLink(..) => "PG link cut",
            Fault::LatencySpike(..) => "latency spike",
        }
    }
}

/// Something in flight, or due.
#[derive(Clone, Debug)]
enum Event {
    Peer {
        to: usize,
        generation: u64,
        message: PeerMessage,
    },
    PgInput {
        side: usize,
        pg: usize,
        input_no: u64,
    },
    LeaseRequest {
        side: usize,
        pg: usize,
        epoch: Epoch,
        requested_ms: u64,
    },
    LeaseAnswer {
        side: usize,
        pg: usize,
        epoch: Epoch,
        requested_ms: u64,
        answer: LeaseAnswer,
    },
    TestOtherSide {
        side: usize,
        pg: usize,
    },
    TestAnswer {
        side: usize,
        pg: usize,
        other_enabled: bool,
    },
    Ack {
        pg: usize,
        input_no: u64,
        durable: bool,
    },
    Refused {
        pg: usize,
        side: usize,
    },
    ResendFrom {
        pg: usize,
        input_no: u64,
    },
    /// A's MDS opens the transfer session for `receiver`, over connection `generation`.
    TransferBegin {
        receiver: usize,
        generation: u64,
    },
    /// The state cut at the source has arrived at `receiver`.
    TransferDone {
        receiver: usize,
        generation: u64,
        cut: SyncCut,
        clients: ClientModel,
    },
    Resume(usize),
    Restart(usize),
    HealPgLink(usize, usize),
    Fault(Fault),
}

struct SimPg {
    id: PgId,
    active: usize,
    next_input_no: u64,
    acked_through: u64,
    durable_through: u64,
    last_resend_ms: u64,
    /// When an acknowledgement last moved `acked_through` on.
    last_progress_ms: u64,
    /// After a path switch the resends walk from the first input not durably acknowledged up
    /// to `walk_until` (what was acknowledged when it switched); after that they cover only what
    /// is not acknowledged at all.
    resend_from: u64,
    walk_until: u64,
}

/// What a side's synchronized clients hold: the model of their state.
#[derive(Clone, Debug, Default)]
struct ClientModel {
    last_delivered_seq: u64,
    pg_delivered: BTreeMap<PgId, u64>,
    /// A hash chain over every message delivered: equal chains, equal states.
    chain: u64,
}

struct SideSlot {
    sync: Option<Synchronizer>,
    /// Whether it ran before: a side that starts again has lost its state.
    started: bool,
    paused: bool,
    persisted_epoch: Epoch,
    /// What this side's clients hold.
    clients: ClientModel,
    delivered_count: u64,
    transfers_received: u64,
}

struct World {
    now_ms: u64,
    rng: ChaCha8Rng,
    options: SimOptions,
    sides: [SideSlot; 2],
    pgs: Vec<SimPg>,
    granters: Vec<LeaseGranter>,
    /// reach[side][pg]: whether that PG link is up.
    reach: [Vec<bool>; 2],
    /// Whether the private network carries bytes.
    private_link_up: bool,
    /// Whether a private-link connection exists (the sides reconnect when it does not).
    connected: bool,
    /// Bumped whenever a connection ends: messages of an older connection are dropped.
    link_generation: u64,
    /// Peer messages that reached a paused side, read when it resumes (its socket buffer).
    inbox: [VecDeque<(u64, PeerMessage)>; 2],
    extra_latency_ms: u64,
    latency_spike_until_ms: u64,
    /// No new PG inputs from this time on.
    inputs_end_ms: u64,
    queue: BTreeMap<(u64, u64), Event>,
    /// Per link (from, to), the latest arrival time scheduled, to keep each link FIFO.
    link_clock: BTreeMap<(u8, usize, usize), u64>,
    next_event_no: u64,
    /// Every message delivered anywhere, by sequence number: its hash, and the clients' chain
    /// after it.
    delivered_by_seq: BTreeMap<u64, (u64, u64)>,
    /// Digests the sides computed at a DigestCheck, handed to them after their actions.
    digests_due: Vec<(usize, u64, u128)>,
    trace: VecDeque<String>,
    hasher: Xxh3,
    faults: BTreeMap<&'static str, u32>,
    violation: Option<Violation>,
}

fn side_of(i: usize) -> Side {
    if i == 0 {
        Side::A
    } else {
        Side::B
    }
}

fn logic_version() -> LogicVersion {
    LogicVersion {
        build: env!("CARGO_PKG_VERSION").into(),
        time_zone_data: "simulated".into(),
    }
}

/// Runs one seed to its end, or to its first violated invariant.
pub fn simulate(seed: u64, options: &SimOptions) -> SimReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pg_count = rng.random_range(1..=4usize);
    let mut world = World {
        now_ms: 0,
        rng,
        options: options.clone(),
        sides: [0, 1].map(|_| SideSlot {
            sync: None,
            started: false,
            paused: false,
            persisted_epoch: Epoch::default(),
            clients: ClientModel::default(),
            delivered_count: 0,
            transfers_received: 0,
        }),
        pgs: (0..pg_count)
            .map(|i| SimPg {
                id: PgId(i as u32 + 1),
                active: i % 2,
                next_input_no: 1,
                acked_through: 0,
                durable_through: 0,
                last_resend_ms: 0,
                last_progress_ms: 0,
                resend_from: 1,
                walk_until: 0,
            })
            .collect(),
        granters: vec![LeaseGranter::new(); pg_count],
        reach: [vec![true; pg_count], vec![true; pg_count]],
        private_link_up: false,
        connected: false,
        link_generation: 0,
        inbox: [VecDeque::new(), VecDeque::new()],
        extra_latency_ms: 0,
        latency_spike_until_ms: 0,
        inputs_end_ms: u64::MAX,
        queue: BTreeMap::new(),
        link_clock: BTreeMap::new(),
        next_event_no: 0,
        delivered_by_seq: BTreeMap::new(),
        digests_due: Vec::new(),
        trace: VecDeque::new(),
        hasher: Xxh3::new(),
        faults: BTreeMap::new(),
        violation: None,
    };
    world.run();
    SimReport {
        seed,
        trace_hash: world.hasher.digest(),
        simulated_ms: world.now_ms,
        pgs: pg_count,
        delivered: [
            world.sides[0].delivered_count,
            world.sides[1].delivered_count,
        ],
        transfers: world.sides[0].transfers_received + world.sides[1].transfers_received,
        inputs_generated: world.pgs.iter().map(|pg| pg.next_input_no - 1).sum(),
        faults: world.faults,
        violation: world.violation,
    }
}

impl World {
    fn run(&mut self) {
        let start_b_ms = self.rng.random_range(1..300);
        self.private_link_up = true;
        self.start_side(0);
        self.schedule(start_b_ms, Event::Restart(1));
        let fault_count = self.rng.random_range(0..=6);
        for _ in 0..fault_count {
            let at = self
                .rng
                .random_range(500..self.options.duration_ms.max(501));
            let fault = self.draw_fault();
            self.schedule(at, Event::Fault(fault));
        }
        let end_ms = self.options.duration_ms;
        while self.now_ms < end_ms && self.violation.is_none() {
            self.step();
        }
        if self.violation.is_some() {
            return;
        }
        // Heal everything, then let the load run on quietly and check liveness.
        self.trace_line("heal everything".into());
        for side in 0..2 {
            if self.sides[side].paused {
                self.resume(side);
            }
            if self.sides[side].sync.is_none() {
                self.start_side(side);
            }
            for pg in 0..self.pgs.len() {
                if !self.reach[side][pg] {
                    self.set_reach(side, pg, true);
                }
            }
        }
        self.private_link_up = true;
        let quiet_end = self.now_ms + QUIET_TAIL_MS;
        self.inputs_end_ms = quiet_end - INPUT_DRAIN_MS;
        while self.now_ms < quiet_end && self.violation.is_none() {
            self.step();
        }
        if self.violation.is_none() && self.options.check_liveness {
            self.check_liveness();
        }
    }

    fn draw_fault(&mut self) -> Fault {
        let side = self.rng.random_range(0..2);
        match self.rng.random_range(0..7) {
            0 => Fault::CutPrivateLinkSilently,
            1 => Fault::ResetPrivateLink,
            2 => Fault::HealPrivateLink,
            3 => Fault::Pause(side, self.rng.random_range(100..2_500)),
            4 => Fault::Crash(side, self.rng.random_range(200..3_000)),
            5 => Fault::CutPgLink(
                side,
                self.rng.random_range(0..self.pgs.len()),
                self.rng.random_range(100..3_000),
            ),
            _ => Fault::LatencySpike(self.rng.random_range(5..60)),
        }
    }

    // ----- the clock -----

    fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now_ms;
        if now >= self.latency_spike_until_ms {
            self.extra_latency_ms = 0;
        }
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let event = entry.remove();
            self.handle(event);
            self.drain();
        }
        if now.is_multiple_of(100) {
            self.connect_private_link();
        }
        for side in 0..2 {
            if self.runs(side) {
                self.sync_mut(side).tick(now);
            }
        }
        self.drain();
        self.pg_traffic();
        self.drain();
        self.check_step();
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.next_event_no += 1;
        self.queue.insert((at_ms, self.next_event_no), event);
    }

    /// Sends over link `(kind, from, to)` with a latency, keeping the link FIFO.
    fn send(&mut self, link: (u8, usize, usize), event: Event) {
        let latency = self.rng.random_range(0..=2) + self.extra_latency_ms;
        let earliest = self.link_clock.get(&link).copied().unwrap_or(0);
        let at = (self.now_ms + latency).max(earliest);
        self.link_clock.insert(link, at);
        self.schedule(at, event);
    }

    fn runs(&self, side: usize) -> bool {
        self.sides[side].sync.is_some() && !self.sides[side].paused
    }

    fn sync_mut(&mut self, side: usize) -> &mut Synchronizer {
        self.sides[side].sync.as_mut().expect("a running side")
    }

    // ----- events -----

    fn handle(&mut self, event: Event) {
        let now = self.now_ms;
        match event {
            Event::Peer {
                to,
                generation,
                message,
            } => {
                if generation != self.link_generation || !self.private_link_up {
                    return;
                }
                if self.sides[to].paused {
                    // A paused process's socket buffers the bytes until it resumes.
                    self.inbox[to].push_back((generation, message));
                } else if self.runs(to) {
                    self.sync_mut(to).on_peer_message(now, message);
                }
            }
            Event::PgInput { side, pg, input_no } => {
                if self.runs(side) && self.reach[side][pg] {
                    let id = self.pgs[pg].id;
                    let input = Input::AgentLogout {
                        agent: AgentId(input_no as u32),
                        reason_code: pg as u16,
                    };
                    self.sync_mut(side).on_pg_input(now, id, 1, input_no, input);
                }
            }
            Event::LeaseRequest {
                side,
                pg,
                epoch,
                requested_ms,
            } => {
                if !self.reach[side][pg] {
                    return;
                }
                let lease_ms =
                    SyncSettings::new(Side::A, logic_version(), BTreeSet::from([PgId(1)])).lease_ms;
                let answer = self.granters[pg].request(now, epoch, lease_ms);
                self.send(
                    (1, pg, side),
                    Event::LeaseAnswer {
                        side,
                        pg,
                        epoch,
                        requested_ms,
                        answer,
                    },
                );
            }
            Event::LeaseAnswer {
                side,
                pg,
                epoch,
                requested_ms,
                answer,
            } => {
                if self.runs(side) && self.reach[side][pg] {
                    let id = self.pgs[pg].id;
                    match answer {
                        LeaseAnswer::Granted => {
                            self.sync_mut(side)
                                .on_lease_granted(now, id, epoch, requested_ms)
                        }
                        LeaseAnswer::Refused { granted } => {
                            self.sync_mut(side).on_lease_refused(now, granted)
                        }
                    }
                }
            }
            Event::TestOtherSide { side, pg } => {
                if self.reach[side][pg] {
                    let other_enabled = self.granters[pg].other_side_enabled(now, side_of(side));
                    self.send(
                        (1, pg, side),
                        Event::TestAnswer {
                            side,
                            pg,
                            other_enabled,
                        },
                    );
                }
            }
            Event::TestAnswer {
                side,
                pg,
                other_enabled,
            } => {
                if self.runs(side) && self.reach[side][pg] {
                    let id = self.pgs[pg].id;
                    self.sync_mut(side)
                        .on_test_other_side(now, id, other_enabled);
                }
            }
            Event::Ack {
                pg,
                input_no,
                durable,
            } => {
                let state = &mut self.pgs[pg];
                if input_no > state.acked_through {
                    state.last_progress_ms = self.now_ms;
                }
                state.acked_through = state.acked_through.max(input_no);
                if durable {
                    state.durable_through = state.durable_through.max(input_no);
                }
            }
            Event::Refused { pg, side } => {
                if self.pgs[pg].active == side {
                    self.switch_path(pg);
                }
            }
            Event::ResendFrom { pg, input_no } => {
                let state = &mut self.pgs[pg];
                state.resend_from = input_no;
                state.walk_until = state.walk_until.max(state.acked_through);
            }
            Event::TransferBegin {
                receiver,
                generation,
            } => self.transfer_begin(receiver, generation),
            Event::TransferDone {
                receiver,
                generation,
                cut,
                clients,
            } => self.transfer_done(receiver, generation, cut, clients),
            Event::Resume(side) => self.resume(side),
            Event::Restart(side) => self.start_side(side),
            Event::HealPgLink(side, pg) => self.set_reach(side, pg, true),
            Event::Fault(fault) => self.inject(fault),
        }
    }

    fn inject(&mut self, fault: Fault) {
        *self.faults.entry(fault.kind()).or_default() += 1;
        self.trace_line(format!("fault: {fault:?}"));
        let now = self.now_ms;
        match fault {
            Fault::CutPrivateLinkSilently => self.private_link_up = false,
            Fault::ResetPrivateLink => {
                self.private_link_up = false;
                self.disconnect(None);
            }
            Fault::HealPrivateLink => self.private_link_up = true,
            Fault::Pause(side, for_ms) => {
                if self.runs(side) {
                    self.sides[side].paused = true;
                    self.schedule(now + for_ms, Event::Resume(side));
                }
            }
            Fault::Crash(side, restart_after_ms) => {
                let other_holds_state = self.sides[1 - side]
                    .sync
                    .as_ref()
                    .is_some_and(|sync| !sync.needs_state());
                if self.sides[side].sync.is_some() && other_holds_state {
                    self.sides[side].sync = None;
                    self.sides[side].paused = false;
                    self.inbox[side].clear();
                    // Its connection resets: what it had in flight is lost.
                    self.disconnect(Some(1 - side));
                    self.schedule(now + restart_after_ms, Event::Restart(side));
                }
            }
            Fault::CutPgLink(side, pg, for_ms) => {
                if self.reach[side][pg] {
                    self.set_reach(side, pg, false);
                    self.schedule(now + for_ms, Event::HealPgLink(side, pg));
                }
            }
            Fault::LatencySpike(extra_ms) => {
                self.extra_latency_ms = extra_ms;
                self.latency_spike_until_ms = now + 500;
            }
        }
    }

    /// Starts (or restarts) a side. A side that ran before has lost its state with its process.
    fn start_side(&mut self, side: usize) {
        let needs_state = self.sides[side].started;
        let pg_ids: BTreeSet<PgId> = self.pgs.iter().map(|pg| pg.id).collect();
        let mut settings = SyncSettings::new(side_of(side), logic_version(), pg_ids);
        // Often enough to meet pairings, takeovers and transfers in a run of simulated seconds.
        settings.digest_check_interval_ms = DIGEST_CHECK_INTERVAL_MS;
        #[cfg(feature = "planted-bugs")]
        {
            settings.planted_bug = self.options.planted_bug;
        }
        let epoch = self.sides[side].persisted_epoch;
        let sync = Synchronizer::new(settings, epoch, 0, 0, needs_state, self.now_ms)
            .expect("the simulation's settings are valid");
        let slot = &mut self.sides[side];
        slot.sync = Some(sync);
        slot.started = true;
        slot.paused = false;
        slot.clients = ClientModel::default();
        self.trace_line(format!(
            "start side {} (needs state: {needs_state})",
            side_of(side)
        ));
        let now = self.now_ms;
        for pg in 0..self.pgs.len() {
            if self.reach[side][pg] {
                let id = self.pgs[pg].id;
                self.sync_mut(side).pg_reachable(now, id, true);
            }
        }
    }

    /// A's MDS connects whenever the private network carries bytes, both sides run and no
    /// connection exists.
    fn connect_private_link(&mut self) {
        if self.connected || !self.private_link_up || !(self.runs(0) && self.runs(1)) {
            return;
        }
        self.connected = true;
        self.link_generation += 1;
        self.trace_line("private link connected".into());
        let now = self.now_ms;
        for side in 0..2 {
            self.sync_mut(side).peer_link_up(now);
        }
    }

    /// Ends the connection; `tell` (or both sides, if `None`) sees it reset.
    fn disconnect(&mut self, tell: Option<usize>) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.link_generation += 1;
        self.trace_line("private link disconnected".into());
        let now = self.now_ms;
        for side in 0..2 {
            if tell.is_none_or(|t| t == side) && self.runs(side) {
                self.sync_mut(side).peer_link_down(now);
            }
            self.inbox[side].clear();
        }
    }

    fn resume(&mut self, side: usize) {
        self.sides[side].paused = false;
        self.trace_line(format!("resume side {}", side_of(side)));
        let now = self.now_ms;
        while let Some((generation, message)) = self.inbox[side].pop_front() {
            if generation == self.link_generation && self.runs(side) {
                self.sync_mut(side).on_peer_message(now, message);
            }
        }
    }

    fn set_reach(&mut self, side: usize, pg: usize, reachable: bool) {
        self.reach[side][pg] = reachable;
        if self.sides[side].sync.is_some() {
            let now = self.now_ms;
            let id = self.pgs[pg].id;
            self.sides[side]
                .sync
                .as_mut()
                .expect("running")
                .pg_reachable(now, id, reachable);
        }
        if !reachable && self.pgs[pg].active == side {
            self.switch_path(pg);
        }
    }

    /// Carries out what the sides asked for.
    fn drain(&mut self) {
        loop {
            for side in 0..2 {
                while self.runs(side) {
                    let Some(action) = self.sync_mut(side).poll() else {
                        break;
                    };
                    self.trace_line(format!("{} {action:?}", side_of(side)));
                    self.carry_out(side, action);
                }
            }
            // Digests of the DigestChecks just delivered, which may act again.
            if self.digests_due.is_empty() {
                return;
            }
            let now = self.now_ms;
            for (side, seq, digest) in std::mem::take(&mut self.digests_due) {
                if self.runs(side) {
                    self.sync_mut(side).on_local_digest(now, seq, digest);
                }
            }
        }
    }

    fn carry_out(&mut self, side: usize, action: Action) {
        match action {
            Action::SendPeer(message) => {
                if self.private_link_up && self.connected {
                    let generation = self.link_generation;
                    self.send(
                        (0, side, 1 - side),
                        Event::Peer {
                            to: 1 - side,
                            generation,
                            message,
                        },
                    );
                }
            }
            Action::ClosePeer { .. } => self.disconnect(Some(1 - side)),
            Action::Deliver(message) => self.on_delivered(side, message),
            Action::AckPg {
                pg,
                input_no,
                durable,
                ..
            } => {
                let pg = (pg.0 - 1) as usize;
                if self.reach[side][pg] {
                    self.send(
                        (2, side, pg),
                        Event::Ack {
                            pg,
                            input_no,
                            durable,
                        },
                    );
                }
            }
            Action::ResendFrom { pg, input_no, .. } => {
                let pg = (pg.0 - 1) as usize;
                if self.reach[side][pg] {
                    self.send((2, side, pg), Event::ResendFrom { pg, input_no });
                }
            }
            Action::RefuseInput { pg, .. } => {
                let pg = (pg.0 - 1) as usize;
                if self.reach[side][pg] {
                    self.send((2, side, pg), Event::Refused { pg, side });
                }
            }
            Action::RequestLease {
                epoch,
                requested_ms,
            } => {
                for pg in 0..self.pgs.len() {
                    if self.reach[side][pg] {
                        self.send(
                            (3, side, pg),
                            Event::LeaseRequest {
                                side,
                                pg,
                                epoch,
                                requested_ms,
                            },
                        );
                    }
                }
            }
            Action::TestOtherSide => {
                for pg in 0..self.pgs.len() {
                    if self.reach[side][pg] {
                        self.send((3, side, pg), Event::TestOtherSide { side, pg });
                    }
                }
            }
            Action::PersistEpoch(epoch) => self.sides[side].persisted_epoch = epoch,
            Action::StateTransferWanted { .. } => {
                let at = self.now_ms + self.rng.random_range(1..50);
                let generation = self.link_generation;
                self.schedule(
                    at,
                    Event::TransferBegin {
                        receiver: side,
                        generation,
                    },
                );
            }
            // The simulation's transfer sessions need no request on the link.
            Action::TransferRequested(_) => {}
            // The simulation models no loggers.
            Action::PeerLoggerProgress { .. } => {}
            Action::Event(SyncEvent::TransferBufferOverflow { .. }) => {
                self.retry_transfer(side, self.link_generation)
            }
            Action::Event(SyncEvent::DigestMismatch { seq, .. }) => self.violate(
                "a DigestCheck found different states",
                format!("side {} at {seq}", side_of(side)),
            ),
            Action::Event(_) => {}
        }
    }

    /// The PGs' model traffic: new inputs, and resends of what is not durably acknowledged.
    fn pg_traffic(&mut self) {
        let now = self.now_ms;
        for pg in 0..self.pgs.len() {
            if now < self.inputs_end_ms && self.rng.random_bool(0.2) {
                let input_no = self.pgs[pg].next_input_no;
                self.pgs[pg].next_input_no += 1;
                let side = self.pgs[pg].active;
                if self.reach[side][pg] {
                    self.send((4, pg, side), Event::PgInput { side, pg, input_no });
                }
            }
            // A path that takes input but acknowledges none (a paused side) is given up.
            let state = &self.pgs[pg];
            if state.acked_through + 1 < state.next_input_no
                && now >= state.last_progress_ms + PG_PATH_SILENCE_MS_MAX
            {
                self.switch_path(pg);
            }
            let state = &self.pgs[pg];
            let from = if state.resend_from <= state.walk_until {
                state.resend_from
            } else {
                state.acked_through + 1
            };
            if now >= state.last_resend_ms + PG_RESEND_INTERVAL_MS && from < state.next_input_no {
                let side = state.active;
                let to = (state.next_input_no - 1).min(from + PG_RESEND_BATCH_MAX - 1);
                if self.reach[side][pg] {
                    for input_no in from..=to {
                        self.send((4, pg, side), Event::PgInput { side, pg, input_no });
                    }
                    let state = &mut self.pgs[pg];
                    state.last_resend_ms = now;
                    state.resend_from = to + 1;
                } else {
                    self.switch_path(pg);
                }
            }
        }
    }

    /// The PG makes its other path active. The other side may have taken over in a later epoch
    /// without what this side acknowledged alone, so everything not durably acknowledged goes
    /// again; a side that holds an input acknowledges the repeat without ordering it twice.
    fn switch_path(&mut self, pg: usize) {
        let state = &mut self.pgs[pg];
        state.active = 1 - state.active;
        state.last_resend_ms = 0;
        state.last_progress_ms = self.now_ms;
        state.resend_from = state.durable_through + 1;
        state.walk_until = state.acked_through;
    }

    // ----- state transfer -----

    /// The source cuts its clients' state and starts sending it; it arrives after a simulated
    /// transfer time, unless the connection ends first.
    fn transfer_begin(&mut self, receiver: usize, generation: u64) {
        let source = 1 - receiver;
        if generation != self.link_generation || !self.runs(receiver) {
            return; // The next connection's Hellos ask again.
        }
        if self.sync_mut(receiver).transfer_wanted().is_none() {
            return;
        }
        if !self.runs(source) || !self.private_link_up {
            self.retry_transfer(receiver, generation);
            return;
        }
        let now = self.now_ms;
        match self.sync_mut(source).begin_transfer(now) {
            Ok(cut) => {
                self.trace_line(format!(
                    "transfer {} -> {} cut at {}",
                    side_of(source),
                    side_of(receiver),
                    cut.seq
                ));
                let clients = self.sides[source].clients.clone();
                let at = now + self.rng.random_range(20..1_500);
                self.schedule(
                    at,
                    Event::TransferDone {
                        receiver,
                        generation,
                        cut,
                        clients,
                    },
                );
            }
            Err(error) => {
                self.trace_line(format!("transfer refused: {error}"));
                self.retry_transfer(receiver, generation);
            }
        }
    }

    fn transfer_done(
        &mut self,
        receiver: usize,
        generation: u64,
        cut: SyncCut,
        clients: ClientModel,
    ) {
        if generation != self.link_generation || self.sides[receiver].sync.is_none() {
            return;
        }
        if self.sides[receiver].paused {
            // The bytes wait in its socket until it runs again.
            let at = self.now_ms + 10;
            self.schedule(
                at,
                Event::TransferDone {
                    receiver,
                    generation,
                    cut,
                    clients,
                },
            );
            return;
        }
        if !self.private_link_up {
            self.retry_transfer(receiver, generation);
            return;
        }
        let now = self.now_ms;
        match self
            .sync_mut(receiver)
            .on_transfer_received(now, cut.clone())
        {
            Ok(()) => {
                self.trace_line(format!(
                    "transfer to {} taken at {}",
                    side_of(receiver),
                    cut.seq
                ));
                let slot = &mut self.sides[receiver];
                slot.clients = clients;
                slot.transfers_received += 1;
            }
            Err(error) => {
                self.trace_line(format!("transfer discarded: {error}"));
                self.retry_transfer(receiver, generation);
            }
        }
    }

    fn retry_transfer(&mut self, receiver: usize, generation: u64) {
        let at = self.now_ms + TRANSFER_RETRY_MS;
        self.schedule(
            at,
            Event::TransferBegin {
                receiver,
                generation,
            },
        );
    }

    // ----- checkers -----

    fn on_delivered(&mut self, side: usize, message: Ordered) {
        let bytes = postcard::to_stdvec(&message).expect("an ordered message serializes");
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
        let slot = &mut self.sides[side];
        slot.delivered_count += 1;
        let last = slot.clients.last_delivered_seq;
        let chain = xxhash_rust::xxh3::xxh3_64(
            &[slot.clients.chain.to_le_bytes(), hash.to_le_bytes()].concat(),
        );
        if last != 0 && Some(message.seq) != next_seq(last, message.epoch) {
            let detail = format!(
                "side {} delivered {} after {last}",
                side_of(side),
                message.seq
            );
            self.violate("a delivered stream with a gap or a repeat", detail);
            return;
        }
        slot.clients.last_delivered_seq = message.seq;
        slot.clients.chain = chain;
        if let Some(PgInputNo { pg, input_no, .. }) = message.pg_input() {
            // A side's first input from a PG may be any: it begins wherever its stream does.
            if let Some(last) = slot.clients.pg_delivered.insert(pg, input_no) {
                if input_no != last + 1 {
                    let detail = format!(
                        "side {} delivered PG {pg} input {input_no} after {last}",
                        side_of(side)
                    );
                    self.violate("a PG input delivered twice or out of order", detail);
                    return;
                }
            }
        }
        let (first_hash, first_chain) = *self
            .delivered_by_seq
            .entry(message.seq)
            .or_insert((hash, chain));
        if first_hash != hash {
            self.violate(
                "a sequence number delivered with two different messages",
                format!("side {} delivered {message:?}", side_of(side)),
            );
        } else if first_chain != chain {
            self.violate(
                "two sides' states differ after the same sequence number",
                format!("side {} at {}", side_of(side), message.seq),
            );
        }
        if message.body == Body::DigestCheck {
            // The clients' digest is their chain: equal chains, equal states.
            self.digests_due
                .push((side, message.seq, u128::from(chain)));
        }
    }

    fn check_step(&mut self) {
        // Never two sides ordering at once: an isolated enabled side, or a paired enabled side
        // whose peer is its paired disabled partner.
        let states: Vec<Option<SyncState>> = (0..2)
            .map(|side| {
                self.runs(side)
                    .then(|| self.sides[side].sync.as_ref().expect("running").state())
            })
            .collect();
        let ordering = (0..2)
            .filter(|&side| match states[side] {
                Some(SyncState::IsolatedEnabled) => true,
                Some(SyncState::PairedEnabled) => {
                    states[1 - side] == Some(SyncState::PairedDisabled)
                }
                _ => false,
            })
            .count();
        if ordering == 2 {
            self.violate("two enabled sides", format!("states {states:?}"));
        }
        self.check_durable();
    }

    fn check_liveness(&mut self) {
        let enabled = (0..2)
            .filter(|&side| self.runs(side) && self.sync_mut(side).state().is_enabled())
            .count();
        let paired = (0..2)
            .filter(|&side| self.runs(side) && self.sync_mut(side).state().is_paired())
            .count();
        if enabled != 1 || paired != 2 {
            let states: Vec<String> = (0..2)
                .map(|side| {
                    self.sides[side]
                        .sync
                        .as_ref()
                        .map_or("down".into(), |s| s.state().to_string())
                })
                .collect();
            self.violate(
                "liveness: both sides paired, one enabled, after the faults heal",
                format!("states {states:?}"),
            );
            return;
        }
        for pg in 0..self.pgs.len() {
            let state = &self.pgs[pg];
            let generated = state.next_input_no - 1;
            if state.acked_through < generated {
                let detail = format!(
                    "PG {} generated {generated} inputs, {} acknowledged",
                    state.id, state.acked_through
                );
                self.violate("liveness: input acknowledged after the faults heal", detail);
                return;
            }
        }
    }

    /// Every durably acknowledged input was held by both sides when it was acknowledged. A side
    /// that restarts since cannot become enabled without the other's state, so an isolated
    /// enabled side, which delivers all it holds, has delivered every one of them.
    fn check_durable(&mut self) {
        for side in 0..2 {
            if !self.runs(side)
                || self.sides[side].sync.as_ref().expect("running").state()
                    != SyncState::IsolatedEnabled
            {
                continue;
            }
            for pg in 0..self.pgs.len() {
                let state = &self.pgs[pg];
                let delivered = self.sides[side]
                    .clients
                    .pg_delivered
                    .get(&state.id)
                    .copied()
                    .unwrap_or(0);
                if delivered < state.durable_through {
                    let detail = format!(
                        "PG {}: durably acknowledged through {}, side {} delivered through {delivered}",
                        state.id,
                        state.durable_through,
                        side_of(side)
                    );
                    self.violate("a durably acknowledged input lost", detail);
                    return;
                }
            }
        }
    }

    fn violate(&mut self, invariant: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                at_ms: self.now_ms,
                invariant,
                detail,
                trace_tail: self.trace.iter().cloned().collect(),
            });
        }
    }

    fn trace_line(&mut self, line: String) {
        let line = format!("{:>6} ms {line}", self.now_ms);
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if self.trace.len() >= self.options.trace_tail_lines {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }
}
