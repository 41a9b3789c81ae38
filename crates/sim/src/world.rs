//! The simulated world: its clock, its links, its processes and its faults.
//!
//! Every message crosses a link with a latency. A link is FIFO and loses nothing on a live
//! connection, as TCP is: a cut or clogged link holds what is sent on it until it carries bytes
//! again, and the ends notice a long cut by the silence of their heartbeats and close the
//! connection. Connections have generations: a message of a closed connection (or of a crashed
//! process's) is dropped on arrival. A paused process's inbound messages wait in its socket
//! buffer (`inbox`) until it resumes.

mod admin;
mod distributors;
mod loggers;

use crate::{SimOptions, SimReport, Violation};
use distributors::{SideFeed, SimDistributor};
use loggers::{SideLogger, SimLogger};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tandem_central::apply::{self, ConfigResult};
use tandem_central::outputs::OutputLog;
use tandem_central::pg_link::{self, PathChange, PgAddress};
use tandem_central::transfer as central_transfer;
use tandem_central::transfer::{SideData, SideDataRef};
use tandem_mds::sync::{Action, SyncEvent, SyncSettings, SyncState, Synchronizer};
use tandem_mds::{
    next_seq, Body, Epoch, LogicVersion, Ordered, OutputId, PeerMessage, PgToSide, Side, SideToPg,
    SyncCut, TransferRequest,
};
use tandem_model::config::ContactCenter;
use tandem_model::feed::VersionedConfigChange;
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::ids::{PgId, RouteRequestKey};
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;
use tandem_model::topology::MdsTimers;
use tandem_pg::gateway_core::{CoreSettings, GatewayCore, PgEffect};
use tandem_pg::{LoadParams, TrafficSim};
use tandem_router::{records, Router};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Trace lines kept for a failure report.
pub const TRACE_TAIL_LINES: usize = 60;
/// Simulated time after the last fault heals, for the liveness checks.
const QUIET_TAIL_MS: u64 = 8_000;
/// The PGs stop new calls this long before the end, so that every request can be answered and
/// every input acknowledged by then.
const DRAIN_MS: u64 = 4_000;
/// The simulated sides order a DigestCheck this often: often enough to meet pairings,
/// takeovers and transfers in a run of simulated seconds.
const DIGEST_CHECK_INTERVAL_MS: u64 = 500;
/// A PG tries a path that is down this often (`tandem pg`'s reconnect interval).
const PG_RECONNECT_MS: u64 = 200;
/// Side A's MDS tries the private link this often while it is down.
const PEER_CONNECT_MS: u64 = 100;
/// A receiver retries a failed transfer after this, doubling up to the maximum.
const TRANSFER_RETRY_MS_MIN: u64 = 250;
const TRANSFER_RETRY_MS_MAX: u64 = 5_000;
/// A receiver gives up on a session that has not delivered the state in this long.
const TRANSFER_TIMEOUT_MS: u64 = 4_000;
/// The longest a simulated state transfer takes on the wire.
const TRANSFER_WIRE_MS_MAX: u64 = 1_200;
/// Quiet steps granted at the end for the disabled side to deliver what the enabled side has.
const CATCH_UP_MS_MAX: u64 = 2_000;
/// Outputs whose numbering is remembered for the equality check, per PG; older ones are
/// forgotten (the replay log keeps 65,536, far more than a run produces).
const NUMBERED_OUTPUTS_KEPT_MAX: usize = 100_000;

/// A link's kind and ends: (kind, from, to).
type LinkId = (u8, usize, usize);
const LINK_PEER: u8 = 0;
const LINK_SIDE_TO_PG: u8 = 1;
const LINK_PG_TO_SIDE: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    CutPrivateLinkSilently,
    ResetPrivateLink,
    HealPrivateLink,
    Pause(usize, u64),
    Crash(usize, u64),
    /// Crash the source or receiver of a transfer under way, if one is.
    CrashDuringTransfer(bool, u64),
    /// Restart a side with another logic version, and with its own again later.
    VersionMismatch(usize, u64),
    CutPgLink(usize, usize, u64),
    LatencySpike(u64),
    /// Links clogged one by one, then unclogged in random order.
    Swizzle(u64),
    CrashLogger(usize, u64),
    PauseLogger(usize, u64),
    /// A side's central database refuses to grow for a while (a full disk).
    DbWriteFailure(usize, u64),
    CrashDistributor(usize, u64),
    /// A distributor reads its feed slowly for a while.
    SlowDistributor(usize, u64),
    /// A PG's process dies and starts again: a new incarnation, which re-reports its
    /// peripherals.
    CrashPg(usize, u64),
    /// A PG's process stops for a while and goes on (a silent failure): its sockets buffer
    /// what comes, and it sends nothing.
    PausePg(usize, u64),
    /// A distributor's process stops for a while and goes on.
    PauseDistributor(usize, u64),
    /// A distributor's AW database refuses writes for a while (its disk went read-only).
    AwDbWriteFailure(usize, u64),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::CutPrivateLinkSilently => "private link cut silently",
            Fault::ResetPrivateLink => "private link reset",
            Fault::HealPrivateLink => "private link healed",
            Fault::Pause(..) => "side paused",
            Fault::Crash(..) => "side crashed and restarted",
            Fault::CrashDuringTransfer(..) => "crash during a state transfer",
            Fault::VersionMismatch(..) => "restart with another logic version",
            Fault::CutPgLink(..) => "PG link cut",
            Fault::LatencySpike(..) => "latency spike",
            Fault::Swizzle(..) => "swizzle clog",
            Fault::CrashLogger(..) => "logger crashed and restarted",
            Fault::PauseLogger(..) => "logger paused",
            Fault::DbWriteFailure(..) => "central database write failure",
            Fault::CrashDistributor(..) => "distributor crashed and restarted",
            Fault::SlowDistributor(..) => "slow distributor",
            Fault::CrashPg(..) => "PG crashed and restarted",
            Fault::PausePg(..) => "PG paused",
            Fault::PauseDistributor(..) => "distributor paused",
            Fault::AwDbWriteFailure(..) => "AW database write failure",
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
    ToPg {
        pg: usize,
        side: usize,
        generation: u64,
        message: SideToPg,
    },
    ToSide {
        side: usize,
        pg: usize,
        generation: u64,
        message: PgToSide,
    },
    /// The side closed its path (or crashed): the PG sees the connection reset.
    PgPathReset {
        pg: usize,
        side: usize,
        generation: u64,
    },
    /// The PG closed its path: the side sees the connection reset.
    SidePathReset {
        side: usize,
        pg: usize,
        generation: u64,
    },
    /// A's MDS opened the session for `nonce`; the source cuts its state.
    TransferSession {
        source: usize,
        nonce: u64,
    },
    TransferArrived {
        receiver: usize,
        nonce: u64,
        cut: SyncCut,
        records: Vec<u8>,
        side_data: Vec<u8>,
        history: Vec<(u64, u64)>,
    },
    Resume(usize),
    Restart {
        side: usize,
        logic_ok: bool,
    },
    HealPgLink(usize, usize),
    /// The side's end of its logger link sends to the logger.
    ToLogger {
        side: usize,
        generation: u64,
        message: tandem_mds::SideToLogger,
    },
    /// A logger's connection reaches its side, with the logger's progress.
    LoggerHello {
        side: usize,
        generation: u64,
        committed_through: u64,
        config_version: u64,
    },
    FromLogger {
        side: usize,
        generation: u64,
        message: tandem_mds::LoggerToSide,
    },
    /// One end of a logger link closed it; the other (the logger, if `to_logger`) sees it.
    LoggerLinkReset {
        side: usize,
        generation: u64,
        to_logger: bool,
    },
    LoggerRestart(usize),
    LoggerResume(usize),
    /// Bytes of the feed a side wrote to a distributor's subscription `generation`.
    ToDistributor {
        distributor: usize,
        generation: u64,
        bytes: Arc<[u8]>,
    },
    /// A distributor's subscription reaches a side, with the frame it holds.
    DistributorHello {
        side: usize,
        distributor: usize,
        generation: u64,
        position: Option<tandem_model::feed::FeedPosition>,
    },
    /// One end of a feed connection closed it; the other (the distributor, if
    /// `to_distributor`) sees it.
    DistributorLinkReset {
        side: usize,
        distributor: usize,
        generation: u64,
        to_distributor: bool,
    },
    DistributorRestart(usize),
    DistributorResume(usize),
    AwDbTakesWrites(usize),
    PgRestart(usize),
    PgResume(usize),
    /// The administrator submits a configuration change.
    ConfigChange,
    DbHasRoom(usize),
    Clog(LinkId),
    Unclog(LinkId),
    Fault(Fault),
}

/// A side's end of a PG path.
#[derive(Clone, Copy, Debug)]
struct SidePath {
    generation: u64,
    active: bool,
    last_heard_ms: u64,
    last_sent_ms: u64,
}

/// The state transfer this side takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransferRole {
    Receiving { nonce: u64, started_ms: u64 },
    Serving { nonce: u64 },
}

/// One side: its process (synchronizer, router, output log) while it runs, and what survives a
/// crash (whether it ran, its persisted epoch).
struct SimSide {
    sync: Option<Synchronizer>,
    router: Option<Router>,
    outputs: OutputLog,
    logic: LogicVersion,
    started: bool,
    paused: bool,
    persisted_epoch: Epoch,
    paths: BTreeMap<usize, SidePath>,
    transfer: Option<TransferRole>,
    transfer_retry_ms: u64,
    transfer_retry_at_ms: u64,
    /// Checker state: the last sequence number delivered, and per PG the (incarnation, input)
    /// last delivered.
    last_delivered_seq: u64,
    pg_delivered: BTreeMap<PgId, (u64, u64)>,
    /// The ordered history the side's state holds: per epoch range, the last sequence number
    /// delivered in it (a state transfer hands the source's over).
    history: Vec<(u64, u64)>,
    delivered_count: u64,
    transfers_received: u64,
    inbox: VecDeque<Event>,
}

