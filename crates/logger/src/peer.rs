//! The link between the two loggers. A logger that missed part of the ordered stream recovers
//! it from its peer over this link: the peer's committed mark, its holdings and pages of its
//! ordered tables' rows (the configuration comes from the side, with the gap). Each logger listens on
//! its side's `logger_peer` address; the one recovering connects.

use crate::db::{CentralDb, ConfigStamp, Progress, RangeMark};
use crate::run::LoggerError;
use crate::schema::{Row, SqlValue};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, ClientAuth, FrameReader, ReadHalf, RefusalLog, WriteHalf};
use tandem_mds::Side;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Peer connections served at once; more wait for a slot.
pub const PEER_CONNECTIONS_MAX: usize = 4;
/// How long a request may go unanswered before the link is given up.
pub const PEER_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Rows one page may carry at most.
pub const PEER_PAGE_ROWS_MAX: usize = crate::db::ROWS_PAGE_MAX;
/// A reply's estimated encoded size at most: a page is cut short past it, well inside a frame.
pub const PEER_REPLY_BYTES_MAX: usize = 2 << 20;
// A page, with its envelope, fits in a frame.
const _: () = assert!(PEER_REPLY_BYTES_MAX * 2 <= tandem_mds::frame::FRAME_PAYLOAD_BYTES_MAX);
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// The first message on a connection: who asks.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerHello {
    pub from: Side,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    Progress,
    /// Rows of an ordered table in key order, after the key `after`, with a recovery key at
    /// most `through_recovery_key`.
    RowsPage {
        table: String,
        after: Option<Vec<SqlValue>>,
        through_recovery_key: u64,
        limit: u32,
    },
    /// What the peer holds of each epoch range, and whether it is itself recovering a gap.
    Holdings,
}

/// What a logger holds, as its peer reads it before recovering a gap from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHoldings {
    /// Its Logger_Ranges: how far it holds each epoch range.
    pub marks: Vec<RangeMark>,
    /// The gap it is itself recovering, if any: its side's stream resumes after this key.
    pub recovering_through: Option<u64>,
}

/// The gap a logger is recovering (0 while none), shared between its link to the side, which
/// recovers, and the peer listener, which reports it.
#[derive(Clone, Debug, Default)]
pub struct RecoveringThrough(Arc<AtomicU64>);

impl RecoveringThrough {
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&k| k != 0)
    }

    /// Marks a recovery through `resumes_after` under way until the returned guard drops.
    pub fn start(&self, resumes_after: u64) -> RecoveringGuard<'_> {
        self.0.store(resumes_after, Ordering::Release);
        RecoveringGuard(self)
    }
}

/// Clears the recovery mark however the recovery ends.
pub struct RecoveringGuard<'a>(&'a RecoveringThrough);

impl Drop for RecoveringGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.store(0, Ordering::Release);
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerReply {
    Progress {
        committed_through: u64,
        config: ConfigStamp,
    },
    Rows(Vec<Row>),
    Holdings(PeerHoldings),
    Failed {
        reason: String,
    },
}

/// Binds the listener for the peer logger.
pub async fn listen(addr: SocketAddr) -> Result<TcpListener, LoggerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| LoggerError::Protocol(format!("listening for the peer logger on {addr}: {e}")))
}

/// Serves the peer logger's requests until the process ends.
/// Only the other side's logger (a `central` certificate) may connect.
pub async fn serve(
    db: CentralDb,
    side: Side,
    listener: TcpListener,
    security: Security,
    recovering: RecoveringThrough,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%side, %addr, "listening for the peer logger");
    }
    let slots = Arc::new(Semaphore::new(PEER_CONNECTIONS_MAX));
    let refusals = Arc::new(RefusalLog::new("the peer-logger listener"));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(%side, "accepting a peer logger connection: {e}");
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            continue;
        };
        let db = db.clone();
        let security = security.clone();
        let refusals = refusals.clone();
        let recovering = recovering.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let auth = ClientAuth::Roles(&[Role::Central]);
            let stream = match transport::accept(stream, &security, auth).await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    refusals.refused(format_args!("{from}: {e}"));
                    return;
                }
            };
            let (read, write) = stream.into_split();
            if let Err(e) = serve_connection(&db, side, &recovering, read, write).await {
                warn!(%side, %from, "peer logger connection: {e}");
            }
        });
    }
}

