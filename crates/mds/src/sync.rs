//! The synchronizer of one side: a sans-IO state machine.
//!
//! It is driven by the shell with events (`peer_link_up`, `on_peer_message`, `on_pg_input`,
//! `on_lease_granted`, `on_test_other_side`, `tick`), each with the current time, and drained
//! with `poll`, which hands out `Action`s in the order they must be carried out. It reads no
//! clock, opens no socket and draws no random number, so two sides and their PGs can be run in
//! one process from a seed.
//!
//! The rules it keeps (SPEC section 4):
//! - exactly one side orders input: PairedEnabled or IsolatedEnabled;
//! - while paired, an ordered message is delivered only once both sides hold it: the enabled side
//!   waits for the peer's cumulative ack, the disabled side delivers what it receives;
//! - while isolated, a side orders only under PG leases for its epoch from a device majority
//!   (side A: at least half the configured PGs; side B: more than half), and stops ordering as
//!   soon as it can no longer count such a majority;
//! - each PG's inputs are ordered by number, next number only, per PG incarnation;
//! - a PG input in this side's quarantine is ordered as `Body::Quarantined`, which both sides
//!   skip, so that a poison input is not retried forever;
//! - a side that learns of a higher epoch than its own stops ordering at once.

use crate::protocol::*;
use crate::quarantine::{input_hash, QuarantinedInput, QUARANTINED_INPUTS_MAX};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_model::ids::PgId;
use tandem_model::input::Input;
use tandem_model::logged::HistoricalDrop;
use thiserror::Error;

/// The most ordered messages a side holds undelivered or unacknowledged by its peer. Past it
/// the enabled side stops ordering new input until the peer catches up (or is declared failed).
pub const HELD_MESSAGES_MAX: usize = 262_144;
/// The most PG inputs a disabled side keeps as forwarded but not yet ordered, for re-submission
/// if it becomes enabled.
pub const FORWARDED_INPUTS_MAX: usize = 65_536;
/// The disabled side acknowledges at least every this many messages, and on every tick.
pub const ACK_BATCH_MESSAGES: u64 = 256;
/// The fewest ordered messages a receiving side buffers while its clients' state arrives,
/// whatever the state's size (`transfer_buffer_bound`).
pub const TRANSFER_BUFFER_MESSAGES_FLOOR: usize = 65_536;
/// The most it ever buffers: past it the transfer fails and is retried.
pub const TRANSFER_BUFFER_MESSAGES_MAX: usize = 4_194_304;
/// Digests kept per side for DigestCheck comparison: the peer's answer for a sequence number
/// arrives within a few checks or not at all.
pub const DIGESTS_KEPT_MAX: usize = 16;
/// While the clocks of the sides differ, ordered time runs at most this much slower or faster
/// than the enabled side's clock: the difference shrinks by 1/this of the time that passes.
pub const CLOCK_SLEW_DIVISOR: i64 = 2;

/// How many ordered messages a receiver must be able to buffer while a state of `state_bytes`
/// arrives at `transfer_bytes_per_s` and input is ordered at `inputs_per_s`: twice the expected
/// count, so that a transfer under steady load finishes, with a floor for small states and
/// capped at `TRANSFER_BUFFER_MESSAGES_MAX`.
pub fn transfer_buffer_bound(
    state_bytes: u64,
    transfer_bytes_per_s: u64,
    inputs_per_s: u64,
) -> usize {
    let seconds = state_bytes as f64 / transfer_bytes_per_s.max(1) as f64;
    let expected = (2.0 * seconds * inputs_per_s as f64).ceil();
    (expected.min(TRANSFER_BUFFER_MESSAGES_MAX as f64) as usize)
        .clamp(TRANSFER_BUFFER_MESSAGES_FLOOR, TRANSFER_BUFFER_MESSAGES_MAX)
}

/// The six synchronizer states of ICM.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SyncState {
    Connecting,
    Testing,
    PairedEnabled,
    PairedDisabled,
    IsolatedEnabled,
    IsolatedDisabled,
}

impl SyncState {
    pub fn is_enabled(self) -> bool {
        matches!(self, SyncState::PairedEnabled | SyncState::IsolatedEnabled)
    }

    pub fn is_paired(self) -> bool {
        matches!(self, SyncState::PairedEnabled | SyncState::PairedDisabled)
    }
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncState::Connecting => "Connecting",
            SyncState::Testing => "Testing",
            SyncState::PairedEnabled => "Paired Enabled",
            SyncState::PairedDisabled => "Paired Disabled",
            SyncState::IsolatedEnabled => "Isolated Enabled",
            SyncState::IsolatedDisabled => "Isolated Disabled",
        })
    }
}

#[derive(Clone, Debug)]
pub struct SyncSettings {
    pub side: Side,
    pub logic_version: LogicVersion,
    /// The PGs of the topology: the device majority counts against all of them.
    pub pgs: BTreeSet<PgId>,
    /// Private-link heartbeat period; `heartbeat_misses_max` periods of silence fail the peer.
    pub heartbeat_interval_ms: u64,
    pub heartbeat_misses_max: u64,
    /// TimeTicks ordered by the enabled side.
    pub tick_interval_ms: u64,
    /// How long a PG's lease lasts, counted by this side from when it asked for it.
    pub lease_ms: u64,
    /// How often an enabled side renews its leases.
    pub lease_renew_interval_ms: u64,
    /// How long a side stays Connecting before it acts alone.
    pub connecting_timeout_ms: u64,
    /// How long Testing waits for the PGs' answers before it decides.
    pub test_other_side_timeout_ms: u64,
    /// The enabled side orders a DigestCheck this often (0: never).
    pub digest_check_interval_ms: u64,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// Bugs the whole-system simulation must catch, compiled in only with the `planted-bugs`
/// feature (which its tests turn on), never in a product build.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The enabled side delivers what it holds without waiting for the peer's ack.
    DeliverBeforeBothHold,
    /// An isolated side keeps ordering after its leases have lapsed.
    IgnoreLeaseExpiry,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("the lease ({lease_ms} ms) must outlast at least two renewals ({renew_ms} ms apart)")]
    LeaseTooShort { lease_ms: u64, renew_ms: u64 },
    #[error("a topology needs at least one PG for the split-brain guard")]
    NoPgs,
}

