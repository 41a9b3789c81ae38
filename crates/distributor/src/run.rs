//! A Distributor AW: rtdist takes the feed from a side, updateaw keeps the configuration, a
//! writer puts both into the local AW database, and rtclient serves clients from the image held
//! in memory.
//!
//! Data flow: `FeedClient` gives each snapshot or frame in order. The feed task asks `UpdateAw`
//! what the frame means for the configuration, applies the rows to the in-memory image (what
//! rtclient serves), tells the clients, and queues the frame for the writer. The writer runs
//! `writer::AwWriteQueue`: whatever is queued is merged (the last value of each row wins; a
//! snapshot starts over) and written with Feed_State in one transaction, so a slow disk costs
//! larger transactions, not a growing queue. Configuration copies go through the same queue,
//! so writes stay in order. A write the database refuses for a while is tried again with what
//! came meanwhile merged in, so the database never skips a frame.

use crate::rtdist::{FeedClient, FeedUpdate};
use crate::updateaw::{ConfigDecision, UpdateAw, REBUILD_LOOP_RETRY_MS};
use crate::writer::{write_batch, AwWriteJob, AwWriteQueue, Refusal, WriteItem};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tandem_db::aw::{AwDb, FeedState};
use tandem_db::{DbError, DbLocation};
use tandem_mds::admin::{self, AdminError};
use tandem_mds::tls::Security;
use tandem_mds::{AdminReply, AdminRequest};
use tandem_model::config::{ConfigStamp, ContactCenter};
use tandem_model::feed::{FeedFrameHeader, FeedKey, FeedRow};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

/// Frames and configuration copies waiting for the writer; the feed waits when it is full.
pub const WRITES_QUEUED_MAX: usize = 64;
/// Updates a client may fall behind before it is disconnected as too slow.
pub const CLIENT_UPDATES_QUEUED_MAX: usize = 256;
/// How long an export of the central configuration may take.
pub const EXPORT_TIMEOUT_MS: u64 = 30_000;
/// The pause between failed attempts to initialize the local database.
pub const INITIALIZE_RETRY_MS: u64 = 1_000;
/// The pause between failed attempts to write frames to the AW database.
pub const AW_WRITE_RETRY_MS: u64 = 500;
/// The least time between two start-overs (a configuration copy and a snapshot) after the AW
/// database refused a write for good, so that a snapshot it refuses too does not loop.
pub const AW_START_OVER_INTERVAL_MS: u64 = 10_000;
/// Events kept in memory for the system page (all go to Local_Event too).
pub const EVENTS_KEPT_MAX: usize = 200;

