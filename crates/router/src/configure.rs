//! Configuration changes, applied whole or not at all.
//!
//! A change is applied to a clone of the state (O(1) thanks to the persistent tables); if any
//! operation fails, the clone is dropped and nothing changed. References are checked on every
//! upsert, and each object keeps a count of the objects that refer to it, so a delete that would
//! leave a dangling reference is refused without scanning the configuration.

use crate::families::{AgentFamilies, CallFamilies};
use crate::rows::*;
use crate::{Ctx, Rejection, Router};
use std::sync::Arc;
use tandem_model::config::*;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::output::{EventCode, Output, Severity};

type Result<T> = std::result::Result<T, Rejection>;

fn fail<T>(message: String) -> Result<T> {
    Err(Rejection(message))
}

/// " by <author>" for an event's text, when the change names one.
fn by(change: &ConfigChange) -> String {
    if change.author.is_empty() {
        String::new()
    } else {
        format!(" by {}", change.author)
    }
}

impl Router {
    /// A configuration change from the ordered stream: applied or rejected whole, and answered
    /// with a ConfigResult either way.
    pub(crate) fn config_change_input(&mut self, ctx: &mut Ctx, change: &ConfigChange) {
        match self.apply_config_change(ctx, change, CONFIG_CHANGE_OPS_MAX) {
            Ok(()) => {
                self.state.scalars.counters.config_changes_accepted += 1;
                // New members or groups may match available agents with queued calls.
                self.start_dispatch_sweep();
                let version = self.state.scalars.config_version;
                ctx.event(
                    Severity::Info,
                    EventCode::ConfigApplied,
                    format!(
                        "configuration version {version}: {} operations applied{}",
                        change.ops.len(),
                        by(change)
                    ),
                );
                ctx.out.push(Output::ConfigResult {
                    config_version: version,
                    error: None,
                });
            }
            Err(Rejection(message)) => {
                self.state.scalars.counters.config_changes_rejected += 1;
                ctx.event(
                    Severity::Warning,
                    EventCode::ConfigRejected,
                    format!("configuration change rejected{}: {message}", by(change)),
                );
                ctx.out.push(Output::ConfigResult {
                    config_version: self.state.scalars.config_version,
                    error: Some(message),
                });
            }
        }
    }

    /// Applies every operation or none; on success the dense configuration version rises by one.
    pub(crate) fn apply_config_change(
        &mut self,
        ctx: &mut Ctx,
        change: &ConfigChange,
        ops_max: usize,
    ) -> Result<()> {
        if change.ops.len() > ops_max {
            return fail(format!(
                "{} operations exceed the limit of {ops_max} per change",
                change.ops.len()
            ));
        }
        if change.ops.is_empty() {
            return fail("the change has no operations".into());
        }
        let saved = self.state.clone();
        let mut upserted_clients = Vec::new();
        let mut labels_changed = false;
        let result = change.ops.iter().enumerate().try_for_each(|(i, op)| {
            let outcome = match op {
                ConfigOp::Upsert(object) => {
                    match object {
                        ConfigObject::RoutingClient(client) => upserted_clients.push(client.id),
                        ConfigObject::Label(_) => labels_changed = true,
                        _ => {}
                    }
                    self.upsert(ctx, object)
                }
                ConfigOp::Delete(reference) => {
                    labels_changed |= matches!(reference, ObjectRef::Label(_));
                    self.delete(*reference)
                }
            };
            outcome.map_err(|Rejection(m)| Rejection(format!("operation {}: {m}", i + 1)))
        });
        let result =
            result.and_then(|()| self.check_default_labels(&upserted_clients, labels_changed));
        match result {
            Ok(()) => {
                self.state.scalars.config_version += 1;
                self.state.scalars.config_recovery_key = ctx.seq;
                Ok(())
            }
            Err(e) => {
                self.state = saved;
                Err(e)
            }
        }
    }

