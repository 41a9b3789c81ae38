//! One side's decisions, sans-IO: the synchronizer, the router as its synchronized client, the
//! output numbering, the real-time feed's ticks, the logger's stream, state-transfer requests
//! and retries, drop decisions, quarantine and DigestChecks.
//!
//! `SideMachine` reads no clock and touches no socket. Its shell (`crate::side` in the process,
//! the whole-system simulation in `tandem-sim`) feeds it events, each with the time, and then
//! drains its effects with `poll` and carries each out before it asks for the next. The order
//! of the effects is the order they must take effect in:
//! - `SendPeer`, `SendPg`, `SendLogger`: send on a link. A link can be full; the shell then
//!   tells the machine (`peer_send_failed`, `pg_send_failed`, `logger_send_failed`), and the
//!   machine decides: it closes the link, whose other end connects again and resumes.
//! - `ClosePeer`, `ClosePg`, `CloseLogger`: end a connection.
//! - `PersistEpoch` and `RecordSuspect` are fsync barriers: the shell makes them durable before
//!   it polls the next effect, so nothing after them goes out before they are on disk. After
//!   `RecordSuspect` the machine gives nothing more: its router's state is suspect, and the
//!   process stops.
//! - `OpenTransferSession`: side A's MDS opens a state-transfer session (it always does, for
//!   either direction).
//! - `ComputeDigest`: digest this snapshot off the core and hand the result back
//!   (`digest_computed`).
//! - `PublishFeedTick`: hand an ordered TimeTick's rows to the real-time feed's publisher.
//! - `AdminReply`: answer the configuration request the shell's ticket names.
//! - `Log`: an event for the side's log (the machine also keeps it for rttest).
//!
//! The driver loop, as both shells run it:
//!
//! ```
//! use tandem_central::machine::{SideEffect, SideMachine, SideSettings};
//! use tandem_mds::{Epoch, LogicVersion, Side, SyncSettings, Synchronizer};
//! use tandem_model::generate::{generate, GenerateParams};
//! use tandem_router::Router;
//!
//! let cc = generate(&GenerateParams::default());
//! let logic = LogicVersion { build: "doc".into(), time_zone_data: "doc".into() };
//! let pgs = cc.pgs.iter().map(|pg| pg.id).collect();
//! let now_ms = 1_000;
//! let sync = Synchronizer::new(
//!     SyncSettings::new(Side::A, logic.clone(), pgs),
//!     Epoch::default(),
//!     0,
//!     now_ms,
//!     false,
//!     now_ms,
//! )
//! .unwrap();
//! let router = Router::from_contact_center(&cc, now_ms).unwrap();
//! let names = cc.pgs.iter().map(|pg| (pg.id, pg.name.clone())).collect();
//! let settings = SideSettings::new(Side::A, logic, names);
//! let mut side = SideMachine::new(settings, sync, router, now_ms, now_ms);
//! // A PG connects on connection 7: the side welcomes it.
//! side.pg_up(now_ms, 7, cc.pgs[0].id, now_ms);
//! let mut welcomed = false;
//! for at_ms in now_ms..now_ms + 2_000 {
//!     side.tick(at_ms);
//!     while let Some(effect) = side.poll() {
//!         match effect {
//!             SideEffect::SendPg { conn: 7, .. } => welcomed = true,
//!             // A barrier: made durable before the next effect is asked for.
//!             SideEffect::PersistEpoch(_epoch) => {}
//!             _ => {}
//!         }
//!     }
//! }
//! assert!(welcomed);
//! // Alone with a majority of its PGs unanswered, the side has not begun ordering.
//! assert!(!side.sync().state().is_paired());
//! ```

use crate::apply::{self, ConfigResult};
use crate::dumps;
use crate::logger_feed::{Dropped, LoggerFeed, PeerLogger};
use crate::metrics::{MetricsSnapshot, TransferCounts};
use crate::outputs::OutputLog;
use crate::pg_link::{self, PathChange, PgAddress};
use crate::quarantine::{self, Suspect};
use crate::rtsrvr::{FeedTick, FeedTicker};
use crate::status::{self, StatusInputs, SyncRecord};
use crate::transfer::{self, SideData, SideDataRef};
use std::collections::{BTreeMap, VecDeque};
use tandem_mds::{
    Action, AdminReply, AdminRequest, Body, Epoch, LoggerToSide, LogicVersion, Ordered,
    PeerMessage, PgToSide, Side, SideReport, SideToLogger, SideToPg, Source, SyncCut, SyncEvent,
    SyncReport, Synchronizer, TransferRequest, SIDE_REPORT_EVENTS_MAX,
};
use tandem_model::feed::VersionedConfigChange;
use tandem_model::ids::PgId;
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;
use tandem_router::{Router, State};

/// Events kept for `rttest events`.
pub const EVENTS_KEPT_MAX: usize = 1_000;
/// State transfers kept for `rttest sync`.
pub const SYNC_HISTORY_MAX: usize = 100;
/// A failed transfer is retried after this, doubling up to `TRANSFER_RETRY_MS_MAX`.
pub const TRANSFER_RETRY_MS_MIN: u64 = 250;
pub const TRANSFER_RETRY_MS_MAX: u64 = 5_000;
/// A transfer that has not finished in this long is abandoned and retried.
pub const TRANSFER_TIMEOUT_MS: u64 = 120_000;
/// A transfer whose session has not begun this long after it was asked for is retried.
pub const TRANSFER_START_TIMEOUT_MS: u64 = 3_000;
/// Configuration requests awaiting their ordered answer; more are refused until some finish.
pub const ADMIN_REQUESTS_PENDING_MAX: usize = 64;
/// Rows a full logger buffer releases are reported at most this often, summed: under load a
/// full buffer releases rows at nearly every message.
pub const LOGGER_RELEASE_REPORT_MS: u64 = 10_000;
/// How often the logger is sent a batch that only moves its committed mark (past ordered
/// messages that made no rows), and the peer is told of this side's logger if that changed.
pub const LOGGER_PROGRESS_INTERVAL_MS: u64 = 100;
/// Effects queued at most before the shell drains them. The machine queues the effects of one
/// synchronizer action at a time, so this is reached only by a bug.
pub const EFFECTS_QUEUED_MAX: usize = 1 << 20;

/// How a side is set up.
#[derive(Clone, Debug)]
pub struct SideSettings {
    pub side: Side,
    pub logic_version: LogicVersion,
    /// The PGs of the topology, by id and name.
    pub pgs: Vec<(PgId, String)>,
    /// Heartbeats go on each PG path this often; this many missed close it.
    pub pg_heartbeat_interval_ms: u64,
    pub pg_heartbeat_misses_max: u64,
    /// The router state size past which the side raises its informational event, once.
    pub state_size_alarm_bytes: u64,
    /// Rows held for the logger at most (`[logger] buffer_rows`).
    pub logger_buffer_rows: usize,
    /// A transfer under way is given up after this long, and one whose session has not begun
    /// after `transfer_start_timeout_ms`.
    pub transfer_timeout_ms: u64,
    pub transfer_start_timeout_ms: u64,
    /// Record `Observation`s for the simulation's checkers.
    pub observe: bool,
}

