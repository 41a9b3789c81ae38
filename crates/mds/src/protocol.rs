//! What the sides say to each other on the private link, and what a side and a PG say on a PG
//! path. Every message travels in one frame (`frame.rs`).

use crate::lease::LeaseAnswer;
use serde::{Deserialize, Serialize};
use tandem_model::config::{ConfigChange, ConfigStamp, ContactCenter};
use tandem_model::feed::{FeedDelta, FeedFrameHeader, FeedRow};
use tandem_model::ids::PgId;
use tandem_model::input::Input;
use tandem_model::logged::{HistoricalDrop, LoggedMessage};
use tandem_model::output::Output;

/// The most ordered messages one `PeerMessage::Ordered` batch carries.
pub const ORDERED_BATCH_MESSAGES_MAX: usize = 1_024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

/// An epoch: every change of the enabled side starts a new one, with a higher number, owned by
/// the side that became enabled. Both sides persist the highest epoch they have seen.
/// Epochs are ordered by number, then owner (A before B), so that two sides that each took the
/// same number (one by pairing, one by PG leases) still agree which is later.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch {
    pub number: u64,
    /// The side enabled in this epoch; `None` only for epoch 0, before any side was enabled.
    pub owner: Option<Side>,
}

impl Epoch {
    /// Epoch `number`, owned by `owner`.
    pub fn new(number: u64, owner: Side) -> Epoch {
        Epoch {
            number,
            owner: Some(owner),
        }
    }

    /// The index of this epoch's range of sequence numbers: its number and owner side.
    pub fn seq_range(&self) -> Option<u64> {
        (self.number <= EPOCH_NUMBER_MAX)
            .then(|| self.number << 1 | u64::from(self.owner == Some(Side::B)))
    }
}

/// Sequence numbers carry their epoch in the upper bits: epoch `e` owned by side `s` orders
/// `(2e + s) << 40 | 1`, then `| 2`, and so on (`Epoch::seq_range`). A side that ordered alone
/// under its leases and a side that took over after those leases lapsed may both have ordered
/// messages after the last one they shared; because each numbers within its own epoch's range,
/// and two sides never own the same range, no sequence number (the RecoveryKey of every row
/// written from it) ever names two different messages.
pub const SEQ_EPOCH_SHIFT: u32 = 40;
/// The highest epoch number: the bits above `SEQ_EPOCH_SHIFT`, less one for the owner.
pub const EPOCH_NUMBER_MAX: u64 = (1 << (64 - SEQ_EPOCH_SHIFT - 1)) - 1;

/// The sequence number that follows `held_through` in `epoch`, or `None` once the epoch's range
/// (2^40 messages) is used up or the epoch is beyond the last.
pub fn next_seq(held_through: u64, epoch: Epoch) -> Option<u64> {
    let range = epoch.seq_range()?;
    let first = (range << SEQ_EPOCH_SHIFT) | 1;
    let next = if held_through < first {
        first
    } else {
        held_through.checked_add(1)?
    };
    (next >> SEQ_EPOCH_SHIFT == range).then_some(next)
}

/// What must be equal on both sides for them to pair: the build, and the time-zone data that
/// the router's calendar uses. Two different builds could compute different answers from the
/// same input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicVersion {
    pub build: String,
    pub time_zone_data: String,
}

impl std::fmt::Display for LogicVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "build {} / tz {}", self.build, self.time_zone_data)
    }
}

/// Who an ordered input came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A PG's input number `input_no` (from 1) of its incarnation `incarnation`.
    Pg {
        pg: PgId,
        incarnation: u64,
        input_no: u64,
    },
    /// The enabled synchronizer itself: TimeTicks.
    Synchronizer,
    /// An administrator's request `request` (a configuration change), received on `side`.
    Admin { side: Side, request: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Input {
        source: Source,
        input: Input,
    },
    /// Both sides compare their clients' state digests after applying this sequence number.
    DigestCheck,
    /// A PG input in the quarantine of the enabled side (`crate::quarantine`), ordered in its
    /// place without its bytes: both sides skip it, and it advances its PG's cursor and is
    /// acknowledged like the input, so that the PG stops resending it.
    Quarantined {
        pg: PgId,
        incarnation: u64,
        input_no: u64,
    },
    /// The enabled side's decision to drop historical records held for the loggers: both
    /// loggers are down and the buffer reached its bound (`tandem_model::logged`).
    HistoricalDrop(HistoricalDrop),
}