async fn serve_connection(
    db: &CentralDb,
    side: Side,
    recovering: &RecoveringThrough,
    read: ReadHalf,
    mut write: WriteHalf,
) -> Result<(), LoggerError> {
    let mut reader = FrameReader::<_, PeerHello>::new(read);
    let Some(hello) = reader.next().await? else {
        return Ok(());
    };
    if hello.from == side {
        let reply = PeerReply::Failed {
            reason: format!("this is side {side}'s logger, not its peer"),
        };
        transport::write_message(&mut write, &reply).await?;
        return Ok(());
    }
    let mut reader = reader.retype::<PeerRequest>();
    while let Some(request) = reader.next().await? {
        let reply = match answer(db, recovering, request).await {
            Ok(reply) => reply,
            Err(e) => PeerReply::Failed {
                reason: e.to_string(),
            },
        };
        transport::write_message_with_max(
            &mut write,
            &reply,
            tandem_mds::frame::BULK_FRAME_PAYLOAD_BYTES_MAX,
        )
        .await?;
    }
    Ok(())
}

async fn answer(
    db: &CentralDb,
    recovering: &RecoveringThrough,
    request: PeerRequest,
) -> Result<PeerReply, LoggerError> {
    Ok(match request {
        PeerRequest::Progress => {
            let p = db.progress().await?;
            PeerReply::Progress {
                committed_through: p.committed_through,
                config: p.config(),
            }
        }
        PeerRequest::RowsPage {
            table,
            after,
            through_recovery_key,
            limit,
        } => {
            let limit = (limit as usize).min(PEER_PAGE_ROWS_MAX);
            let mut rows = db
                .rows_page(&table, after.as_deref(), Some(through_recovery_key), limit)
                .await?;
            cut_to_reply_size(&mut rows);
            PeerReply::Rows(rows)
        }
        PeerRequest::Holdings => PeerReply::Holdings(PeerHoldings {
            // Read before the marks: a recovery that ends between the two reads is then
            // reported with its marks as they were at its end or later, never as ongoing
            // with marks older than its gap.
            recovering_through: recovering.get(),
            marks: db.committed_ranges().await?,
        }),
    })
}

/// Keeps the rows whose estimated encoded size fits `PEER_REPLY_BYTES_MAX` (at least one, so a
/// page always moves on).
fn cut_to_reply_size(rows: &mut Vec<Row>) {
    let mut bytes = 0;
    let keep = rows
        .iter()
        .position(|row| {
            bytes += row
                .iter()
                .map(|v| match v {
                    SqlValue::Null => 1,
                    SqlValue::Int(_) => 10,
                    SqlValue::Text(t) => t.len() + 5,
                })
                .sum::<usize>();
            bytes > PEER_REPLY_BYTES_MAX
        })
        .unwrap_or(rows.len())
        .max(1);
    rows.truncate(keep);
}

/// A connection to the peer logger.
pub struct PeerClient {
    reader: FrameReader<ReadHalf, PeerReply>,
    write: WriteHalf,
}

impl PeerClient {
    pub async fn connect(
        addr: SocketAddr,
        side: Side,
        security: &Security,
    ) -> Result<PeerClient, LoggerError> {
        let stream = transport::connect(addr, CONNECT_TIMEOUT_MS, security, Role::Central).await?;
        let (read, mut write) = stream.into_split();
        transport::write_message(&mut write, &PeerHello { from: side }).await?;
        Ok(PeerClient {
            // A page of rows is cut to `PEER_REPLY_BYTES_MAX`, within a frame.
            reader: FrameReader::new(read),
            write,
        })
    }

