//! The real-time feed: what rtsrvr sends a distributor, and the rows of the local AW database's
//! real-time tables.
//!
//! A feed frame is computed from the router's state at an ordered TimeTick and from nothing
//! else, so both sides compute the same frame with the same number and a distributor may resume
//! on either side. Frame `n` holds every row whose value at tick `n` differs from its value at
//! tick `n - 1` (upserts), the rows that ceased to exist (deletes) and the configuration changes
//! accepted in between; a snapshot at frame `n` holds every row. Applying frames `n + 1, n + 2,
//! ...` to a snapshot at `n` gives exactly the router's rows at each later tick.
//!
//! Rows carry instants, never durations measured to "now" (the longest call in queue is the
//! time it was queued), so that a row changes only when the router's state does, or when one of
//! its rolling families (To5, Half, Today) rolls at a period boundary of ordered time.
//!
//! Names follow ICM's real-time tables; names of objects are configuration, which updateaw
//! copies into the same database, so rows refer to objects by id only.

use crate::config::ConfigChange;
use crate::domain::{AgentState, ServiceLevelType};
use crate::ids::*;
use crate::realtime::{AgentCounts, CallCounts};
use serde::{Deserialize, Serialize};

/// The most entries (rows, deletes, configuration changes) one message of a frame carries: a
/// frame with more (every member row changes when the Half family rolls) is sent in several
/// parts, which a distributor applies in one transaction once the last has arrived. A part whose
/// entries are too large for one message is halved until it fits.
pub const FEED_PART_ROWS_MAX: usize = 8_192;
/// The most parts one frame or snapshot may have: bounds what a distributor buffers before it
/// writes (512 MiB of encoded rows, beyond any contact center the router accepts).
pub const FEED_PARTS_MAX: u32 = 512;

/// One family's counters with the metrics computed from them, as users see them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FamilyFigures {
    pub counts: CallCounts,
    /// Fraction 0..1 by the row's service-level type.
    pub service_level: Option<f64>,
    pub asa_ms: Option<f64>,
    pub aht_ms: Option<f64>,
    pub abandon_rate: Option<f64>,
}

impl FamilyFigures {
    pub fn new(counts: CallCounts, kind: ServiceLevelType) -> Self {
        FamilyFigures {
            service_level: counts.service_level(kind),
            asa_ms: counts.asa_ms(),
            aht_ms: counts.aht_ms(),
            abandon_rate: counts.abandon_rate(),
            counts,
        }
    }
}

/// Skill_Group_Real_Time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkillGroupRealTimeRow {
    pub skill_group_id: SkillGroupId,
    pub logged_on: u32,
    /// Agents in the Ready state ("Avail").
    pub avail: u32,
    pub not_ready: u32,
    /// LoggedOn - NotReady (ICM's "Ready").
    pub ready: u32,
    pub reserved: u32,
    pub talking_in: u32,
    pub talking_out: u32,
    pub talking_other: u32,
    pub hold: u32,
    pub work_ready: u32,
    pub work_not_ready: u32,
    pub busy_other: u32,
    pub calls_q_now: u32,
    pub calls_in_progress: u32,
    pub router_calls_q_now: u32,
    /// Ordered time the longest-waiting call in the router queue entered it.
    pub router_longest_call_q_since_ms: Option<u64>,
    /// 0 with an agent available; else (queued + 1) x AHT(To5) / agents not in NotReady.
    pub expected_delay_ms: u64,
    pub to5: FamilyFigures,
    pub half: FamilyFigures,
    pub today: FamilyFigures,
}

/// Call_Type_Real_Time and Service_Real_Time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallCountsRealTimeRow {
    /// The call type's or the service's id.
    pub id: u32,
    pub calls_q_now: u32,
    pub calls_in_progress: u32,
    pub to5: FamilyFigures,
    pub half: FamilyFigures,
    pub today: FamilyFigures,
}

