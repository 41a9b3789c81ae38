//! The loggers in the simulation. Each side's logger process writes a real central database
//! (SQLite in memory, through `tandem-db`) with the real logger's write and gap-recovery code
//! (`tandem_logger::run::write_batches`, `copy_gap`); each side feeds it through the real
//! `LoggerFeed`. The database survives the logger's crash, as its disk would; the peer link the
//! loggers recover over runs on the private network.

use super::admin::objects;
use super::{side_of, Event, LinkId, World};
use rand::Rng;
use std::collections::VecDeque;
use tandem_central::logger_feed::{LoggerFeed, PeerLogger};
use tandem_logger::db::{CentralDb, DbLocation, Progress};
use tandem_logger::peer::DatabasePeer;
use tandem_logger::run::{
    copy_gap, gap_source, take_configuration, write_batches, GapSource, GapToRecover, LoggerError,
    PeerSource,
};
use tandem_logger::schema::{Row, SqlValue, TableKind};
use tandem_mds::{LoggerToSide, SideToLogger};
use tandem_model::config::ContactCenter;

pub(super) const LINK_SIDE_TO_LOGGER: u8 = 3;
pub(super) const LINK_LOGGER_TO_SIDE: u8 = 4;
/// A logger connects to its side this often while it has no connection (`tandem logger`'s
/// reconnect interval).
const LOGGER_RECONNECT_MS: u64 = 200;
/// A recovering logger asks its peer's progress this often.
const PEER_POLL_MS: u64 = 100;
/// The side sends its logger a progress-only batch and tells its peer of its logger this
/// often (the side core's tick).
pub(super) const SIDE_LOGGER_TICK_MS: u64 = 100;
/// Quiet steps granted at the end for both loggers to commit what their sides delivered.
pub(super) const LOGGER_CATCH_UP_MS_MAX: u64 = 4_000;

thread_local! {
    /// The databases' calls are async (SQLite's run on tokio's blocking threads); the
    /// simulation waits for each, so its order is the order of the calls.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime starts");
}

pub(super) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// A side's logger process and its database.
pub(super) struct SimLogger {
    /// The central database: it outlives the process.
    pub(super) db: CentralDb,
    pub(super) runs: bool,
    pub(super) paused: bool,
    /// The connection to its side, while one exists.
    pub(super) generation: Option<u64>,
    last_connect_ms: u64,
    /// What the side sent, read and not yet written, in order.
    queue: VecDeque<SideToLogger>,
    /// While a gap is recovered: the side holds the stream only after this.
    recovering: Option<GapToRecover>,
    last_peer_poll_ms: u64,
    /// The transaction under way ends then.
    busy_until_ms: u64,
    /// Whether the database refuses to grow (a full disk).
    pub(super) capped: bool,
    /// Bytes that arrived while the process was paused.
    pub(super) inbox: VecDeque<Event>,
    pub(super) write_failures: u64,
    pub(super) gaps_recovered: u64,
    /// Gaps its peer logger did not hold all of and never would: both sides lost the rows.
    pub(super) gaps_held_by_neither: u64,
}

impl SimLogger {
    /// A logger whose database is seeded with the contact center, as `tandem init` does.
    pub(super) fn new(cc: &ContactCenter) -> SimLogger {
        let db = block_on(async {
            let db = CentralDb::open(&DbLocation::sqlite_in_memory()).await?;
            db.seed(cc).await?;
            Ok::<_, tandem_logger::db::DbError>(db)
        })
        .expect("an in-memory central database opens and is seeded");
        SimLogger {
            db,
            runs: true,
            paused: false,
            generation: None,
            last_connect_ms: 0,
            queue: VecDeque::new(),
            recovering: None,
            last_peer_poll_ms: 0,
            busy_until_ms: 0,
            capped: false,
            inbox: VecDeque::new(),
            write_failures: 0,
            gaps_recovered: 0,
            gaps_held_by_neither: 0,
        }
    }

    fn drop_connection(&mut self, now_ms: u64) {
        self.generation = None;
        self.queue.clear();
        self.recovering = None;
        self.last_connect_ms = now_ms;
    }