/// One message of the ordered stream: the same on both sides, delivered in `seq` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ordered {
    pub seq: u64,
    /// The epoch under which the enabled side ordered it.
    pub epoch: Epoch,
    /// Ordered time: the enabled side's clock, never going backwards.
    pub time_ms: u64,
    pub body: Body,
}

/// A PG input's place in its PG's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgInputNo {
    pub pg: PgId,
    pub incarnation: u64,
    pub input_no: u64,
}

impl Ordered {
    /// The PG, incarnation and input number of a PG input, quarantined or not; `None` for
    /// anything else.
    pub fn pg_input(&self) -> Option<PgInputNo> {
        match self.body {
            Body::Input {
                source:
                    Source::Pg {
                        pg,
                        incarnation,
                        input_no,
                    },
                ..
            }
            | Body::Quarantined {
                pg,
                incarnation,
                input_no,
            } => Some(PgInputNo {
                pg,
                incarnation,
                input_no,
            }),
            _ => None,
        }
    }
}

/// A side's account of itself when the private link comes up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub side: Side,
    pub epoch: Epoch,
    pub logic_version: LogicVersion,
    /// The highest sequence number this side holds.
    pub held_through: u64,
    /// The last ordered time this side saw.
    pub time_ms: u64,
    /// Whether this side is ordering input now (IsolatedEnabled or PairedEnabled).
    pub enabled: bool,
    /// A side that restarted without its state: it can only receive a state transfer.
    pub needs_state: bool,
    /// This side holds the state the peer sent it at a cut, and every message the peer
    /// forwarded since: it asks to pair at `held_through` and is never the pairing source.
    pub joined: bool,
    /// The configuration version this side's state was built from, while it has neither
    /// ordered nor paired since: two such sides take the state built from the newer
    /// configuration, whatever their epochs.
    #[serde(default)]
    pub from_configuration: Option<u64>,
}

/// Messages on the private link between the two MDSs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    Hello(Hello),
    /// From the side whose state both hold: it is PairedEnabled in `epoch`, both holding every
    /// message through `held_through`. The other side pairs only on this, and only if it still
    /// holds exactly that, so the two never decide differently from Hellos read at different
    /// moments.
    Pair {
        epoch: Epoch,
        held_through: u64,
    },
    /// Sent every heartbeat interval when nothing else was; any message counts as a heartbeat.
    Heartbeat {
        epoch: Epoch,
    },
    /// From the enabled side: the next ordered messages, in sequence.
    Ordered {
        messages: Vec<Ordered>,
    },
    /// From the disabled side: it holds every message through `held_through` (cumulative).
    Ack {
        held_through: u64,
    },
    /// From the disabled side: an input a PG sent it, for the enabled side to order.
    Forward {
        pg: PgId,
        incarnation: u64,
        input_no: u64,
        input: Input,
    },
    /// From the side that cannot pair with this peer: why.
    Refuse {
        reason: String,
    },
    /// From the state source: its clients' state is being cut at `seq`, and the ordered
    /// messages after it follow on this link, for the receiver to buffer until its clients are
    /// rebuilt.
    TransferCut {
        seq: u64,
    },
    /// Either side's state digest after delivering the DigestCheck at `seq`.
    DigestAt {
        seq: u64,
        digest: u128,
    },
    /// From the receiving side: "state transfer desired" for one synchronized client. The
    /// transfer session that follows (always opened by side A's MDS) presents `nonce`.
    TransferWanted(TransferRequest),
    /// This side's logger: whether it is connected, and what it has committed. The enabled
    /// side decides to drop historical records only when neither logger is connected.
    LoggerProgress {
        connected: bool,
        committed_through: u64,
    },
}

/// A receiver's request for one client's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The synchronized client: "router" (the logger joins later).
    pub client: String,
    /// The state-record format the receiver reads.
    pub state_version: u16,
    pub logic_version: LogicVersion,
    pub epoch: Epoch,
    /// A one-time number that authenticates the transfer session.
    pub nonce: u64,
}

/// Messages of a state-transfer session, on its own TCP connection on the private network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TransferMessage {
    /// First, from side A's MDS: the session for request `nonce`; `a_receives` says which way
    /// the state goes.
    Open { nonce: u64, a_receives: bool },
    /// From the sender: the state cut at `cut`, `state_bytes` long in records. The records
    /// follow as they are, outside frames (they carry their own lengths and checksums), and
    /// then `End`.
    Header {
        client: String,
        state_version: u16,
        logic_version: LogicVersion,
        cut: SyncCut,
        state_bytes: u64,
    },
    /// The end: the state's digest at the cut, and the client's own data beside its records
    /// (for the router side: its PG output numbers and replay logs).
    End {
        digest: u128,
        #[serde(with = "serde_bytes")]
        side_data: Vec<u8>,
    },
    /// Either end gives up, saying why.
    Refuse { reason: String },
}

