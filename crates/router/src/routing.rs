//! Route requests: idempotency, script execution, target selection, the router queue, and the
//! timers that answer before a routing client gives up.
//!
//! A request runs its script within the input that brought it until the script answers or
//! pauses (a Wait node, or the router queue). A paused request is a `RouterCallRow`; timers and
//! agents becoming available resume it. Every path ends in exactly one final answer and one
//! Route_Call_Detail row: a script answer, the default label (script error, End, or the deadline
//! just before the client's timeout), or the request's end reported by the client.

use crate::rows::{RequestEntry, RouterCallPhase, RouterCallRow, Timer};
use crate::{reject, Applied, Ctx, Router};
use tandem_model::codec::Nullable;
use tandem_model::config::LabelTarget;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::{RouteEndReason, RouteRequest};
use tandem_model::output::{
    AnswerKind, EventCode, HistoricalRow, Output, RouteAnswer, RouteCallDetail, Severity,
};
use tandem_model::realtime::CallCounts;
use tandem_model::script::{
    Condition, NodeKind, SelectRule, ROUTER_CALL_LIFETIME_MS_MAX, SCRIPT_STEPS_PER_INPUT_MAX,
};

/// Steps of the dispatch sweep per TimeTick (see `sweep_dispatch`).
pub const DISPATCH_SWEEP_STEPS_PER_TICK_MAX: usize = 2_000;

/// How a script run ended.
enum Outcome {
    /// A final answer; with the agent and skill group when it routes to an agent.
    Answer(RouteAnswer, Option<(AgentId, SkillGroupId)>),
    /// The default label, with the error that caused it (None for an End node).
    Default(Option<String>),
    /// The script paused (Wait node or router queue); the row holds where.
    Suspended,
}

impl Router {
    pub(crate) fn route_request(&mut self, ctx: &mut Ctx, request: &RouteRequest) -> Applied {
        request.check().map_err(crate::Rejection)?;
        let key = request.key;
        let Some(client) = self.state.routing_clients.get(&key.routing_client) else {
            return reject(format!("unknown routing client {}", key.routing_client));
        };
        let (pg, client_timeout_ms, answer_margin_ms) =
            (client.pg, client.timeout_ms, client.answer_margin_ms);
        self.state.scalars.counters.route_requests += 1;

        // Idempotency: a repeat gets the latest answer again, never a second routing.
        if let Some(entry) = self.state.requests.get(&key) {
            self.state.scalars.counters.route_request_repeats += 1;
            if let Some(answer) = entry.answer.0.clone() {
                ctx.out.push(Output::RouteResponse {
                    pg,
                    key,
                    router_call_key: entry.router_call_key,
                    answer,
                    repeat: true,
                });
            }
            return Ok(());
        }

        let router_call_key = RouterCallKey(self.state.scalars.next_router_call_key);
        self.state.scalars.next_router_call_key += 1;
        self.state.requests.insert(
            key,
            RequestEntry {
                router_call_key,
                answer: Nullable(None),
                finished: false,
                reserved_agent: None,
            },
        );
        let dialed_number = self
            .state
            .dialed_number_index
            .find(key.routing_client, |(_, digits)| {
                digits.as_str().cmp(&request.dialed_number)
            })
            .copied();
        let call_type = dialed_number
            .and_then(|d| self.state.dialed_numbers.get(&d))
            .map(|d| d.call_type);
        let mut call = RouterCallRow {
            key,
            pg,
            dialed_number,
            call_type,
            script: ScriptId(0),
            node: 0,
            phase: RouterCallPhase::Waiting,
            generation: 0,
            arrived_ms: ctx.now_ms,
            interim_answered: false,
            ani: request.ani.clone(),
            caller_entered_digits: request.caller_entered_digits.clone(),
            call_variables: request.call_variables.clone(),
            dialed_digits: request.dialed_number.clone(),
        };
        let outcome = match (dialed_number, call_type.and_then(|c| self.script_for(c))) {
            (None, _) => Outcome::Default(Some(format!(
                "unknown dialed number {:?}",
                request.dialed_number
            ))),
            (Some(_), None) => Outcome::Default(Some(
                "no script is mapped for the call type at this time".into(),
            )),
            (Some(_), Some((script, start))) => {
                call.script = script;
                call.node = start;
                self.run_script(ctx, router_call_key, &mut call)
            }
        };
        if matches!(outcome, Outcome::Suspended) {
            // Answer before the client gives up, unless the call is parked by then.
            let deadline_ms = call.arrived_ms + (client_timeout_ms - answer_margin_ms) as u64;
            self.state
                .add_timer(deadline_ms, Timer::AnswerDeadline(router_call_key));
        }
        self.conclude(ctx, router_call_key, call, outcome);
        Ok(())
    }

