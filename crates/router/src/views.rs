//! Reading the router: real-time rows as users see them (families rolled to now, metrics
//! computed), summaries, and the invariant check that recomputes every derived table from
//! scratch and compares it with the incrementally maintained one.

use crate::rows::*;
use crate::state::State;
use crate::Router;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use tandem_model::calendar::Periods;
use tandem_model::domain::{AgentState, ServiceLevelType};
use tandem_model::ids::*;
use tandem_model::realtime::CallCounts;

/// Expected delay when a group has no handle-time history yet.
pub const EXPECTED_DELAY_DEFAULT_HANDLE_MS: u64 = 180_000;

/// One family's counters with the metrics computed from them (the feed's figures).
pub type FamilyView = tandem_model::feed::FamilyFigures;

/// Skill_Group_Real_Time as users see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SkillGroupRealTime {
    pub skill_group_id: SkillGroupId,
    pub name: String,
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
    /// How long the longest-waiting call in the router queue has waited.
    pub router_longest_call_q_ms: u64,
    /// Ordered time the longest-waiting call in the router queue entered it.
    pub router_longest_call_q_since_ms: Option<u64>,
    /// 0 with an agent available; else (queued + 1) x AHT(To5) / agents not in NotReady.
    pub expected_delay_ms: u64,
    pub to5: FamilyView,
    pub half: FamilyView,
    pub today: FamilyView,
}

/// Call_Type_Real_Time and Service_Real_Time as users see them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CallCountsRealTime {
    pub id: u32,
    pub name: String,
    pub calls_q_now: u32,
    pub calls_in_progress: u32,
    pub to5: FamilyView,
    pub half: FamilyView,
    pub today: FamilyView,
}

/// Agent_Real_Time as users see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AgentRealTime {
    pub agent_id: AgentId,
    pub name: String,
    /// The agent's login id on the peripheral (ICM's PeripheralNumber).
    pub peripheral_number: String,
    pub peripheral_id: PeripheralId,
    pub agent_state: &'static str,
    pub reason_code: u16,
    pub state_since_ms: u64,
    /// The skill group a call-specific state belongs to.
    pub skill_group_id: Option<SkillGroupId>,
    /// The agent's skill groups, in id order.
    pub skill_groups: Vec<SkillGroupId>,
    /// The call ringing, in progress or in wrap-up at the agent.
    pub call: Option<PeripheralCallKey>,
    /// The routed call the router reserved the agent for.
    pub reserved_for: Option<RouterCallKey>,
}

/// A call in the router queue as users see it: one entry per call, whatever the number of skill
/// groups it waits in.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RouterQueueEntry {
    pub router_call_key: RouterCallKey,
    pub request: RouteRequestKey,
    pub call_type: Option<CallTypeId>,
    pub dialed_digits: String,
    /// 1 is served first.
    pub priority: u8,
    /// Ordered time the call entered the queue.
    pub enqueued_ms: u64,
    pub skill_groups: Vec<SkillGroupId>,
}

/// Agent_Skill_Group_Real_Time as users see it: the agent's state in the group, and its counters.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AgentSkillGroupRealTime {
    pub agent_id: AgentId,
    pub skill_group_id: SkillGroupId,
    pub agent_state: &'static str,
    pub half: tandem_model::realtime::AgentCounts,
    pub today: tandem_model::realtime::AgentCounts,
}

/// Totals across the contact center, for summaries.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub agents_logged_on: u32,
    pub agents_by_state: BTreeMap<&'static str, u32>,
    pub router_calls_queued: u32,
    pub calls_at_peripherals: u32,
    pub today: CallCounts,
    /// Service level today over all skill groups, abandons ignored (type 1).
    pub service_level_today: Option<f64>,
    pub route_requests: u64,
    pub state_size_bytes: u64,
    pub state_size_max_bytes: u64,
    pub config_version: u64,
}

fn rolled(
    families: &crate::families::CallFamilies,
    periods: &Periods,
    now_ms: u64,
) -> crate::families::CallFamilies {
    families.rolled(periods, now_ms)
}

