//! Loading the rows of the next inputs while the current one is applied.
//!
//! At 100,000 agents the state is far larger than the processor's caches, and nearly all of an
//! input's cost is waiting for the first touch of its rows: the agent's row and member rows, the
//! call's row, the rows of their skill groups, call type and service. Most of those addresses can
//! be known before the input is applied, from the input itself (an agent id, a call key) and from
//! rows that an earlier prefetch already brought in. So while input `i` is applied, the rows of
//! inputs `i + 1 ..= i + PREFETCH_DISTANCE` are requested, each a stage further along its chain:
//!
//! | distance | what is requested |
//! |---|---|
//! | 4 | the trie leaves that hold the agent's row, its member rows and the call's row |
//! | 3 | those rows' slots in the leaves |
//! | 2 | the agent's member rows; the call's skill group, call type and service rows, and its agent's slots |
//! | 1 | the rows of the agent's skill groups; the member rows of the call's agent; a route request's call type row and the rows of the skill groups its script names |
//!
//! A route request is looked at only at distance 1: finding its script is a walk through the
//! dialed number, call type map and script, and doing that at several stages cost more than the
//! earlier start saved. The call families' counters (deep inside a skill group row) are not
//! requested either: which of them an event writes depends on the event, and requesting all of
//! them cost more than it saved.
//!
//! A prefetch is a hint to the processor and nothing more: it reads the state but writes nothing,
//! so whether, when and how far ahead it runs never changes an output or a digest. Inputs that
//! reach no row (TimeTick, configuration changes) request nothing.

use crate::Router;
use tandem_model::ids::*;
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;
use tandem_model::script::{Condition, NodeKind};

/// How many inputs ahead of the one being applied are prefetched. Four stages cover the longest
/// chain (leaf, slot, member rows, skill group rows); one input takes about a microsecond, well
/// over the latency of one load from memory, so each stage's lines have arrived by the next.
pub const PREFETCH_DISTANCE: usize = 4;

/// State size (record bytes) from which the prefetch runs. A smaller state stays in the
/// processor's caches (in memory its rows take a few times their record bytes, against a core's
/// 1 to 2 MB of L2), where a prefetch finds everything already loaded and only costs its own
/// instructions: about a third more time per input at 1,000 agents.
pub const PREFETCH_STATE_BYTES_MIN: u64 = 4 << 20;

/// Skill groups of a route request's script whose rows are prefetched; a script names few.
const PREFETCH_SCRIPT_GROUPS_MAX: usize = 8;

/// Lines of a row requested at once: a whole agent or call row, or the head of a skill group row
/// (its counts and sets).
const ROW_HEAD_LINES: usize = 4;

impl Router {
    /// Applies consecutive ordered inputs (sequence numbers `first_seq`, `first_seq + 1`, ...),
    /// exactly as [`Router::apply_into`] on each in turn, appending every output to `out`. While
    /// one input is applied, the rows of the next ones are prefetched.
    pub fn apply_batch(&mut self, first_seq: u64, inputs: &[OrderedInput], out: &mut Vec<Output>) {
        for (i, input) in inputs.iter().enumerate() {
            self.prefetch(&inputs[i + 1..]);
            self.apply_into(first_seq + i as u64, input, out);
        }
    }

    /// Asks the processor to start loading what the next inputs will touch: `upcoming[0]` is the
    /// input after the one about to be applied. Only the first [`PREFETCH_DISTANCE`] are looked
    /// at. A hint: it changes nothing, and calling it or not gives the same outputs.
    #[inline]
    pub fn prefetch(&self, upcoming: &[OrderedInput]) {
        if self.state.scalars.state_size_max < PREFETCH_STATE_BYTES_MIN {
            return;
        }
        for (i, input) in upcoming.iter().take(PREFETCH_DISTANCE).enumerate() {
            self.prefetch_stage(i + 1, &input.input);
        }
    }