    /// A routing client's default label is not an ordinary reference (the label refers back to
    /// the client), so it is checked once the whole change is in place.
    fn check_default_labels(
        &self,
        upserted: &[RoutingClientId],
        labels_changed: bool,
    ) -> Result<()> {
        let check = |client: &RoutingClient| -> Result<()> {
            if let Some(label) = client.default_label {
                match self.state.labels.get(&label) {
                    Some(l) if l.routing_client == client.id => Ok(()),
                    Some(_) => fail(format!("routing client {}: default label {label} belongs to another routing client", client.id)),
                    None => fail(format!("routing client {} refers to unknown label {label}", client.id)),
                }
            } else {
                Ok(())
            }
        };
        if labels_changed {
            // A label edit may move or remove a default; routing clients are few, so check all.
            self.state.routing_clients.values().try_for_each(check)
        } else {
            upserted
                .iter()
                .filter_map(|id| self.state.routing_clients.get(id))
                .try_for_each(check)
        }
    }

    /// Whether the object exists, without copying it.
    pub(crate) fn exists(&self, reference: ObjectRef) -> bool {
        let s = &self.state;
        match reference {
            ObjectRef::Pg(id) => s.pgs.contains(&id),
            ObjectRef::Peripheral(id) => s.peripherals.contains(&id),
            ObjectRef::RoutingClient(id) => s.routing_clients.contains(&id),
            ObjectRef::Agent(id) => s.agents.contains(&id),
            ObjectRef::SkillGroup(id) => s.skill_groups.contains(&id),
            ObjectRef::SkillGroupMember(a, g) => s.agent_skill_group_rt.contains(&(a, g)),
            ObjectRef::Service(id) => s.services.contains(&id),
            ObjectRef::ServiceMember(v, g) => s.service_members.contains(&(v, g)),
            ObjectRef::CallType(id) => s.call_types.contains(&id),
            ObjectRef::DialedNumber(id) => s.dialed_numbers.contains(&id),
            ObjectRef::Script(id) => s.scripts.contains(&id),
            ObjectRef::CallTypeMap(c, v) => s.call_type_maps.contains(&(c, v)),
            ObjectRef::Label(id) => s.labels.contains(&id),
        }
    }

    /// The whole configuration, each kind in key order (what `tandem config export` shows).
    pub fn contact_center(&self) -> ContactCenter {
        let s = &self.state;
        ContactCenter {
            settings: s.scalars.settings.clone(),
            pgs: s.pgs.values().cloned().collect(),
            peripherals: s.peripherals.values().cloned().collect(),
            routing_clients: s.routing_clients.values().cloned().collect(),
            agents: s.agents.values().cloned().collect(),
            skill_groups: s.skill_groups.values().cloned().collect(),
            skill_group_members: s
                .agent_skill_group_rt
                .iter()
                .map(|(&(agent, skill_group), _)| SkillGroupMember { agent, skill_group })
                .collect(),
            services: s.services.values().cloned().collect(),
            service_members: s
                .service_members
                .iter()
                .map(|(&(service, skill_group), _)| ServiceMember {
                    service,
                    skill_group,
                })
                .collect(),
            call_types: s.call_types.values().cloned().collect(),
            dialed_numbers: s.dialed_numbers.values().cloned().collect(),
            scripts: s.scripts.values().map(|v| (**v).clone()).collect(),
            call_type_maps: s.call_type_maps.iter().map(|(_, m)| m.clone()).collect(),
            labels: s.labels.values().cloned().collect(),
        }
    }

    /// The configured object behind a reference.
    pub fn object(&self, reference: ObjectRef) -> Option<ConfigObject> {
        let s = &self.state;
        Some(match reference {
            ObjectRef::Pg(id) => ConfigObject::Pg(s.pgs.get(&id)?.clone()),
            ObjectRef::Peripheral(id) => ConfigObject::Peripheral(s.peripherals.get(&id)?.clone()),
            ObjectRef::RoutingClient(id) => {
                ConfigObject::RoutingClient(s.routing_clients.get(&id)?.clone())
            }
            ObjectRef::Agent(id) => ConfigObject::Agent(s.agents.get(&id)?.clone()),
            ObjectRef::SkillGroup(id) => ConfigObject::SkillGroup(s.skill_groups.get(&id)?.clone()),
            ObjectRef::SkillGroupMember(agent, skill_group) => {
                s.agent_skill_group_rt.get(&(agent, skill_group))?;
                ConfigObject::SkillGroupMember(SkillGroupMember { agent, skill_group })
            }
            ObjectRef::Service(id) => ConfigObject::Service(s.services.get(&id)?.clone()),
            ObjectRef::ServiceMember(service, skill_group) => {
                s.service_members.get(&(service, skill_group))?;
                ConfigObject::ServiceMember(ServiceMember {
                    service,
                    skill_group,
                })
            }
            ObjectRef::CallType(id) => ConfigObject::CallType(s.call_types.get(&id)?.clone()),
            ObjectRef::DialedNumber(id) => {
                ConfigObject::DialedNumber(s.dialed_numbers.get(&id)?.clone())
            }
            ObjectRef::Script(id) => ConfigObject::Script((**s.scripts.get(&id)?).clone()),
            ObjectRef::CallTypeMap(c, v) => {
                ConfigObject::CallTypeMap(s.call_type_maps.get(&(c, v))?.clone())
            }
            ObjectRef::Label(id) => ConfigObject::Label(s.labels.get(&id)?.clone()),
        })
    }

