//! Calls at the peripherals: arrival, offer, answer, hold, transfer, end, abandon, and the
//! counters each outcome adds to the call's skill group, call type, service and agent.

use crate::rows::{CallPhase, CallRow};
use crate::{reject, Applied, Ctx, Router};
use tandem_model::codec::Encode;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::AfterCall;
use tandem_model::output::{CallDisposition, HistoricalRow, TerminationCallDetail};
use tandem_model::realtime::{AgentCounts, CallCounts};

/// The thresholds that classify a call's outcome for one skill group, call type or service.
#[derive(Clone, Copy)]
pub(crate) struct Thresholds {
    pub service_level_ms: u64,
    pub short_call_ms: u64,
}

/// The counters an answered call adds: offered, answered, its wait, and the service level.
pub(crate) fn answered_delta(wait_ms: u64, t: Thresholds) -> CallCounts {
    CallCounts {
        calls_offered: 1,
        calls_answered: 1,
        answer_wait_time_ms: wait_ms,
        service_level_calls_offered: 1,
        service_level_calls: (wait_ms <= t.service_level_ms) as u64,
        ..Default::default()
    }
}

/// The counters an abandoned call adds. A call abandoned within the short-call threshold is a
/// short call: neither offered nor abandoned, and outside the service level.
pub(crate) fn abandoned_delta(wait_ms: u64, t: Thresholds) -> CallCounts {
    if wait_ms < t.short_call_ms {
        return CallCounts {
            short_calls: 1,
            ..Default::default()
        };
    }
    CallCounts {
        calls_offered: 1,
        calls_abandoned: 1,
        abandon_wait_time_ms: wait_ms,
        service_level_calls_offered: 1,
        service_level_abandoned: (wait_ms <= t.service_level_ms) as u64,
        ..Default::default()
    }
}

/// The counters a handled call adds: handle time is talk + hold + after-call work.
pub(crate) fn handled_delta(talk_ms: u64, hold_ms: u64, work_ms: u64) -> CallCounts {
    CallCounts {
        calls_handled: 1,
        talk_time_ms: talk_ms,
        hold_time_ms: hold_ms,
        work_time_ms: work_ms,
        handle_time_ms: talk_ms + hold_ms + work_ms,
        ..Default::default()
    }
}

fn clamp_u32(ms: u64) -> u32 {
    ms.min(u32::MAX as u64) as u32
}

impl Router {
    pub(crate) fn skill_group_thresholds(&self, group: SkillGroupId) -> Option<Thresholds> {
        self.state.skill_groups.get(&group).map(|g| Thresholds {
            service_level_ms: g.service_level_threshold_s as u64 * 1000,
            short_call_ms: g.abandon_short_call_threshold_s as u64 * 1000,
        })
    }

    pub(crate) fn call_type_thresholds(&self, call_type: CallTypeId) -> Option<Thresholds> {
        self.state.call_types.get(&call_type).map(|c| Thresholds {
            service_level_ms: c.service_level_threshold_s as u64 * 1000,
            short_call_ms: c.abandon_short_call_threshold_s as u64 * 1000,
        })
    }

    fn service_thresholds(&self, service: ServiceId) -> Option<Thresholds> {
        self.state.services.get(&service).map(|s| Thresholds {
            service_level_ms: s.service_level_threshold_s as u64 * 1000,
            short_call_ms: s.abandon_short_call_threshold_s as u64 * 1000,
        })
    }

    /// Adds `delta` to a skill group's families (rolled to now first) and applies `now` to its
    /// Now counts; an interval that ended becomes a Skill_Group_Interval row. A row that no longer
    /// exists (deleted under a live call) is skipped.
    pub(crate) fn touch_skill_group(
        &mut self,
        ctx: &mut Ctx,
        group: SkillGroupId,
        delta: Option<&CallCounts>,
        now: impl FnOnce(&mut crate::rows::SkillGroupRow),
    ) {
        let (periods, interval_minutes) = self.periods_now();
        let table = &mut self.state.skill_group_rt;
        let finished = touch_row(
            table,
            &group,
            &periods,
            ctx.now_ms,
            delta,
            |r| &mut r.families,
            now,
        );
        if let Some((interval_start_ms, counts)) = finished {
            ctx.historical(HistoricalRow::SkillGroupInterval {
                skill_group: group,
                interval_start_ms,
                interval_minutes,
                counts,
            });
        }
    }