    pub(super) fn progress(&self) -> Progress {
        block_on(self.db.progress()).expect("an in-memory database reads its progress")
    }
}

/// The side's end of its logger link.
pub(super) struct SideLogger {
    pub(super) feed: LoggerFeed,
    /// The logger's connection, while it has one.
    pub(super) link: Option<u64>,
    /// What the peer was last told of this side's logger.
    pub(super) progress_told: Option<(bool, u64)>,
}

impl SideLogger {
    pub(super) fn new(rows_max: usize) -> SideLogger {
        SideLogger {
            feed: LoggerFeed::new(rows_max, 0),
            link: None,
            progress_told: None,
        }
    }
}

impl World {
    fn logger_link(side: usize, to_logger: bool) -> LinkId {
        if to_logger {
            (LINK_SIDE_TO_LOGGER, side, side)
        } else {
            (LINK_LOGGER_TO_SIDE, side, side)
        }
    }

    /// The logger's process: connect when it has no connection, write what its side sent, or
    /// recover a gap from its peer.
    pub(super) fn logger_tick(&mut self, side: usize) {
        let now = self.now_ms;
        let logger = &self.loggers[side];
        if !logger.runs || logger.paused {
            return;
        }
        if logger.generation.is_none() {
            if self.runs(side) && now >= logger.last_connect_ms + LOGGER_RECONNECT_MS {
                self.logger_connects(side);
            }
            return;
        }
        if now < logger.busy_until_ms {
            return;
        }
        if let Some(gap) = logger.recovering.clone() {
            if now >= logger.last_peer_poll_ms + PEER_POLL_MS {
                self.loggers[side].last_peer_poll_ms = now;
                self.logger_recovers(side, &gap);
            }
            return;
        }
        let mut batches = Vec::new();
        while let Some(message) = self.loggers[side].queue.pop_front() {
            match message {
                // The simulated sides build their state from the contact center.
                SideToLogger::SendConfiguration => {}
                // The batches before a gap are written before it is closed.
                gap @ SideToLogger::Gap { .. } if !batches.is_empty() => {
                    self.loggers[side].queue.push_front(gap);
                    break;
                }
                SideToLogger::Gap {
                    resumes_after,
                    contact_center,
                    config,
                    ranges_left,
                } => {
                    let db = self.loggers[side].db.clone();
                    let closed = block_on(async {
                        let taken = take_configuration(&db, &contact_center, config).await?;
                        if db.holds_through(resumes_after).await? {
                            db.close_gap(resumes_after, &[], &[]).await?;
                            return Ok((taken, true));
                        }
                        Ok::<_, tandem_logger::db::DbError>((taken, false))
                    });
                    if let Ok((true, _)) = closed {
                        self.trace_line(format!(
                            "logger {} takes its side's configuration, {config}",
                            side_of(side)
                        ));
                    }
                    match closed.map(|(_, closed)| closed) {
                        Ok(true) => {}
                        Ok(false) => {
                            let committed = self.loggers[side].progress().committed_through;
                            self.trace_line(format!(
                                "logger {} recovers through {resumes_after} from its peer \
                                 (committed through {committed})",
                                side_of(side),
                            ));
                            self.loggers[side].recovering = Some(GapToRecover {
                                resumes_after,
                                ranges_left,
                            });
                            break;
                        }
                        Err(error) => return self.logger_fails(side, error.into()),
                    }
                }
                batch @ SideToLogger::Batch { .. } => batches.push(batch),
            }
        }
        if batches.is_empty() {
            return;
        }
        let written = block_on(write_batches(&self.loggers[side].db, batches));
        match written {
            Ok(()) => {
                let write_ms = self.logger_rng.random_range(1..=8);
                self.loggers[side].busy_until_ms = now + write_ms;
                self.logger_acknowledges(side);
            }
            Err(error) => self.logger_fails(side, error),
        }
    }