impl SideSettings {
    /// Settings with the defaults of a topology: ICM's PG heartbeats, a 30 MB state size alarm.
    pub fn new(side: Side, logic_version: LogicVersion, pgs: Vec<(PgId, String)>) -> SideSettings {
        let timers = tandem_model::topology::MdsTimers::default();
        SideSettings {
            side,
            logic_version,
            pgs,
            pg_heartbeat_interval_ms: timers.pg_heartbeat_interval_ms,
            pg_heartbeat_misses_max: timers.pg_heartbeat_misses_max,
            state_size_alarm_bytes: timers.state_size_alarm_bytes,
            logger_buffer_rows: crate::logger_feed::LOGGER_BUFFER_ROWS_DEFAULT,
            transfer_timeout_ms: TRANSFER_TIMEOUT_MS,
            transfer_start_timeout_ms: TRANSFER_START_TIMEOUT_MS,
            observe: false,
        }
    }
}

/// What the shell carries out, in order (see the module's documentation).
#[derive(Debug)]
pub enum SideEffect {
    SendPeer {
        conn: u64,
        message: PeerMessage,
    },
    ClosePeer {
        conn: u64,
    },
    SendPg {
        conn: u64,
        message: SideToPg,
    },
    ClosePg {
        conn: u64,
    },
    /// `bulk`: the message may be as large as a whole configuration (a gap).
    SendLogger {
        conn: u64,
        message: SideToLogger,
        bulk: bool,
    },
    CloseLogger {
        conn: u64,
    },
    /// A barrier: the epoch is durable before anything after it goes out.
    PersistEpoch(Epoch),
    /// A barrier: the input the router panicked on, recorded durably; then the process stops.
    RecordSuspect {
        suspect: Suspect,
        seq: u64,
        message: String,
    },
    /// Side A opens a transfer session on B's transfer address, to receive or to send.
    OpenTransferSession {
        nonce: u64,
        a_receives: bool,
    },
    ComputeDigest {
        seq: u64,
        state: Box<State>,
    },
    PublishFeedTick(Box<FeedTick>),
    AdminReply {
        ticket: u64,
        reply: AdminReply,
    },
    Log {
        warn: bool,
        text: String,
    },
}

/// What the simulation's checkers see of a side, recorded only with `SideSettings::observe`.
#[derive(Debug)]
pub enum Observation {
    /// A message handed to the router, as it was ordered.
    Delivered(Ordered),
    /// An output given its id in its PG's stream, by the message ordered at `seq`.
    Numbered {
        generation: u64,
        seq: u64,
        output: apply::NumberedOutput,
    },
    /// A configuration change this side ordered at `seq`.
    AdminOrdered { seq: u64 },
    /// This side ordered a historical drop decision.
    DropOrdered,
    /// The synchronizer's events.
    Sync(SyncEvent),
}

/// A PG path connected to this side.
#[derive(Clone, Copy, Debug)]
struct PgPath {
    pg: PgId,
    active: bool,
    last_heard_ms: u64,
    last_sent_ms: u64,
}

/// This side's part in a transfer under way.
#[derive(Clone, Debug)]
enum TransferRole {
    /// Receiving under `nonce` since `started_ms`.
    Receiving {
        nonce: u64,
        started_ms: u64,
        /// Bytes received of the total, once the session's header arrived. A session that
        /// never begins (the sender failed, or its connection was lost on the way) is given up
        /// sooner than one under way.
        progress: Option<(u64, u64)>,
    },
    /// The peer asked for our state under this request.
    Serving(TransferRequest),
}

/// The cut a serving side took for a transfer session.
pub struct CutTaken {
    pub cut: SyncCut,
    /// A copy-on-write snapshot of the router's state at the cut.
    pub state: State,
    /// The output log and the history of the state (`transfer::SideData`), encoded.
    pub side_data: Vec<u8>,
    /// "(A->B)" or "(B->A)".
    pub direction: String,
}

pub struct SideMachine {
    settings: SideSettings,
    sync: Synchronizer,
    router: Router,
    outputs: OutputLog,
    /// The private link's connection, while one is up.
    peer: Option<u64>,
    paths: BTreeMap<u64, PgPath>,
    transfer: Option<TransferRole>,
    transfer_retry_ms: u64,
    transfer_retry_at_ms: Option<u64>,
    nonce_counter: u64,
    sync_history: VecDeque<SyncRecord>,
    events: VecDeque<(u64, String)>,
    started_ms: u64,
    clock_ms: u64,
    outputs_scratch: Vec<Output>,
    /// Inputs delivered as quarantined, and those the suspect file listed at start.
    quarantined_skipped: u64,
    quarantined_listed: usize,
    state_size_alarmed: bool,
    /// The state's exact size, as of the last DigestCheck, start or transfer: computing it
    /// walks the whole state, which the machine does not do on request.
    state_size_now: u64,
    transfer_counts: TransferCounts,
    /// The logger's connection, while one is up.
    logger: Option<u64>,
    feed: LoggerFeed,
    /// The real-time feed's ticks.
    ticker: FeedTicker,
    /// What the peer was last told of this side's logger; `None` until told on this link.
    logger_progress_told: Option<(bool, u64)>,
    logger_progress_due_ms: u64,
    /// Rows the full logger buffer released and not yet reported, and when the last report was.
    released_unreported: Option<Dropped>,
    released_reported_ms: u64,
    /// Configuration requests this side ordered, by request number: the shell's ticket.
    admin_pending: BTreeMap<u64, u64>,
    admin_next: u64,
    effects: VecDeque<SideEffect>,
    /// Whether the synchronizer's actions since the last drop proposal were all carried out.
    settled: bool,
    /// The router panicked: nothing more is given out.
    poisoned: bool,
    observations: Vec<Observation>,
}

impl SideMachine {
    /// A side whose router and synchronizer were built at `now_ms`; its outputs are numbered in
    /// `output_generation` until a transfer brings the peer's.
    pub fn new(
        settings: SideSettings,
        sync: Synchronizer,
        mut router: Router,
        output_generation: u64,
        now_ms: u64,
    ) -> SideMachine {
        let mut ticker = FeedTicker::default();
        ticker.attach(&mut router);
        SideMachine {
            feed: LoggerFeed::new(settings.logger_buffer_rows, 0),
            settings,
            sync,
            state_size_now: router.state_size(),
            router,
            outputs: OutputLog {
                generation: output_generation,
                ..OutputLog::default()
            },
            peer: None,
            paths: BTreeMap::new(),
            transfer: None,
            transfer_retry_ms: TRANSFER_RETRY_MS_MIN,
            transfer_retry_at_ms: None,
            nonce_counter: 0,
            sync_history: VecDeque::new(),
            events: VecDeque::new(),
            started_ms: now_ms,
            clock_ms: now_ms,
            outputs_scratch: Vec::new(),
            quarantined_skipped: 0,
            quarantined_listed: 0,
            state_size_alarmed: false,
            transfer_counts: TransferCounts::default(),
            logger: None,
            ticker,
            logger_progress_told: None,
            logger_progress_due_ms: now_ms,
            released_unreported: None,
            released_reported_ms: 0,
            admin_pending: BTreeMap::new(),
            admin_next: 0,
            effects: VecDeque::new(),
            settled: true,
            poisoned: false,
            observations: Vec::new(),
        }
    }

