//! The side's half of its logger's stream: every ordered message's rows, held from delivery
//! until the logger says they are durably written, and sent in bounded batches.
//!
//! The feed is plain data driven by the core; it reads no clock and does no I/O.

use std::collections::VecDeque;
use tandem_mds::protocol::seq_epoch_range;
use tandem_mds::SideToLogger;
use tandem_model::logged::{DroppedRange, HistoricalDrop, LoggedMessage};
use tandem_model::output::{EventCode, RouterEvent, Severity};

/// Rows in one batch frame: a frame stays well under `FRAME_PAYLOAD_BYTES_MAX`. A message is
/// never split, so a message larger than this (a large configuration change) goes alone.
pub const LOGGER_BATCH_ROWS_MAX: usize = 4_000;
/// Rows sent but not yet acknowledged: the logger's socket and memory hold no more than this.
pub const LOGGER_UNACKED_ROWS_MAX: usize = 200_000;
/// Rows held for the logger by default: an hour at 100 calls/s, each call writing a route call
/// detail, a termination call detail and its share of the interval rows.
pub const LOGGER_BUFFER_ROWS_DEFAULT: usize = 100 * 3_600 * 3;
/// A drop decision drops enough to bring the buffer down to this share (in percent) of its
/// bound, so that a full buffer under load makes one decision now and then, not one per message.
pub const DROP_DECISION_TARGET_PERCENT: usize = 75;
/// A side that is not ordering waits for the enabled side's decision; should that not come
/// (the enabled side's own logger still holds its rows), it drops its oldest rows itself past
/// this many times its bound.
pub const LOCAL_DROP_CEILING_FACTOR: usize = 2;
/// How many epoch ranges the feed remembers its stream passing through after `held_after`.
/// Each takeover starts a range, so this is reached only by many takeovers while a logger is
/// behind; a logger still in a forgotten range is made to reconnect, and a logger whose mark
/// lies in one is sent a gap, which it closes without losing a row.
pub const STREAM_RANGES_MAX: usize = 64;
/// How many epoch ranges the history of a side's state remembers (`LoggerFeed::history`): the
/// gap's own range and `GAP_RANGES_LEFT_MAX` below it. Each takeover starts a range; a drop
/// decision that a gap's copy finds in a lower range older than these is not applied.
pub const HISTORY_RANGES_MAX: usize = tandem_mds::protocol::GAP_RANGES_LEFT_MAX + 1;

#[derive(Debug)]
pub struct LoggerFeed {
    /// Every message after `held_after` that produced rows, in RecoveryKey order.
    messages: VecDeque<LoggedMessage>,
    rows: usize,
    rows_max: usize,
    held_after: u64,
    /// The last ordered message delivered to the router.
    delivered_through: u64,
    /// The first and last message delivered in each epoch range the stream passed through
    /// after `held_after`, oldest first. A logger's committed mark is on this stream only if
    /// it is `held_after` or lies in one of these spans: a mark from a history this side
    /// abandoned at a state transfer can be numerically larger and still not be on it.
    stream_ranges: VecDeque<(u64, u64)>,
    /// The history of this side's state: per epoch range it passed through, the last message
    /// delivered there, oldest first (at most `HISTORY_RANGES_MAX`). A transfer hands it on
    /// with the state. Unlike `stream_ranges` it outlives the logger's commits: a logger
    /// recovering a gap learns from it which of the peer's drop decisions in a lower range
    /// are of record (the peer's side may have run on in that range in a history this one
    /// does not continue).
    history: VecDeque<u64>,
    /// What the connected logger was sent through; `None` while no logger is connected.
    sent_through: Option<u64>,
    sent_rows_unacked: usize,
    committed_through: u64,
    committed_config_version: u64,
    /// Rows this side released on its own because the buffer was full, since start: the peer
    /// logger holds them, or will, and this side's logger recovers them from it.
    dropped_rows: u64,
    /// Rows dropped by decisions in the ordered stream, since start.
    decided_dropped_rows: u64,
    /// The peer's logger as the peer last told; `None` while the private link is down.
    peer_logger: Option<PeerLogger>,
    /// The `through` of this side's drop proposal that is not yet delivered.
    proposed_through: Option<u64>,
}