    fn reference_count(&self, reference: ObjectRef) -> u32 {
        self.state
            .reference_counts
            .get(&reference)
            .copied()
            .unwrap_or(0)
    }

    fn add_references(&mut self, object: &ConfigObject, up: bool) {
        for reference in object.references() {
            let count = self.reference_count(reference);
            let count = if up { count + 1 } else { count - 1 };
            if count == 0 {
                self.state.reference_counts.remove(&reference);
            } else {
                self.state.reference_counts.insert(reference, count);
            }
        }
    }

    fn upsert(&mut self, ctx: &mut Ctx, object: &ConfigObject) -> Result<()> {
        object.check_own().map_err(Rejection)?;
        let key = object.object_ref();
        for reference in object.references() {
            if !self.exists(reference) {
                return fail(format!("{key} refers to unknown {reference}"));
            }
        }
        let old = self.object(key);
        let (periods, now_ms) = (self.state.scalars.periods, ctx.now_ms);
        let referenced = self.reference_count(key) > 0;
        let s = &mut self.state;
        match object {
            ConfigObject::Pg(o) => {
                s.pgs.insert(o.id, o.clone());
            }
            ConfigObject::Peripheral(o) => {
                if s.peripherals.insert(o.id, o.clone()).is_none() {
                    s.peripheral_rt.insert(o.id, PeripheralRow::default());
                }
            }
            ConfigObject::RoutingClient(o) => {
                s.routing_clients.insert(o.id, o.clone());
            }
            ConfigObject::Agent(o) => {
                match s.agent_rt.get(&o.id).copied() {
                    Some(row)
                        if row.peripheral != o.peripheral
                            && (row.state.is_logged_on() || referenced) =>
                    {
                        return fail(format!(
                            "agent {} cannot move to peripheral {} while logged on or in skill groups",
                            o.id, o.peripheral
                        ));
                    }
                    Some(_) => {
                        s.agent_rt
                            .update(&o.id, |row| row.peripheral = o.peripheral);
                    }
                    None => {
                        s.agent_rt.insert(
                            o.id,
                            AgentRow {
                                peripheral: o.peripheral,
                                ..AgentRow::default()
                            },
                        );
                        s.scalars.agent_state_counts[AgentState::LoggedOff as usize] += 1;
                    }
                }
                s.agents.insert(o.id, o.clone());
            }
            ConfigObject::SkillGroup(o) => {
                if let Some(existing) = s.skill_groups.get(&o.id) {
                    if existing.peripheral != o.peripheral && referenced {
                        return fail(format!(
                            "skill group {} cannot move to another peripheral while referenced",
                            o.id
                        ));
                    }
                    s.skill_group_rt
                        .update(&o.id, |row| row.peripheral = o.peripheral);
                } else {
                    s.skill_group_rt.insert(
                        o.id,
                        SkillGroupRow {
                            peripheral: o.peripheral,
                            state_counts: [0; AgentState::COUNT],
                            calls_q_now: 0,
                            calls_in_progress: 0,
                            router_calls_q_now: 0,
                            families: CallFamilies::new(&periods, now_ms),
                            available: SortedSet::default(),
                            queue: SortedSet::default(),
                        },
                    );
                }
                s.skill_groups.insert(o.id, o.clone());
            }
            ConfigObject::SkillGroupMember(m) => {
                if old.is_none() {
                    self.add_member(ctx, *m)?;
                }
            }
            ConfigObject::Service(o) => {
                if s.services.insert(o.id, o.clone()).is_none() {
                    s.service_rt.insert(
                        o.id,
                        CallCountsRow {
                            calls_q_now: 0,
                            calls_in_progress: 0,
                            families: CallFamilies::new(&periods, now_ms),
                        },
                    );
                }
            }
            ConfigObject::ServiceMember(m) => {
                s.service_members.insert((m.service, m.skill_group), ());
            }
            ConfigObject::CallType(o) => {
                if s.call_types.insert(o.id, o.clone()).is_none() {
                    s.call_type_rt.insert(
                        o.id,
                        CallCountsRow {
                            calls_q_now: 0,
                            calls_in_progress: 0,
                            families: CallFamilies::new(&periods, now_ms),
                        },
                    );
                }
            }
            ConfigObject::DialedNumber(o) => {
                let index_key = (o.routing_client, o.digits.clone());
                if let Some(other) = s.dialed_number_index.get(&index_key) {
                    if *other != o.id {
                        return fail(format!(
                            "dialed number {}: digits {:?} already belong to dialed number {other} on routing client {}",
                            o.id, o.digits, o.routing_client
                        ));
                    }
                }
                if let Some(previous) = s.dialed_numbers.insert(o.id, o.clone()) {
                    s.dialed_number_index
                        .remove(&(previous.routing_client, previous.digits));
                }
                s.dialed_number_index.insert(index_key, o.id);
            }
            ConfigObject::Script(o) => {
                let mut script = o.clone();
                if let Some(previous) = s.scripts.get(&o.id) {
                    script.version = previous.version + 1;
                    // Rotary positions and allocation credits belong to the old graph.
                    let stale: Vec<_> = s
                        .node_state
                        .range((o.id, 0)..=(o.id, u16::MAX))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in stale {
                        s.node_state.remove(&k);
                    }
                } else {
                    script.version = script.version.max(1);
                }
                s.scripts.insert(o.id, Arc::new(script));
            }
            ConfigObject::CallTypeMap(o) => {
                s.call_type_maps.insert((o.call_type, o.script), o.clone());
            }
            ConfigObject::Label(o) => {
                if let Some(previous) = s.labels.insert(o.id, o.clone()) {
                    if let Some(target) = previous.target {
                        s.label_index
                            .remove(&(previous.routing_client, target, previous.id));
                    }
                }
                if let Some(target) = o.target {
                    s.label_index.insert((o.routing_client, target, o.id), ());
                }
            }
        }
        if let Some(old) = &old {
            self.add_references(old, false);
        }
        self.add_references(object, true);
        Ok(())
    }

