//! A PG's re-report of a peripheral: the router makes its view of the peripheral's agents and
//! calls agree with what the peripheral says it holds now.
//!
//! A PG re-reports when it (re)connects. Usually nothing differs and nothing changes. After both
//! sides started from configuration, or after the PG itself restarted, the router's view is
//! rebuilt from the report: agents log on or off, calls appear or go. Every change goes through
//! the same steps the live events use (`set_agent_state`, the Now counts, `finish_leg`), so the
//! counts stay exactly what the rows say. A report part is checked whole before anything changes.

use crate::calls::answered_delta;
use crate::rows::{CallPhase, CallRow};
use crate::{reject, Applied, Ctx, Router};
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::{
    AgentCallReport, AgentReport, PeripheralReport, ReportPart, ReportedCallPhase,
    WaitingCallReport, REPORT_AGENTS_MAX, REPORT_CALLS_MAX,
};
use tandem_model::output::{CallDisposition, HistoricalRow, TerminationCallDetail};
use tandem_model::realtime::AgentCounts;

fn row_phase(phase: ReportedCallPhase) -> CallPhase {
    match phase {
        ReportedCallPhase::Ringing => CallPhase::Ringing,
        ReportedCallPhase::Talking => CallPhase::Talking,
        ReportedCallPhase::Held => CallPhase::Held,
        ReportedCallPhase::WrapUp => CallPhase::WrapUp,
    }
}

/// Whether the router's call row is the call the report describes (times aside: the router's
/// own are more exact than a PG's ages).
fn same_agent_call(row: &CallRow, agent: AgentId, call: &AgentCallReport) -> bool {
    row.phase == row_phase(call.phase)
        && row.agent == Some(agent)
        && row.skill_group == Some(call.skill_group)
        && row.call_type == call.call_type
        && row.service == call.service
        && row.router_call_key == call.router_call_key
}

fn same_waiting_call(row: &CallRow, call: &WaitingCallReport) -> bool {
    row.phase == CallPhase::Queued
        && row.agent.is_none()
        && row.skill_group == call.skill_group
        && row.call_type == call.call_type
        && row.service == call.service
        && row.router_call_key == call.router_call_key
}

impl Router {
    pub(crate) fn peripheral_report(
        &mut self,
        ctx: &mut Ctx,
        report: &PeripheralReport,
    ) -> Applied {
        let peripheral = report.peripheral;
        if !self.state.peripherals.contains(&peripheral) {
            return reject(format!("unknown peripheral {peripheral}"));
        }
        match &report.part {
            ReportPart::Agents {
                from,
                through,
                agents,
            } => {
                self.check_agents_part(peripheral, *from, *through, agents)?;
                self.peripheral_online(ctx, peripheral, true)?;
                self.reconcile_agents(ctx, peripheral, *from, *through, agents);
            }
            ReportPart::Waiting {
                from,
                through,
                calls,
            } => {
                self.check_waiting_part(peripheral, *from, *through, calls)?;
                self.peripheral_online(ctx, peripheral, true)?;
                self.reconcile_waiting(ctx, peripheral, *from, *through, calls);
            }
        }
        Ok(())
    }