/// The first message on a side's public listener: who is calling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublicHello {
    /// A PG's path; `PgToSide` messages follow, `SideToPg` come back.
    Pg { pg: PgId, incarnation: u64 },
    /// An rttest command (`status`, `sync`, `events` ...); one reply, then the side closes.
    RtTest { command: String },
    /// The side's logger: `LoggerToSide` messages follow, `SideToLogger` come back. It has
    /// committed the ordered stream through `committed_through` at `config_version`.
    Logger {
        committed_through: u64,
        config_version: u64,
    },
    /// A configuration request (`tandem config`); one `AdminReply`, then the side closes.
    Admin(AdminRequest),
    /// A distributor's rtdist subscribing to the real-time feed: it holds the frame at `held`
    /// (`None`: it holds nothing and needs a snapshot). `SideToDistributor` messages follow;
    /// the distributor sends nothing more.
    Distributor {
        name: String,
        held: Option<tandem_model::feed::FeedPosition>,
    },
}

/// What rtsrvr sends a distributor: a snapshot or the frames after its last one, then one frame
/// per TimeTick. A frame or snapshot too large for one message comes in parts numbered from 0,
/// the last marked; the parts of one frame follow each other with nothing between.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SideToDistributor {
    /// Every row of the feed's tables at `header.number`.
    Snapshot {
        header: FeedFrameHeader,
        part: u32,
        last: bool,
        rows: Vec<FeedRow>,
    },
    /// What changed from frame `header.number - 1` to `header.number`.
    Frame {
        header: FeedFrameHeader,
        part: u32,
        last: bool,
        delta: FeedDelta,
    },
    /// The side ends the subscription and says why (a consumer too slow for the feed, too many
    /// subscribers); the distributor subscribes again.
    Closing { reason: String },
}

/// What an administrator asks of a side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Orders the change; the reply comes once this side's router applied or rejected it.
    ApplyConfig(ConfigChange),
    /// The router's whole configuration.
    ExportConfig,
    /// The side's synchronizer, state and recent events, for the system page.
    Report,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Applied by the router at `recovery_key`, giving `config_version`.
    Applied {
        config_version: u64,
        recovery_key: u64,
    },
    /// Validated by the router and rejected whole; nothing changed.
    Rejected {
        reason: String,
    },
    /// This side does not order input now (it is the disabled side, or alone without a
    /// majority); the other side may.
    NotOrdering {
        reason: String,
    },
    /// The router's configuration at `config_version` (made by the change at
    /// `config_recovery_key`), as it was once the ordered stream was applied through
    /// `recovery_key`.
    Configuration {
        contact_center: Box<ContactCenter>,
        config_version: u64,
        config_recovery_key: u64,
        recovery_key: u64,
    },
    Failed {
        reason: String,
    },
    Report(Box<SideReport>),
}

/// The last state transfer a side took part in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// When it finished, wall clock ms since the Unix epoch.
    pub at_ms: u64,
    /// "(A->B)" or "(B->A)".
    pub direction: String,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// A side as the system page shows it (`AdminRequest::Report`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideReport {
    pub side: Side,
    /// The synchronizer state as rttest names it ("Paired Enabled").
    pub sync_state: String,
    pub epoch: Epoch,
    pub held_through: u64,
    pub delivered_through: u64,
    pub peer_connected: bool,
    /// Each PG of the topology by name, and whether a path to it is up.
    pub pgs_reachable: Vec<(String, bool)>,
    pub state_size_now: u64,
    pub state_size_max: u64,
    pub last_sync: Option<SyncReport>,
    pub transfer_under_way: bool,
    /// Bytes received of the total, while this side receives a state.
    pub transfer_progress: Option<(u64, u64)>,
    pub digest_checks_equal: u64,
    pub digest_checks_differed: u64,
    pub config_version: u64,
    pub started_ms: u64,
    pub now_ms: u64,
    /// The latest events, oldest first (wall clock ms, text).
    pub events: Vec<(u64, String)>,
}