impl SyncSettings {
    /// Settings with SPEC's defaults: heartbeats every 100 ms, five missed fail the peer,
    /// TimeTicks every 100 ms.
    pub fn new(side: Side, logic_version: LogicVersion, pgs: BTreeSet<PgId>) -> SyncSettings {
        SyncSettings {
            side,
            logic_version,
            pgs,
            heartbeat_interval_ms: 100,
            heartbeat_misses_max: 5,
            tick_interval_ms: 100,
            lease_ms: 500,
            lease_renew_interval_ms: 100,
            connecting_timeout_ms: 1_000,
            test_other_side_timeout_ms: 300,
            digest_check_interval_ms: 10_000,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    pub fn check(&self) -> Result<(), SettingsError> {
        for (name, value) in [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("heartbeat_misses_max", self.heartbeat_misses_max),
            ("tick_interval_ms", self.tick_interval_ms),
            ("lease_renew_interval_ms", self.lease_renew_interval_ms),
            ("connecting_timeout_ms", self.connecting_timeout_ms),
            (
                "test_other_side_timeout_ms",
                self.test_other_side_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(SettingsError::Zero(name));
            }
        }
        if self.lease_ms < 2 * self.lease_renew_interval_ms {
            return Err(SettingsError::LeaseTooShort {
                lease_ms: self.lease_ms,
                renew_ms: self.lease_renew_interval_ms,
            });
        }
        if self.pgs.is_empty() {
            return Err(SettingsError::NoPgs);
        }
        Ok(())
    }

    /// Whether `reachable` PGs are a device majority for this side: with an even count, half is
    /// a majority for side A and a minority for side B, so the two sides' majorities always
    /// share a PG.
    pub fn is_majority(&self, reachable: usize) -> bool {
        let configured = self.pgs.len();
        match self.side {
            Side::A => 2 * reachable >= configured,
            Side::B => 2 * reachable > configured,
        }
    }
}

/// What the shell must do, in the order `poll` returns them.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    SendPeer(PeerMessage),
    /// Drop the private link (the peer failed its heartbeats or broke the protocol).
    ClosePeer {
        reason: String,
    },
    /// Hand the message to this side's synchronized clients.
    Deliver(Ordered),
    /// Tell the PG its inputs through `input_no` of `incarnation` are delivered. `durable` when
    /// both sides hold them; an isolated side's acknowledgement is not, and the PG keeps such
    /// inputs to resend if the other side takes over in a later epoch.
    AckPg {
        pg: PgId,
        incarnation: u64,
        input_no: u64,
        durable: bool,
    },
    /// Tell the PG to send its inputs again from `input_no`: a later one arrived first.
    ResendFrom {
        pg: PgId,
        incarnation: u64,
        input_no: u64,
    },
    /// Tell the PG this side takes no input now, so that it uses its other path.
    RefuseInput {
        pg: PgId,
        reason: &'static str,
    },
    /// Ask every reachable PG for a lease on `epoch`, sent at this time.
    RequestLease {
        epoch: Epoch,
        requested_ms: u64,
    },
    /// Ask every reachable PG whether it sees the other side enabled.
    TestOtherSide,
    /// Write the epoch to stable storage before acting on it.
    PersistEpoch(Epoch),
    /// This side must receive the peer's state before it can pair.
    StateTransferWanted {
        from: Side,
    },
    /// The peer asks for this side's state (its MDS sent "state transfer desired").
    TransferRequested(TransferRequest),
    /// The peer's logger: connected or not, and what it has committed.
    PeerLoggerProgress {
        connected: bool,
        committed_through: u64,
    },
    Event(SyncEvent),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    StateChanged {
        from: SyncState,
        to: SyncState,
        epoch: Epoch,
    },
    VersionMismatch {
        ours: String,
        theirs: String,
    },
    PeerFailed {
        silent_ms: u64,
    },
    /// A higher epoch than ours exists: we stop ordering.
    Fenced {
        ours: Epoch,
        theirs: Epoch,
    },
    HeldLimitReached {
        held: usize,
    },
    /// The epoch's range of sequence numbers is used up; ordering waits for a new epoch.
    EpochExhausted {
        epoch: Epoch,
    },
    /// More ordered messages arrived during a state transfer than the receiver may buffer: the
    /// transfer is abandoned and retried.
    TransferBufferOverflow {
        max: usize,
    },
    /// At an ordered DigestCheck the two sides' states differed. The disabled side drops its
    /// state and takes the enabled side's by transfer.
    DigestMismatch {
        seq: u64,
        ours: u128,
        theirs: u128,
    },
}

/// The outcome of the DigestChecks so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestChecks {
    pub equal: u64,
    pub differed: u64,
    /// This side's last digest, with the sequence number it was taken at.
    pub last: Option<(u64, u128)>,
}

/// Recent digests per sequence number, bounded by [`DIGESTS_KEPT_MAX`].
#[derive(Debug, Default)]
struct DigestLog {
    entries: VecDeque<(u64, u128)>,
}

impl DigestLog {
    fn keep(&mut self, seq: u64, digest: u128) {
        if self.entries.len() == DIGESTS_KEPT_MAX {
            self.entries.pop_front();
        }
        self.entries.push_back((seq, digest));
    }

    fn get(&self, seq: u64) -> Option<u128> {
        self.entries
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, d)| *d)
    }
}

#[derive(Debug, Default)]
struct DigestLedger {
    ours: DigestLog,
    theirs: DigestLog,
    equal: u64,
    differed: u64,
}

/// Why a state transfer cannot start or be taken.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TransferError {
    #[error("the private link to the peer is down")]
    NotConnected,
    #[error("this side is not the state source for its peer")]
    NotSource,
    #[error("this side has no state to send: it restarted and waits for its peer's")]
    NoState,
    #[error(
        "the private link has not announced a cut at sequence {seq} (or announced a later one)"
    )]
    CutNotSeen { seq: u64 },
    #[error("this side is ordering input: it cannot take another side's state")]
    Enabled,
    #[error("a forwarded message after the cut does not follow: {0}")]
    BadForward(String),
}

/// A receiving side's progress through a state transfer.
#[derive(Debug, Default)]
enum Join {
    #[default]
    None,
    /// The source announced a cut at `from`: the ordered messages after it are kept until the
    /// clients' state arrives.
    Buffering { from: u64, messages: Vec<Ordered> },
    /// The clients hold the source's state and every message since: waiting for `Pair`.
    Joined,
}

/// Per PG: the incarnation and input numbers held in the ordered stream and delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PgCursor {
    incarnation: u64,
    held_through: u64,
    delivered_through: u64,
}

/// A forwarded input, kept until it is seen ordered.
#[derive(Clone, Debug)]
struct Forwarded {
    incarnation: u64,
    input: Input,
}

#[derive(Clone, Debug, Default)]
struct PeerLink {
    up: bool,
    hello: Option<Hello>,
    last_heard_ms: u64,
    last_sent_ms: u64,
    /// The peer holds every message through this one (its cumulative ack).
    held_through: u64,
    /// Our ack last sent to the peer, when we are the disabled side.
    acked_through: u64,
    /// When the peer's ack last moved on (or pairing began), for the enabled side's ack timeout.
    ack_progress_ms: u64,
}

#[derive(Debug)]
pub struct Synchronizer {
    settings: SyncSettings,
    state: SyncState,
    state_since_ms: u64,
    epoch: Epoch,
    /// Messages held, from the oldest not both delivered here and held by the peer.
    log: VecDeque<Ordered>,
    /// PG inputs this side orders as `Body::Quarantined` instead, should it be enabled.
    quarantine: BTreeSet<QuarantinedInput>,
    held_through: u64,
    delivered_through: u64,
    /// Ordered time of the last delivered message.
    delivered_time_ms: u64,
    time_ms: u64,
    next_tick_ms: u64,
    needs_state: bool,
    /// See `Hello::from_configuration`.
    from_configuration: Option<u64>,
    /// This side is behind its peer and has asked for its state.
    state_wanted: bool,
    /// As a receiver: the transfer under way.
    join: Join,
    transfer_buffer_messages_max: usize,
    /// As a state source: the cut after which every ordered message goes to the peer.
    forwarding_from: Option<u64>,
    /// The epoch this process last ordered in. A side that restarted does not know what its
    /// earlier process ordered in the epoch it owned, so it never orders in it again.
    ordered_in: Option<Epoch>,
    pg_cursors: BTreeMap<PgId, PgCursor>,
    forwarded: BTreeMap<(PgId, u64), Forwarded>,
    /// Per PG: the input number this side last asked it to resend from, and when.
    resend_asked: BTreeMap<PgId, (u64, u64)>,
    reachable_pgs: BTreeSet<PgId>,
    /// Leases for `lease_epoch`: PG -> the time this side asked (the lease runs from then).
    lease_epoch: Option<Epoch>,
    leases: BTreeMap<PgId, u64>,
    last_lease_request_ms: Option<u64>,
    /// While Testing: the PGs that answered, and whether any sees the other side enabled.
    test_answers: BTreeMap<PgId, bool>,
    peer: PeerLink,
    next_digest_check_ms: u64,
    digests: DigestLedger,
    /// Ordered time minus this side's clock: learnt from the orderer's messages while
    /// disabled, slewed toward zero while enabled.
    clock_offset_ms: i64,
    /// This side's clock when the offset was last slewed.
    slew_wall_ms: u64,
    /// Ordered messages waiting to go to the peer in one batch.
    outbox: Vec<Ordered>,
    actions: VecDeque<Action>,
}