    /// The script for a call type now: the first map entry (by priority, then script id) whose
    /// local time window contains the current minute.
    pub(crate) fn script_for(&self, call_type: CallTypeId) -> Option<(ScriptId, u16)> {
        let minute = self.state.scalars.periods.local_minute;
        self.state
            .call_type_maps
            .of(call_type)
            .iter()
            .filter(|(_, map)| match (map.from_minute, map.to_minute) {
                (Some(from), Some(to)) if from <= to => (from..to).contains(&minute),
                (Some(from), Some(to)) => minute >= from || minute < to,
                _ => true,
            })
            .min_by_key(|((_, script), map)| (map.priority, *script))
            .and_then(|((_, script), _)| {
                let start = self.state.scripts.get(script)?.start()?;
                Some((*script, start))
            })
    }

    /// Runs the call's script from `call.node` until it answers or pauses.
    fn run_script(
        &mut self,
        ctx: &mut Ctx,
        router_call_key: RouterCallKey,
        call: &mut RouterCallRow,
    ) -> Outcome {
        let Some(script) = self.state.scripts.get(&call.script).cloned() else {
            return Outcome::Default(Some(format!("script {} no longer exists", call.script)));
        };
        for _ in 0..SCRIPT_STEPS_PER_INPUT_MAX {
            let Some(node) = script.node(call.node) else {
                return Outcome::Default(Some(format!(
                    "script {} has no node {}",
                    call.script, call.node
                )));
            };
            match &node.kind {
                NodeKind::Start { next } => call.node = *next,
                NodeKind::If {
                    condition,
                    then_next,
                    else_next,
                } => {
                    call.node = if self.evaluate(condition, call) {
                        *then_next
                    } else {
                        *else_next
                    };
                }
                NodeKind::Select {
                    rule,
                    skill_groups,
                    none_next,
                } => match self.select(*rule, skill_groups, call.script, node.id) {
                    Some((agent, group)) => return self.agent_outcome(call, agent, group),
                    None => call.node = *none_next,
                },
                NodeKind::Wait { .. } | NodeKind::Queue { .. }
                    if ctx.now_ms - call.arrived_ms >= ROUTER_CALL_LIFETIME_MS_MAX =>
                {
                    return Outcome::Default(Some(format!(
                        "the call spent {} hours in script {} without a target",
                        ROUTER_CALL_LIFETIME_MS_MAX / 3_600_000,
                        call.script
                    )));
                }
                NodeKind::Queue {
                    skill_groups,
                    priority,
                    timeout_s,
                    ..
                } => {
                    if let Some((agent, group)) = self.select(
                        SelectRule::LongestAvailable,
                        skill_groups,
                        call.script,
                        node.id,
                    ) {
                        return self.agent_outcome(call, agent, group);
                    }
                    self.enqueue(
                        ctx,
                        router_call_key,
                        call,
                        skill_groups,
                        *priority,
                        *timeout_s,
                    );
                    return Outcome::Suspended;
                }
                NodeKind::PercentAllocation { branches } => {
                    call.node = self.allocate(call.script, node.id, branches);
                }
                NodeKind::Label { labels } | NodeKind::Divert { labels } => {
                    let client = call.key.routing_client;
                    let found = labels
                        .iter()
                        .filter_map(|id| self.state.labels.get(id))
                        .find(|label| label.routing_client == client);
                    return match found {
                        Some(label) => Outcome::Answer(
                            RouteAnswer {
                                kind: AnswerKind::from_label_kind(label.kind),
                                label: label.label.clone(),
                                label_id: Some(label.id),
                                target: label.target,
                            },
                            None,
                        ),
                        None => Outcome::Default(Some(format!(
                            "{} node {} has no label for routing client {client}",
                            node.kind.name(),
                            node.id
                        ))),
                    };
                }
                // The routing client gives busy or ring-no-answer treatment itself.
                NodeKind::Busy => return Outcome::Answer(bare_answer(AnswerKind::Busy), None),
                NodeKind::Ring => return Outcome::Answer(bare_answer(AnswerKind::Ring), None),
                NodeKind::Default => return Outcome::Default(None),
                NodeKind::End => return Outcome::Default(None),
                NodeKind::Wait { seconds, next } => {
                    call.node = *next;
                    call.phase = RouterCallPhase::Waiting;
                    call.generation += 1;
                    self.state.add_timer(
                        ctx.now_ms + *seconds as u64 * 1000,
                        Timer::ScriptWake(router_call_key, call.generation),
                    );
                    return Outcome::Suspended;
                }
            }
        }
        Outcome::Default(Some(format!(
            "script {} ran {SCRIPT_STEPS_PER_INPUT_MAX} nodes without answering",
            call.script
        )))
    }