#[derive(Debug, Error)]
pub enum DistributorError {
    #[error("the AW database: {0}")]
    Db(#[from] DbError),
    #[error("the central configuration: {0}")]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Unexpected(String),
    #[error("rtclient's listener: {0}")]
    Listener(std::io::Error),
}

/// How to run one distributor.
#[derive(Clone, Debug)]
pub struct DistributorSettings {
    pub name: String,
    /// The sides' public addresses with their names, the preferred side first.
    pub sides: [(String, SocketAddr); 2],
    pub db: DbLocation,
    /// rtclient's listener.
    pub http: SocketAddr,
    /// The other distributors of the site (name, HTTP address), for client failover.
    pub site_peers: Vec<(String, SocketAddr)>,
    /// Every other distributor of the topology (name, HTTP address), for the system page.
    pub distributors: Vec<(String, SocketAddr)>,
    /// TLS with this distributor's certificate, or plaintext with `--insecure-plaintext`.
    pub security: Security,
    /// The installation's HTTP tokens (`tandem token create`).
    pub tokens_file: std::path::PathBuf,
    /// What one client may hold or send.
    pub limits: tandem_model::topology::Limits,
}

impl DistributorSettings {
    /// The sides by name and address, the preferred side first, as `admin` asks them.
    pub fn side_addrs(&self) -> [(&str, SocketAddr); 2] {
        [
            (self.sides[0].0.as_str(), self.sides[0].1),
            (self.sides[1].0.as_str(), self.sides[1].1),
        ]
    }
}

/// What `tandem aw status` and the system page show.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct DistributorStatus {
    pub name: String,
    pub backend: String,
    /// The side the feed comes from now.
    pub side: Option<String>,
    pub generation: u64,
    pub frame_number: u64,
    pub epoch: u64,
    pub frame_config_version: u64,
    pub frames: u64,
    pub snapshots: u64,
    pub subscriptions: u64,
    /// Wall time at receipt minus the frame's ordered time.
    pub feed_lag_ms: Option<i64>,
    /// The frame the AW database holds.
    pub aw_db_frame: u64,
    /// How far the AW database is behind the router: commit time minus the frame's ordered
    /// time at the last commit; while writes fail, how long the oldest frame not yet written
    /// has waited (it grows, so an alarm on it fires).
    pub aw_db_lag_ms: Option<i64>,
    pub aw_db_writes: u64,
    pub aw_db_rows_written: u64,
    pub aw_db_writes_queued: u64,
    /// Attempts to write the AW database that failed (frames and configuration copies).
    #[serde(default)]
    pub aw_db_write_failures: u64,
    /// Snapshots and frames received and not in the AW database: merged into a write it
    /// refused, waiting to be written again, or left out after one it refused for good, until
    /// a configuration copy and a snapshot (0 while writes go through).
    #[serde(default)]
    pub aw_db_updates_unwritten: u64,
    /// Commit time minus ordered time of the agent state changes written in the last
    /// `FRESHNESS_WINDOW_S` seconds.
    #[serde(default)]
    pub aw_db_freshness: Option<crate::freshness::FreshnessSummary>,
    /// The configuration version the AW database holds.
    pub config_version: Option<u64>,
    /// "initializing", "rebuilding", "ok" or "rebuild loop: ...".
    pub updateaw: String,
    pub rebuilds: u64,
    pub rebuild_loops: u64,
    pub clients: u64,
    pub clients_disconnected_slow: u64,
}

/// One event of the distributor, as the system page lists it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DistributorEvent {
    pub wall_time_ms: u64,
    pub message: String,
}

/// The real-time rows as of one frame.
#[derive(Default)]
pub struct Image {
    pub header: Option<FeedFrameHeader>,
    pub rows: BTreeMap<FeedKey, FeedRow>,
}

/// What clients are told after each update of the image.
#[derive(Debug)]
pub enum ClientUpdate {
    /// The image was replaced: clients read their rows again.
    Snapshot { header: FeedFrameHeader },
    Frame {
        header: FeedFrameHeader,
        upserts: Vec<FeedRow>,
        deletes: Vec<FeedKey>,
    },
}

/// What rtclient shares with the feed.
pub struct Shared {
    pub settings: DistributorSettings,
    pub image: RwLock<Image>,
    pub updates: broadcast::Sender<Arc<ClientUpdate>>,
    pub status: Mutex<DistributorStatus>,
    pub events: Mutex<VecDeque<DistributorEvent>>,
    /// The AW database's configuration, for names.
    pub configuration: RwLock<Option<Arc<(ContactCenter, ConfigStamp)>>>,
    /// True once the local database holds the central configuration; configuration edits
    /// through this distributor wait for it.
    pub initialized: watch::Sender<bool>,
    /// Set by the writer when the AW database refused a write for good (`DbError::is_transient`
    /// false), with the reason: the feed copies the configuration again and subscribes for a
    /// snapshot, which replaces every real-time row.
    pub start_over: Mutex<Option<String>>,
    pub db: AwDb,
    /// The system page's last view of the sides and the other distributors.
    pub system: tokio::sync::Mutex<crate::system::SystemView>,
    pub aw_db_freshness: Mutex<crate::freshness::FreshnessWindow>,
    pub tokens: crate::auth::TokenStore,
    pub auth_failures: crate::auth::AuthFailures,
}