    async fn ask(&mut self, request: &PeerRequest) -> Result<PeerReply, LoggerError> {
        transport::write_message(&mut self.write, request).await?;
        let reply = tokio::time::timeout(
            Duration::from_millis(PEER_REQUEST_TIMEOUT_MS),
            self.reader.next(),
        )
        .await
        .map_err(|_| {
            LoggerError::Protocol(format!(
                "the peer logger did not answer within {PEER_REQUEST_TIMEOUT_MS} ms"
            ))
        })??;
        match reply {
            Some(PeerReply::Failed { reason }) => {
                Err(LoggerError::Protocol(format!("the peer logger: {reason}")))
            }
            Some(reply) => Ok(reply),
            None => Err(LoggerError::Protocol(
                "the peer logger closed the link".into(),
            )),
        }
    }

    fn unexpected(reply: PeerReply) -> LoggerError {
        LoggerError::Protocol(format!("the peer logger answered out of turn: {reply:?}"))
    }
}

impl crate::run::PeerSource for PeerClient {
    async fn progress(&mut self) -> Result<Progress, LoggerError> {
        match self.ask(&PeerRequest::Progress).await? {
            PeerReply::Progress {
                committed_through,
                config,
            } => Ok(Progress {
                committed_through,
                config_version: config.version,
                config_recovery_key: config.recovery_key,
            }),
            other => Err(Self::unexpected(other)),
        }
    }

    async fn rows_page(
        &mut self,
        table: &str,
        after: Option<Vec<SqlValue>>,
        through_recovery_key: u64,
        limit: usize,
    ) -> Result<Vec<Row>, LoggerError> {
        let request = PeerRequest::RowsPage {
            table: table.to_string(),
            after,
            through_recovery_key,
            limit: u32::try_from(limit.min(PEER_PAGE_ROWS_MAX)).unwrap_or(u32::MAX),
        };
        match self.ask(&request).await? {
            PeerReply::Rows(rows) => Ok(rows),
            other => Err(Self::unexpected(other)),
        }
    }

    async fn holdings(&mut self) -> Result<PeerHoldings, LoggerError> {
        match self.ask(&PeerRequest::Holdings).await? {
            PeerReply::Holdings(holdings) => Ok(holdings),
            other => Err(Self::unexpected(other)),
        }
    }
}

/// The peer logger as a recovering logger reaches it: connected on first use, and again on
/// the next use after a request failed.
pub struct ReconnectingPeer<'a> {
    pub addr: SocketAddr,
    pub side: Side,
    pub security: &'a Security,
    client: Option<PeerClient>,
}

