//! One side of the central controller as a process: the MDS shell around the synchronizer,
//! with the router as its synchronized client.
//!
//! One task, the core, owns the synchronizer, the router and the output log, and is the only
//! one to touch them: every socket task sends it `CoreEvent`s over a bounded channel, and it
//! carries out the synchronizer's actions in order. The core reads the clock once per event
//! and hands it to the synchronizer, which is what keeps the protocol logic deterministic.
//! Sockets: the public listener (PGs and rttest), the private MDS link (side B listens, side
//! A connects), and state-transfer sessions (side B listens, side A's MDS always opens them).

use crate::apply::{self, ConfigResult};
use crate::dumps;
use crate::logger_feed::{Dropped, LoggerFeed, PeerLogger};
use crate::metrics::{self, MetricsSnapshot, TransferCounts};
use crate::outputs::OutputLog;
use crate::pg_link::{self, PathChange, PgAddress};
use crate::quarantine::{self, Suspect};
use crate::rtsrvr::{FeedCore, FeedShared};
use crate::status::{self, StatusInputs, SyncRecord};
use crate::transfer::{self, TransferOutcome};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_mds::tls::{PeerIdentity, Role, Security};
use tandem_mds::transport::{
    self, ClientAuth, FrameReader, Outbound, RefusalLog, Stream, TransportError,
};
use tandem_mds::{
    Action, AdminReply, AdminRequest, Body, Epoch, LoggerToSide, LogicVersion, Ordered,
    PeerMessage, PgToSide, PublicHello, Side, SideReport, SideToLogger, SideToPg, Source,
    SyncEvent, SyncReport, SyncSettings, Synchronizer, TransferRequest, SIDE_REPORT_EVENTS_MAX,
};
use tandem_model::config::{ConfigStamp, ContactCenter, Settings};
use tandem_model::feed::VersionedConfigChange;
use tandem_model::ids::PgId;
use tandem_model::input::Input;
use tandem_model::input::OrderedInput;
use tandem_model::output::Output;
use tandem_model::topology::{Limits, Topology};
use tandem_router::{Router, State};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// Events queued to the core before socket readers wait.
pub const CORE_EVENTS_MAX: usize = 65_536;
/// Events kept for `rttest events`.
pub const EVENTS_KEPT_MAX: usize = 1_000;
/// State transfers kept for `rttest sync`.
pub const SYNC_HISTORY_MAX: usize = 100;
/// The core's timer: the synchronizer wants a tick at least every few milliseconds.
const CORE_TICK_MS: u64 = 5;
/// How often side A tries the private link while it is down.
const PEER_CONNECT_RETRY_MS: u64 = 100;
/// A failed transfer is retried after this, doubling up to `TRANSFER_RETRY_MS_MAX`.
const TRANSFER_RETRY_MS_MIN: u64 = 250;
const TRANSFER_RETRY_MS_MAX: u64 = 5_000;
/// A transfer that has not finished in this long is abandoned and retried.
const TRANSFER_TIMEOUT_MS: u64 = 120_000;
/// A transfer whose session has not begun this long after it was asked for is retried.
const TRANSFER_START_TIMEOUT_MS: u64 = 3_000;
/// Configuration requests awaiting their ordered answer; more are refused until some finish.
pub const ADMIN_REQUESTS_PENDING_MAX: usize = 64;
/// How often a side that waits for its logger's configuration says so in its log.
const CONFIGURATION_WAIT_LOG_MS: u64 = 5_000;
/// Rows a full logger buffer releases are reported at most this often, summed: under load a
/// full buffer releases rows at nearly every message.
const LOGGER_RELEASE_REPORT_MS: u64 = 10_000;
/// The exit status of a side whose router panicked on an input (EX_SOFTWARE): its state is
/// suspect, and the input is recorded in the suspect file (`quarantine`).
pub const EXIT_POISONED: i32 = 70;

