//! The loggers in the simulation. Each side's logger process is the product's own session
//! (`tandem_logger::session::LoggerSession`: batches, gaps, recovery from the peer) writing a
//! real central database (SQLite in memory, through `tandem-db`) with the product's jobs
//! (`run_job`); each side feeds it from its machine's logger stream. What this file adds is the
//! shell: the links, the time a transaction takes, and the peer link the loggers recover over,
//! which runs on the private network. The database survives the logger's crash, as its disk
//! would.

use super::admin::objects;
use super::{side_of, Event, LinkId, World};
use rand::Rng;
use std::collections::VecDeque;
use tandem_logger::db::{CentralDb, DbLocation, Progress};
use tandem_logger::peer::DatabasePeer;
use tandem_logger::run::LoggerError;
use tandem_logger::schema::{Row, SqlValue, TableKind};
use tandem_logger::session::{run_job, JobOutcome, LoggerJob, LoggerSession, LoggerWork};
use tandem_mds::{LoggerToSide, SideToLogger};
use tandem_model::config::ContactCenter;

pub(super) const LINK_SIDE_TO_LOGGER: u8 = 3;
pub(super) const LINK_LOGGER_TO_SIDE: u8 = 4;
/// A logger connects to its side this often while it has no connection (`tandem logger`'s
/// reconnect interval).
const LOGGER_RECONNECT_MS: u64 = 200;
/// A write transaction takes up to this long.
const LOGGER_WRITE_MS_MAX: u64 = 8;
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
    /// The connection to its side, while one exists, and its session.
    pub(super) generation: Option<u64>,
    session: LoggerSession,
    last_connect_ms: u64,
    /// The outcome of the job under way, and when its transaction ends.
    running: Option<(u64, JobOutcome)>,
    /// Whether the database refuses to grow (a full disk).
    pub(super) capped: bool,
    /// Bytes that arrived while the process was paused.
    pub(super) inbox: VecDeque<Event>,
    pub(super) write_failures: u64,
    /// Of the connections that ended: gaps recovered, and gaps its peer logger did not hold
    /// all of and never would (both sides lost the rows).
    gaps_recovered: u64,
    gaps_held_by_neither: u64,
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
            session: LoggerSession::new(),
            last_connect_ms: 0,
            running: None,
            capped: false,
            inbox: VecDeque::new(),
            write_failures: 0,
            gaps_recovered: 0,
            gaps_held_by_neither: 0,
        }
    }

    fn drop_connection(&mut self, now_ms: u64) {
        self.generation = None;
        let ended = std::mem::take(&mut self.session);
        self.gaps_recovered += ended.gaps_recovered;
        self.gaps_held_by_neither += ended.gaps_held_by_neither;
        self.running = None;
        self.last_connect_ms = now_ms;
    }

    /// Gaps recovered from the peer, and of those the ones it held only part of, over every
    /// connection.
    pub(super) fn gaps(&self) -> (u64, u64) {
        (
            self.gaps_recovered + self.session.gaps_recovered,
            self.gaps_held_by_neither + self.session.gaps_held_by_neither,
        )
    }

    pub(super) fn progress(&self) -> Progress {
        block_on(self.db.progress()).expect("an in-memory database reads its progress")
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

    /// The logger's process: connect when it has no connection, and carry out its session's
    /// work.
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
        if let Some((ends_ms, _)) = &self.loggers[side].running {
            if now < *ends_ms {
                return;
            }
            let (_, outcome) = self.loggers[side].running.take().expect("checked above");
            self.loggers[side].session.job_done(now, outcome);
        }
        while let Some(work) = self.loggers[side].session.poll(now) {
            match work {
                LoggerWork::Send(message) => self.logger_sends(side, message),
                LoggerWork::LocalEvent(text) => {
                    let db = self.loggers[side].db.clone();
                    if let Err(error) = block_on(db.local_event(now, &text)) {
                        return self.logger_fails(side, error.into());
                    }
                }
                LoggerWork::Log { text, .. } => {
                    self.trace_line(format!("logger {}: {}", side_of(side), super::short(&text)));
                }
                LoggerWork::Close(error) => return self.logger_fails(side, error),
                LoggerWork::Job(job) => {
                    let takes_ms = match &job {
                        LoggerJob::Write(_) => {
                            self.logger_rng.random_range(1..=LOGGER_WRITE_MS_MAX)
                        }
                        _ => 0,
                    };
                    let outcome = self.logger_runs(side, job);
                    if takes_ms > 0 {
                        self.loggers[side].running = Some((now + takes_ms, outcome));
                        return;
                    }
                    self.loggers[side].session.job_done(now, outcome);
                }
            }
        }
    }

    /// Runs a job of `side`'s logger against its database and, over the private network, its
    /// peer's.
    fn logger_runs(&mut self, side: usize, job: LoggerJob) -> JobOutcome {
        let peer = &self.loggers[1 - side];
        let reached = peer.runs && !peer.paused && self.private_link_up;
        // The peer link runs on the private network.
        let mut peer = reached.then(|| DatabasePeer {
            db: peer.db.clone(),
            recovering_through: peer.session.recovering_through(),
        });
        let db = self.loggers[side].db.clone();
        block_on(run_job(&db, &mut peer, job))
    }

    fn logger_connects(&mut self, side: usize) {
        self.next_logger_generation += 1;
        let generation = self.next_logger_generation;
        let progress = self.loggers[side].progress();
        let now = self.now_ms;
        let logger = &mut self.loggers[side];
        logger.drop_connection(now);
        logger.generation = Some(generation);
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

    fn logger_sends(&mut self, side: usize, message: LoggerToSide) {
        let Some(generation) = self.loggers[side].generation else {
            return;
        };
        self.send_logger_link(
            side,
            false,
            Event::FromLogger {
                side,
                generation,
                message,
            },
        );
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

    pub(super) fn send_logger_link(&mut self, side: usize, to_logger: bool, event: Event) {
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
            logger.session.on_message(message);
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
        let now = self.now_ms;
        self.machine_mut(side)
            .logger_up(now, generation, committed_through, config_version);
    }

    pub(super) fn side_hears_logger(
        &mut self,
        side: usize,
        generation: u64,
        message: LoggerToSide,
    ) {
        if self.runs(side) {
            let now = self.now_ms;
            self.machine_mut(side)
                .logger_message(now, generation, message);
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
                    self.machine(0).logger_feed().status(),
                    self.machine(1).logger_feed().status()
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
            .find(|&side| self.machine(side).sync().state().is_enabled())
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
        let router = self.machine(enabled).router();
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