    fn agent_outcome(&self, call: &RouterCallRow, agent: AgentId, group: SkillGroupId) -> Outcome {
        let client = call.key.routing_client;
        let target = LabelTarget::Agent(agent);
        let label = self
            .state
            .label_index
            .first_in((client, target, LabelId(0))..=(client, target, LabelId(u32::MAX)))
            .and_then(|((_, _, id), _)| self.state.labels.get(id));
        let answer = match label {
            Some(label) => RouteAnswer {
                kind: AnswerKind::Label,
                label: label.label.clone(),
                label_id: Some(label.id),
                target: Some(target),
            },
            None => RouteAnswer {
                kind: AnswerKind::Label,
                label: self
                    .state
                    .agents
                    .get(&agent)
                    .map(|a| a.extension.clone())
                    .unwrap_or_default(),
                label_id: None,
                target: Some(target),
            },
        };
        Outcome::Answer(answer, Some((agent, group)))
    }

    fn evaluate(&self, condition: &Condition, call: &RouterCallRow) -> bool {
        let periods = &self.state.scalars.periods;
        match condition {
            Condition::SkillGroupAvailableAtLeast { skill_group, count } => self
                .state
                .skill_group_rt
                .get(skill_group)
                .is_some_and(|g| g.count(AgentState::Ready) >= *count),
            Condition::SkillGroupQueuedAtMost { skill_group, count } => self
                .state
                .skill_group_rt
                .get(skill_group)
                .is_some_and(|g| g.router_calls_q_now <= *count),
            Condition::AniPrefix { prefix } => call.ani.starts_with(prefix.as_str()),
            Condition::CallVariableEquals { index, value } => call
                .call_variables
                .get((*index as usize).wrapping_sub(1))
                .is_some_and(|v| v == value),
            Condition::CallerEnteredDigitsEqual { value } => &call.caller_entered_digits == value,
            Condition::TimeOfDayBetween {
                from_minute,
                to_minute,
            } => {
                let minute = periods.local_minute;
                if from_minute <= to_minute {
                    (*from_minute..*to_minute).contains(&minute)
                } else {
                    minute >= *from_minute || minute < *to_minute
                }
            }
            Condition::DayOfWeekIn { days } => days.contains(&periods.local_weekday),
            Condition::All { conditions } => conditions.iter().all(|c| self.evaluate(c, call)),
            Condition::Any { conditions } => conditions.iter().any(|c| self.evaluate(c, call)),
            Condition::Not { condition } => !self.evaluate(condition, call),
        }
    }