/// Agent_Real_Time: a row per agent logged on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRealTimeRow {
    pub agent_id: AgentId,
    pub peripheral_id: PeripheralId,
    pub agent_state: AgentState,
    pub reason_code: u16,
    /// Ordered time of the last state change.
    pub date_time_last_state_change_ms: u64,
    pub logged_on_since_ms: u64,
    /// The skill group a call-specific state belongs to.
    pub skill_group_id: Option<SkillGroupId>,
    /// The call ringing, in progress or in wrap-up at the agent.
    pub call: Option<PeripheralCallKey>,
    /// The routed call the router reserved the agent for.
    pub reserved_for: Option<RouterCallKey>,
}

/// Agent_Skill_Group_Real_Time: a row per skill group member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSkillGroupRealTimeRow {
    pub agent_id: AgentId,
    pub skill_group_id: SkillGroupId,
    /// The agent's state in this group (BusyOther while its call belongs to another group).
    pub agent_state: AgentState,
    pub half: AgentCounts,
    pub today: AgentCounts,
}

/// Peripheral_Real_Time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeripheralRealTimeRow {
    pub peripheral_id: PeripheralId,
    pub online: bool,
    pub online_since_ms: u64,
    pub agents_logged_on: u32,
    pub calls_in_progress: u32,
}

/// Router_Queue_Real_Time: a row per call in the router queue, whatever the number of skill
/// groups it waits in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterQueueRow {
    pub router_call_key: RouterCallKey,
    pub request: RouteRequestKey,
    pub call_type_id: Option<CallTypeId>,
    pub dialed_digits: String,
    /// 1 is served first.
    pub priority: u8,
    /// Ordered time the call entered the queue.
    pub enqueued_ms: u64,
    pub skill_groups: Vec<SkillGroupId>,
}

/// The real-time tables of the feed, in the order a frame lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FeedTable {
    SkillGroupRealTime,
    CallTypeRealTime,
    ServiceRealTime,
    PeripheralRealTime,
    AgentRealTime,
    AgentSkillGroupRealTime,
    RouterQueueRealTime,
}

impl FeedTable {
    pub const ALL: [FeedTable; 7] = [
        FeedTable::SkillGroupRealTime,
        FeedTable::CallTypeRealTime,
        FeedTable::ServiceRealTime,
        FeedTable::PeripheralRealTime,
        FeedTable::AgentRealTime,
        FeedTable::AgentSkillGroupRealTime,
        FeedTable::RouterQueueRealTime,
    ];

    /// The table's name in the AW database, as in ICM.
    pub fn name(self) -> &'static str {
        match self {
            FeedTable::SkillGroupRealTime => "Skill_Group_Real_Time",
            FeedTable::CallTypeRealTime => "Call_Type_Real_Time",
            FeedTable::ServiceRealTime => "Service_Real_Time",
            FeedTable::PeripheralRealTime => "Peripheral_Real_Time",
            FeedTable::AgentRealTime => "Agent_Real_Time",
            FeedTable::AgentSkillGroupRealTime => "Agent_Skill_Group_Real_Time",
            FeedTable::RouterQueueRealTime => "Router_Queue_Real_Time",
        }
    }
}

/// A row of one of the feed's tables. The rows with call families are boxed: they are several
/// times the size of the others, which are the many.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FeedRow {
    SkillGroup(Box<SkillGroupRealTimeRow>),
    CallType(Box<CallCountsRealTimeRow>),
    Service(Box<CallCountsRealTimeRow>),
    Peripheral(PeripheralRealTimeRow),
    Agent(AgentRealTimeRow),
    AgentSkillGroup(AgentSkillGroupRealTimeRow),
    RouterQueue(RouterQueueRow),
}

/// A row's key: its table and its ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FeedKey {
    SkillGroup(SkillGroupId),
    CallType(CallTypeId),
    Service(ServiceId),
    Peripheral(PeripheralId),
    Agent(AgentId),
    AgentSkillGroup(AgentId, SkillGroupId),
    RouterQueue(RouterCallKey),
}

