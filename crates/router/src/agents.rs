//! Agent events: login, logout, state changes, and the bookkeeping every state change implies
//! (per-skill-group state counts and availability sets).
//!
//! The cost of a state change is proportional to the agent's skill groups (bounded by
//! `SKILL_GROUPS_PER_AGENT_MAX`), never to the number of agents.

use crate::rows::AgentRow;
use crate::{reject, Applied, Ctx, Router};
use tandem_model::config::SKILL_GROUPS_PER_AGENT_MAX;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::output::Output;

/// The states an agent reaches by its own events (a state change), not through a call's: a
/// report may also give them without a call.
pub(crate) fn reached_by_own_events(state: AgentState) -> bool {
    matches!(
        state,
        AgentState::NotReady
            | AgentState::Ready
            | AgentState::WorkReady
            | AgentState::WorkNotReady
            | AgentState::TalkingOut
            | AgentState::TalkingOther
            | AgentState::BusyOther
    )
}

impl Router {
    pub(crate) fn peripheral_online(
        &mut self,
        ctx: &mut Ctx,
        peripheral: PeripheralId,
        online: bool,
    ) -> Applied {
        let now = ctx.now_ms;
        let changed = self.state.peripheral_rt.update(&peripheral, |row| {
            let changed = row.online != online;
            if changed {
                row.online = online;
                row.online_since_ms = now;
            }
            changed
        });
        match changed {
            None => reject(format!("unknown peripheral {peripheral}")),
            Some(changed) => {
                if changed && online {
                    self.start_dispatch_sweep();
                }
                // Repeats are harmless (a PG re-reports on reconnect).
                Ok(())
            }
        }
    }

    pub(crate) fn agent_login(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        state: AgentState,
        reason_code: u16,
    ) -> Applied {
        let row = self.agent_row(agent)?;
        if row.state != AgentState::LoggedOff {
            return reject(format!(
                "agent {agent} is already logged on ({})",
                row.state.name()
            ));
        }
        if !matches!(state, AgentState::Ready | AgentState::NotReady) {
            return reject(format!(
                "agent {agent} cannot log on in state {}",
                state.name()
            ));
        }
        let mut new = row;
        new.logged_on_since_ms = ctx.now_ms;
        self.set_agent_state(ctx, agent, row, new, state, reason_code, None);
        Ok(())
    }

    pub(crate) fn agent_logout(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        reason_code: u16,
    ) -> Applied {
        let row = self.agent_row(agent)?;
        if row.state == AgentState::LoggedOff {
            return reject(format!("agent {agent} is not logged on"));
        }
        self.leave_call_states(ctx, agent, row, AgentState::LoggedOff)?;
        let row = self.agent_row(agent)?;
        self.set_agent_state(
            ctx,
            agent,
            row,
            row,
            AgentState::LoggedOff,
            reason_code,
            None,
        );
        Ok(())
    }

    pub(crate) fn agent_state_change(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        state: AgentState,
        reason_code: u16,
    ) -> Applied {
        let row = self.agent_row(agent)?;
        if row.state == AgentState::LoggedOff {
            return reject(format!("agent {agent} is not logged on"));
        }
        if !reached_by_own_events(state) {
            return reject(format!(
                "agent {agent}: {} is reached through call events, not a state change",
                state.name()
            ));
        }
        // A PG that does not know of the router's reservation may report Ready again: no change.
        if row.reserved_for.is_some() && state == AgentState::Ready {
            return Ok(());
        }
        // Switching between the two wrap-up states keeps the wrap-up going.
        let in_wrap_up = matches!(row.state, AgentState::WorkReady | AgentState::WorkNotReady);
        if in_wrap_up && matches!(state, AgentState::WorkReady | AgentState::WorkNotReady) {
            let new = row;
            self.set_agent_state(
                ctx,
                agent,
                row,
                new,
                state,
                reason_code,
                row.active_skill_group,
            );
            return Ok(());
        }
        self.leave_call_states(ctx, agent, row, state)?;
        let row = self.agent_row(agent)?;
        self.set_agent_state(ctx, agent, row, row, state, reason_code, None);
        Ok(())
    }

    /// Before an agent moves to `next` by its own event: refuses if it has a live call, finishes
    /// a wrap-up (the call counts as handled now), and releases a router reservation.
    fn leave_call_states(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        row: AgentRow,
        next: AgentState,
    ) -> Applied {
        if let Some(call) = row.call {
            let phase = self.state.calls.get(&call).map(|c| c.phase);
            match phase {
                Some(crate::rows::CallPhase::WrapUp) => self.finish_wrap_up(ctx, call),
                Some(phase) => {
                    return reject(format!(
                        "agent {agent} cannot go {} with call {}/{} {:?}",
                        next.name(),
                        call.peripheral,
                        call.call_id,
                        phase
                    ))
                }
                None => {}
            }
        }
        if let Some(router_call_key) = row.reserved_for {
            // The agent leaves the reservation for `next` directly: releasing it through Ready
            // would hand the agent the next queued call first.
            self.announce_release(ctx, row.peripheral, agent, router_call_key);
            self.state
                .agent_rt
                .update(&agent, |a| a.reserved_for = None);
        }
        Ok(())
    }