    fn logger_connects(&mut self, side: usize) {
        self.next_logger_generation += 1;
        let generation = self.next_logger_generation;
        let progress = self.loggers[side].progress();
        let logger = &mut self.loggers[side];
        logger.generation = Some(generation);
        logger.queue.clear();
        logger.recovering = None;
        self.trace_line(format!(
            "logger {} connects, committed through {}",
            side_of(side),
            progress.committed_through
        ));
        self.send_logger_link(
            side,
            false,
            Event::LoggerHello {
                side,
                generation,
                committed_through: progress.committed_through,
                config_version: progress.config_version,
            },
        );
    }

    fn logger_acknowledges(&mut self, side: usize) {
        let Some(generation) = self.loggers[side].generation else {
            return;
        };
        let progress = self.loggers[side].progress();
        self.send_logger_link(
            side,
            false,
            Event::FromLogger {
                side,
                generation,
                message: LoggerToSide::Committed {
                    through: progress.committed_through,
                    config_version: progress.config_version,
                },
            },
        );
    }

    /// Whether the peer link reaches `side`'s peer logger: it runs, and the private network
    /// carries bytes.
    fn peer_logger_reachable(&self, side: usize) -> bool {
        let peer = &self.loggers[1 - side];
        peer.runs && !peer.paused && self.private_link_up
    }

    fn logger_recovers(&mut self, side: usize, gap: &GapToRecover) {
        let resumes_after = gap.resumes_after;
        if !self.peer_logger_reachable(side) {
            return;
        }
        let mut peer = DatabasePeer {
            db: self.loggers[1 - side].db.clone(),
            recovering_through: self.loggers[1 - side]
                .recovering
                .as_ref()
                .map(|gap| gap.resumes_after),
        };
        let db = self.loggers[side].db.clone();
        let recovered = block_on(async {
            let source = gap_source(&peer.holdings().await?, resumes_after);
            if source == GapSource::Wait {
                return Ok(None);
            }
            copy_gap(&db, &mut peer, gap, || Ok(()))
                .await
                .map(|rows| Some((rows, source)))
        });
        match recovered {
            Ok(None) => {}
            Ok(Some((rows, source))) => {
                let what = if source == GapSource::CopyWhatRemains {
                    self.loggers[side].gaps_held_by_neither += 1;
                    "what its peer held of the gap"
                } else {
                    "the gap"
                };
                self.trace_line(format!(
                    "logger {} recovered {what}: {rows} rows through {resumes_after}",
                    side_of(side)
                ));
                self.loggers[side].recovering = None;
                self.loggers[side].gaps_recovered += 1;
                self.logger_acknowledges(side);
            }
            Err(error) => self.logger_fails(side, error),
        }
    }

    /// Resets the logger connection `generation` of `side`, as heard at the logger's end
    /// (`to_logger`) or the side's.
    pub(super) fn reset_logger_link(&mut self, side: usize, generation: u64, to_logger: bool) {
        self.send_logger_link(
            side,
            to_logger,
            Event::LoggerLinkReset {
                side,
                generation,
                to_logger,
            },
        );
    }

    /// A write or a recovery failed: the logger records it, drops its link to the side and
    /// connects again, as `tandem logger` does.
    fn logger_fails(&mut self, side: usize, error: LoggerError) {
        self.trace_line(format!("logger {} failed: {error}", side_of(side)));
        self.loggers[side].write_failures += 1;
        self.logger_fails_silently(side);
    }

    pub(super) fn crash_logger(&mut self, side: usize) {
        if !self.loggers[side].runs {
            return;
        }
        self.trace_line(format!("logger {} down", side_of(side)));
        self.logger_fails_silently(side);
        let logger = &mut self.loggers[side];
        logger.runs = false;
        logger.paused = false;
        logger.inbox.clear();
        logger.busy_until_ms = 0;
    }

    /// The logger's connection resets without a write failing (its process died).
    fn logger_fails_silently(&mut self, side: usize) {
        let now = self.now_ms;
        if let Some(generation) = self.loggers[side].generation {
            self.reset_logger_link(side, generation, false);
        }
        self.loggers[side].drop_connection(now);
    }