    fn check_agents_part(
        &self,
        peripheral: PeripheralId,
        from: AgentId,
        through: AgentId,
        agents: &[AgentReport],
    ) -> Applied {
        if from > through {
            return reject(format!("report range {from}..={through} is empty"));
        }
        if agents.len() > REPORT_AGENTS_MAX {
            return reject(format!(
                "a report part of {} agents exceeds {REPORT_AGENTS_MAX}",
                agents.len()
            ));
        }
        let mut previous: Option<AgentId> = None;
        let mut call_ids: Vec<u64> = Vec::new();
        for report in agents {
            let agent = report.agent;
            if previous.is_some_and(|p| p >= agent) || agent < from || agent > through {
                return reject(format!(
                    "agent {agent} is out of order or outside {from}..={through}"
                ));
            }
            previous = Some(agent);
            let row = self.agent_row(agent)?;
            if row.peripheral != peripheral {
                return reject(format!(
                    "agent {agent} is on peripheral {}, not {peripheral}",
                    row.peripheral
                ));
            }
            match &report.call {
                None if !crate::agents::reached_by_own_events(report.state) => {
                    return reject(format!(
                        "agent {agent} is reported {} without a call",
                        report.state.name()
                    ))
                }
                None => {}
                Some(call) => {
                    if !call.phase.agent_state_fits(report.state) {
                        return reject(format!(
                            "agent {agent} is reported {} with a call {:?}",
                            report.state.name(),
                            call.phase
                        ));
                    }
                    if call.phase != ReportedCallPhase::Ringing
                        && call.answered_age_ms > call.leg_age_ms
                    {
                        return reject(format!(
                            "call {peripheral}/{} was answered {} ms ago, before it arrived {} ms ago",
                            call.call_id, call.answered_age_ms, call.leg_age_ms
                        ));
                    }
                    let key = PeripheralCallKey {
                        peripheral,
                        call_id: call.call_id,
                    };
                    self.check_call_refs(
                        key,
                        Some(call.skill_group),
                        call.call_type,
                        call.service,
                    )?;
                    if !self
                        .state
                        .agent_skill_group_rt
                        .contains(&(agent, call.skill_group))
                    {
                        return reject(format!(
                            "agent {agent} is not a member of skill group {}",
                            call.skill_group
                        ));
                    }
                    call_ids.push(call.call_id);
                }
            }
        }
        call_ids.sort_unstable();
        if let Some(pair) = call_ids.windows(2).find(|w| w[0] == w[1]) {
            return reject(format!(
                "call {peripheral}/{} is reported at two agents",
                pair[0]
            ));
        }
        Ok(())
    }

    fn check_waiting_part(
        &self,
        peripheral: PeripheralId,
        from: u64,
        through: u64,
        calls: &[WaitingCallReport],
    ) -> Applied {
        if from > through {
            return reject(format!("report range {from}..={through} is empty"));
        }
        if calls.len() > REPORT_CALLS_MAX {
            return reject(format!(
                "a report part of {} calls exceeds {REPORT_CALLS_MAX}",
                calls.len()
            ));
        }
        let mut previous: Option<u64> = None;
        for call in calls {
            let id = call.call_id;
            if previous.is_some_and(|p| p >= id) || id < from || id > through {
                return reject(format!(
                    "call {peripheral}/{id} is out of order or outside {from}..={through}"
                ));
            }
            previous = Some(id);
            let key = PeripheralCallKey {
                peripheral,
                call_id: id,
            };
            self.check_call_refs(key, call.skill_group, call.call_type, call.service)?;
        }
        Ok(())
    }