impl Router {
    pub fn skill_group_real_time(&self, id: SkillGroupId) -> Option<SkillGroupRealTime> {
        let s = &self.state;
        let config = s.skill_groups.get(&id)?;
        let row = s.skill_group_rt.get(&id)?;
        let (periods, now_ms) = (s.scalars.periods, s.scalars.now_ms);
        let f = rolled(&row.families, &periods, now_ms);
        let kind = config.service_level_type;
        let count = |state| row.count(state);
        let logged_on = row.logged_on();
        let oldest_enqueue = row.queue.iter().map(|((_, enqueued), _)| *enqueued).min();
        let available = count(AgentState::Ready);
        let working = logged_on - count(AgentState::NotReady);
        let expected_delay_ms = if available > 0 {
            0
        } else {
            let aht = f
                .to5_sum()
                .aht_ms()
                .map_or(EXPECTED_DELAY_DEFAULT_HANDLE_MS, |a| a as u64);
            (row.router_calls_q_now as u64 + 1) * aht / working.max(1) as u64
        };
        Some(SkillGroupRealTime {
            skill_group_id: id,
            name: config.name.clone(),
            logged_on,
            avail: available,
            not_ready: count(AgentState::NotReady),
            ready: working,
            reserved: count(AgentState::Reserved),
            talking_in: count(AgentState::TalkingIn),
            talking_out: count(AgentState::TalkingOut),
            talking_other: count(AgentState::TalkingOther),
            hold: count(AgentState::Hold),
            work_ready: count(AgentState::WorkReady),
            work_not_ready: count(AgentState::WorkNotReady),
            busy_other: count(AgentState::BusyOther),
            calls_q_now: row.calls_q_now,
            calls_in_progress: row.calls_in_progress,
            router_calls_q_now: row.router_calls_q_now,
            router_longest_call_q_ms: oldest_enqueue.map_or(0, |t| now_ms - t),
            router_longest_call_q_since_ms: oldest_enqueue,
            expected_delay_ms,
            to5: FamilyView::new(f.to5_sum(), kind),
            half: FamilyView::new(f.half(), kind),
            today: FamilyView::new(f.today(), kind),
        })
    }

    pub fn skill_groups_real_time(&self) -> Vec<SkillGroupRealTime> {
        self.state
            .skill_groups
            .keys()
            .filter_map(|id| self.skill_group_real_time(*id))
            .collect()
    }

    pub fn call_type_real_time(&self, id: CallTypeId) -> Option<CallCountsRealTime> {
        let s = &self.state;
        let config = s.call_types.get(&id)?;
        let row = s.call_type_rt.get(&id)?;
        Some(self.call_counts_view(id.0, &config.name, config.service_level_type, row))
    }

    pub fn service_real_time(&self, id: ServiceId) -> Option<CallCountsRealTime> {
        let s = &self.state;
        let config = s.services.get(&id)?;
        let row = s.service_rt.get(&id)?;
        Some(self.call_counts_view(id.0, &config.name, config.service_level_type, row))
    }

    fn call_counts_view(
        &self,
        id: u32,
        name: &str,
        kind: ServiceLevelType,
        row: &CallCountsRow,
    ) -> CallCountsRealTime {
        let s = &self.state;
        let f = rolled(&row.families, &s.scalars.periods, s.scalars.now_ms);
        CallCountsRealTime {
            id,
            name: name.to_string(),
            calls_q_now: row.calls_q_now,
            calls_in_progress: row.calls_in_progress,
            to5: FamilyView::new(f.to5_sum(), kind),
            half: FamilyView::new(f.half(), kind),
            today: FamilyView::new(f.today(), kind),
        }
    }

    pub fn call_types_real_time(&self) -> Vec<CallCountsRealTime> {
        self.state
            .call_types
            .keys()
            .filter_map(|id| self.call_type_real_time(*id))
            .collect()
    }