    /// As [`Self::touch_skill_group`], for a call type (Call_Type_Interval rows).
    pub(crate) fn touch_call_type(
        &mut self,
        ctx: &mut Ctx,
        call_type: CallTypeId,
        delta: Option<&CallCounts>,
        now: impl FnOnce(&mut crate::rows::CallCountsRow),
    ) {
        let (periods, interval_minutes) = self.periods_now();
        let table = &mut self.state.call_type_rt;
        let finished = touch_row(
            table,
            &call_type,
            &periods,
            ctx.now_ms,
            delta,
            |r| &mut r.families,
            now,
        );
        if let Some((interval_start_ms, counts)) = finished {
            ctx.historical(HistoricalRow::CallTypeInterval {
                call_type,
                interval_start_ms,
                interval_minutes,
                counts,
            });
        }
    }

    /// As [`Self::touch_skill_group`], for a service. Services have no interval table of their
    /// own, so their finished intervals are not written.
    pub(crate) fn touch_service(
        &mut self,
        ctx: &mut Ctx,
        service: ServiceId,
        delta: Option<&CallCounts>,
        now: impl FnOnce(&mut crate::rows::CallCountsRow),
    ) {
        let (periods, _) = self.periods_now();
        let table = &mut self.state.service_rt;
        let _ = touch_row(
            table,
            &service,
            &periods,
            ctx.now_ms,
            delta,
            |r| &mut r.families,
            now,
        );
    }

    fn periods_now(&self) -> (tandem_model::calendar::Periods, u32) {
        (
            self.state.scalars.periods,
            self.state.scalars.settings.interval_minutes,
        )
    }

    pub(crate) fn touch_agent_skill_group(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        group: SkillGroupId,
        delta: &AgentCounts,
    ) {
        let periods = self.state.scalars.periods;
        let interval_minutes = self.state.scalars.settings.interval_minutes;
        let finished = self
            .state
            .agent_skill_group_rt
            .update(&(agent, group), |row| {
                let finished = row.families.roll(&periods);
                row.families.add(delta);
                finished
            });
        if let Some(Some((interval_start_ms, counts))) = finished {
            if !counts.is_zero() {
                ctx.historical(HistoricalRow::AgentSkillGroupInterval {
                    agent,
                    skill_group: group,
                    interval_start_ms,
                    interval_minutes,
                    counts,
                });
            }
        }
    }

    /// Adds an outcome to the call's skill group, call type and service, each judged by its own
    /// thresholds.
    pub(crate) fn record_outcome(
        &mut self,
        ctx: &mut Ctx,
        call: &CallRow,
        make: impl Fn(Thresholds) -> CallCounts,
    ) {
        if let Some(group) = call.skill_group {
            if let Some(t) = self.skill_group_thresholds(group) {
                let delta = make(t);
                self.touch_skill_group(ctx, group, Some(&delta), |_| {});
            }
        }
        if let Some(call_type) = call.call_type {
            if let Some(t) = self.call_type_thresholds(call_type) {
                let delta = make(t);
                self.touch_call_type(ctx, call_type, Some(&delta), |_| {});
            }
        }
        if let Some(service) = call.service {
            if let Some(t) = self.service_thresholds(service) {
                let delta = make(t);
                self.touch_service(ctx, service, Some(&delta), |_| {});
            }
        }
    }

    fn call_row(&self, call: PeripheralCallKey) -> Result<CallRow, crate::Rejection> {
        match self.state.calls.get(&call) {
            Some(row) => Ok(*row),
            None => reject(format!("unknown call {}/{}", call.peripheral, call.call_id)),
        }
    }

