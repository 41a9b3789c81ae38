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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedConfigChange {
    /// The configuration version the change produced.
    pub config_version: u64,
    pub change: ConfigChange,
}

impl LoggedMessage {
    pub fn is_empty(&self) -> bool {
        self.config.is_none() && self.records.is_empty() && self.events.is_empty()
    }

    /// How many rows the message writes (a configuration change counts one per operation).
    pub fn row_count(&self) -> usize {
        self.records.len()
            + self.events.len()
            + self.config.as_ref().map_or(0, |c| c.change.ops.len())
    }
}