    /// The inputs the suspect file listed at start, for rttest.
    pub fn set_quarantined_listed(&mut self, listed: usize) {
        self.quarantined_listed = listed;
    }

    // ----- what the shells read -----

    pub fn side(&self) -> Side {
        self.settings.side
    }

    pub fn sync(&self) -> &Synchronizer {
        &self.sync
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn outputs(&self) -> &OutputLog {
        &self.outputs
    }

    pub fn logger_feed(&self) -> &LoggerFeed {
        &self.feed
    }

    /// Whether the PG path on `conn` is its PG's active one.
    pub fn path_active(&self, conn: u64) -> Option<bool> {
        self.paths.get(&conn).map(|p| p.active)
    }

    /// The nonce of the transfer this side serves, if it serves one.
    pub fn transfer_serving(&self) -> Option<u64> {
        match &self.transfer {
            Some(TransferRole::Serving(request)) => Some(request.nonce),
            _ => None,
        }
    }

    /// The logger's connection, while one is up.
    pub fn logger_conn(&self) -> Option<u64> {
        self.logger
    }

    /// The private link's connection, while one is up.
    pub fn peer_conn(&self) -> Option<u64> {
        self.peer
    }

    /// Whether a transfer is under way, in either direction.
    pub fn transfer_under_way(&self) -> bool {
        self.transfer.is_some()
    }

    /// Whether this side serves a transfer under `nonce` (false) or receives one (true).
    pub fn transfer_role(&self, nonce: u64) -> Option<bool> {
        match &self.transfer {
            Some(TransferRole::Receiving { nonce: n, .. }) if *n == nonce => Some(true),
            Some(TransferRole::Serving(request)) if request.nonce == nonce => Some(false),
            _ => None,
        }
    }

    /// The checkers' observations since the last call.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    fn observe(&mut self, observation: impl FnOnce() -> Observation) {
        if self.settings.observe {
            self.observations.push(observation());
        }
    }

    /// The next effect to carry out, once the one before it has been.
    pub fn poll(&mut self) -> Option<SideEffect> {
        loop {
            if let Some(effect) = self.effects.pop_front() {
                return Some(effect);
            }
            if self.poisoned {
                return None;
            }
            if let Some(action) = self.sync.poll() {
                self.settled = false;
                self.on_action(action);
                continue;
            }
            if self.settled {
                return None;
            }
            self.settled = true;
            // A drop decision's own actions (delivering it while isolated, sending it to the
            // peer) come first; the logger's batches follow when nothing is left.
            if self.propose_drop() {
                self.settled = false;
            } else {
                self.send_logger_batches(false);
            }
        }
    }

    fn push(&mut self, effect: SideEffect) {
        assert!(
            self.effects.len() < EFFECTS_QUEUED_MAX,
            "the shell drains the side's effects"
        );
        self.effects.push_back(effect);
    }

    fn clock(&mut self, now_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.settled = false;
        self.clock_ms
    }

    // ----- events -----

    /// The shell's timer: the synchronizer's timers, PG heartbeats and silence, transfer
    /// timeouts and retries, the logger's progress, the state size alarm.
    pub fn tick(&mut self, now_ms: u64) {
        let now = self.clock(now_ms);
        self.sync.tick(now);
        self.report_released(now);
        let interval = self.settings.pg_heartbeat_interval_ms;
        let silence_max = interval * self.settings.pg_heartbeat_misses_max;
        let mut silent = Vec::new();
        let mut heartbeats = Vec::new();
        for (&conn, path) in &mut self.paths {
            if now > path.last_heard_ms + silence_max {
                silent.push(conn);
            } else if now >= path.last_sent_ms + interval {
                path.last_sent_ms = now;
                heartbeats.push(conn);
            }
        }
        for conn in heartbeats {
            self.push(SideEffect::SendPg {
                conn,
                message: SideToPg::Heartbeat,
            });
        }
        for conn in silent {
            self.event(format!("PG path {conn} silent: closed"));
            self.drop_path(conn);
        }
        // Receiving: give up on a session that takes too long; retry after a failure.
        if let Some(TransferRole::Receiving {
            started_ms,
            progress,
            ..
        }) = &self.transfer
        {
            let (started_ms, begun) = (*started_ms, progress.is_some());
            if now > started_ms + self.settings.transfer_timeout_ms {
                self.event("state transfer timed out".into());
                self.transfer_failed_now(now);
            } else if !begun && now > started_ms + self.settings.transfer_start_timeout_ms {
                self.event(format!(
                    "state transfer failed: no session began within {} ms",
                    self.settings.transfer_start_timeout_ms
                ));
                self.transfer_failed_now(now);
            }
        }
        if self.sync.transfer_wanted().is_some()
            && self.transfer.is_none()
            && self.transfer_retry_at_ms.is_none_or(|at| now >= at)
        {
            self.start_receiving(now);
        }
        let size = self.router.state_size_max();
        if !self.state_size_alarmed && size > self.settings.state_size_alarm_bytes {
            self.state_size_alarmed = true;
            let mb = 1 << 20;
            self.event(format!(
                "The router state size of {} MB has grown beyond the alarm limit of {} MB",
                size / mb,
                self.settings.state_size_alarm_bytes / mb
            ));
        }
        if now >= self.logger_progress_due_ms {
            self.logger_progress_due_ms = now + LOGGER_PROGRESS_INTERVAL_MS;
            self.tell_logger_progress();
            self.send_logger_batches(true);
        }
    }

    /// The shell took a batch of events: a disabled side acknowledges what it holds.
    pub fn end_of_batch(&mut self, now_ms: u64) {
        let now = self.clock(now_ms);
        self.sync.end_of_batch(now);
    }

    /// The private link came up on `conn`.
    pub fn peer_up(&mut self, now_ms: u64, conn: u64) {
        let now = self.clock(now_ms);
        if let Some(old) = self.peer.take() {
            self.push(SideEffect::ClosePeer { conn: old });
        }
        self.peer = Some(conn);
        // A new connection ends any transfer of the old one.
        self.transfer = None;
        self.sync.peer_link_up(now);
        self.logger_progress_told = None;
    }

