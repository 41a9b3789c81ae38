//! Router outputs: answers to routing clients, instructions to PGs, historical records for the
//! logger, events, and configuration results.

use crate::config::LabelTarget;
use crate::domain::LabelKind;
use crate::ids::*;
use crate::realtime::{AgentCounts, CallCounts};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// The answer to a route request. `repeat` marks a cached answer sent again for a repeated
    /// request.
    RouteResponse {
        pg: PgId,
        key: RouteRequestKey,
        router_call_key: RouterCallKey,
        answer: RouteAnswer,
        repeat: bool,
    },
    /// The final destination of a call that an earlier answer parked in a queue.
    DeliverQueuedCall {
        pg: PgId,
        key: RouteRequestKey,
        router_call_key: RouterCallKey,
        answer: RouteAnswer,
    },
    /// Holds `agent` for the routed call until it arrives at the peripheral.
    ReserveAgent {
        pg: PgId,
        peripheral: PeripheralId,
        agent: AgentId,
        /// The skill group the router chose the agent for; the call is offered there.
        skill_group: SkillGroupId,
        router_call_key: RouterCallKey,
        /// The request the call belongs to.
        key: RouteRequestKey,
    },
    /// Cancels an earlier reservation (the client timed out, the caller hung up, or the call
    /// never arrived).
    ReleaseAgent {
        pg: PgId,
        peripheral: PeripheralId,
        agent: AgentId,
        router_call_key: RouterCallKey,
    },
    /// The outcome of a configuration change.
    ConfigResult {
        /// The configuration version after the change (unchanged when rejected).
        config_version: u64,
        error: Option<String>,
    },
    /// A row for the logger's historical tables.
    Historical(HistoricalRecord),
    /// An ordered event (identical on both sides).
    Event(RouterEvent),
}

/// What a routing client is told to do with a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAnswer {
    pub kind: AnswerKind,
    /// The label string the routing client acts on (empty for Busy/Ring without a label, and for
    /// Queued).
    pub label: String,
    pub label_id: Option<LabelId>,
    pub target: Option<LabelTarget>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum AnswerKind {
    /// A label chosen by the script (Label node, or an agent/skill group target).
    Label = 0,
    Divert = 1,
    Busy = 2,
    Ring = 3,
    /// The dialed number's (or routing client's) default label.
    #[default]
    Default = 4,
    /// Interim answer: the call is held in the router queue (at a VRU); a DeliverQueuedCall
    /// follows.
    Queued = 5,
}
crate::encode_unit_enum!(AnswerKind {
    Label,
    Divert,
    Busy,
    Ring,
    Default,
    Queued
});
crate::encode_struct!(RouteAnswer {
    kind,
    label,
    label_id,
    target
});

impl AnswerKind {
    pub fn from_label_kind(kind: LabelKind) -> AnswerKind {
        match kind {
            LabelKind::Normal => AnswerKind::Label,
            LabelKind::Busy => AnswerKind::Busy,
            LabelKind::Ring => AnswerKind::Ring,
            LabelKind::Divert => AnswerKind::Divert,
        }
    }
}

/// A historical row, keyed by the ordered message that produced it and its index among that
/// message's rows, so both loggers write identical rows and a replay is idempotent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoricalRecord {
    pub recovery_key: u64,
    pub index: u32,
    pub row: HistoricalRow,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HistoricalRow {
    RouteCallDetail(RouteCallDetail),
    TerminationCallDetail(TerminationCallDetail),
    SkillGroupInterval {
        skill_group: SkillGroupId,
        interval_start_ms: u64,
        interval_minutes: u32,
        counts: CallCounts,
    },
    CallTypeInterval {
        call_type: CallTypeId,
        interval_start_ms: u64,
        interval_minutes: u32,
        counts: CallCounts,
    },
    AgentSkillGroupInterval {
        agent: AgentId,
        skill_group: SkillGroupId,
        interval_start_ms: u64,
        interval_minutes: u32,
        counts: AgentCounts,
    },
}

impl HistoricalRow {
    /// The central-database table the row goes to.
    pub fn table_name(&self) -> &'static str {
        match self {
            HistoricalRow::RouteCallDetail(_) => "Route_Call_Detail",
            HistoricalRow::TerminationCallDetail(_) => "Termination_Call_Detail",
            HistoricalRow::SkillGroupInterval { .. } => "Skill_Group_Interval",
            HistoricalRow::CallTypeInterval { .. } => "Call_Type_Interval",
            HistoricalRow::AgentSkillGroupInterval { .. } => "Agent_Skill_Group_Interval",
        }
    }
}

/// One row per route request, written when its routing is finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCallDetail {
    pub router_call_key: RouterCallKey,
    pub key: RouteRequestKey,
    pub dialed_number: String,
    pub call_type: Option<CallTypeId>,
    pub script: Option<ScriptId>,
    pub ani: String,
    pub caller_entered_digits: String,
    /// Ordered time the request arrived.
    pub date_time_ms: u64,
    /// Ordered time the final answer went out (or the request ended).
    pub finished_ms: u64,
    pub answer_kind: Option<AnswerKind>,
    pub label: String,
    pub target: Option<LabelTarget>,
    pub router_queue_wait_ms: u64,
    /// Why the request did not get its script's answer, if it did not.
    pub error: Option<String>,
    pub ended: Option<crate::input::RouteEndReason>,
}

/// How a call leg ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDisposition {
    Handled,
    Abandoned,
    /// Abandoned within the short-call threshold.
    ShortCall,
    Transferred,
    /// Left the peripheral unanswered without abandoning: routed elsewhere.
    Cleared,
    /// Gone when its PG re-reported the peripheral, unanswered: how it ended was not reported.
    Unreported,
}

/// One row per call leg end (ICM's Termination_Call_Detail).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationCallDetail {
    pub call: PeripheralCallKey,
    pub router_call_key: Option<RouterCallKey>,
    pub agent: Option<AgentId>,
    pub skill_group: Option<SkillGroupId>,
    pub call_type: Option<CallTypeId>,
    pub service: Option<ServiceId>,
    pub disposition: CallDisposition,
    /// Ordered time the leg began (arrival, or transfer to this skill group).
    pub start_ms: u64,
    /// Arrival to answer (or to abandon).
    pub delay_ms: u64,
    pub talk_ms: u64,
    pub hold_ms: u64,
    pub work_ms: u64,
    /// Ordered time the leg ended (end of after-call work when there was some).
    pub end_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// An ordered event: produced from the ordered stream, so identical on both sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterEvent {
    pub severity: Severity,
    pub code: EventCode,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventCode {
    /// An input was rejected (unknown object, illegal transition, duplicate call id, ...).
    InputRejected,
    ConfigRejected,
    ConfigApplied,
    ScriptError,
    StateSizeAlarm,
    StateSizeAlarmCleared,
    /// Ordered time in an input was earlier than the router's; the router kept its own.
    TimeWentBackwards,
    /// Historical records were dropped by a decision in the ordered stream: both loggers were
    /// down and the buffer held for them reached its bound.
    HistoricalRecordsDropped,
}
