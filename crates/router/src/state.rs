//! The router's whole state: configuration, real-time rows, calls, the queue, pending requests,
//! timers and counters. Every collection is a copy-on-write table (`crate::table`), so
//! `State::clone` is a consistent snapshot taken in microseconds.

use crate::rows::*;
use crate::table::{GroupedTable, IdTable, PartitionedTable, Table};
use std::sync::Arc;
use tandem_model::calendar::Periods;
use tandem_model::config::*;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::script::{NodeId, Script};

/// Counters of what the router did, kept in state so both sides report the same figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterCounters {
    pub inputs_applied: u64,
    pub inputs_rejected: u64,
    pub route_requests: u64,
    pub route_request_repeats: u64,
    pub route_requests_defaulted: u64,
    pub config_changes_accepted: u64,
    pub config_changes_rejected: u64,
    pub historical_records: u64,
}
tandem_model::encode_struct!(fixed RouterCounters {
    inputs_applied: u64,
    inputs_rejected: u64,
    route_requests: u64,
    route_request_repeats: u64,
    route_requests_defaulted: u64,
    config_changes_accepted: u64,
    config_changes_rejected: u64,
    historical_records: u64,
});

/// Where the interval cursor stands: it visits every row once per interval, in bounded chunks,
/// emitting the interval rows of rows no event touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntervalCursor {
    /// The interval being flushed (its start), or 0 when the cursor is idle.
    pub flushing_start_ms: u64,
    /// 0 = skill groups, 1 = call types, 2 = agent skill groups, 3 = done.
    pub table: u8,
    pub after_skill_group: Option<SkillGroupId>,
    pub after_call_type: Option<CallTypeId>,
    pub after_member: Option<(AgentId, SkillGroupId)>,
}
tandem_model::encode_struct!(fixed IntervalCursor {
    flushing_start_ms: u64,
    table: u8,
    after_skill_group: Option<SkillGroupId>,
    after_call_type: Option<CallTypeId>,
    after_member: Option<(AgentId, SkillGroupId)>,
});

/// Where the dispatch sweep stands: after a peripheral comes online or the configuration changes,
/// agents that are already available may match calls already queued, and no agent event will
/// bring them together. The sweep visits every skill group, in bounded steps per TimeTick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchSweep {
    pub active: bool,
    pub after: Option<SkillGroupId>,
}
tandem_model::encode_struct!(fixed DispatchSweep {
    active: bool,
    after: Option<SkillGroupId>,
});

/// The scalar part of the state, exported as one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scalars {
    /// The last sequence number applied.
    pub last_seq: u64,
    /// Ordered time of the last input.
    pub now_ms: u64,
    /// Dense configuration version: +1 per accepted change.
    pub config_version: u64,
    /// The RecoveryKey of the ordered change that made `config_version` (0 for a configuration
    /// loaded whole). Two histories may number different changes alike (an isolated side's,
    /// abandoned at a takeover); the key says which change a version is.
    pub config_recovery_key: u64,
    pub periods: Periods,
    pub next_router_call_key: u64,
    pub next_timer_seq: u64,
    pub counters: RouterCounters,
    /// Agents in each state, over all agents.
    pub agent_state_counts: [u32; AgentState::COUNT],
    pub interval_cursor: IntervalCursor,
    pub dispatch_sweep: DispatchSweep,
    pub state_size_max: u64,
    pub state_size_alarm_raised: bool,
    pub settings: Settings,
    /// TimeTicks applied since the state was built from configuration: the number of the
    /// real-time feed's latest frame.
    pub time_ticks: u64,
}
tandem_model::encode_struct!(Scalars {
    last_seq,
    now_ms,
    config_version,
    config_recovery_key,
    periods,
    next_router_call_key,
    next_timer_seq,
    counters,
    agent_state_counts,
    interval_cursor,
    dispatch_sweep,
    state_size_max,
    state_size_alarm_raised,
    settings,
    time_ticks,
});

#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub scalars: Scalars,

    // Configuration.
    pub pgs: IdTable<PgId, Pg>,
    pub peripherals: IdTable<PeripheralId, Peripheral>,
    pub routing_clients: IdTable<RoutingClientId, RoutingClient>,
    pub agents: IdTable<AgentId, Agent>,
    pub skill_groups: IdTable<SkillGroupId, SkillGroup>,
    pub services: IdTable<ServiceId, Service>,
    pub service_members: Table<(ServiceId, SkillGroupId), ()>,
    pub call_types: IdTable<CallTypeId, CallType>,
    pub dialed_numbers: IdTable<DialedNumberId, DialedNumber>,
    /// (routing client, digits) -> dialed number.
    pub dialed_number_index: GroupedTable<(RoutingClientId, String), DialedNumberId>,
    pub scripts: IdTable<ScriptId, Arc<Script>>,
    /// (call type, script) -> map entry; a call type's entries are a key range.
    pub call_type_maps: GroupedTable<(CallTypeId, ScriptId), CallTypeMap>,
    pub labels: IdTable<LabelId, Label>,
    /// (routing client, target, label) -> (): the labels that route to each skill target.
    pub label_index: Table<(RoutingClientId, LabelTarget, LabelId), ()>,
    /// How many objects refer to each object; an object is deletable only at zero.
    pub reference_counts: PartitionedTable<ObjectRef, u32>,

    // Real-time data.
    pub agent_rt: IdTable<AgentId, AgentRow>,
    /// Agent_Skill_Group_Real_Time; a row exists exactly for each skill group member.
    pub agent_skill_group_rt: GroupedTable<(AgentId, SkillGroupId), AgentSkillGroupRow>,
    pub skill_group_rt: IdTable<SkillGroupId, SkillGroupRow>,
    pub call_type_rt: IdTable<CallTypeId, CallCountsRow>,
    pub service_rt: IdTable<ServiceId, CallCountsRow>,
    pub peripheral_rt: IdTable<PeripheralId, PeripheralRow>,

    // Calls and routing.
    pub calls: PartitionedTable<PeripheralCallKey, CallRow>,
    pub router_calls: IdTable<RouterCallKey, RouterCallRow>,
    pub requests: PartitionedTable<RouteRequestKey, RequestEntry>,
    pub timers: GroupedTable<(u64, u64), Timer>,
    pub node_state: Table<(ScriptId, NodeId), NodeStateRow>,
}

impl State {
    /// The skill groups an agent belongs to, in id order.
    pub fn skill_groups_of(&self, agent: AgentId) -> impl Iterator<Item = SkillGroupId> + '_ {
        // One lookup of the agent finds all of its member rows.
        self.agent_skill_group_rt
            .of(agent)
            .iter()
            .map(|((_, group), _)| *group)
    }

    pub fn add_timer(&mut self, due_ms: u64, timer: Timer) {
        let seq = self.scalars.next_timer_seq;
        self.scalars.next_timer_seq += 1;
        self.timers.insert((due_ms, seq), timer);
    }
}