/// The peer side's logger, as the peer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLogger {
    pub connected: bool,
    pub committed_through: u64,
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
            stream_ranges: VecDeque::new(),
            history: VecDeque::new(),
            sent_through: None,
            sent_rows_unacked: 0,
            committed_through: 0,
            committed_config_version: 0,
            dropped_rows: 0,
            decided_dropped_rows: 0,
            peer_logger: None,
            proposed_through: None,
        }
    }

    /// The router's state was replaced at `seq` (a state transfer): what was held before
    /// belongs to a stream this side no longer continues. `history` is the sender's
    /// (`history`), of which only what lies through `seq` is kept.
    pub fn restart_at(&mut self, seq: u64, history: &[u64]) {
        let range = seq_epoch_range(seq);
        self.history.clear();
        for &last in history {
            if seq_epoch_range(last) < range && self.history.back().is_none_or(|&b| b < last) {
                self.note_in_history(last);
            }
        }
        if seq > 0 {
            self.note_in_history(seq);
        }
        self.messages.clear();
        self.rows = 0;
        self.held_after = seq;
        self.delivered_through = seq;
        self.stream_ranges.clear();
        if self.sent_through.is_some() {
            // The connected logger is told of the gap when it next connects; it is dropped so.
            self.sent_through = None;
        }
        self.sent_rows_unacked = 0;
        self.proposed_through = None;
    }

    /// What the peer says of its logger; `None` when the private link went down.
    pub fn peer_logger(&mut self, peer: Option<PeerLogger>) {
        self.peer_logger = peer;
    }

    /// This side's proposal can no longer be delivered (it stopped ordering, or the proposal
    /// was refused): a new one may be made.
    pub fn proposal_lost(&mut self) {
        self.proposed_through = None;
    }

    /// The ordered message `seq` was delivered, producing `message`'s rows (or none).
    pub fn delivered(&mut self, seq: u64, message: Option<LoggedMessage>) -> Option<Dropped> {
        debug_assert!(seq > self.delivered_through);
        self.delivered_through = seq;
        self.note_on_stream(seq);
        self.note_in_history(seq);
        let message = message.filter(|m| !m.is_empty())?;
        self.rows += message.row_count();
        self.messages.push_back(message);
        let mut dropped: Option<Dropped> = None;
        while self.rows > self.rows_max && self.messages.len() > 1 {
            if !self.may_release_oldest() {
                break;
            }
            let oldest = self
                .messages
                .pop_front()
                .expect("more than one message held");
            let rows = oldest.row_count();
            self.rows -= rows;
            self.held_after = oldest.recovery_key;
            self.forget_ranges_before_held();
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

    /// Whether the oldest held message may leave the buffer without a decision: the peer's
    /// logger holds it (or is connected and will), so this side's logger recovers it from
    /// there; or the buffer is far past its bound with no decision coming.
    fn may_release_oldest(&self) -> bool {
        let Some(oldest) = self.messages.front() else {
            return false;
        };
        let peer_holds = self
            .peer_logger
            .is_some_and(|p| p.connected || oldest.recovery_key <= p.committed_through);
        peer_holds || self.rows > self.rows_max.saturating_mul(LOCAL_DROP_CEILING_FACTOR)
    }

    /// A drop decision for the enabled side to order, when the buffer is past its bound and
    /// neither logger can take rows: this side's logger is not connected and the peer's is
    /// not either (or the peer is unreachable). The range starts after everything either
    /// logger committed, and this side holds every record in it, so its counts are exact.
    pub fn drop_proposal(&mut self) -> Option<HistoricalDrop> {
        if self.proposed_through.is_some()
            || self.rows <= self.rows_max
            || self.sent_through.is_some()
            || self.peer_logger.is_some_and(|p| p.connected)
        {
            return None;
        }
        let peer_committed = self.peer_logger.map_or(0, |p| p.committed_through);
        let mut after = self
            .held_after
            .max(self.committed_through)
            .max(peer_committed);
        let target = self.rows_max * DROP_DECISION_TARGET_PERCENT / 100;
        let mut remaining = self.rows;
        let mut through = None;
        let mut rows_by_table: Vec<(String, u64)> = Vec::new();
        let start = self.messages.partition_point(|m| m.recovery_key <= after);
        for message in self.messages.range(start..) {
            if remaining <= target {
                break;
            }
            if message.dropped.is_some() {
                // An earlier decision's event is the record of a loss: never dropped, so a range
                // never spans a decision. One at the start moves the range past it.
                if through.is_some() {
                    break;
                }
                after = message.recovery_key;
                continue;
            }
            let droppable = message.records.len() + message.events.len();
            if droppable == 0 {
                continue;
            }
            for record in &message.records {
                count_row(&mut rows_by_table, record.row.table_name());
            }
            for _ in &message.events {
                count_row(&mut rows_by_table, "Event");
            }
            remaining -= droppable;
            through = Some(message.recovery_key);
        }
        let through = through?;
        debug_assert!(rows_by_table.len() <= tandem_model::logged::HISTORICAL_DROP_TABLES_MAX);
        self.proposed_through = Some(through);
        Some(HistoricalDrop {
            range: DroppedRange { after, through },
            rows_by_table,
        })
    }

    /// Orders a drop decision through `sync` when this side is enabled and `drop_proposal`
    /// makes one: returns whether it was submitted (its actions then wait in `sync`), or the
    /// synchronizer's reason for refusing it. A side that is not enabled forgets its proposal.
    pub fn order_drop(
        &mut self,
        sync: &mut tandem_mds::sync::Synchronizer,
        now_ms: u64,
    ) -> Result<bool, &'static str> {
        if !sync.state().is_enabled() {
            self.proposal_lost();
            return Ok(false);
        }
        let Some(drop) = self.drop_proposal() else {
            return Ok(false);
        };
        match sync.submit_historical_drop(now_ms, drop) {
            Ok(_) => Ok(true),
            Err(reason) => {
                self.proposal_lost();
                Err(reason)
            }
        }
    }

    /// The ordered drop decision `seq` was delivered: every record and ordered event held in
    /// its range is dropped (a configuration change stays), and the decision becomes message
    /// `seq`'s rows: the event stating the counts, and the range the logger must find empty.
    pub fn decided_drop(
        &mut self,
        seq: u64,
        time_ms: u64,
        drop: &HistoricalDrop,
    ) -> Option<Dropped> {
        let range = drop.range;
        let start = self
            .messages
            .partition_point(|m| m.recovery_key <= range.after);
        let end = self
            .messages
            .partition_point(|m| m.recovery_key <= range.through);
        let mut dropped_rows = 0;
        for message in self.messages.range_mut(start..end) {
            dropped_rows += message.records.len() + message.events.len();
            message.records.clear();
            message.events.clear();
        }
        self.messages.retain(|m| !m.is_empty());
        self.rows -= dropped_rows;
        if self.sent_through.is_some_and(|s| s > range.after) {
            // Some were in flight to the logger: they no longer count against its window.
            self.sent_rows_unacked = self.sent_rows_unacked.saturating_sub(dropped_rows);
        }
        self.decided_dropped_rows += drop.rows();
        if self.proposed_through.is_some_and(|t| t <= range.through) {
            self.proposed_through = None;
        }
        let message = LoggedMessage {
            recovery_key: seq,
            time_ms,
            config: None,
            records: Vec::new(),
            events: vec![RouterEvent {
                severity: Severity::Error,
                code: EventCode::HistoricalRecordsDropped,
                message: drop.describe(),
            }],
            dropped: Some(range),
        };
        self.delivered(seq, Some(message))
    }

    /// A logger connected, having committed through `committed_through`: the stream resumes
    /// after it, or after a gap the logger must recover from its peer (`Some`: the stream
    /// resumes after this; the side sends it a `SideToLogger::Gap`).
    pub fn logger_connected(&mut self, committed_through: u64, config_version: u64) -> Option<u64> {
        self.committed_config_version = config_version;
        self.sent_rows_unacked = 0;
        if committed_through >= self.held_after && self.is_on_stream(committed_through) {
            self.committed_through = committed_through;
            self.trim(committed_through);
            self.sent_through = Some(committed_through);
            None
        } else {
            // A mark behind the stream, or one from a history this side no longer continues,
            // says nothing of what the logger holds of this stream: the peer must not count
            // on it, and the logger recovers everything through `held_after`.
            self.committed_through = if self.is_on_stream(committed_through) {
                committed_through
            } else {
                0
            };
            self.sent_through = Some(self.held_after);
            Some(self.held_after)
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
        self.forget_ranges_before_held();
    }

    fn note_on_stream(&mut self, seq: u64) {
        let range = seq_epoch_range(seq);
        match self.stream_ranges.back_mut() {
            Some((_, last)) if seq_epoch_range(*last) == range => *last = seq,
            _ => {
                if self.stream_ranges.len() == STREAM_RANGES_MAX {
                    let (_, forgotten_last) =
                        self.stream_ranges.pop_front().expect("the list is full");
                    if self.sent_through.is_some_and(|s| s <= forgotten_last) {
                        // The batches would no longer end where the stream left that range:
                        // the logger reconnects, and a gap settles where it stands.
                        self.sent_through = None;
                        self.sent_rows_unacked = 0;
                    }
                }
                self.stream_ranges.push_back((seq, seq));
            }
        }
    }

    fn note_in_history(&mut self, seq: u64) {
        match self.history.back_mut() {
            Some(last) if seq_epoch_range(*last) == seq_epoch_range(seq) => *last = seq,
            _ => {
                if self.history.len() == HISTORY_RANGES_MAX {
                    self.history.pop_front();
                }
                self.history.push_back(seq);
            }
        }
    }

    /// The history of this side's state: per epoch range it passed through, oldest first, the
    /// last message delivered in it. A state transfer hands it on (`restart_at`).
    pub fn history(&self) -> Vec<u64> {
        self.history.iter().copied().collect()
    }

    /// Where this side's history left each epoch range below `resumes_after`'s, for a gap
    /// through `resumes_after` (`SideToLogger::Gap::ranges_left`).
    pub fn ranges_left_before(&self, resumes_after: u64) -> Vec<u64> {
        let range = seq_epoch_range(resumes_after);
        let left: Vec<u64> = self
            .history
            .iter()
            .copied()
            .filter(|&last| seq_epoch_range(last) < range)
            .collect();
        let skip = left
            .len()
            .saturating_sub(tandem_mds::protocol::GAP_RANGES_LEFT_MAX);
        left[skip..].to_vec()
    }

    fn forget_ranges_before_held(&mut self) {
        while self
            .stream_ranges
            .front()
            .is_some_and(|&(_, last)| last < self.held_after)
        {
            self.stream_ranges.pop_front();
        }
    }

    /// Whether `mark` is `held_after` or a message this stream delivered after it.
    fn is_on_stream(&self, mark: u64) -> bool {
        mark == self.held_after
            || self
                .stream_ranges
                .iter()
                .any(|&(first, last)| first <= mark && mark <= last)
    }

    /// The next batch for the connected logger: the messages after what it was sent, bounded
    /// by `LOGGER_BATCH_ROWS_MAX` and by the unacknowledged window. With `progress_only`, a
    /// batch without messages is sent too, to move the logger's committed mark past ordered
    /// messages that produced no rows.
    ///
    /// A batch never passes the last message the stream delivered in an epoch range it then
    /// left: it ends there, so the logger's mark for that range reaches the range's end on
    /// this stream even when the last messages in it produced no rows, and its peer can
    /// recover a gap through any key of it.
    pub fn next_batch(&mut self, progress_only: bool) -> Option<SideToLogger> {
        let sent = self.sent_through?;
        if sent >= self.delivered_through {
            return None;
        }
        let range_end = self
            .stream_ranges
            .iter()
            .map(|&(_, last)| last)
            .find(|&last| last > sent)
            .unwrap_or(self.delivered_through);
        let start = self.messages.partition_point(|m| m.recovery_key <= sent);
        let stop = self
            .messages
            .partition_point(|m| m.recovery_key <= range_end);
        let mut rows = 0;
        let mut end = start;
        while end < stop {
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
        // Without rows to send, a batch still closes a range the stream left, so the messages
        // after it are not held back until the next progress batch.
        if end == start && !progress_only && range_end == self.delivered_through {
            return None;
        }
        let through = if end == stop {
            range_end
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
            decided_dropped_rows: self.decided_dropped_rows,
            peer_logger: self.peer_logger,
        }
    }
}

fn count_row(rows_by_table: &mut Vec<(String, u64)>, table: &str) {
    match rows_by_table.iter_mut().find(|(t, _)| t == table) {
        Some((_, n)) => *n += 1,
        None => rows_by_table.push((table.to_string(), 1)),
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
    pub decided_dropped_rows: u64,
    pub peer_logger: Option<PeerLogger>,
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
            dropped: None,
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
        // The peer's logger is connected: it will hold what this side releases.
        feed.peer_logger(Some(PeerLogger {
            connected: true,
            committed_through: 0,
        }));
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
        assert_eq!(feed.logger_connected(0, 0), Some(2));
        assert_eq!(batch(&mut feed, false), Some((vec![3, 4], 4)));
    }

    #[test]
    fn without_a_logger_on_either_side_only_a_decision_drops_until_the_ceiling() {
        let mut feed = LoggerFeed::new(4, 0);
        for seq in 1..=4 {
            assert_eq!(feed.delivered(seq, Some(message(seq, 2))), None);
        }
        assert_eq!(
            feed.status().held_rows,
            8,
            "held past the bound, waiting for a decision"
        );
        let dropped = feed.delivered(5, Some(message(5, 2)));
        assert_eq!(
            dropped,
            Some(Dropped {
                rows: 2,
                through: 1
            }),
            "past twice the bound the oldest goes"
        );
        // A peer logger that committed 2 holds it: this side may release it.
        feed.peer_logger(Some(PeerLogger {
            connected: false,
            committed_through: 2,
        }));
        feed.delivered(6, None);
        assert_eq!(
            feed.delivered(7, Some(message(7, 1))).map(|d| d.through),
            Some(2)
        );
    }

    #[test]
    fn a_decision_never_drops_an_earlier_decision_nor_feeds_on_its_own_event() {
        // A small bound, where the decision's own event row could keep the buffer above it.
        for rows_max in [1, 2, 3, 5, 30] {
            let mut feed = LoggerFeed::new(rows_max, 0);
            feed.peer_logger(Some(PeerLogger {
                connected: false,
                committed_through: 0,
            }));
            let mut seq = 0;
            let mut decisions = Vec::new();
            for _ in 0..50 {
                seq += 1;
                feed.delivered(seq, Some(message(seq, 1)));
                // As the core does: propose until nothing more is proposed, each decision
                // delivered before the next proposal.
                let mut proposals = 0;
                while let Some(drop) = feed.drop_proposal() {
                    proposals += 1;
                    // Each decision drops rows that are not decisions, and adds one that is:
                    // without new input the proposals end.
                    assert!(
                        proposals <= 3,
                        "bound {rows_max}: decisions feed each other"
                    );
                    for earlier in &decisions {
                        assert!(
                            !(drop.range.after < *earlier && *earlier <= drop.range.through),
                            "bound {rows_max}: {:?} spans the decision at {earlier}",
                            drop.range
                        );
                    }
                    seq += 1;
                    feed.decided_drop(seq, seq, &drop);
                    decisions.push(seq);
                }
            }
            assert!(!decisions.is_empty(), "bound {rows_max}: no decision");
        }
    }

    fn config_message(seq: u64) -> LoggedMessage {
        use tandem_model::config::ConfigChange;
        use tandem_model::logged::LoggedConfigChange;
        let mut m = message(seq, 1);
        m.config = Some(LoggedConfigChange {
            config_version: 2,
            change: ConfigChange::default(),
        });
        m
    }

    #[test]
    fn both_sides_drop_the_same_records_by_the_ordered_decision() {
        let mut enabled = LoggerFeed::new(60, 0);
        let mut disabled = LoggerFeed::new(60, 0);
        // The disabled side's logger had committed 2 before both went down.
        disabled.logger_connected(0, 1);
        disabled.committed(2, 1);
        disabled.logger_disconnected();
        enabled.peer_logger(Some(PeerLogger {
            connected: false,
            committed_through: 2,
        }));
        disabled.peer_logger(Some(PeerLogger {
            connected: false,
            committed_through: 0,
        }));
        let mut seq = 0;
        for i in 1..=40 {
            seq += 1;
            let m = match i % 7 {
                0 => None,
                3 if i == 10 => Some(config_message(seq)),
                _ => Some(message(seq, 3)),
            };
            let released = enabled.delivered(seq, m.clone());
            assert!(
                released.as_ref().is_none_or(|r| r.through <= 2),
                "only what the peer logger holds is released: {released:?}"
            );
            assert_eq!(disabled.delivered(seq, m), None);
            if let Some(drop) = enabled.drop_proposal() {
                assert_eq!(enabled.drop_proposal(), None, "one proposal at a time");
                // The decision is ordered as the next message and delivered on both sides.
                seq += 1;
                assert_eq!(enabled.decided_drop(seq, seq, &drop), None);
                assert_eq!(disabled.decided_drop(seq, seq, &drop), None);
            }
        }
        let (e, d) = (enabled.status(), disabled.status());
        assert!(e.decided_dropped_rows > 0);
        assert_eq!(e.decided_dropped_rows, d.decided_dropped_rows);
        assert_eq!(d.dropped_rows, 0, "nothing released locally");
        assert!(e.held_rows <= 60 + 3, "held {} rows", e.held_rows);
        // The loggers return: each gets the same messages after what it committed, with no
        // gap to recover, and the configuration change was kept.
        let sent = |feed: &mut LoggerFeed, committed: u64| {
            assert_eq!(feed.logger_connected(committed, 1), None);
            let mut all = Vec::new();
            while let Some(SideToLogger::Batch { messages, .. }) = feed.next_batch(false) {
                all.extend(messages);
            }
            all
        };
        let from_enabled = sent(&mut enabled, 2);
        let from_disabled = sent(&mut disabled, 2);
        assert_eq!(from_enabled, from_disabled);
        assert!(from_enabled.iter().any(|m| m.config.is_some()));
        let decisions: Vec<&LoggedMessage> = from_enabled
            .iter()
            .filter(|m| m.dropped.is_some())
            .collect();
        assert!(!decisions.is_empty());
        for decision in decisions {
            let range = decision.dropped.expect("filtered");
            assert!(
                range.after >= 2,
                "the range starts after what a logger holds"
            );
            assert!(from_enabled.iter().all(|m| m.recovery_key <= range.after
                || m.recovery_key > range.through
                || m.records.is_empty() && m.events.is_empty()));
            assert_eq!(decision.events[0].code, EventCode::HistoricalRecordsDropped);
        }
    }

    #[test]
    fn no_decision_while_a_logger_takes_rows() {
        let mut feed = LoggerFeed::new(4, 0);
        feed.peer_logger(Some(PeerLogger {
            connected: false,
            committed_through: 0,
        }));
        feed.logger_connected(0, 0);
        for seq in 1..=4 {
            feed.delivered(seq, Some(message(seq, 2)));
        }
        assert_eq!(
            feed.drop_proposal(),
            None,
            "this side's logger is connected"
        );
        feed.logger_disconnected();
        feed.peer_logger(Some(PeerLogger {
            connected: true,
            committed_through: 0,
        }));
        assert_eq!(feed.drop_proposal(), None, "the peer's logger is connected");
        feed.peer_logger(None);
        let drop = feed
            .drop_proposal()
            .expect("no logger reachable: a decision");
        assert_eq!(drop.range.after, 0);
        assert_eq!(drop.rows_by_table, vec![("Event".to_string(), drop.rows())]);
    }

    #[test]
    fn a_batch_ends_where_the_stream_left_a_range() {
        let range = |r: u64, n: u64| (r << tandem_mds::protocol::SEQ_EPOCH_SHIFT) | n;
        let mut feed = LoggerFeed::new(100, range(2, 0));
        feed.delivered(range(2, 1), Some(message(range(2, 1), 1)));
        feed.delivered(range(2, 2), None);
        feed.delivered(range(2, 3), None);
        feed.delivered(range(6, 1), None);
        feed.delivered(range(6, 2), Some(message(range(6, 2), 1)));
        assert_eq!(feed.logger_connected(range(2, 0), 0), None);
        assert_eq!(
            batch(&mut feed, false),
            Some((vec![range(2, 1)], range(2, 3)))
        );
        assert_eq!(
            batch(&mut feed, false),
            Some((vec![range(6, 2)], range(6, 2)))
        );
        assert_eq!(batch(&mut feed, true), None);

        // Without rows in the range's tail, the batch that closes it goes at once.
        let mut feed = LoggerFeed::new(100, range(2, 0));
        feed.delivered(range(2, 1), None);
        feed.delivered(range(6, 1), Some(message(range(6, 1), 1)));
        assert_eq!(feed.logger_connected(range(2, 0), 0), None);
        assert_eq!(batch(&mut feed, false), Some((vec![], range(2, 1))));
        assert_eq!(
            batch(&mut feed, false),
            Some((vec![range(6, 1)], range(6, 1)))
        );
    }

    #[test]
    fn a_logger_behind_more_ranges_than_remembered_reconnects_to_a_gap() {
        let range = |r: u64, n: u64| (r << tandem_mds::protocol::SEQ_EPOCH_SHIFT) | n;
        let mut feed = LoggerFeed::new(10_000, range(1, 0));
        assert_eq!(feed.logger_connected(range(1, 0), 0), None);
        feed.delivered(range(1, 1), Some(message(range(1, 1), 1)));
        assert_eq!(
            batch(&mut feed, false),
            Some((vec![range(1, 1)], range(1, 1)))
        );
        // The logger commits nothing while the stream passes through as many ranges again.
        for r in 2..=STREAM_RANGES_MAX as u64 {
            feed.delivered(range(r, 1), Some(message(range(r, 1), 1)));
        }
        assert!(feed.logger_connected_now());
        feed.delivered(range(100, 1), Some(message(range(100, 1), 1)));
        assert!(!feed.logger_connected_now());
        // It reconnects with its mark in the forgotten range, and hears of a gap.
        assert_eq!(feed.logger_connected(range(1, 1), 0), Some(range(1, 0)));
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
        feed.restart_at(50, &[]);
        feed.delivered(51, Some(message(51, 1)));
        assert_eq!(feed.logger_connected(1, 0), Some(50));
        assert_eq!(batch(&mut feed, false), Some((vec![51], 51)));
    }

    #[test]
    fn the_history_of_the_state_passes_on_at_a_transfer_and_names_where_it_left_each_range() {
        let range = |r: u64, n: u64| (r << tandem_mds::protocol::SEQ_EPOCH_SHIFT) | n;
        let mut source = LoggerFeed::new(100, 0);
        for (r, n) in [(1, 1), (1, 9), (3, 2), (3, 4), (4, 1)] {
            source.delivered(range(r, n), Some(message(range(r, n), 1)));
        }
        // Commits do not shorten the history, unlike what the feed holds for its logger.
        source.logger_connected(range(4, 1), 0);
        assert_eq!(
            source.history(),
            vec![range(1, 9), range(3, 4), range(4, 1)]
        );
        assert_eq!(
            source.ranges_left_before(range(4, 1)),
            vec![range(1, 9), range(3, 4)]
        );

        // The receiver keeps what lies through the cut, whatever the sender went on to deliver.
        let mut receiver = LoggerFeed::new(100, 0);
        receiver.delivered(range(2, 5), Some(message(range(2, 5), 1)));
        receiver.restart_at(range(3, 3), &source.history());
        assert_eq!(receiver.history(), vec![range(1, 9), range(3, 3)]);
        receiver.delivered(range(5, 1), None);
        assert_eq!(
            receiver.ranges_left_before(range(5, 1)),
            vec![range(1, 9), range(3, 3)]
        );
        assert_eq!(receiver.ranges_left_before(range(3, 3)), vec![range(1, 9)]);

        // The history is bounded: the oldest ranges are forgotten, and a gap names the latest.
        for r in 10..10 + 2 * HISTORY_RANGES_MAX as u64 {
            receiver.delivered(range(r, 1), None);
        }
        let history = receiver.history();
        assert_eq!(history.len(), HISTORY_RANGES_MAX);
        assert_eq!(
            history.last(),
            Some(&range(9 + 2 * HISTORY_RANGES_MAX as u64, 1))
        );
        let left = receiver.ranges_left_before(range(1_000, 0));
        assert_eq!(left.len(), tandem_mds::protocol::GAP_RANGES_LEFT_MAX);
        assert_eq!(left.last(), history.last());
    }

    #[test]
    fn a_mark_from_an_abandoned_history_is_not_trusted() {
        let range = |r: u64, n: u64| (r << tandem_mds::protocol::SEQ_EPOCH_SHIFT) | n;
        let mut feed = LoggerFeed::new(100, 0);
        feed.restart_at(range(2, 630), &[]);
        for n in 631..=643 {
            feed.delivered(range(2, n), Some(message(range(2, n), 1)));
        }
        feed.delivered(range(6, 1), Some(message(range(6, 1), 1)));
        // The logger committed part of range 5, which this side ordered while isolated and
        // then abandoned: it is numerically past the whole of range 2, yet not on the stream.
        assert_eq!(feed.logger_connected(range(5, 77), 0), Some(range(2, 630)));
        assert_eq!(feed.status().committed_through, 0);
        assert_eq!(feed.status().held_messages, 14);
        let (keys, _) = batch(&mut feed, false).expect("the stream is resent");
        assert_eq!(keys.first(), Some(&range(2, 631)));

        // A feed whose stream begins at 0 sends the whole stream after a gap at 0, which the
        // logger closes at once and which moves its mark back out of the other history.
        let mut fresh = LoggerFeed::new(100, 0);
        fresh.delivered(range(7, 1), Some(message(range(7, 1), 1)));
        assert_eq!(fresh.logger_connected(range(5, 77), 0), Some(0));
        assert_eq!(
            batch(&mut fresh, false),
            Some((vec![range(7, 1)], range(7, 1)))
        );

        // A mark on the stream, in the later range, is trusted.
        feed.logger_disconnected();
        assert_eq!(feed.logger_connected(range(6, 1), 0), None);
        assert_eq!(feed.status().held_messages, 0);
    }
}