impl Synchronizer {
    /// A side starting with `epoch` (the highest it persisted), at sequence `held_through`.
    /// `needs_state` is set for a side that restarted without its clients' state.
    pub fn new(
        settings: SyncSettings,
        epoch: Epoch,
        held_through: u64,
        time_ms: u64,
        needs_state: bool,
        now_ms: u64,
    ) -> Result<Synchronizer, SettingsError> {
        settings.check()?;
        Ok(Synchronizer {
            next_digest_check_ms: now_ms.saturating_add(settings.digest_check_interval_ms),
            settings,
            state: SyncState::Connecting,
            state_since_ms: now_ms,
            epoch,
            log: VecDeque::new(),
            quarantine: BTreeSet::new(),
            held_through,
            delivered_through: held_through,
            delivered_time_ms: time_ms,
            time_ms,
            next_tick_ms: 0,
            needs_state,
            from_configuration: None,
            state_wanted: false,
            join: Join::None,
            transfer_buffer_messages_max: TRANSFER_BUFFER_MESSAGES_FLOOR,
            forwarding_from: None,
            ordered_in: None,
            pg_cursors: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            resend_asked: BTreeMap::new(),
            reachable_pgs: BTreeSet::new(),
            lease_epoch: None,
            leases: BTreeMap::new(),
            last_lease_request_ms: None,
            test_answers: BTreeMap::new(),
            peer: PeerLink::default(),
            digests: DigestLedger::default(),
            clock_offset_ms: 0,
            slew_wall_ms: now_ms,
            outbox: Vec::new(),
            actions: VecDeque::new(),
        })
    }

    pub fn state(&self) -> SyncState {
        self.state
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn side(&self) -> Side {
        self.settings.side
    }

    pub fn held_through(&self) -> u64 {
        self.held_through
    }

    pub fn delivered_through(&self) -> u64 {
        self.delivered_through
    }

    /// Whether this side restarted without state and has not yet received its peer's.
    /// This side's state was just built from configuration `config_version` (a cold start
    /// from its logger's central database).
    pub fn set_built_from_configuration(&mut self, config_version: u64) {
        self.from_configuration = Some(config_version);
    }

    pub fn needs_state(&self) -> bool {
        self.needs_state
    }

    /// Sends "state transfer desired" to the peer, while this side waits for its state.
    pub fn request_transfer(&mut self, now_ms: u64, request: TransferRequest) {
        if self.state_wanted {
            self.send_peer(now_ms, PeerMessage::TransferWanted(request));
        }
    }

    /// The side whose state this side waits for, while it waits.
    pub fn transfer_wanted(&self) -> Option<Side> {
        self.state_wanted.then(|| self.settings.side.peer())
    }

    /// The most ordered messages this side buffers during a transfer; the shell raises it from
    /// the incoming state's size (`transfer_buffer_bound`).
    pub fn set_transfer_buffer_messages_max(&mut self, max: usize) {
        self.transfer_buffer_messages_max =
            max.clamp(TRANSFER_BUFFER_MESSAGES_FLOOR, TRANSFER_BUFFER_MESSAGES_MAX);
    }

    /// The PG inputs that panicked this side's clients during two crashes. Whenever this side
    /// is enabled it orders `Body::Quarantined` in place of each of them; the peer skips what
    /// it is sent, so only the enabled side's quarantine counts.
    ///
    /// # Panics
    /// If `inputs` holds more than `QUARANTINED_INPUTS_MAX` entries: the shell's bounded read of
    /// its records never produces more.
    pub fn set_quarantine(&mut self, inputs: BTreeSet<QuarantinedInput>) {
        assert!(
            inputs.len() <= QUARANTINED_INPUTS_MAX,
            "{} quarantined inputs, at most {QUARANTINED_INPUTS_MAX}",
            inputs.len()
        );
        self.quarantine = inputs;
    }

    /// The next action for the shell, in order.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- events -----

    pub fn peer_link_up(&mut self, now_ms: u64) {
        // A new connection replaces the old one: whatever the old one paired ends with it.
        self.peer_link_down(now_ms);
        self.peer = PeerLink {
            up: true,
            last_heard_ms: now_ms,
            ..PeerLink::default()
        };
        let hello = self.hello();
        self.send_peer(now_ms, PeerMessage::Hello(hello));
    }

    pub fn peer_link_down(&mut self, now_ms: u64) {
        if !self.peer.up {
            return;
        }
        self.peer.up = false;
        self.forget_peer();
        self.peer_lost(now_ms);
    }

    pub fn pg_reachable(&mut self, now_ms: u64, pg: PgId, reachable: bool) {
        if !self.settings.pgs.contains(&pg) {
            return;
        }
        if reachable {
            self.reachable_pgs.insert(pg);
        } else {
            self.reachable_pgs.remove(&pg);
            self.leases.remove(&pg);
        }
        self.check_isolated(now_ms);
    }

    pub fn on_peer_message(&mut self, now_ms: u64, message: PeerMessage) {
        if !self.peer.up {
            return;
        }
        self.peer.last_heard_ms = now_ms;
        match message {
            PeerMessage::Hello(hello) => self.on_hello(now_ms, hello),
            PeerMessage::Pair {
                epoch,
                held_through,
            } => self.on_pair(now_ms, epoch, held_through),
            PeerMessage::Heartbeat { epoch } => self.learn_epoch(now_ms, epoch),
            PeerMessage::Ordered { messages } => self.on_ordered(now_ms, messages),
            PeerMessage::Ack { held_through } => {
                if self.state == SyncState::PairedEnabled {
                    if held_through > self.peer.held_through {
                        self.peer.ack_progress_ms = now_ms;
                    }
                    self.peer.held_through = self
                        .peer
                        .held_through
                        .max(held_through.min(self.held_through));
                    self.deliver_ready();
                }
            }
            PeerMessage::Forward {
                pg,
                incarnation,
                input_no,
                input,
            } => {
                if self.state.is_enabled() && self.settings.pgs.contains(&pg) {
                    self.check_isolated(now_ms);
                    if self.state.is_enabled() {
                        self.accept_input(now_ms, pg, incarnation, input_no, input);
                    }
                }
            }
            PeerMessage::Refuse { reason } => {
                self.close_peer(now_ms, format!("the peer refused to pair: {reason}"));
            }
            PeerMessage::TransferWanted(request) => {
                self.actions.push_back(Action::TransferRequested(request));
            }
            PeerMessage::LoggerProgress {
                connected,
                committed_through,
            } => {
                self.actions.push_back(Action::PeerLoggerProgress {
                    connected,
                    committed_through,
                });
            }
            PeerMessage::DigestAt { seq, digest } => {
                self.digests.theirs.keep(seq, digest);
                self.compare_digests(now_ms, seq);
            }
            PeerMessage::TransferCut { seq } => {
                if self.state_wanted {
                    self.join = Join::Buffering {
                        from: seq,
                        messages: Vec::new(),
                    };
                }
            }
        }
        self.flush(now_ms);
    }

    /// This side's clients computed their state digest after delivering the DigestCheck at
    /// `seq`: the peer gets it, and whichever of the two digests arrives second is compared.
    pub fn on_local_digest(&mut self, now_ms: u64, seq: u64, digest: u128) {
        self.digests.ours.keep(seq, digest);
        if self.peer.up && self.state.is_paired() {
            self.send_peer(now_ms, PeerMessage::DigestAt { seq, digest });
        }
        self.compare_digests(now_ms, seq);
        self.flush(now_ms);
    }

    /// DigestChecks whose digests were equal on both sides, those that differed, and the last
    /// local digest with its sequence number.
    pub fn digest_checks(&self) -> DigestChecks {
        DigestChecks {
            equal: self.digests.equal,
            differed: self.digests.differed,
            last: self.digests.ours.entries.back().copied(),
        }
    }

    fn compare_digests(&mut self, now_ms: u64, seq: u64) {
        let (Some(ours), Some(theirs)) = (self.digests.ours.get(seq), self.digests.theirs.get(seq))
        else {
            return;
        };
        // Each comparison once: forget the peer's entry.
        self.digests.theirs.entries.retain(|(s, _)| *s != seq);
        if ours == theirs {
            self.digests.equal += 1;
            return;
        }
        self.digests.differed += 1;
        self.actions
            .push_back(Action::Event(SyncEvent::DigestMismatch {
                seq,
                ours,
                theirs,
            }));
        if self.state == SyncState::PairedDisabled {
            // This side's state is not the one that orders: it is rebuilt from the peer's. The
            // new connection's Hello says it needs state.
            self.needs_state = true;
            self.close_peer(
                now_ms,
                format!("state digests differ at sequence {seq}: taking the peer's state"),
            );
        }
    }

    /// The shell has handled every event that was waiting: a disabled side acknowledges what it
    /// now holds in one cumulative Ack, so the enabled side can deliver without waiting for a
    /// tick. Under load a batch holds many messages; when quiet, each is acknowledged at once.
    pub fn end_of_batch(&mut self, now_ms: u64) {
        if self.state == SyncState::PairedDisabled
            && self.peer.up
            && self.peer.acked_through < self.held_through
        {
            self.send_ack(now_ms);
            // The ack says what this side holds, not what it applied: it goes ahead of this
            // batch's deliveries, so the enabled side delivers while this side applies, instead
            // of after.
            let ack = self.actions.pop_back().expect("send_ack queued the ack");
            debug_assert!(matches!(ack, Action::SendPeer(PeerMessage::Ack { .. })));
            self.actions.push_front(ack);
        }
    }

    /// An input from a PG on its path to this side.
    pub fn on_pg_input(
        &mut self,
        now_ms: u64,
        pg: PgId,
        incarnation: u64,
        input_no: u64,
        input: Input,
    ) {
        if !self.settings.pgs.contains(&pg) {
            self.actions.push_back(Action::RefuseInput {
                pg,
                reason: "this PG is not in the topology",
            });
            return;
        }
        // A side that was paused may hold leases that lapsed while it slept.
        self.check_isolated(now_ms);
        match self.state {
            SyncState::PairedEnabled | SyncState::IsolatedEnabled => {
                self.accept_input(now_ms, pg, incarnation, input_no, input);
            }
            SyncState::PairedDisabled => {
                let cursor = self.pg_cursors.get(&pg).copied().unwrap_or_default();
                if (incarnation, input_no) <= (cursor.incarnation, cursor.held_through) {
                    self.ack_if_delivered(pg, incarnation, input_no);
                } else if self.forwarded.len() < FORWARDED_INPUTS_MAX {
                    self.forwarded.insert(
                        (pg, input_no),
                        Forwarded {
                            incarnation,
                            input: input.clone(),
                        },
                    );
                    self.send_peer(
                        now_ms,
                        PeerMessage::Forward {
                            pg,
                            incarnation,
                            input_no,
                            input,
                        },
                    );
                } else {
                    // Past the bound: the PG is told to use its other path and resend there.
                    self.actions.push_back(Action::RefuseInput {
                        pg,
                        reason: "too many forwarded inputs await ordering",
                    });
                }
            }
            SyncState::Connecting | SyncState::Testing | SyncState::IsolatedDisabled => {
                self.actions.push_back(Action::RefuseInput {
                    pg,
                    reason: "this side is not ordering input",
                });
            }
        }
        self.flush(now_ms);
    }

    /// An administrator's input (a configuration change) received on this side, numbered
    /// `request` by this side. Only an enabled side orders it; it is not forwarded, because
    /// the administrator's client waits for the answer of the side it asked and tries the
    /// other side when told this one is not ordering.
    pub fn submit_admin(
        &mut self,
        now_ms: u64,
        request: u64,
        input: Input,
    ) -> Result<u64, &'static str> {
        let source = Source::Admin {
            side: self.settings.side,
            request,
        };
        self.order_submitted(now_ms, Body::Input { source, input })
            .map_err(|e| e.unwrap_or("this side is not ordering input; ask the other side"))
    }

