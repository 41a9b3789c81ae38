//! The side's half of its logger's stream: every ordered message's rows, held from delivery
//! until the logger says they are durably written, and sent in bounded batches.
//!
//! The feed is plain data driven by the core; it reads no clock and does no I/O.

use std::collections::VecDeque;
use tandem_mds::SideToLogger;
use tandem_model::logged::LoggedMessage;

/// Rows in one batch frame: a frame stays well under `FRAME_PAYLOAD_BYTES_MAX`. A message is
/// never split, so a message larger than this (a large configuration change) goes alone.
pub const LOGGER_BATCH_ROWS_MAX: usize = 4_000;
/// Rows sent but not yet acknowledged: the logger's socket and memory hold no more than this.
pub const LOGGER_UNACKED_ROWS_MAX: usize = 200_000;
/// Rows held for the logger by default: an hour at 100 calls/s, each call writing a route call
/// detail, a termination call detail and its share of the interval rows.
pub const LOGGER_BUFFER_ROWS_DEFAULT: usize = 100 * 3_600 * 3;

#[derive(Debug)]
pub struct LoggerFeed {
    /// Every message after `held_after` that produced rows, in RecoveryKey order.
    messages: VecDeque<LoggedMessage>,
    rows: usize,
    rows_max: usize,
    held_after: u64,
    /// The last ordered message delivered to the router.
    delivered_through: u64,
    /// What the connected logger was sent through; `None` while no logger is connected.
    sent_through: Option<u64>,
    sent_rows_unacked: usize,
    committed_through: u64,
    committed_config_version: u64,
    /// Rows dropped because the buffer was full, since start.
    dropped_rows: u64,
}

/// What the feed had to drop to stay within its bound.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    pub rows: usize,
    pub through: u64,
}

impl LoggerFeed {
    /// A feed whose stream starts after `seq` (the router's state at start or at a transfer).
    pub fn new(rows_max: usize, seq: u64) -> LoggerFeed {
        LoggerFeed {
            messages: VecDeque::new(),
            rows: 0,
            rows_max: rows_max.max(1),
            held_after: seq,
            delivered_through: seq,
            sent_through: None,
            sent_rows_unacked: 0,
            committed_through: 0,
            committed_config_version: 0,
            dropped_rows: 0,
        }
    }

    /// The router's state was replaced at `seq` (a state transfer): what was held before
    /// belongs to a stream this side no longer continues.
    pub fn restart_at(&mut self, seq: u64) {
        self.messages.clear();
        self.rows = 0;
        self.held_after = seq;
        self.delivered_through = seq;
        if self.sent_through.is_some() {
            // The connected logger is told of the gap when it next connects; it is dropped so.
            self.sent_through = None;
        }
        self.sent_rows_unacked = 0;
    }

    /// The ordered message `seq` was delivered, producing `message`'s rows (or none).
    pub fn delivered(&mut self, seq: u64, message: Option<LoggedMessage>) -> Option<Dropped> {
        debug_assert!(seq > self.delivered_through);
        self.delivered_through = seq;
        let message = message.filter(|m| !m.is_empty())?;
        self.rows += message.row_count();
        self.messages.push_back(message);
        let mut dropped: Option<Dropped> = None;
        while self.rows > self.rows_max && self.messages.len() > 1 {
            let oldest = self
                .messages
                .pop_front()
                .expect("more than one message held");
            let rows = oldest.row_count();
            self.rows -= rows;
            self.held_after = oldest.recovery_key;
            self.dropped_rows += rows as u64;
            let d = dropped.get_or_insert(Dropped {
                rows: 0,
                through: 0,
            });
            d.rows += rows;
            d.through = oldest.recovery_key;
            if self.sent_through.is_some_and(|s| s < oldest.recovery_key) {
                // The logger never received these: it must hear of the gap, so it reconnects.
                self.sent_through = None;
            }
        }
        dropped
    }

    /// A logger connected, having committed through `committed_through`: the stream resumes
    /// after it, or after a gap the logger must recover from its peer.
    pub fn logger_connected(
        &mut self,
        committed_through: u64,
        config_version: u64,
    ) -> Option<SideToLogger> {
        self.committed_through = committed_through;
        self.committed_config_version = config_version;
        self.sent_rows_unacked = 0;
        self.trim(committed_through);
        if committed_through >= self.held_after {
            self.sent_through = Some(committed_through);
            None
        } else {
            self.sent_through = Some(self.held_after);
            Some(SideToLogger::Gap {
                resumes_after: self.held_after,
            })
        }
    }

    pub fn logger_disconnected(&mut self) {
        self.sent_through = None;
        self.sent_rows_unacked = 0;
    }

    pub fn logger_connected_now(&self) -> bool {
        self.sent_through.is_some()
    }

    /// The logger committed through `through`.
    pub fn committed(&mut self, through: u64, config_version: u64) {
        if through <= self.committed_through {
            return;
        }
        self.committed_through = through;
        self.committed_config_version = config_version;
        let before = self.rows;
        self.trim(through);
        self.sent_rows_unacked = self.sent_rows_unacked.saturating_sub(before - self.rows);
    }

    fn trim(&mut self, through: u64) {
        while self
            .messages
            .front()
            .is_some_and(|m| m.recovery_key <= through)
        {
            let m = self.messages.pop_front().expect("front exists");
            self.rows -= m.row_count();
        }
        self.held_after = self.held_after.max(through.min(self.delivered_through));
    }