    fn check_optional_refs(
        &self,
        group: Option<SkillGroupId>,
        call_type: Option<CallTypeId>,
        service: Option<ServiceId>,
    ) -> Applied {
        if let Some(group) = group.filter(|g| !self.state.skill_groups.contains(g)) {
            return reject(format!("unknown skill group {group}"));
        }
        if let Some(call_type) = call_type.filter(|c| !self.state.call_types.contains(c)) {
            return reject(format!("unknown call type {call_type}"));
        }
        if let Some(service) = service.filter(|s| !self.state.services.contains(s)) {
            return reject(format!("unknown service {service}"));
        }
        Ok(())
    }

    pub(crate) fn call_arrived(
        &mut self,
        ctx: &mut Ctx,
        call: PeripheralCallKey,
        group: Option<SkillGroupId>,
        call_type: Option<CallTypeId>,
        service: Option<ServiceId>,
        router_call_key: Option<RouterCallKey>,
    ) -> Applied {
        if self.state.calls.contains(&call) {
            return reject(format!(
                "duplicate call id {}/{}",
                call.peripheral, call.call_id
            ));
        }
        if !self.state.peripherals.contains(&call.peripheral) {
            return reject(format!("unknown peripheral {}", call.peripheral));
        }
        self.check_optional_refs(group, call_type, service)?;
        if let Some(group) = group {
            self.check_same_peripheral(
                call,
                "skill group",
                group.0,
                self.state.skill_groups.get(&group).map(|g| g.peripheral),
            )?;
        }
        if let Some(service) = service {
            self.check_same_peripheral(
                call,
                "service",
                service.0,
                self.state.services.get(&service).map(|s| s.peripheral),
            )?;
        }
        let row = CallRow {
            phase: CallPhase::Queued,
            skill_group: group,
            call_type,
            service,
            router_call_key,
            leg_start_ms: ctx.now_ms,
            ..CallRow::default()
        };
        self.state.calls.insert(call, row);
        self.state
            .peripheral_rt
            .update(&call.peripheral, |p| p.calls_in_progress += 1);
        if let Some(group) = group {
            self.touch_skill_group(ctx, group, None, |row| row.calls_q_now += 1);
        }
        if let Some(service) = service {
            self.touch_service(ctx, service, None, |row| row.calls_q_now += 1);
        }
        if let Some(call_type) = call_type {
            self.touch_call_type(ctx, call_type, None, |row| row.calls_in_progress += 1);
        }
        Ok(())
    }