impl Shared {
    pub fn status(&self) -> DistributorStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        status.clients = self.updates.receiver_count() as u64;
        status.aw_db_freshness = self
            .aw_db_freshness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary(wall_ms());
        status
    }

    fn update_status(&self, f: impl FnOnce(&mut DistributorStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn events(&self) -> Vec<DistributorEvent> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.iter().cloned().collect()
    }

    /// Logs an event, keeps it for the system page and writes it to Local_Event.
    async fn event(&self, message: String) {
        info!(distributor = %self.settings.name, "{message}");
        let wall_time_ms = wall_ms();
        {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            if events.len() >= EVENTS_KEPT_MAX {
                events.pop_front();
            }
            events.push_back(DistributorEvent {
                wall_time_ms,
                message: message.clone(),
            });
        }
        if let Err(e) = self.db.local_event(wall_time_ms, &message).await {
            warn!(distributor = %self.settings.name, "Local_Event: {e}");
        }
    }

    async fn reload_configuration(&self) -> Result<(), DbError> {
        let loaded = self.db.load_configuration().await?;
        *self
            .configuration
            .write()
            .unwrap_or_else(PoisonError::into_inner) = loaded.map(Arc::new);
        Ok(())
    }
}

pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the AW database, starts rtclient, and runs the feed until the process ends.
pub async fn run(settings: DistributorSettings) -> Result<(), DistributorError> {
    let db = AwDb::open(&settings.db).await?;
    let local = db.config().await?;
    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .map_err(DistributorError::Listener)?;
    let (updates, _) = broadcast::channel(CLIENT_UPDATES_QUEUED_MAX);
    let shared = Arc::new(Shared {
        status: Mutex::new(DistributorStatus {
            name: settings.name.clone(),
            backend: db.backend_name().into(),
            config_version: local.map(|c| c.version),
            updateaw: "initializing".into(),
            ..DistributorStatus::default()
        }),
        tokens: crate::auth::TokenStore::new(settings.tokens_file.clone()),
        auth_failures: crate::auth::AuthFailures::new(settings.limits.auth_failures_per_minute_max),
        settings,
        image: RwLock::new(Image::default()),
        updates,
        events: Mutex::new(VecDeque::new()),
        configuration: RwLock::new(None),
        initialized: watch::channel(false).0,
        start_over: Mutex::new(None),
        db: db.clone(),
        system: tokio::sync::Mutex::new(Default::default()),
        aw_db_freshness: Mutex::new(Default::default()),
    });
    tokio::spawn(crate::rtclient::serve(shared.clone(), listener));
    let (write_tx, write_rx) = mpsc::channel(WRITES_QUEUED_MAX);
    tokio::spawn(writer(shared.clone(), write_rx));

    let mut updateaw = UpdateAw::new(local);
    if local.is_some() {
        shared.reload_configuration().await?;
        shared.initialized.send_replace(true);
        shared.update_status(|s| s.updateaw = "ok".into());
    } else {
        initialize(&shared, &write_tx, &mut updateaw, None).await;
    }
    feed(shared, write_tx, updateaw).await
}