/// One PG: the real gateway core, and the generation of each of its paths.
struct SimPg {
    id: PgId,
    core: GatewayCore,
    paths: [Option<u64>; 2],
    last_connect_ms: u64,
    /// Whether its process runs.
    runs: bool,
    /// Whether its process is stopped; what reaches it meanwhile waits in `inbox`.
    paused: bool,
    inbox: VecDeque<Event>,
    settings: CoreSettings,
    load: LoadParams,
    /// The statistics of its earlier processes.
    retired: Vec<tandem_pg::SimStats>,
}

/// Mixed into the seed for the PG faults' own random stream.
const PG_STREAM: u64 = 0x7067_5f63_7261_7368;
/// The chance that a run crashes one of its PGs' processes.
const PG_CRASH_PROBABILITY: f64 = 0.5;
/// Mixed into the seed for the PG and distributor pauses' own random stream.
const PAUSE_STREAM: u64 = 0x7061_7573_6573_2121;
/// The chance that a run pauses one of its PGs' processes.
const PG_PAUSE_PROBABILITY: f64 = 0.4;
/// The chance that a run pauses one of its distributors' processes.
const DISTRIBUTOR_PAUSE_PROBABILITY: f64 = 0.4;
/// Mixed into the seed for the AW databases' write failures' own random stream.
const AW_DB_STREAM: u64 = 0x6177_5f64_625f_6661;
/// The chance that a run makes one of its AW databases refuse writes for a while.
const AW_DB_WRITE_FAILURE_PROBABILITY: f64 = 0.4;

struct World {
    now_ms: u64,
    rng: ChaCha8Rng,
    options: SimOptions,
    cc: ContactCenter,
    timers: MdsTimers,
    sides: [SimSide; 2],
    pgs: Vec<SimPg>,
    /// reach[side][pg]: whether that PG link carries bytes.
    reach: [Vec<bool>; 2],
    private_link_up: bool,
    /// Whether a private-link connection exists (side A reconnects when it does not).
    connected: bool,
    link_generation: u64,
    path_generation: u64,
    extra_latency_ms: u64,
    latency_spike_until_ms: u64,
    clogged: BTreeSet<LinkId>,
    /// What was sent on clogged links, in order, per link.
    held: BTreeMap<LinkId, VecDeque<Event>>,
    queue: BTreeMap<(u64, u64), Event>,
    /// Per link, the latest arrival time scheduled, to keep each link FIFO.
    link_clock: BTreeMap<LinkId, u64>,
    next_event_no: u64,
    next_nonce: u64,
    /// Every message delivered anywhere, by sequence number: its hash.
    delivered_by_seq: BTreeMap<u64, u64>,
    /// The router digest each DigestCheck found first, by sequence number.
    digest_by_seq: BTreeMap<u64, u128>,
    /// Per (output generation, PG, output id), the hash of the output given that id and the
    /// sequence number of the message that produced it.
    numbered: BTreeMap<(u64, PgId, OutputId), (u64, u64)>,
    /// Per PG and route request, the sequence number of the message whose answer the PG took.
    answers: BTreeMap<(PgId, RouteRequestKey), u64>,
    /// Answers given again after a takeover abandoned the history of the first.
    answers_after_abandoned: u64,
    digests_due: Vec<(usize, u64, u128)>,
    trace: VecDeque<String>,
    hasher: Xxh3,
    faults: BTreeMap<&'static str, u32>,
    violation: Option<Violation>,
    /// The logger tier: each side's logger with its database, and each side's end of the link.
    loggers: [SimLogger; 2],
    side_loggers: [SideLogger; 2],
    /// The rows a side's logger feed holds at most in this run.
    logger_rows_max: usize,
    logger_rng: ChaCha8Rng,
    next_logger_generation: u64,
    drop_decisions: u64,
    /// The real-time tier: each side's rtsrvr, and the distributors with their AW databases.
    side_feeds: [SideFeed; 2],
    distributors: Vec<SimDistributor>,
    distributor_rng: ChaCha8Rng,
    /// PG process crashes come from their own stream.
    pg_rng: ChaCha8Rng,
    /// So do the pauses of PG and distributor processes.
    pause_rng: ChaCha8Rng,
    /// And the AW databases' write failures.
    aw_db_rng: ChaCha8Rng,
    next_distributor_generation: u64,
    /// Per frame (generation, number, RecoveryKey) published: the hash of its bytes and its
    /// predecessor's RecoveryKey.
    frames_published: BTreeMap<(u64, u64, u64), (u64, Option<u64>)>,
    admin_rng: ChaCha8Rng,
    next_admin_request: u64,
    /// The sequence numbers of the configuration changes ordered.
    config_change_seqs: Vec<u64>,
    /// Whether one of them was in a history abandoned at a takeover.
    config_change_abandoned: bool,
    /// The configuration version the run started at.
    initial_config_version: u64,
}

/// When a fault or change drawn from `rng` comes: after the first half second, before `end_ms`.
fn draw_time(rng: &mut ChaCha8Rng, now_ms: u64, end_ms: u64) -> u64 {
    rng.random_range(now_ms + 500..end_ms.max(now_ms + 501))
}

/// With `probability`, one fault drawn from `rng`: when it strikes, which of `count`
/// processes, and for how long (100 ms up to `for_ms_max`).
fn draw_one_fault(
    rng: &mut ChaCha8Rng,
    probability: f64,
    now_ms: u64,
    end_ms: u64,
    count: usize,
    for_ms_max: u64,
) -> Option<(u64, usize, u64)> {
    if !rng.random_bool(probability) {
        return None;
    }
    let at = draw_time(rng, now_ms, end_ms);
    let which = rng.random_range(0..count);
    Some((at, which, rng.random_range(100..for_ms_max)))
}

fn side_of(i: usize) -> Side {
    if i == 0 {
        Side::A
    } else {
        Side::B
    }
}

fn logic_version(ok: bool) -> LogicVersion {
    LogicVersion {
        build: if ok {
            env!("CARGO_PKG_VERSION").into()
        } else {
            format!("{}-other", env!("CARGO_PKG_VERSION"))
        },
        time_zone_data: "simulated".into(),
    }
}

/// A brisk mix: calls of a few seconds, so that a run of simulated seconds sees whole calls
/// routed, queued, answered and ended across its faults.
fn load(pg: PgId, seed: u64, calls_per_second: f64) -> LoadParams {
    LoadParams {
        calls_per_second,
        talk_time_mean_ms: 2_000,
        hold_probability: 0.2,
        hold_time_mean_ms: 500,
        wrap_up_mean_ms: 500,
        not_ready_probability: 0.1,
        not_ready_mean_ms: 1_000,
        patience_mean_ms: 3_000,
        ring_time_mean_ms: 300,
        outbound_probability: 0.05,
        pre_route_share: 0.2,
        logged_on_share: 0.9,
        seed,
        pg: Some(pg),
        ..LoadParams::default()
    }
}