impl FeedKey {
    pub fn table(&self) -> FeedTable {
        match self {
            FeedKey::SkillGroup(_) => FeedTable::SkillGroupRealTime,
            FeedKey::CallType(_) => FeedTable::CallTypeRealTime,
            FeedKey::Service(_) => FeedTable::ServiceRealTime,
            FeedKey::Peripheral(_) => FeedTable::PeripheralRealTime,
            FeedKey::Agent(_) => FeedTable::AgentRealTime,
            FeedKey::AgentSkillGroup(..) => FeedTable::AgentSkillGroupRealTime,
            FeedKey::RouterQueue(_) => FeedTable::RouterQueueRealTime,
        }
    }
}

impl FeedRow {
    pub fn key(&self) -> FeedKey {
        match self {
            FeedRow::SkillGroup(r) => FeedKey::SkillGroup(r.skill_group_id),
            FeedRow::CallType(r) => FeedKey::CallType(CallTypeId(r.id)),
            FeedRow::Service(r) => FeedKey::Service(ServiceId(r.id)),
            FeedRow::Peripheral(r) => FeedKey::Peripheral(r.peripheral_id),
            FeedRow::Agent(r) => FeedKey::Agent(r.agent_id),
            FeedRow::AgentSkillGroup(r) => FeedKey::AgentSkillGroup(r.agent_id, r.skill_group_id),
            FeedRow::RouterQueue(r) => FeedKey::RouterQueue(r.router_call_key),
        }
    }

    pub fn table(&self) -> FeedTable {
        self.key().table()
    }
}

/// A configuration change the router accepted, with the dense version it produced: what
/// updateaw applies to the local AW database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionedConfigChange {
    pub config_version: u64,
    /// The ordered message that carried it.
    pub recovery_key: u64,
    pub change: ConfigChange,
}

/// Where a frame sits in the ordered stream; every part of a frame or snapshot carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFrameHeader {
    /// The lineage of frame numbers: a state built from configuration (a cold start) starts a
    /// new generation, whose numbers begin again at 1. A state transfer carries it.
    pub generation: u64,
    /// Dense: one frame per ordered TimeTick of the generation.
    pub number: u64,
    /// The epoch the tick was ordered in.
    pub epoch: u64,
    /// The configuration version the rows were computed under.
    pub config_version: u64,
    /// The RecoveryKey of the change that made that version (0: a configuration loaded
    /// whole): two histories may number different changes alike.
    pub config_recovery_key: u64,
    /// The tick's ordered time.
    pub time_ms: u64,
    /// The tick's sequence number (its RecoveryKey).
    pub recovery_key: u64,
}

impl FeedFrameHeader {
    pub fn position(&self) -> FeedPosition {
        FeedPosition {
            generation: self.generation,
            number: self.number,
            recovery_key: self.recovery_key,
        }
    }
}

/// The frame a distributor holds. Two ordered histories may number their frames alike (an
/// isolated side's history, abandoned when the other side took over without it); the
/// RecoveryKey of the tick tells them apart, so a side resumes a distributor only from a frame
/// of its own history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeedPosition {
    pub generation: u64,
    pub number: u64,
    pub recovery_key: u64,
}

/// What changed between two consecutive ticks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedDelta {
    /// Rows new or changed, in table order, then key order.
    pub upserts: Vec<FeedRow>,
    /// Rows gone, in table order, then key order.
    pub deletes: Vec<FeedKey>,
    /// Configuration changes accepted since the previous tick, in version order.
    pub config_changes: Vec<VersionedConfigChange>,
}

/// A digest of rows in key order (xxh3-128 of their MessagePack encoding): a distributor's
/// rows and a router's, compared at the same frame, are equal exactly when the digests are.
pub fn rows_digest<'a>(rows: impl IntoIterator<Item = &'a FeedRow>) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = Vec::new();
    for row in rows {
        buffer.clear();
        // Encoding into a vector fails only for types MessagePack cannot express; rows have none.
        rmp_serde::encode::write(&mut buffer, row).expect("a feed row encodes");
        hasher.update(&buffer);
    }
    hasher.digest128()
}

impl FeedDelta {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty() && self.config_changes.is_empty()
    }

    pub fn rows(&self) -> usize {
        self.upserts.len() + self.deletes.len() + self.config_changes.len()
    }
}
