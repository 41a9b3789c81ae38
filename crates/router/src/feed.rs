//! The real-time feed's rows, computed from the router's state (see `tandem_model::feed`).
//!
//! The tables the rows are read from log the keys written to them (`ChangeLog`, off unless the
//! side follows the feed). At each TimeTick the side drains the logs (`feed_changes`): the
//! candidates are the keys written since the last tick, plus every row with rolling families
//! when ordered time crossed a period boundary, and each candidate's row is read as it is now.
//! Both sides apply the same inputs between two ticks, so they drain the same keys; rtsrvr then
//! compares the rows with the ones it published to make the frame. Nothing is copied or
//! snapshotted per tick: the cost follows the rows written.

use crate::periods;
use crate::rows::RouterCallPhase;
use crate::table::Changes;
use crate::views::CallCountsRealTime;
use crate::Router;
use tandem_model::calendar::to5_step;
use tandem_model::feed::*;

impl Router {
    /// Frames computed so far in this state's generation: the number of the last frame.
    pub fn feed_frame_number(&self) -> u64 {
        self.state.scalars.time_ticks
    }

    /// Every row of the feed's tables, in table order, then key order: a snapshot.
    pub fn feed_rows(&self) -> impl Iterator<Item = FeedRow> + '_ {
        let s = &self.state;
        let keys = s
            .skill_group_rt
            .keys()
            .map(|id| FeedKey::SkillGroup(*id))
            .chain(s.call_type_rt.keys().map(|id| FeedKey::CallType(*id)))
            .chain(s.service_rt.keys().map(|id| FeedKey::Service(*id)))
            .chain(s.peripheral_rt.keys().map(|id| FeedKey::Peripheral(*id)))
            .chain(s.agent_rt.keys().map(|id| FeedKey::Agent(*id)))
            .chain(
                s.agent_skill_group_rt
                    .keys()
                    .map(|&(agent, group)| FeedKey::AgentSkillGroup(agent, group)),
            )
            .chain(s.router_calls.keys().map(|key| FeedKey::RouterQueue(*key)));
        // A key without a row (an agent logged off, a call not queued) is left out.
        keys.filter_map(|key| self.feed_row(key))
    }

    /// The row `key` names, as of the router's last input; `None` when the row does not exist
    /// (an agent logged off has no Agent_Real_Time row, a routed call waiting at a script node is
    /// not in the router queue).
    pub fn feed_row(&self, key: FeedKey) -> Option<FeedRow> {
        let s = &self.state;
        match key {
            FeedKey::SkillGroup(id) => {
                let g = self.skill_group_real_time(id)?;
                Some(FeedRow::SkillGroup(Box::new(SkillGroupRealTimeRow {
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
                })))
            }
            FeedKey::CallType(id) => self
                .call_type_real_time(id)
                .map(|c| FeedRow::CallType(call_counts_row(c))),
            FeedKey::Service(id) => self
                .service_real_time(id)
                .map(|c| FeedRow::Service(call_counts_row(c))),
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
                // ICM's Agent_Real_Time holds the agents logged on only.
                let row = s.agent_rt.get(&id).filter(|row| row.state.is_logged_on())?;
                Some(FeedRow::Agent(AgentRealTimeRow {
                    agent_id: id,
                    peripheral_id: row.peripheral,
                    agent_state: row.state,
                    reason_code: row.reason_code,
                    date_time_last_state_change_ms: row.state_since_ms,
                    logged_on_since_ms: row.logged_on_since_ms,
                    skill_group_id: row.active_skill_group,
                    call: row.call,
                    reserved_for: row.reserved_for,
                }))
            }
            FeedKey::AgentSkillGroup(agent, group) => {
                let member = s.agent_skill_group_rt.get(&(agent, group))?;
                let row = s.agent_rt.get(&agent)?;
                let mut families = member.families;
                families.roll(&s.scalars.periods);
                Some(FeedRow::AgentSkillGroup(AgentSkillGroupRealTimeRow {
                    agent_id: agent,
                    skill_group_id: group,
                    agent_state: row.state_in(group),
                    half: families.half,
                    today: families.today,
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

    /// Starts (or stops) logging the writes to the tables the feed's rows are read from, with
    /// empty logs. The logs are no part of the state: a state rebuilt from its records does not
    /// log until told to.
    pub fn follow_feed_changes(&mut self, on: bool) {
        let s = &mut self.state;
        s.skill_group_rt.log_changes(on);
        s.skill_groups.log_changes(on);
        s.call_type_rt.log_changes(on);
        s.call_types.log_changes(on);
        s.service_rt.log_changes(on);
        s.services.log_changes(on);
        s.peripheral_rt.log_changes(on);
        s.agent_rt.log_changes(on);
        s.agent_skill_group_rt.log_changes(on);
        s.router_calls.log_changes(on);
    }

    /// The rows that may have changed since the last call, each as it is now (`None`: the row
    /// does not exist), in table order, then key order; and empties the change logs.
    ///
    /// `since_ms` is the ordered time of the last call. The candidates are the keys written
    /// since (every table's change log; an agent's write makes all of its skill group rows
    /// candidates, since they show its state), plus every row with rolling families when
    /// ordered time crossed a To5 step (skill groups, call types, services) or a half hour or
    /// day (the agents' skill group rows too). With `since_ms` `None`, or when a log overflowed,
    /// the answer is every row and `complete` says so. Called at every TimeTick by both sides,
    /// the answer depends only on the inputs between the two ticks, so both give the same.
    pub fn feed_changes(&mut self, since_ms: Option<u64>) -> FeedChanges {
        let s = &mut self.state;
        let drained = (
            s.skill_group_rt.drain_changes(),
            s.skill_groups.drain_changes(),
            s.call_type_rt.drain_changes(),
            s.call_types.drain_changes(),
            s.service_rt.drain_changes(),
            s.services.drain_changes(),
            s.peripheral_rt.drain_changes(),
            s.agent_rt.drain_changes(),
            s.agent_skill_group_rt.drain_changes(),
            s.router_calls.drain_changes(),
        );
        let (sg, sg_config, ct, ct_config, svc, svc_config, peripherals, agents, members, calls) =
            drained;
        let mut keys: Vec<FeedKey> = Vec::new();
        let mut complete = since_ms.is_none();
        fn add<K>(
            changes: Changes<K>,
            keys: &mut Vec<FeedKey>,
            complete: &mut bool,
            key: impl Fn(K) -> FeedKey,
        ) {
            match changes {
                Changes::Keys(changed) => keys.extend(changed.into_iter().map(key)),
                Changes::All => *complete = true,
            }
        }
        let c = &mut complete;
        add(sg, &mut keys, c, FeedKey::SkillGroup);
        add(sg_config, &mut keys, c, FeedKey::SkillGroup);
        add(ct, &mut keys, c, FeedKey::CallType);
        add(ct_config, &mut keys, c, FeedKey::CallType);
        add(svc, &mut keys, c, FeedKey::Service);
        add(svc_config, &mut keys, c, FeedKey::Service);
        add(peripherals, &mut keys, c, FeedKey::Peripheral);
        add(calls, &mut keys, c, FeedKey::RouterQueue);
        add(members, &mut keys, c, |(agent, group)| {
            FeedKey::AgentSkillGroup(agent, group)
        });
        match agents {
            Changes::Keys(agents) => {
                for agent in agents {
                    keys.push(FeedKey::Agent(agent));
                    keys.extend(
                        self.state
                            .agent_skill_group_rt
                            .of(agent)
                            .iter()
                            .map(|((a, g), _)| FeedKey::AgentSkillGroup(*a, *g)),
                    );
                }
            }
            Changes::All => complete = true,
        }
        if complete {
            return FeedChanges {
                complete: true,
                rows: self.feed_rows().map(|row| (row.key(), Some(row))).collect(),
            };
        }
        let s = &self.state;
        let since_ms = since_ms.expect("complete without a previous tick");
        let now = s.scalars.now_ms;
        let to5_rolled = to5_step(now) != to5_step(since_ms);
        let previous = periods(self.tz, s.scalars.settings.interval_minutes, since_ms);
        let half_rolled = previous.half_start_ms != s.scalars.periods.half_start_ms
            || previous.day_start_ms != s.scalars.periods.day_start_ms;
        if to5_rolled || half_rolled {
            keys.extend(s.skill_group_rt.keys().map(|id| FeedKey::SkillGroup(*id)));
            keys.extend(s.call_type_rt.keys().map(|id| FeedKey::CallType(*id)));
            keys.extend(s.service_rt.keys().map(|id| FeedKey::Service(*id)));
        }
        if half_rolled {
            keys.extend(
                s.agent_skill_group_rt
                    .keys()
                    .map(|&(a, g)| FeedKey::AgentSkillGroup(a, g)),
            );
        }
        keys.sort_unstable();
        keys.dedup();
        let rows = keys
            .into_iter()
            .map(|key| (key, self.feed_row(key)))
            .collect();
        FeedChanges {
            complete: false,
            rows,
        }
    }
}

/// Call_Type_Real_Time's or Service_Real_Time's row from the view (which adds the name).
fn call_counts_row(c: CallCountsRealTime) -> Box<CallCountsRealTimeRow> {
    Box::new(CallCountsRealTimeRow {
        id: c.id,
        calls_q_now: c.calls_q_now,
        calls_in_progress: c.calls_in_progress,
        to5: c.to5,
        half: c.half,
        today: c.today,
    })
}

/// What [`Router::feed_changes`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedChanges {
    /// `rows` holds every row, and a row not in it does not exist.
    pub complete: bool,
    /// The candidates, each with its row now, in key order.
    pub rows: Vec<(FeedKey, Option<FeedRow>)>,
}