pub(crate) fn run(seed: u64, options: &SimOptions) -> SimReport {
    #[cfg(feature = "planted-bugs")]
    plant(options.planted_bug);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut logger_rng = ChaCha8Rng::seed_from_u64(seed ^ loggers::LOGGER_STREAM);
    // Half the runs hold few rows for their loggers, so that a logger down for a second or two
    // makes its side release rows or order a drop decision.
    let logger_rows_max = if logger_rng.random_bool(0.5) {
        logger_rng.random_range(30..400)
    } else {
        tandem_central::logger_feed::LOGGER_BUFFER_ROWS_DEFAULT
    };
    let pg_count = rng.random_range(1..=3usize);
    let cc = generate(&GenerateParams {
        agents: 12 * pg_count as u32,
        skill_groups: 2 * pg_count as u32,
        call_types: 3,
        peripherals: pg_count as u32,
        skill_groups_per_agent_max: 2,
        time_zone: "UTC".into(),
        seed,
    });
    let timers = MdsTimers::default();
    let start_ms = 1_000;
    let mut distributor_rng = ChaCha8Rng::seed_from_u64(seed ^ distributors::DISTRIBUTOR_STREAM);
    let loaded_config = Router::from_contact_center(&cc, start_ms)
        .expect("the generated contact center loads")
        .config_stamp();
    let distributors: Vec<SimDistributor> = (0..distributor_rng.random_range(1..=2))
        .map(|_| SimDistributor::new(&cc, loaded_config, distributor_rng.random_range(0..2)))
        .collect();
    let cc_for_loggers = cc.clone();
    let pgs: Vec<SimPg> = (0..pg_count)
        .map(|i| {
            let id = cc.pgs[i].id;
            let calls_per_second = rng.random_range(2.0..8.0);
            let load = load(id, seed ^ i as u64, calls_per_second);
            let sim = TrafficSim::new(&cc, load.clone(), start_ms);
            let settings = CoreSettings {
                pg: id,
                heartbeat_ms: timers.pg_heartbeat_interval_ms,
                silence_ms_max: timers.pg_heartbeat_interval_ms * timers.pg_heartbeat_misses_max,
                lease_ms: timers.lease_ms,
                flood_inputs_per_s: 0,
                flood_peripheral: None,
                inject_input: None,
            };
            SimPg {
                id,
                core: GatewayCore::new(settings.clone(), sim, start_ms, start_ms),
                paths: [None, None],
                last_connect_ms: 0,
                runs: true,
                paused: false,
                inbox: VecDeque::new(),
                settings,
                load,
                retired: Vec::new(),
            }
        })
        .collect();
    let new_side = || SimSide {
        sync: None,
        router: None,
        outputs: OutputLog::default(),
        logic: logic_version(true),
        started: false,
        paused: false,
        persisted_epoch: Epoch::default(),
        paths: BTreeMap::new(),
        transfer: None,
        transfer_retry_ms: TRANSFER_RETRY_MS_MIN,
        transfer_retry_at_ms: 0,
        last_delivered_seq: 0,
        pg_delivered: BTreeMap::new(),
        history: Vec::new(),
        delivered_count: 0,
        transfers_received: 0,
        inbox: VecDeque::new(),
    };
    let mut world = World {
        now_ms: start_ms,
        rng,
        options: options.clone(),
        cc,
        timers,
        sides: [new_side(), new_side()],
        pgs,
        reach: [vec![true; pg_count], vec![true; pg_count]],
        private_link_up: true,
        connected: false,
        link_generation: 0,
        path_generation: 0,
        extra_latency_ms: 0,
        latency_spike_until_ms: 0,
        clogged: BTreeSet::new(),
        held: BTreeMap::new(),
        queue: BTreeMap::new(),
        link_clock: BTreeMap::new(),
        next_event_no: 0,
        next_nonce: 0,
        delivered_by_seq: BTreeMap::new(),
        digest_by_seq: BTreeMap::new(),
        numbered: BTreeMap::new(),
        answers: BTreeMap::new(),
        answers_after_abandoned: 0,
        digests_due: Vec::new(),
        trace: VecDeque::new(),
        hasher: Xxh3::new(),
        faults: BTreeMap::new(),
        violation: None,
        loggers: [
            SimLogger::new(&cc_for_loggers),
            SimLogger::new(&cc_for_loggers),
        ],
        side_loggers: [
            SideLogger::new(logger_rows_max),
            SideLogger::new(logger_rows_max),
        ],
        logger_rows_max,
        logger_rng,
        pg_rng: ChaCha8Rng::seed_from_u64(seed ^ PG_STREAM),
        pause_rng: ChaCha8Rng::seed_from_u64(seed ^ PAUSE_STREAM),
        aw_db_rng: ChaCha8Rng::seed_from_u64(seed ^ AW_DB_STREAM),
        next_logger_generation: 0,
        drop_decisions: 0,
        side_feeds: Default::default(),
        distributors,
        distributor_rng,
        next_distributor_generation: 0,
        frames_published: BTreeMap::new(),
        admin_rng: ChaCha8Rng::seed_from_u64(seed ^ admin::ADMIN_STREAM),
        next_admin_request: 0,
        config_change_seqs: Vec::new(),
        config_change_abandoned: false,
        initial_config_version: loaded_config.version,
    };
    world.run();
    #[cfg(feature = "planted-bugs")]
    plant(None);
    let stats = |f: fn(&tandem_pg::SimStats) -> u64| -> u64 {
        world
            .pgs
            .iter()
            .map(|pg| f(pg.core.sim().stats()) + pg.retired.iter().map(f).sum::<u64>())
            .sum()
    };
    SimReport {
        seed,
        trace_hash: world.hasher.digest(),
        simulated_ms: world.now_ms - start_ms,
        pgs: pg_count,
        delivered: [
            world.sides[0].delivered_count,
            world.sides[1].delivered_count,
        ],
        transfers: world.sides[0].transfers_received + world.sides[1].transfers_received,
        inputs_sent: world
            .pgs
            .iter()
            .map(|pg| pg.core.counts().inputs_sent)
            .sum(),
        route_requests: stats(|s| s.route_requests_sent),
        route_requests_answered: stats(|s| s.route_requests_answered),
        answers_after_abandoned_history: world.answers_after_abandoned,
        drop_decisions: world.drop_decisions,
        logger_write_failures: world.loggers.iter().map(|l| l.write_failures).sum(),
        logger_gaps_recovered: world.loggers.iter().map(|l| l.gaps_recovered).sum(),
        logger_gaps_held_by_neither: world.loggers.iter().map(|l| l.gaps_held_by_neither).sum(),
        rows_logged: world.rows_logged(),
        distributors: world.distributors.len(),
        config_changes_ordered: world.config_change_seqs.len() as u64,
        config_change_abandoned: world.config_change_abandoned,
        config_changes_applied: world
            .sides
            .iter()
            .filter_map(|s| s.router.as_ref())
            .map(|r| r.config_version())
            .max()
            .unwrap_or(world.initial_config_version)
            - world.initial_config_version,
        distributor_frames: world.distributors.iter().map(|d| d.frames).sum(),
        distributor_snapshots: world.distributors.iter().map(|d| d.snapshots).sum(),
        distributor_subscriptions: world.distributors.iter().map(|d| d.subscriptions).sum(),
        distributor_rebuilds: world.distributors.iter().map(|d| d.rebuilds).sum(),
        aw_db_write_failures: world.distributors.iter().map(|d| d.write_failures).sum(),
        faults: world.faults,
        violation: world.violation,
        trace: world.trace.into(),
    }
}

/// Turns the process-wide planted bugs on or off for this run.
#[cfg(feature = "planted-bugs")]
fn plant(bug: Option<crate::PlantedBug>) {
    use crate::PlantedBug;
    use std::sync::atomic::Ordering;
    tandem_mds::lease::planted::SKIP_EPOCH_CHECK
        .store(bug == Some(PlantedBug::SkipEpochCheck), Ordering::Relaxed);
    tandem_central::pg_link::planted::DROP_OUTPUT_REPLAY
        .store(bug == Some(PlantedBug::DropOutputReplay), Ordering::Relaxed);
}

impl World {
    fn run(&mut self) {
        let start_b_ms = self.now_ms + self.rng.random_range(1..300);
        self.start_side(0, true);
        self.schedule(
            start_b_ms,
            Event::Restart {
                side: 1,
                logic_ok: true,
            },
        );
        let fault_count = self.rng.random_range(0..=6);
        let end_ms = self.now_ms + self.options.duration_ms;
        for _ in 0..fault_count {
            let at = draw_time(&mut self.rng, self.now_ms, end_ms);
            let fault = self.draw_fault();
            self.schedule(at, Event::Fault(fault));
        }
        let logger_fault_count = self.logger_rng.random_range(0..=3);
        for _ in 0..logger_fault_count {
            let at = draw_time(&mut self.logger_rng, self.now_ms, end_ms);
            let side = self.logger_rng.random_range(0..2);
            let for_ms = self.logger_rng.random_range(100..3_000);
            let fault = match self.logger_rng.random_range(0..3) {
                0 => Fault::CrashLogger(side, for_ms),
                1 => Fault::PauseLogger(side, for_ms),
                _ => Fault::DbWriteFailure(side, for_ms),
            };
            self.schedule(at, Event::Fault(fault));
        }
        let config_changes = self
            .admin_rng
            .random_range(0..=admin::CONFIG_CHANGES_PER_RUN_MAX);
        for _ in 0..config_changes {
            let at = draw_time(&mut self.admin_rng, self.now_ms, end_ms);
            self.schedule(at, Event::ConfigChange);
        }
        let distributor_fault_count = self.distributor_rng.random_range(0..=2);
        for _ in 0..distributor_fault_count {
            let at = draw_time(&mut self.distributor_rng, self.now_ms, end_ms);
            let distributor = self
                .distributor_rng
                .random_range(0..self.distributors.len());
            let for_ms = self.distributor_rng.random_range(100..4_000);
            let fault = if self.distributor_rng.random_bool(0.5) {
                Fault::CrashDistributor(distributor, for_ms)
            } else {
                Fault::SlowDistributor(distributor, for_ms)
            };
            self.schedule(at, Event::Fault(fault));
        }
        let (now, pgs, distributors) = (self.now_ms, self.pgs.len(), self.distributors.len());
        let drawn = [
            draw_one_fault(
                &mut self.pg_rng,
                PG_CRASH_PROBABILITY,
                now,
                end_ms,
                pgs,
                3_000,
            )
            .map(|(at, pg, for_ms)| (at, Fault::CrashPg(pg, for_ms))),
            draw_one_fault(
                &mut self.pause_rng,
                PG_PAUSE_PROBABILITY,
                now,
                end_ms,
                pgs,
                3_000,
            )
            .map(|(at, pg, for_ms)| (at, Fault::PausePg(pg, for_ms))),
            draw_one_fault(
                &mut self.pause_rng,
                DISTRIBUTOR_PAUSE_PROBABILITY,
                now,
                end_ms,
                distributors,
                4_000,
            )
            .map(|(at, d, for_ms)| (at, Fault::PauseDistributor(d, for_ms))),
            draw_one_fault(
                &mut self.aw_db_rng,
                AW_DB_WRITE_FAILURE_PROBABILITY,
                now,
                end_ms,
                distributors,
                3_000,
            )
            .map(|(at, d, for_ms)| (at, Fault::AwDbWriteFailure(d, for_ms))),
        ];
        for (at, fault) in drawn.into_iter().flatten() {
            self.schedule(at, Event::Fault(fault));
        }
        while self.now_ms < end_ms && self.violation.is_none() {
            self.step();
        }
        if self.violation.is_some() {
            return;
        }
        self.heal();
        let quiet_end = self.now_ms + QUIET_TAIL_MS;
        let drain_at = quiet_end - DRAIN_MS;
        while self.now_ms < quiet_end && self.violation.is_none() {
            if self.now_ms == drain_at {
                self.trace_line("PGs drain".into());
                for pg in &mut self.pgs {
                    pg.core.drain();
                }
            }
            self.step();
        }
        if self.violation.is_none() && self.options.check_liveness {
            self.check_end();
        }
    }