/// Copies the central configuration into the AW database, retrying until a side answers.
/// `reason` is the mismatch that made it a rebuild (None: the first initialization).
async fn initialize(
    shared: &Arc<Shared>,
    write_tx: &mpsc::Sender<WriteItem>,
    updateaw: &mut UpdateAw,
    reason: Option<String>,
) {
    shared.initialized.send_replace(false);
    let rebuild = reason.is_some();
    shared.update_status(|s| {
        s.updateaw = if rebuild {
            "rebuilding"
        } else {
            "initializing"
        }
        .into()
    });
    let bar = indicatif::ProgressBar::new(3);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "Initialize Local Database [{bar:30}] {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        bar.set_position(0);
        bar.set_message("exporting the central configuration");
        let started = Instant::now();
        let reply = admin::ask_ordering_side(
            shared.settings.side_addrs(),
            &AdminRequest::ExportConfig,
            EXPORT_TIMEOUT_MS,
            &shared.settings.security,
        )
        .await;
        let (contact_center, config, recovery_key) = match reply {
            Ok(AdminReply::Configuration {
                contact_center,
                config_version,
                config_recovery_key,
                recovery_key,
            }) => (
                contact_center,
                ConfigStamp {
                    version: config_version,
                    recovery_key: config_recovery_key,
                },
                recovery_key,
            ),
            Ok(other) => {
                warn!(distributor = %shared.settings.name, "export: unexpected answer {other:?}");
                tokio::time::sleep(Duration::from_millis(INITIALIZE_RETRY_MS)).await;
                continue;
            }
            Err(e) => {
                warn!(distributor = %shared.settings.name, "export: {e}");
                tokio::time::sleep(Duration::from_millis(INITIALIZE_RETRY_MS)).await;
                continue;
            }
        };
        let objects = contact_center.objects().count();
        bar.inc(1);
        let config_version = config.version;
        bar.set_message(format!(
            "writing {objects} objects at configuration version {config_version}"
        ));
        if write_tx
            .send(WriteItem::Configuration {
                contact_center,
                config,
            })
            .await
            .is_err()
        {
            return;
        }
        // The writer marks the database initialized once the copy is committed.
        let mut initialized = shared.initialized.subscribe();
        let _ = initialized.wait_for(|done| *done).await;
        bar.inc(1);
        bar.set_message("reading it back");
        if let Err(e) = shared.reload_configuration().await {
            warn!(distributor = %shared.settings.name, "reading the configuration back: {e}");
        }
        bar.inc(1);
        bar.finish_and_clear();
        updateaw.initialized(config, recovery_key, rebuild);
        shared.update_status(|s| {
            s.config_version = Some(config_version);
            s.updateaw = "ok".into();
            s.rebuilds = updateaw.rebuilds;
        });
        let took_ms = started.elapsed().as_millis();
        let message = match &reason {
            None => format!(
                "Initialize Local Database: {objects} objects at configuration version \
                 {config_version} in {took_ms} ms"
            ),
            Some(reason) => format!(
                "the local configuration was rebuilt at version {config_version} ({objects} \
                 objects, {took_ms} ms) because {reason}"
            ),
        };
        shared.event(message).await;
        return;
    }
}

async fn feed(
    shared: Arc<Shared>,
    write_tx: mpsc::Sender<WriteItem>,
    mut updateaw: UpdateAw,
) -> Result<(), DistributorError> {
    let settings = &shared.settings;
    let mut client = FeedClient::new(
        settings.name.clone(),
        settings.sides[0].1,
        settings.sides[1].1,
        settings.security.clone(),
    );
    let mut rebuild_not_before: Option<Instant> = None;
    let mut start_over_not_before: Option<Instant> = None;
    loop {
        if start_over_not_before.is_none_or(|t| Instant::now() >= t) {
            let reason = shared
                .start_over
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(reason) = reason {
                start_over_not_before =
                    Some(Instant::now() + Duration::from_millis(AW_START_OVER_INTERVAL_MS));
                initialize(&shared, &write_tx, &mut updateaw, Some(reason)).await;
                client.start_over();
            }
        }
        let update = client.next().await;
        let received_wall_ms = wall_ms();
        let header = *update.header();
        let side = client
            .side()
            .map(|i| settings.sides[i].0.clone())
            .unwrap_or_default();
        let (changes, snapshot) = match &update {
            FeedUpdate::Snapshot { .. } => (&[][..], true),
            FeedUpdate::Frame { delta, .. } => (&delta.config_changes[..], false),
        };
        let mut config = None;
        match updateaw.on_frame(&header, changes) {
            ConfigDecision::UpToDate => {}
            ConfigDecision::Apply {
                changes,
                config: stamp,
            } => config = Some((changes, stamp)),
            ConfigDecision::Rebuild { reason } => {
                if rebuild_not_before.is_none_or(|t| Instant::now() >= t) {
                    rebuild_not_before = None;
                    initialize(&shared, &write_tx, &mut updateaw, Some(reason)).await;
                }
            }
            ConfigDecision::RebuildLoop { reason } => {
                rebuild_not_before =
                    Some(Instant::now() + Duration::from_millis(REBUILD_LOOP_RETRY_MS));
                shared.update_status(|s| {
                    s.updateaw = format!("rebuild loop: {reason}");
                    s.rebuild_loops = updateaw.loops;
                });
                shared
                    .event(format!(
                        "rebuild loop: the configuration mismatches again right after a \
                         rebuild ({reason}); the next rebuild waits {REBUILD_LOOP_RETRY_MS} ms"
                    ))
                    .await;
            }
        }
        let update = Arc::new(update);
        let client_update = apply_to_image(&shared, &update);
        let _ = shared.updates.send(Arc::new(client_update));
        shared.update_status(|s| {
            s.side = Some(side.clone());
            s.generation = header.generation;
            s.frame_number = header.number;
            s.epoch = header.epoch;
            s.frame_config_version = header.config_version;
            if snapshot {
                s.snapshots += 1;
            } else {
                s.frames += 1;
            }
            s.subscriptions = client.subscriptions;
            s.feed_lag_ms = Some(received_wall_ms as i64 - header.time_ms as i64);
            s.aw_db_writes_queued = (WRITES_QUEUED_MAX - write_tx.capacity()) as u64;
        });
        let item = WriteItem::Feed {
            update,
            config,
            side,
        };
        if write_tx.send(item).await.is_err() {
            return Err(DistributorError::Unexpected(
                "the AW database writer stopped".into(),
            ));
        }
    }
}

