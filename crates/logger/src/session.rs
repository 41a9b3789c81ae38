//! One connection of a logger to its side, sans-IO: what to do with each message the side sends
//! (batches, a gap, a cold start's request for the configuration), when to recover a gap from
//! the peer logger, and what to tell the side.
//!
//! `LoggerSession` reads no clock and touches no database. Its shell (`crate::run` in the
//! process, the whole-system simulation in `tandem-sim`) feeds it the side's messages
//! (`on_message`) and drains its work with `poll`, in order:
//! - `Send`: a message for the side.
//! - `Job`: database work, run with `run_job` against the logger's own database and its peer;
//!   the shell hands the outcome back (`job_done`) before it polls again, and goes on reading
//!   the side's messages meanwhile (they queue in the session, bounded).
//! - `LocalEvent`: a line for the database's Local_Event table.
//! - `Close`: the session ends with this error; the logger connects again.
//!
//! The order of work is the order of the stream: batches that came before a gap are written
//! before it, the batches after a gap wait until it is closed, and batches queued together are
//! written in one job.

use crate::db::{CentralDb, ConfigStamp, Progress};
use crate::run::{
    copy_gap, gap_source, take_configuration, write_batches, GapSource, GapToRecover, LoggerError,
    PeerSource, RECOVERY_BUFFER_ROWS_MAX,
};
use std::collections::VecDeque;
use tandem_mds::protocol::GAP_RANGES_LEFT_MAX;
use tandem_mds::{LoggerToSide, SideToLogger};
use tandem_model::config::ContactCenter;
use tandem_model::logged::LoggedMessage;

/// A recovering logger asks its peer what it holds this often.
pub const PEER_POLL_MS: u64 = 100;
/// Messages from the side that wait in the session at most while a job runs or a gap is
/// recovered (the reader then stops reading, and the side's queue fills).
pub const MESSAGES_QUEUED_MAX: usize = 65_536;

/// Database work for the shell to run (`run_job`).
#[derive(Debug)]
pub enum LoggerJob {
    /// Answer a cold start's `SendConfiguration` from the central database.
    LoadConfiguration,
    /// Write these batches, in transactions of bounded size.
    Write(Vec<SideToLogger>),
    /// A gap: take the side's configuration unless the database holds that very one, and
    /// close the gap at once if the database holds every row through it.
    OpenGap {
        gap: GapToRecover,
        contact_center: Box<ContactCenter>,
        config: ConfigStamp,
    },
    /// Recover the gap from the peer, if it holds it (or never will hold more of it).
    Recover(GapToRecover),
}

/// What a job found.
#[derive(Debug)]
pub enum JobOutcome {
    Configuration(LoggerToSide),
    Written(Progress),
    GapOpened {
        /// Whether the side's configuration replaced the database's.
        configuration_taken: bool,
        /// Whether the database held the gap, so it is closed.
        closed: bool,
        progress: Progress,
    },
    /// The peer does not hold the gap yet, or cannot be reached (`unreachable` says why).
    PeerWaits {
        unreachable: Option<String>,
    },
    Recovered {
        rows: usize,
        source: GapSource,
        progress: Progress,
    },
    Failed(LoggerError),
}

/// What the shell does next.
#[derive(Debug)]
pub enum LoggerWork {
    Send(LoggerToSide),
    Job(LoggerJob),
    LocalEvent(String),
    /// A line for the logger's log.
    Log {
        warn: bool,
        text: String,
    },
    Close(LoggerError),
}

/// A gap under recovery.
#[derive(Clone, Debug)]
struct Recovery {
    gap: GapToRecover,
    next_poll_ms: u64,
}

#[derive(Debug, Default)]
pub struct LoggerSession {
    /// The side's messages not yet handled, in order.
    queue: VecDeque<SideToLogger>,
    /// Rows of the batches in `queue`.
    queued_rows: usize,
    recovering: Option<Recovery>,
    /// The gap whose `OpenGap` job runs.
    opened_gap: Option<GapToRecover>,
    /// A job was handed out and its outcome has not come back.
    job_running: bool,
    work: VecDeque<LoggerWork>,
    closed: bool,
    /// Whether the log said that the peer cannot be reached.
    said_unreachable: bool,
    /// Gaps recovered from the peer, and of those the ones it held only part of.
    pub gaps_recovered: u64,
    pub gaps_held_by_neither: u64,
}

impl LoggerSession {
    pub fn new() -> LoggerSession {
        LoggerSession::default()
    }