    pub fn peer_message(&mut self, now_ms: u64, conn: u64, message: PeerMessage) {
        let now = self.clock(now_ms);
        if self.peer == Some(conn) {
            self.sync.on_peer_message(now, message);
        }
    }

    pub fn peer_down(&mut self, now_ms: u64, conn: u64, reason: &str) {
        let now = self.clock(now_ms);
        if self.peer == Some(conn) {
            self.event(format!("private link down: {reason}"));
            self.close_peer();
            self.sync.peer_link_down(now);
        }
    }

    /// A send on the private link failed (its queue is full, or it closed): nothing more goes
    /// out on that connection, which closes.
    pub fn peer_send_failed(&mut self, now_ms: u64, conn: u64, error: &str) {
        let now = self.clock(now_ms);
        self.effects
            .retain(|e| !matches!(e, SideEffect::SendPeer { conn: c, .. } if *c == conn));
        if self.peer == Some(conn) {
            self.event(format!("private link: {error}"));
            self.close_peer();
            self.sync.peer_link_down(now);
        }
    }

    /// A PG of incarnation `incarnation` connected a path on `conn`.
    pub fn pg_up(&mut self, now_ms: u64, conn: u64, pg: PgId, incarnation: u64) {
        let now = self.clock(now_ms);
        if !self.settings.pgs.iter().any(|(id, _)| *id == pg) {
            self.push(SideEffect::SendPg {
                conn,
                message: SideToPg::Refuse {
                    reason: format!("PG {pg} is not in the topology"),
                },
            });
            self.push(SideEffect::ClosePg { conn });
            return;
        }
        self.push(SideEffect::SendPg {
            conn,
            message: SideToPg::Welcome {
                side: self.settings.side,
            },
        });
        self.log(format!(
            "PG {pg} path up (connection {conn}, incarnation {incarnation})"
        ));
        self.paths.insert(
            conn,
            PgPath {
                pg,
                active: false,
                last_heard_ms: now,
                last_sent_ms: now,
            },
        );
        self.sync.pg_reachable(now, pg, true);
    }

    pub fn pg_message(&mut self, now_ms: u64, conn: u64, message: PgToSide) {
        let now = self.clock(now_ms);
        let Some(path) = self.paths.get_mut(&conn) else {
            return;
        };
        path.last_heard_ms = now;
        let pg = path.pg;
        match pg_link::on_pg_message(&mut self.sync, &self.outputs, now, pg, message) {
            PathChange::None => {}
            PathChange::Idle => {
                if let Some(path) = self.paths.get_mut(&conn) {
                    path.active = false;
                }
            }
            PathChange::Active { replay, lost } => {
                if let Some(path) = self.paths.get_mut(&conn) {
                    path.active = true;
                }
                self.log(format!(
                    "PG {pg} path {conn} active: {} outputs replayed",
                    replay.len()
                ));
                for message in replay {
                    self.push(SideEffect::SendPg { conn, message });
                }
                if lost {
                    self.event(format!(
                        "PG {pg} asked for outputs this side no longer keeps: they are lost"
                    ));
                }
            }
        }
    }

    /// A send on the PG path `conn` failed (its queue is full, or it closed): the path is
    /// closed, and the PG connects again and resends what was not acknowledged.
    pub fn pg_send_failed(&mut self, now_ms: u64, conn: u64, error: &str) {
        self.clock(now_ms);
        self.effects
            .retain(|e| !matches!(e, SideEffect::SendPg { conn: c, .. } if *c == conn));
        if self.paths.contains_key(&conn) {
            self.event(format!("PG path {conn}: {error}: closed"));
            self.drop_path(conn);
        }
    }

    pub fn pg_down(&mut self, now_ms: u64, conn: u64, reason: &str) {
        self.clock(now_ms);
        if let Some(path) = self.paths.get(&conn) {
            let pg = path.pg;
            self.event(format!("PG {pg} path closed: {reason}"));
            self.drop_path(conn);
        }
    }

    /// A logger connected on `conn`, having committed through `committed_through`.
    pub fn logger_up(&mut self, now_ms: u64, conn: u64, committed_through: u64, version: u64) {
        self.clock(now_ms);
        if let Some(old) = self.logger.take() {
            self.push(SideEffect::CloseLogger { conn: old });
        }
        self.log(format!(
            "logger connected: committed through {committed_through}, configuration version \
             {version}"
        ));
        if self.sync.needs_state() {
            // This side holds no state yet (it takes its peer's): it tells its logger nothing,
            // not even where the stream resumes, as it has no configuration to send with it.
            // The transfer drops the link; the logger, connecting again, hears of its gap.
            self.logger = Some(conn);
            return;
        }
        if let Some(resumes_after) = self.feed.logger_connected(committed_through, version) {
            let config = self.router.config_stamp();
            self.event(format!(
                "the logger committed through {committed_through}; this side holds the stream \
                 after {resumes_after}: the logger recovers the rest from its peer \
                 (configuration {config})"
            ));
            let gap = SideToLogger::Gap {
                resumes_after,
                contact_center: Box::new(self.router.contact_center()),
                config,
                ranges_left: self.feed.ranges_left_before(resumes_after),
            };
            self.push(SideEffect::SendLogger {
                conn,
                message: gap,
                bulk: true,
            });
        }
        self.logger = Some(conn);
        self.tell_logger_progress();
        self.send_logger_batches(true);
    }

    pub fn logger_message(&mut self, now_ms: u64, conn: u64, message: LoggerToSide) {
        self.clock(now_ms);
        if self.logger != Some(conn) {
            return;
        }
        match message {
            LoggerToSide::Committed {
                through,
                config_version,
            } => self.feed.committed(through, config_version),
            // Only a side waiting for its configuration at a cold start asks for it.
            LoggerToSide::Configuration { .. } | LoggerToSide::NoConfiguration { .. } => {}
        }
    }

    pub fn logger_down(&mut self, now_ms: u64, conn: u64, reason: &str) {
        self.clock(now_ms);
        if self.logger == Some(conn) {
            self.event(format!("logger link down: {reason}"));
            self.close_logger();
        }
    }

    /// A send to the logger failed (its queue is full, or it closed): nothing more goes out on
    /// that connection (a batch after a gap the logger never got would be written out of
    /// place), which closes; the logger connects again and hears of its gap.
    pub fn logger_send_failed(&mut self, now_ms: u64, conn: u64, error: &str) {
        self.clock(now_ms);
        self.effects
            .retain(|e| !matches!(e, SideEffect::SendLogger { conn: c, .. } if *c == conn));
        if self.logger == Some(conn) {
            self.event(format!("logger link: {error}"));
            self.close_logger();
        }
    }

