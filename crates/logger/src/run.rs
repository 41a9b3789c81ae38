//! The logger process of one side: it connects to its side's public listener, hands over the
//! configuration at a cold start, and writes the ordered stream's rows in batched transactions,
//! acknowledging each once it is durable. When its side no longer holds part of the stream it
//! missed, it recovers that part from the peer logger (`crate::peer`), buffering the live
//! stream meanwhile, so no row falls between the two; it serves its peer the same way.
//!
//! What each message means is decided by the connection's `crate::session::LoggerSession`,
//! which the whole-system simulation drives too; this file is its shell (`serve_side`) and the
//! database side of its jobs (`write_batches`, `take_configuration`, `gap_source`,
//! `copy_gap`).

use crate::db::{CentralDb, ConfigStamp, DbError, DbLocation, Progress, RangeMark};
use crate::peer::{PeerHoldings, ReconnectingPeer, RecoveringGuard, RecoveringThrough};
use crate::schema::{self, TableKind};
use crate::session::{run_job, LoggerSession, LoggerWork};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, FrameReader, TransportError};
use tandem_mds::{PublicHello, Side, SideToLogger};
use tandem_model::logged::LoggedMessage;
use tandem_model::topology::{SideAddresses, Topology};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The SQLite file of a side's central database, in its data directory.
pub const SQLITE_FILE: &str = "central.db";
/// Rows written in one transaction at most: batches queued together are written together up to
/// this.
pub const WRITE_ROWS_MAX: usize = 20_000;
/// Frames from the side queued for the writer.
pub const FRAMES_QUEUED_MAX: usize = 256;
/// Live rows a session holds unwritten at most (while a gap is recovered from the peer, or a
/// transaction commits); past this the link is reset and the side sends them again later.
pub const RECOVERY_BUFFER_ROWS_MAX: usize = 2_000_000;
/// Rows copied from the peer per page.
pub const RECOVERY_PAGE_ROWS: usize = 5_000;
/// Drop decisions one gap recovery applies at most. A decision is ordered only while neither
/// logger takes rows, so a gap holds few; more is a peer's fault, refused whole.
pub const COPIED_DROPS_MAX: usize = 10_000;
const RECONNECT_MS: u64 = 200;