/// Events a `SideReport` carries at most.
pub const SIDE_REPORT_EVENTS_MAX: usize = 50;

/// How many lower epoch ranges a gap names where the stream left them
/// (`SideToLogger::Gap::ranges_left`).
pub const GAP_RANGES_LEFT_MAX: usize = 64;

/// What a side sends its logger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SideToLogger {
    /// The logged messages after the last batch, in RecoveryKey order: every ordered message
    /// through `through` that produced rows is in this batch or an earlier one.
    Batch {
        messages: Vec<LoggedMessage>,
        through: u64,
    },
    /// The side no longer holds the stream between the logger's `committed_through` and
    /// `resumes_after` (it restarted, took its state by transfer, or dropped records): the
    /// batches that follow start after `resumes_after`, and the logger recovers the rows in
    /// between from its peer. With it comes this side's configuration now (`config` names its
    /// version and the change that made it), of the history the stream continues: the logger
    /// takes it unless it holds that very configuration, and the batches that follow apply the
    /// changes after `resumes_after` over it again, which converges, as every operation sets
    /// or removes a whole object. Neither the logger's own configuration (it may hold a
    /// change of a history this side abandoned, numbered like a change of record) nor its
    /// peer's (the same, the other way round) is sure to be of this history.
    ///
    /// `ranges_left` names, for the epoch ranges below `resumes_after`'s that the history
    /// this stream continues passed through (the latest `GAP_RANGES_LEFT_MAX`), the last key
    /// it delivered in each, oldest first. The peer's logger may hold more of such a range (its
    /// side ran on there in a history this one abandoned): a drop decision the logger copies
    /// from there is of record, and empties its range here too, only at or before that key.
    Gap {
        resumes_after: u64,
        contact_center: Box<ContactCenter>,
        config: ConfigStamp,
        ranges_left: Vec<u64>,
    },
    /// The side starts cold and asks for the configuration.
    SendConfiguration,
}

/// What a logger sends its side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LoggerToSide {
    /// Durably written through this RecoveryKey.
    Committed { through: u64, config_version: u64 },
    /// The central database's configuration, for a cold start.
    Configuration {
        contact_center: Box<ContactCenter>,
        config_version: u64,
        config_recovery_key: u64,
    },
    /// The logger cannot give the configuration (its database was never seeded).
    NoConfiguration { reason: String },
}

/// An output's place in its PG's output stream: the epoch range (`Epoch::seq_range`) of the
/// ordered message that produced it, and its number within that range (from 1). Ids order
/// lexicographically. Each epoch range numbers from 1 again, and two sides never own the same
/// range, so the outputs of a history that a takeover abandoned (an isolated side's, which its
/// peer never held) never share an id with the outputs that follow it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct OutputId {
    pub epoch: u64,
    pub no: u64,
}

/// The epoch range a sequence number was ordered in.
pub fn seq_epoch_range(seq: u64) -> u64 {
    seq >> SEQ_EPOCH_SHIFT
}

/// What a PG does with an output, given the last one it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputTake {
    /// Take it: it follows what the PG holds.
    Next,
    /// Already taken.
    Repeat,
    /// From an epoch lower than the PG's last output's: a side that has not yet learnt it was
    /// replaced. Refused.
    Stale,
    /// Outputs are missing before it: ask for a replay.
    Gap,
}

impl OutputId {
    /// What a PG whose last output is `self` does with output `id` whose predecessor in the
    /// side's log is `prev`. It takes `id` once it holds `prev`: in one epoch that is the next
    /// number; across epochs the PG may hold more of `prev`'s epoch than the side does, when
    /// it took outputs of a history the takeover abandoned.
    pub fn take(self, id: OutputId, prev: OutputId) -> OutputTake {
        if id.epoch < self.epoch {
            OutputTake::Stale
        } else if id <= self {
            OutputTake::Repeat
        } else if prev <= self {
            OutputTake::Next
        } else {
            OutputTake::Gap
        }
    }
}

impl std::fmt::Display for OutputId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.no)
    }
}

/// What a PG says to a side on one of its two paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PgToSide {
    /// This path is now the PG's active one: send outputs after `last_output`.
    Active {
        last_output: OutputId,
    },
    /// This path is now idle: send no outputs on it.
    Idle,
    Input {
        incarnation: u64,
        input_no: u64,
        input: Input,
    },
    LeaseAnswer {
        epoch: Epoch,
        requested_ms: u64,
        answer: LeaseAnswer,
    },
    TestAnswer {
        other_enabled: bool,
    },
    Heartbeat,
}