    /// The next batch for the connected logger: the messages after what it was sent, bounded
    /// by `LOGGER_BATCH_ROWS_MAX` and by the unacknowledged window. With `progress_only`, a
    /// batch without messages is sent too, to move the logger's committed mark past ordered
    /// messages that produced no rows.
    pub fn next_batch(&mut self, progress_only: bool) -> Option<SideToLogger> {
        let sent = self.sent_through?;
        if sent >= self.delivered_through {
            return None;
        }
        let start = self.messages.partition_point(|m| m.recovery_key <= sent);
        let mut rows = 0;
        let mut end = start;
        while end < self.messages.len() {
            let r = self.messages[end].row_count();
            if end > start
                && (rows + r > LOGGER_BATCH_ROWS_MAX
                    || self.sent_rows_unacked + rows + r > LOGGER_UNACKED_ROWS_MAX)
            {
                break;
            }
            if end == start
                && self.sent_rows_unacked > 0
                && self.sent_rows_unacked + r > LOGGER_UNACKED_ROWS_MAX
            {
                return None;
            }
            rows += r;
            end += 1;
        }
        if end == start && !progress_only {
            return None;
        }
        let through = if end == self.messages.len() {
            self.delivered_through
        } else {
            self.messages[end - 1].recovery_key
        };
        let messages: Vec<LoggedMessage> = self.messages.range(start..end).cloned().collect();
        self.sent_through = Some(through);
        self.sent_rows_unacked += rows;
        Some(SideToLogger::Batch { messages, through })
    }

    pub fn status(&self) -> LoggerFeedStatus {
        LoggerFeedStatus {
            connected: self.sent_through.is_some(),
            held_messages: self.messages.len(),
            held_rows: self.rows,
            rows_max: self.rows_max,
            held_after: self.held_after,
            delivered_through: self.delivered_through,
            committed_through: self.committed_through,
            committed_config_version: self.committed_config_version,
            dropped_rows: self.dropped_rows,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggerFeedStatus {
    pub connected: bool,
    pub held_messages: usize,
    pub held_rows: usize,
    pub rows_max: usize,
    pub held_after: u64,
    pub delivered_through: u64,
    pub committed_through: u64,
    pub committed_config_version: u64,
    pub dropped_rows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::output::{EventCode, RouterEvent, Severity};

    fn message(seq: u64, rows: usize) -> LoggedMessage {
        LoggedMessage {
            recovery_key: seq,
            time_ms: seq,
            config: None,
            records: Vec::new(),
            events: (0..rows)
                .map(|i| RouterEvent {
                    severity: Severity::Info,
                    code: EventCode::ConfigApplied,
                    message: format!("{seq}/{i}"),
                })
                .collect(),
        }
    }

    fn batch(feed: &mut LoggerFeed, progress: bool) -> Option<(Vec<u64>, u64)> {
        match feed.next_batch(progress)? {
            SideToLogger::Batch { messages, through } => {
                Some((messages.iter().map(|m| m.recovery_key).collect(), through))
            }
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn a_logger_gets_every_message_once_and_resumes_after_what_it_committed() {
        let mut feed = LoggerFeed::new(1_000, 0);
        feed.delivered(1, Some(message(1, 2)));
        feed.delivered(2, None);
        feed.delivered(3, Some(message(3, 1)));
        assert_eq!(feed.logger_connected(0, 0), None);
        assert_eq!(batch(&mut feed, false), Some((vec![1, 3], 3)));
        assert_eq!(batch(&mut feed, true), None, "nothing new");
        feed.delivered(4, None);
        assert_eq!(
            batch(&mut feed, false),
            None,
            "no rows: waits for a progress batch"
        );
        assert_eq!(batch(&mut feed, true), Some((vec![], 4)));
        feed.committed(1, 0);
        assert_eq!(feed.status().held_messages, 1);
        // The logger restarts having committed 1: 3 is sent again.
        feed.logger_disconnected();
        assert_eq!(feed.logger_connected(1, 0), None);
        assert_eq!(batch(&mut feed, false), Some((vec![3], 4)));
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_the_logger_hears_of_the_gap() {
        let mut feed = LoggerFeed::new(5, 0);
        for seq in 1..=4 {
            let dropped = feed.delivered(seq, Some(message(seq, 2)));
            if seq >= 3 {
                assert_eq!(dropped.map(|d| d.rows), Some(2));
            }
        }
        let status = feed.status();
        assert_eq!(
            (status.held_rows, status.dropped_rows, status.held_after),
            (4, 4, 2)
        );
        assert_eq!(
            feed.logger_connected(0, 0),
            Some(SideToLogger::Gap { resumes_after: 2 })
        );
        assert_eq!(batch(&mut feed, false), Some((vec![3, 4], 4)));
    }

    #[test]
    fn batches_are_bounded_and_a_large_message_goes_alone() {
        let mut feed = LoggerFeed::new(usize::MAX, 0);
        feed.delivered(1, Some(message(1, LOGGER_BATCH_ROWS_MAX + 10)));
        feed.delivered(2, Some(message(2, LOGGER_BATCH_ROWS_MAX / 2)));
        feed.delivered(3, Some(message(3, LOGGER_BATCH_ROWS_MAX / 2 + 1)));
        feed.logger_connected(0, 0);
        assert_eq!(batch(&mut feed, false), Some((vec![1], 1)));
        assert_eq!(batch(&mut feed, false), Some((vec![2], 2)));
        assert_eq!(batch(&mut feed, false), Some((vec![3], 3)));
    }

    #[test]
    fn a_transfer_restarts_the_stream_and_the_logger_recovers_the_gap() {
        let mut feed = LoggerFeed::new(100, 0);
        feed.delivered(1, Some(message(1, 1)));
        feed.restart_at(50);
        feed.delivered(51, Some(message(51, 1)));
        assert_eq!(
            feed.logger_connected(1, 0),
            Some(SideToLogger::Gap { resumes_after: 50 })
        );
        assert_eq!(batch(&mut feed, false), Some((vec![51], 51)));
    }
}