    fn prefetch_stage(&self, distance: usize, input: &Input) {
        let (agent, call) = match input {
            Input::AgentStateChange { agent, .. }
            | Input::AgentLogin { agent, .. }
            | Input::AgentLogout { agent, .. } => (Some(*agent), None),
            Input::CallOffered { call, agent, .. } => (Some(*agent), Some(*call)),
            Input::CallArrived { call, .. }
            | Input::CallAnswered { call }
            | Input::CallHeld { call }
            | Input::CallRetrieved { call }
            | Input::CallTransferred { call, .. }
            | Input::CallEnded { call, .. }
            | Input::CallAbandoned { call }
            | Input::CallCleared { call } => (None, Some(*call)),
            Input::RouteRequest(request) => {
                self.prefetch_route(distance, &request.dialed_number, request.key.routing_client);
                (None, None)
            }
            _ => (None, None),
        };
        let state = &self.state;
        match distance {
            4 => {
                if let Some(agent) = agent {
                    state.agent_rt.prefetch_leaf(&agent);
                    state.agent_skill_group_rt.prefetch_leaf(agent);
                }
                if let Some(call) = call {
                    state.calls.prefetch_leaf(&call);
                }
            }
            3 => {
                if let Some(agent) = agent {
                    self.prefetch_agent_slots(agent);
                }
                if let Some(call) = call {
                    state.calls.prefetch_slot(&call, ROW_HEAD_LINES);
                }
            }
            2 => {
                if let Some(agent) = agent {
                    state.agent_skill_group_rt.prefetch_rows(agent);
                }
                if let Some(row) = call.and_then(|call| state.calls.get(&call)) {
                    // Skill group, call type and service leaves are few and stay in cache, so
                    // their slots can be requested at once.
                    if let Some(group) = row.skill_group {
                        state.skill_group_rt.prefetch_slot(&group, ROW_HEAD_LINES);
                    }
                    if let Some(call_type) = row.call_type {
                        state.call_type_rt.prefetch_slot(&call_type, 1);
                    }
                    if let Some(service) = row.service {
                        state.service_rt.prefetch_slot(&service, 1);
                    }
                    if let Some(agent) = row.agent {
                        self.prefetch_agent_slots(agent);
                    }
                }
            }
            1 => {
                if let Some(agent) = agent {
                    for ((_, group), _) in state.agent_skill_group_rt.of(agent) {
                        state.skill_group_rt.prefetch_slot(group, ROW_HEAD_LINES);
                    }
                }
                if let Some(agent) = call
                    .and_then(|call| state.calls.get(&call))
                    .and_then(|row| row.agent)
                {
                    state.agent_skill_group_rt.prefetch_rows(agent);
                }
            }
            _ => {}
        }
    }

    fn prefetch_agent_slots(&self, agent: AgentId) {
        self.state.agent_rt.prefetch_slot(&agent, ROW_HEAD_LINES);
        self.state
            .agent_skill_group_rt
            .prefetch_slot(agent, ROW_HEAD_LINES);
    }

    /// A route request's rows: the skill group rows its script reads and its call type's row.
    /// The dialed number, call type map and script on the way are few and stay in cache. Only
    /// the last stage looks them up, so a request pays for that walk once, not at every stage.
    fn prefetch_route(&self, distance: usize, digits: &str, client: RoutingClientId) {
        if distance != 1 {
            return;
        }
        let state = &self.state;
        let Some(call_type) = state
            .dialed_number_index
            .find(client, |(_, d)| d.as_str().cmp(digits))
            .and_then(|d| state.dialed_numbers.get(d))
            .map(|d| d.call_type)
        else {
            return;
        };
        state.call_type_rt.prefetch_slot(&call_type, 1);
        let Some(script) = self
            .script_for(call_type)
            .and_then(|(script, _)| state.scripts.get(&script))
        else {
            return;
        };
        let mut requested = 0;
        let mut request = |group: &SkillGroupId| {
            if requested < PREFETCH_SCRIPT_GROUPS_MAX {
                state.skill_group_rt.prefetch_slot(group, ROW_HEAD_LINES);
                requested += 1;
            }
        };
        for node in &script.nodes {
            match &node.kind {
                NodeKind::Select { skill_groups, .. } | NodeKind::Queue { skill_groups, .. } => {
                    skill_groups.iter().for_each(&mut request)
                }
                NodeKind::If {
                    condition:
                        Condition::SkillGroupAvailableAtLeast { skill_group, .. }
                        | Condition::SkillGroupQueuedAtMost { skill_group, .. },
                    ..
                } => request(skill_group),
                _ => {}
            }
        }
    }
}
