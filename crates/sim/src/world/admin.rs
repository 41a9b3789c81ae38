//! Configuration changes in the simulation. An administrator submits changes, now and then, to
//! the side that orders (as `tandem config apply` does through the side's admin port): a skill
//! group's service level changed, an agent added with a skill, a skill removed from an agent,
//! and now and then a change the router must reject whole. Each goes through the real
//! synchronizer (`submit_admin`) and router; the sides publish it in their feed frames and log
//! it for the loggers, so the end checks compare it everywhere: both central databases' config
//! tables and Config_Message_Log, and every AW database's copy of the configuration.

use super::{short, side_of, World};
use rand::Rng;
use std::collections::BTreeMap;
use tandem_mds::sync::SyncState;
use tandem_mds::AdminRequest;
use tandem_model::config::{
    Agent, ConfigChange, ConfigObject, ConfigOp, ContactCenter, ObjectRef, SkillGroupMember,
};
use tandem_model::ids::AgentId;

/// Mixed into the seed for the administrator's own random stream.
pub(super) const ADMIN_STREAM: u64 = 0x6164_6d69_6e69_7374;
/// Changes submitted at most per run.
pub(super) const CONFIG_CHANGES_PER_RUN_MAX: u32 = 4;

impl World {
    /// The administrator submits a change to the ordering side, if one orders: paired or
    /// isolated. An isolated side's change may be ordered in a history abandoned later, and
    /// reach loggers and AW databases whose version the history of record then reaches with
    /// another change; the end checks find it gone from every configuration.
    pub(super) fn submit_config_change(&mut self) {
        let states = self.states();
        let ordering = (0..2).find(|&s| {
            states[s].is_some_and(SyncState::is_enabled) && !self.machine(s).sync().needs_state()
        });
        let Some(side) = ordering else {
            self.trace_line("configuration change: no side orders".into());
            return;
        };
        let cc = self.machine(side).router().contact_center();
        let change = self.draw_config_change(&cc);
        self.next_admin_request += 1;
        let ticket = self.next_admin_request;
        self.trace_line(format!(
            "configuration change submitted to side {}: {}",
            side_of(side),
            short(&format!("{:?}", change.ops))
        ));
        let now = self.now_ms;
        self.machine_mut(side)
            .admin(now, ticket, AdminRequest::ApplyConfig(change));
    }

    fn draw_config_change(&mut self, cc: &ContactCenter) -> ConfigChange {
        let rng = &mut self.admin_rng;
        let ops = match rng.random_range(0..4) {
            // A skill group's service level threshold: every figure of its rows changes.
            0 if !cc.skill_groups.is_empty() => {
                let mut group = cc.skill_groups[rng.random_range(0..cc.skill_groups.len())].clone();
                group.service_level_threshold_s = rng.random_range(5..60);
                vec![ConfigOp::Upsert(ConfigObject::SkillGroup(group))]
            }
            // A new agent with a skill on one of the peripheral's groups.
            1 if !cc.skill_groups.is_empty() => {
                let group = &cc.skill_groups[rng.random_range(0..cc.skill_groups.len())];
                let id = AgentId(cc.agents.iter().map(|a| a.id.0).max().unwrap_or(0) + 1);
                vec![
                    ConfigOp::Upsert(ConfigObject::Agent(Agent {
                        id,
                        peripheral: group.peripheral,
                        peripheral_number: format!("9{}", id.0),
                        name: format!("Added agent {}", id.0),
                        extension: format!("8{}", id.0),
                    })),
                    ConfigOp::Upsert(ConfigObject::SkillGroupMember(SkillGroupMember {
                        agent: id,
                        skill_group: group.id,
                    })),
                ]
            }
            // A skill taken from an agent, logged on or not.
            2 if !cc.skill_group_members.is_empty() => {
                let member =
                    cc.skill_group_members[rng.random_range(0..cc.skill_group_members.len())];
                vec![ConfigOp::Delete(
                    ConfigObject::SkillGroupMember(member).object_ref(),
                )]
            }
            // A skill for an agent that does not exist: the router rejects the whole change,
            // the valid part with it.
            _ => {
                let mut ops = Vec::new();
                if let Some(group) = cc.skill_groups.first() {
                    let mut group = group.clone();
                    group.name = format!("{} (renamed)", group.name);
                    ops.push(ConfigOp::Upsert(ConfigObject::SkillGroup(group.clone())));
                    ops.push(ConfigOp::Upsert(ConfigObject::SkillGroupMember(
                        SkillGroupMember {
                            agent: AgentId(u32::MAX),
                            skill_group: group.id,
                        },
                    )));
                }
                ops
            }
        };
        ConfigChange {
            ops,
            author: "simulated administrator".into(),
        }
    }

    /// At the end: every AW database holds the router's configuration, at its version made by
    /// the same change.
    pub(super) fn check_aw_configuration(&mut self, enabled: usize) {
        let router = self.machine(enabled).router();
        let version = router.config_stamp();
        let expected = objects(&router.contact_center());
        for distributor in 0..self.distributors.len() {
            let Some((cc, held_version)) = self.distributors[distributor].configuration() else {
                return self.violate(
                    "every AW database holds the router's configuration after quiescence",
                    format!("distributor {distributor} holds none"),
                );
            };
            let held = objects(&cc);
            if held_version != version || held != expected {
                let differing = expected
                    .iter()
                    .filter(|(key, object)| held.get(*key) != Some(*object))
                    .count()
                    + held
                        .keys()
                        .filter(|key| !expected.contains_key(*key))
                        .count();
                return self.violate(
                    "every AW database holds the router's configuration after quiescence",
                    format!(
                        "distributor {distributor} holds {held_version} with {differing} objects \
                         differing; side {}'s router is at {version}",
                        side_of(enabled)
                    ),
                );
            }
        }
    }
}

/// Every object of a configuration by its key.
pub(super) fn objects(cc: &ContactCenter) -> BTreeMap<ObjectRef, ConfigObject> {
    cc.objects()
        .map(|object| (object.object_ref(), object))
        .collect()
}