#[derive(Debug, Error)]
pub enum LoggerError {
    #[error("central database: {0}")]
    Db(#[from] DbError),
    #[error("link to the side: {0}")]
    Link(#[from] TransportError),
    #[error("{0}")]
    Protocol(String),
}

fn addresses(topology: &Topology, side: Side) -> &SideAddresses {
    match side {
        Side::A => &topology.side_a,
        Side::B => &topology.side_b,
    }
}

/// Where a side's central database is.
pub fn location(topology: &Topology, side: Side) -> DbLocation {
    let addresses = addresses(topology, side);
    match &addresses.central_db_url {
        Some(url) => DbLocation::Postgres(url.clone()),
        None => DbLocation::Sqlite(topology.resolve(&addresses.data_dir).join(SQLITE_FILE)),
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// Runs the logger of `side` until the process is stopped.
pub async fn run(topology: Topology, side: Side, security: Security) -> Result<(), LoggerError> {
    let own = location(&topology, side);
    if let DbLocation::Sqlite(path) = &own {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    let db = CentralDb::open(&own).await?;
    let public = addresses(&topology, side).public;
    let listener = crate::peer::listen(addresses(&topology, side).logger_peer).await?;
    let recovering = RecoveringThrough::default();
    tokio::spawn(crate::peer::serve(
        db.clone(),
        side,
        listener,
        security.clone(),
        recovering.clone(),
    ));
    info!(%side, backend = db.backend_name(), "logger starting");
    let peer = PeerLink {
        addr: addresses(&topology, other(side)).logger_peer,
        security: &security,
        recovering: &recovering,
    };
    let mut said_waiting = false;
    loop {
        match serve_side(&db, side, public, &peer).await {
            Ok(()) => {}
            Err(LoggerError::Link(e)) => {
                if !said_waiting {
                    info!(%side, "no link to the side ({e}); retrying");
                    said_waiting = true;
                }
            }
            Err(e) => {
                warn!(%side, "logger: {e}; reconnecting");
                let _ = db
                    .local_event(wall_ms(), &format!("logger error: {e}"))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How this logger reaches its peer logger to recover a gap, and where it says that it does.
struct PeerLink<'a> {
    addr: std::net::SocketAddr,
    security: &'a Security,
    recovering: &'a RecoveringThrough,
}

/// One connection to the side, until it closes: the shell around a `LoggerSession`, which
/// decides what each message means; this only reads and writes the socket and runs the
/// session's database work.
async fn serve_side(
    db: &CentralDb,
    side: Side,
    public: std::net::SocketAddr,
    peer: &PeerLink<'_>,
) -> Result<(), LoggerError> {
    let progress = db.progress().await?;
    let stream = transport::connect(public, 1_000, peer.security, Role::Central).await?;
    let (read, mut write) = stream.into_split();
    transport::write_message(
        &mut write,
        &PublicHello::Logger {
            committed_through: progress.committed_through,
            config_version: progress.config_version,
        },
    )
    .await?;
    info!(%side, committed_through = progress.committed_through, "logger linked to its side");
    // A reader task queues the side's frames, so batches that arrive while a transaction
    // commits are written together in the next one.
    let (tx, mut rx) = mpsc::channel::<SideToLogger>(FRAMES_QUEUED_MAX);
    let reader = tokio::spawn(async move {
        // A gap carries the side's whole configuration.
        let mut reader = FrameReader::<_, SideToLogger>::new(read)
            .with_payload_max(tandem_mds::frame::BULK_FRAME_PAYLOAD_BYTES_MAX);
        loop {
            match reader.next().await {
                Ok(Some(message)) => {
                    if tx.send(message).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut session = LoggerSession::new();
    let mut peer_client = ReconnectingPeer::new(peer.addr, side, peer.security);
    // While the session recovers a gap, the peer reads it in the holdings it asks for.
    let mut marked: Option<(u64, RecoveringGuard<'_>)> = None;
    let result = async {
        loop {
            while let Some(work) = session.poll(wall_ms()) {
                match work {
                    LoggerWork::Send(reply) => {
                        // A cold start's answer is a whole configuration.
                        transport::write_message_with_max(
                            &mut write,
                            &reply,
                            tandem_mds::frame::BULK_FRAME_PAYLOAD_BYTES_MAX,
                        )
                        .await?;
                    }
                    LoggerWork::LocalEvent(text) => db.local_event(wall_ms(), &text).await?,
                    LoggerWork::Log { warn, text } => {
                        if warn {
                            warn!(%side, "{text}");
                        } else {
                            info!(%side, "{text}");
                        }
                    }
                    LoggerWork::Close(error) => return Err(error),
                    LoggerWork::Job(job) => {
                        let running = run_job(db, &mut peer_client, job);
                        tokio::pin!(running);
                        // The side's messages go on being read meanwhile.
                        let outcome = loop {
                            tokio::select! {
                                outcome = &mut running => break outcome,
                                message = rx.recv() => match message {
                                    Some(message) => session.on_message(message),
                                    None => return Ok(()),
                                },
                            }
                        };
                        session.job_done(wall_ms(), outcome);
                        let through = session.recovering_through();
                        if marked.as_ref().map(|(t, _)| *t) != through {
                            // The old mark is cleared before a new one is set.
                            drop(marked.take());
                            marked = through.map(|t| (t, peer.recovering.start(t)));
                        }
                    }
                }
            }
            // The session's own timer (its next poll of the peer), not a synchronization: a
            // message from the side wakes this at once.
            let wait = session
                .next_wake_ms()
                .map(|at| at.saturating_sub(wall_ms()))
                .unwrap_or(RECONNECT_MS);
            tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => session.on_message(message),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
            // What else is queued is taken in one go, to be written together.
            for _ in 0..FRAMES_QUEUED_MAX {
                match rx.try_recv() {
                    Ok(message) => session.on_message(message),
                    Err(_) => break,
                }
            }
        }
    }
    .await;
    reader.abort();
    result?;
    match reader.await {
        Ok(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes the batches in order, in transactions of at most `WRITE_ROWS_MAX` rows (a single
/// batch is never split).
pub async fn write_batches(db: &CentralDb, batches: Vec<SideToLogger>) -> Result<(), LoggerError> {
    let mut messages: Vec<LoggedMessage> = Vec::new();
    let mut rows = 0;
    let mut through = None;
    for batch in batches {
        let SideToLogger::Batch {
            messages: batch_messages,
            through: batch_through,
        } = batch
        else {
            continue;
        };
        let batch_rows: usize = batch_messages.iter().map(LoggedMessage::row_count).sum();
        // A batch that ends where the stream left an epoch range is committed on its own: one
        // write through a later key would mark that range only through its last row.
        let leaves_range = through.is_some_and(|t| {
            tandem_db::recovery_key_range(t) != tandem_db::recovery_key_range(batch_through)
        });
        if let Some(through) =
            through.filter(|_| leaves_range || (rows > 0 && rows + batch_rows > WRITE_ROWS_MAX))
        {
            db.write(&messages, through).await?;
            messages.clear();
            rows = 0;
        }
        rows += batch_rows;
        messages.extend(batch_messages);
        through = Some(batch_through);
    }
    if let Some(through) = through {
        db.write(&messages, through).await?;
    }
    Ok(())
}

/// At a gap: takes the side's configuration (`config` names it) unless the database holds that
/// very one. Its own may be of another history even when it holds every row through the gap:
/// a change its side ordered in a history it then abandoned, numbered like a change of record,
/// leaves rows that are merely not of record, but stays in the configuration tables. Returns
/// whether it was taken.
pub async fn take_configuration(
    db: &CentralDb,
    contact_center: &tandem_model::config::ContactCenter,
    config: ConfigStamp,
) -> Result<bool, tandem_db::DbError> {
    if db.progress().await?.config() == config {
        return Ok(false);
    }
    db.replace_configuration(contact_center, config).await?;
    Ok(true)
}

/// Where a recovering logger reads the rows it missed: its peer logger (`PeerClient` over the
/// peer link; the whole-system simulation reads the peer's database through its own link).
#[allow(async_fn_in_trait)] // Callers use one concrete source, whose futures keep their bounds.
pub trait PeerSource {
    async fn progress(&mut self) -> Result<Progress, LoggerError>;
    async fn rows_page(
        &mut self,
        table: &str,
        after: Option<Vec<schema::SqlValue>>,
        through_recovery_key: u64,
        limit: usize,
    ) -> Result<Vec<schema::Row>, LoggerError>;
    /// How far the peer holds each epoch range (its Logger_Ranges), and the gap it is itself
    /// recovering, if any.
    async fn holdings(&mut self) -> Result<PeerHoldings, LoggerError>;
}

/// A peer that may not be reached at all (`None`): every request fails, and a recovering logger
/// waits for it (the whole-system simulation's peer link while the private network is cut).
impl<P: PeerSource> PeerSource for Option<P> {
    async fn progress(&mut self) -> Result<Progress, LoggerError> {
        reached(self)?.progress().await
    }

    async fn rows_page(
        &mut self,
        table: &str,
        after: Option<Vec<schema::SqlValue>>,
        through_recovery_key: u64,
        limit: usize,
    ) -> Result<Vec<schema::Row>, LoggerError> {
        reached(self)?
            .rows_page(table, after, through_recovery_key, limit)
            .await
    }

    async fn holdings(&mut self) -> Result<PeerHoldings, LoggerError> {
        reached(self)?.holdings().await
    }
}

fn reached<P>(peer: &mut Option<P>) -> Result<&mut P, LoggerError> {
    peer.as_mut()
        .ok_or_else(|| LoggerError::Protocol("the peer logger cannot be reached".into()))
}

// The database marks ranges of RecoveryKeys as the MDS numbers them.
const _: () = assert!(tandem_db::RECOVERY_KEY_RANGE_SHIFT == tandem_mds::protocol::SEQ_EPOCH_SHIFT);

/// What a logger recovering a gap through `resumes_after` does, given what its peer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapSource {
    /// The peer holds the whole gap: copy it.
    Copy,
    /// The peer does not hold the gap and will hold more of it later (its side's stream, or
    /// its own recovery, has yet to bring it): wait.
    Wait,
    /// The peer does not hold the whole gap and never will: it is itself recovering a gap
    /// through a key at or past this one, so its stream resumes past this gap, and what it
    /// lacks it would copy from this logger. Both sides' buffers lost those rows (a double
    /// failure); waiting would only stop both loggers for good. Copy what the peer holds.
    CopyWhatRemains,
}

/// A gap a logger recovers from its peer: what `SideToLogger::Gap` says of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapToRecover {
    /// The stream resumes after this key.
    pub resumes_after: u64,
    /// Per epoch range below `resumes_after`'s that the stream's history passed through, the
    /// last key it delivered there (`SideToLogger::Gap::ranges_left`).
    pub ranges_left: Vec<u64>,
}

impl GapToRecover {
    /// Whether the drop decision ordered at `key` is in the history this stream continues:
    /// one in the gap's own range surely is (the stream resumes there, so it passed through
    /// every earlier key of that range); one in a lower range is only at or before where the
    /// history left that range. The peer's side may have run on past that point, alone, in a
    /// history it then abandoned by taking this side's state; a decision there must not empty
    /// rows of record. A range the side no longer names is not trusted.
    pub fn decision_is_of_record(&self, key: u64) -> bool {
        let range = tandem_db::recovery_key_range(key);
        range == tandem_db::recovery_key_range(self.resumes_after)
            || self.range_left(range).is_some_and(|last| key <= last)
    }

    /// Where the history this stream continues left `epoch_range`, a range below the gap's,
    /// if the side said.
    pub fn range_left(&self, epoch_range: u64) -> Option<u64> {
        self.ranges_left
            .iter()
            .copied()
            .find(|&last| tandem_db::recovery_key_range(last) == epoch_range)
    }
}

/// Decides how to recover a gap through `resumes_after` from a peer holding `peer`.
pub fn gap_source(peer: &PeerHoldings, resumes_after: u64) -> GapSource {
    if tandem_db::marks_hold_through(&peer.marks, resumes_after) {
        GapSource::Copy
    } else if peer
        .recovering_through
        .is_some_and(|theirs| theirs >= resumes_after)
    {
        GapSource::CopyWhatRemains
    } else {
        GapSource::Wait
    }
}

/// Copies what this logger missed from its peer, which holds it through `resumes_after` or
/// never will (`gap_source`): for each epoch range the peer holds further than this logger (up
/// to `resumes_after`, and in a lower range up to where the gap says the history of record
/// left it), every ordered table's rows after this logger's mark in that range, page by page
/// (`between_pages` runs after each, to keep up with the live stream), and only then closes
/// the gap (`CentralDb::close_gap`). Comparing range by range, not one committed mark, is what
/// recovers the tail of record of a lower range after this logger's side ran on in a history
/// of its own that it then abandoned; a drop decision in that abandoned tail may have emptied
/// rows of record below it, which are copied again. Returns the rows copied.
pub async fn copy_gap(
    db: &CentralDb,
    peer: &mut impl PeerSource,
    gap: &GapToRecover,
    mut between_pages: impl FnMut() -> Result<(), LoggerError>,
) -> Result<usize, LoggerError> {
    // The configuration is not copied: the side sent its own with the gap
    // (`take_configuration`), which is of the history the stream continues; the peer's may
    // hold a change of a history its side abandoned.
    let resumes_after = gap.resumes_after;
    let ours: BTreeMap<u64, u64> = db
        .committed_ranges()
        .await?
        .into_iter()
        .map(|m| (m.epoch_range, m.last_committed))
        .collect();
    let last_range = tandem_db::recovery_key_range(resumes_after);
    let ordered: Vec<&'static str> = schema::tables()
        .into_iter()
        .filter(|t| t.kind == TableKind::Ordered)
        .map(|t| t.name)
        .collect();
    let abandoned_drops = abandoned_drops(db, gap).await?;
    let mut copied_marks = Vec::new();
    let mut copied_drops = Vec::new();
    let mut copied = 0usize;
    for theirs in peer.holdings().await?.marks {
        if theirs.epoch_range > last_range {
            continue;
        }
        let range_left = if theirs.epoch_range < last_range {
            gap.range_left(theirs.epoch_range)
        } else {
            None
        };
        // Through the gap's end, and in a lower range only through where the history of
        // record left it: the peer's side may have run on there alone.
        let through = theirs
            .last_committed
            .min(resumes_after)
            .min(range_left.unwrap_or(u64::MAX));
        // From this logger's mark in the range, or from the range's start.
        let range_start =
            (theirs.epoch_range << tandem_db::RECOVERY_KEY_RANGE_SHIFT).saturating_sub(1);
        let mut after = ours
            .get(&theirs.epoch_range)
            .copied()
            .unwrap_or(range_start);
        if let Some(left_at) = range_left {
            // A decision this logger holds in a tail the record did not continue may have
            // emptied rows of record of this range, which the peer holds: copy again from the
            // lowest such (rows already held are kept as they are).
            if let Some(refill_after) = abandoned_drops
                .iter()
                .filter(|&&(dropped_after, dropped_through)| {
                    dropped_after < left_at && dropped_through > range_start
                })
                .map(|&(dropped_after, _)| dropped_after.max(range_start))
                .min()
            {
                after = after.min(refill_after);
            }
        }
        if through <= after {
            continue;
        }
        for table in &ordered {
            let mut page_after = Some(vec![
                schema::u64_value(after),
                schema::SqlValue::Int(i64::MAX),
            ]);
            loop {
                let rows = peer
                    .rows_page(table, page_after.take(), through, RECOVERY_PAGE_ROWS)
                    .await?;
                if rows.is_empty() {
                    break;
                }
                db.insert_rows(table, &rows, None).await?;
                if *table == schema::HISTORICAL_DROP {
                    for row in &rows {
                        let (key, after, through) =
                            schema::drop_range_of(row).ok_or_else(|| {
                                LoggerError::Protocol(format!(
                                    "the peer sent a malformed {} row: {row:?}",
                                    schema::HISTORICAL_DROP
                                ))
                            })?;
                        // A decision of record empties its range here too: this logger may
                        // have written rows in it before the decision was ordered.
                        if !gap.decision_is_of_record(key) {
                            continue;
                        }
                        if copied_drops.len() == COPIED_DROPS_MAX {
                            return Err(LoggerError::Protocol(format!(
                                "a gap holds more than {COPIED_DROPS_MAX} drop decisions"
                            )));
                        }
                        copied_drops.push((after, through));
                    }
                }
                copied += rows.len();
                let last = rows.last().expect("not empty");
                page_after = Some(last[..2].to_vec());
                between_pages()?;
            }
        }
        copied_marks.push(RangeMark {
            epoch_range: theirs.epoch_range,
            last_committed: through,
        });
    }
    // Only now is the gap closed: the marks move past it.
    db.close_gap(resumes_after, &copied_marks, &copied_drops)
        .await?;
    Ok(copied)
}

/// The ranges `(after, through]` emptied by the drop decisions this logger holds in a tail of a
/// lower epoch range that the record did not continue: its side ran on alone there past where
/// the gap says the history of record left the range, then took the other side's state. Only
/// the ranges the gap names are read, at most `COPIED_DROPS_MAX` decisions.
async fn abandoned_drops(
    db: &CentralDb,
    gap: &GapToRecover,
) -> Result<Vec<(u64, u64)>, LoggerError> {
    let Some(&oldest) = gap.ranges_left.first() else {
        return Ok(Vec::new());
    };
    let shift = tandem_db::RECOVERY_KEY_RANGE_SHIFT;
    let from = (tandem_db::recovery_key_range(oldest) << shift).saturating_sub(1);
    let below_gap = (tandem_db::recovery_key_range(gap.resumes_after) << shift).saturating_sub(1);
    if below_gap <= from {
        return Ok(Vec::new());
    }
    let decisions = db
        .rows_page(
            schema::HISTORICAL_DROP,
            Some(&[schema::u64_value(from), schema::SqlValue::Int(i64::MAX)]),
            Some(below_gap),
            COPIED_DROPS_MAX,
        )
        .await?;
    Ok(decisions
        .iter()
        .filter_map(schema::drop_range_of)
        .filter(|&(key, _, _)| !gap.decision_is_of_record(key))
        .filter(|&(key, _, _)| gap.range_left(tandem_db::recovery_key_range(key)).is_some())
        .map(|(_, after, through)| (after, through))
        .collect())
}

/// Seeds a side's empty central database from a contact-center file.
pub async fn seed(location: &DbLocation, cc_path: &Path) -> Result<u64, LoggerError> {
    let cc = tandem_model::config::ContactCenter::load(cc_path)
        .map_err(|e| LoggerError::Protocol(e.to_string()))?;
    let db = CentralDb::open(location).await?;
    db.seed(&cc).await?;
    Ok(db.progress().await?.config_version)
}