    /// Adds an agent to a skill group: a new Agent_Skill_Group_Real_Time row, and the agent's
    /// current state counted in the group.
    fn add_member(&mut self, _ctx: &mut Ctx, member: SkillGroupMember) -> Result<()> {
        let SkillGroupMember { agent, skill_group } = member;
        let s = &mut self.state;
        let (Some(agent_config), Some(group_config)) =
            (s.agents.get(&agent), s.skill_groups.get(&skill_group))
        else {
            return fail(format!("skill group member (agent {agent}, skill group {skill_group}) refers to an unknown object"));
        };
        if agent_config.peripheral != group_config.peripheral {
            return fail(format!(
                "agent {agent} is on peripheral {} but skill group {skill_group} is on peripheral {}",
                agent_config.peripheral, group_config.peripheral
            ));
        }
        if s.skill_groups_of(agent).count() >= SKILL_GROUPS_PER_AGENT_MAX {
            return fail(format!(
                "agent {agent} is already in {SKILL_GROUPS_PER_AGENT_MAX} skill groups"
            ));
        }
        let row = s.agent_rt.get(&agent).copied().unwrap_or_default();
        let state = row.state_in(skill_group);
        s.agent_skill_group_rt.insert(
            (agent, skill_group),
            AgentSkillGroupRow {
                families: AgentFamilies::new(&s.scalars.periods),
            },
        );
        s.skill_group_rt.update(&skill_group, |g| {
            if state.is_logged_on() {
                g.state_counts[state as usize] += 1;
            }
            if state == AgentState::Ready {
                g.available.insert((row.state_since_ms, agent));
            }
        });
        Ok(())
    }