    /// Orders a body the shell submitted, if this side orders: its sequence number, or why
    /// not (`None`: this side is not enabled).
    fn order_submitted(&mut self, now_ms: u64, body: Body) -> Result<u64, Option<&'static str>> {
        self.check_isolated(now_ms);
        if !self.state.is_enabled() {
            return Err(None);
        }
        let before = self.held_through;
        self.order(now_ms, body);
        self.flush(now_ms);
        if self.held_through == before {
            return Err(Some("the ordered stream is full; try again"));
        }
        Ok(self.held_through)
    }

    /// The shell's decision to drop historical records held for the loggers (both loggers
    /// are down and its buffer is full). Only an enabled side orders it, so that both sides
    /// drop the same records at the same point of the stream.
    pub fn submit_historical_drop(
        &mut self,
        now_ms: u64,
        drop: HistoricalDrop,
    ) -> Result<u64, &'static str> {
        self.order_submitted(now_ms, Body::HistoricalDrop(drop))
            .map_err(|e| e.unwrap_or("this side is not ordering input"))
    }

    /// This side's logger connected, disconnected or committed more: the peer is told, when
    /// the private link is up.
    pub fn logger_progress(&mut self, now_ms: u64, connected: bool, committed_through: u64) {
        if self.peer.up {
            self.send_peer(
                now_ms,
                PeerMessage::LoggerProgress {
                    connected,
                    committed_through,
                },
            );
            self.flush(now_ms);
        }
    }

    /// A PG granted (or renewed) a lease on `epoch`, asked for at `requested_ms`.
    pub fn on_lease_granted(&mut self, now_ms: u64, pg: PgId, epoch: Epoch, requested_ms: u64) {
        // A grant for an epoch below one this side has learnt since it asked is worthless: the
        // higher epoch's owner may be ordering in its range.
        if Some(epoch) != self.lease_epoch
            || epoch < self.epoch
            || !self.reachable_pgs.contains(&pg)
        {
            return;
        }
        let entry = self.leases.entry(pg).or_insert(requested_ms);
        *entry = (*entry).max(requested_ms);
        if self.state == SyncState::Testing
            && !self.needs_state
            && !self.receiving_state()
            && self.valid_leases(now_ms)
            && self.majority_leased(now_ms)
        {
            self.become_isolated_enabled(now_ms, epoch);
        }
        self.flush(now_ms);
    }

    /// A PG refused a lease because it has granted a higher epoch.
    pub fn on_lease_refused(&mut self, now_ms: u64, granted: Epoch) {
        let before = self.epoch;
        self.learn_epoch(now_ms, granted);
        if self.epoch != before && self.peer.up && !self.state.is_paired() {
            // The Hello this connection began with named the old epoch: the peer learns the
            // new one, so that the Hellos decide the pairing again.
            let hello = self.hello();
            self.send_peer(now_ms, PeerMessage::Hello(hello));
        }
        self.flush(now_ms);
    }

    /// A PG's answer to Test Other Side: whether it sees the other side enabled.
    pub fn on_test_other_side(&mut self, now_ms: u64, pg: PgId, other_enabled: bool) {
        if self.state != SyncState::Testing || !self.reachable_pgs.contains(&pg) {
            return;
        }
        self.test_answers.insert(pg, other_enabled);
        self.decide_test(now_ms, false);
        self.flush(now_ms);
    }

    /// As the state source: the shell is cutting its clients' state now, consistent through the
    /// returned `SyncCut::seq` (everything delivered). From here on every ordered message after
    /// the cut also goes to the peer, which buffers it until its clients are rebuilt.
    pub fn begin_transfer(&mut self, now_ms: u64) -> Result<SyncCut, TransferError> {
        let Some(peer) = self.peer.hello.as_ref().filter(|_| self.peer.up) else {
            return Err(TransferError::NotConnected);
        };
        if self.needs_state {
            return Err(TransferError::NoState);
        }
        if pairing_source(&self.hello(), peer) != self.settings.side {
            return Err(TransferError::NotSource);
        }
        let seq = self.delivered_through;
        self.forwarding_from = Some(seq);
        self.send_peer(now_ms, PeerMessage::TransferCut { seq });
        // Held but undelivered messages (a side that lost its peer before they were acked) are
        // after the cut: the receiver must hold them too.
        let undelivered: Vec<Ordered> = self.log.iter().filter(|m| m.seq > seq).cloned().collect();
        self.outbox.extend(undelivered);
        self.flush(now_ms);
        Ok(SyncCut {
            seq,
            epoch: self.epoch,
            time_ms: self.delivered_time_ms,
            pg_cursors: self
                .pg_cursors
                .iter()
                .map(|(&pg, cursor)| PgCursorCut {
                    pg,
                    incarnation: cursor.incarnation,
                    input_no: cursor.delivered_through,
                })
                .collect(),
        })
    }

    /// As the receiver: the clients now hold the peer's state at `cut`. The messages buffered
    /// since the cut are delivered, and this side asks to pair. On an error the transfer is
    /// retried; the state the clients received must then be discarded.
    pub fn on_transfer_received(&mut self, now_ms: u64, cut: SyncCut) -> Result<(), TransferError> {
        if self.state.is_enabled() {
            return Err(TransferError::Enabled);
        }
        let buffered = match std::mem::take(&mut self.join) {
            Join::Buffering { from, messages } if from == cut.seq && self.peer.up => messages,
            other => {
                self.join = other;
                return Err(TransferError::CutNotSeen { seq: cut.seq });
            }
        };
        let pg_cursors: BTreeMap<PgId, PgCursor> = cut
            .pg_cursors
            .iter()
            .map(|c| {
                (
                    c.pg,
                    PgCursor {
                        incarnation: c.incarnation,
                        held_through: c.input_no,
                        delivered_through: c.input_no,
                    },
                )
            })
            .collect();
        // The buffered stream must continue the cut exactly; checked before anything changes,
        // so that a refused transfer leaves this side as it was.
        let mut held_through = cut.seq;
        let mut cursors = pg_cursors.clone();
        for message in buffered.iter().filter(|m| m.seq > cut.seq) {
            if let Some(problem) =
                follow_problem(held_through, &cursors, &self.settings.pgs, message)
            {
                self.close_peer(now_ms, problem.clone());
                self.flush(now_ms);
                return Err(TransferError::BadForward(problem));
            }
            held_through = message.seq;
            if let Some(input) = message.pg_input() {
                let cursor = cursors.entry(input.pg).or_default();
                cursor.incarnation = input.incarnation;
                cursor.held_through = input.input_no;
            }
        }
        self.needs_state = false;
        self.state_wanted = false;
        self.held_through = cut.seq;
        self.delivered_through = cut.seq;
        self.delivered_time_ms = cut.time_ms;
        self.time_ms = cut.time_ms;
        self.log.clear();
        self.forwarded.clear();
        self.resend_asked.clear();
        self.pg_cursors = pg_cursors;
        self.adopt_epoch(cut.epoch);
        self.join = Join::Joined;
        let held = self.hold_from_peer(buffered);
        assert!(held.is_ok(), "the buffered stream was checked: {held:?}");
        self.deliver_ready();
        let hello = self.hello();
        self.send_peer(now_ms, PeerMessage::Hello(hello));
        self.flush(now_ms);
        Ok(())
    }

    /// The timer: heartbeats, failure detection, TimeTicks, lease renewal and timeouts. Call it
    /// at least every few milliseconds; it does nothing when nothing is due.
    pub fn tick(&mut self, now_ms: u64) {
        let silence_max = self.settings.heartbeat_interval_ms * self.settings.heartbeat_misses_max;
        if self.peer.up && now_ms.saturating_sub(self.peer.last_heard_ms) > silence_max {
            let silent_ms = now_ms - self.peer.last_heard_ms;
            self.actions
                .push_back(Action::Event(SyncEvent::PeerFailed { silent_ms }));
            self.close_peer(
                now_ms,
                format!("no message from the peer for {silent_ms} ms"),
            );
        }
        // A peer that answers heartbeats but holds nothing new is not paired in fact (it may
        // have restarted, or decided differently): the connection ends and pairing starts over.
        if self.state == SyncState::PairedEnabled
            && self.peer.up
            && self.held_through > self.peer.held_through
            && now_ms.saturating_sub(self.peer.ack_progress_ms) > silence_max
        {
            let stalled_ms = now_ms - self.peer.ack_progress_ms;
            self.close_peer(
                now_ms,
                format!("the peer acknowledged nothing new for {stalled_ms} ms"),
            );
        }
        if self.peer.up
            && now_ms.saturating_sub(self.peer.last_sent_ms) >= self.settings.heartbeat_interval_ms
        {
            self.send_peer(now_ms, PeerMessage::Heartbeat { epoch: self.epoch });
        }
        match self.state {
            SyncState::Connecting => {
                if now_ms.saturating_sub(self.state_since_ms) >= self.settings.connecting_timeout_ms
                {
                    self.peer_lost(now_ms);
                }
            }
            SyncState::Testing => {
                let testing_ms = now_ms.saturating_sub(self.state_since_ms);
                match self.lease_epoch {
                    Some(wanted) if wanted > self.epoch => {
                        // Waiting for a majority to grant the new epoch: the old holder's leases
                        // lapse on the PGs within one lease period, so ask again until then.
                        if testing_ms
                            >= self.settings.test_other_side_timeout_ms + 2 * self.settings.lease_ms
                        {
                            self.set_state(now_ms, SyncState::IsolatedDisabled);
                        } else {
                            self.request_lease_when_due(now_ms, wanted);
                        }
                    }
                    _ => {
                        if testing_ms >= self.settings.test_other_side_timeout_ms {
                            self.decide_test(now_ms, true);
                        }
                    }
                }
            }
            SyncState::IsolatedEnabled => self.check_isolated(now_ms),
            SyncState::IsolatedDisabled => {
                // Retry: the PGs may be back, or the other side gone for good (its lease lapses
                // on the PGs within one lease period).
                if now_ms.saturating_sub(self.state_since_ms)
                    >= self.settings.test_other_side_timeout_ms
                    && !self.peer.up
                {
                    self.peer_lost(now_ms);
                }
            }
            SyncState::PairedEnabled | SyncState::PairedDisabled => {}
        }
        if self.state.is_enabled() {
            self.renew_leases(now_ms);
            let digest_every_ms = self.settings.digest_check_interval_ms;
            if digest_every_ms > 0 && now_ms >= self.next_digest_check_ms {
                self.next_digest_check_ms = now_ms + digest_every_ms;
                self.order(now_ms, Body::DigestCheck);
            }
            if now_ms >= self.next_tick_ms {
                self.next_tick_ms = now_ms + self.settings.tick_interval_ms;
                self.order(
                    now_ms,
                    Body::Input {
                        source: Source::Synchronizer,
                        input: Input::TimeTick,
                    },
                );
            }
        }
        if self.state == SyncState::PairedDisabled && self.peer.acked_through < self.held_through {
            self.send_ack(now_ms);
        }
        self.flush(now_ms);
    }

    // ----- pairing -----

    fn hello(&self) -> Hello {
        Hello {
            side: self.settings.side,
            epoch: self.epoch,
            logic_version: self.settings.logic_version.clone(),
            held_through: self.held_through,
            time_ms: self.time_ms,
            enabled: self.state.is_enabled(),
            needs_state: self.needs_state,
            joined: matches!(self.join, Join::Joined),
            from_configuration: self.from_configuration,
        }
    }

    fn on_hello(&mut self, now_ms: u64, hello: Hello) {
        if hello.side == self.settings.side {
            self.close_peer(
                now_ms,
                format!("the peer also calls itself side {}", hello.side),
            );
            return;
        }
        if hello.logic_version != self.settings.logic_version {
            let ours = self.settings.logic_version.to_string();
            let theirs = hello.logic_version.to_string();
            self.actions
                .push_back(Action::Event(SyncEvent::VersionMismatch {
                    ours: ours.clone(),
                    theirs: theirs.clone(),
                }));
            self.send_peer(
                now_ms,
                PeerMessage::Refuse {
                    reason: format!("logic version {theirs} differs from ours ({ours})"),
                },
            );
            self.close_peer(
                now_ms,
                format!("logic version {theirs} differs from ours ({ours})"),
            );
            return;
        }
        let mine = self.hello();
        self.peer.hello = Some(hello.clone());
        // Two sides that never paired nor ordered (epoch 0) have no common history: each built
        // its state alone (from configuration), so the other takes the source's by transfer.
        // The same holds for a side that learnt an epoch from a PG's lease refusal but still
        // holds only its own configuration: equal epochs and sequence numbers prove nothing.
        let in_sync = !mine.needs_state
            && !hello.needs_state
            && mine.from_configuration.is_none()
            && hello.from_configuration.is_none()
            && mine.epoch.owner.is_some()
            && mine.epoch == hello.epoch
            && mine.held_through == hello.held_through;
        let source = pairing_source(&mine, &hello);
        if source == self.settings.side {
            // A peer that took our state at the cut holds every message forwarded since; what
            // it has not yet read is in flight on this link, ahead of our `Pair`.
            let joined = hello.joined
                && self.forwarding_from.is_some_and(|cut| {
                    cut <= hello.held_through && hello.held_through <= self.held_through
                });
            if in_sync || joined {
                self.pair_as_enabled(now_ms, hello.epoch, hello.held_through);
            } else if hello.joined {
                self.close_peer(
                    now_ms,
                    format!(
                        "the peer joined at {} from a cut this side did not send",
                        hello.held_through
                    ),
                );
            }
            // Otherwise the peer asks for a state transfer and says Hello again once it is done.
        } else {
            self.learn_epoch(now_ms, hello.epoch);
            if in_sync {
                // The source's `Pair` decides.
            } else {
                // It takes the peer's state: it must not be ordering, nor about to start.
                if self.state.is_enabled() || self.state == SyncState::Testing {
                    self.lease_epoch = None;
                    self.leases.clear();
                    self.set_state(now_ms, SyncState::IsolatedDisabled);
                }
                self.want_state(source);
            }
        }
    }

    /// Pairs with the peer, which holds every message through `peer_held_through` and has seen
    /// `peer_epoch`: the pair's epoch is ours, or a new one above both.
    fn pair_as_enabled(&mut self, now_ms: u64, peer_epoch: Epoch, peer_held_through: u64) {
        if !self.owns_epoch() || peer_epoch > self.epoch || self.ordered_in != Some(self.epoch) {
            let number = self.epoch.number.max(peer_epoch.number) + 1;
            self.adopt_epoch(Epoch::new(number.min(EPOCH_NUMBER_MAX), self.settings.side));
        }
        // Whatever was forwarded goes ahead of the `Pair`.
        self.flush(now_ms);
        self.forwarding_from = None;
        self.peer.held_through = peer_held_through;
        self.peer.ack_progress_ms = now_ms;
        self.set_state(now_ms, SyncState::PairedEnabled);
        self.send_peer(
            now_ms,
            PeerMessage::Pair {
                epoch: self.epoch,
                held_through: self.held_through,
            },
        );
    }

    /// The source's offer to pair: taken only if this side still holds exactly what it said in
    /// its Hello; otherwise the connection ends and the next one starts over with new Hellos.
    fn on_pair(&mut self, now_ms: u64, epoch: Epoch, held_through: u64) {
        let acceptable = !self.needs_state
            && !self.state.is_enabled()
            && held_through == self.held_through
            && epoch.owner == Some(self.settings.side.peer())
            && epoch >= self.epoch;
        if !acceptable {
            self.close_peer(
                now_ms,
                format!(
                    "the peer offered to pair in epoch {} at {held_through}; this side holds {} in epoch {}",
                    epoch.number, self.held_through, self.epoch.number
                ),
            );
            return;
        }
        self.adopt_epoch(epoch);
        self.join = Join::None;
        self.lease_epoch = None;
        self.leases.clear();
        self.set_state(now_ms, SyncState::PairedDisabled);
        self.send_ack(now_ms);
    }

    // ----- ordering and delivery -----

    fn accept_input(
        &mut self,
        now_ms: u64,
        pg: PgId,
        incarnation: u64,
        input_no: u64,
        input: Input,
    ) {
        let cursor = self.pg_cursors.get(&pg).copied().unwrap_or_default();
        let next = if incarnation > cursor.incarnation {
            1
        } else if incarnation == cursor.incarnation {
            cursor.held_through.saturating_add(1)
        } else {
            return; // An old incarnation: that PG process is gone.
        };
        if input_no < next {
            self.ack_if_delivered(pg, incarnation, input_no);
            return;
        }
        if input_no > next {
            // A gap: inputs before it were lost on the way or went to a side that is gone. Asked
            // once per heartbeat interval, since every later input shows the same gap.
            let asked = self.resend_asked.get(&pg).copied();
            if asked.is_none_or(|(no, at_ms)| {
                no != next || now_ms >= at_ms + self.settings.heartbeat_interval_ms
            }) {
                self.resend_asked.insert(pg, (next, now_ms));
                self.actions.push_back(Action::ResendFrom {
                    pg,
                    incarnation,
                    input_no: next,
                });
            }
            return;
        }
        let body = if self.is_quarantined(pg, &input) {
            Body::Quarantined {
                pg,
                incarnation,
                input_no,
            }
        } else {
            Body::Input {
                source: Source::Pg {
                    pg,
                    incarnation,
                    input_no,
                },
                input,
            }
        };
        self.order(now_ms, body);
    }

    /// Whether this PG input is quarantined. The input is hashed only when its PG has a
    /// quarantined input, so an empty quarantine costs one lookup.
    fn is_quarantined(&self, pg: PgId, input: &Input) -> bool {
        let key = |input_hash| QuarantinedInput { pg, input_hash };
        self.quarantine
            .range(key(0)..=key(u64::MAX))
            .next()
            .is_some()
            && self.quarantine.contains(&key(input_hash(input)))
    }

    fn order(&mut self, now_ms: u64, body: Body) {
        debug_assert!(self.state.is_enabled());
        if self.log.len() >= HELD_MESSAGES_MAX {
            self.actions
                .push_back(Action::Event(SyncEvent::HeldLimitReached {
                    held: self.log.len(),
                }));
            return;
        }
        let Some(seq) = next_seq(self.held_through, self.epoch) else {
            // 2^40 messages in one epoch: the next pairing or takeover starts a new one.
            self.actions
                .push_back(Action::Event(SyncEvent::EpochExhausted {
                    epoch: self.epoch,
                }));
            return;
        };
        self.time_ms = self.time_ms.max(self.slewed_time(now_ms));
        let message = Ordered {
            seq,
            epoch: self.epoch,
            time_ms: self.time_ms,
            body,
        };
        self.hold(message.clone());
        if self.state == SyncState::PairedEnabled || self.forwarding_from.is_some() {
            self.outbox.push(message);
        }
        self.deliver_ready();
    }

    /// Takes `message` into the log as the next held one.
    fn hold(&mut self, message: Ordered) {
        assert_eq!(
            Some(message.seq),
            next_seq(self.held_through, message.epoch),
            "ordered messages are held in sequence"
        );
        if let Some(PgInputNo {
            pg,
            incarnation,
            input_no,
        }) = message.pg_input()
        {
            let cursor = self.pg_cursors.entry(pg).or_default();
            if incarnation != cursor.incarnation {
                *cursor = PgCursor {
                    incarnation,
                    ..PgCursor::default()
                };
            }
            cursor.held_through = input_no;
            self.forwarded.retain(|&(forwarded_pg, no), f| {
                forwarded_pg != pg || (f.incarnation, no) > (incarnation, input_no)
            });
        }
        self.held_through = message.seq;
        self.time_ms = self.time_ms.max(message.time_ms);
        self.log.push_back(message);
    }

    fn on_ordered(&mut self, now_ms: u64, messages: Vec<Ordered>) {
        // The orderer's clock against ours, as of its latest message: a side that takes over
        // goes on from the orderer's time and slews toward its own clock.
        if let Some(last) = messages.last() {
            self.clock_offset_ms = last.time_ms as i64 - now_ms as i64;
        }
        match &mut self.join {
            Join::Buffering {
                messages: buffer, ..
            } => {
                if buffer.len() + messages.len() > self.transfer_buffer_messages_max {
                    self.join = Join::None;
                    self.actions
                        .push_back(Action::Event(SyncEvent::TransferBufferOverflow {
                            max: self.transfer_buffer_messages_max,
                        }));
                } else {
                    buffer.extend(messages);
                }
                return;
            }
            Join::Joined => {}
            Join::None => {
                if self.state != SyncState::PairedDisabled {
                    return;
                }
            }
        }
        if let Err(problem) = self.hold_from_peer(messages) {
            self.close_peer(now_ms, problem);
            return;
        }
        self.deliver_ready();
        if self.held_through >= self.peer.acked_through.saturating_add(ACK_BATCH_MESSAGES) {
            self.send_ack(now_ms);
        }
    }

    /// Holds the ordered messages the peer sent, checking that each follows the last held.
    fn hold_from_peer(&mut self, messages: Vec<Ordered>) -> Result<(), String> {
        for message in messages {
            if message.seq <= self.held_through {
                continue;
            }
            if let Some(problem) = follow_problem(
                self.held_through,
                &self.pg_cursors,
                &self.settings.pgs,
                &message,
            ) {
                return Err(problem);
            }
            self.hold(message);
        }
        Ok(())
    }

    /// Delivers every held message that may be delivered now, and trims the log.
    fn deliver_ready(&mut self) {
        let through = match self.state {
            #[cfg(feature = "planted-bugs")]
            SyncState::PairedEnabled
                if self.settings.planted_bug == Some(PlantedBug::DeliverBeforeBothHold) =>
            {
                self.held_through
            }
            SyncState::PairedEnabled => self.peer.held_through,
            SyncState::PairedDisabled | SyncState::IsolatedEnabled => self.held_through,
            // A joined receiver's messages were delivered on the source already.
            _ if matches!(self.join, Join::Joined) => self.held_through,
            _ => self.delivered_through,
        };
        let first_undelivered = self
            .log
            .partition_point(|m| m.seq <= self.delivered_through);
        for index in first_undelivered..self.log.len() {
            if self.log[index].seq > through {
                break;
            }
            let message = self.log[index].clone();
            self.delivered_through = message.seq;
            self.delivered_time_ms = message.time_ms;
            let pg_input = message.pg_input();
            // Delivered before acknowledged: a shell that carries actions out in order applies
            // an input before its PG hears of it, so an input that crashes the side is still the
            // PG's to resend (and to be quarantined if it crashes the side again).
            self.actions.push_back(Action::Deliver(message));
            if let Some(PgInputNo {
                pg,
                incarnation,
                input_no,
            }) = pg_input
            {
                let cursor = self.pg_cursors.entry(pg).or_default();
                // A newer incarnation's cursor may already be in place: its inputs are delivered
                // through their own messages.
                if cursor.incarnation == incarnation {
                    cursor.delivered_through = input_no;
                }
                self.actions.push_back(Action::AckPg {
                    pg,
                    incarnation,
                    input_no,
                    durable: self.state.is_paired(),
                });
            }
        }
        // Keep only what is undelivered here or not yet held by the peer.
        let keep_from = if self.state == SyncState::PairedEnabled {
            self.delivered_through.min(self.peer.held_through) + 1
        } else {
            self.delivered_through + 1
        };
        while self.log.front().is_some_and(|m| m.seq < keep_from) {
            self.log.pop_front();
        }
    }

    fn ack_if_delivered(&mut self, pg: PgId, incarnation: u64, input_no: u64) {
        let cursor = self.pg_cursors.get(&pg).copied().unwrap_or_default();
        if cursor.incarnation == incarnation && input_no <= cursor.delivered_through {
            self.actions.push_back(Action::AckPg {
                pg,
                incarnation,
                input_no: cursor.delivered_through,
                durable: self.state.is_paired(),
            });
        }
    }

    // ----- failure, the split-brain guard and epochs -----

    fn peer_lost(&mut self, now_ms: u64) {
        let majority = self.settings.is_majority(self.reachable_pgs.len());
        match self.state {
            SyncState::PairedEnabled | SyncState::IsolatedEnabled => {
                if majority && self.majority_leased(now_ms) {
                    self.set_state(now_ms, SyncState::IsolatedEnabled);
                    self.deliver_ready();
                } else {
                    self.set_state(now_ms, SyncState::IsolatedDisabled);
                }
            }
            SyncState::PairedDisabled | SyncState::Connecting | SyncState::IsolatedDisabled => {
                if self.peer.up && self.receiving_state() {
                    // Connected to a peer whose state this side is taking: it waits for it.
                    self.set_state(now_ms, SyncState::IsolatedDisabled);
                } else if self.needs_state {
                    // A side without state never takes over: it waits for its peer.
                    if self.state != SyncState::Connecting {
                        self.set_state(now_ms, SyncState::Connecting);
                    }
                } else if majority {
                    self.start_testing(now_ms);
                } else {
                    self.set_state(now_ms, SyncState::IsolatedDisabled);
                }
            }
            SyncState::Testing => {}
        }
    }

    fn start_testing(&mut self, now_ms: u64) {
        self.test_answers.clear();
        self.lease_epoch = None;
        self.leases.clear();
        self.set_state(now_ms, SyncState::Testing);
        self.actions.push_back(Action::TestOtherSide);
    }

    /// Testing ends: if no PG sees the other side enabled, ask for a new epoch's leases; the side
    /// becomes IsolatedEnabled once a majority grants them (`on_lease_granted`).
    fn decide_test(&mut self, now_ms: u64, timed_out: bool) {
        let other_enabled = self.test_answers.values().any(|&enabled| enabled);
        if other_enabled || self.needs_state {
            self.set_state(now_ms, SyncState::IsolatedDisabled);
            return;
        }
        let answered = self.test_answers.len();
        if !(timed_out || answered == self.reachable_pgs.len()) {
            return;
        }
        if !self.settings.is_majority(answered) {
            self.set_state(now_ms, SyncState::IsolatedDisabled);
            return;
        }
        if self
            .lease_epoch
            .is_none_or(|e| e.owner != Some(self.settings.side) || e <= self.epoch)
        {
            let epoch = Epoch {
                number: (self.epoch.number + 1).min(EPOCH_NUMBER_MAX),
                owner: Some(self.settings.side),
            };
            self.lease_epoch = Some(epoch);
            self.leases.clear();
            self.last_lease_request_ms = Some(now_ms);
            self.actions.push_back(Action::RequestLease {
                epoch,
                requested_ms: now_ms,
            });
        }
    }

    fn become_isolated_enabled(&mut self, now_ms: u64, epoch: Epoch) {
        self.adopt_epoch(epoch);
        // Ordering in another side's epoch would number messages in its range.
        assert_eq!(self.epoch, epoch, "a side orders only in an epoch it owns");
        // Now the authority: nothing to receive from the other side.
        self.state_wanted = false;
        self.set_state(now_ms, SyncState::IsolatedEnabled);
        if self.peer.up {
            // A connection whose Hellos crossed before this side took over (delayed on a
            // clogged network) would otherwise never pair: the peer learns from this Hello
            // that it must take this side's state, or, if it still orders, that it is fenced.
            let hello = self.hello();
            self.send_peer(now_ms, PeerMessage::Hello(hello));
        }
        // Inputs this side forwarded that the old enabled side never ordered.
        let forwarded = std::mem::take(&mut self.forwarded);
        for ((pg, input_no), f) in forwarded {
            self.accept_input(now_ms, pg, f.incarnation, input_no, f.input);
        }
        self.deliver_ready();
    }

    fn renew_leases(&mut self, now_ms: u64) {
        if self.lease_epoch != Some(self.epoch) {
            self.lease_epoch = Some(self.epoch);
            self.leases.clear();
            self.last_lease_request_ms = None;
        }
        self.request_lease_when_due(now_ms, self.epoch);
    }

    /// Asks the PGs for a lease on `epoch` once a renewal interval has passed since the last ask.
    fn request_lease_when_due(&mut self, now_ms: u64, epoch: Epoch) {
        if self
            .last_lease_request_ms
            .is_none_or(|last| now_ms >= last + self.settings.lease_renew_interval_ms)
        {
            self.last_lease_request_ms = Some(now_ms);
            self.actions.push_back(Action::RequestLease {
                epoch,
                requested_ms: now_ms,
            });
        }
    }

    fn valid_leases(&mut self, now_ms: u64) -> bool {
        let lease_ms = self.settings.lease_ms;
        self.leases
            .retain(|_, requested| *requested + lease_ms > now_ms);
        !self.leases.is_empty()
    }

    fn majority_leased(&mut self, now_ms: u64) -> bool {
        self.valid_leases(now_ms);
        self.settings.is_majority(self.leases.len())
    }

    /// An IsolatedEnabled side stops ordering once it can no longer count a leased majority.
    fn check_isolated(&mut self, now_ms: u64) {
        #[cfg(feature = "planted-bugs")]
        if self.settings.planted_bug == Some(PlantedBug::IgnoreLeaseExpiry) {
            return;
        }
        if self.state == SyncState::IsolatedEnabled && !self.majority_leased(now_ms) {
            self.set_state(now_ms, SyncState::IsolatedDisabled);
        }
    }

    /// A higher epoch exists than ours: stop ordering at once.
    fn learn_epoch(&mut self, now_ms: u64, theirs: Epoch) {
        if theirs <= self.epoch || theirs.number > EPOCH_NUMBER_MAX {
            return;
        }
        let ours = self.epoch;
        let was_enabled = self.state.is_enabled();
        self.adopt_epoch(theirs);
        if self.lease_epoch.is_some_and(|leased| leased < theirs) {
            // Leases asked for a lower epoch can no longer make this side enabled.
            self.lease_epoch = None;
            self.leases.clear();
        }
        if was_enabled {
            self.actions
                .push_back(Action::Event(SyncEvent::Fenced { ours, theirs }));
            self.set_state(now_ms, SyncState::IsolatedDisabled);
            // Whatever this connection paired is over; the next one starts with Hellos.
            self.close_peer(now_ms, format!("fenced by epoch {}", theirs.number));
        }
        // A side that missed the new epoch's stream (or ordered its own) learns from the Hellos
        // of its next connection that it must take the other's state. Being behind does not
        // stop it from taking over if the other side goes: whatever it missed was acknowledged
        // by an isolated side, so not durably, and its PGs send it again.
    }

    /// Asks (once) for the other side's state.
    fn want_state(&mut self, from: Side) {
        if !self.state_wanted {
            self.state_wanted = true;
            self.actions.push_back(Action::StateTransferWanted { from });
        }
    }

    fn adopt_epoch(&mut self, epoch: Epoch) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.actions.push_back(Action::PersistEpoch(epoch));
        }
    }

    fn owns_epoch(&self) -> bool {
        self.epoch.owner == Some(self.settings.side)
    }

    // ----- plumbing -----

    /// Ordered time for a message ordered now: this side's clock plus the offset to the
    /// previous orderer's, the offset shrinking by at most half the time that passes
    /// (`CLOCK_SLEW_DIVISOR`), so ordered time neither jumps nor stands still when the clocks
    /// of the two sides differ, and reaches this side's clock in twice the difference.
    fn slewed_time(&mut self, now_ms: u64) -> u64 {
        let elapsed = now_ms
            .saturating_sub(self.slew_wall_ms)
            .min(i64::MAX as u64) as i64;
        self.slew_wall_ms = self.slew_wall_ms.max(now_ms);
        let step = elapsed / CLOCK_SLEW_DIVISOR;
        self.clock_offset_ms -= self.clock_offset_ms.clamp(-step, step);
        (now_ms as i64).saturating_add(self.clock_offset_ms).max(0) as u64
    }

    fn set_state(&mut self, now_ms: u64, to: SyncState) {
        if self.state == to {
            return;
        }
        let from = self.state;
        self.state = to;
        self.state_since_ms = now_ms;
        if to.is_enabled() || to == SyncState::PairedDisabled {
            // Ordering or pairing gives the state a history beyond its configuration.
            self.from_configuration = None;
        }
        if to.is_enabled() {
            self.ordered_in = Some(self.epoch);
            self.next_tick_ms = now_ms;
            if !from.is_enabled() {
                // Slewing starts now, from the offset seen in the last ordered message held.
                self.slew_wall_ms = now_ms;
            }
        }
        self.actions
            .push_back(Action::Event(SyncEvent::StateChanged {
                from,
                to,
                epoch: self.epoch,
            }));
    }

    fn send_peer(&mut self, now_ms: u64, message: PeerMessage) {
        if self.peer.up {
            self.peer.last_sent_ms = now_ms;
            self.actions.push_back(Action::SendPeer(message));
        }
    }

    fn send_ack(&mut self, now_ms: u64) {
        self.peer.acked_through = self.held_through;
        self.send_peer(
            now_ms,
            PeerMessage::Ack {
                held_through: self.held_through,
            },
        );
    }

    fn close_peer(&mut self, now_ms: u64, reason: String) {
        if !self.peer.up {
            return;
        }
        self.actions.push_back(Action::ClosePeer { reason });
        self.peer.up = false;
        self.forget_peer();
        self.peer_lost(now_ms);
    }

    /// Whether this side is taking its peer's state over the current connection.
    fn receiving_state(&self) -> bool {
        self.state_wanted || !matches!(self.join, Join::None)
    }

    /// What only the connection that ended meant: its Hello, its unsent batch, a transfer
    /// under way over it in either direction.
    fn forget_peer(&mut self) {
        self.peer.hello = None;
        self.outbox.clear();
        self.forwarding_from = None;
        self.join = Join::None;
        self.state_wanted = false;
    }

    /// Sends the ordered messages of this step to the peer, in batches.
    fn flush(&mut self, now_ms: u64) {
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        for batch in outbox.chunks(ORDERED_BATCH_MESSAGES_MAX) {
            self.send_peer(
                now_ms,
                PeerMessage::Ordered {
                    messages: batch.to_vec(),
                },
            );
        }
    }
}

