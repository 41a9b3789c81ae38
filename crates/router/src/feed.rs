//! The real-time feed's rows, computed from the router's state (see `tandem_model::feed`).
//!
//! A frame is the difference between the router at two consecutive TimeTicks. The candidates
//! are found by diffing the two states' tables ([`crate::table::IdTable::diff`]), which skips
//! everything a snapshot still shares, plus every row with rolling families when ordered time
//! crossed a period boundary (a To5 step rolls skill groups, call types and services; a new half
//! hour or day also rolls the agents' skill group rows). Each candidate's row is then computed
//! at both ticks and sent only if it differs. The result depends on the two states' values
//! alone, so both sides compute the same frame, and a side that rebuilt its state by transfer
//! computes it too once it has applied two ticks of its own.

use crate::rows::RouterCallPhase;
use crate::views::AgentSkillGroupRealTime;
use crate::Router;
use std::collections::BTreeSet;
use tandem_model::calendar::to5_step;
use tandem_model::feed::*;
use tandem_model::ids::*;

impl Router {
    /// Frames computed so far in this state's generation: the number of the last frame.
    pub fn feed_frame_number(&self) -> u64 {
        self.state.scalars.time_ticks
    }

    /// Every row of the feed's tables, in table order, then key order: a snapshot.
    pub fn feed_rows(&self) -> impl Iterator<Item = FeedRow> + '_ {
        let s = &self.state;
        let skill_groups = s
            .skill_group_rt
            .iter()
            .filter_map(|(id, _)| self.feed_row(FeedKey::SkillGroup(*id)));
        let call_types = s
            .call_type_rt
            .iter()
            .filter_map(|(id, _)| self.feed_row(FeedKey::CallType(*id)));
        let services = s
            .service_rt
            .iter()
            .filter_map(|(id, _)| self.feed_row(FeedKey::Service(*id)));
        let peripherals = s
            .peripheral_rt
            .iter()
            .filter_map(|(id, _)| self.feed_row(FeedKey::Peripheral(*id)));
        let agents = s
            .agent_rt
            .iter()
            .filter_map(|(id, _)| self.feed_row(FeedKey::Agent(*id)));
        let members = s
            .agent_skill_group_rt
            .iter()
            .filter_map(|((agent, group), _)| {
                self.feed_row(FeedKey::AgentSkillGroup(*agent, *group))
            });
        let queue = s
            .router_calls
            .iter()
            .filter_map(|(key, _)| self.feed_row(FeedKey::RouterQueue(*key)));
        skill_groups
            .chain(call_types)
            .chain(services)
            .chain(peripherals)
            .chain(agents)
            .chain(members)
            .chain(queue)
    }

    /// The row `key` names, as of the router's last input; `None` when the row does not exist
    /// (an agent logged off has no Agent_Real_Time row, a routed call waiting at a script node is
    /// not in the router queue).
    pub fn feed_row(&self, key: FeedKey) -> Option<FeedRow> {
        let s = &self.state;
        match key {
            FeedKey::SkillGroup(id) => {
                let g = self.skill_group_real_time(id)?;
                Some(FeedRow::SkillGroup(SkillGroupRealTimeRow {
                    skill_group_id: id,
                    logged_on: g.logged_on,
                    avail: g.avail,
                    not_ready: g.not_ready,
                    ready: g.ready,
                    reserved: g.reserved,
                    talking_in: g.talking_in,
                    talking_out: g.talking_out,
                    talking_other: g.talking_other,
                    hold: g.hold,
                    work_ready: g.work_ready,
                    work_not_ready: g.work_not_ready,
                    busy_other: g.busy_other,
                    calls_q_now: g.calls_q_now,
                    calls_in_progress: g.calls_in_progress,
                    router_calls_q_now: g.router_calls_q_now,
                    router_longest_call_q_since_ms: g.router_longest_call_q_since_ms,
                    expected_delay_ms: g.expected_delay_ms,
                    to5: g.to5,
                    half: g.half,
                    today: g.today,
                }))
            }
            FeedKey::CallType(id) => self.call_type_real_time(id).map(|c| {
                FeedRow::CallType(CallCountsRealTimeRow {
                    id: c.id,
                    calls_q_now: c.calls_q_now,
                    calls_in_progress: c.calls_in_progress,
                    to5: c.to5,
                    half: c.half,
                    today: c.today,
                })
            }),
            FeedKey::Service(id) => self.service_real_time(id).map(|c| {
                FeedRow::Service(CallCountsRealTimeRow {
                    id: c.id,
                    calls_q_now: c.calls_q_now,
                    calls_in_progress: c.calls_in_progress,
                    to5: c.to5,
                    half: c.half,
                    today: c.today,
                })
            }),
            FeedKey::Peripheral(id) => s.peripheral_rt.get(&id).map(|p| {
                FeedRow::Peripheral(PeripheralRealTimeRow {
                    peripheral_id: id,
                    online: p.online,
                    online_since_ms: p.online_since_ms,
                    agents_logged_on: p.agents_logged_on,
                    calls_in_progress: p.calls_in_progress,
                })
            }),
            FeedKey::Agent(id) => {
                let row = s.agent_rt.get(&id)?;
                row.state.is_logged_on().then(|| {
                    FeedRow::Agent(AgentRealTimeRow {
                        agent_id: id,
                        peripheral_id: row.peripheral,
                        agent_state: row.state.name().to_string(),
                        reason_code: row.reason_code,
                        date_time_last_state_change_ms: row.state_since_ms,
                        logged_on_since_ms: row.logged_on_since_ms,
                        skill_group_id: row.active_skill_group,
                        call: row.call,
                        reserved_for: row.reserved_for,
                    })
                })
            }
            FeedKey::AgentSkillGroup(agent, group) => {
                let AgentSkillGroupRealTime {
                    agent_id,
                    skill_group_id,
                    agent_state,
                    half,
                    today,
                } = self.agent_skill_group_real_time(agent, group)?;
                Some(FeedRow::AgentSkillGroup(AgentSkillGroupRealTimeRow {
                    agent_id,
                    skill_group_id,
                    agent_state: agent_state.to_string(),
                    half,
                    today,
                }))
            }
            FeedKey::RouterQueue(key) => {
                let call = s.router_calls.get(&key)?;
                match &call.phase {
                    RouterCallPhase::Queued {
                        priority,
                        enqueued_ms,
                        skill_groups,
                    } => Some(FeedRow::RouterQueue(RouterQueueRow {
                        router_call_key: key,
                        request: call.key,
                        call_type_id: call.call_type,
                        dialed_digits: call.dialed_digits.clone(),
                        priority: *priority,
                        enqueued_ms: *enqueued_ms,
                        skill_groups: skill_groups.clone(),
                    })),
                    RouterCallPhase::Waiting => None,
                }
            }
        }
    }

    /// The frame from `prev` (the router at the previous tick) to this router: every row that
    /// differs, as an upsert, and every row gone, as a delete, in table order, then key order.
    /// Configuration changes are the caller's to add: the router does not keep them.
    pub fn feed_delta(&self, prev: &Router) -> FeedDelta {
        let mut delta = FeedDelta::default();
        for key in self.feed_candidates(prev) {
            match (prev.feed_row(key), self.feed_row(key)) {
                (old, Some(new)) => {
                    if old.as_ref() != Some(&new) {
                        delta.upserts.push(new);
                    }
                }
                (Some(_), None) => delta.deletes.push(key),
                (None, None) => {}
            }
        }
        delta
    }

    /// Every key whose row may differ between `prev` and `self`, in table order, then key order:
    /// a superset of the rows that do.
    fn feed_candidates(&self, prev: &Router) -> BTreeSet<FeedKey> {
        let (s, p) = (&self.state, &prev.state);
        let mut keys = BTreeSet::new();
        let to5_rolled = to5_step(s.scalars.now_ms) != to5_step(p.scalars.now_ms);
        let half_rolled = s.scalars.periods.half_start_ms != p.scalars.periods.half_start_ms
            || s.scalars.periods.day_start_ms != p.scalars.periods.day_start_ms;
        let rolled = to5_rolled || half_rolled;

        // A skill group's row reads its configuration (the service-level type) and its row.
        if rolled {
            keys.extend(
                s.skill_group_rt
                    .iter()
                    .map(|(id, _)| FeedKey::SkillGroup(*id)),
            );
        }
        s.skill_group_rt.diff(&p.skill_group_rt, |id, _, _| {
            keys.insert(FeedKey::SkillGroup(*id));
        });
        s.skill_groups.diff(&p.skill_groups, |id, _, _| {
            keys.insert(FeedKey::SkillGroup(*id));
        });
        if rolled {
            keys.extend(s.call_type_rt.iter().map(|(id, _)| FeedKey::CallType(*id)));
            keys.extend(s.service_rt.iter().map(|(id, _)| FeedKey::Service(*id)));
        }
        s.call_type_rt.diff(&p.call_type_rt, |id, _, _| {
            keys.insert(FeedKey::CallType(*id));
        });
        s.call_types.diff(&p.call_types, |id, _, _| {
            keys.insert(FeedKey::CallType(*id));
        });
        s.service_rt.diff(&p.service_rt, |id, _, _| {
            keys.insert(FeedKey::Service(*id));
        });
        s.services.diff(&p.services, |id, _, _| {
            keys.insert(FeedKey::Service(*id));
        });
        s.peripheral_rt.diff(&p.peripheral_rt, |id, _, _| {
            keys.insert(FeedKey::Peripheral(*id));
        });

        // An agent's skill group rows read the agent's state, so an agent that changed makes
        // all of its rows (old and new) candidates.
        let mut agents_changed: Vec<AgentId> = Vec::new();
        s.agent_rt.diff(&p.agent_rt, |id, _, _| {
            keys.insert(FeedKey::Agent(*id));
            agents_changed.push(*id);
        });
        let member_keys = |agent: AgentId, keys: &mut BTreeSet<FeedKey>| {
            for ((a, g), _) in p.agent_skill_group_rt.of(agent) {
                keys.insert(FeedKey::AgentSkillGroup(*a, *g));
            }
            for ((a, g), _) in s.agent_skill_group_rt.of(agent) {
                keys.insert(FeedKey::AgentSkillGroup(*a, *g));
            }
        };
        if half_rolled {
            for ((a, g), _) in s.agent_skill_group_rt.iter() {
                keys.insert(FeedKey::AgentSkillGroup(*a, *g));
            }
        }
        for agent in agents_changed {
            member_keys(agent, &mut keys);
        }
        s.agent_skill_group_rt
            .diff_owners(&p.agent_skill_group_rt, |agent, _, _| {
                member_keys(*agent, &mut keys);
            });

        s.router_calls.diff(&p.router_calls, |key, _, _| {
            keys.insert(FeedKey::RouterQueue(*key));
        });
        keys
    }
}
