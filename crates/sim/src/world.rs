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
mod sides;

use crate::{SimOptions, SimReport, Violation};
use distributors::{SideFeed, SimDistributor};
use loggers::SimLogger;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sides::SimSide;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tandem_mds::sync::SyncState;
use tandem_mds::{LogicVersion, OutputId, PeerMessage, PgToSide, Side, SideToPg, SyncCut};
use tandem_model::config::ContactCenter;
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::ids::{PgId, RouteRequestKey};
use tandem_model::output::Output;
use tandem_model::topology::MdsTimers;
use tandem_pg::gateway_core::{CoreSettings, GatewayCore, PgEffect};
use tandem_pg::{LoadParams, TrafficSim};
use tandem_router::Router;
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
pub(super) const DIGEST_CHECK_INTERVAL_MS: u64 = 500;
/// A PG tries a path that is down this often (`tandem pg`'s reconnect interval).
const PG_RECONNECT_MS: u64 = 200;
/// Side A's MDS tries the private link this often while it is down.
const PEER_CONNECT_MS: u64 = 100;
/// Quiet steps granted at the end for the disabled side to deliver what the enabled side has.
const CATCH_UP_MS_MAX: u64 = 2_000;

/// A link's kind and ends: (kind, from, to).
type LinkId = (u8, usize, usize);
pub(super) const LINK_PEER: u8 = 0;
pub(super) const LINK_SIDE_TO_PG: u8 = 1;
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
    /// A side's process dies between two of its machine's effects: before it carries out the
    /// `n`th effect from now, or at its next epoch barrier (before the epoch is on disk, or
    /// just after, with nothing after it gone out), then starts again after the last value.
    CrashAtEffect(usize, EffectTrap, u64),
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
            Fault::CrashAtEffect(..) => "side crashed between two effects",
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
    /// A's MDS opened the session for `nonce` at `opened_ms`; the source cuts its state once
    /// it knows the request the nonce names.
    TransferSession {
        source: usize,
        nonce: u64,
        opened_ms: u64,
    },
    /// The session's header reaches the receiving process `process` of `receiver`.
    TransferHeader {
        receiver: usize,
        process: u64,
        nonce: u64,
        state_bytes: u64,
    },
    /// The session's records, side data and end reach the receiver; `history` is the
    /// checkers' record of the source's ordered history at the cut.
    TransferArrived {
        receiver: usize,
        nonce: u64,
        cut: SyncCut,
        records: Vec<u8>,
        side_data: Vec<u8>,
        history: Vec<(u64, u64)>,
        started_ms: u64,
        direction: String,
    },
    /// The session under `nonce` ended without the state, as its process `process` of
    /// `side` sees it.
    TransferFailed {
        side: usize,
        process: u64,
        nonce: u64,
    },
    /// The digest thread of process `process` of `side` answers.
    DigestComputed {
        side: usize,
        process: u64,
        seq: u64,
        digest: u128,
        state_bytes: u64,
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
/// Mixed into the seed for the crashes between two effects' own random stream.
const EFFECT_STREAM: u64 = 0x6566_6665_6374_5f21;
/// The chance that a run crashes a side between two effects, and of those, the share that
/// waits for an epoch barrier.
const EFFECT_CRASH_PROBABILITY: f64 = 0.4;
const EFFECT_CRASH_AT_BARRIER_SHARE: f64 = 0.5;
/// The most effects a trap lets pass before it strikes.
const EFFECT_CRASH_AFTER_MAX: u32 = 400;

/// Where a side's process dies among its machine's effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EffectTrap {
    /// Before the effect after these many.
    After(u32),
    /// At the next `PersistEpoch`: `durable` once the epoch is on disk, else before.
    Barrier { durable: bool },
}

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
    trace: VecDeque<String>,
    hasher: Xxh3,
    faults: BTreeMap<&'static str, u32>,
    violation: Option<Violation>,
    /// The logger tier: each side's logger with its database.
    loggers: [SimLogger; 2],
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
    /// And the crashes between two effects of a side.
    effect_rng: ChaCha8Rng,
    /// Per side, the effect its process dies at, once armed.
    effect_traps: [Option<(EffectTrap, u64)>; 2],
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
    let mut world = World {
        now_ms: start_ms,
        rng,
        options: options.clone(),
        cc,
        timers,
        sides: [SimSide::new(), SimSide::new()],
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
        delivered_by_seq: BTreeMap::new(),
        digest_by_seq: BTreeMap::new(),
        numbered: BTreeMap::new(),
        answers: BTreeMap::new(),
        answers_after_abandoned: 0,
        trace: VecDeque::new(),
        hasher: Xxh3::new(),
        faults: BTreeMap::new(),
        violation: None,
        loggers: [
            SimLogger::new(&cc_for_loggers),
            SimLogger::new(&cc_for_loggers),
        ],
        logger_rows_max,
        logger_rng,
        pg_rng: ChaCha8Rng::seed_from_u64(seed ^ PG_STREAM),
        pause_rng: ChaCha8Rng::seed_from_u64(seed ^ PAUSE_STREAM),
        aw_db_rng: ChaCha8Rng::seed_from_u64(seed ^ AW_DB_STREAM),
        effect_rng: ChaCha8Rng::seed_from_u64(seed ^ EFFECT_STREAM),
        effect_traps: [None, None],
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
        logger_gaps_recovered: world.loggers.iter().map(|l| l.gaps().0).sum(),
        logger_gaps_held_by_neither: world.loggers.iter().map(|l| l.gaps().1).sum(),
        rows_logged: world.rows_logged(),
        distributors: world.distributors.len(),
        config_changes_ordered: world.config_change_seqs.len() as u64,
        config_change_abandoned: world.config_change_abandoned,
        config_changes_applied: world
            .sides
            .iter()
            .filter_map(|s| s.machine.as_ref())
            .map(|m| m.router().config_version())
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
        if let Some((at, side, restart_after_ms)) = draw_one_fault(
            &mut self.effect_rng,
            EFFECT_CRASH_PROBABILITY,
            now,
            end_ms,
            2,
            3_000,
        ) {
            // An epoch barrier comes at a pairing or a takeover: its trap is armed from the
            // start, to meet the first one the side may die at.
            let (trap, at) = if self.effect_rng.random_bool(EFFECT_CRASH_AT_BARRIER_SHARE) {
                let durable = self.effect_rng.random_bool(0.5);
                (EffectTrap::Barrier { durable }, now + 1)
            } else {
                let n = self.effect_rng.random_range(0..EFFECT_CRASH_AFTER_MAX);
                (EffectTrap::After(n), at)
            };
            let fault = Fault::CrashAtEffect(side, trap, restart_after_ms);
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
        self.effect_traps = [None, None];
        for side in 0..2 {
            if self.sides[side].paused {
                self.resume(side);
            }
            if self.sides[side].machine.is_none() || self.sides[side].logic != logic_version(true) {
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
                self.machine_mut(side).tick(now);
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
        self.sides[side].machine.is_some() && !self.sides[side].paused
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
            Event::TransferSession { source: to, .. }
            | Event::TransferHeader { receiver: to, .. }
            | Event::TransferFailed { side: to, .. }
            | Event::DigestComputed { side: to, .. }
                if self.sides[to].paused =>
            {
                self.sides[to].inbox.push_back(event);
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
                } else if self.runs(side) {
                    let now = self.now_ms;
                    self.machine_mut(side).logger_down(
                        now,
                        generation,
                        "the logger reset the connection",
                    );
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
                    self.machine_mut(to).peer_message(now, generation, message);
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
                if self.runs(side) && self.sides[side].paths.get(&pg) == Some(&generation) {
                    self.sides[side].paths.remove(&pg);
                    let now = self.now_ms;
                    self.machine_mut(side)
                        .pg_down(now, generation, "the PG reset the connection");
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
            Event::TransferSession {
                source,
                nonce,
                opened_ms,
            } => self.transfer_session(source, nonce, opened_ms),
            Event::TransferHeader {
                receiver,
                process,
                nonce,
                state_bytes,
            } => {
                if self.runs(receiver) && self.sides[receiver].process == process {
                    let now = self.now_ms;
                    self.machine_mut(receiver)
                        .transfer_header(now, nonce, state_bytes);
                }
            }
            Event::TransferArrived {
                receiver,
                nonce,
                cut,
                records,
                side_data,
                history,
                started_ms,
                direction,
            } => self.transfer_arrived(
                receiver, nonce, cut, records, side_data, history, started_ms, direction,
            ),
            Event::TransferFailed {
                side,
                process,
                nonce,
            } => {
                if self.runs(side) && self.sides[side].process == process {
                    let now = self.now_ms;
                    self.machine_mut(side).transfer_failed(
                        now,
                        nonce,
                        "the source closed the session",
                    );
                }
            }
            Event::DigestComputed {
                side,
                process,
                seq,
                digest,
                state_bytes,
            } => {
                if self.runs(side) && self.sides[side].process == process {
                    let now = self.now_ms;
                    self.machine_mut(side)
                        .digest_computed(now, seq, digest, state_bytes);
                }
            }
            Event::Resume(side) => self.resume(side),
            Event::Restart { side, logic_ok } => {
                if self.sides[side].machine.is_none() {
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
                    self.sides[s]
                        .machine
                        .as_ref()
                        .is_some_and(|m| m.transfer_serving().is_some())
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
            Fault::CrashAtEffect(side, trap, restart_after_ms) => {
                self.effect_traps[side] = Some((trap, restart_after_ms));
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
            .machine
            .as_ref()
            .is_some_and(|m| !m.sync().needs_state())
            && self.sides[1 - side].logic == logic_version(true);
        self.sides[side].machine.is_some() && other_holds_state
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
        let (now, conn) = (self.now_ms, self.link_generation);
        for side in 0..2 {
            self.machine_mut(side).peer_up(now, conn);
        }
    }

    /// Ends the connection; `tell` (or both sides, if `None`) sees it reset.
    fn disconnect(&mut self, tell: Option<usize>) {
        if !self.connected {
            return;
        }
        self.connected = false;
        let conn = self.link_generation;
        self.link_generation += 1;
        self.trace_line("private link disconnected".into());
        let now = self.now_ms;
        for side in 0..2 {
            if tell.is_none_or(|t| t == side) && self.runs(side) {
                self.machine_mut(side)
                    .peer_down(now, conn, "the connection reset");
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
                self.sides[side].paths.insert(pg, generation);
                let (id, incarnation) = (self.pgs[pg].id, self.pgs[pg].core.incarnation());
                self.machine_mut(side)
                    .pg_up(now, generation, id, incarnation);
                self.carry_out_pg(pg);
            }
        }
    }

    fn side_hears_pg(&mut self, side: usize, pg: usize, generation: u64, message: PgToSide) {
        if self.runs(side) && self.sides[side].paths.get(&pg) == Some(&generation) {
            let now = self.now_ms;
            self.machine_mut(side).pg_message(now, generation, message);
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

    // ----- checkers -----

    fn states(&self) -> [Option<SyncState>; 2] {
        [0, 1].map(|side| self.runs(side).then(|| self.machine(side).sync().state()))
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
                        let machine = self.machine(side);
                        let outputs = machine.outputs();
                        let last = outputs.pgs.get(&id).map(|o| o.last);
                        let path = self.sides[side]
                            .paths
                            .get(&pg)
                            .and_then(|&conn| machine.path_active(conn));
                        format!(
                            "side {}: generation {}, last output {last:?}, path active {path:?}",
                            side_of(side),
                            outputs.generation
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
            let through = [0, 1].map(|s| self.machine(s).sync().delivered_through());
            if through[0] == through[1] {
                let digests = [0, 1].map(|s| self.machine(s).router().digest());
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

/// The first 160 characters of a trace line's part.
fn short(text: &str) -> &str {
    match text.char_indices().nth(160) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn output_bytes(output: &Output) -> Vec<u8> {
    postcard::to_stdvec(output).expect("an output serializes")
}