    pub fn agent_skill_group_real_time(
        &self,
        agent: AgentId,
        group: SkillGroupId,
    ) -> Option<AgentSkillGroupRealTime> {
        let member = self.state.agent_skill_group_rt.get(&(agent, group))?;
        let row = self.state.agent_rt.get(&agent)?;
        let mut families = member.families;
        families.roll(&self.state.scalars.periods);
        Some(AgentSkillGroupRealTime {
            agent_id: agent,
            skill_group_id: group,
            agent_state: row.state_in(group).name(),
            half: families.half,
            today: families.today,
        })
    }

    pub fn agent_real_time(&self, id: AgentId) -> Option<AgentRealTime> {
        let config = self.state.agents.get(&id)?;
        let row = self.state.agent_rt.get(&id)?;
        Some(AgentRealTime {
            agent_id: id,
            name: config.name.clone(),
            peripheral_number: config.peripheral_number.clone(),
            peripheral_id: row.peripheral,
            agent_state: row.state.name(),
            reason_code: row.reason_code,
            state_since_ms: row.state_since_ms,
            skill_group_id: row.active_skill_group,
            skill_groups: self.state.skill_groups_of(id).collect(),
            call: row.call,
            reserved_for: row.reserved_for,
        })
    }

    /// The agents logged on, in id order (ICM's Agent_Real_Time holds only these). Walks every
    /// agent: for dumps, not for the apply path.
    pub fn agents_logged_on(&self) -> impl Iterator<Item = AgentRealTime> + '_ {
        self.state
            .agent_rt
            .iter()
            .filter(|(_, row)| row.state.is_logged_on())
            .filter_map(|(id, _)| self.agent_real_time(*id))
    }

    /// How many agents are logged on, from the kept counts.
    pub fn agents_logged_on_count(&self) -> u32 {
        self.state.scalars.agent_state_counts[1..].iter().sum()
    }

    /// The calls in the router queue, in router call key order (the order they reached the
    /// router). Walks every routed call: for dumps, not for the apply path.
    pub fn router_queue(&self) -> impl Iterator<Item = RouterQueueEntry> + '_ {
        self.state
            .router_calls
            .iter()
            .filter_map(|(key, call)| match &call.phase {
                RouterCallPhase::Queued {
                    priority,
                    enqueued_ms,
                    skill_groups,
                } => Some(RouterQueueEntry {
                    router_call_key: *key,
                    request: call.key,
                    call_type: call.call_type,
                    dialed_digits: call.dialed_digits.clone(),
                    priority: *priority,
                    enqueued_ms: *enqueued_ms,
                    skill_groups: skill_groups.clone(),
                }),
                RouterCallPhase::Waiting => None,
            })
    }

    /// Totals across the contact center. Reads every skill group: for summaries and dumps, not
    /// for the apply path.
    pub fn summary(&self) -> Summary {
        let s = &self.state;
        let mut today = CallCounts::default();
        for row in s.skill_group_rt.values() {
            today.add(&rolled(&row.families, &s.scalars.periods, s.scalars.now_ms).today());
        }
        let counts = &s.scalars.agent_state_counts;
        Summary {
            agents_logged_on: self.agents_logged_on_count(),
            agents_by_state: AgentState::ALL[1..]
                .iter()
                .map(|st| (st.name(), counts[*st as usize]))
                .collect(),
            router_calls_queued: s
                .router_calls
                .values()
                .filter(|c| matches!(c.phase, RouterCallPhase::Queued { .. }))
                .count() as u32,
            calls_at_peripherals: s.peripheral_rt.values().map(|p| p.calls_in_progress).sum(),
            service_level_today: today.service_level(ServiceLevelType::IgnoreAbandoned),
            today,
            route_requests: s.scalars.counters.route_requests,
            state_size_bytes: self.state_size(),
            state_size_max_bytes: s.scalars.state_size_max,
            config_version: s.scalars.config_version,
        }
    }
}