    /// A configuration request, answered by an `AdminReply` with the shell's `ticket`.
    pub fn admin(&mut self, now_ms: u64, ticket: u64, request: AdminRequest) {
        let now = self.clock(now_ms);
        let reply = match request {
            AdminRequest::Report => AdminReply::Report(Box::new(self.report(now))),
            AdminRequest::ExportConfig => self.export_config(),
            AdminRequest::ApplyConfig(change) => {
                if self.admin_pending.len() >= ADMIN_REQUESTS_PENDING_MAX {
                    AdminReply::Failed {
                        reason: format!(
                            "{ADMIN_REQUESTS_PENDING_MAX} configuration requests await their \
                             answer; try again"
                        ),
                    }
                } else {
                    // The side's own event log says who asked; the router's event, in the
                    // central database's Event table, says who once the change is applied.
                    self.event(format!(
                        "configuration change of {} operations submitted by {}",
                        change.ops.len(),
                        change.author
                    ));
                    self.admin_next += 1;
                    let request = self.admin_next;
                    match self
                        .sync
                        .submit_admin(now, request, Input::ConfigChange(change))
                    {
                        Ok(seq) => {
                            self.admin_pending.insert(request, ticket);
                            self.observe(|| Observation::AdminOrdered { seq });
                            return;
                        }
                        Err(reason) => AdminReply::NotOrdering {
                            reason: reason.to_string(),
                        },
                    }
                }
            }
        };
        self.push(SideEffect::AdminReply { ticket, reply });
    }

    /// The whole configuration, with the RecoveryKey it holds through (updateaw's copy).
    pub fn export_config(&self) -> AdminReply {
        if self.sync.needs_state() || self.transfer.is_some() {
            return AdminReply::NotOrdering {
                reason: "this side is taking its peer's state".into(),
            };
        }
        AdminReply::Configuration {
            contact_center: Box::new(self.router.contact_center()),
            config_version: self.router.config_version(),
            config_recovery_key: self.router.config_recovery_key(),
            recovery_key: self.sync.delivered_through(),
        }
    }

    /// The router's digest and state size at the DigestCheck delivered at `seq`.
    pub fn digest_computed(&mut self, now_ms: u64, seq: u64, digest: u128, state_bytes: u64) {
        let now = self.clock(now_ms);
        self.state_size_now = state_bytes;
        self.sync.on_local_digest(now, seq, digest);
    }

    /// The feed's publisher could not take or make a frame of a tick: the next tick reads
    /// every row, starting the feed again.
    pub fn feed_start_again(&mut self) {
        self.ticker.tick_lost();
    }

    // ----- state transfer -----

    /// A receiving session learnt the state's size: the buffer bound follows from it.
    pub fn transfer_header(&mut self, now_ms: u64, nonce: u64, state_bytes: u64) {
        self.transfer_progress(now_ms, nonce, 0, state_bytes);
        if self.transfer_role(nonce) == Some(true) {
            // Twice the messages expected while the state arrives at a conservative 100 MB/s
            // under 100,000 inputs/s.
            let bound = tandem_mds::transfer_buffer_bound(state_bytes, 100 << 20, 100_000);
            self.sync.set_transfer_buffer_messages_max(bound);
        }
    }

    /// A receiving session's progress, after each chunk.
    pub fn transfer_progress(&mut self, now_ms: u64, nonce: u64, received: u64, total: u64) {
        self.clock(now_ms);
        if let Some(TransferRole::Receiving {
            nonce: n, progress, ..
        }) = &mut self.transfer
        {
            if *n == nonce {
                *progress = Some((received, total));
            }
        }
    }

    /// A session asks this side, the source, for its cut under `nonce`. Deliveries the
    /// synchronizer decided and the machine has not yet made reach the router first: the cut
    /// says the state holds everything delivered. The cut's own messages follow as effects.
    pub fn serve_cut(&mut self, now_ms: u64, nonce: u64) -> Result<CutTaken, String> {
        let now = self.clock(now_ms);
        match &self.transfer {
            Some(TransferRole::Serving(request)) if request.nonce == nonce => {}
            _ => return Err("no state transfer was asked for with this nonce".into()),
        }
        while !self.poisoned {
            let Some(action) = self.sync.poll() else {
                break;
            };
            self.on_action(action);
        }
        if self.poisoned {
            return Err("this side's router failed".into());
        }
        let cut = self.sync.begin_transfer(now).map_err(|e| e.to_string())?;
        // A persistent structure: the copy costs pointer copies, and the router goes on.
        let state = self.router.snapshot();
        let side_data = rmp_serde::to_vec(&SideDataRef {
            outputs: &self.outputs,
            history: self.feed.history(),
        })
        .map_err(|e| e.to_string())?;
        let side = self.settings.side;
        Ok(CutTaken {
            cut,
            state,
            side_data,
            direction: format!("({side}->{})", side.peer()),
        })
    }

    /// The session under `nonce` sent this side's state.
    pub fn transfer_sent(&mut self, now_ms: u64, nonce: u64, record: SyncRecord) {
        self.clock(now_ms);
        self.event(format!(
            "state sent {}: {} bytes in {} ms (cut stall {} us)",
            record.direction, record.bytes, record.duration_ms, record.stall_us
        ));
        self.transfer_counts.sent += 1;
        self.transfer_counts.bytes_sent += record.bytes;
        self.push_history(record);
        if matches!(&self.transfer, Some(TransferRole::Serving(r)) if r.nonce == nonce) {
            self.transfer = None;
        }
    }

    /// The session under `nonce` brought the peer's state at `cut`, its records checked
    /// against the sender's digest. Returns whether this side took it.
    pub fn transfer_received(
        &mut self,
        now_ms: u64,
        nonce: u64,
        cut: SyncCut,
        state: State,
        side_data: SideData,
        record: SyncRecord,
    ) -> bool {
        let now = self.clock(now_ms);
        if self.transfer_role(nonce) != Some(true) {
            return false;
        }
        let cut_seq = cut.seq;
        if let Err(e) = self.sync.on_transfer_received(now, cut) {
            self.event(format!("state transfer discarded: {e}"));
            self.transfer_failed_now(now);
            return false;
        }
        // The synchronizer took the cut: a state that does not load would leave this side
        // with none, so it is an invariant broken, not an input refused.
        let mut router = Router::from_state(state)
            .unwrap_or_else(|e| panic!("a checked state did not load into the router: {e}"));
        self.ticker.attach(&mut router);
        self.router = router;
        // The stream before the cut is the peer's: this side's logger recovers what it lacks
        // of it from the peer's logger. At the cut, which may follow the router's last input:
        // a drop decision or a digest check delivered last is in the state too.
        self.feed.restart_at(cut_seq, &side_data.history);
        if let Some(conn) = self.logger.take() {
            self.push(SideEffect::CloseLogger { conn });
        }
        // Requests ordered before the cut were answered by the old state, which is gone.
        for (_, ticket) in std::mem::take(&mut self.admin_pending) {
            self.push(SideEffect::AdminReply {
                ticket,
                reply: AdminReply::Failed {
                    reason: "this side took its peer's state before the change was delivered; \
                             export the configuration to see whether it was applied"
                        .into(),
                },
            });
        }
        self.state_size_now = record.bytes;
        self.outputs = side_data.outputs;
        self.transfer = None;
        self.transfer_retry_ms = TRANSFER_RETRY_MS_MIN;
        self.event(format!(
            "state received {}: {} bytes in {} ms, digest checked",
            record.direction, record.bytes, record.duration_ms
        ));
        self.transfer_counts.received += 1;
        self.transfer_counts.bytes_received += record.bytes;
        self.push_history(record);
        true
    }

