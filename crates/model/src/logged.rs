//! What the loggers write: each ordered message's share of the router's outputs, keyed by the
//! message's sequence number (its RecoveryKey).

use crate::config::ConfigChange;
use crate::output::{HistoricalRecord, RouterEvent};
use serde::{Deserialize, Serialize};

/// One ordered message's rows for the central database. Only messages that produced something
/// are sent; the stream's progress (`through`) is carried beside them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedMessage {
    /// The ordered message's sequence number.
    pub recovery_key: u64,
    /// Its ordered time: the only time a row from the ordered stream carries.
    pub time_ms: u64,
    /// The configuration change the router accepted at this message, if any.
    pub config: Option<LoggedConfigChange>,
    pub records: Vec<HistoricalRecord>,
    /// Ordered events, in the order the router raised them.
    pub events: Vec<RouterEvent>,
    /// The historical rows this message's drop decision discarded: the logger makes sure none
    /// of them is in its database (one it wrote before hearing of the decision is deleted).
    #[serde(default)]
    pub dropped: Option<DroppedRange>,
}

/// RecoveryKeys `after < key <= through` whose historical rows and ordered events were dropped
/// by a decision in the ordered stream. Configuration changes in the range are never dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRange {
    pub after: u64,
    pub through: u64,
}

/// A decision, taken in the ordered stream, to drop the historical records held for the loggers
/// in `range` because both loggers were down and the buffer reached its bound. Both sides drop
/// the same records, and the counts are those of the side that proposed it, which held every
/// record in the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoricalDrop {
    pub range: DroppedRange,
    /// Rows dropped per central-database table, in the order the proposer first met them.
    pub rows_by_table: Vec<(String, u64)>,
}

/// Tables named in one `HistoricalDrop`: the historical tables and Event.
pub const HISTORICAL_DROP_TABLES_MAX: usize = 8;

impl HistoricalDrop {
    pub fn rows(&self) -> u64 {
        self.rows_by_table.iter().map(|(_, n)| n).sum()
    }

    /// The ordered event both sides write for the decision.
    pub fn describe(&self) -> String {
        let tables: Vec<String> = self
            .rows_by_table
            .iter()
            .map(|(table, n)| format!("{table}={n}"))
            .collect();
        format!(
            "{} historical rows dropped for RecoveryKeys {}..={}: both loggers were down and \
             the buffer reached its bound ({})",
            self.rows(),
            self.range.after + 1,
            self.range.through,
            tables.join(" ")
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedConfigChange {
    /// The configuration version the change produced.
    pub config_version: u64,
    pub change: ConfigChange,
}

impl LoggedMessage {
    pub fn is_empty(&self) -> bool {
        self.config.is_none()
            && self.records.is_empty()
            && self.events.is_empty()
            && self.dropped.is_none()
    }

    /// How many rows the message writes (a configuration change counts one per operation).
    pub fn row_count(&self) -> usize {
        self.records.len()
            + self.events.len()
            + self.config.as_ref().map_or(0, |c| c.change.ops.len())
    }
}