/// Recomputes every derived table and count from the primary rows and compares: per-group state
/// counts, per-group agent states, the availability sets, queue counts, calls in
/// progress, global agent counts, reference counts, indexes, table byte counts, and every
/// reference between objects. O(state): for tests, imports and audits, never per input.
pub fn check_invariants(s: &State) -> Result<(), String> {
    // Settings, and the clock's periods derived from them.
    s.scalars.settings.check()?;
    let tz: chrono_tz::Tz = s
        .scalars
        .settings
        .time_zone
        .parse()
        .map_err(|_| "bad time zone")?;
    let expected_periods =
        tandem_model::calendar::periods(tz, s.scalars.settings.interval_minutes, s.scalars.now_ms);
    if s.scalars.now_ms > tandem_model::calendar::TIME_MS_MAX
        || s.scalars.periods.next_change_ms <= s.scalars.now_ms
        || s.scalars.periods.day_start_ms != expected_periods.day_start_ms
        || s.scalars.periods.half_start_ms != expected_periods.half_start_ms
        || s.scalars.periods.interval_start_ms != expected_periods.interval_start_ms
    {
        return Err("the periods do not match the ordered time".into());
    }

    // The configuration on one core, the real-time rows on another: the check is most of an
    // import's time. Both run to the end; the configuration's error is reported first.
    let (configuration, real_time) = crate::join(
        crate::records::state_size(s) >= crate::PARALLEL_STATE_BYTES_MIN,
        || check_configuration(s, tz),
        || check_real_time(s).and_then(|()| check_sums_and_sizes(s)),
    );
    configuration.and(real_time)
}