    /// The session under `nonce` failed.
    pub fn transfer_failed(&mut self, now_ms: u64, nonce: u64, reason: &str) {
        let now = self.clock(now_ms);
        let ours = match &self.transfer {
            Some(TransferRole::Receiving { nonce: n, .. }) => *n == nonce,
            Some(TransferRole::Serving(r)) => r.nonce == nonce,
            None => false,
        };
        if ours {
            self.event(format!("state transfer failed: {reason}"));
            self.transfer_failed_now(now);
        }
    }

    fn next_nonce(&mut self, now: u64) -> u64 {
        self.nonce_counter += 1;
        // Unique per process and side: the clock's millisecond and a counter.
        (now << 16) ^ self.nonce_counter ^ ((self.settings.side == Side::B) as u64) << 63
    }

    fn start_receiving(&mut self, now: u64) {
        let nonce = self.next_nonce(now);
        self.transfer = Some(TransferRole::Receiving {
            nonce,
            started_ms: now,
            progress: None,
        });
        self.sync.request_transfer(
            now,
            TransferRequest {
                client: transfer::ROUTER_CLIENT.into(),
                state_version: tandem_router::STATE_FORMAT_VERSION,
                logic_version: self.settings.logic_version.clone(),
                epoch: self.sync.epoch(),
                nonce,
            },
        );
        self.log(format!("asking the peer for its state (nonce {nonce})"));
        if self.settings.side == Side::A {
            // A's MDS opens the session and asks B to send.
            self.push(SideEffect::OpenTransferSession {
                nonce,
                a_receives: true,
            });
        }
    }

    fn on_transfer_requested(&mut self, request: TransferRequest) {
        if let Some(reason) = transfer::refusal(&request, &self.settings.logic_version) {
            self.event(format!("state transfer refused: {reason}"));
            self.transfer_counts.refused += 1;
            return;
        }
        let nonce = request.nonce;
        self.transfer = Some(TransferRole::Serving(request));
        if self.settings.side == Side::A {
            self.push(SideEffect::OpenTransferSession {
                nonce,
                a_receives: false,
            });
        }
    }

    /// Ends the transfer under way as failed; a receiver retries after a backoff.
    fn transfer_failed_now(&mut self, now: u64) {
        self.transfer_counts.failed += 1;
        if matches!(self.transfer, Some(TransferRole::Receiving { .. })) {
            self.transfer_retry_at_ms = Some(now + self.transfer_retry_ms);
            self.transfer_retry_ms = (self.transfer_retry_ms * 2).min(TRANSFER_RETRY_MS_MAX);
        }
        self.transfer = None;
    }

    fn push_history(&mut self, record: SyncRecord) {
        if self.sync_history.len() == SYNC_HISTORY_MAX {
            self.sync_history.pop_front();
        }
        self.sync_history.push_back(record);
    }

    // ----- the synchronizer's actions -----

    fn on_action(&mut self, action: Action) {
        if let Some((address, message)) = pg_link::to_pgs(&action) {
            let conns: Vec<u64> = self
                .paths
                .iter()
                .filter(|(_, path)| {
                    address == PgAddress::Every || address == PgAddress::Pg(path.pg)
                })
                .map(|(&conn, _)| conn)
                .collect();
            for conn in conns {
                self.push(SideEffect::SendPg {
                    conn,
                    message: message.clone(),
                });
            }
            return;
        }
        match action {
            Action::SendPeer(message) => {
                if let Some(conn) = self.peer {
                    self.push(SideEffect::SendPeer { conn, message });
                }
            }
            Action::ClosePeer { reason } => {
                self.event(format!("private link closed: {reason}"));
                self.close_peer();
            }
            Action::Deliver(ordered) => self.deliver(ordered),
            Action::PersistEpoch(epoch) => self.push(SideEffect::PersistEpoch(epoch)),
            Action::StateTransferWanted { from } => {
                self.event(format!("state transfer wanted from side {from}"));
                self.transfer_retry_at_ms = None;
                self.transfer_retry_ms = TRANSFER_RETRY_MS_MIN;
            }
            Action::TransferRequested(request) => self.on_transfer_requested(request),
            Action::PeerLoggerProgress {
                connected,
                committed_through,
            } => self.feed.peer_logger(Some(PeerLogger {
                connected,
                committed_through,
            })),
            Action::Event(event) => self.on_sync_event(event),
            Action::AckPg { .. }
            | Action::ResendFrom { .. }
            | Action::RefuseInput { .. }
            | Action::RequestLease { .. }
            | Action::TestOtherSide => unreachable!("pg_link::to_pgs takes the PG actions"),
        }
    }

    fn on_sync_event(&mut self, event: SyncEvent) {
        let text = match &event {
            SyncEvent::StateChanged { from, to, epoch } => {
                format!("synchronizer {from} -> {to} (epoch {})", epoch.number)
            }
            SyncEvent::VersionMismatch { ours, theirs } => {
                format!("the peer runs logic version {theirs}, this side {ours}: not paired")
            }
            SyncEvent::PeerFailed { silent_ms } => {
                format!("peer failed: no message for {silent_ms} ms")
            }
            SyncEvent::Fenced { ours, theirs } => format!(
                "fenced: epoch {} is later than ours ({})",
                theirs.number, ours.number
            ),
            SyncEvent::HeldLimitReached { held } => {
                format!("{held} ordered messages await the peer: ordering waits")
            }
            SyncEvent::EpochExhausted { epoch } => {
                format!("epoch {} has used all its sequence numbers", epoch.number)
            }
            SyncEvent::TransferBufferOverflow { max } => {
                format!("state transfer abandoned: more than {max} messages to buffer")
            }
            SyncEvent::DigestMismatch { seq, ours, theirs } => format!(
                "state digests differ at sequence {seq}: this side {ours:032x}, the peer {theirs:032x}"
            ),
        };
        if matches!(event, SyncEvent::TransferBufferOverflow { .. }) {
            let now = self.clock_ms;
            self.transfer_failed_now(now);
        }
        if let SyncEvent::StateChanged { from, to, .. } = &event {
            if to.is_enabled() && !from.is_enabled() {
                // PGs whose inputs this side refused a moment ago send them again at once,
                // rather than after their acknowledgement timeout.
                let conns: Vec<u64> = self.paths.keys().copied().collect();
                for conn in conns {
                    self.push(SideEffect::SendPg {
                        conn,
                        message: SideToPg::Welcome {
                            side: self.settings.side,
                        },
                    });
                }
            }
        }
        self.observe(|| Observation::Sync(event));
        self.event(text);
    }