    /// The gap this logger recovers from its peer, if any: its peer reads it in the holdings
    /// it asks for (`PeerHoldings::recovering_through`).
    pub fn recovering_through(&self) -> Option<u64> {
        self.recovering.as_ref().map(|r| r.gap.resumes_after)
    }

    /// When the session wants to be polled again without a message: its next peer poll.
    pub fn next_wake_ms(&self) -> Option<u64> {
        self.recovering
            .as_ref()
            .filter(|_| !self.job_running)
            .map(|r| r.next_poll_ms)
    }

    /// A message from the side.
    pub fn on_message(&mut self, message: SideToLogger) {
        if self.closed {
            return;
        }
        if let SideToLogger::Batch { messages, .. } = &message {
            self.queued_rows += messages.iter().map(LoggedMessage::row_count).sum::<usize>();
        }
        if self.queued_rows > RECOVERY_BUFFER_ROWS_MAX || self.queue.len() >= MESSAGES_QUEUED_MAX {
            return self.close(LoggerError::Protocol(format!(
                "more than {RECOVERY_BUFFER_ROWS_MAX} rows or {MESSAGES_QUEUED_MAX} messages \
                 arrived while earlier ones were written or a gap recovered"
            )));
        }
        self.queue.push_back(message);
    }

    fn close(&mut self, error: LoggerError) {
        self.closed = true;
        self.queue.clear();
        self.queued_rows = 0;
        self.work.push_back(LoggerWork::Close(error));
    }

    /// The next work to do, once the last job's outcome is in.
    pub fn poll(&mut self, now_ms: u64) -> Option<LoggerWork> {
        if let Some(work) = self.work.pop_front() {
            return Some(work);
        }
        if self.job_running || self.closed {
            return None;
        }
        if let Some(recovery) = &mut self.recovering {
            if now_ms < recovery.next_poll_ms {
                return None;
            }
            recovery.next_poll_ms = now_ms + PEER_POLL_MS;
            self.job_running = true;
            return Some(LoggerWork::Job(LoggerJob::Recover(recovery.gap.clone())));
        }
        let job = match self.queue.pop_front()? {
            SideToLogger::SendConfiguration => LoggerJob::LoadConfiguration,
            SideToLogger::Gap {
                resumes_after,
                contact_center,
                config,
                ranges_left,
            } => {
                if ranges_left.len() > GAP_RANGES_LEFT_MAX {
                    self.close(LoggerError::Protocol(format!(
                        "a gap names {} epoch ranges left, more than {GAP_RANGES_LEFT_MAX}",
                        ranges_left.len()
                    )));
                    return self.work.pop_front();
                }
                let gap = GapToRecover {
                    resumes_after,
                    ranges_left,
                };
                self.opened_gap = Some(gap.clone());
                LoggerJob::OpenGap {
                    gap,
                    contact_center,
                    config,
                }
            }
            batch @ SideToLogger::Batch { .. } => {
                // Batches queued together are written together, up to the next message that is
                // not a batch.
                let mut batches = vec![batch];
                while matches!(self.queue.front(), Some(SideToLogger::Batch { .. })) {
                    batches.push(self.queue.pop_front().expect("checked above"));
                }
                self.queued_rows = self
                    .queue
                    .iter()
                    .map(|m| match m {
                        SideToLogger::Batch { messages, .. } => {
                            messages.iter().map(LoggedMessage::row_count).sum()
                        }
                        _ => 0,
                    })
                    .sum();
                LoggerJob::Write(batches)
            }
        };
        self.job_running = true;
        Some(LoggerWork::Job(job))
    }