    /// The longest-available agent of a skill group whose peripheral is online.
    fn longest_available(&self, group: SkillGroupId) -> Option<(u64, AgentId)> {
        // The group's own counts answer "nobody available" without a seek in the index.
        let row = self.state.skill_group_rt.get(&group)?;
        if row.count(AgentState::Ready) == 0 {
            return None;
        }
        if !self
            .state
            .peripheral_rt
            .get(&row.peripheral)
            .is_some_and(|p| p.online)
        {
            return None;
        }
        row.available.first().copied()
    }

    /// Picks an available agent among `groups` by `rule`.
    ///
    /// - Longest Available: the agent available longest across all groups.
    /// - Minimum Expected Delay: a group with an available agent has an expected delay of zero,
    ///   so among those the one with the most available agents wins (first listed on ties), and
    ///   within it the longest-available agent.
    /// - Homing: the first listed group with an available agent.
    /// - Rotary: like homing, starting one group after the previous call's choice.
    fn select(
        &mut self,
        rule: SelectRule,
        groups: &[SkillGroupId],
        script: ScriptId,
        node: u16,
    ) -> Option<(AgentId, SkillGroupId)> {
        match rule {
            SelectRule::LongestAvailable => groups
                .iter()
                .filter_map(|g| {
                    self.longest_available(*g)
                        .map(|(since, agent)| (since, agent, *g))
                })
                .min_by_key(|(since, agent, _)| (*since, *agent))
                .map(|(_, agent, group)| (agent, group)),
            SelectRule::MinimumExpectedDelay => groups
                .iter()
                .filter_map(|g| {
                    let (_, agent) = self.longest_available(*g)?;
                    let available = self.state.skill_group_rt.get(g)?.count(AgentState::Ready);
                    Some((available, agent, *g))
                })
                .fold(
                    None,
                    |best: Option<(u32, AgentId, SkillGroupId)>, candidate| match best {
                        Some(b) if b.0 >= candidate.0 => Some(b),
                        _ => Some(candidate),
                    },
                )
                .map(|(_, agent, group)| (agent, group)),
            SelectRule::Homing => groups
                .iter()
                .find_map(|g| self.longest_available(*g).map(|(_, agent)| (agent, *g))),
            SelectRule::Rotary => {
                let n = groups.len();
                let start = self
                    .state
                    .node_state
                    .get(&(script, node))
                    .map_or(0, |s| s.rotary_next as usize)
                    % n;
                let chosen = (0..n).map(|i| (start + i) % n).find_map(|i| {
                    self.longest_available(groups[i])
                        .map(|(_, agent)| (i, agent))
                });
                let next = chosen.map_or(start, |(i, _)| i + 1) % n;
                self.update_node_state(script, node, |s| s.rotary_next = next as u32);
                chosen.map(|(i, agent)| (agent, groups[i]))
            }
        }
    }

    fn update_node_state(
        &mut self,
        script: ScriptId,
        node: u16,
        f: impl FnOnce(&mut crate::rows::NodeStateRow),
    ) {
        if !self.state.node_state.contains(&(script, node)) {
            self.state
                .node_state
                .insert((script, node), crate::rows::NodeStateRow::default());
        }
        self.state.node_state.update(&(script, node), f);
    }