    pub(super) fn restart_logger(&mut self, side: usize) {
        if self.loggers[side].runs {
            return;
        }
        self.trace_line(format!("logger {} starts", side_of(side)));
        let now = self.now_ms;
        let logger = &mut self.loggers[side];
        logger.runs = true;
        logger.drop_connection(now);
        // A process starting connects at once.
        logger.last_connect_ms = 0;
    }

    pub(super) fn resume_logger(&mut self, side: usize) {
        self.loggers[side].paused = false;
        self.trace_line(format!("resume logger {}", side_of(side)));
        while let Some(event) = self.loggers[side].inbox.pop_front() {
            self.handle(event);
        }
    }

    pub(super) fn set_db_capped(&mut self, side: usize, capped: bool) {
        if self.loggers[side].capped == capped {
            return;
        }
        block_on(self.loggers[side].db.cap_growth(capped))
            .expect("an in-memory SQLite database takes a growth cap");
        self.loggers[side].capped = capped;
        self.trace_line(format!(
            "central database {} {}",
            side_of(side),
            if capped { "full" } else { "has room again" }
        ));
    }

    fn send_logger_link(&mut self, side: usize, to_logger: bool, event: Event) {
        self.send(Self::logger_link(side, to_logger), event);
    }

    // ----- the logger's messages -----

    pub(super) fn logger_hears_side(
        &mut self,
        side: usize,
        generation: u64,
        message: SideToLogger,
    ) {
        let logger = &mut self.loggers[side];
        if logger.runs && logger.generation == Some(generation) {
            logger.queue.push_back(message);
        }
    }

    pub(super) fn logger_link_reset(&mut self, side: usize, generation: u64) {
        let now = self.now_ms;
        let logger = &mut self.loggers[side];
        if logger.runs && logger.generation == Some(generation) {
            logger.drop_connection(now);
        }
    }

    // ----- the side's end -----

    pub(super) fn side_hears_logger_hello(
        &mut self,
        side: usize,
        generation: u64,
        committed_through: u64,
        config_version: u64,
    ) {
        if !self.runs(side) {
            // No process listens: the logger's connection is refused.
            self.reset_logger_link(side, generation, true);
            return;
        }
        if let Some(old) = self.side_loggers[side].link.take() {
            self.reset_logger_link(side, old, true);
        }
        let slot = &mut self.side_loggers[side];
        slot.link = Some(generation);
        if self.needs_state(side) {
            // It holds no state yet: it tells its logger nothing until a transfer brings one.
            return;
        }
        let slot = &mut self.side_loggers[side];
        if let Some(resumes_after) = slot
            .feed
            .logger_connected(committed_through, config_version)
        {
            let router = self.sides[side].router.as_ref().expect("the side runs");
            let (config, contact_center) = (router.config_stamp(), router.contact_center());
            let ranges_left = slot.feed.ranges_left_before(resumes_after);
            self.trace_line(format!(
                "side {} tells its logger of a gap: the stream resumes after {resumes_after}; \
                 its configuration is {config}",
                side_of(side)
            ));
            let gap = SideToLogger::Gap {
                resumes_after,
                contact_center: Box::new(contact_center),
                config,
                ranges_left,
            };
            self.send_logger_link(
                side,
                true,
                Event::ToLogger {
                    side,
                    generation,
                    message: gap,
                },
            );
        }
        self.tell_logger_progress(side);
        self.send_logger_batches(side, true);
    }

    pub(super) fn side_hears_logger(
        &mut self,
        side: usize,
        generation: u64,
        message: LoggerToSide,
    ) {
        if !self.runs(side) || self.side_loggers[side].link != Some(generation) {
            return;
        }
        if let LoggerToSide::Committed {
            through,
            config_version,
        } = message
        {
            self.side_loggers[side]
                .feed
                .committed(through, config_version);
        }
    }

    /// The side's logger connection closed (from either end).
    pub(super) fn side_closes_logger(&mut self, side: usize, tell_logger: bool) {
        let Some(generation) = self.side_loggers[side].link.take() else {
            return;
        };
        if tell_logger {
            self.reset_logger_link(side, generation, true);
        }
        self.side_loggers[side].feed.logger_disconnected();
        if self.runs(side) {
            self.tell_logger_progress(side);
        }
    }