    /// Tells the agent's PG that the router no longer holds the agent for the call.
    pub(crate) fn announce_release(
        &mut self,
        ctx: &mut Ctx,
        peripheral: PeripheralId,
        agent: AgentId,
        router_call_key: RouterCallKey,
    ) {
        if let Some(pg) = self.state.peripherals.get(&peripheral).map(|p| p.pg) {
            ctx.out.push(Output::ReleaseAgent {
                pg,
                peripheral,
                agent,
                router_call_key,
            });
        }
    }

    pub(crate) fn agent_row(&self, agent: AgentId) -> Result<AgentRow, crate::Rejection> {
        let row = self.state.agent_rt.get(&agent);
        // Every event that reads an agent's row goes on to its member rows. Reading the first
        // member now, while the row's own cache miss is outstanding, lets the processor fetch
        // both at once instead of one after the other.
        std::hint::black_box(
            self.state
                .agent_skill_group_rt
                .of(agent)
                .first()
                .map(|(k, _)| k),
        );
        match row {
            Some(row) => Ok(*row),
            None => reject(format!("unknown agent {agent}")),
        }
    }

    /// Releases the router's reservation of `agent` for `router_call_key`: the agent is available
    /// again and its PG is told.
    pub(crate) fn release_reservation(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        router_call_key: RouterCallKey,
    ) {
        let Ok(row) = self.agent_row(agent) else {
            return;
        };
        if row.reserved_for != Some(router_call_key) {
            return;
        }
        let mut new = row;
        new.reserved_for = None;
        let state = if row.state == AgentState::Reserved && row.call.is_none() {
            AgentState::Ready
        } else {
            row.state
        };
        let active = if state == AgentState::Ready {
            None
        } else {
            row.active_skill_group
        };
        self.announce_release(ctx, row.peripheral, agent, router_call_key);
        self.set_agent_state(ctx, agent, row, new, state, row.reason_code, active);
    }

    /// Moves an agent from `old` to `new` with `state`: the one place where agent states change.
    /// `new` carries any other field changes the caller made (call, reservation, ...).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set_agent_state(
        &mut self,
        ctx: &mut Ctx,
        agent: AgentId,
        old: AgentRow,
        mut new: AgentRow,
        state: AgentState,
        reason_code: u16,
        active_skill_group: Option<SkillGroupId>,
    ) {
        new.state = state;
        new.reason_code = reason_code;
        new.active_skill_group = if state.is_call_specific() {
            active_skill_group
        } else {
            None
        };
        if old.state != state {
            new.state_since_ms = ctx.now_ms;
        }
        if state == AgentState::LoggedOff {
            new.call = None;
            new.reserved_for = None;
        }

        // Per-skill-group views of the state, counts and availability sets. The member list
        // is collected first (on the stack) because the loop mutates other tables.
        let mut groups = [SkillGroupId(0); SKILL_GROUPS_PER_AGENT_MAX];
        let mut group_count = 0;
        for group in self
            .state
            .skill_groups_of(agent)
            .take(SKILL_GROUPS_PER_AGENT_MAX)
        {
            groups[group_count] = group;
            group_count += 1;
        }
        let groups = &groups[..group_count];
        for &group in groups {
            let before = old.state_in(group);
            let after = new.state_in(group);
            if before == after {
                continue;
            }
            self.state.skill_group_rt.update(&group, |row| {
                if before != AgentState::LoggedOff {
                    row.state_counts[before as usize] -= 1;
                }
                if after != AgentState::LoggedOff {
                    row.state_counts[after as usize] += 1;
                }
                if before == AgentState::Ready {
                    row.available.remove(&(old.state_since_ms, agent));
                }
                if after == AgentState::Ready {
                    row.available.insert((new.state_since_ms, agent));
                }
            });
        }

        let scalars = &mut self.state.scalars;
        if old.state != state {
            scalars.agent_state_counts[old.state as usize] -= 1;
            scalars.agent_state_counts[state as usize] += 1;
            if old.state.is_logged_on() != state.is_logged_on() {
                self.state.peripheral_rt.update(&old.peripheral, |row| {
                    if state.is_logged_on() {
                        row.agents_logged_on += 1;
                    } else {
                        row.agents_logged_on -= 1;
                    }
                });
            }
        }
        self.state.agent_rt.insert(agent, new);

        if state == AgentState::Ready && new.reserved_for.is_none() {
            self.dispatch_queued_call(ctx, agent, groups);
        }
    }
}