    /// An event for the side's log and for rttest.
    fn event(&mut self, text: String) {
        let warn = ["not paired", "fenced", "failed", "quarantined", "differ"]
            .iter()
            .any(|word| text.contains(word));
        if self.events.len() == EVENTS_KEPT_MAX {
            self.events.pop_front();
        }
        self.events.push_back((self.clock_ms, text.clone()));
        self.push(SideEffect::Log { warn, text });
    }

    /// A line for the side's log only.
    fn log(&mut self, text: String) {
        self.push(SideEffect::Log { warn: false, text });
    }

    fn drop_path(&mut self, conn: u64) {
        let Some(path) = self.paths.remove(&conn) else {
            return;
        };
        self.push(SideEffect::ClosePg { conn });
        if !self.paths.values().any(|p| p.pg == path.pg) {
            let now = self.clock_ms;
            self.sync.pg_reachable(now, path.pg, false);
        }
    }

    fn close_peer(&mut self) {
        if let Some(conn) = self.peer.take() {
            self.push(SideEffect::ClosePeer { conn });
        }
        self.feed.peer_logger(None);
        if matches!(self.transfer, Some(TransferRole::Serving(_))) {
            self.transfer = None;
        }
    }

    // ----- delivery -----

    /// Applies an ordered message to the router, and numbers and sends its outputs.
    fn deliver(&mut self, ordered: Ordered) {
        if self.settings.observe {
            self.observations
                .push(Observation::Delivered(ordered.clone()));
        }
        let (source, input) = match ordered.body {
            Body::Input { source, input } => (source, input),
            Body::Quarantined {
                pg,
                incarnation,
                input_no,
            } => {
                // Never applied: the enabled side ordered this in place of a poison input.
                self.quarantined_skipped += 1;
                self.feed.delivered(ordered.seq, None);
                self.event(format!(
                    "input {input_no} from PG {pg} (incarnation {incarnation}) quarantined: it was \
                     in flight during two crashes"
                ));
                return;
            }
            Body::HistoricalDrop(drop) => {
                self.push(SideEffect::Log {
                    warn: true,
                    text: format!("at {}: {}", ordered.seq, drop.describe()),
                });
                let dropped = self.feed.decided_drop(ordered.seq, ordered.time_ms, &drop);
                self.report_local_drop(dropped);
                return;
            }
            Body::DigestCheck => {
                // The digest is computed off the core, from a snapshot taken at this sequence
                // number; the router goes on.
                self.push(SideEffect::ComputeDigest {
                    seq: ordered.seq,
                    state: Box::new(self.router.snapshot()),
                });
                self.feed.delivered(ordered.seq, None);
                return;
            }
        };
        let input = OrderedInput {
            time_ms: ordered.time_ms,
            input,
        };
        let admin_request = match source {
            Source::Admin { side, request } if side == self.settings.side => Some(request),
            _ => None,
        };
        let mut outputs = std::mem::take(&mut self.outputs_scratch);
        outputs.clear();
        let router = &mut self.router;
        let applied = quarantine::catch_panic(|| {
            #[cfg(feature = "poison-input")]
            quarantine::panic_on_poison(&input.input);
            router.apply_into(ordered.seq, &input, &mut outputs)
        });
        if let Err(message) = applied {
            // The router may have stopped halfway through the input: going on would spread a
            // state no one can vouch for. The input stays unacknowledged, so its PG resends it
            // to the next run, and a second crash on it quarantines it.
            self.poisoned = true;
            self.push(SideEffect::RecordSuspect {
                suspect: Suspect::of(&source, &input.input),
                seq: ordered.seq,
                message,
            });
            return;
        }
        let sorted = apply::sort_outputs(ordered.seq, &input, &mut outputs, &mut self.outputs);
        self.outputs_scratch = outputs;
        if let Some(result) = sorted.config_result {
            let reply = match result {
                ConfigResult::Applied { config_version } => {
                    if let Some(config) = &sorted.logged.config {
                        self.ticker.config_applied(VersionedConfigChange {
                            config_version,
                            recovery_key: ordered.seq,
                            change: config.change.clone(),
                        });
                    }
                    AdminReply::Applied {
                        config_version,
                        recovery_key: ordered.seq,
                    }
                }
                ConfigResult::Rejected { reason } => AdminReply::Rejected { reason },
            };
            if let Some(ticket) = admin_request.and_then(|r| self.admin_pending.remove(&r)) {
                self.push(SideEffect::AdminReply { ticket, reply });
            }
        }
        let generation = self.outputs.generation;
        for numbered in sorted.pg_outputs {
            if self.settings.observe {
                self.observations.push(Observation::Numbered {
                    generation,
                    seq: ordered.seq,
                    output: numbered.clone(),
                });
            }
            let conns: Vec<u64> = self
                .paths
                .iter()
                .filter(|(_, path)| path.pg == numbered.pg && path.active)
                .map(|(&conn, _)| conn)
                .collect();
            let message = SideToPg::Output {
                generation,
                id: numbered.id,
                prev: numbered.prev,
                time_ms: numbered.time_ms,
                output: numbered.output,
            };
            for conn in conns {
                self.push(SideEffect::SendPg {
                    conn,
                    message: message.clone(),
                });
            }
        }
        if matches!(input.input, Input::TimeTick) {
            let tick = self.ticker.tick(
                &mut self.router,
                generation,
                ordered.epoch.number,
                ordered.seq,
                false,
            );
            self.push(SideEffect::PublishFeedTick(Box::new(tick)));
        }
        let dropped = self.feed.delivered(ordered.seq, Some(sorted.logged));
        self.report_local_drop(dropped);
    }

    fn report_local_drop(&mut self, dropped: Option<Dropped>) {
        let Some(dropped) = dropped else {
            return;
        };
        let pending = self.released_unreported.get_or_insert(Dropped {
            rows: 0,
            through: 0,
        });
        pending.rows += dropped.rows;
        pending.through = pending.through.max(dropped.through);
        let now = self.clock_ms;
        self.report_released(now);
    }

    /// Reports the rows released since the last report, if it is time to.
    fn report_released(&mut self, now: u64) {
        if self.released_unreported.is_none()
            || now < self.released_reported_ms + LOGGER_RELEASE_REPORT_MS
        {
            return;
        }
        let released = self.released_unreported.take().expect("checked above");
        self.released_reported_ms = now;
        self.event(format!(
            "the logger buffer is full ({} rows): {} rows through RecoveryKey {} released from \
             this side; its logger recovers them from the peer logger",
            self.feed.status().rows_max,
            released.rows,
            released.through
        ));
    }

    // ----- the logger -----