    /// The outcome of the job `poll` gave out last.
    pub fn job_done(&mut self, now_ms: u64, outcome: JobOutcome) {
        self.job_running = false;
        if self.closed {
            return;
        }
        match outcome {
            JobOutcome::Configuration(reply) => self.work.push_back(LoggerWork::Send(reply)),
            JobOutcome::Written(progress) => self.acknowledge(progress),
            JobOutcome::GapOpened {
                configuration_taken,
                closed,
                progress,
            } => {
                let Some(gap) = self.opened_gap.take() else {
                    return self.close(LoggerError::Protocol(
                        "a gap's outcome without a gap".into(),
                    ));
                };
                if configuration_taken {
                    self.log(format!(
                        "the side's configuration, {}, replaces the database's",
                        progress.config()
                    ));
                }
                if closed {
                    self.acknowledge(progress);
                    return;
                }
                self.work.push_back(LoggerWork::Log {
                    warn: false,
                    text: format!(
                        "recovering the rows this logger missed from the peer logger: after \
                         {} through {}",
                        progress.committed_through, gap.resumes_after
                    ),
                });
                self.work.push_back(LoggerWork::LocalEvent(format!(
                    "recovering RecoveryKeys {}..={} from the peer",
                    progress.committed_through + 1,
                    gap.resumes_after
                )));
                self.recovering = Some(Recovery {
                    gap,
                    next_poll_ms: now_ms,
                });
            }
            JobOutcome::PeerWaits { unreachable } => {
                if let Some(reason) = unreachable.filter(|_| !self.said_unreachable) {
                    self.said_unreachable = true;
                    self.work.push_back(LoggerWork::Log {
                        warn: true,
                        text: format!("the peer logger is unreachable ({reason}); waiting"),
                    });
                }
            }
            JobOutcome::Recovered {
                rows,
                source,
                progress,
            } => {
                let Some(recovery) = self.recovering.take() else {
                    return;
                };
                let through = recovery.gap.resumes_after;
                if source == GapSource::CopyWhatRemains {
                    self.gaps_held_by_neither += 1;
                    self.work.push_back(LoggerWork::Log {
                        warn: true,
                        text: format!(
                            "the peer logger is recovering past the gap through {through} and \
                             does not hold all of it: the rows neither logger holds are lost"
                        ),
                    });
                    self.work.push_back(LoggerWork::LocalEvent(format!(
                        "rows through RecoveryKey {through} that the peer logger does not hold \
                         either are lost (both sides' buffers lost them)"
                    )));
                }
                self.gaps_recovered += 1;
                self.log(format!(
                    "recovered {rows} rows through {through} from the peer"
                ));
                self.work.push_back(LoggerWork::LocalEvent(format!(
                    "recovered {rows} rows through RecoveryKey {through} from the peer"
                )));
                self.acknowledge(progress);
            }
            JobOutcome::Failed(error) => self.close(error),
        }
    }

    fn acknowledge(&mut self, progress: Progress) {
        self.work
            .push_back(LoggerWork::Send(LoggerToSide::Committed {
                through: progress.committed_through,
                config_version: progress.config_version,
            }));
    }

    fn log(&mut self, text: String) {
        self.work.push_back(LoggerWork::Log { warn: false, text });
    }
}

/// Runs a job against the logger's database and its peer.
pub async fn run_job(db: &CentralDb, peer: &mut impl PeerSource, job: LoggerJob) -> JobOutcome {
    let outcome = async {
        Ok::<_, LoggerError>(match job {
            LoggerJob::LoadConfiguration => {
                JobOutcome::Configuration(match db.load_configuration().await? {
                    Some((contact_center, config)) => LoggerToSide::Configuration {
                        contact_center: Box::new(contact_center),
                        config_version: config.version,
                        config_recovery_key: config.recovery_key,
                    },
                    None => LoggerToSide::NoConfiguration {
                        reason: "the central database was never seeded (tandem init, or tandem \
                                 logger seed)"
                            .into(),
                    },
                })
            }
            LoggerJob::Write(batches) => {
                write_batches(db, batches).await?;
                JobOutcome::Written(db.progress().await?)
            }
            LoggerJob::OpenGap {
                gap,
                contact_center,
                config,
            } => {
                let configuration_taken = take_configuration(db, &contact_center, config).await?;
                let closed = db.holds_through(gap.resumes_after).await?;
                if closed {
                    db.close_gap(gap.resumes_after, &[], &[]).await?;
                }
                JobOutcome::GapOpened {
                    configuration_taken,
                    closed,
                    progress: db.progress().await?,
                }
            }
            LoggerJob::Recover(gap) => {
                let holdings = match peer.holdings().await {
                    Ok(holdings) => holdings,
                    Err(e) => {
                        return Ok(JobOutcome::PeerWaits {
                            unreachable: Some(e.to_string()),
                        })
                    }
                };
                let source = gap_source(&holdings, gap.resumes_after);
                if source == GapSource::Wait {
                    JobOutcome::PeerWaits { unreachable: None }
                } else {
                    let rows = copy_gap(db, peer, &gap, || Ok(())).await?;
                    JobOutcome::Recovered {
                        rows,
                        source,
                        progress: db.progress().await?,
                    }
                }
            }
        })
    }
    .await;
    outcome.unwrap_or_else(JobOutcome::Failed)
}