/// Each configuration object has its real-time row, every reference names an existing object and
/// is counted, and the indexes match the objects.
fn check_configuration(s: &State, tz: chrono_tz::Tz) -> Result<(), String> {
    use tandem_model::config::{ConfigObject, ObjectRef};

    // Each configuration object has its real-time row and vice versa.
    macro_rules! same_keys {
        ($a:ident, $b:ident) => {
            if s.$a.len() != s.$b.len() || s.$a.keys().zip(s.$b.keys()).any(|(x, y)| x != y) {
                return Err(format!(
                    "{} and {} hold different keys",
                    stringify!($a),
                    stringify!($b)
                ));
            }
        };
    }
    same_keys!(agents, agent_rt);
    same_keys!(skill_groups, skill_group_rt);
    same_keys!(call_types, call_type_rt);
    same_keys!(services, service_rt);
    same_keys!(peripherals, peripheral_rt);

    // References and reference counts. Objects are visited one at a time (the members, most of
    // them, without any copy), and counted in a hash map, which is only looked up, never
    // iterated, so its order cannot leak into the result. The members' references to their
    // agents are most references of a large configuration, one agent each: they arrive in agent
    // order and are counted in runs instead (a hash map of every agent is a cache miss per
    // reference).
    let router = Router {
        state: s.clone(),
        tz,
        configuration_size: None,
    };
    let mut counts: FxHashMap<ObjectRef, u32> = FxHashMap::default();
    let mut member_agent_runs: Vec<(AgentId, u32)> = Vec::with_capacity(s.agents.len());
    let visit = |counts: &mut FxHashMap<ObjectRef, u32>, object: ConfigObject| {
        object.check_own()?;
        for reference in object.references() {
            *counts.entry(reference).or_default() += 1;
        }
        Ok::<(), String>(())
    };
    for o in s.pgs.values() {
        visit(&mut counts, ConfigObject::Pg(o.clone()))?;
    }
    for o in s.peripherals.values() {
        visit(&mut counts, ConfigObject::Peripheral(o.clone()))?;
    }
    for o in s.routing_clients.values() {
        visit(&mut counts, ConfigObject::RoutingClient(o.clone()))?;
    }
    for o in s.agents.values() {
        visit(&mut counts, ConfigObject::Agent(o.clone()))?;
    }
    for o in s.skill_groups.values() {
        visit(&mut counts, ConfigObject::SkillGroup(o.clone()))?;
    }
    // A membership has nothing to check on its own (its key is its whole content).
    for (agent, skill_group) in s.agent_skill_group_rt.keys() {
        let member = tandem_model::config::SkillGroupMember {
            agent: *agent,
            skill_group: *skill_group,
        };
        for reference in member.references() {
            let last_agent = member_agent_runs.last().map(|(agent, _)| *agent);
            match reference {
                ObjectRef::Agent(agent) if last_agent == Some(agent) => {
                    if let Some((_, run)) = member_agent_runs.last_mut() {
                        *run += 1;
                    }
                }
                ObjectRef::Agent(agent) if last_agent.is_none_or(|last| last < agent) => {
                    member_agent_runs.push((agent, 1))
                }
                reference => *counts.entry(reference).or_default() += 1,
            }
        }
    }
    for o in s.services.values() {
        visit(&mut counts, ConfigObject::Service(o.clone()))?;
    }
    for (service, skill_group) in s.service_members.keys() {
        visit(
            &mut counts,
            ConfigObject::ServiceMember(tandem_model::config::ServiceMember {
                service: *service,
                skill_group: *skill_group,
            }),
        )?;
    }
    for o in s.call_types.values() {
        visit(&mut counts, ConfigObject::CallType(o.clone()))?;
    }
    for o in s.dialed_numbers.values() {
        visit(&mut counts, ConfigObject::DialedNumber(o.clone()))?;
    }
    for o in s.scripts.values() {
        visit(&mut counts, ConfigObject::Script((**o).clone()))?;
    }
    for o in s.call_type_maps.values() {
        visit(&mut counts, ConfigObject::CallTypeMap(o.clone()))?;
    }
    for o in s.labels.values() {
        visit(&mut counts, ConfigObject::Label(o.clone()))?;
    }
    // Each stored count is the references counted (in the map and in the runs, which both
    // ascend with the stored keys), every reference counted is stored, and every stored key
    // exists.
    let mut runs = member_agent_runs.iter().peekable();
    let mut counted_and_stored = 0;
    for (reference, stored) in s.reference_counts.iter() {
        let mut expected = 0;
        if let ObjectRef::Agent(agent) = reference {
            if let Some((run_agent, run)) = runs.peek() {
                if run_agent < agent {
                    return Err(format!(
                        "the references to agent {run_agent} have no reference count"
                    ));
                }
                if run_agent == agent {
                    expected += run;
                    runs.next();
                }
            }
        }
        if let Some(count) = counts.get(reference) {
            expected += count;
            counted_and_stored += 1;
        }
        if expected == 0 || expected != *stored {
            return Err(format!(
                "reference count of {reference} differs from the references"
            ));
        }
        if !router.exists(*reference) {
            return Err(format!("a reference names the missing {reference}"));
        }
    }
    if runs.next().is_some() || counted_and_stored != counts.len() {
        return Err("reference counts differ from the references".into());
    }
    for client in s.routing_clients.values() {
        if let Some(label) = client.default_label {
            if s.labels
                .get(&label)
                .is_none_or(|l| l.routing_client != client.id)
            {
                return Err(format!(
                    "routing client {} has a bad default label {label}",
                    client.id
                ));
            }
        }
    }
    let index: BTreeMap<_, _> = s
        .dialed_numbers
        .values()
        .map(|d| ((d.routing_client, d.digits.clone()), d.id))
        .collect();
    if index.len() != s.dialed_number_index.len()
        || s.dialed_number_index
            .iter()
            .any(|(k, v)| index.get(k) != Some(v))
    {
        return Err("the dialed number index differs from the dialed numbers".into());
    }
    let label_index: Vec<_> = {
        let mut v: Vec<_> = s
            .labels
            .values()
            .filter_map(|l| l.target.map(|t| (l.routing_client, t, l.id)))
            .collect();
        v.sort();
        v
    };
    if label_index.iter().ne(s.label_index.keys()) {
        return Err("the label index differs from the labels".into());
    }

    Ok(())
}