    /// The objects a reported call names exist, and those on a peripheral are on the call's.
    fn check_call_refs(
        &self,
        key: PeripheralCallKey,
        group: Option<SkillGroupId>,
        call_type: Option<CallTypeId>,
        service: Option<ServiceId>,
    ) -> Applied {
        if let Some(group) = group {
            match self.state.skill_groups.get(&group) {
                None => return reject(format!("unknown skill group {group}")),
                Some(g) if g.peripheral != key.peripheral => {
                    return reject(format!(
                        "skill group {group} is not on peripheral {}",
                        key.peripheral
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(call_type) = call_type.filter(|c| !self.state.call_types.contains(c)) {
            return reject(format!("unknown call type {call_type}"));
        }
        if let Some(service) = service {
            match self.state.services.get(&service) {
                None => return reject(format!("unknown service {service}")),
                Some(s) if s.peripheral != key.peripheral => {
                    return reject(format!(
                        "service {service} is not on peripheral {}",
                        key.peripheral
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The peripheral's agents in `from..=through`, in id order.
    fn agents_in(&self, peripheral: PeripheralId, from: AgentId, through: AgentId) -> Vec<AgentId> {
        self.state
            .agent_rt
            .iter_from(&from)
            .take_while(|(agent, _)| **agent <= through)
            .filter(|(_, row)| row.peripheral == peripheral)
            .map(|(agent, _)| *agent)
            .collect()
    }

    fn reconcile_agents(
        &mut self,
        ctx: &mut Ctx,
        peripheral: PeripheralId,
        from: AgentId,
        through: AgentId,
        reports: &[AgentReport],
    ) {
        let reported = |agent: AgentId| {
            reports
                .binary_search_by_key(&agent, |r| r.agent)
                .ok()
                .map(|i| &reports[i])
        };
        let agents = self.agents_in(peripheral, from, through);
        // First the calls the router has at these agents that the report does not describe.
        for &agent in &agents {
            let Some(row) = self.state.agent_rt.get(&agent).copied() else {
                continue;
            };
            let Some(key) = row.call else { continue };
            let described = reported(agent)
                .and_then(|r| r.call.as_ref())
                .filter(|c| c.call_id == key.call_id)
                .zip(self.state.calls.get(&key))
                .is_some_and(|(c, call_row)| same_agent_call(call_row, agent, c));
            if !described {
                self.forget_unreported_call(ctx, key);
            }
        }
        // Then the calls the report gives that the router lacks (or holds differently).
        for report in reports {
            let Some(call) = &report.call else { continue };
            let key = PeripheralCallKey {
                peripheral,
                call_id: call.call_id,
            };
            let held = self
                .state
                .calls
                .get(&key)
                .map(|row| same_agent_call(row, report.agent, call));
            match held {
                Some(true) => continue,
                Some(false) => self.forget_unreported_call(ctx, key),
                None => {}
            }
            self.insert_agent_call(ctx, key, report.agent, call);
        }
        // Last each agent's own state.
        for &agent in &agents {
            self.bring_agent_to(ctx, agent, reported(agent), peripheral);
        }
    }

    fn reconcile_waiting(
        &mut self,
        ctx: &mut Ctx,
        peripheral: PeripheralId,
        from: u64,
        through: u64,
        reports: &[WaitingCallReport],
    ) {
        let waiting: Vec<(PeripheralCallKey, CallRow)> = self
            .state
            .calls
            .iter_partition_from(peripheral, from)
            .take_while(|(key, _)| key.call_id <= through)
            .filter(|(_, row)| row.phase == CallPhase::Queued)
            .map(|(key, row)| (*key, *row))
            .collect();
        for (key, row) in waiting {
            let described = reports
                .binary_search_by_key(&key.call_id, |r| r.call_id)
                .is_ok_and(|i| same_waiting_call(&row, &reports[i]));
            if !described {
                self.forget_unreported_call(ctx, key);
            }
        }
        for report in reports {
            let key = PeripheralCallKey {
                peripheral,
                call_id: report.call_id,
            };
            match self
                .state
                .calls
                .get(&key)
                .map(|row| same_waiting_call(row, report))
            {
                Some(true) => continue,
                Some(false) => self.forget_unreported_call(ctx, key),
                None => {}
            }
            self.insert_waiting_call(ctx, key, report);
        }
    }

    /// Moves an agent to the state its report gives (logged off when it is not listed). A
    /// reservation the router holds stays while the peripheral shows the agent Ready, as it
    /// would for a live Ready report; anything else releases it.
    fn bring_agent_to(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        report: Option<&AgentReport>,
        peripheral: PeripheralId,
    ) {
        let Some(row) = self.state.agent_rt.get(&agent).copied() else {
            return;
        };
        let (state, reason_code, call) = match report {
            Some(r) => (
                r.state,
                r.reason_code,
                r.call.as_ref().map(|c| {
                    (
                        PeripheralCallKey {
                            peripheral,
                            call_id: c.call_id,
                        },
                        c.skill_group,
                    )
                }),
            ),
            None => (AgentState::LoggedOff, 0, None),
        };
        if row.reserved_for.is_some() && state == AgentState::Ready && call.is_none() {
            return;
        }
        let key = call.map(|(key, _)| key);
        if row.state == state && row.reason_code == reason_code && row.call == key {
            return;
        }
        if state == AgentState::LoggedOff && row.state == AgentState::LoggedOff {
            return;
        }
        let mut new = row;
        if let Some(router_call_key) = row.reserved_for {
            self.announce_release(ctx, peripheral, agent, router_call_key);
            new.reserved_for = None;
        }
        if row.state == AgentState::LoggedOff {
            new.logged_on_since_ms = ctx.now_ms;
        }
        new.call = key;
        let active = call.map(|(_, group)| group);
        self.set_agent_state(ctx, agent, row, new, state, reason_code, active);
    }

    fn insert_agent_call(
        &mut self,
        ctx: &mut Ctx,
        key: PeripheralCallKey,
        agent: AgentId,
        call: &AgentCallReport,
    ) {
        let now = ctx.now_ms;
        let phase = row_phase(call.phase);
        let answered = phase != CallPhase::Ringing;
        let row = CallRow {
            phase,
            skill_group: Some(call.skill_group),
            call_type: call.call_type,
            service: call.service,
            router_call_key: call.router_call_key,
            agent: Some(agent),
            leg_start_ms: now.saturating_sub(u64::from(call.leg_age_ms)),
            answered_ms: if answered {
                now.saturating_sub(u64::from(call.answered_age_ms))
            } else {
                0
            },
            hold_started_ms: now,
            hold_ms: 0,
            talk_ended_ms: now,
        };
        self.state.calls.insert(key, row);
        self.state
            .peripheral_rt
            .update(&key.peripheral, |p| p.calls_in_progress += 1);
        // The router did not see this call offered (or answered): it counts now, once, as the
        // live events would have counted it, so that its end adds up with the rest.
        self.touch_agent_skill_group(
            ctx,
            agent,
            call.skill_group,
            &AgentCounts {
                calls_offered: 1,
                calls_answered: answered as u32,
                ..Default::default()
            },
        );
        if answered {
            let wait_ms = row.answered_ms - row.leg_start_ms;
            self.record_outcome(ctx, &row, |t| answered_delta(wait_ms, t));
        }
        // A call in wrap-up has left the Now counts already.
        if phase != CallPhase::WrapUp {
            self.touch_skill_group(ctx, call.skill_group, None, |g| g.calls_in_progress += 1);
            if let Some(service) = call.service {
                self.touch_service(ctx, service, None, |s| s.calls_in_progress += 1);
            }
            if let Some(call_type) = call.call_type {
                self.touch_call_type(ctx, call_type, None, |c| c.calls_in_progress += 1);
            }
        }
    }

    fn insert_waiting_call(
        &mut self,
        ctx: &mut Ctx,
        key: PeripheralCallKey,
        call: &WaitingCallReport,
    ) {
        let row = CallRow {
            phase: CallPhase::Queued,
            skill_group: call.skill_group,
            call_type: call.call_type,
            service: call.service,
            router_call_key: call.router_call_key,
            leg_start_ms: ctx.now_ms.saturating_sub(u64::from(call.leg_age_ms)),
            ..CallRow::default()
        };
        self.state.calls.insert(key, row);
        self.state
            .peripheral_rt
            .update(&key.peripheral, |p| p.calls_in_progress += 1);
        if let Some(group) = call.skill_group {
            self.touch_skill_group(ctx, group, None, |g| g.calls_q_now += 1);
        }
        if let Some(service) = call.service {
            self.touch_service(ctx, service, None, |s| s.calls_q_now += 1);
        }
        if let Some(call_type) = call.call_type {
            self.touch_call_type(ctx, call_type, None, |c| c.calls_in_progress += 1);
        }
    }

    /// Forgets a call the peripheral no longer reports as the router holds it. An answered call
    /// ended unseen: it counts as handled, now. A call not answered leaves the Now counts with
    /// an Unreported Termination_Call_Detail and counts as nothing else. Its agent, if the agent
    /// still has it, goes NotReady until its own report says more.
    fn forget_unreported_call(&mut self, ctx: &mut Ctx, key: PeripheralCallKey) {
        let Some(mut row) = self.state.calls.get(&key).copied() else {
            return;
        };
        match row.phase {
            CallPhase::Talking | CallPhase::Held => {
                self.leave_now_counts(ctx, &row);
                self.end_talk(&mut row, ctx.now_ms);
                self.state.calls.insert(key, row);
                self.finish_leg(ctx, key, CallDisposition::Handled);
            }
            CallPhase::WrapUp => self.finish_leg(ctx, key, CallDisposition::Handled),
            CallPhase::Queued | CallPhase::Ringing => {
                self.leave_now_counts(ctx, &row);
                self.state.calls.remove(&key);
                self.state
                    .peripheral_rt
                    .update(&key.peripheral, |p| p.calls_in_progress -= 1);
                ctx.historical(HistoricalRow::TerminationCallDetail(
                    TerminationCallDetail {
                        call: key,
                        router_call_key: row.router_call_key,
                        agent: row.agent,
                        skill_group: row.skill_group,
                        call_type: row.call_type,
                        service: row.service,
                        disposition: CallDisposition::Unreported,
                        start_ms: row.leg_start_ms,
                        delay_ms: ctx.now_ms.saturating_sub(row.leg_start_ms),
                        talk_ms: 0,
                        hold_ms: 0,
                        work_ms: 0,
                        end_ms: ctx.now_ms,
                    },
                ));
            }
        }
        let Some(agent) = row.agent else { return };
        let Some(agent_row) = self.state.agent_rt.get(&agent).copied() else {
            return;
        };
        if agent_row.call == Some(key) {
            let mut new = agent_row;
            new.call = None;
            self.set_agent_state(ctx, agent, agent_row, new, AgentState::NotReady, 0, None);
        }
    }
}