#[derive(Debug, Error)]
pub enum SideError {
    #[error("{0}")]
    Topology(#[from] tandem_model::topology::TopologyError),
    #[error("contact center: {0}")]
    Config(#[from] tandem_model::config::ConfigError),
    #[error("router: {0}")]
    Router(String),
    #[error("synchronizer settings: {0}")]
    Settings(#[from] tandem_mds::sync::SettingsError),
    #[error("{0}")]
    Quarantine(#[from] quarantine::QuarantineError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the real-time feed's thread: {0}")]
    Feed(std::io::Error),
}

/// How to start a side.
#[derive(Clone, Debug)]
pub struct SideOptions {
    pub topology: Topology,
    pub side: Side,
    /// Start from configuration even though this side ran before (both sides lost their state:
    /// the operator's cold start).
    pub cold_start: bool,
    /// The logic version's build string; tests override it to check the version guard.
    pub logic_build: String,
    /// TLS from the cluster CA, or plaintext with `--insecure-plaintext`.
    pub security: Security,
}

/// The logic version of this build: the crate version and the time-zone database.
pub fn logic_version(build: &str) -> LogicVersion {
    LogicVersion {
        build: build.to_string(),
        time_zone_data: chrono_tz::IANA_TZDB_VERSION.to_string(),
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) enum CoreEvent {
    PeerUp {
        conn: u64,
        out: Outbound<PeerMessage>,
        reader: tokio::task::AbortHandle,
    },
    PeerMessage {
        conn: u64,
        message: PeerMessage,
    },
    PeerDown {
        conn: u64,
        reason: String,
    },
    PgUp {
        conn: u64,
        pg: PgId,
        incarnation: u64,
        out: Outbound<SideToPg>,
        reader: tokio::task::AbortHandle,
    },
    PgMessage {
        conn: u64,
        message: PgToSide,
    },
    PgDown {
        conn: u64,
        reason: String,
    },
    /// A transfer session asks the source for its cut.
    ServeCut {
        nonce: u64,
        reply: oneshot::Sender<Result<transfer::Cut, String>>,
    },
    /// A receiving session learnt the state's size: the buffer bound follows from it.
    TransferHeader {
        nonce: u64,
        state_bytes: u64,
    },
    /// A receiving session's progress, after each chunk.
    TransferProgress {
        nonce: u64,
        received: u64,
        total: u64,
    },
    TransferDone {
        nonce: u64,
        outcome: TransferOutcome,
    },
    /// Whether this side is the one to open transfer sessions for `nonce`, and which way.
    ResolveNonce {
        nonce: u64,
        reply: oneshot::Sender<Option<bool>>,
    },
    /// The router's digest and state size at the DigestCheck delivered at `seq`.
    DigestComputed {
        seq: u64,
        digest: u128,
        state_bytes: u64,
    },
    RtTest {
        command: String,
        reply: oneshot::Sender<String>,
    },
    LoggerUp {
        conn: u64,
        committed_through: u64,
        config_version: u64,
        out: Outbound<SideToLogger>,
        reader: tokio::task::AbortHandle,
    },
    LoggerMessage {
        conn: u64,
        message: LoggerToSide,
    },
    LoggerDown {
        conn: u64,
        reason: String,
    },
    Admin {
        request: AdminRequest,
        reply: oneshot::Sender<AdminReply>,
    },
}

/// The side's logger, connected on the public listener.
struct LoggerLink {
    conn: u64,
    out: Outbound<SideToLogger>,
    reader: tokio::task::AbortHandle,
}

/// A PG path connected to this side.
struct PgPath {
    pg: PgId,
    out: Outbound<SideToPg>,
    reader: tokio::task::AbortHandle,
    active: bool,
    last_heard: Instant,
    last_sent: Instant,
}

struct Peer {
    conn: u64,
    out: Outbound<PeerMessage>,
    reader: tokio::task::AbortHandle,
}

/// This side's part in a transfer under way.
enum TransferRole {
    /// Receiving under `nonce` since `started`.
    Receiving {
        nonce: u64,
        started: Instant,
        /// Bytes received of the total, once the session's header arrived. A session that
        /// never begins (the sender failed, or its connection was lost on the way) is given up
        /// sooner than one under way.
        progress: Option<(u64, u64)>,
    },
    /// The peer asked for our state under this request.
    Serving(TransferRequest),
}

struct Core {
    side: Side,
    topology: Topology,
    security: Security,
    data_dir: PathBuf,
    /// Where the input in flight is recorded if the router panics on it.
    suspect_path: PathBuf,
    logic_version: LogicVersion,
    sync: Synchronizer,
    router: Router,
    outputs: OutputLog,
    peer: Option<Peer>,
    peer_connected: watch::Sender<bool>,
    paths: BTreeMap<u64, PgPath>,
    transfer: Option<TransferRole>,
    transfer_retry_ms: u64,
    transfer_retry_at: Option<Instant>,
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
    /// walks the whole state, which the core does not do on request.
    state_size_now: u64,
    transfer_counts: TransferCounts,
    /// Wall-clock time at which the next metrics snapshot is due.
    metrics_due_ms: u64,
    logger: Option<LoggerLink>,
    feed: LoggerFeed,
    /// The real-time feed to the distributors.
    rtsrvr: FeedCore,
    /// What the peer was last told of this side's logger; `None` until told on this link.
    logger_progress_told: Option<(bool, u64)>,
    /// Rows the full logger buffer released and not yet reported, and when the last report was.
    released_unreported: Option<Dropped>,
    released_reported_ms: u64,
    /// Configuration requests this side ordered, by request number, awaiting delivery.
    admin_pending: BTreeMap<u64, oneshot::Sender<AdminReply>>,
    admin_next: u64,
    tx: mpsc::Sender<CoreEvent>,
}

/// Runs one side until the process is stopped.
pub async fn run(options: SideOptions) -> Result<(), SideError> {
    let topology = options.topology.clone();
    let addresses = match options.side {
        Side::A => topology.side_a.clone(),
        Side::B => topology.side_b.clone(),
    };
    let data_dir = topology.resolve(&addresses.data_dir);
    std::fs::create_dir_all(&data_dir).map_err(|source| SideError::File {
        what: "creating",
        path: data_dir.display().to_string(),
        source,
    })?;
    let persisted = read_epoch(&data_dir)?;
    // A side that ran before lost its router's state with its process: it takes its peer's.
    let needs_state = persisted.is_some() && !options.cold_start;
    let (tx, mut rx) = mpsc::channel(CORE_EVENTS_MAX);
    let public = bind(addresses.public).await?;
    let rtsrvr = FeedCore::start().map_err(SideError::Feed)?;
    tokio::spawn(accept_public(
        public,
        tx.clone(),
        rtsrvr.shared(),
        options.security.clone(),
        topology.limits.clone(),
    ));
    // A side that builds its state from configuration takes it from its logger's central
    // database; one that takes its peer's state needs none.
    let (configuration, mut logger) = if needs_state {
        (None, None)
    } else {
        let (cc, version, link) = wait_for_configuration(&mut rx, options.side).await;
        (Some((cc, version)), link)
    };
    let start_ms = wall_ms();
    let router = match &configuration {
        Some((cc, config)) => {
            Router::from_contact_center_at(cc, config.version, config.recovery_key, start_ms)
        }
        None => Router::new(Settings::default(), start_ms),
    }
    .map_err(|e| SideError::Router(e.to_string()))?;
    let router_state_bytes = router.state_size();
    let epoch = persisted.unwrap_or_default();
    let logic_version = logic_version(&options.logic_build);
    let pgs: BTreeSet<PgId> = topology.pgs.iter().map(|p| p.id).collect();
    let mut settings = SyncSettings::new(options.side, logic_version.clone(), pgs);
    let timers = &topology.mds;
    settings.heartbeat_interval_ms = timers.heartbeat_interval_ms;
    settings.heartbeat_misses_max = timers.heartbeat_misses_max;
    settings.tick_interval_ms = timers.tick_interval_ms;
    settings.lease_ms = timers.lease_ms;
    settings.digest_check_interval_ms = timers.digest_check_interval_ms;
    let mut sync = Synchronizer::new(settings, epoch, 0, start_ms, needs_state, start_ms)?;
    if let Some((_, version)) = &configuration {
        sync.set_built_from_configuration(version.version);
    }
    let suspect_path = data_dir.join(quarantine::SUSPECT_FILE);
    let quarantine = quarantine::read_quarantine(&suspect_path)?;
    for key in &quarantine.inputs {
        warn!(
            side = %options.side,
            "PG {}'s input with hash {:016x} was in flight during two crashes: it is quarantined, \
             under whatever numbers it comes",
            key.pg, key.input_hash
        );
    }
    for hash in &quarantine.synchronizer_inputs {
        // A TimeTick has no number to skip it by; the operator must see the record.
        error!(
            side = %options.side,
            "an input the synchronizer ordered (hash {hash:016x}) was in flight during two \
             crashes; it cannot be skipped"
        );
    }
    let quarantined_listed = quarantine.inputs.len();
    sync.set_quarantine(quarantine.inputs);
    info!(
        side = %options.side,
        epoch = epoch.number,
        needs_state,
        "side {} starting: configuration version {}, {} PGs",
        options.side,
        router.config_version(),
        topology.pgs.len()
    );

    let (peer_connected, peer_watch) = watch::channel(false);
    let metrics_listener = TcpListener::bind(addresses.metrics)
        .await
        .map_err(|source| SideError::Metrics {
            addr: addresses.metrics,
            source,
        })?;
    tokio::spawn(metrics::serve(
        metrics_listener,
        metrics::install(),
        options.security.clone(),
    ));
    match options.side {
        Side::B => {
            let private = bind(addresses.private).await?;
            tokio::spawn(accept_private(
                private,
                tx.clone(),
                options.security.clone(),
            ));
            let transfers = bind(addresses.transfer).await?;
            tokio::spawn(accept_transfers(
                transfers,
                tx.clone(),
                logic_version.clone(),
                options.security.clone(),
            ));
        }
        Side::A => {
            tokio::spawn(connect_private(
                topology.side_b.private,
                tx.clone(),
                peer_watch,
                options.security.clone(),
            ));
        }
    }
    let topology_logger_rows = topology.logger.buffer_rows;
    let mut core = Core {
        side: options.side,
        topology,
        security: options.security.clone(),
        data_dir,
        suspect_path,
        logic_version,
        sync,
        router,
        outputs: OutputLog {
            generation: start_ms,
            ..OutputLog::default()
        },
        peer: None,
        peer_connected,
        paths: BTreeMap::new(),
        transfer: None,
        transfer_retry_ms: TRANSFER_RETRY_MS_MIN,
        transfer_retry_at: None,
        nonce_counter: 0,
        sync_history: VecDeque::new(),
        events: VecDeque::new(),
        started_ms: start_ms,
        clock_ms: start_ms,
        outputs_scratch: Vec::new(),
        quarantined_skipped: 0,
        quarantined_listed,
        state_size_alarmed: false,
        state_size_now: router_state_bytes,
        transfer_counts: TransferCounts::default(),
        metrics_due_ms: start_ms,
        feed: LoggerFeed::new(
            usize::try_from(topology_logger_rows).unwrap_or(usize::MAX),
            0,
        ),
        logger: None,
        rtsrvr,
        logger_progress_told: None,
        released_unreported: None,
        released_reported_ms: 0,
        admin_pending: BTreeMap::new(),
        admin_next: 0,
        tx,
    };
    core.rtsrvr.attach(&mut core.router);
    if let Some((link, committed_through, config_version)) = logger.take() {
        core.logger_up(link, committed_through, config_version);
    }
    core.run(rx).await;
    Ok(())
}

/// Waits until the side's logger connects and hands over the central database's
/// configuration. Meanwhile PGs are refused, rttest is told why the side waits, and
/// configuration requests are turned away.
async fn wait_for_configuration(
    rx: &mut mpsc::Receiver<CoreEvent>,
    side: Side,
) -> (ContactCenter, ConfigStamp, Option<(LoggerLink, u64, u64)>) {
    let mut link: Option<(LoggerLink, u64, u64)> = None;
    let mut why = "no logger has connected yet".to_string();
    let mut log_due = Instant::now();
    loop {
        if Instant::now() >= log_due {
            log_due = Instant::now() + Duration::from_millis(CONFIGURATION_WAIT_LOG_MS);
            warn!(%side, "waiting for the logger's configuration: {why}");
        }
        let event =
            match tokio::time::timeout(Duration::from_millis(CONFIGURATION_WAIT_LOG_MS), rx.recv())
                .await
            {
                Ok(Some(event)) => event,
                Ok(None) => std::future::pending().await,
                Err(_) => continue,
            };
        match event {
            CoreEvent::LoggerUp {
                conn,
                committed_through,
                config_version,
                out,
                reader,
            } => {
                if let Some((old, _, _)) = link.take() {
                    old.reader.abort();
                }
                let _ = out.send(&SideToLogger::SendConfiguration);
                link = Some((
                    LoggerLink { conn, out, reader },
                    committed_through,
                    config_version,
                ));
                why = "the logger connected; its configuration is on the way".into();
            }
            CoreEvent::LoggerMessage { conn, message } => {
                if link.as_ref().is_none_or(|(l, _, _)| l.conn != conn) {
                    continue;
                }
                match message {
                    LoggerToSide::Configuration {
                        contact_center,
                        config_version,
                        config_recovery_key,
                    } => {
                        info!(
                            %side,
                            config_version,
                            config_recovery_key,
                            "configuration received from the logger"
                        );
                        let config = ConfigStamp {
                            version: config_version,
                            recovery_key: config_recovery_key,
                        };
                        return (*contact_center, config, link);
                    }
                    LoggerToSide::NoConfiguration { reason } => {
                        why = format!("the logger has none: {reason}");
                        log_due = Instant::now();
                    }
                    LoggerToSide::Committed { .. } => {}
                }
            }
            CoreEvent::LoggerDown { conn, .. }
                if link.as_ref().is_some_and(|(l, _, _)| l.conn == conn) =>
            {
                link = None;
                why = "the logger disconnected".into();
            }
            CoreEvent::PgUp { out, reader, .. } => {
                let _ = out.send(&SideToPg::Refuse {
                    reason: format!("side {side} is starting: it waits for its configuration"),
                });
                reader.abort();
            }
            CoreEvent::RtTest { reply, .. } => {
                let _ = reply.send(format!(
                    "side {side} is starting: waiting for its logger's configuration ({why})\n"
                ));
            }
            CoreEvent::Admin { reply, .. } => {
                let _ = reply.send(AdminReply::NotOrdering {
                    reason: format!("side {side} is starting"),
                });
            }
            _ => {}
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, SideError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SideError::Listen { addr, source })
}

fn epoch_path(data_dir: &Path) -> PathBuf {
    data_dir.join("epoch")
}

/// The highest epoch this side persisted, if it ever ran.
fn read_epoch(data_dir: &Path) -> Result<Option<Epoch>, SideError> {
    let path = epoch_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut words = text.split_whitespace();
            let number = words.next().and_then(|w| w.parse::<u64>().ok());
            let owner = match words.next() {
                Some("A") => Some(Side::A),
                Some("B") => Some(Side::B),
                _ => None,
            };
            Ok(Some(Epoch {
                number: number.unwrap_or(0),
                owner,
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SideError::File {
            what: "reading",
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes the epoch durably (temporary file, fsync, rename) before the side acts on it.
fn write_epoch(data_dir: &Path, epoch: Epoch) -> std::io::Result<()> {
    use std::io::Write;
    let path = epoch_path(data_dir);
    let temporary = data_dir.join("epoch.tmp");
    let owner = match epoch.owner {
        Some(side) => side.to_string(),
        None => "-".into(),
    };
    let mut file = std::fs::File::create(&temporary)?;
    writeln!(file, "{} {owner}", epoch.number)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}

impl Core {
    async fn run(&mut self, mut rx: mpsc::Receiver<CoreEvent>) {
        let mut timer = tokio::time::interval(Duration::from_millis(CORE_TICK_MS));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Marks this side as having run: a restart takes its peer's state.
        self.persist_epoch(self.sync.epoch());
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    self.on_event(event);
                    // Take what else is queued before ticking, in one go.
                    let mut taken = 0;
                    while taken < 1_024 {
                        match rx.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                        taken += 1;
                    }
                    let now = self.now();
                    self.sync.end_of_batch(now);
                }
                _ = timer.tick() => self.on_tick(),
            }
            self.carry_out();
        }
    }

    fn now(&mut self) -> u64 {
        self.clock_ms = self.clock_ms.max(wall_ms());
        self.clock_ms
    }

    fn on_tick(&mut self) {
        let now = self.now();
        self.sync.tick(now);
        self.tell_logger_progress();
        self.report_released(now);
        let interval = Duration::from_millis(self.topology.mds.pg_heartbeat_interval_ms);
        let silence_max = interval * self.topology.mds.pg_heartbeat_misses_max as u32;
        let mut silent = Vec::new();
        for (&conn, path) in &mut self.paths {
            if path.last_heard.elapsed() > silence_max {
                silent.push(conn);
            } else if path.last_sent.elapsed() >= interval {
                path.last_sent = Instant::now();
                let _ = path.out.send(&SideToPg::Heartbeat);
            }
        }
        for conn in silent {
            self.event(format!("PG path {conn} silent: closed"));
            self.drop_path(conn);
        }
        // Receiving: retry after a failure, give up on a session that takes too long.
        if let Some(TransferRole::Receiving {
            started, progress, ..
        }) = &self.transfer
        {
            if started.elapsed() > Duration::from_millis(TRANSFER_TIMEOUT_MS) {
                self.event("state transfer timed out".into());
                self.transfer_failed();
            } else if progress.is_none()
                && started.elapsed() > Duration::from_millis(TRANSFER_START_TIMEOUT_MS)
            {
                self.event(format!(
                    "state transfer failed: no session began within {TRANSFER_START_TIMEOUT_MS} ms"
                ));
                self.transfer_failed();
            }
        }
        if self.sync.transfer_wanted().is_some()
            && self.transfer.is_none()
            && self.transfer_retry_at.is_none_or(|at| Instant::now() >= at)
        {
            self.start_receiving();
        }
        let size = self.router.state_size_max();
        if !self.state_size_alarmed && size > self.topology.mds.state_size_alarm_bytes {
            self.state_size_alarmed = true;
            let mb = 1 << 20;
            self.event(format!(
                "The router state size of {} MB has grown beyond the alarm limit of {} MB",
                size / mb,
                self.topology.mds.state_size_alarm_bytes / mb
            ));
        }
        self.send_logger_batches(true);
        if now >= self.metrics_due_ms {
            self.metrics_due_ms = now + metrics::METRICS_INTERVAL_MS;
            metrics::record(&self.metrics_snapshot());
        }
    }

    fn metrics_snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            side: self.side,
            sync_state: self.sync.state(),
            epoch: self.sync.epoch().number,
            held_through: self.sync.held_through(),
            delivered_through: self.sync.delivered_through(),
            peer_connected: self.peer.is_some(),
            pg_paths: self
                .topology
                .pgs
                .iter()
                .map(|p| {
                    let paths = self.paths.values().filter(|path| path.pg == p.id).count();
                    (p.name.clone(), paths as u32)
                })
                .collect(),
            state_bytes: self.state_size_now,
            state_bytes_max: self.router.state_size_max(),
            transfers: self.transfer_counts,
            inputs_applied: self.router.state().scalars.counters.inputs_applied,
            inputs_rejected: self.router.state().scalars.counters.inputs_rejected,
        }
    }

    fn on_event(&mut self, event: CoreEvent) {
        let now = self.now();
        match event {
            CoreEvent::PeerUp { conn, out, reader } => {
                if let Some(old) = self.peer.take() {
                    old.reader.abort();
                }
                self.peer = Some(Peer { conn, out, reader });
                let _ = self.peer_connected.send(true);
                self.transfer = None;
                self.sync.peer_link_up(now);
                self.logger_progress_told = None;
            }
            CoreEvent::PeerMessage { conn, message } => {
                if self.peer.as_ref().is_some_and(|p| p.conn == conn) {
                    self.sync.on_peer_message(now, message);
                }
            }
            CoreEvent::PeerDown { conn, reason } => {
                if self.peer.as_ref().is_some_and(|p| p.conn == conn) {
                    self.event(format!("private link down: {reason}"));
                    self.close_peer();
                    self.sync.peer_link_down(now);
                }
            }
            CoreEvent::PgUp {
                conn,
                pg,
                incarnation,
                out,
                reader,
            } => {
                if !self.topology.pgs.iter().any(|p| p.id == pg) {
                    let _ = out.send(&SideToPg::Refuse {
                        reason: format!("PG {pg} is not in the topology"),
                    });
                    reader.abort();
                    return;
                }
                let _ = out.send(&SideToPg::Welcome { side: self.side });
                info!(%pg, incarnation, conn, "PG path up");
                self.paths.insert(
                    conn,
                    PgPath {
                        pg,
                        out,
                        reader,
                        active: false,
                        last_heard: Instant::now(),
                        last_sent: Instant::now(),
                    },
                );
                self.sync.pg_reachable(now, pg, true);
            }
            CoreEvent::PgMessage { conn, message } => self.on_pg_message(now, conn, message),
            CoreEvent::PgDown { conn, reason } => {
                if let Some(path) = self.paths.get(&conn) {
                    let pg = path.pg;
                    self.event(format!("PG {pg} path closed: {reason}"));
                    self.drop_path(conn);
                }
            }
            CoreEvent::ServeCut { nonce, reply } => {
                let _ = reply.send(self.serve_cut(now, nonce));
            }
            CoreEvent::TransferHeader { nonce, state_bytes } => {
                self.transfer_progress(nonce, 0, state_bytes);
                if self.receiving_nonce() == Some(nonce) {
                    // Twice the messages expected while the state arrives at a conservative
                    // 100 MB/s under 100,000 inputs/s.
                    let bound = tandem_mds::transfer_buffer_bound(state_bytes, 100 << 20, 100_000);
                    self.sync.set_transfer_buffer_messages_max(bound);
                }
            }
            CoreEvent::TransferProgress {
                nonce,
                received,
                total,
            } => self.transfer_progress(nonce, received, total),
            CoreEvent::TransferDone { nonce, outcome } => {
                self.on_transfer_done(now, nonce, outcome)
            }
            CoreEvent::ResolveNonce { nonce, reply } => {
                // Side B's listener asks: is this a session we receive on (true), or one we
                // serve (false)?
                let answer = match &self.transfer {
                    Some(TransferRole::Receiving { nonce: n, .. }) if *n == nonce => Some(true),
                    Some(TransferRole::Serving(request)) if request.nonce == nonce => Some(false),
                    _ => None,
                };
                let _ = reply.send(answer);
            }
            CoreEvent::DigestComputed {
                seq,
                digest,
                state_bytes,
            } => {
                self.state_size_now = state_bytes;
                self.sync.on_local_digest(now, seq, digest);
            }
            CoreEvent::LoggerUp {
                conn,
                committed_through,
                config_version,
                out,
                reader,
            } => self.logger_up(
                LoggerLink { conn, out, reader },
                committed_through,
                config_version,
            ),
            CoreEvent::LoggerMessage { conn, message } => {
                if self.logger.as_ref().is_some_and(|l| l.conn == conn) {
                    match message {
                        LoggerToSide::Committed {
                            through,
                            config_version,
                        } => self.feed.committed(through, config_version),
                        LoggerToSide::Configuration { .. }
                        | LoggerToSide::NoConfiguration { .. } => {}
                    }
                }
            }
            CoreEvent::LoggerDown { conn, reason } => {
                if self.logger.as_ref().is_some_and(|l| l.conn == conn) {
                    self.event(format!("logger link down: {reason}"));
                    self.close_logger();
                }
            }
            CoreEvent::Admin { request, reply } => self.on_admin(now, request, reply),
            CoreEvent::RtTest { command, reply } => {
                // The answer reflects the present: a side woken from a pause first notices
                // what its timers say (a silent peer, lapsed leases), then reports.
                self.sync.tick(now);
                let _ = reply.send(self.rttest(now, &command));
            }
        }
    }

    fn on_pg_message(&mut self, now: u64, conn: u64, message: PgToSide) {
        let Some(path) = self.paths.get_mut(&conn) else {
            return;
        };
        path.last_heard = Instant::now();
        let pg = path.pg;
        match pg_link::on_pg_message(&mut self.sync, &self.outputs, now, pg, message) {
            PathChange::None => {}
            PathChange::Idle => path.active = false,
            PathChange::Active { replay, lost } => {
                path.active = true;
                for message in &replay {
                    let _ = path.out.send(message);
                }
                if lost {
                    self.event(format!(
                        "PG {pg} asked for outputs this side no longer keeps: they are lost"
                    ));
                }
            }
        }
    }

    fn drop_path(&mut self, conn: u64) {
        let Some(path) = self.paths.remove(&conn) else {
            return;
        };
        path.reader.abort();
        let pg = path.pg;
        if !self.paths.values().any(|p| p.pg == pg) {
            let now = self.now();
            self.sync.pg_reachable(now, pg, false);
        }
    }

    fn close_peer(&mut self) {
        if let Some(peer) = self.peer.take() {
            peer.reader.abort();
        }
        self.feed.peer_logger(None);
        let _ = self.peer_connected.send(false);
        if matches!(self.transfer, Some(TransferRole::Serving(_))) {
            self.transfer = None;
        }
    }

    /// Carries out the synchronizer's actions, in order.
    fn carry_out(&mut self) {
        while let Some(action) = self.sync.poll() {
            match action {
                Action::SendPeer(message) => {
                    if let Some(peer) = &self.peer {
                        if let Err(e) = peer.out.send(&message) {
                            let now = self.now();
                            self.event(format!("private link: {e}"));
                            self.close_peer();
                            self.sync.peer_link_down(now);
                        }
                    }
                }
                Action::ClosePeer { reason } => {
                    self.event(format!("private link closed: {reason}"));
                    self.close_peer();
                }
                Action::Deliver(ordered) => self.deliver(ordered),
                Action::AckPg { .. }
                | Action::ResendFrom { .. }
                | Action::RefuseInput { .. }
                | Action::RequestLease { .. }
                | Action::TestOtherSide => {
                    let (address, message) = pg_link::to_pgs(&action).expect("an action for PGs");
                    for path in self.paths.values() {
                        if address == PgAddress::Every || address == PgAddress::Pg(path.pg) {
                            let _ = path.out.send(&message);
                        }
                    }
                }
                Action::PersistEpoch(epoch) => self.persist_epoch(epoch),
                Action::StateTransferWanted { from } => {
                    self.event(format!("state transfer wanted from side {from}"));
                    self.transfer_retry_at = None;
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
            }
        }
        // A drop decision's own actions (delivering it while isolated, sending it to the
        // peer) are carried out before returning.
        if self.propose_drop() {
            self.carry_out();
            return;
        }
        self.send_logger_batches(false);
    }

    /// An enabled side whose logger buffer is past its bound while neither logger takes rows
    /// orders a drop decision, so that both sides drop the same records. Returns whether it
    /// ordered one (its actions then wait to be carried out).
    fn propose_drop(&mut self) -> bool {
        let now = self.now();
        match self.feed.order_drop(&mut self.sync, now) {
            Ok(ordered) => ordered,
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
            let now = self.now();
            self.sync.logger_progress(now, progress.0, progress.1);
        }
    }

    // ----- the logger -----

    fn logger_up(&mut self, link: LoggerLink, committed_through: u64, config_version: u64) {
        if let Some(old) = self.logger.take() {
            old.reader.abort();
        }
        info!(side = %self.side, committed_through, config_version, "logger connected");
        if self.sync.needs_state() {
            // This side holds no state yet (it takes its peer's): it tells its logger nothing,
            // not even where the stream resumes, as it has no configuration to send with it.
            // The transfer drops the link; the logger, connecting again, hears of its gap.
            self.logger = Some(link);
            return;
        }
        if let Some(resumes_after) = self
            .feed
            .logger_connected(committed_through, config_version)
        {
            self.event(format!(
                "the logger committed through {committed_through}; this side holds the stream \
                 after {resumes_after}: the logger recovers the rest from its peer"
            ));
            let gap = SideToLogger::Gap {
                resumes_after,
                contact_center: Box::new(self.router.contact_center()),
                config: self.router.config_stamp(),
                ranges_left: self.feed.ranges_left_before(resumes_after),
            };
            if let Err(e) = link.out.send_bulk(&gap) {
                // The logger reconnects when its link ends, and hears of the gap again.
                warn!(side = %self.side, "sending the logger its gap: {e}");
                self.feed.logger_disconnected();
                link.reader.abort();
                return;
            }
        }
        self.logger = Some(link);
        self.tell_logger_progress();
        self.send_logger_batches(true);
    }

    fn close_logger(&mut self) {
        if let Some(link) = self.logger.take() {
            link.reader.abort();
        }
        self.feed.logger_disconnected();
        self.tell_logger_progress();
    }

    /// Sends the logger what it has not been sent, in bounded batches.
    fn send_logger_batches(&mut self, progress_only: bool) {
        if self.logger.is_none() || self.sync.needs_state() {
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
            let link = self.logger.as_ref().expect("checked above");
            if let Err(e) = link.out.send(&batch) {
                self.event(format!("logger link: {e}"));
                self.close_logger();
                return;
            }
        }
    }

    // ----- configuration requests -----

    fn on_admin(&mut self, now: u64, request: AdminRequest, reply: oneshot::Sender<AdminReply>) {
        match request {
            AdminRequest::Report => {
                let _ = reply.send(AdminReply::Report(Box::new(self.report(now))));
            }
            AdminRequest::ExportConfig => {
                if self.sync.needs_state() || self.transfer.is_some() {
                    let _ = reply.send(AdminReply::NotOrdering {
                        reason: "this side is taking its peer's state".into(),
                    });
                    return;
                }
                let _ = reply.send(AdminReply::Configuration {
                    contact_center: Box::new(self.router.contact_center()),
                    config_version: self.router.config_version(),
                    config_recovery_key: self.router.config_recovery_key(),
                    recovery_key: self.sync.delivered_through(),
                });
            }
            AdminRequest::ApplyConfig(change) => {
                if self.admin_pending.len() >= ADMIN_REQUESTS_PENDING_MAX {
                    let _ = reply.send(AdminReply::Failed {
                        reason: format!(
                            "{ADMIN_REQUESTS_PENDING_MAX} configuration requests await their \
                             answer; try again"
                        ),
                    });
                    return;
                }
                // The side's own event log says who asked; the router's event, in the central
                // database's Event table, says who once the change is applied.
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
                    Ok(_) => {
                        self.admin_pending.insert(request, reply);
                    }
                    Err(reason) => {
                        let _ = reply.send(AdminReply::NotOrdering {
                            reason: reason.to_string(),
                        });
                    }
                }
            }
        }
    }

    fn persist_epoch(&mut self, epoch: Epoch) {
        if let Err(e) = write_epoch(&self.data_dir, epoch) {
            // Acting on an epoch that is not on disk could reuse it after a restart.
            panic!("cannot persist epoch {}: {e}", epoch.number);
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
            self.transfer_failed();
        }
        if let SyncEvent::StateChanged { from, to, .. } = &event {
            if to.is_enabled() && !from.is_enabled() {
                // PGs whose inputs this side refused a moment ago send them again at once,
                // rather than after their acknowledgement timeout.
                for path in self.paths.values() {
                    let _ = path.out.send(&SideToPg::Welcome { side: self.side });
                }
            }
        }
        self.event(text);
    }

    fn event(&mut self, text: String) {
        let now = self.now();
        if ["not paired", "fenced", "failed", "quarantined"]
            .iter()
            .any(|word| text.contains(word))
        {
            warn!(side = %self.side, "{text}");
        } else {
            info!(side = %self.side, "{text}");
        }
        if self.events.len() == EVENTS_KEPT_MAX {
            self.events.pop_front();
        }
        self.events.push_back((now, text));
    }

    fn send_pg(&self, pg: PgId, active_only: bool, message: SideToPg) {
        for path in self.paths.values() {
            if path.pg == pg && (path.active || !active_only) {
                let _ = path.out.send(&message);
            }
        }
    }

    /// Applies an ordered message to the router, and numbers and sends its outputs.
    fn deliver(&mut self, ordered: Ordered) {
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
                warn!(side = %self.side, seq = ordered.seq, "{}", drop.describe());
                let dropped = self.feed.decided_drop(ordered.seq, ordered.time_ms, &drop);
                self.report_local_drop(dropped);
                return;
            }
            Body::DigestCheck => {
                // The digest is computed off the core, from a snapshot taken at this sequence
                // number; the router goes on. Both sides digest at the same moment, so on a
                // small machine the two digests would take every core from routing for their
                // whole run: the thread yields to everything else.
                let state = self.router.snapshot();
                let tx = self.tx.clone();
                let seq = ordered.seq;
                let spawned = std::thread::Builder::new()
                    .name("digest".into())
                    .spawn(move || {
                        lower_this_threads_priority();
                        let digest = tandem_router::records::digest(&state);
                        let state_bytes = tandem_router::records::state_size(&state);
                        let _ = tx.blocking_send(CoreEvent::DigestComputed {
                            seq,
                            digest,
                            state_bytes,
                        });
                    });
                if let Err(e) = spawned {
                    self.event(format!("the DigestCheck at {seq} was skipped: {e}"));
                }
                self.feed.delivered(ordered.seq, None);
                return;
            }
        };
        let input = OrderedInput {
            time_ms: ordered.time_ms,
            input,
        };
        let admin_request = match source {
            Source::Admin { side, request } if side == self.side => Some(request),
            _ => None,
        };
        let mut outputs = std::mem::take(&mut self.outputs_scratch);
        outputs.clear();
        let router = &mut self.router;
        let applied = quarantine::apply_guarded(
            &self.suspect_path,
            || Suspect::of(&source, &input.input),
            || {
                #[cfg(feature = "poison-input")]
                quarantine::panic_on_poison(&input.input);
                router.apply_into(ordered.seq, &input, &mut outputs)
            },
        );
        if let Err(poisoned) = applied {
            // The router may have stopped halfway through the input: going on would spread a
            // state no one can vouch for. The input stays unacknowledged, so its PG resends it
            // to the next run, and a second crash on it quarantines it.
            error!(side = %self.side, seq = ordered.seq, "{poisoned}; stopping");
            std::process::exit(EXIT_POISONED);
        }
        let sorted = apply::sort_outputs(ordered.seq, &input, &mut outputs, &mut self.outputs);
        self.outputs_scratch = outputs;
        if let Some(result) = sorted.config_result {
            let reply = match result {
                ConfigResult::Applied { config_version } => {
                    if let Some(config) = &sorted.logged.config {
                        self.rtsrvr.config_applied(VersionedConfigChange {
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
            if let Some(waiting) = admin_request.and_then(|r| self.admin_pending.remove(&r)) {
                let _ = waiting.send(reply);
            }
        }
        for numbered in sorted.pg_outputs {
            self.send_pg(
                numbered.pg,
                true,
                SideToPg::Output {
                    generation: self.outputs.generation,
                    id: numbered.id,
                    prev: numbered.prev,
                    time_ms: numbered.time_ms,
                    output: numbered.output,
                },
            );
        }
        if matches!(input.input, Input::TimeTick) {
            self.rtsrvr.tick(
                &mut self.router,
                self.outputs.generation,
                ordered.epoch.number,
                ordered.seq,
            );
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
        let now = self.now();
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

    // ----- state transfer -----

    fn receiving_nonce(&self) -> Option<u64> {
        match &self.transfer {
            Some(TransferRole::Receiving { nonce, .. }) => Some(*nonce),
            _ => None,
        }
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce_counter += 1;
        // Unique per process and side: the clock's millisecond and a counter.
        (wall_ms() << 16) ^ self.nonce_counter ^ ((self.side == Side::B) as u64) << 63
    }

    fn start_receiving(&mut self) {
        let nonce = self.next_nonce();
        let now = self.now();
        self.transfer = Some(TransferRole::Receiving {
            nonce,
            started: Instant::now(),
            progress: None,
        });
        self.sync.request_transfer(
            now,
            TransferRequest {
                client: transfer::ROUTER_CLIENT.into(),
                state_version: tandem_router::STATE_FORMAT_VERSION,
                logic_version: self.logic_version.clone(),
                epoch: self.sync.epoch(),
                nonce,
            },
        );
        info!(side = %self.side, nonce, "asking the peer for its state");
        if self.side == Side::A {
            // A's MDS opens the session and asks B to send.
            tokio::spawn(transfer::open_from_a(
                self.topology.side_b.transfer,
                nonce,
                true,
                self.tx.clone(),
                self.logic_version.clone(),
                self.security.clone(),
            ));
        }
    }

    fn on_transfer_requested(&mut self, request: TransferRequest) {
        if let Some(reason) = transfer::refusal(&request, &self.logic_version) {
            self.event(format!("state transfer refused: {reason}"));
            self.transfer_counts.refused += 1;
            return;
        }
        let nonce = request.nonce;
        self.transfer = Some(TransferRole::Serving(request));
        if self.side == Side::A {
            tokio::spawn(transfer::open_from_a(
                self.topology.side_b.transfer,
                nonce,
                false,
                self.tx.clone(),
                self.logic_version.clone(),
                self.security.clone(),
            ));
        }
    }

    fn serve_cut(&mut self, now: u64, nonce: u64) -> Result<transfer::Cut, String> {
        match &self.transfer {
            Some(TransferRole::Serving(request)) if request.nonce == nonce => {}
            _ => return Err("no state transfer was asked for with this nonce".into()),
        }
        // Deliveries the synchronizer has decided but the core not yet carried out must reach
        // the router first: the cut says the state includes everything delivered.
        self.carry_out();
        let started = Instant::now();
        let cut = self.sync.begin_transfer(now).map_err(|e| e.to_string())?;
        // A persistent structure: the copy costs pointer copies, and the router goes on.
        let state: State = self.router.snapshot();
        let history = self.feed.history();
        let stall_us = started.elapsed().as_micros() as u64;
        // The cut's messages go on the link now, ahead of what follows.
        self.carry_out();
        Ok(transfer::Cut {
            cut,
            state,
            side_data: rmp_serde::to_vec(&transfer::SideDataRef {
                outputs: &self.outputs,
                history,
            })
            .map_err(|e| e.to_string())?,
            stall_us,
            direction: format!("({}->{})", self.side, self.side.peer()),
        })
    }

    fn on_transfer_done(&mut self, now: u64, nonce: u64, outcome: TransferOutcome) {
        match outcome {
            TransferOutcome::Sent(record) => {
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
            TransferOutcome::Received {
                cut,
                state,
                side_data: transfer::SideData { outputs, history },
                record,
            } => {
                if self.receiving_nonce() != Some(nonce) {
                    return;
                }
                let cut_seq = cut.seq;
                match self.sync.on_transfer_received(now, cut) {
                    Ok(()) => match Router::from_state(*state) {
                        Ok(router) => {
                            self.router = router;
                            self.rtsrvr.attach(&mut self.router);
                            // The stream before the cut is the peer's: this side's logger
                            // recovers what it lacks of it from the peer's logger.
                            // At the cut, which may follow the router's last input: a drop
                            // decision or a digest check delivered last is in the state too.
                            self.feed.restart_at(cut_seq, &history);
                            if let Some(link) = self.logger.take() {
                                link.reader.abort();
                            }
                            // Requests ordered before the cut were answered by the old state.
                            self.admin_pending.clear();
                            self.state_size_now = record.bytes;
                            self.outputs = outputs;
                            self.transfer = None;
                            self.transfer_retry_ms = TRANSFER_RETRY_MS_MIN;
                            self.event(format!(
                                "state received {}: {} bytes in {} ms, digest checked",
                                record.direction, record.bytes, record.duration_ms
                            ));
                            self.transfer_counts.received += 1;
                            self.transfer_counts.bytes_received += record.bytes;
                            self.push_history(record);
                        }
                        Err(e) => {
                            // The synchronizer already took the cut: this side must start over.
                            panic!("a checked state did not load into the router: {e}");
                        }
                    },
                    Err(e) => {
                        self.event(format!("state transfer discarded: {e}"));
                        self.transfer_failed();
                    }
                }
            }
            TransferOutcome::Failed(reason) => {
                let ours = match &self.transfer {
                    Some(TransferRole::Receiving { nonce: n, .. }) => *n == nonce,
                    Some(TransferRole::Serving(r)) => r.nonce == nonce,
                    None => false,
                };
                if ours {
                    self.event(format!("state transfer failed: {reason}"));
                    self.transfer_failed();
                }
            }
        }
    }

    fn transfer_progress(&mut self, nonce: u64, received: u64, total: u64) {
        if let Some(TransferRole::Receiving {
            nonce: n, progress, ..
        }) = &mut self.transfer
        {
            if *n == nonce {
                *progress = Some((received, total));
            }
        }
    }

    /// Ends the transfer under way as failed; a receiver retries after a backoff.
    fn transfer_failed(&mut self) {
        self.transfer_counts.failed += 1;
        if matches!(self.transfer, Some(TransferRole::Receiving { .. })) {
            self.transfer_retry_at =
                Some(Instant::now() + Duration::from_millis(self.transfer_retry_ms));
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

    fn rttest(&mut self, now: u64, command: &str) -> String {
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
                self.router.last_seq() == self.rtsrvr.last_tick_seq()
            );
        }
        if command == "feed" {
            let f = self.rtsrvr.shared().status();
            return format!(
                "feed generation={} latest_frame={} image_rows={} frames_kept={} bytes_kept={} \
                 ticks_skipped={} restarts={} subscribers={} snapshots_sent={} \
                 slow_disconnects={}\n",
                f.generation,
                f.latest_frame,
                f.image_rows,
                f.frames_kept,
                f.bytes_kept,
                f.ticks_skipped,
                f.restarts,
                f.subscribers,
                f.snapshots_sent,
                f.slow_disconnects
            );
        }
        if let Some(dump) = dumps::render(command, &self.router) {
            return dump;
        }
        let reachable = self.pgs_reachable();
        let inputs = StatusInputs {
            side: self.side,
            now_ms: now,
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
            logic_version: &self.logic_version,
            history: &self.sync_history,
            events: &self.events,
            transfer_under_way: self.transfer.is_some(),
            transfer_progress: match &self.transfer {
                Some(TransferRole::Receiving { progress, .. }) => *progress,
                _ => None,
            },
        };
        status::render(command, &inputs)
    }

    /// Each PG of the topology by name, and whether a path to it is up.
    fn pgs_reachable(&self) -> Vec<(String, bool)> {
        self.topology
            .pgs
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    self.paths.values().any(|path| path.pg == p.id),
                )
            })
            .collect()
    }

    fn report(&self, now: u64) -> SideReport {
        let checks = self.sync.digest_checks();
        SideReport {
            side: self.side,
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
            transfer_progress: match &self.transfer {
                Some(TransferRole::Receiving { progress, .. }) => *progress,
                _ => None,
            },
            digest_checks_equal: checks.equal,
            digest_checks_differed: checks.differed,
            config_version: self.router.config_version(),
            started_ms: self.started_ms,
            now_ms: now,
            events: self
                .events
                .iter()
                .skip(self.events.len().saturating_sub(SIDE_REPORT_EVENTS_MAX))
                .cloned()
                .collect(),
        }
    }
}

/// The PG an output goes to, if it goes to one.
static CONNECTION_NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_conn() -> u64 {
    CONNECTION_NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs the reader of a private-link connection until it ends.
/// Reads a link's frames into the core's channel, but only once `up` (the event announcing the
/// link, given the reader's abort handle) is queued: the core learns of a link before any of its
/// messages, which it would otherwise drop as coming from no known link.
fn spawn_link_reader<R, M>(
    mut reader: FrameReader<R, M>,
    first: Option<M>,
    tx: mpsc::Sender<CoreEvent>,
    up: impl FnOnce(tokio::task::AbortHandle) -> CoreEvent + Send + 'static,
    message: impl Fn(M) -> CoreEvent + Send + 'static,
    down: impl FnOnce(String) -> CoreEvent + Send + 'static,
    closed: &'static str,
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    M: serde::de::DeserializeOwned + Send + 'static,
{
    let (go, gate) = oneshot::channel::<()>();
    let reader_tx = tx.clone();
    let task = tokio::spawn(async move {
        if gate.await.is_err() {
            return;
        }
        if let Some(m) = first {
            if reader_tx.send(message(m)).await.is_err() {
                return;
            }
        }
        let reason = loop {
            match reader.next().await {
                Ok(Some(m)) => {
                    if reader_tx.send(message(m)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break closed.to_string(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = reader_tx.send(down(reason)).await;
    });
    let abort = task.abort_handle();
    tokio::spawn(async move {
        if tx.send(up(abort)).await.is_ok() {
            let _ = go.send(());
        }
    });
}

/// How long side B waits for a new private-link connection's Hello before closing it.
const PEER_HELLO_TIMEOUT_MS: u64 = 5_000;

/// Side A's connection to B: the link is up at once, and A's synchronizer says Hello first.
fn spawn_peer(stream: Stream, tx: mpsc::Sender<CoreEvent>) {
    let (read, write) = stream.into_split();
    start_peer(FrameReader::new(read), None, write, tx);
}

/// A connection to side B's private listener becomes the link only once its first message is a
/// Hello: one that says anything else, or nothing, never displaces the link B has.
async fn take_peer(stream: Stream, tx: mpsc::Sender<CoreEvent>) -> Result<(), String> {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::<_, PeerMessage>::new(read);
    let first = tokio::time::timeout(Duration::from_millis(PEER_HELLO_TIMEOUT_MS), reader.next())
        .await
        .map_err(|_| format!("no Hello within {PEER_HELLO_TIMEOUT_MS} ms"))?
        .map_err(|e| e.to_string())?;
    match first {
        Some(hello @ PeerMessage::Hello(_)) => {
            start_peer(reader, Some(hello), write, tx);
            Ok(())
        }
        Some(_) => Err("its first message was not a Hello".into()),
        None => Err("it closed before its Hello".into()),
    }
}

fn start_peer(
    reader: FrameReader<transport::ReadHalf, PeerMessage>,
    first: Option<PeerMessage>,
    write: transport::WriteHalf,
    tx: mpsc::Sender<CoreEvent>,
) {
    let conn = next_conn();
    let out = Outbound::spawn(write);
    spawn_link_reader(
        reader,
        first,
        tx,
        move |reader| CoreEvent::PeerUp { conn, out, reader },
        move |message| CoreEvent::PeerMessage { conn, message },
        move |reason| CoreEvent::PeerDown { conn, reason },
        "the peer closed the connection",
    );
}

/// Only the other side may join the private link.
const PRIVATE_LINK_ROLES: &[Role] = &[Role::Central];
/// State transfers are between the sides.
const TRANSFER_ROLES: &[Role] = &[Role::Central];
/// PGs, loggers, distributors and operators' tools; each hello is then checked against the
/// role that sent it (`hello_allowed`).
const PUBLIC_ROLES: &[Role] = &[Role::Central, Role::Pg, Role::Aw];

async fn accept_private(listener: TcpListener, tx: mpsc::Sender<CoreEvent>, security: Security) {
    let refusals = Arc::new(RefusalLog::new("the private link"));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        let security = security.clone();
        let refusals = refusals.clone();
        // The handshake runs in a task of its own, so a client that stalls it delays no other.
        tokio::spawn(async move {
            match transport::accept(stream, &security, ClientAuth::Roles(PRIVATE_LINK_ROLES)).await
            {
                Ok((stream, _)) => {
                    if let Err(reason) = take_peer(stream, tx).await {
                        refusals.refused(format_args!("{from}: {reason}"));
                    }
                }
                Err(e) => refusals.refused(format_args!("{from}: {e}")),
            }
        });
    }
}

/// Whether a client whose certificate names `peer` may send `hello` (in plaintext there is no
/// certificate, and every hello is taken).
fn hello_allowed(hello: &PublicHello, peer: Option<&PeerIdentity>) -> Result<(), String> {
    let Some(peer) = peer else {
        return Ok(());
    };
    let (what, roles): (&str, &[Role]) = match hello {
        PublicHello::Pg { .. } => ("a PG link", &[Role::Pg]),
        PublicHello::Logger { .. } => ("a logger link", &[Role::Central]),
        PublicHello::Distributor { .. } => ("a real-time feed", &[Role::Aw]),
        // Distributors forward configuration changes their admins make, export the
        // configuration for updateaw and read the side's report for the system page.
        PublicHello::Admin(_) => ("an administrative request", &[Role::Central, Role::Aw]),
        PublicHello::RtTest { .. } => ("rttest", &[Role::Central, Role::Aw]),
    };
    if roles.contains(&peer.role) {
        Ok(())
    } else {
        Err(format!("{peer} may not open {what}"))
    }
}

/// Who made a configuration change, for the event log: what the client says (a token's
/// holder, an operator's user name) and the certificate it came with, which proves it.
fn author(claimed: &str, peer: Option<&PeerIdentity>) -> String {
    // Bounded, so a client cannot grow every side's event log with one change.
    let claimed: String = claimed.chars().take(AUTHOR_CHARS_MAX).collect();
    match (claimed.is_empty(), peer) {
        (false, Some(peer)) => format!("{claimed} via certificate {peer}"),
        (true, Some(peer)) => format!("certificate {peer}"),
        (false, None) => format!("{claimed} (plaintext: unverified)"),
        (true, None) => "an unauthenticated plaintext client".into(),
    }
}

/// The longest author a client may claim for a configuration change.
const AUTHOR_CHARS_MAX: usize = 200;

/// Side A keeps the private link up: it connects whenever there is none.
async fn connect_private(
    addr: SocketAddr,
    tx: mpsc::Sender<CoreEvent>,
    mut connected: watch::Receiver<bool>,
    security: Security,
) {
    let mut last_attempt: Option<tokio::time::Instant> = None;
    loop {
        if !*connected.borrow_and_update() {
            // At most one attempt per retry interval, also when a link that came up drops at
            // once (a peer or a network path that accepts and closes).
            if let Some(at) = last_attempt {
                tokio::time::sleep_until(at + Duration::from_millis(PEER_CONNECT_RETRY_MS)).await;
            }
            last_attempt = Some(tokio::time::Instant::now());
            match transport::connect(addr, 1_000, &security, Role::Central).await {
                Ok(stream) => {
                    spawn_peer(stream, tx.clone());
                    // Wait for the core to take it (or refuse it) before trying again.
                    let _ = tokio::time::timeout(Duration::from_secs(1), connected.changed()).await;
                    continue;
                }
                // A refused handshake is a configuration fault an operator must see (a wrong
                // CA or certificate); a refused connection is the peer being down.
                Err(e @ (TransportError::Handshake(_) | TransportError::HandshakeTimeout(_))) => {
                    warn!(%addr, "private link: {e}");
                }
                Err(_) => {}
            }
        }
        // The retry interval of a refused connection, not a synchronization: a change of the
        // link's state wakes this at once.
        tokio::select! {
            _ = connected.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(PEER_CONNECT_RETRY_MS)) => {}
        }
    }
}

async fn accept_public(
    listener: TcpListener,
    tx: mpsc::Sender<CoreEvent>,
    rtsrvr: Arc<FeedShared>,
    security: Security,
    limits: Limits,
) {
    let refusals = Arc::new(RefusalLog::new("the public listener"));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.public_connections_max));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.refused(format_args!(
                "{from}: limits.public_connections_max ({}) connections are open",
                limits.public_connections_max
            ));
            continue;
        };
        let tx = tx.clone();
        let rtsrvr = rtsrvr.clone();
        let security = security.clone();
        let refusals = refusals.clone();
        let frame_max = limits.frame_payload_bytes_max;
        tokio::spawn(async move {
            // Held as long as the connection: the feed and admin answers end with this task,
            // and a PG or logger link hands it to its reader below.
            let (stream, peer) =
                match transport::accept(stream, &security, ClientAuth::Roles(PUBLIC_ROLES)).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        refusals.refused(format_args!("{from}: {e}"));
                        return;
                    }
                };
            let (read, write) = stream.into_split();
            let mut reader = FrameReader::<_, PublicHello>::new(read).with_payload_max(frame_max);
            let hello = match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
                Ok(Ok(Some(hello))) => hello,
                _ => return,
            };
            if let Err(reason) = hello_allowed(&hello, peer.as_ref()) {
                refusals.refused(format_args!("{from}: {reason}"));
                return;
            }
            match hello {
                PublicHello::Pg { pg, incarnation } => {
                    let conn = next_conn();
                    let out = Outbound::<SideToPg>::spawn(write);
                    // The rest of the stream is PG messages.
                    spawn_link_reader(
                        reader.retype::<PgToSide>(),
                        None,
                        tx,
                        move |reader| CoreEvent::PgUp {
                            conn,
                            pg,
                            incarnation,
                            out,
                            reader,
                        },
                        move |message| CoreEvent::PgMessage { conn, message },
                        // The link's reader holds the connection's slot until the link ends.
                        move |reason| {
                            drop(slot);
                            CoreEvent::PgDown { conn, reason }
                        },
                        "the PG closed the connection",
                    );
                }
                PublicHello::Logger {
                    committed_through,
                    config_version,
                } => {
                    let conn = next_conn();
                    let out = Outbound::<SideToLogger>::spawn(write);
                    spawn_link_reader(
                        // The logger's answer to a cold start is a whole configuration.
                        reader
                            .retype::<LoggerToSide>()
                            .with_payload_max(tandem_mds::frame::BULK_FRAME_PAYLOAD_BYTES_MAX),
                        None,
                        tx,
                        move |reader| CoreEvent::LoggerUp {
                            conn,
                            committed_through,
                            config_version,
                            out,
                            reader,
                        },
                        move |message| CoreEvent::LoggerMessage { conn, message },
                        move |reason| {
                            drop(slot);
                            CoreEvent::LoggerDown { conn, reason }
                        },
                        "the logger closed the connection",
                    );
                }
                PublicHello::Admin(mut request) => {
                    if let AdminRequest::ApplyConfig(change) = &mut request {
                        change.author = author(&change.author, peer.as_ref());
                    }
                    let (reply, answer) = oneshot::channel();
                    if tx.send(CoreEvent::Admin { request, reply }).await.is_ok() {
                        if let Ok(answer) = answer.await {
                            let mut write = write;
                            // An export is a whole configuration.
                            let _ = transport::write_message_with_max(
                                &mut write,
                                &answer,
                                tandem_mds::frame::BULK_FRAME_PAYLOAD_BYTES_MAX,
                            )
                            .await;
                        }
                    }
                }
                PublicHello::Distributor { name, held } => {
                    // The distributor sends nothing more; its reader half is dropped, and a
                    // closed socket shows as a failed write.
                    drop(reader);
                    rtsrvr.serve(name, held, write).await;
                }
                PublicHello::RtTest { command } => {
                    let (reply, answer) = oneshot::channel();
                    if tx.send(CoreEvent::RtTest { command, reply }).await.is_ok() {
                        if let Ok(text) = answer.await {
                            let mut write = write;
                            let _ = transport::write_message(&mut write, &text).await;
                        }
                    }
                }
            }
        });
    }
}

async fn accept_transfers(
    listener: TcpListener,
    tx: mpsc::Sender<CoreEvent>,
    logic_version: LogicVersion,
    security: Security,
) {
    let refusals = Arc::new(RefusalLog::new("the state-transfer listener"));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        let logic_version = logic_version.clone();
        let security = security.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            match transport::accept(stream, &security, ClientAuth::Roles(TRANSFER_ROLES)).await {
                Ok((stream, _)) => transfer::accept_at_b(stream, tx, logic_version).await,
                Err(e) => refusals.refused(format_args!("{from}: {e}")),
            }
        });
    }
}

/// The nice value of background work (digests) that must not delay routing.
const BACKGROUND_NICE: libc::c_int = 19;

/// Gives the calling thread the lowest scheduling priority. On Linux the nice value belongs to
/// each thread, so the rest of the process keeps its own. Failing changes nothing but speed.
fn lower_this_threads_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
    }
}