fn apply_to_image(shared: &Shared, update: &FeedUpdate) -> ClientUpdate {
    let mut image = shared.image.write().unwrap_or_else(PoisonError::into_inner);
    match update {
        FeedUpdate::Snapshot { header, rows } => {
            image.rows = rows.iter().map(|r| (r.key(), r.clone())).collect();
            image.header = Some(*header);
            ClientUpdate::Snapshot { header: *header }
        }
        FeedUpdate::Frame { header, delta } => {
            for key in &delta.deletes {
                image.rows.remove(key);
            }
            for row in &delta.upserts {
                image.rows.insert(row.key(), row.clone());
            }
            image.header = Some(*header);
            ClientUpdate::Frame {
                header: *header,
                upserts: delta.upserts.clone(),
                deletes: delta.deletes.clone(),
            }
        }
    }
}

/// Writes what the feed queues, in the order `AwWriteQueue` gives (a configuration copy alone,
/// snapshots and frames merged into one transaction). A write the database refuses for a while
/// (a full disk, say) is tried again every `AW_WRITE_RETRY_MS` with what came meanwhile merged
/// in, while the image rtclient serves goes on; one it would refuse every time is left out,
/// and the feed starts over (`Shared::start_over`): a configuration copy, then a snapshot that
/// replaces every real-time row.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<WriteItem>) {
    let mut queue = AwWriteQueue::default();
    let mut feed_state = FeedState::default();
    // Failed attempts at the configuration copy being written: its first failure is an event.
    let mut copy_failures = 0u32;
    loop {
        let mut waited = None;
        if queue.waits_for_feed() {
            match rx.recv().await {
                Some(item) => waited = Some(item),
                None => return,
            }
        }
        let job = queue.next_job(|| waited.take().or_else(|| rx.try_recv().ok()));
        if let Some(left_out) = queue.left_out() {
            let behind_ms = wall_ms() as i64 - left_out.since_time_ms as i64;
            shared.update_status(|s| {
                s.aw_db_updates_unwritten = left_out.updates;
                s.aw_db_lag_ms = Some(behind_ms);
            });
        }
        let batch = match job {
            None => continue,
            Some(AwWriteJob::Configuration {
                contact_center,
                config,
            }) => {
                match shared
                    .db
                    .replace_configuration(&contact_center, config)
                    .await
                {
                    Ok(()) => {
                        copy_failures = 0;
                        shared.initialized.send_replace(true);
                    }
                    Err(e) => {
                        shared.update_status(|s| s.aw_db_write_failures += 1);
                        warn!(distributor = %shared.settings.name, "writing the configuration: {e}");
                        if copy_failures == 0 {
                            shared
                                .event(format!(
                                    "writing the configuration copy at version {} to the AW \
                                     database failed: {e}; it is tried again every \
                                     {INITIALIZE_RETRY_MS} ms, and the feed waits for it",
                                    config.version
                                ))
                                .await;
                        }
                        copy_failures += 1;
                        queue.configuration_refused(contact_center, config);
                        tokio::time::sleep(Duration::from_millis(INITIALIZE_RETRY_MS)).await;
                    }
                }
                continue;
            }
            Some(AwWriteJob::Feed(batch)) => batch,
        };
        // Agent rows whose state changed after this time are changes this commit makes
        // visible.
        let previous_frame_time_ms = feed_state.frame_time_ms;
        let failures = batch.failures;
        match write_batch(&shared.db, batch, &mut feed_state, wall_ms()).await {
            Ok(committed) => {
                if failures > 0 {
                    shared
                        .event(format!(
                            "the AW database takes writes again: frame {} written after {} \
                             failed attempts",
                            committed.header.number, failures
                        ))
                        .await;
                }
                // The commit is what the lag measures.
                let committed_ms = wall_ms();
                let lag_ms = committed_ms as i64 - committed.header.time_ms as i64;
                if !committed.replace {
                    let mut window = shared
                        .aw_db_freshness
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for row in &committed.upserts {
                        if let FeedRow::Agent(a) = row {
                            if a.date_time_last_state_change_ms > previous_frame_time_ms {
                                window.record(
                                    committed_ms,
                                    committed_ms as i64 - a.date_time_last_state_change_ms as i64,
                                );
                            }
                        }
                    }
                }
                shared.update_status(|s| {
                    s.aw_db_frame = committed.header.number;
                    s.aw_db_lag_ms = Some(lag_ms);
                    s.aw_db_updates_unwritten = 0;
                    s.aw_db_writes += 1;
                    s.aw_db_rows_written += committed.rows;
                    if let Some(v) = committed.config_version {
                        s.config_version = Some(v);
                    }
                });
                if committed.config_version.is_some() {
                    if let Err(e) = shared.reload_configuration().await {
                        warn!(distributor = %shared.settings.name, "reading the configuration back: {e}");
                    }
                }
            }
            Err((batch, e)) => {
                let (number, updates) = (batch.header.number, batch.updates());
                let waited_ms = wall_ms() as i64 - batch.first_time_ms as i64;
                match queue.batch_refused(batch, &e) {
                    Refusal::TryAgain => {
                        shared.update_status(|s| {
                            s.aw_db_write_failures += 1;
                            s.aw_db_updates_unwritten = updates;
                            s.aw_db_lag_ms = Some(waited_ms);
                        });
                        if failures == 0 {
                            shared
                                .event(format!(
                                    "writing frame {number} to the AW database failed: {e}; it \
                                     is tried again every {AW_WRITE_RETRY_MS} ms with what \
                                     follows"
                                ))
                                .await;
                        }
                        tokio::time::sleep(Duration::from_millis(AW_WRITE_RETRY_MS)).await;
                    }
                    Refusal::LeftOut => {
                        shared.update_status(|s| {
                            s.aw_db_write_failures += 1;
                            s.aw_db_updates_unwritten = updates;
                            s.aw_db_lag_ms = Some(waited_ms);
                        });
                        let reason = format!(
                            "the AW database refused frame {number} for good ({e}); its \
                             {updates} snapshots and frames were left out"
                        );
                        shared
                            .event(format!(
                                "{reason}: the configuration is copied again and the feed \
                                 starts over from a snapshot"
                            ))
                            .await;
                        *shared
                            .start_over
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
                    }
                }
            }
        }
    }
}