    /// Calls, agents, skill groups and services of a call must all be on the call's peripheral.
    fn check_same_peripheral(
        &self,
        call: PeripheralCallKey,
        what: &str,
        id: u32,
        peripheral: Option<PeripheralId>,
    ) -> Applied {
        match peripheral {
            Some(p) if p != call.peripheral => reject(format!(
                "{what} {id} is on peripheral {p}, not on the call's peripheral {}",
                call.peripheral
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn call_offered(
        &mut self,
        ctx: &mut Ctx,
        call: PeripheralCallKey,
        agent: AgentId,
        group: Option<SkillGroupId>,
    ) -> Applied {
        let mut row = self.call_row(call)?;
        if row.phase != CallPhase::Queued {
            return reject(format!(
                "call {}/{} is not waiting ({:?})",
                call.peripheral, call.call_id, row.phase
            ));
        }
        let agent_row = self.agent_row(agent)?;
        self.check_same_peripheral(call, "agent", agent.0, Some(agent_row.peripheral))?;
        let available = agent_row.state == AgentState::Ready
            || (agent_row.state == AgentState::Reserved && agent_row.call.is_none());
        if !available {
            return reject(format!(
                "agent {agent} cannot take a call in state {}",
                agent_row.state.name()
            ));
        }
        let Some(group) = group.or(row.skill_group) else {
            return reject(format!(
                "call {}/{} has no skill group to be offered in",
                call.peripheral, call.call_id
            ));
        };
        if !self.state.agent_skill_group_rt.contains(&(agent, group)) {
            return reject(format!(
                "agent {agent} is not a member of skill group {group}"
            ));
        }
        if let Some(previous) = row.skill_group {
            self.touch_skill_group(ctx, previous, None, |g| g.calls_q_now -= 1);
        }
        if let Some(service) = row.service {
            self.touch_service(ctx, service, None, |s| {
                s.calls_q_now -= 1;
                s.calls_in_progress += 1;
            });
        }
        self.touch_skill_group(ctx, group, None, |g| g.calls_in_progress += 1);
        self.touch_agent_skill_group(
            ctx,
            agent,
            group,
            &AgentCounts {
                calls_offered: 1,
                ..Default::default()
            },
        );
        row.skill_group = Some(group);
        row.agent = Some(agent);
        row.phase = CallPhase::Ringing;
        self.state.calls.insert(call, row);

        // The call consumes any router reservation of this agent.
        let mut new = agent_row;
        new.reserved_for = None;
        new.call = Some(call);
        self.set_agent_state(
            ctx,
            agent,
            agent_row,
            new,
            AgentState::Reserved,
            0,
            Some(group),
        );
        Ok(())
    }

    pub(crate) fn call_answered(&mut self, ctx: &mut Ctx, call: PeripheralCallKey) -> Applied {
        let mut row = self.call_row(call)?;
        if row.phase != CallPhase::Ringing {
            return reject(format!(
                "call {}/{} is not ringing ({:?})",
                call.peripheral, call.call_id, row.phase
            ));
        }
        let (Some(agent), Some(group)) = (row.agent, row.skill_group) else {
            return reject("a ringing call without agent");
        };
        // Everything that can refuse the input is read before anything changes.
        let agent_row = self.agent_row(agent)?;
        let wait_ms = ctx.now_ms - row.leg_start_ms;
        self.record_outcome(ctx, &row, |t| answered_delta(wait_ms, t));
        self.touch_agent_skill_group(
            ctx,
            agent,
            group,
            &AgentCounts {
                calls_answered: 1,
                ..Default::default()
            },
        );
        row.phase = CallPhase::Talking;
        row.answered_ms = ctx.now_ms;
        self.state.calls.insert(call, row);
        self.set_agent_state(
            ctx,
            agent,
            agent_row,
            agent_row,
            AgentState::TalkingIn,
            0,
            Some(group),
        );
        Ok(())
    }

    pub(crate) fn call_held(
        &mut self,
        ctx: &mut Ctx,
        call: PeripheralCallKey,
        hold: bool,
    ) -> Applied {
        let mut row = self.call_row(call)?;
        let (from, to, state) = if hold {
            (CallPhase::Talking, CallPhase::Held, AgentState::Hold)
        } else {
            (CallPhase::Held, CallPhase::Talking, AgentState::TalkingIn)
        };
        if row.phase != from {
            return reject(format!(
                "call {}/{} is {:?}, not {from:?}",
                call.peripheral, call.call_id, row.phase
            ));
        }
        let Some(agent) = row.agent else {
            return reject("an answered call without agent");
        };
        let agent_row = self.agent_row(agent)?;
        if hold {
            row.hold_started_ms = ctx.now_ms;
        } else {
            row.hold_ms += ctx.now_ms - row.hold_started_ms;
        }
        row.phase = to;
        self.state.calls.insert(call, row);
        self.set_agent_state(ctx, agent, agent_row, agent_row, state, 0, row.skill_group);
        Ok(())
    }

    /// Ends the talking part of a call: closes any hold and returns talk and hold times.
    pub(crate) fn end_talk(&self, row: &mut CallRow, now_ms: u64) -> (u64, u64) {
        if row.phase == CallPhase::Held {
            row.hold_ms += now_ms - row.hold_started_ms;
        }
        let talk_ms = (now_ms - row.answered_ms).saturating_sub(row.hold_ms);
        (talk_ms, row.hold_ms)
    }

    pub(crate) fn call_ended(
        &mut self,
        ctx: &mut Ctx,
        call: PeripheralCallKey,
        after: AfterCall,
    ) -> Applied {
        let mut row = self.call_row(call)?;
        if !matches!(row.phase, CallPhase::Talking | CallPhase::Held) {
            return reject(format!(
                "call {}/{} is not answered ({:?})",
                call.peripheral, call.call_id, row.phase
            ));
        }
        let (Some(agent), Some(group)) = (row.agent, row.skill_group) else {
            return reject("an answered call without agent");
        };
        let agent_row = self.agent_row(agent)?;
        self.end_talk(&mut row, ctx.now_ms);
        row.talk_ended_ms = ctx.now_ms;
        self.touch_skill_group(ctx, group, None, |g| g.calls_in_progress -= 1);
        if let Some(service) = row.service {
            self.touch_service(ctx, service, None, |s| s.calls_in_progress -= 1);
        }
        if let Some(call_type) = row.call_type {
            self.touch_call_type(ctx, call_type, None, |c| c.calls_in_progress -= 1);
        }
        let mut new = agent_row;
        if matches!(after, AfterCall::WorkReady | AfterCall::WorkNotReady) {
            // The leg finishes when the wrap-up does, so the handled call carries its work time.
            row.phase = CallPhase::WrapUp;
            self.state.calls.insert(call, row);
            self.set_agent_state(ctx, agent, agent_row, new, after.state(), 0, Some(group));
        } else {
            self.state.calls.insert(call, row);
            self.finish_leg(ctx, call, CallDisposition::Handled);
            new.call = None;
            self.set_agent_state(ctx, agent, agent_row, new, after.state(), 0, None);
        }
        Ok(())
    }

    /// The agent's wrap-up of `call` ended: the call counts as handled, with its work time.
    pub(crate) fn finish_wrap_up(&mut self, ctx: &mut Ctx, call: PeripheralCallKey) {
        let Some(row) = self.state.calls.get(&call).copied() else {
            return;
        };
        debug_assert_eq!(row.phase, CallPhase::WrapUp);
        self.finish_leg(ctx, call, CallDisposition::Handled);
        if let Some(agent) = row.agent {
            self.state.agent_rt.update(&agent, |a| a.call = None);
        }
    }

    /// Counts a finished answered leg as handled, writes its Termination_Call_Detail and forgets
    /// the call.
    pub(crate) fn finish_leg(
        &mut self,
        ctx: &mut Ctx,
        call: PeripheralCallKey,
        disposition: CallDisposition,
    ) {
        let Some(row) = self.state.calls.remove(&call) else {
            return;
        };
        let work_ms = if row.phase == CallPhase::WrapUp {
            ctx.now_ms - row.talk_ended_ms
        } else {
            0
        };
        let talk_ended_ms = if row.phase == CallPhase::WrapUp {
            row.talk_ended_ms
        } else {
            ctx.now_ms
        };
        let talk_ms = (talk_ended_ms - row.answered_ms).saturating_sub(row.hold_ms);
        let delta = handled_delta(talk_ms, row.hold_ms, work_ms);
        if let Some(group) = row.skill_group {
            self.touch_skill_group(ctx, group, Some(&delta), |_| {});
            if let Some(agent) = row.agent {
                let agent_delta = AgentCounts {
                    calls_handled: 1,
                    handle_time_ms: clamp_u32(delta.handle_time_ms),
                    talk_time_ms: clamp_u32(talk_ms),
                    hold_time_ms: clamp_u32(row.hold_ms),
                    work_time_ms: clamp_u32(work_ms),
                    transfers_out: (disposition == CallDisposition::Transferred) as u32,
                    ..Default::default()
                };
                self.touch_agent_skill_group(ctx, agent, group, &agent_delta);
            }
        }
        if let Some(call_type) = row.call_type {
            self.touch_call_type(ctx, call_type, Some(&delta), |_| {});
        }
        if let Some(service) = row.service {
            self.touch_service(ctx, service, Some(&delta), |_| {});
        }
        self.state
            .peripheral_rt
            .update(&call.peripheral, |p| p.calls_in_progress -= 1);
        ctx.historical(HistoricalRow::TerminationCallDetail(
            TerminationCallDetail {
                call,
                router_call_key: row.router_call_key,
                agent: row.agent,
                skill_group: row.skill_group,
                call_type: row.call_type,
                service: row.service,
                disposition,
                start_ms: row.leg_start_ms,
                delay_ms: row.answered_ms - row.leg_start_ms,
                talk_ms,
                hold_ms: row.hold_ms,
                work_ms,
                end_ms: ctx.now_ms,
            },
        ));
    }

    pub(crate) fn call_transferred(
        &mut self,
        ctx: &mut Ctx,
        call: PeripheralCallKey,
        to_group: SkillGroupId,
        after: AfterCall,
    ) -> Applied {
        let mut row = self.call_row(call)?;
        if !matches!(row.phase, CallPhase::Talking | CallPhase::Held) {
            return reject(format!(
                "call {}/{} is not answered ({:?})",
                call.peripheral, call.call_id, row.phase
            ));
        }
        if !self.state.skill_groups.contains(&to_group) {
            return reject(format!("unknown skill group {to_group}"));
        }
        let (Some(agent), Some(group)) = (row.agent, row.skill_group) else {
            return reject("an answered call without agent");
        };
        let agent_row = self.agent_row(agent)?;
        // The transferring agent's leg ends now and counts as handled there; any wrap-up that
        // follows a transfer is the agent's own time, not this call's. The call type and service
        // counted the call on this first leg; the new leg counts for its skill group only.
        self.end_talk(&mut row, ctx.now_ms);
        self.touch_skill_group(ctx, group, None, |g| g.calls_in_progress -= 1);
        if let Some(service) = row.service {
            self.touch_service(ctx, service, None, |s| s.calls_in_progress -= 1);
        }
        if let Some(call_type) = row.call_type {
            self.touch_call_type(ctx, call_type, None, |c| c.calls_in_progress -= 1);
        }
        row.phase = CallPhase::Talking;
        self.state.calls.insert(call, row);
        self.finish_leg(ctx, call, CallDisposition::Transferred);
        // The call goes on as a new leg, waiting in the target skill group.
        let leg = CallRow {
            phase: CallPhase::Queued,
            skill_group: Some(to_group),
            router_call_key: row.router_call_key,
            leg_start_ms: ctx.now_ms,
            ..CallRow::default()
        };
        self.state.calls.insert(call, leg);
        self.state
            .peripheral_rt
            .update(&call.peripheral, |p| p.calls_in_progress += 1);
        self.touch_skill_group(ctx, to_group, None, |g| g.calls_q_now += 1);
        let mut new = agent_row;
        new.call = None;
        self.set_agent_state(ctx, agent, agent_row, new, after.state(), 0, None);
        Ok(())
    }

    /// Takes a live call (not in wrap-up) out of its skill group's, service's and call type's
    /// Now counts.
    pub(crate) fn leave_now_counts(&mut self, ctx: &mut Ctx, row: &CallRow) {
        let waiting = row.phase == CallPhase::Queued;
        if let Some(group) = row.skill_group {
            self.touch_skill_group(ctx, group, None, |g| {
                if waiting {
                    g.calls_q_now -= 1;
                } else {
                    g.calls_in_progress -= 1;
                }
            });
        }
        if let Some(service) = row.service {
            self.touch_service(ctx, service, None, |s| {
                if waiting {
                    s.calls_q_now -= 1;
                } else {
                    s.calls_in_progress -= 1;
                }
            });
        }
        if let Some(call_type) = row.call_type {
            self.touch_call_type(ctx, call_type, None, |c| c.calls_in_progress -= 1);
        }
    }

    pub(crate) fn call_abandoned(&mut self, ctx: &mut Ctx, call: PeripheralCallKey) -> Applied {
        let row = self.call_row(call)?;
        if !matches!(row.phase, CallPhase::Queued | CallPhase::Ringing) {
            return reject(format!(
                "call {}/{} was answered; it ends, it does not abandon",
                call.peripheral, call.call_id
            ));
        }
        let ringing = row.phase == CallPhase::Ringing;
        let ringing_agent = match row.agent.filter(|_| ringing) {
            Some(agent) => Some((agent, self.agent_row(agent)?)),
            None => None,
        };
        let wait_ms = ctx.now_ms - row.leg_start_ms;
        self.record_outcome(ctx, &row, |t| abandoned_delta(wait_ms, t));
        self.leave_now_counts(ctx, &row);
        self.state.calls.remove(&call);
        self.state
            .peripheral_rt
            .update(&call.peripheral, |p| p.calls_in_progress -= 1);
        let short = match row.skill_group.and_then(|g| self.skill_group_thresholds(g)) {
            Some(t) => wait_ms < t.short_call_ms,
            None => row
                .call_type
                .and_then(|c| self.call_type_thresholds(c))
                .is_some_and(|t| wait_ms < t.short_call_ms),
        };
        ctx.historical(HistoricalRow::TerminationCallDetail(
            TerminationCallDetail {
                call,
                router_call_key: row.router_call_key,
                agent: row.agent,
                skill_group: row.skill_group,
                call_type: row.call_type,
                service: row.service,
                disposition: if short {
                    CallDisposition::ShortCall
                } else {
                    CallDisposition::Abandoned
                },
                start_ms: row.leg_start_ms,
                delay_ms: wait_ms,
                talk_ms: 0,
                hold_ms: 0,
                work_ms: 0,
                end_ms: ctx.now_ms,
            },
        ));
        // A ringing agent is free again.
        if let Some((agent, agent_row)) = ringing_agent {
            let mut new = agent_row;
            new.call = None;
            self.set_agent_state(ctx, agent, agent_row, new, AgentState::Ready, 0, None);
        }
        Ok(())
    }

    /// A waiting call leaves the peripheral unanswered, routed elsewhere: it leaves the Now
    /// counts and gets a Termination_Call_Detail, but counts neither as offered nor abandoned.
    pub(crate) fn call_cleared(&mut self, ctx: &mut Ctx, call: PeripheralCallKey) -> Applied {
        let row = self.call_row(call)?;
        if row.phase != CallPhase::Queued {
            return reject(format!(
                "call {}/{} is {:?}; only a waiting call can be cleared",
                call.peripheral, call.call_id, row.phase
            ));
        }
        self.leave_now_counts(ctx, &row);
        self.state.calls.remove(&call);
        self.state
            .peripheral_rt
            .update(&call.peripheral, |p| p.calls_in_progress -= 1);
        ctx.historical(HistoricalRow::TerminationCallDetail(
            TerminationCallDetail {
                call,
                router_call_key: row.router_call_key,
                agent: None,
                skill_group: row.skill_group,
                call_type: row.call_type,
                service: row.service,
                disposition: CallDisposition::Cleared,
                start_ms: row.leg_start_ms,
                delay_ms: ctx.now_ms - row.leg_start_ms,
                talk_ms: 0,
                hold_ms: 0,
                work_ms: 0,
                end_ms: ctx.now_ms,
            },
        ));
        Ok(())
    }
}

/// What every event does to a counted row: roll its families to now, add the delta, and apply
/// the Now-count change. Returns the interval that ended, if one did.
fn touch_row<K, R>(
    table: &mut crate::table::IdTable<K, R>,
    key: &K,
    periods: &tandem_model::calendar::Periods,
    now_ms: u64,
    delta: Option<&CallCounts>,
    families: impl FnOnce(&mut R) -> &mut crate::families::CallFamilies,
    now: impl FnOnce(&mut R),
) -> Option<crate::families::FinishedInterval<CallCounts>>
where
    K: crate::table::DenseKey + Encode,
    R: Clone + Encode,
{
    table
        .update(key, |row| {
            let finished = families(row).touch(periods, now_ms, delta);
            now(row);
            finished
        })
        .flatten()
}