    /// Sends the logger what it has not been sent, as the side's core does.
    pub(super) fn send_logger_batches(&mut self, side: usize, progress_only: bool) {
        let Some(generation) = self.side_loggers[side].link else {
            return;
        };
        if self.needs_state(side) {
            return;
        }
        if !self.side_loggers[side].feed.logger_connected_now() {
            self.trace_line(format!(
                "side {}: the logger fell behind the buffer: its link is reset",
                side_of(side)
            ));
            self.side_closes_logger(side, true);
            return;
        }
        let mut progress = progress_only;
        while let Some(batch) = self.side_loggers[side].feed.next_batch(progress) {
            progress = false;
            self.send_logger_link(
                side,
                true,
                Event::ToLogger {
                    side,
                    generation,
                    message: batch,
                },
            );
        }
    }

    /// Tells the peer of this side's logger when that changed since it was last told.
    pub(super) fn tell_logger_progress(&mut self, side: usize) {
        let slot = &mut self.side_loggers[side];
        let progress = (slot.link.is_some(), slot.feed.status().committed_through);
        if self.connected && slot.progress_told != Some(progress) {
            slot.progress_told = Some(progress);
            let now = self.now_ms;
            self.sync_mut(side)
                .logger_progress(now, progress.0, progress.1);
        }
    }

    /// After the side's actions: a drop decision when the buffer is full and no logger takes
    /// rows, then what the logger has not been sent. Returns whether a decision was ordered
    /// (its actions wait in the synchronizer).
    pub(super) fn side_logger_work(&mut self, side: usize) -> bool {
        let now = self.now_ms;
        let sync = self.sides[side].sync.as_mut().expect("a running side");
        match self.side_loggers[side].feed.order_drop(sync, now) {
            Ok(true) => {
                self.drop_decisions += 1;
                return true;
            }
            Ok(false) => {}
            Err(reason) => {
                self.trace_line(format!("drop decision not ordered: {reason}"));
            }
        }
        self.send_logger_batches(side, false);
        false
    }

    /// The feed for the delivered message `seq`.
    pub(super) fn logged(
        &mut self,
        side: usize,
        seq: u64,
        message: Option<tandem_model::logged::LoggedMessage>,
    ) {
        self.side_loggers[side].feed.delivered(seq, message);
    }

    pub(super) fn peer_logger_progress(&mut self, side: usize, peer: Option<PeerLogger>) {
        self.side_loggers[side].feed.peer_logger(peer);
        if peer.is_none() {
            self.side_loggers[side].progress_told = None;
        }
    }

