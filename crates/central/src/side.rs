//! One side of the central controller as a process: the tokio shell around the side's
//! machine (`crate::machine::SideMachine`).
//!
//! One task, the core, owns the machine and is the only one to touch it: every socket task
//! sends it `CoreEvent`s over a bounded channel, the core hands each to the machine with the
//! wall clock's time, and carries out the machine's effects in order. Every decision is the
//! machine's, which the whole-system simulation runs as it is; the core only reads the clock,
//! writes sockets and files, and starts threads and tasks. Sockets: the public listener (PGs,
//! loggers, distributors, configuration requests and rttest), the private MDS link (side B
//! listens, side A connects), and state-transfer sessions (side B listens, side A's MDS always
//! opens them).

use crate::machine::{SideEffect, SideMachine, SideSettings};
use crate::metrics;
use crate::quarantine;
use crate::rtsrvr::{FeedCore, FeedShared};
use crate::transfer::{self, TransferOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_mds::tls::{PeerIdentity, Role, Security};
use tandem_mds::transport::{
    self, ClientAuth, FrameReader, Outbound, RefusalLog, Stream, TransportError,
};
use tandem_mds::{
    AdminReply, AdminRequest, Epoch, LoggerToSide, LogicVersion, PeerMessage, PgToSide,
    PublicHello, Side, SideToLogger, SideToPg, SyncSettings, Synchronizer,
};
use tandem_model::config::{ConfigStamp, ContactCenter, Settings};
use tandem_model::ids::PgId;
use tandem_model::topology::{Limits, Topology};
use tandem_router::{Router, State};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

pub use crate::machine::{ADMIN_REQUESTS_PENDING_MAX, EVENTS_KEPT_MAX, SYNC_HISTORY_MAX};

/// Events queued to the core before socket readers wait.
pub const CORE_EVENTS_MAX: usize = 65_536;
/// Events the core takes in one batch before it carries out what they caused.
const CORE_EVENTS_PER_BATCH_MAX: usize = 1_024;
/// The core's timer: the synchronizer wants a tick at least every few milliseconds.
const CORE_TICK_MS: u64 = 5;
/// How often side A tries the private link while it is down.
const PEER_CONNECT_RETRY_MS: u64 = 100;
/// How often a side that waits for its logger's configuration says so in its log.
const CONFIGURATION_WAIT_LOG_MS: u64 = 5_000;
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
struct PgLink {
    out: Outbound<SideToPg>,
    reader: tokio::task::AbortHandle,
}

struct Peer {
    conn: u64,
    out: Outbound<PeerMessage>,
    reader: tokio::task::AbortHandle,
}

/// The shell around the side's machine: the links' writers and readers, the feed's thread,
/// the answers awaited by configuration requests. Every decision is the machine's.
struct Core {
    machine: SideMachine,
    topology: Topology,
    security: Security,
    data_dir: PathBuf,
    /// Where the input in flight is recorded if the router panics on it.
    suspect_path: PathBuf,
    logic_version: LogicVersion,
    peer: Option<Peer>,
    peer_connected: watch::Sender<bool>,
    paths: BTreeMap<u64, PgLink>,
    logger: Option<LoggerLink>,
    /// The real-time feed's publisher thread and its subscribers.
    rtsrvr: FeedCore,
    /// Configuration requests awaiting the machine's answer, by ticket.
    admin_waiting: BTreeMap<u64, oneshot::Sender<AdminReply>>,
    admin_ticket: u64,
    /// Wall-clock time at which the next metrics snapshot is due.
    metrics_due_ms: u64,
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
    let mut side_settings = SideSettings::new(
        options.side,
        logic_version.clone(),
        topology
            .pgs
            .iter()
            .map(|p| (p.id, p.name.clone()))
            .collect(),
    );
    side_settings.pg_heartbeat_interval_ms = topology.mds.pg_heartbeat_interval_ms;
    side_settings.pg_heartbeat_misses_max = topology.mds.pg_heartbeat_misses_max;
    side_settings.state_size_alarm_bytes = topology.mds.state_size_alarm_bytes;
    side_settings.logger_buffer_rows =
        usize::try_from(topology.logger.buffer_rows).unwrap_or(usize::MAX);
    let mut machine = SideMachine::new(side_settings, sync, router, start_ms, start_ms);
    machine.set_quarantined_listed(quarantined_listed);
    let mut core = Core {
        machine,
        topology,
        security: options.security.clone(),
        data_dir,
        suspect_path,
        logic_version,
        peer: None,
        peer_connected,
        paths: BTreeMap::new(),
        logger: None,
        rtsrvr,
        admin_waiting: BTreeMap::new(),
        admin_ticket: 0,
        metrics_due_ms: start_ms,
        tx,
    };
    if let Some((link, committed_through, config_version)) = logger.take() {
        let conn = link.conn;
        core.logger = Some(link);
        core.machine
            .logger_up(wall_ms(), conn, committed_through, config_version);
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
        self.persist_epoch(self.machine.sync().epoch());
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    self.on_event(event);
                    // Take what else is queued before ticking, in one go.
                    let mut taken = 0;
                    while taken < CORE_EVENTS_PER_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                        taken += 1;
                    }
                    self.machine.end_of_batch(wall_ms());
                }
                _ = timer.tick() => self.on_tick(),
            }
            self.carry_out();
        }
    }

    fn on_tick(&mut self) {
        let now = wall_ms();
        self.machine.tick(now);
        if now >= self.metrics_due_ms {
            self.metrics_due_ms = now + metrics::METRICS_INTERVAL_MS;
            metrics::record(&self.machine.metrics_snapshot());
        }
    }

    fn on_event(&mut self, event: CoreEvent) {
        let now = wall_ms();
        let machine = &mut self.machine;
        match event {
            CoreEvent::PeerUp { conn, out, reader } => {
                if let Some(old) = self.peer.replace(Peer { conn, out, reader }) {
                    old.reader.abort();
                }
                let _ = self.peer_connected.send(true);
                machine.peer_up(now, conn);
            }
            CoreEvent::PeerMessage { conn, message } => machine.peer_message(now, conn, message),
            CoreEvent::PeerDown { conn, reason } => machine.peer_down(now, conn, &reason),
            CoreEvent::PgUp {
                conn,
                pg,
                incarnation,
                out,
                reader,
            } => {
                self.paths.insert(conn, PgLink { out, reader });
                machine.pg_up(now, conn, pg, incarnation);
            }
            CoreEvent::PgMessage { conn, message } => machine.pg_message(now, conn, message),
            CoreEvent::PgDown { conn, reason } => {
                machine.pg_down(now, conn, &reason);
                self.paths.remove(&conn);
            }
            CoreEvent::ServeCut { nonce, reply } => {
                // What the machine decided before goes out first: the cut's messages follow it
                // on the link.
                self.carry_out();
                let started = Instant::now();
                let cut = self
                    .machine
                    .serve_cut(now, nonce)
                    .map(|taken| transfer::Cut {
                        cut: taken.cut,
                        state: taken.state,
                        side_data: taken.side_data,
                        stall_us: started.elapsed().as_micros() as u64,
                        direction: taken.direction,
                    });
                self.carry_out();
                let _ = reply.send(cut);
            }
            CoreEvent::TransferHeader { nonce, state_bytes } => {
                machine.transfer_header(now, nonce, state_bytes)
            }
            CoreEvent::TransferProgress {
                nonce,
                received,
                total,
            } => machine.transfer_progress(now, nonce, received, total),
            CoreEvent::TransferDone { nonce, outcome } => match outcome {
                TransferOutcome::Sent(record) => machine.transfer_sent(now, nonce, record),
                TransferOutcome::Received {
                    cut,
                    state,
                    side_data,
                    record,
                } => {
                    machine.transfer_received(now, nonce, cut, *state, side_data, record);
                }
                TransferOutcome::Failed(reason) => machine.transfer_failed(now, nonce, &reason),
            },
            CoreEvent::ResolveNonce { nonce, reply } => {
                // Side B's listener asks: is this a session we receive on (true), or one we
                // serve (false)?
                let _ = reply.send(machine.transfer_role(nonce));
            }
            CoreEvent::DigestComputed {
                seq,
                digest,
                state_bytes,
            } => machine.digest_computed(now, seq, digest, state_bytes),
            CoreEvent::LoggerUp {
                conn,
                committed_through,
                config_version,
                out,
                reader,
            } => {
                if let Some(old) = self.logger.replace(LoggerLink { conn, out, reader }) {
                    old.reader.abort();
                }
                machine.logger_up(now, conn, committed_through, config_version);
            }
            CoreEvent::LoggerMessage { conn, message } => {
                machine.logger_message(now, conn, message)
            }
            CoreEvent::LoggerDown { conn, reason } => machine.logger_down(now, conn, &reason),
            CoreEvent::Admin { request, reply } => {
                self.admin_ticket += 1;
                self.admin_waiting.insert(self.admin_ticket, reply);
                machine.admin(now, self.admin_ticket, request);
            }
            CoreEvent::RtTest { command, reply } => {
                // The answer reflects the present: a side woken from a pause first notices
                // what its timers say (a silent peer, lapsed leases), then reports.
                machine.tick(now);
                let text = if command == "feed" {
                    feed_status_line(&self.rtsrvr.shared().status())
                } else {
                    machine.rttest(now, &command)
                };
                let _ = reply.send(text);
            }
        }
    }

    /// Carries out the machine's effects, in order, each before the next is asked for.
    fn carry_out(&mut self) {
        if self.rtsrvr.take_needs_complete() {
            self.machine.feed_start_again();
        }
        while let Some(effect) = self.machine.poll() {
            match effect {
                SideEffect::SendPeer { conn, message } => {
                    let Some(peer) = self.peer.as_ref().filter(|p| p.conn == conn) else {
                        continue;
                    };
                    if let Err(e) = peer.out.send(&message) {
                        self.machine
                            .peer_send_failed(wall_ms(), conn, &e.to_string());
                    }
                }
                SideEffect::ClosePeer { conn } => {
                    if self.peer.as_ref().is_some_and(|p| p.conn == conn) {
                        let peer = self.peer.take().expect("checked above");
                        peer.reader.abort();
                        let _ = self.peer_connected.send(false);
                    }
                }
                SideEffect::SendPg { conn, message } => {
                    let Some(path) = self.paths.get(&conn) else {
                        continue;
                    };
                    if let Err(e) = path.out.send(&message) {
                        self.machine.pg_send_failed(wall_ms(), conn, &e.to_string());
                    }
                }
                SideEffect::ClosePg { conn } => {
                    if let Some(path) = self.paths.remove(&conn) {
                        path.reader.abort();
                    }
                }
                SideEffect::SendLogger {
                    conn,
                    message,
                    bulk,
                } => {
                    let Some(link) = self.logger.as_ref().filter(|l| l.conn == conn) else {
                        continue;
                    };
                    let sent = if bulk {
                        link.out.send_bulk(&message)
                    } else {
                        link.out.send(&message)
                    };
                    if let Err(e) = sent {
                        self.machine
                            .logger_send_failed(wall_ms(), conn, &e.to_string());
                    }
                }
                SideEffect::CloseLogger { conn } => {
                    if self.logger.as_ref().is_some_and(|l| l.conn == conn) {
                        let link = self.logger.take().expect("checked above");
                        link.reader.abort();
                    }
                }
                SideEffect::PersistEpoch(epoch) => self.persist_epoch(epoch),
                SideEffect::RecordSuspect {
                    suspect,
                    seq,
                    message,
                } => {
                    // The router may have stopped halfway through the input: going on would
                    // spread a state no one can vouch for. The input stays unacknowledged, so
                    // its PG resends it to the next run, and a second crash on it quarantines
                    // it.
                    let side = self.machine.side();
                    match quarantine::record_suspect(&self.suspect_path, &suspect) {
                        Ok(()) => error!(
                            %side, seq,
                            "applying the input `{suspect}` panicked ({message}); it is recorded \
                             as suspect; stopping"
                        ),
                        Err(e) => error!(
                            %side, seq,
                            "applying the input `{suspect}` panicked ({message}), and recording \
                             it failed: {e}; stopping"
                        ),
                    }
                    std::process::exit(EXIT_POISONED);
                }
                SideEffect::OpenTransferSession { nonce, a_receives } => {
                    tokio::spawn(transfer::open_from_a(
                        self.topology.side_b.transfer,
                        nonce,
                        a_receives,
                        self.tx.clone(),
                        self.logic_version.clone(),
                        self.security.clone(),
                    ));
                }
                SideEffect::ComputeDigest { seq, state } => self.compute_digest(seq, *state),
                SideEffect::PublishFeedTick(tick) => {
                    if !self.rtsrvr.publish(*tick) {
                        self.machine.feed_start_again();
                    }
                }
                SideEffect::AdminReply { ticket, reply } => {
                    if let Some(waiting) = self.admin_waiting.remove(&ticket) {
                        let _ = waiting.send(reply);
                    }
                }
                SideEffect::Log { warn, text } => {
                    let side = self.machine.side();
                    if warn {
                        warn!(%side, "{text}");
                    } else {
                        info!(%side, "{text}");
                    }
                }
            }
        }
    }

    /// Digests a snapshot taken at the DigestCheck `seq` on a thread of its own. Both sides
    /// digest at the same moment, so on a small machine the two digests would take every core
    /// from routing for their whole run: the thread yields to everything else.
    fn compute_digest(&mut self, seq: u64, state: State) {
        let tx = self.tx.clone();
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
            warn!(side = %self.machine.side(), "the DigestCheck at {seq} was skipped: {e}");
        }
    }

    fn persist_epoch(&mut self, epoch: Epoch) {
        if let Err(e) = write_epoch(&self.data_dir, epoch) {
            // Acting on an epoch that is not on disk could reuse it after a restart.
            panic!("cannot persist epoch {}: {e}", epoch.number);
        }
    }
}

/// `rttest feed`: the feed's frames, history and subscribers.
fn feed_status_line(f: &crate::rtsrvr::FeedStatus) -> String {
    format!(
        "feed generation={} latest_frame={} image_rows={} frames_kept={} bytes_kept={} \
         ticks_skipped={} restarts={} subscribers={} snapshots_sent={} slow_disconnects={}\n",
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
    )
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