    /// Smooth weighted round robin: each branch earns its weight in credit per call; the richest
    /// branch is taken and pays the total. Over any run of calls the split follows the weights as
    /// closely as whole calls allow, and it is the same on both sides.
    fn allocate(
        &mut self,
        script: ScriptId,
        node: u16,
        branches: &[tandem_model::script::Branch],
    ) -> u16 {
        let total: i64 = branches.iter().map(|b| b.weight as i64).sum();
        let mut chosen = 0;
        self.update_node_state(script, node, |s| {
            if s.credits.len() != branches.len() {
                s.credits = vec![0; branches.len()];
            }
            for (credit, branch) in s.credits.iter_mut().zip(branches) {
                *credit += branch.weight as i64;
            }
            chosen = (0..branches.len())
                .max_by_key(|&i| (s.credits[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            s.credits[chosen] -= total;
        });
        branches[chosen].next
    }

    fn enqueue(
        &mut self,
        ctx: &mut Ctx,
        router_call_key: RouterCallKey,
        call: &mut RouterCallRow,
        groups: &[SkillGroupId],
        priority: u8,
        timeout_s: u32,
    ) {
        let now = ctx.now_ms;
        let delta = CallCounts {
            router_calls_queued: 1,
            ..Default::default()
        };
        for group in groups {
            self.touch_skill_group(ctx, *group, Some(&delta), |g| {
                if g.queue.insert(((priority, now), router_call_key)) {
                    g.router_calls_q_now += 1;
                }
            });
        }
        if let Some(call_type) = call.call_type {
            self.touch_call_type(ctx, call_type, Some(&delta), |c| c.calls_q_now += 1);
        }
        call.phase = RouterCallPhase::Queued {
            priority,
            enqueued_ms: now,
            skill_groups: groups.to_vec(),
        };
        call.generation += 1;
        if timeout_s > 0 {
            self.state.add_timer(
                now + timeout_s as u64 * 1000,
                Timer::QueueTimeout(router_call_key, call.generation),
            );
        }
    }

    /// Takes a call out of the router queue; `abandoned` when the caller or client gave up.
    fn dequeue(
        &mut self,
        ctx: &mut Ctx,
        router_call_key: RouterCallKey,
        call: &mut RouterCallRow,
        abandoned: bool,
    ) {
        let RouterCallPhase::Queued {
            priority,
            enqueued_ms,
            skill_groups,
        } = std::mem::replace(&mut call.phase, RouterCallPhase::Waiting)
        else {
            return;
        };
        let delta = CallCounts {
            router_queue_wait_time_ms: ctx.now_ms - enqueued_ms,
            router_calls_abandoned_q: abandoned as u64,
            ..Default::default()
        };
        for group in &skill_groups {
            self.touch_skill_group(ctx, *group, Some(&delta), |g| {
                if g.queue.remove(&((priority, enqueued_ms), router_call_key)) {
                    g.router_calls_q_now -= 1;
                }
            });
        }
        if let Some(call_type) = call.call_type {
            self.touch_call_type(ctx, call_type, Some(&delta), |c| c.calls_q_now -= 1);
        }
        call.generation += 1;
    }

    /// An agent just became available: give it the best queued call among its skill groups
    /// (lowest priority number, then longest waiting).
    pub(crate) fn dispatch_queued_call(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        groups: &[SkillGroupId],
    ) {
        if self.state.router_calls.is_empty() {
            return;
        }
        let Some(peripheral) = self.state.agent_rt.get(&agent).map(|a| a.peripheral) else {
            return;
        };
        if !self
            .state
            .peripheral_rt
            .get(&peripheral)
            .is_some_and(|p| p.online)
        {
            return;
        }
        let best = groups
            .iter()
            .filter_map(|&group| {
                let (order, key) = self.state.skill_group_rt.get(&group)?.queue.first()?;
                Some((*order, *key, group))
            })
            .min();
        let Some((_, router_call_key, group)) = best else {
            return;
        };
        let Some(mut call) = self.state.router_calls.remove(&router_call_key) else {
            debug_assert!(false, "a queued call without its row");
            return;
        };
        self.dequeue(ctx, router_call_key, &mut call, false);
        let outcome = self.agent_outcome(&call, agent, group);
        self.conclude(ctx, router_call_key, call, outcome);
    }

    pub(crate) fn start_dispatch_sweep(&mut self) {
        self.state.scalars.dispatch_sweep = crate::state::DispatchSweep {
            active: true,
            after: None,
        };
    }

    /// One TimeTick's share of the dispatch sweep: visits skill groups in id order and, where
    /// calls wait in the router queue while an agent is available, delivers them. At most
    /// `DISPATCH_SWEEP_STEPS_PER_TICK_MAX` steps (a group visited, or a call delivered) per tick.
    pub(crate) fn sweep_dispatch(&mut self, ctx: &mut Ctx) {
        let mut steps = DISPATCH_SWEEP_STEPS_PER_TICK_MAX;
        while steps > 0 && self.state.scalars.dispatch_sweep.active {
            steps -= 1;
            let after = self.state.scalars.dispatch_sweep.after;
            let Some(group) = self
                .state
                .skill_group_rt
                .next_after(after.as_ref())
                .map(|(k, _)| *k)
            else {
                self.state.scalars.dispatch_sweep = crate::state::DispatchSweep::default();
                return;
            };
            let queued = self
                .state
                .skill_group_rt
                .get(&group)
                .is_some_and(|g| g.router_calls_q_now > 0);
            if queued {
                if let Some((_, agent)) = self.longest_available(group) {
                    let groups: Vec<SkillGroupId> = self.state.skill_groups_of(agent).collect();
                    self.dispatch_queued_call(ctx, agent, &groups);
                    // Stay on this group while that keeps matching agents with calls.
                    if self
                        .state
                        .agent_rt
                        .get(&agent)
                        .is_some_and(|a| a.state != AgentState::Ready)
                    {
                        continue;
                    }
                }
            }
            self.state.scalars.dispatch_sweep.after = Some(group);
        }
    }

    /// Acts on a script outcome: keeps a paused call, or sends the final answer, reserves the
    /// agent, counts, and writes the Route_Call_Detail.
    fn conclude(
        &mut self,
        ctx: &mut Ctx,
        router_call_key: RouterCallKey,
        mut call: RouterCallRow,
        outcome: Outcome,
    ) {
        let (answer, agent, error) = match outcome {
            Outcome::Suspended => {
                if matches!(call.phase, RouterCallPhase::Queued { .. }) && !call.interim_answered {
                    // Park the call: the client stops its timeout and waits for a delivery.
                    call.interim_answered = true;
                    let answer = RouteAnswer {
                        kind: AnswerKind::Queued,
                        label: String::new(),
                        label_id: None,
                        target: None,
                    };
                    self.state
                        .requests
                        .update(&call.key, |e| e.answer = Nullable(Some(answer.clone())));
                    ctx.out.push(Output::RouteResponse {
                        pg: call.pg,
                        key: call.key,
                        router_call_key,
                        answer,
                        repeat: false,
                    });
                }
                self.state.router_calls.insert(router_call_key, call);
                return;
            }
            Outcome::Answer(answer, agent) => (answer, agent, None),
            Outcome::Default(error) => (self.default_answer(&call), None, error),
        };
        let call_type_delta = CallCounts {
            calls_routed: (answer.kind != AnswerKind::Default) as u64,
            calls_default_routed: (answer.kind == AnswerKind::Default) as u64,
            route_errors: error.is_some() as u64,
            ..Default::default()
        };
        if let Some(call_type) = call.call_type {
            self.touch_call_type(ctx, call_type, Some(&call_type_delta), |_| {});
        }
        if answer.kind == AnswerKind::Default {
            self.state.scalars.counters.route_requests_defaulted += 1;
        }
        if let Some(message) = &error {
            ctx.event(
                Severity::Warning,
                EventCode::ScriptError,
                format!(
                    "route request {}: {message}; default label used",
                    router_call_key.0
                ),
            );
        }
        if let Some((agent, group)) = agent {
            self.reserve_agent(ctx, router_call_key, &call, agent, group);
        }
        if call.interim_answered {
            ctx.out.push(Output::DeliverQueuedCall {
                pg: call.pg,
                key: call.key,
                router_call_key,
                answer: answer.clone(),
            });
        } else {
            ctx.out.push(Output::RouteResponse {
                pg: call.pg,
                key: call.key,
                router_call_key,
                answer: answer.clone(),
                repeat: false,
            });
        }
        self.finish_request(
            ctx,
            router_call_key,
            call,
            Some(answer),
            error,
            None,
            agent.map(|(a, _)| a),
        );
    }

    /// Marks a request finished, schedules the eviction of its cached answer, and writes its
    /// Route_Call_Detail row, which takes the call's strings.
    #[allow(clippy::too_many_arguments)]
    fn finish_request(
        &mut self,
        ctx: &mut Ctx,
        router_call_key: RouterCallKey,
        call: RouterCallRow,
        answer: Option<RouteAnswer>,
        error: Option<String>,
        ended: Option<RouteEndReason>,
        reserved_agent: Option<AgentId>,
    ) {
        self.state.router_calls.remove(&router_call_key);
        let final_answer = answer.clone();
        self.state.requests.update(&call.key, |e| {
            if final_answer.is_some() {
                e.answer = Nullable(final_answer);
            }
            e.finished = true;
            e.reserved_agent = reserved_agent;
        });
        let timeout_ms = self
            .state
            .routing_clients
            .get(&call.key.routing_client)
            .map_or(0, |c| c.timeout_ms as u64);
        self.state
            .add_timer(ctx.now_ms + 2 * timeout_ms, Timer::EvictRequest(call.key));
        let router_queue_wait_ms = match &call.phase {
            RouterCallPhase::Queued { enqueued_ms, .. } => ctx.now_ms - enqueued_ms,
            RouterCallPhase::Waiting => 0,
        };
        ctx.historical(HistoricalRow::RouteCallDetail(RouteCallDetail {
            router_call_key,
            key: call.key,
            dialed_number: call.dialed_digits,
            call_type: call.call_type,
            script: (call.script != ScriptId(0)).then_some(call.script),
            ani: call.ani,
            caller_entered_digits: call.caller_entered_digits,
            date_time_ms: call.arrived_ms,
            finished_ms: ctx.now_ms,
            answer_kind: answer.as_ref().map(|a| a.kind),
            target: answer.as_ref().and_then(|a| a.target),
            label: answer.map(|a| a.label).unwrap_or_default(),
            router_queue_wait_ms,
            error,
            ended,
        }));
    }

    fn default_answer(&self, call: &RouterCallRow) -> RouteAnswer {
        let client = call.key.routing_client;
        let label = call
            .dialed_number
            .and_then(|d| self.state.dialed_numbers.get(&d))
            .and_then(|d| d.default_label)
            .or_else(|| {
                self.state
                    .routing_clients
                    .get(&client)
                    .and_then(|c| c.default_label)
            })
            .and_then(|id| self.state.labels.get(&id))
            .filter(|label| label.routing_client == client);
        RouteAnswer {
            kind: AnswerKind::Default,
            label: label.map(|l| l.label.clone()).unwrap_or_default(),
            label_id: label.map(|l| l.id),
            target: label.and_then(|l| l.target),
        }
    }

    fn reserve_agent(
        &mut self,
        ctx: &mut Ctx,
        router_call_key: RouterCallKey,
        call: &RouterCallRow,
        agent: AgentId,
        group: SkillGroupId,
    ) {
        let Ok(row) = self.agent_row(agent) else {
            return;
        };
        debug_assert_eq!(row.state, AgentState::Ready);
        let mut new = row;
        new.reserved_for = Some(router_call_key);
        self.set_agent_state(ctx, agent, row, new, AgentState::Reserved, 0, Some(group));
        let delta = CallCounts {
            calls_routed: 1,
            ..Default::default()
        };
        self.touch_skill_group(ctx, group, Some(&delta), |_| {});
        if let Some(pg) = self.state.peripherals.get(&row.peripheral).map(|p| p.pg) {
            ctx.out.push(Output::ReserveAgent {
                pg,
                peripheral: row.peripheral,
                agent,
                skill_group: group,
                router_call_key,
                key: call.key,
            });
        }
        let timeout = self.state.scalars.settings.reservation_timeout_ms as u64;
        self.state.add_timer(
            ctx.now_ms + timeout,
            Timer::ReservationTimeout(agent, router_call_key),
        );
    }

    pub(crate) fn route_request_ended(
        &mut self,
        ctx: &mut Ctx,
        key: RouteRequestKey,
        reason: RouteEndReason,
    ) -> Applied {
        let Some(entry) = self.state.requests.get(&key).cloned() else {
            return reject(format!(
                "unknown route request {}/{}/{}",
                key.routing_client, key.pg_incarnation, key.request_id
            ));
        };
        let router_call_key = entry.router_call_key;
        if !entry.finished {
            let Some(mut call) = self.state.router_calls.remove(&router_call_key) else {
                return reject("a pending request without its call");
            };
            let queued_phase = call.phase.clone();
            self.dequeue(ctx, router_call_key, &mut call, true);
            call.phase = queued_phase;
            // The caller hung up while the router held the call: for its call type that is an
            // abandon (or a short call), judged from the request's arrival.
            if reason == RouteEndReason::CallerAbandoned {
                if let Some(call_type) = call.call_type {
                    if let Some(t) = self.call_type_thresholds(call_type) {
                        let delta = crate::calls::abandoned_delta(ctx.now_ms - call.arrived_ms, t);
                        self.touch_call_type(ctx, call_type, Some(&delta), |_| {});
                    }
                }
            }
            self.finish_request(ctx, router_call_key, call, None, None, Some(reason), None);
        } else if let Some(agent) = entry.reserved_agent {
            self.release_reservation(ctx, agent, router_call_key);
            self.state
                .requests
                .update(&key, |e| e.reserved_agent = None);
        }
        Ok(())
    }

    /// Fires due timers, oldest first, at most `TIMERS_PER_INPUT_MAX` per input.
    pub(crate) fn fire_timers(&mut self, ctx: &mut Ctx) {
        for _ in 0..crate::TIMERS_PER_INPUT_MAX {
            // Most inputs find nothing due: one comparison, no walk.
            if self
                .state
                .timers
                .first_owner_index()
                .is_none_or(|due_ms| due_ms > ctx.now_ms)
            {
                return;
            }
            let Some((&due, &timer)) = self.state.timers.first() else {
                return;
            };
            if due.0 > ctx.now_ms {
                return;
            }
            self.state.timers.remove(&due);
            self.fire(ctx, timer);
        }
    }

    fn fire(&mut self, ctx: &mut Ctx, timer: Timer) {
        match timer {
            Timer::AnswerDeadline(router_call_key) => {
                let Some(mut call) = self.state.router_calls.remove(&router_call_key) else {
                    return;
                };
                if call.interim_answered {
                    self.state.router_calls.insert(router_call_key, call);
                    return;
                }
                call.generation += 1;
                self.conclude(
                    ctx,
                    router_call_key,
                    call,
                    Outcome::Default(Some("the routing client's timeout is near".into())),
                );
            }
            Timer::ScriptWake(router_call_key, generation) => {
                let Some(mut call) = self.state.router_calls.remove(&router_call_key) else {
                    return;
                };
                if call.generation != generation {
                    self.state.router_calls.insert(router_call_key, call);
                    return;
                }
                let outcome = self.run_script(ctx, router_call_key, &mut call);
                self.conclude(ctx, router_call_key, call, outcome);
            }
            Timer::QueueTimeout(router_call_key, generation) => {
                let Some(mut call) = self.state.router_calls.remove(&router_call_key) else {
                    return;
                };
                if call.generation != generation {
                    self.state.router_calls.insert(router_call_key, call);
                    return;
                }
                let timeout_next = self.state.scripts.get(&call.script).and_then(|s| {
                    match s.node(call.node).map(|n| &n.kind) {
                        Some(NodeKind::Queue { timeout_next, .. }) => Some(*timeout_next),
                        _ => None,
                    }
                });
                self.dequeue(ctx, router_call_key, &mut call, false);
                let outcome = match timeout_next {
                    Some(next) => {
                        call.node = next;
                        self.run_script(ctx, router_call_key, &mut call)
                    }
                    None => Outcome::Default(Some(format!(
                        "script {} changed under a queued call",
                        call.script
                    ))),
                };
                self.conclude(ctx, router_call_key, call, outcome);
            }
            Timer::ReservationTimeout(agent, router_call_key) => {
                self.release_reservation(ctx, agent, router_call_key)
            }
            Timer::EvictRequest(key) => {
                if self.state.requests.get(&key).is_some_and(|e| e.finished) {
                    self.state.requests.remove(&key);
                }
            }
        }
    }
}

fn bare_answer(kind: AnswerKind) -> RouteAnswer {
    RouteAnswer {
        kind,
        label: String::new(),
        label_id: None,
        target: None,
    }
}