    /// At the end: both loggers commit what their sides delivered through `through`, and the
    /// two central databases are then equal, configuration and ordered tables alike.
    pub(super) fn check_central_databases(&mut self, through: u64) {
        let mut waited = 0;
        loop {
            let committed = [0, 1].map(|side| self.loggers[side].progress().committed_through);
            if committed.iter().all(|&c| c >= through) {
                break;
            }
            if waited >= LOGGER_CATCH_UP_MS_MAX {
                let detail = format!(
                    "the sides delivered through {through}; the loggers committed through \
                     {committed:?}; feeds {:?} and {:?}",
                    self.side_loggers[0].feed.status(),
                    self.side_loggers[1].feed.status()
                );
                self.violate(
                    "liveness: both loggers commit what their sides delivered",
                    detail,
                );
                return;
            }
            for _ in 0..50 {
                self.step();
            }
            waited += 50;
            if self.violation.is_some() {
                return;
            }
        }
        // The history of record: what the enabled side's state holds, per epoch range.
        let enabled = (0..2)
            .find(|&side| {
                self.sides[side]
                    .sync
                    .as_ref()
                    .is_some_and(|sync| sync.state().is_enabled())
            })
            .expect("check_end found one side enabled");
        let history = self.sides[enabled].history.clone();
        let of_record = |key: u64| {
            let range = tandem_mds::seq_epoch_range(key);
            key <= through && history.iter().any(|&(r, last)| r == range && key <= last)
        };
        // A configuration change ordered in a history later abandoned leaves its
        // Config_Message_Log rows, not of record, in the central database of the logger that
        // logged it (left out below, as every ordered row of that history is); the
        // configuration tables, which hold only the result, hold the configuration of record
        // all the same: a gap brings the side's, and a logger holding another takes it.
        if self.config_change_seqs.iter().any(|&seq| !of_record(seq)) {
            self.config_change_abandoned = true;
            self.trace_line("a configuration change was ordered in an abandoned history".into());
        }
        let dbs = [self.loggers[0].db.clone(), self.loggers[1].db.clone()];
        let compared = block_on(async {
            for def in tandem_logger::schema::tables() {
                if def.kind == TableKind::Local {
                    continue;
                }
                let mut rows = [
                    all_rows(&dbs[0], def.name).await?,
                    all_rows(&dbs[1], def.name).await?,
                ];
                if def.kind == TableKind::Ordered {
                    for table in &mut rows {
                        table.retain(|row| match row.first() {
                            Some(SqlValue::Int(key)) => of_record(*key as u64),
                            _ => true,
                        });
                    }
                }
                if rows[0] != rows[1] {
                    let first = rows[0]
                        .iter()
                        .zip(&rows[1])
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| {
                            format!("{:?} against {:?}", &a[..def.key_len], &b[..def.key_len])
                        })
                        .unwrap_or_else(|| "one holds more rows".into());
                    return Ok(Some(format!(
                        "{}: {} and {} rows of record; first difference {first}",
                        def.name,
                        rows[0].len(),
                        rows[1].len()
                    )));
                }
            }
            Ok::<_, tandem_logger::db::DbError>(None)
        })
        .expect("both in-memory databases read");
        if let Some(detail) = compared {
            return self.violate("both central databases equal", detail);
        }
        // And they hold the router's configuration, made by the same change.
        let router = self.sides[enabled].router.as_ref().expect("running");
        let expected = (router.config_stamp(), objects(&router.contact_center()));
        let stored = block_on(dbs[0].load_configuration())
            .expect("an in-memory database reads")
            .map(|(cc, config)| (config, objects(&cc)));
        if stored.as_ref() != Some(&expected) {
            let held = stored.map_or("none".to_string(), |(config, _)| config.to_string());
            self.violate(
                "the central databases hold the router's configuration",
                format!(
                    "they hold {held}; side {}'s router holds {}",
                    side_of(enabled),
                    expected.0
                ),
            );
        }
    }

    /// The ordered rows side A's central database holds.
    pub(super) fn rows_logged(&self) -> u64 {
        block_on(async {
            let mut rows = 0;
            for def in tandem_logger::schema::tables() {
                if def.kind == TableKind::Ordered {
                    rows += self.loggers[0].db.row_count(def.name).await?;
                }
            }
            Ok::<_, tandem_logger::db::DbError>(rows)
        })
        .unwrap_or(0)
    }
}

/// Every row of a table, in key order.
async fn all_rows(db: &CentralDb, table: &str) -> Result<Vec<Row>, tandem_logger::db::DbError> {
    let mut rows: Vec<Row> = Vec::new();
    loop {
        let after = rows.last().map(|row| row[..key_len(table)].to_vec());
        let page = db
            .rows_page(
                table,
                after.as_deref(),
                None,
                tandem_logger::db::ROWS_PAGE_MAX,
            )
            .await?;
        if page.is_empty() {
            return Ok(rows);
        }
        rows.extend(page);
    }
}

fn key_len(table: &str) -> usize {
    tandem_logger::schema::tables()
        .into_iter()
        .find(|def| def.name == table)
        .map_or(1, |def| def.key_len)
}

/// The random numbers of the logger tier come from their own stream, so that adding to it
/// leaves every other part of a seed's run as it was.
pub(super) const LOGGER_STREAM: u64 = 0x4c4f_4747_4552_5321;