/// What a side says to a PG. Outputs dominate the traffic, so the enum is as large as one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum SideToPg {
    Welcome {
        side: Side,
    },
    /// Inputs through `input_no` of `incarnation` are delivered; `durable` when both sides hold
    /// them.
    Ack {
        incarnation: u64,
        input_no: u64,
        durable: bool,
    },
    ResendFrom {
        incarnation: u64,
        input_no: u64,
    },
    /// This side takes no input now: use the other path.
    Refuse {
        reason: String,
    },
    LeaseRequest {
        epoch: Epoch,
        requested_ms: u64,
    },
    TestOtherSide,
    /// The PG's output `id`, in the ordered stream's order.
    Output {
        /// The output log's generation: a new one begins when both sides start from
        /// configuration, and the PG then takes ids from the start again.
        generation: u64,
        id: OutputId,
        /// The id of the output before this one in the side's log (the default id for the
        /// first): a PG takes `id` only once it holds `prev`, or more of `prev`'s epoch.
        prev: OutputId,
        time_ms: u64,
        output: Output,
    },
    Heartbeat,
}

/// Where one PG's inputs stood at a state-transfer cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgCursorCut {
    pub pg: PgId,
    pub incarnation: u64,
    /// The PG's last input delivered at the cut.
    pub input_no: u64,
}

/// The synchronizer's own part of a state transfer: what the receiver must know to continue
/// the ordered stream from the cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCut {
    /// The last sequence number delivered at the cut: the state is consistent through it.
    pub seq: u64,
    pub epoch: Epoch,
    /// Ordered time at the cut.
    pub time_ms: u64,
    pub pg_cursors: Vec<PgCursorCut>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pg_takes_the_output_that_follows_what_it_holds() {
        let id = |epoch, no| OutputId { epoch, no };
        let last = id(2, 5);
        assert_eq!(last.take(id(2, 6), id(2, 5)), OutputTake::Next);
        assert_eq!(last.take(id(2, 5), id(2, 4)), OutputTake::Repeat);
        assert_eq!(last.take(id(2, 8), id(2, 7)), OutputTake::Gap);
        // A lower epoch's output is a replaced side's.
        assert_eq!(last.take(id(1, 9), id(1, 8)), OutputTake::Stale);
        // The first output of a later epoch follows the end of the one before it...
        assert_eq!(last.take(id(4, 1), id(2, 5)), OutputTake::Next);
        // ...or an earlier point of it, when the PG took outputs of a history the takeover
        // abandoned (outputs 2.4 and 2.5 that the new side never had).
        assert_eq!(last.take(id(4, 1), id(2, 3)), OutputTake::Next);
        // It waits while outputs of the epoch before are missing.
        assert_eq!(last.take(id(4, 1), id(2, 7)), OutputTake::Gap);
        assert_eq!(last.take(id(4, 2), id(4, 1)), OutputTake::Gap);
        // A new PG takes the very first output.
        assert_eq!(
            OutputId::default().take(id(2, 1), OutputId::default()),
            OutputTake::Next
        );
    }

    #[test]
    fn each_epoch_numbers_within_its_own_range() {
        let a1 = Epoch::new(1, Side::A);
        assert_eq!(next_seq(0, a1), Some((2 << 40) | 1));
        assert_eq!(next_seq((2 << 40) | 7, a1), Some((2 << 40) | 8));
        // A new epoch starts at its range, wherever the last one stopped.
        assert_eq!(
            next_seq((2 << 40) | 7, Epoch::new(3, Side::A)),
            Some((6 << 40) | 1)
        );
        // The same number owned by the other side has a range of its own.
        assert_eq!(
            next_seq((2 << 40) | 7, Epoch::new(1, Side::B)),
            Some((3 << 40) | 1)
        );
        // The end of a range, and an epoch beyond the last, order nothing.
        assert_eq!(next_seq((3 << 40) - 1, a1), None);
        assert_eq!(next_seq(0, Epoch::new(EPOCH_NUMBER_MAX + 1, Side::A)), None);
        assert_eq!(
            next_seq(u64::MAX, Epoch::new(EPOCH_NUMBER_MAX, Side::B)),
            None
        );
        assert_eq!(
            next_seq(0, Epoch::new(EPOCH_NUMBER_MAX, Side::B)),
            Some(((2 * EPOCH_NUMBER_MAX + 1) << 40) | 1)
        );
    }
}