/// Why `message`, from the peer, cannot follow a stream held through `held_through` with PG
/// cursors `cursors`, if it cannot: a sequence number that is not the next, or a PG input that
/// is not its PG's next (an unknown PG, an older incarnation, a gap or a repeat).
fn follow_problem(
    held_through: u64,
    cursors: &BTreeMap<PgId, PgCursor>,
    pgs: &BTreeSet<PgId>,
    message: &Ordered,
) -> Option<String> {
    if Some(message.seq) != next_seq(held_through, message.epoch) {
        return Some(format!(
            "ordered message {} arrived after {held_through}",
            message.seq
        ));
    }
    let PgInputNo {
        pg,
        incarnation,
        input_no,
    } = message.pg_input()?;
    if !pgs.contains(&pg) {
        return Some(format!(
            "ordered input {} names PG {pg}, which is not in the topology",
            message.seq
        ));
    }
    let cursor = cursors.get(&pg).copied().unwrap_or_default();
    let expected = if incarnation > cursor.incarnation {
        1
    } else {
        cursor.held_through.saturating_add(1)
    };
    (incarnation < cursor.incarnation || input_no != expected).then(|| {
        format!(
            "ordered input {} is PG {pg}'s input {input_no} of incarnation {incarnation}, \
             where {expected} of incarnation {} was next",
            message.seq, cursor.incarnation
        )
    })
}

/// Which side's state both take when they pair: between two sides built from configuration, the
/// newer configuration; then the higher epoch; at equal epochs the side that is enabled, then the one holding more, then side A. A side that needs state never is.
fn pairing_source(mine: &Hello, theirs: &Hello) -> Side {
    // Two sides that both built their state from configuration and did nothing since take
    // the newer configuration: an older one would undo accepted changes.
    let both_from_configuration =
        mine.from_configuration.is_some() && theirs.from_configuration.is_some();
    let rank = |h: &Hello| {
        (
            !h.needs_state,
            !h.joined,
            h.from_configuration.filter(|_| both_from_configuration),
            h.epoch,
            h.enabled,
            h.held_through,
            h.side == Side::A,
        )
    };
    if rank(mine) >= rank(theirs) {
        mine.side
    } else {
        theirs.side
    }
}