impl<'a> ReconnectingPeer<'a> {
    pub fn new(addr: SocketAddr, side: Side, security: &'a Security) -> ReconnectingPeer<'a> {
        ReconnectingPeer {
            addr,
            side,
            security,
            client: None,
        }
    }

    async fn client(&mut self) -> Result<&mut PeerClient, LoggerError> {
        if self.client.is_none() {
            self.client = Some(PeerClient::connect(self.addr, self.side, self.security).await?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Keeps the connection only while its requests succeed.
    fn kept<T>(&mut self, result: Result<T, LoggerError>) -> Result<T, LoggerError> {
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

impl crate::run::PeerSource for ReconnectingPeer<'_> {
    async fn progress(&mut self) -> Result<Progress, LoggerError> {
        let result = match self.client().await {
            Ok(client) => client.progress().await,
            Err(e) => Err(e),
        };
        self.kept(result)
    }

    async fn rows_page(
        &mut self,
        table: &str,
        after: Option<Vec<SqlValue>>,
        through_recovery_key: u64,
        limit: usize,
    ) -> Result<Vec<Row>, LoggerError> {
        let result = match self.client().await {
            Ok(client) => {
                client
                    .rows_page(table, after, through_recovery_key, limit)
                    .await
            }
            Err(e) => Err(e),
        };
        self.kept(result)
    }

    async fn holdings(&mut self) -> Result<PeerHoldings, LoggerError> {
        let result = match self.client().await {
            Ok(client) => client.holdings().await,
            Err(e) => Err(e),
        };
        self.kept(result)
    }
}

/// A peer logger's database read directly, with the gap that logger is recovering: how the
/// whole-system simulation and the tests give a recovering logger its peer (a process always
/// reads its peer through `PeerClient`, as the two may be on different machines).
pub struct DatabasePeer {
    pub db: CentralDb,
    pub recovering_through: Option<u64>,
}

impl crate::run::PeerSource for DatabasePeer {
    async fn progress(&mut self) -> Result<Progress, LoggerError> {
        Ok(self.db.progress().await?)
    }

    async fn rows_page(
        &mut self,
        table: &str,
        after: Option<Vec<SqlValue>>,
        through_recovery_key: u64,
        limit: usize,
    ) -> Result<Vec<Row>, LoggerError> {
        Ok(self
            .db
            .rows_page(table, after.as_deref(), Some(through_recovery_key), limit)
            .await?)
    }

    async fn holdings(&mut self) -> Result<PeerHoldings, LoggerError> {
        Ok(PeerHoldings {
            marks: self.db.committed_ranges().await?,
            recovering_through: self.recovering_through,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_to_the_reply_size_but_keeps_one_row() {
        let big = vec![SqlValue::Text("x".repeat(PEER_REPLY_BYTES_MAX / 3))];
        let mut rows = vec![big.clone(); 10];
        cut_to_reply_size(&mut rows);
        assert_eq!(rows.len(), 2);
        let mut huge = vec![vec![SqlValue::Text("x".repeat(PEER_REPLY_BYTES_MAX * 2))]];
        cut_to_reply_size(&mut huge);
        assert_eq!(huge.len(), 1);
    }
    fn mark(epoch_range: u64, n: u64) -> RangeMark {
        RangeMark {
            epoch_range,
            last_committed: key(epoch_range, n),
        }
    }

    fn key(epoch_range: u64, n: u64) -> u64 {
        (epoch_range << crate::db::RECOVERY_KEY_RANGE_SHIFT) | n
    }

    #[test]
    fn a_gap_is_copied_when_the_peer_holds_it_and_settled_when_it_never_will() {
        use crate::run::{gap_source, GapSource};
        let holding = |marks: Vec<RangeMark>, recovering_through: Option<u64>| PeerHoldings {
            marks,
            recovering_through,
        };
        // The peer holds the gap's range through its end.
        let peer = holding(vec![mark(2, 900), mark(5, 400)], None);
        assert_eq!(gap_source(&peer, key(5, 371)), GapSource::Copy);
        // A higher mark in another range (a history the peer's side abandoned) is not the gap.
        let peer = holding(vec![mark(2, 600), mark(7, 10)], None);
        assert_eq!(gap_source(&peer, key(5, 371)), GapSource::Wait);
        // The peer's stream may still bring the gap: it is behind, and not recovering.
        let peer = holding(vec![mark(5, 226)], None);
        assert_eq!(gap_source(&peer, key(5, 371)), GapSource::Wait);
        // The peer recovers a gap before this one: its stream brings the rest of ours later.
        let peer = holding(vec![mark(5, 226)], Some(key(5, 300)));
        assert_eq!(gap_source(&peer, key(5, 371)), GapSource::Wait);
        // The peer recovers a gap at or past this one, from this logger: it will never hold
        // more of ours, and waiting would stop both.
        let peer = holding(vec![mark(5, 226)], Some(key(6, 749)));
        assert_eq!(gap_source(&peer, key(5, 371)), GapSource::CopyWhatRemains);
        let peer = holding(vec![mark(5, 226)], Some(key(5, 371)));
        assert_eq!(gap_source(&peer, key(5, 371)), GapSource::CopyWhatRemains);
    }

    #[test]
    fn a_recovery_is_reported_until_it_ends_however_it_ends() {
        let recovering = RecoveringThrough::default();
        assert_eq!(recovering.get(), None);
        {
            let _guard = recovering.start(key(5, 371));
            assert_eq!(recovering.clone().get(), Some(key(5, 371)));
        }
        assert_eq!(recovering.get(), None);
        let failed = || -> Result<(), LoggerError> {
            let _guard = recovering.start(key(6, 1));
            Err(LoggerError::Protocol("the peer went away".into()))
        };
        assert!(failed().is_err());
        assert_eq!(recovering.get(), None);
    }
}