/// Agent states, group counts, availability sets, calls, the router queue and route requests
/// agree with each other.
fn check_real_time(s: &State) -> Result<(), String> {
    // Agent states: per-group views, counts, availability.
    let mut group_counts: FxHashMap<SkillGroupId, [u32; AgentState::COUNT]> = FxHashMap::default();
    let mut available = Vec::new();
    for (agent, group) in s.agent_skill_group_rt.keys() {
        let row = s
            .agent_rt
            .get(agent)
            .ok_or_else(|| format!("member row for missing agent {agent}"))?;
        let state = row.state_in(*group);
        let counts = group_counts.entry(*group).or_insert([0; AgentState::COUNT]);
        if state.is_logged_on() {
            counts[state as usize] += 1;
        }
        if state == AgentState::Ready {
            available.push((*group, row.state_since_ms, *agent));
        }
    }
    for (id, row) in s.skill_group_rt.iter() {
        if s.skill_groups.get(id).map(|g| g.peripheral) != Some(row.peripheral) {
            return Err(format!("skill group {id}'s row names the wrong peripheral"));
        }
        let expected = group_counts
            .get(id)
            .copied()
            .unwrap_or([0; AgentState::COUNT]);
        if row.state_counts != expected {
            return Err(format!(
                "skill group {id} counts {:?}, recomputed {:?}",
                row.state_counts, expected
            ));
        }
        if row.logged_on() < row.count(AgentState::Ready) {
            return Err(format!(
                "skill group {id} has more Ready agents than logged on"
            ));
        }
    }
    available.sort();
    let indexed: Vec<(SkillGroupId, u64, AgentId)> = s
        .skill_group_rt
        .iter()
        .flat_map(|(group, row)| {
            row.available
                .iter()
                .map(move |(since, agent)| (*group, *since, *agent))
        })
        .collect();
    if available != indexed {
        return Err("the availability sets differ from the agents' states".into());
    }
    for agent in s.agent_rt.keys() {
        let n = s.agent_skill_group_rt.of(*agent).len();
        if n > tandem_model::config::SKILL_GROUPS_PER_AGENT_MAX {
            return Err(format!("agent {agent} is in {n} skill groups"));
        }
    }
    let mut global = [0u32; AgentState::COUNT];
    let mut logged_on_by_peripheral: FxHashMap<PeripheralId, u32> = FxHashMap::default();
    for (id, row) in s.agent_rt.iter() {
        global[row.state as usize] += 1;
        if row.state.is_logged_on() {
            *logged_on_by_peripheral.entry(row.peripheral).or_default() += 1;
        }
        if row.state.is_call_specific()
            && row.call.is_none()
            && row.reserved_for.is_none()
            && !matches!(row.state, AgentState::WorkReady | AgentState::WorkNotReady)
        {
            return Err(format!(
                "agent {id} is {} without a call or reservation",
                row.state.name()
            ));
        }
        if let Some(call) = row.call {
            let Some(c) = s.calls.get(&call).filter(|c| c.agent == Some(*id)) else {
                return Err(format!(
                    "agent {id} points at call {}/{} which is not its",
                    call.peripheral, call.call_id
                ));
            };
            let consistent = match c.phase {
                CallPhase::Queued => false,
                CallPhase::Ringing => row.state == AgentState::Reserved,
                CallPhase::Talking => row.state == AgentState::TalkingIn,
                CallPhase::Held => row.state == AgentState::Hold,
                CallPhase::WrapUp => {
                    matches!(row.state, AgentState::WorkReady | AgentState::WorkNotReady)
                }
            };
            if !consistent {
                return Err(format!(
                    "agent {id} is {} while its call is {:?}",
                    row.state.name(),
                    c.phase
                ));
            }
        }
        if let Some(key) = row.reserved_for {
            if row.state != AgentState::Reserved || row.call.is_some() {
                return Err(format!(
                    "agent {id} is reserved for call {} but is {}",
                    key.0,
                    row.state.name()
                ));
            }
        }
    }
    if global != s.scalars.agent_state_counts {
        return Err(format!(
            "global agent counts {:?}, recomputed {global:?}",
            s.scalars.agent_state_counts
        ));
    }

    // Calls: queue and progress counts per group, per service, per peripheral.
    let mut q_now: FxHashMap<SkillGroupId, u32> = FxHashMap::default();
    let mut in_progress: FxHashMap<SkillGroupId, u32> = FxHashMap::default();
    let mut per_peripheral: FxHashMap<PeripheralId, u32> = FxHashMap::default();
    let mut call_type_in_progress: FxHashMap<CallTypeId, u32> = FxHashMap::default();
    let mut service_counts: FxHashMap<ServiceId, (u32, u32)> = FxHashMap::default();
    for (key, call) in s.calls.iter() {
        if let Some(agent) = call.agent {
            if s.agent_rt.get(&agent).and_then(|a| a.call) != Some(*key) {
                return Err(format!(
                    "call {}/{} names agent {agent}, who is not on it",
                    key.peripheral, key.call_id
                ));
            }
        }
        let live = call.phase != CallPhase::WrapUp;
        if let (Some(call_type), true) = (call.call_type, live) {
            *call_type_in_progress.entry(call_type).or_default() += 1;
        }
        if let (Some(service), true) = (call.service, live) {
            let e = service_counts.entry(service).or_default();
            if call.phase == CallPhase::Queued {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
        *per_peripheral.entry(key.peripheral).or_default() += 1;
        if let Some(group) = call.skill_group {
            match call.phase {
                CallPhase::Queued => *q_now.entry(group).or_default() += 1,
                CallPhase::Ringing | CallPhase::Talking | CallPhase::Held => {
                    *in_progress.entry(group).or_default() += 1
                }
                CallPhase::WrapUp => {}
            }
        }
    }
    let mut router_q: FxHashMap<SkillGroupId, u32> = FxHashMap::default();
    let mut queue_len = 0usize;
    for (group, _, key) in s.skill_group_rt.iter().flat_map(|(group, row)| {
        row.queue
            .iter()
            .map(move |(order, key)| (*group, *order, *key))
    }) {
        queue_len += 1;
        if s.skill_group_rt
            .get(&group)
            .is_some_and(|g| g.queue.len() as u32 != g.router_calls_q_now)
        {
            return Err(format!(
                "skill group {group}'s queue length differs from its count"
            ));
        }
        let key = &key;
        let group = &group;
        *router_q.entry(*group).or_default() += 1;
        match s.router_calls.get(key).map(|c| &c.phase) {
            Some(RouterCallPhase::Queued { skill_groups, .. }) if skill_groups.contains(group) => {}
            _ => {
                return Err(format!(
                    "queue entry for call {} in group {group} has no queued call",
                    key.0
                ))
            }
        }
    }
    for (id, row) in s.skill_group_rt.iter() {
        let expected = (
            q_now.get(id).copied().unwrap_or(0),
            in_progress.get(id).copied().unwrap_or(0),
            router_q.get(id).copied().unwrap_or(0),
        );
        if (
            row.calls_q_now,
            row.calls_in_progress,
            row.router_calls_q_now,
        ) != expected
        {
            return Err(format!(
                "skill group {id} call counts {:?}, recomputed {expected:?}",
                (
                    row.calls_q_now,
                    row.calls_in_progress,
                    row.router_calls_q_now
                )
            ));
        }
    }
    for (id, row) in s.peripheral_rt.iter() {
        let expected_calls = per_peripheral.get(id).copied().unwrap_or(0);
        let expected_agents = logged_on_by_peripheral.get(id).copied().unwrap_or(0);
        if (row.calls_in_progress, row.agents_logged_on) != (expected_calls, expected_agents) {
            return Err(format!(
                "peripheral {id} counts differ from its calls and agents"
            ));
        }
    }
    let mut call_type_queued: FxHashMap<CallTypeId, u32> = FxHashMap::default();
    let mut queue_entries = 0usize;
    for (key, call) in s.router_calls.iter() {
        let entry = s
            .requests
            .get(&call.key)
            .ok_or_else(|| format!("router call {} without its request", key.0))?;
        if entry.finished || entry.router_call_key != *key {
            return Err(format!(
                "router call {} disagrees with its request entry",
                key.0
            ));
        }
        if key.0 >= s.scalars.next_router_call_key {
            return Err(format!(
                "router call key {} is not below the next key",
                key.0
            ));
        }
        if let RouterCallPhase::Queued {
            priority,
            enqueued_ms,
            skill_groups,
        } = &call.phase
        {
            if let Some(call_type) = call.call_type {
                *call_type_queued.entry(call_type).or_default() += 1;
            }
            for group in skill_groups.iter().filter(|g| s.skill_group_rt.contains(g)) {
                let queued = s
                    .skill_group_rt
                    .get(group)
                    .is_some_and(|g| g.queue.contains(&((*priority, *enqueued_ms), *key)));
                if !queued {
                    return Err(format!(
                        "queued call {} is missing from group {group}'s queue",
                        key.0
                    ));
                }
                queue_entries += 1;
            }
        }
    }
    if queue_entries != queue_len {
        return Err("the router queue holds entries of calls that are not queued".into());
    }
    for (key, entry) in s.requests.iter() {
        if entry.router_call_key.0 >= s.scalars.next_router_call_key {
            return Err(format!(
                "request {} has a router call key beyond the next key",
                key.request_id
            ));
        }
        if !entry.finished && !s.router_calls.contains(&entry.router_call_key) {
            return Err(format!(
                "unfinished request {} has no router call",
                key.request_id
            ));
        }
    }
    if let Some(seq) = s.timers.keys().map(|(_, seq)| *seq).max() {
        if seq >= s.scalars.next_timer_seq {
            return Err(format!("timer {seq} is not below the next timer number"));
        }
    }
    for (id, row) in s.call_type_rt.iter() {
        let expected = (
            call_type_queued.get(id).copied().unwrap_or(0),
            call_type_in_progress.get(id).copied().unwrap_or(0),
        );
        if (row.calls_q_now, row.calls_in_progress) != expected {
            return Err(format!(
                "call type {id} counts {:?}, recomputed {expected:?}",
                (row.calls_q_now, row.calls_in_progress)
            ));
        }
    }
    for (id, row) in s.service_rt.iter() {
        let expected = service_counts.get(id).copied().unwrap_or((0, 0));
        if (row.calls_q_now, row.calls_in_progress) != expected {
            return Err(format!(
                "service {id} counts {:?}, recomputed {expected:?}",
                (row.calls_q_now, row.calls_in_progress)
            ));
        }
    }

    Ok(())
}

/// Running sums equal their parts, and every table's byte count equals its rows'.
fn check_sums_and_sizes(s: &State) -> Result<(), String> {
    // Each To5 running sum is the sum of its buckets.
    let rows = s
        .skill_group_rt
        .values()
        .map(|r| &r.families)
        .chain(s.call_type_rt.values().map(|r| &r.families))
        .chain(s.service_rt.values().map(|r| &r.families));
    for families in rows {
        let mut sum = CallCounts::default();
        for bucket in &families.to5_buckets {
            sum.add(&bucket.to_counts());
        }
        if sum != families.to5_sum() {
            return Err("a To5 sum differs from its buckets".into());
        }
    }

    // Byte counts.
    macro_rules! bytes_match {
        ($($t:ident),*) => {$(
            if s.$t.bytes() != s.$t.recount_bytes() {
                return Err(format!("table {} byte count is off", stringify!($t)));
            }
        )*};
    }
    bytes_match!(
        agent_rt,
        agent_skill_group_rt,
        skill_group_rt,
        call_type_rt,
        calls,
        router_calls,
        requests,
        timers,
        node_state,
        scripts,
        labels
    );
    Ok(())
}

impl Router {
    /// Checks every invariant of the current state; see [`check_invariants`].
    pub fn check_invariants(&self) -> Result<(), String> {
        check_invariants(&self.state)
    }
}