    /// Heals every fault: resumes and restarts the sides (with their own logic version), heals
    /// every link and unclogs them.
    fn heal(&mut self) {
        self.trace_line("heal everything".into());
        let scheduled: Vec<(u64, u64)> = self
            .queue
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Fault(_)
                        | Event::Restart { .. }
                        | Event::Clog(_)
                        | Event::Unclog(_)
                        | Event::LoggerRestart(_)
                        | Event::LoggerResume(_)
                        | Event::DbHasRoom(_)
                        | Event::DistributorRestart(_)
                        | Event::DistributorResume(_)
                        | Event::AwDbTakesWrites(_)
                        | Event::PgRestart(_)
                        | Event::PgResume(_)
                )
            })
            .map(|(k, _)| *k)
            .collect();
        for key in scheduled {
            self.queue.remove(&key);
        }
        for link in std::mem::take(&mut self.clogged) {
            self.unclog(link);
        }
        for side in 0..2 {
            if self.sides[side].paused {
                self.resume(side);
            }
            if self.sides[side].sync.is_none() || self.sides[side].logic != logic_version(true) {
                self.crash(side);
                self.start_side(side, true);
            }
            for pg in 0..self.pgs.len() {
                self.set_reach(side, pg, true);
            }
        }
        self.set_private_link(true);
        self.extra_latency_ms = 0;
        for side in 0..2 {
            if self.loggers[side].paused {
                self.resume_logger(side);
            }
            self.restart_logger(side);
            self.set_db_capped(side, false);
        }
        for distributor in 0..self.distributors.len() {
            self.distributors[distributor].slow_until_ms = 0;
            self.resume_distributor(distributor);
            self.restart_distributor(distributor);
            self.set_aw_db_refuses_writes(distributor, false);
        }
        for pg in 0..self.pgs.len() {
            self.resume_pg(pg);
            self.restart_pg(pg);
        }
    }

    fn draw_fault(&mut self) -> Fault {
        let side = self.rng.random_range(0..2);
        match self.rng.random_range(0..10) {
            0 => Fault::CutPrivateLinkSilently,
            1 => Fault::ResetPrivateLink,
            2 => Fault::HealPrivateLink,
            3 => Fault::Pause(side, self.rng.random_range(100..2_500)),
            4 => Fault::Crash(side, self.rng.random_range(200..3_000)),
            5 => Fault::CrashDuringTransfer(
                self.rng.random_bool(0.5),
                self.rng.random_range(200..2_000),
            ),
            6 => Fault::VersionMismatch(side, self.rng.random_range(500..3_000)),
            7 => Fault::CutPgLink(
                side,
                self.rng.random_range(0..self.pgs.len()),
                self.rng.random_range(100..3_000),
            ),
            8 => Fault::LatencySpike(self.rng.random_range(5..60)),
            _ => Fault::Swizzle(self.rng.random_range(20..200)),
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
            self.drain_sides();
        }
        if now.is_multiple_of(PEER_CONNECT_MS) {
            self.connect_private_link();
        }
        self.connect_pg_paths();
        for side in 0..2 {
            if self.runs(side) {
                self.sync_mut(side).tick(now);
                self.side_tick(side);
                if now.is_multiple_of(loggers::SIDE_LOGGER_TICK_MS) {
                    self.tell_logger_progress(side);
                    self.send_logger_batches(side, true);
                }
            }
        }
        self.drain_sides();
        for side in 0..2 {
            self.logger_tick(side);
        }
        for distributor in 0..self.distributors.len() {
            self.distributor_tick(distributor);
        }
        for pg in 0..self.pgs.len() {
            if self.pg_runs(pg) {
                self.pgs[pg].core.tick(now);
                self.carry_out_pg(pg);
            }
        }
        self.drain_sides();
        self.check_step();
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.next_event_no += 1;
        self.queue.insert((at_ms, self.next_event_no), event);
    }

    /// Whether `link` carries bytes (it may still be clogged).
    fn link_up(&self, (kind, from, to): LinkId) -> bool {
        match kind {
            LINK_PEER => self.private_link_up,
            LINK_SIDE_TO_PG => self.reach[from][to],
            LINK_PG_TO_SIDE => self.reach[to][from],
            // A side and its logger share their site's network.
            _ => true,
        }
    }

    /// Sends over `link` with a latency, keeping the link FIFO; a cut or clogged link holds
    /// what is sent until it carries bytes again.
    fn send(&mut self, link: LinkId, event: Event) {
        if self.clogged.contains(&link) || !self.link_up(link) {
            self.held.entry(link).or_default().push_back(event);
            return;
        }
        let latency = self.rng.random_range(0..=2) + self.extra_latency_ms;
        let earliest = self.link_clock.get(&link).copied().unwrap_or(0);
        let at = (self.now_ms + latency).max(earliest);
        self.link_clock.insert(link, at);
        self.schedule(at, event);
    }

    fn unclog(&mut self, link: LinkId) {
        self.clogged.remove(&link);
        self.release(link);
    }

    /// Sends on what `link` held, once it carries bytes and is not clogged.
    fn release(&mut self, link: LinkId) {
        if self.clogged.contains(&link) || !self.link_up(link) {
            return;
        }
        for event in self.held.remove(&link).unwrap_or_default() {
            self.send(link, event);
        }
    }

    fn set_reach(&mut self, side: usize, pg: usize, up: bool) {
        self.reach[side][pg] = up;
        self.release((LINK_SIDE_TO_PG, side, pg));
        self.release((LINK_PG_TO_SIDE, pg, side));
    }

    fn set_private_link(&mut self, up: bool) {
        self.private_link_up = up;
        self.release((LINK_PEER, 0, 1));
        self.release((LINK_PEER, 1, 0));
    }

    /// Whether the PG's process runs and is not stopped.
    fn pg_runs(&self, pg: usize) -> bool {
        self.pgs[pg].runs && !self.pgs[pg].paused
    }

    fn runs(&self, side: usize) -> bool {
        self.sides[side].sync.is_some() && !self.sides[side].paused
    }

    /// The side runs and holds no state yet: it takes its peer's.
    fn needs_state(&self, side: usize) -> bool {
        self.sides[side]
            .sync
            .as_ref()
            .is_some_and(Synchronizer::needs_state)
    }

    fn sync_mut(&mut self, side: usize) -> &mut Synchronizer {
        self.sides[side].sync.as_mut().expect("a running side")
    }

    // ----- events -----

    fn handle(&mut self, event: Event) {
        match event {
            Event::Peer { to, .. }
            | Event::ToSide { side: to, .. }
            | Event::SidePathReset { side: to, .. }
            | Event::TransferArrived { receiver: to, .. }
                if self.sides[to].paused =>
            {
                // A paused process's socket buffers the bytes until it resumes.
                self.sides[to].inbox.push_back(event);
            }
            Event::TransferSession { source, .. } if self.sides[source].paused => {
                self.sides[source].inbox.push_back(event);
            }
            Event::ToPg { pg, .. } | Event::PgPathReset { pg, .. } if self.pgs[pg].paused => {
                self.pgs[pg].inbox.push_back(event);
            }
            Event::DistributorLinkReset {
                distributor,
                to_distributor: true,
                ..
            } if self.distributors[distributor].paused => {
                self.distributors[distributor].held.push_back(event);
            }
            Event::DistributorHello { side, .. }
            | Event::DistributorLinkReset {
                side,
                to_distributor: false,
                ..
            } if self.sides[side].paused => {
                self.sides[side].inbox.push_back(event);
            }
            Event::ToDistributor {
                distributor,
                generation,
                bytes,
            } => self.distributor_hears(distributor, generation, bytes),
            Event::DistributorHello {
                side,
                distributor,
                generation,
                position,
            } => self.side_hears_distributor_hello(side, distributor, generation, position),
            Event::DistributorLinkReset {
                side,
                distributor,
                generation,
                to_distributor,
            } => self.distributor_link_reset(side, distributor, generation, to_distributor),
            Event::DistributorRestart(distributor) => self.restart_distributor(distributor),
            Event::DistributorResume(distributor) => self.resume_distributor(distributor),
            Event::AwDbTakesWrites(distributor) => {
                self.set_aw_db_refuses_writes(distributor, false);
            }
            Event::PgRestart(pg) => self.restart_pg(pg),
            Event::PgResume(pg) => self.resume_pg(pg),
            Event::ConfigChange => self.submit_config_change(),
            Event::LoggerHello { side, .. }
            | Event::FromLogger { side, .. }
            | Event::LoggerLinkReset {
                side,
                to_logger: false,
                ..
            } if self.sides[side].paused => {
                self.sides[side].inbox.push_back(event);
            }
            Event::ToLogger { side, .. }
            | Event::LoggerLinkReset {
                side,
                to_logger: true,
                ..
            } if self.loggers[side].paused => {
                self.loggers[side].inbox.push_back(event);
            }
            Event::ToLogger {
                side,
                generation,
                message,
            } => self.logger_hears_side(side, generation, message),
            Event::LoggerHello {
                side,
                generation,
                committed_through,
                config_version,
            } => self.side_hears_logger_hello(side, generation, committed_through, config_version),
            Event::FromLogger {
                side,
                generation,
                message,
            } => self.side_hears_logger(side, generation, message),
            Event::LoggerLinkReset {
                side,
                generation,
                to_logger,
            } => {
                if to_logger {
                    self.logger_link_reset(side, generation);
                } else if self.runs(side) && self.side_loggers[side].link == Some(generation) {
                    self.side_closes_logger(side, false);
                }
            }
            Event::LoggerRestart(side) => self.restart_logger(side),
            Event::LoggerResume(side) => self.resume_logger(side),
            Event::DbHasRoom(side) => self.set_db_capped(side, false),
            Event::Peer {
                to,
                generation,
                message,
            } => {
                if generation == self.link_generation && self.runs(to) {
                    let now = self.now_ms;
                    self.sync_mut(to).on_peer_message(now, message);
                }
            }
            Event::ToSide {
                side,
                pg,
                generation,
                message,
            } => self.side_hears_pg(side, pg, generation, message),
            Event::SidePathReset {
                side,
                pg,
                generation,
            } => {
                if self.sides[side]
                    .paths
                    .get(&pg)
                    .is_some_and(|p| p.generation == generation)
                {
                    self.side_drops_path(side, pg, false);
                }
            }
            Event::ToPg {
                pg,
                side,
                generation,
                message,
            } => self.pg_hears_side(pg, side, generation, message),
            Event::PgPathReset {
                pg,
                side,
                generation,
            } => {
                if self.pgs[pg].paths[side] == Some(generation) {
                    self.trace_line(format!("PG {pg} path to {} reset", side_of(side)));
                    self.pgs[pg].paths[side] = None;
                    let now = self.now_ms;
                    self.pgs[pg].core.on_path_down(now, side_of(side));
                    self.carry_out_pg(pg);
                }
            }
            Event::TransferSession { source, nonce } => self.transfer_session(source, nonce),
            Event::TransferArrived {
                receiver,
                nonce,
                cut,
                records,
                side_data,
                history,
            } => self.transfer_arrived(receiver, nonce, cut, records, side_data, history),
            Event::Resume(side) => self.resume(side),
            Event::Restart { side, logic_ok } => {
                if self.sides[side].sync.is_none() {
                    self.start_side(side, logic_ok);
                }
            }
            Event::HealPgLink(side, pg) => self.set_reach(side, pg, true),
            Event::Clog(link) => {
                self.clogged.insert(link);
            }
            Event::Unclog(link) => self.unclog(link),
            Event::Fault(fault) => self.inject(fault),
        }
    }

    fn inject(&mut self, fault: Fault) {
        *self.faults.entry(fault.kind()).or_default() += 1;
        self.trace_line(format!("fault: {fault:?}"));
        let now = self.now_ms;
        match fault {
            Fault::CutPrivateLinkSilently => self.set_private_link(false),
            Fault::ResetPrivateLink => {
                self.set_private_link(false);
                self.disconnect(None);
            }
            Fault::HealPrivateLink => self.set_private_link(true),
            Fault::Pause(side, for_ms) => {
                if self.runs(side) {
                    self.sides[side].paused = true;
                    self.schedule(now + for_ms, Event::Resume(side));
                }
            }
            Fault::Crash(side, restart_after_ms) => self.crash_and_restart(side, restart_after_ms),
            Fault::CrashDuringTransfer(receiver, restart_after_ms) => {
                let under_way = (0..2).find(|&s| {
                    matches!(self.sides[s].transfer, Some(TransferRole::Serving { .. }))
                });
                if let Some(source) = under_way {
                    let side = if receiver { 1 - source } else { source };
                    self.crash_and_restart(side, restart_after_ms);
                }
            }
            Fault::VersionMismatch(side, for_ms) => {
                if self.may_crash(side) {
                    self.crash(side);
                    self.start_side(side, false);
                    self.schedule(now + for_ms, Event::Fault(Fault::Crash(side, 50)));
                }
            }
            Fault::CutPgLink(side, pg, for_ms) => {
                if self.reach[side][pg] {
                    self.set_reach(side, pg, false);
                    self.schedule(now + for_ms, Event::HealPgLink(side, pg));
                }
            }
            Fault::CrashLogger(side, for_ms) => {
                self.crash_logger(side);
                self.schedule(now + for_ms, Event::LoggerRestart(side));
            }
            Fault::PauseLogger(side, for_ms) => {
                if self.loggers[side].runs && !self.loggers[side].paused {
                    self.loggers[side].paused = true;
                    self.schedule(now + for_ms, Event::LoggerResume(side));
                }
            }
            Fault::DbWriteFailure(side, for_ms) => {
                self.set_db_capped(side, true);
                self.schedule(now + for_ms, Event::DbHasRoom(side));
            }
            Fault::CrashDistributor(distributor, for_ms) => {
                self.crash_distributor(distributor);
                self.schedule(now + for_ms, Event::DistributorRestart(distributor));
            }
            Fault::SlowDistributor(distributor, for_ms) => {
                self.slow_distributor(distributor, for_ms);
            }
            Fault::CrashPg(pg, for_ms) => {
                self.crash_pg(pg);
                self.schedule(now + for_ms, Event::PgRestart(pg));
            }
            Fault::PausePg(pg, for_ms) => {
                if self.pg_runs(pg) {
                    self.trace_line(format!("PG {pg} stops"));
                    self.pgs[pg].paused = true;
                    self.schedule(now + for_ms, Event::PgResume(pg));
                }
            }
            Fault::PauseDistributor(distributor, for_ms) => {
                self.pause_distributor(distributor, for_ms);
            }
            Fault::AwDbWriteFailure(distributor, for_ms) => {
                self.set_aw_db_refuses_writes(distributor, true);
                self.schedule(now + for_ms, Event::AwDbTakesWrites(distributor));
            }
            Fault::LatencySpike(extra_ms) => {
                self.extra_latency_ms = extra_ms;
                self.latency_spike_until_ms = now + 500;
            }
            Fault::Swizzle(gap_ms) => {
                let mut links: Vec<LinkId> = vec![(LINK_PEER, 0, 1), (LINK_PEER, 1, 0)];
                for pg in 0..self.pgs.len() {
                    for side in 0..2 {
                        links.push((LINK_SIDE_TO_PG, side, pg));
                        links.push((LINK_PG_TO_SIDE, pg, side));
                    }
                }
                let count = links.len();
                for (i, link) in links.iter().enumerate() {
                    self.schedule(now + i as u64 * gap_ms, Event::Clog(*link));
                }
                let unclog_from = now + count as u64 * gap_ms;
                while !links.is_empty() {
                    let link = links.remove(self.rng.random_range(0..links.len()));
                    let at = unclog_from + links.len() as u64 * gap_ms;
                    self.schedule(at, Event::Unclog(link));
                }
                // The feed's links, from the distributors' own random stream.
                for link in self.distributor_links() {
                    let clog_at = now + self.distributor_rng.random_range(0..count as u64) * gap_ms;
                    let unclog_at =
                        unclog_from + self.distributor_rng.random_range(0..count as u64) * gap_ms;
                    self.schedule(clog_at, Event::Clog(link));
                    self.schedule(unclog_at, Event::Unclog(link));
                }
            }
        }
    }

    /// Crashes `side`, if it may, and starts it again after `restart_after_ms`.
    fn crash_and_restart(&mut self, side: usize, restart_after_ms: u64) {
        if self.may_crash(side) {
            self.crash(side);
            let at = self.now_ms + restart_after_ms;
            self.schedule(
                at,
                Event::Restart {
                    side,
                    logic_ok: true,
                },
            );
        }
    }

    /// A crash while the other side holds no state would lose both sides' state, which only
    /// the logger's cold start recovers: the simulation leaves that double failure out.
    fn may_crash(&self, side: usize) -> bool {
        let other_holds_state = self.sides[1 - side]
            .sync
            .as_ref()
            .is_some_and(|sync| !sync.needs_state())
            && self.sides[1 - side].logic == logic_version(true);
        self.sides[side].sync.is_some() && other_holds_state
    }

    /// The side's process dies: its connections reset, its state is gone.
    fn crash(&mut self, side: usize) {
        if self.sides[side].sync.is_none() {
            return;
        }
        self.trace_line(format!("side {} down", side_of(side)));
        let slot = &mut self.sides[side];
        slot.sync = None;
        slot.router = None;
        slot.paused = false;
        slot.transfer = None;
        // A connection whose hello the paused process never read resets with it too.
        let unread: Vec<Event> = slot.inbox.drain(..).collect();
        let slot = &mut self.sides[side];
        let paths: Vec<(usize, u64)> = slot
            .paths
            .iter()
            .map(|(&pg, p)| (pg, p.generation))
            .collect();
        slot.paths.clear();
        for event in unread {
            match event {
                Event::LoggerHello { generation, .. } => {
                    self.reset_logger_link(side, generation, true);
                }
                Event::DistributorHello {
                    distributor,
                    generation,
                    ..
                } => self.reset_distributor_link(side, distributor, generation, true),
                _ => {}
            }
        }
        self.side_closes_logger(side, true);
        self.side_feed_ends(side);
        for (pg, generation) in paths {
            self.send(
                (LINK_SIDE_TO_PG, side, pg),
                Event::PgPathReset {
                    pg,
                    side,
                    generation,
                },
            );
        }
        self.disconnect(Some(1 - side));
    }

    /// Starts (or restarts) a side. A side that ran before lost its state with its process and
    /// takes its peer's; one starting for the first time builds its state from configuration.
    fn start_side(&mut self, side: usize, logic_ok: bool) {
        let now = self.now_ms;
        let needs_state = self.sides[side].started;
        let logic = logic_version(logic_ok);
        let pg_ids: BTreeSet<PgId> = self.pgs.iter().map(|pg| pg.id).collect();
        let mut settings = SyncSettings::new(side_of(side), logic.clone(), pg_ids);
        settings.heartbeat_interval_ms = self.timers.heartbeat_interval_ms;
        settings.heartbeat_misses_max = self.timers.heartbeat_misses_max;
        settings.tick_interval_ms = self.timers.tick_interval_ms;
        settings.lease_ms = self.timers.lease_ms;
        settings.digest_check_interval_ms = DIGEST_CHECK_INTERVAL_MS;
        #[cfg(feature = "planted-bugs")]
        {
            use tandem_mds::sync::PlantedBug as SyncBug;
            settings.planted_bug = match self.options.planted_bug {
                Some(crate::PlantedBug::DeliverBeforeBothHold) => {
                    Some(SyncBug::DeliverBeforeBothHold)
                }
                Some(crate::PlantedBug::IgnoreLeaseExpiry) => Some(SyncBug::IgnoreLeaseExpiry),
                _ => None,
            };
        }
        let epoch = self.sides[side].persisted_epoch;
        let mut sync = Synchronizer::new(settings, epoch, 0, now, needs_state, now)
            .expect("the simulation's settings are valid");
        let router = if needs_state {
            Router::new(self.cc.settings.clone(), now)
        } else {
            Router::from_contact_center(&self.cc, now)
        }
        .expect("the generated contact center loads");
        if !needs_state {
            sync.set_built_from_configuration(router.config_version());
        }
        let mut router = router;
        self.side_feed_ends(side);
        self.side_feeds[side].attach(&mut router);
        let slot = &mut self.sides[side];
        slot.sync = Some(sync);
        slot.router = Some(router);
        slot.outputs = OutputLog {
            generation: now,
            ..OutputLog::default()
        };
        slot.logic = logic;
        slot.started = true;
        slot.paused = false;
        slot.transfer = None;
        slot.transfer_retry_ms = TRANSFER_RETRY_MS_MIN;
        slot.transfer_retry_at_ms = 0;
        slot.last_delivered_seq = 0;
        slot.pg_delivered.clear();
        slot.history.clear();
        self.side_loggers[side] = SideLogger::new(self.logger_rows_max);
        // A started process marks itself as having run: a restart takes its peer's state.
        slot.persisted_epoch = epoch;
        self.trace_line(format!(
            "start side {} (needs state: {needs_state}, logic {})",
            side_of(side),
            self.sides[side].logic
        ));
    }

    fn resume(&mut self, side: usize) {
        self.sides[side].paused = false;
        self.trace_line(format!("resume side {}", side_of(side)));
        let now = self.now_ms;
        // A woken process notices what its timers say before it reads its sockets.
        if self.runs(side) {
            self.sync_mut(side).tick(now);
        }
        while let Some(event) = self.sides[side].inbox.pop_front() {
            self.handle(event);
            if !self.runs(side) {
                break;
            }
        }
    }

    // ----- the private link -----

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
            // A new connection ends any transfer of the old one.
            self.sides[side].transfer = None;
            self.side_loggers[side].progress_told = None;
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
                if matches!(
                    self.sides[side].transfer,
                    Some(TransferRole::Serving { .. })
                ) {
                    self.sides[side].transfer = None;
                }
                self.sync_mut(side).peer_link_down(now);
                self.peer_logger_progress(side, None);
            }
        }
    }

    // ----- PG paths -----

    /// The PG's process dies: its paths reset, what it had not sent or had sent unacknowledged
    /// is gone with it (its peripherals, re-reported by the next process, say what became of
    /// their calls).
    fn crash_pg(&mut self, pg: usize) {
        if !self.pgs[pg].runs {
            return;
        }
        self.trace_line(format!("PG {pg} down"));
        self.pgs[pg].runs = false;
        self.pgs[pg].paused = false;
        self.pgs[pg].inbox.clear();
        for side in 0..2 {
            self.pg_closes_path(pg, side);
        }
    }

    /// The PG closes its path to `side`, if it has one; the side sees the reset.
    fn pg_closes_path(&mut self, pg: usize, side: usize) {
        if let Some(generation) = self.pgs[pg].paths[side].take() {
            self.send(
                (LINK_PG_TO_SIDE, pg, side),
                Event::SidePathReset {
                    side,
                    pg,
                    generation,
                },
            );
        }
    }

    /// The PG's process starts again: a new incarnation (its start time, as `tandem pg` takes
    /// for its inputs; its route request keys take the next `pg_incarnation`),
    /// whose simulated peripherals go their own way from a new seed, and whose route requests
    /// are numbered from 1 under a new `pg_incarnation`.
    fn restart_pg(&mut self, pg: usize) {
        if self.pgs[pg].runs {
            return;
        }
        let now = self.now_ms;
        let slot = &mut self.pgs[pg];
        slot.load.pg_incarnation += 1;
        slot.load.seed = slot.load.seed.rotate_left(17) ^ now;
        let sim = TrafficSim::new(&self.cc, slot.load.clone(), now);
        let old = std::mem::replace(
            &mut slot.core,
            GatewayCore::new(slot.settings.clone(), sim, now, now),
        );
        slot.retired.push(old.sim().stats().clone());
        slot.runs = true;
        slot.last_connect_ms = 0;
        self.trace_line(format!("PG {pg} starts again, incarnation {now}"));
    }

    /// The PG's process goes on: its timers first (a path silent meanwhile closes), then what
    /// its sockets buffered, in order.
    fn resume_pg(&mut self, pg: usize) {
        if !self.pgs[pg].paused {
            return;
        }
        self.pgs[pg].paused = false;
        self.trace_line(format!("PG {pg} goes on"));
        let now = self.now_ms;
        self.pgs[pg].core.tick(now);
        self.carry_out_pg(pg);
        while let Some(event) = self.pgs[pg].inbox.pop_front() {
            self.handle(event);
        }
    }

    /// Each PG connects a path that is down every `PG_RECONNECT_MS`, when the side runs and
    /// the link carries bytes; the side says Welcome.
    fn connect_pg_paths(&mut self) {
        let now = self.now_ms;
        for pg in 0..self.pgs.len() {
            if !self.pg_runs(pg) || now < self.pgs[pg].last_connect_ms + PG_RECONNECT_MS {
                continue;
            }
            self.pgs[pg].last_connect_ms = now;
            for side in 0..2 {
                if self.pgs[pg].paths[side].is_some() || !self.reach[side][pg] || !self.runs(side) {
                    continue;
                }
                if self.sides[side].paths.contains_key(&pg) {
                    // The side still holds the old path: it will notice its silence.
                    continue;
                }
                self.path_generation += 1;
                let generation = self.path_generation;
                self.trace_line(format!("PG {pg} path to {} connected", side_of(side)));
                self.pgs[pg].paths[side] = Some(generation);
                self.pgs[pg].core.on_path_up(now, side_of(side));
                self.sides[side].paths.insert(
                    pg,
                    SidePath {
                        generation,
                        active: false,
                        last_heard_ms: now,
                        last_sent_ms: now,
                    },
                );
                let id = self.pgs[pg].id;
                self.sync_mut(side).pg_reachable(now, id, true);
                self.send_to_pg(
                    side,
                    pg,
                    SideToPg::Welcome {
                        side: side_of(side),
                    },
                );
                self.carry_out_pg(pg);
            }
        }
    }

    fn send_to_pg(&mut self, side: usize, pg: usize, message: SideToPg) {
        let Some(path) = self.sides[side].paths.get(&pg) else {
            return;
        };
        let generation = path.generation;
        self.send(
            (LINK_SIDE_TO_PG, side, pg),
            Event::ToPg {
                pg,
                side,
                generation,
                message,
            },
        );
    }

    /// The side's timers for its PG paths: heartbeats, and closing a silent path.
    fn side_tick(&mut self, side: usize) {
        let now = self.now_ms;
        let interval = self.timers.pg_heartbeat_interval_ms;
        let silence_max = interval * self.timers.pg_heartbeat_misses_max;
        let paths: Vec<(usize, SidePath)> = self.sides[side]
            .paths
            .iter()
            .map(|(&pg, p)| (pg, *p))
            .collect();
        for (pg, path) in paths {
            if now > path.last_heard_ms + silence_max {
                self.trace_line(format!("side {} closes silent PG {pg} path", side_of(side)));
                self.side_drops_path(side, pg, true);
            } else if now >= path.last_sent_ms + interval {
                if let Some(p) = self.sides[side].paths.get_mut(&pg) {
                    p.last_sent_ms = now;
                }
                self.send_to_pg(side, pg, SideToPg::Heartbeat);
            }
        }
        self.transfer_tick(side);
    }

    /// The side closes its path to `pg` (telling the PG, if `tell`).
    fn side_drops_path(&mut self, side: usize, pg: usize, tell: bool) {
        let Some(path) = self.sides[side].paths.remove(&pg) else {
            return;
        };
        if tell {
            self.send(
                (LINK_SIDE_TO_PG, side, pg),
                Event::PgPathReset {
                    pg,
                    side,
                    generation: path.generation,
                },
            );
        }
        if self.runs(side) {
            let now = self.now_ms;
            let id = self.pgs[pg].id;
            self.sync_mut(side).pg_reachable(now, id, false);
        }
    }

    fn side_hears_pg(&mut self, side: usize, pg: usize, generation: u64, message: PgToSide) {
        if !self.runs(side) {
            return;
        }
        let Some(path) = self.sides[side].paths.get_mut(&pg) else {
            return;
        };
        if path.generation != generation {
            return;
        }
        path.last_heard_ms = self.now_ms;
        let now = self.now_ms;
        let id = self.pgs[pg].id;
        let slot = &mut self.sides[side];
        let sync = slot.sync.as_mut().expect("running");
        match pg_link::on_pg_message(sync, &slot.outputs, now, id, message) {
            PathChange::None => {}
            PathChange::Idle => {
                if let Some(path) = slot.paths.get_mut(&pg) {
                    path.active = false;
                }
                self.trace_line(format!("PG {pg} path to {} idle", side_of(side)));
            }
            PathChange::Active { replay, .. } => {
                if let Some(path) = slot.paths.get_mut(&pg) {
                    path.active = true;
                }
                self.trace_line(format!(
                    "PG {pg} path to {} active: {} outputs replayed",
                    side_of(side),
                    replay.len()
                ));
                for message in replay {
                    self.send_to_pg(side, pg, message);
                }
            }
        }
    }

    fn pg_hears_side(&mut self, pg: usize, side: usize, generation: u64, message: SideToPg) {
        if self.pgs[pg].paths[side] != Some(generation) {
            return;
        }
        let now = self.now_ms;
        let taken = match &message {
            SideToPg::Output {
                generation,
                id,
                output,
                ..
            } => {
                let answered = match output {
                    Output::RouteResponse {
                        key, repeat: false, ..
                    } => Some(*key),
                    _ => None,
                };
                Some((*generation, *id, xxh3_64(&output_bytes(output)), answered))
            }
            _ => None,
        };
        let before = self.pgs[pg].core.last_output();
        self.pgs[pg].core.on_message(now, side_of(side), message);
        if let Some((generation, output_id, hash, answered)) = taken {
            let core = &self.pgs[pg].core;
            if core.last_output() == output_id && output_id != before {
                let id = self.pgs[pg].id;
                match self.numbered.get(&(generation, id, output_id)).copied() {
                    Some((numbered, _)) if numbered != hash => self.violate(
                        "a PG took an output other than the one the sides numbered alike",
                        format!(
                            "PG {id} output {output_id} of generation {generation} from side {}",
                            side_of(side)
                        ),
                    ),
                    Some((_, seq)) => {
                        // An answer to a request of the PG's earlier process, replayed to this
                        // one, answers no request of its own (it ignores it).
                        let own = |key: &RouteRequestKey| {
                            key.pg_incarnation == self.pgs[pg].load.pg_incarnation
                        };
                        if let Some(key) = answered.filter(own) {
                            self.check_answer(side, id, key, seq);
                        }
                    }
                    None => {}
                }
            }
        }
        self.carry_out_pg(pg);
    }

    fn carry_out_pg(&mut self, pg: usize) {
        while let Some(effect) = self.pgs[pg].core.poll() {
            match effect {
                PgEffect::Send { side, message } => {
                    let side = side_index(side);
                    let Some(generation) = self.pgs[pg].paths[side] else {
                        continue;
                    };
                    self.send(
                        (LINK_PG_TO_SIDE, pg, side),
                        Event::ToSide {
                            side,
                            pg,
                            generation,
                            message,
                        },
                    );
                }
                PgEffect::Close(side) => {
                    let side = side_index(side);
                    if self.pgs[pg].paths[side].is_some() {
                        self.trace_line(format!("PG {pg} closes silent path to {}", side_of(side)));
                        self.pg_closes_path(pg, side);
                    }
                }
                PgEffect::RouteRequestSent(_)
                | PgEffect::RouteRequestAnswered(_)
                | PgEffect::RouteRequestEnded(_) => {}
            }
        }
    }

    // ----- the sides' actions -----

    /// Carries out what the sides asked for.
    fn drain_sides(&mut self) {
        loop {
            let mut more = false;
            for side in 0..2 {
                while self.runs(side) {
                    let Some(action) = self.sync_mut(side).poll() else {
                        break;
                    };
                    self.carry_out(side, action);
                }
                if self.runs(side) && self.side_logger_work(side) {
                    more = true;
                }
            }
            if self.digests_due.is_empty() {
                if more {
                    continue;
                }
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
        if !matches!(
            action,
            Action::SendPeer(PeerMessage::Heartbeat { .. }) | Action::Deliver(_)
        ) {
            self.trace_line(format!("{} {}", side_of(side), describe(&action)));
        }
        if let Some((address, message)) = pg_link::to_pgs(&action) {
            let pgs: Vec<usize> = self.sides[side].paths.keys().copied().collect();
            for pg in pgs {
                if address == PgAddress::Every || address == PgAddress::Pg(self.pgs[pg].id) {
                    self.send_to_pg(side, pg, message.clone());
                }
            }
            return;
        }
        match action {
            Action::SendPeer(message) => {
                if self.connected {
                    let generation = self.link_generation;
                    self.send(
                        (LINK_PEER, side, 1 - side),
                        Event::Peer {
                            to: 1 - side,
                            generation,
                            message,
                        },
                    );
                }
            }
            Action::ClosePeer { .. } => self.disconnect(Some(1 - side)),
            Action::Deliver(ordered) => self.deliver(side, ordered),
            Action::PersistEpoch(epoch) => self.sides[side].persisted_epoch = epoch,
            Action::StateTransferWanted { .. } => {
                let slot = &mut self.sides[side];
                slot.transfer_retry_at_ms = 0;
                slot.transfer_retry_ms = TRANSFER_RETRY_MS_MIN;
            }
            Action::TransferRequested(request) => self.on_transfer_requested(side, request),
            Action::PeerLoggerProgress {
                connected,
                committed_through,
            } => self.peer_logger_progress(
                side,
                Some(tandem_central::logger_feed::PeerLogger {
                    connected,
                    committed_through,
                }),
            ),
            Action::Event(SyncEvent::TransferBufferOverflow { .. }) => self.transfer_failed(side),
            Action::Event(SyncEvent::DigestMismatch { seq, .. }) => self.violate(
                "a DigestCheck found different states",
                format!("side {} at {seq}", side_of(side)),
            ),
            Action::Event(_) => {}
            Action::AckPg { .. }
            | Action::ResendFrom { .. }
            | Action::RefuseInput { .. }
            | Action::RequestLease { .. }
            | Action::TestOtherSide => unreachable!("PG actions are carried out above"),
        }
    }

    /// Applies an ordered message to the side's router, as the side process does, and checks
    /// it against what every side delivered.
    fn deliver(&mut self, side: usize, ordered: Ordered) {
        let hash = xxh3_64(&postcard::to_stdvec(&ordered).expect("an ordered message serializes"));
        if !self.check_delivered(side, &ordered, hash) {
            return;
        }
        let slot = &mut self.sides[side];
        slot.delivered_count += 1;
        let range = tandem_mds::seq_epoch_range(ordered.seq);
        match slot.history.last_mut() {
            Some((last_range, last)) if *last_range == range => *last = ordered.seq,
            _ => slot.history.push((range, ordered.seq)),
        }
        let router = slot.router.as_mut().expect("a running side has a router");
        match ordered.body {
            Body::Input { input, .. } => {
                let input = OrderedInput {
                    time_ms: ordered.time_ms,
                    input,
                };
                let mut outputs = Vec::new();
                router.apply_into(ordered.seq, &input, &mut outputs);
                let sorted =
                    apply::sort_outputs(ordered.seq, &input, &mut outputs, &mut slot.outputs);
                let generation = slot.outputs.generation;
                if let (Some(ConfigResult::Applied { config_version }), Some(config)) =
                    (&sorted.config_result, &sorted.logged.config)
                {
                    self.side_feeds[side].config_applied(VersionedConfigChange {
                        config_version: *config_version,
                        recovery_key: ordered.seq,
                        change: config.change.clone(),
                    });
                }
                if matches!(input.input, Input::TimeTick) {
                    self.feed_tick(side, ordered.seq, ordered.epoch.number);
                }
                self.side_loggers[side]
                    .feed
                    .delivered(ordered.seq, Some(sorted.logged));
                for numbered in sorted.pg_outputs {
                    let hash = xxh3_64(&output_bytes(&numbered.output));
                    let key = (generation, numbered.pg, numbered.id);
                    match self.numbered.get(&key).map(|&(first, _)| first) {
                        Some(first) if first != hash => {
                            self.violate(
                                "two sides numbered different outputs alike",
                                format!(
                                    "side {} output {} for PG {} at {}",
                                    side_of(side),
                                    numbered.id,
                                    numbered.pg,
                                    ordered.seq
                                ),
                            );
                            return;
                        }
                        Some(_) => {}
                        None => {
                            if self.numbered.len() < NUMBERED_OUTPUTS_KEPT_MAX {
                                self.numbered.insert(key, (hash, ordered.seq));
                            }
                        }
                    }
                    let Some(pg) = self.pgs.iter().position(|p| p.id == numbered.pg) else {
                        continue;
                    };
                    if self.sides[side].paths.get(&pg).is_some_and(|p| p.active) {
                        self.send_to_pg(
                            side,
                            pg,
                            SideToPg::Output {
                                generation,
                                id: numbered.id,
                                prev: numbered.prev,
                                time_ms: numbered.time_ms,
                                output: numbered.output,
                            },
                        );
                    }
                }
            }
            Body::DigestCheck => {
                let digest = router.digest();
                let first = *self.digest_by_seq.entry(ordered.seq).or_insert(digest);
                if first != digest {
                    self.violate(
                        "two sides' states differ at a DigestCheck",
                        format!("side {} at {}", side_of(side), ordered.seq),
                    );
                    return;
                }
                self.digests_due.push((side, ordered.seq, digest));
                self.logged(side, ordered.seq, None);
            }
            Body::Quarantined { .. } => self.logged(side, ordered.seq, None),
            Body::HistoricalDrop(drop) => {
                self.trace_line(format!(
                    "side {} delivers {}",
                    side_of(side),
                    drop.describe()
                ));
                self.side_loggers[side]
                    .feed
                    .decided_drop(ordered.seq, ordered.time_ms, &drop);
            }
        }
    }

    // ----- state transfer -----

    /// A receiver asks for the peer's state when its synchronizer wants it, and gives up on a
    /// session that takes too long.
    fn transfer_tick(&mut self, side: usize) {
        let now = self.now_ms;
        if let Some(TransferRole::Receiving { started_ms, .. }) = self.sides[side].transfer {
            if now > started_ms + TRANSFER_TIMEOUT_MS {
                self.trace_line(format!("side {} transfer timed out", side_of(side)));
                self.transfer_failed(side);
            }
            return;
        }
        if self.sides[side].transfer.is_some()
            || self.sync_mut(side).transfer_wanted().is_none()
            || now < self.sides[side].transfer_retry_at_ms
        {
            return;
        }
        self.next_nonce += 1;
        let nonce = self.next_nonce;
        let epoch = self.sync_mut(side).epoch();
        let request = TransferRequest {
            client: central_transfer::ROUTER_CLIENT.into(),
            state_version: tandem_router::STATE_FORMAT_VERSION,
            logic_version: self.sides[side].logic.clone(),
            epoch,
            nonce,
        };
        self.sides[side].transfer = Some(TransferRole::Receiving {
            nonce,
            started_ms: now,
        });
        self.sync_mut(side).request_transfer(now, request);
    }

    fn on_transfer_requested(&mut self, source: usize, request: TransferRequest) {
        if let Some(reason) = central_transfer::refusal(&request, &self.sides[source].logic) {
            self.trace_line(format!("transfer refused: {reason}"));
            return;
        }
        self.sides[source].transfer = Some(TransferRole::Serving {
            nonce: request.nonce,
        });
        // A's MDS opens the session on its own connection.
        let at = self.now_ms + self.rng.random_range(1..20);
        self.schedule(
            at,
            Event::TransferSession {
                source,
                nonce: request.nonce,
            },
        );
    }

    /// The source cuts its state, as a side serving a session does, and the session carries
    /// its records to the receiver.
    fn transfer_session(&mut self, source: usize, nonce: u64) {
        if !self.runs(source)
            || self.sides[source].transfer != Some(TransferRole::Serving { nonce })
        {
            return;
        }
        // Deliveries decided but not carried out reach the router first.
        self.drain_sides();
        let now = self.now_ms;
        let cut = match self.sync_mut(source).begin_transfer(now) {
            Ok(cut) => cut,
            Err(error) => {
                self.trace_line(format!("transfer not begun: {error}"));
                self.sides[source].transfer = None;
                return;
            }
        };
        let slot = &self.sides[source];
        let records = records::export(slot.router.as_ref().expect("running").state());
        let side_data = rmp_serde::to_vec(&SideDataRef {
            outputs: &slot.outputs,
            history: self.side_loggers[source].feed.history(),
        })
        .expect("the side data serializes");
        let history = slot.history.clone();
        self.trace_line(format!(
            "transfer from {} cut at {} ({} bytes)",
            side_of(source),
            cut.seq,
            records.len()
        ));
        self.drain_sides();
        let at = now + self.rng.random_range(20..TRANSFER_WIRE_MS_MAX);
        self.schedule(
            at,
            Event::TransferArrived {
                receiver: 1 - source,
                nonce,
                cut,
                records,
                side_data,
                history,
            },
        );
    }

    fn transfer_arrived(
        &mut self,
        receiver: usize,
        nonce: u64,
        cut: SyncCut,
        records: Vec<u8>,
        side_data: Vec<u8>,
        history: Vec<(u64, u64)>,
    ) {
        if let Some(TransferRole::Serving { nonce: n }) = self.sides[1 - receiver].transfer {
            if n == nonce {
                self.sides[1 - receiver].transfer = None;
            }
        }
        if !self.runs(receiver)
            || !matches!(self.sides[receiver].transfer, Some(TransferRole::Receiving { nonce: n, .. }) if n == nonce)
        {
            return;
        }
        let (state, _digest) =
            records::import_with_digest(&records).expect("exported records import");
        let SideData {
            outputs,
            history: feed_history,
        } = rmp_serde::from_slice(&side_data).expect("the side data deserializes");
        let now = self.now_ms;
        match self
            .sync_mut(receiver)
            .on_transfer_received(now, cut.clone())
        {
            Ok(()) => {
                let mut router = Router::from_state(state).expect("a checked state loads");
                self.side_feeds[receiver].attach(&mut router);
                let slot = &mut self.sides[receiver];
                slot.router = Some(router);
                slot.outputs = outputs;
                slot.transfer = None;
                slot.transfer_retry_ms = TRANSFER_RETRY_MS_MIN;
                slot.transfers_received += 1;
                slot.last_delivered_seq = cut.seq;
                slot.history = history;
                // The logger stream before the cut is the peer's: this side's logger recovers
                // what it lacks of it from the peer's logger.
                self.side_loggers[receiver]
                    .feed
                    .restart_at(cut.seq, &feed_history);
                slot.pg_delivered = cut
                    .pg_cursors
                    .iter()
                    .map(|c| (c.pg, (c.incarnation, c.input_no)))
                    .collect();
                self.trace_line(format!(
                    "transfer to {} taken at {}",
                    side_of(receiver),
                    cut.seq
                ));
            }
            Err(error) => {
                self.trace_line(format!("transfer discarded: {error}"));
                self.transfer_failed(receiver);
            }
        }
    }

    /// Ends the transfer under way as failed; a receiver retries after a backoff.
    fn transfer_failed(&mut self, side: usize) {
        let now = self.now_ms;
        let slot = &mut self.sides[side];
        if matches!(slot.transfer, Some(TransferRole::Receiving { .. })) {
            slot.transfer_retry_at_ms = now + slot.transfer_retry_ms;
            slot.transfer_retry_ms = (slot.transfer_retry_ms * 2).min(TRANSFER_RETRY_MS_MAX);
        }
        slot.transfer = None;
    }

    // ----- checkers -----

    /// Checks a delivery against the side's stream and every side's: returns false on a
    /// violation.
    fn check_delivered(&mut self, side: usize, message: &Ordered, hash: u64) -> bool {
        let slot = &mut self.sides[side];
        let last = slot.last_delivered_seq;
        if last != 0 && Some(message.seq) != next_seq(last, message.epoch) {
            let detail = format!(
                "side {} delivered {} after {last}",
                side_of(side),
                message.seq
            );
            self.violate("a delivered stream with a gap or a repeat", detail);
            return false;
        }
        slot.last_delivered_seq = message.seq;
        if let Some(input) = message.pg_input() {
            let previous = slot
                .pg_delivered
                .insert(input.pg, (input.incarnation, input.input_no));
            // A side's first input from a PG, or from a new incarnation, may be any.
            if let Some((incarnation, input_no)) = previous {
                if incarnation == input.incarnation && input.input_no != input_no + 1 {
                    let detail = format!(
                        "side {} delivered PG {} input {} after {input_no}",
                        side_of(side),
                        input.pg,
                        input.input_no
                    );
                    self.violate("a PG input applied twice or out of order", detail);
                    return false;
                }
            }
        }
        let first = *self.delivered_by_seq.entry(message.seq).or_insert(hash);
        if first != hash {
            self.violate(
                "a sequence number delivered with two different messages",
                format!("side {} delivered {message:?}", side_of(side)),
            );
            return false;
        }
        true
    }

    fn states(&self) -> [Option<SyncState>; 2] {
        [0, 1].map(|side| {
            self.runs(side)
                .then(|| self.sides[side].sync.as_ref().expect("running").state())
        })
    }

    fn check_step(&mut self) {
        // Never two sides ordering at once: an isolated enabled side, or a paired enabled side
        // whose peer is its paired disabled partner.
        let states = self.states();
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

    /// A PG took an answer to `key` from `side`, produced by the message ordered at `seq`. A
    /// route request is answered once, unless the history of its first answer was abandoned:
    /// an isolated side answered it, and the side that took over without that side's history
    /// ordered the request again.
    fn check_answer(&mut self, side: usize, pg: PgId, key: RouteRequestKey, seq: u64) {
        let Some(&first) = self.answers.get(&(pg, key)) else {
            self.answers.insert((pg, key), seq);
            return;
        };
        let range = tandem_mds::seq_epoch_range(first);
        let held = self.sides[side]
            .history
            .iter()
            .any(|&(r, last)| r == range && first <= last);
        if held {
            let detail = format!(
                "PG {pg} request {key:?} answered at {first} and again at {seq} from side {}",
                side_of(side)
            );
            self.violate("a route request answered more than once", detail);
        } else {
            self.answers_after_abandoned += 1;
            self.answers.insert((pg, key), seq);
        }
    }

    /// Every durably acknowledged input was held by both sides when it was acknowledged, so an
    /// isolated enabled side, which delivers all it holds, has delivered every one of them.
    fn check_durable(&mut self) {
        for side in 0..2 {
            if self.states()[side] != Some(SyncState::IsolatedEnabled) {
                continue;
            }
            for pg in 0..self.pgs.len() {
                let core = &self.pgs[pg].core;
                let id = self.pgs[pg].id;
                let durable = core.acknowledged().1;
                let delivered = match self.sides[side].pg_delivered.get(&id) {
                    Some(&(incarnation, input_no)) if incarnation == core.incarnation() => input_no,
                    _ => 0,
                };
                if delivered < durable {
                    let detail = format!(
                        "PG {id}: durably acknowledged through {durable}, side {} delivered through {delivered}",
                        side_of(side)
                    );
                    self.violate("a durably acknowledged input lost", detail);
                    return;
                }
            }
        }
    }

    /// After the faults heal and the PGs drain: both sides paired with one enabled, equal
    /// states, every input acknowledged and applied once, every route request answered.
    fn check_end(&mut self) {
        let states = self.states();
        let enabled = states.iter().flatten().filter(|s| s.is_enabled()).count();
        let paired = states.iter().flatten().filter(|s| s.is_paired()).count();
        if enabled != 1 || paired != 2 {
            self.violate(
                "liveness: both sides paired, one enabled, after the faults heal",
                format!("states {states:?}"),
            );
            return;
        }
        for pg in 0..self.pgs.len() {
            let core = &self.pgs[pg].core;
            let id = self.pgs[pg].id;
            let sent = core.next_input_no() - 1;
            let (acked, _) = core.acknowledged();
            if acked < sent {
                let detail = format!("PG {id} sent {sent} inputs, {acked} acknowledged");
                self.violate(
                    "liveness: every input acknowledged after the faults heal",
                    detail,
                );
                return;
            }
            let unanswered = core.sim().route_requests_unanswered();
            if unanswered > 0 {
                let sides: Vec<String> = (0..2)
                    .map(|side| {
                        let slot = &self.sides[side];
                        let last = slot.outputs.pgs.get(&id).map(|o| o.last);
                        let path = slot.paths.get(&pg).map(|p| p.active);
                        format!(
                            "side {}: generation {}, last output {last:?}, path active {path:?}",
                            side_of(side),
                            slot.outputs.generation
                        )
                    })
                    .collect();
                let detail = format!(
                    "PG {id}: {unanswered} route requests unanswered after the drain; the PG took \
                     output {} last, its active path is to {}; {}",
                    core.last_output(),
                    core.active(),
                    sides.join("; ")
                );
                self.violate(
                    "liveness: every route request answered after the faults heal",
                    detail,
                );
                return;
            }
            for side in 0..2 {
                let applied = self.sides[side].pg_delivered.get(&id).copied();
                if sent > 0 && applied != Some((core.incarnation(), sent)) {
                    let detail = format!(
                        "PG {id} sent inputs 1..={sent} of incarnation {}; side {} applied through {applied:?}",
                        core.incarnation(),
                        side_of(side)
                    );
                    self.violate("every PG input applied exactly once", detail);
                    return;
                }
            }
        }
        // Quiescence: the disabled side catches up with the enabled one, and their states are
        // then equal.
        for _ in 0..CATCH_UP_MS_MAX {
            let through = [0, 1].map(|s| {
                self.sides[s]
                    .sync
                    .as_ref()
                    .expect("running")
                    .delivered_through()
            });
            if through[0] == through[1] {
                let digests =
                    [0, 1].map(|s| self.sides[s].router.as_ref().expect("running").digest());
                if digests[0] != digests[1] {
                    self.violate(
                        "both sides' states equal after quiescence",
                        format!(
                            "delivered through {}: digests {:032x} and {:032x}",
                            through[0], digests[0], digests[1]
                        ),
                    );
                    return;
                }
                self.check_central_databases(through[0]);
                if self.violation.is_none() {
                    let states = self.states();
                    let enabled = (0..2)
                        .find(|&s| states[s].is_some_and(|s| s.is_enabled()))
                        .expect("one side is enabled");
                    self.check_distributors(enabled);
                }
                if self.violation.is_none() {
                    let states = self.states();
                    let enabled = (0..2)
                        .find(|&s| states[s].is_some_and(|s| s.is_enabled()))
                        .expect("one side is enabled");
                    self.check_aw_configuration(enabled);
                }
                return;
            }
            self.step();
        }
        self.violate(
            "liveness: the disabled side catches up",
            "it did not".into(),
        );
    }

    fn violate(&mut self, invariant: &'static str, detail: String) {
        if self.violation.is_none() {
            self.trace_line(format!("VIOLATION {invariant}: {detail}"));
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

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn output_bytes(output: &Output) -> Vec<u8> {
    postcard::to_stdvec(output).expect("an output serializes")
}

/// A short description of an action for the trace.
fn describe(action: &Action) -> String {
    let text = format!("{action:?}");
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}