    /// An enabled side whose logger buffer is past its bound while neither logger takes rows
    /// orders a drop decision, so that both sides drop the same records. Returns whether it
    /// ordered one (its actions then wait in the synchronizer).
    fn propose_drop(&mut self) -> bool {
        let now = self.clock_ms;
        match self.feed.order_drop(&mut self.sync, now) {
            Ok(true) => {
                self.observe(|| Observation::DropOrdered);
                true
            }
            Ok(false) => false,
            Err(reason) => {
                self.event(format!(
                    "a historical drop decision was not ordered: {reason}"
                ));
                false
            }
        }
    }

    /// Tells the peer of this side's logger when that changed since it was last told.
    fn tell_logger_progress(&mut self) {
        let status = self.feed.status();
        let progress = (self.logger.is_some(), status.committed_through);
        if self.peer.is_some() && self.logger_progress_told != Some(progress) {
            self.logger_progress_told = Some(progress);
            let now = self.clock_ms;
            self.sync.logger_progress(now, progress.0, progress.1);
        }
    }

    fn close_logger(&mut self) {
        if let Some(conn) = self.logger.take() {
            self.push(SideEffect::CloseLogger { conn });
        }
        self.feed.logger_disconnected();
        self.tell_logger_progress();
    }

    /// Sends the logger what it has not been sent, in bounded batches.
    fn send_logger_batches(&mut self, progress_only: bool) {
        let Some(conn) = self.logger else {
            return;
        };
        if self.sync.needs_state() {
            return;
        }
        if !self.feed.logger_connected_now() {
            // The feed dropped rows the logger never had: it reconnects to hear of the gap.
            self.event("the logger fell behind the buffer: its link is reset".into());
            self.close_logger();
            return;
        }
        let mut progress = progress_only;
        while let Some(batch) = self.feed.next_batch(progress) {
            progress = false;
            self.push(SideEffect::SendLogger {
                conn,
                message: batch,
                bulk: false,
            });
        }
    }

    // ----- what rttest and the metrics read -----

    /// Each PG of the topology by name, and whether a path to it is up.
    pub fn pgs_reachable(&self) -> Vec<(String, bool)> {
        self.settings
            .pgs
            .iter()
            .map(|(id, name)| (name.clone(), self.paths.values().any(|p| p.pg == *id)))
            .collect()
    }

    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            side: self.settings.side,
            sync_state: self.sync.state(),
            epoch: self.sync.epoch().number,
            held_through: self.sync.held_through(),
            delivered_through: self.sync.delivered_through(),
            peer_connected: self.peer.is_some(),
            pg_paths: self
                .settings
                .pgs
                .iter()
                .map(|(id, name)| {
                    let paths = self.paths.values().filter(|p| p.pg == *id).count();
                    (name.clone(), paths as u32)
                })
                .collect(),
            state_bytes: self.state_size_now,
            state_bytes_max: self.router.state_size_max(),
            transfers: self.transfer_counts,
            inputs_applied: self.router.state().scalars.counters.inputs_applied,
            inputs_rejected: self.router.state().scalars.counters.inputs_rejected,
        }
    }

    /// rttest's answer to `command` (all but `feed`, which the feed's thread answers).
    pub fn rttest(&self, now_ms: u64, command: &str) -> String {
        if command == "summary" {
            return status::summary_line(&self.router.summary());
        }
        if command == "logger" {
            let f = self.feed.status();
            return format!(
                "logger connected={} committed_through={} config_version={} router_config_version={} \
                 delivered_through={} held_messages={} held_rows={} rows_max={} dropped_rows={} \
                 decided_dropped_rows={} peer_logger_connected={} peer_committed_through={} \
                 route_requests={} route_requests_in_progress={}\n",
                self.logger.is_some(),
                f.committed_through,
                f.committed_config_version,
                self.router.config_version(),
                f.delivered_through,
                f.held_messages,
                f.held_rows,
                f.rows_max,
                f.dropped_rows,
                f.decided_dropped_rows,
                f.peer_logger.is_some_and(|p| p.connected),
                f.peer_logger.map_or(0, |p| p.committed_through),
                self.router.state().scalars.counters.route_requests,
                self.router.state().router_calls.len()
            );
        }
        if command == "feed-digest" {
            // With nothing applied since the last tick, these rows are that frame's.
            let rows: Vec<_> = self.router.feed_rows().collect();
            return format!(
                "feed-digest frame={} digest={:032x} aw_digest={:032x} at_tick={}\n",
                self.router.feed_frame_number(),
                tandem_model::feed::rows_digest(&rows),
                tandem_db::aw::rows_digest(&rows),
                self.router.last_seq() == self.ticker.last_tick_seq()
            );
        }
        if let Some(dump) = dumps::render(command, &self.router) {
            return dump;
        }
        let reachable = self.pgs_reachable();
        let inputs = StatusInputs {
            side: self.settings.side,
            now_ms,
            started_ms: self.started_ms,
            time_zone: &self.router.state().scalars.settings.time_zone,
            sync_state: self.sync.state(),
            epoch: self.sync.epoch(),
            held_through: self.sync.held_through(),
            delivered_through: self.sync.delivered_through(),
            peer_connected: self.peer.is_some(),
            pgs_reachable: &reachable,
            state_size_now: self.state_size_now,
            state_size_max: self.router.state_size_max(),
            digest_checks: self.sync.digest_checks(),
            quarantined_skipped: self.quarantined_skipped,
            quarantined_listed: self.quarantined_listed,
            logic_version: &self.settings.logic_version,
            history: &self.sync_history,
            events: &self.events,
            transfer_under_way: self.transfer.is_some(),
            transfer_progress: self.receiving_progress(),
        };
        status::render(command, &inputs)
    }

    fn receiving_progress(&self) -> Option<(u64, u64)> {
        match &self.transfer {
            Some(TransferRole::Receiving { progress, .. }) => *progress,
            _ => None,
        }
    }

    /// The side's report, for the system page and `tandem config`.
    pub fn report(&self, now_ms: u64) -> SideReport {
        let checks = self.sync.digest_checks();
        SideReport {
            side: self.settings.side,
            sync_state: self.sync.state().to_string(),
            epoch: self.sync.epoch(),
            held_through: self.sync.held_through(),
            delivered_through: self.sync.delivered_through(),
            peer_connected: self.peer.is_some(),
            pgs_reachable: self.pgs_reachable(),
            state_size_now: self.state_size_now,
            state_size_max: self.router.state_size_max(),
            last_sync: self.sync_history.back().map(|r| SyncReport {
                at_ms: r.at_ms,
                direction: r.direction.clone(),
                bytes: r.bytes,
                duration_ms: r.duration_ms,
            }),
            transfer_under_way: self.transfer.is_some(),
            transfer_progress: self.receiving_progress(),
            digest_checks_equal: checks.equal,
            digest_checks_differed: checks.differed,
            config_version: self.router.config_version(),
            started_ms: self.started_ms,
            now_ms,
            events: self
                .events
                .iter()
                .skip(self.events.len().saturating_sub(SIDE_REPORT_EVENTS_MAX))
                .cloned()
                .collect(),
        }
    }
}