    fn delete(&mut self, reference: ObjectRef) -> Result<()> {
        let Some(object) = self.object(reference) else {
            return fail(format!("cannot delete unknown {reference}"));
        };
        let count = self.reference_count(reference);
        if count > 0 {
            return fail(format!(
                "cannot delete {reference}: {count} objects refer to it"
            ));
        }
        let s = &mut self.state;
        match reference {
            ObjectRef::Pg(id) => {
                s.pgs.remove(&id);
            }
            ObjectRef::Peripheral(id) => {
                if s.peripheral_rt
                    .get(&id)
                    .is_some_and(|p| p.calls_in_progress > 0)
                {
                    return fail(format!(
                        "cannot delete peripheral {id}: it has calls in progress"
                    ));
                }
                s.peripherals.remove(&id);
                s.peripheral_rt.remove(&id);
            }
            ObjectRef::RoutingClient(id) => {
                s.routing_clients.remove(&id);
            }
            ObjectRef::Agent(id) => {
                if s.agent_rt.get(&id).is_some_and(|a| a.state.is_logged_on()) {
                    return fail(format!("cannot delete agent {id}: it is logged on"));
                }
                s.agents.remove(&id);
                s.agent_rt.remove(&id);
                s.scalars.agent_state_counts[AgentState::LoggedOff as usize] -= 1;
            }
            ObjectRef::SkillGroup(id) => {
                if let Some(row) = s.skill_group_rt.get(&id) {
                    let calls = row.calls_q_now + row.calls_in_progress + row.router_calls_q_now;
                    if calls > 0 {
                        return fail(format!("cannot delete skill group {id}: {calls} calls are waiting or in progress"));
                    }
                }
                s.skill_groups.remove(&id);
                s.skill_group_rt.remove(&id);
            }
            ObjectRef::SkillGroupMember(agent, group) => {
                let row = s.agent_rt.get(&agent).copied().unwrap_or_default();
                if row.state.is_call_specific() && row.active_skill_group.is_none_or(|g| g == group)
                {
                    return fail(format!("cannot remove agent {agent} from skill group {group}: it is busy on a call there"));
                }
                let state = row.state_in(group);
                s.skill_group_rt.update(&group, |g| {
                    if state.is_logged_on() {
                        g.state_counts[state as usize] -= 1;
                    }
                    if state == AgentState::Ready {
                        g.available.remove(&(row.state_since_ms, agent));
                    }
                });
                s.agent_skill_group_rt.remove(&(agent, group));
            }
            ObjectRef::Service(id) => {
                if let Some(row) = s.service_rt.get(&id) {
                    let calls = row.calls_q_now + row.calls_in_progress;
                    if calls > 0 {
                        return fail(format!(
                            "cannot delete service {id}: {calls} calls are waiting or in progress"
                        ));
                    }
                }
                s.services.remove(&id);
                s.service_rt.remove(&id);
            }
            ObjectRef::ServiceMember(service, group) => {
                s.service_members.remove(&(service, group));
            }
            ObjectRef::CallType(id) => {
                if let Some(row) = s.call_type_rt.get(&id) {
                    let calls = row.calls_q_now + row.calls_in_progress;
                    if calls > 0 {
                        return fail(format!(
                            "cannot delete call type {id}: {calls} calls are queued or in progress"
                        ));
                    }
                }
                s.call_types.remove(&id);
                s.call_type_rt.remove(&id);
            }
            ObjectRef::DialedNumber(id) => {
                if let Some(previous) = s.dialed_numbers.remove(&id) {
                    s.dialed_number_index
                        .remove(&(previous.routing_client, previous.digits));
                }
            }
            ObjectRef::Script(id) => {
                s.scripts.remove(&id);
                let stale: Vec<_> = s
                    .node_state
                    .range((id, 0)..=(id, u16::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in stale {
                    s.node_state.remove(&k);
                }
            }
            ObjectRef::CallTypeMap(c, v) => {
                s.call_type_maps.remove(&(c, v));
            }
            ObjectRef::Label(id) => {
                if let Some(previous) = s.labels.remove(&id) {
                    if let Some(target) = previous.target {
                        s.label_index.remove(&(previous.routing_client, target, id));
                    }
                }
            }
        }
        self.add_references(&object, false);
        Ok(())
    }
}
