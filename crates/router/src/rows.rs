//! The router's state rows: what it knows about each agent, skill group, call and route request.
//! Every row has a state-record encoding; most are fixed-width, so their size is a constant.

use crate::families::{AgentFamilies, CallFamilies};
use std::collections::VecDeque;
use tandem_model::codec::{DecodeError, Encode, FixedLen, Nullable, Reader};
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::output::RouteAnswer;
use tandem_model::script::NodeId;

/// Agent_Real_Time, plus what the router needs to route to the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentRow {
    pub peripheral: PeripheralId,
    pub state: AgentState,
    pub reason_code: u16,
    /// Ordered time of the last state change.
    pub state_since_ms: u64,
    /// The skill group of the call a call-specific state (Reserved, TalkingIn, Hold, Work*)
    /// belongs to; in the agent's other groups such a state shows as BusyOther.
    pub active_skill_group: Option<SkillGroupId>,
    /// The call ringing, in progress or in wrap-up at this agent.
    pub call: Option<PeripheralCallKey>,
    /// The routed call the router reserved this agent for.
    pub reserved_for: Option<RouterCallKey>,
    pub logged_on_since_ms: u64,
}
tandem_model::encode_struct!(fixed AgentRow {
    peripheral: PeripheralId,
    state: AgentState,
    reason_code: u16,
    state_since_ms: u64,
    active_skill_group: Option<SkillGroupId>,
    call: Option<PeripheralCallKey>,
    reserved_for: Option<RouterCallKey>,
    logged_on_since_ms: u64,
});

impl AgentRow {
    /// The state this agent shows in `skill_group`.
    #[inline]
    pub fn state_in(&self, skill_group: SkillGroupId) -> AgentState {
        if self.state.is_call_specific() {
            match self.active_skill_group {
                Some(active) if active != skill_group => AgentState::BusyOther,
                _ => self.state,
            }
        } else {
            self.state
        }
    }
}

/// Agent_Skill_Group_Real_Time's counters: one agent in one skill group. Its existence is the
/// membership. The agent's state in the group is not stored here: it follows from the agent's
/// row (`AgentRow::state_in`), and storing it would cost a write to every member row on every
/// agent state change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentSkillGroupRow {
    pub families: AgentFamilies,
}
tandem_model::encode_struct!(fixed AgentSkillGroupRow {
    families: AgentFamilies,
});

/// An ordered set with a canonical state-record encoding: a count, then the members in ascending
/// order.
///
/// Members sit in a sorted ring buffer. Availability sets and router queues gain members at the
/// back (the latest time) and lose them at the front (the longest waiting), which a ring buffer
/// does in O(1); a member leaving from the middle shifts the shorter side, a few hundred bytes for
/// groups of hundreds of agents. The set lives inside its skill group's row, so a snapshot that
/// shares the row copies it whole on the next write: one contiguous copy.
///
/// The smallest member is also kept beside the buffer, in the row itself: routing asks every
/// candidate group for its longest-available agent, and this answers without touching the
/// buffer's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortedSet<T: Ord + Clone> {
    members: VecDeque<T>,
    /// A copy of `members.front()`.
    first: Option<T>,
}

impl<T: Ord + Clone> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet {
            members: VecDeque::new(),
            first: None,
        }
    }
}

impl<T: Ord + Clone> SortedSet<T> {
    fn from_members(members: VecDeque<T>) -> Self {
        let first = members.front().cloned();
        SortedSet { members, first }
    }

    /// Adds `member`; false when it was already present.
    #[inline]
    pub fn insert(&mut self, member: T) -> bool {
        let added = match self.members.back() {
            Some(last) if *last >= member => match self.members.binary_search(&member) {
                Ok(_) => false,
                Err(at) => {
                    self.members.insert(at, member);
                    true
                }
            },
            _ => {
                self.members.push_back(member);
                true
            }
        };
        if added {
            self.first = self.members.front().cloned();
        }
        added
    }

    /// Removes `member`; false when it was absent.
    #[inline]
    pub fn remove(&mut self, member: &T) -> bool {
        let removed = if self.first.as_ref() == Some(member) {
            self.members.pop_front();
            true
        } else {
            match self.members.binary_search(member) {
                Ok(at) => {
                    self.members.remove(at);
                    true
                }
                Err(_) => false,
            }
        };
        if removed {
            self.first = self.members.front().cloned();
        }
        removed
    }

    /// The smallest member.
    #[inline]
    pub fn first(&self) -> Option<&T> {
        debug_assert!(self.first.as_ref() == self.members.front());
        self.first.as_ref()
    }

    pub fn contains(&self, member: &T) -> bool {
        self.members.binary_search(member).is_ok()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.members.iter()
    }
}

impl<T: Ord + Clone + FixedLen> Encode for SortedSet<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        (self.members.len() as u32).encode(out);
        for member in self.members.iter() {
            member.encode(out);
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        4 + self.members.len() * T::LEN
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u32::decode(reader)? as usize;
        if len.saturating_mul(T::LEN.max(1)) > reader.remaining() {
            return Err(DecodeError::TooLong {
                what: "set",
                len,
                max: reader.remaining() / T::LEN.max(1),
            });
        }
        let mut members = VecDeque::with_capacity(len);
        for _ in 0..len {
            let member = T::decode(reader)?;
            // Strictly ascending, or two byte strings would decode to one set.
            if members.back().is_some_and(|last: &T| *last >= member) {
                return Err(DecodeError::Invalid("set members out of order"));
            }
            members.push_back(member);
        }
        Ok(SortedSet::from_members(members))
    }
}

/// A member of a skill group's availability set: when the agent became available, then the agent,
/// so the first member is the longest-available agent.
pub type AvailableAgent = (u64, AgentId);
/// A member of a skill group's router queue: priority (1 first) and enqueue time, then the call.
pub type QueuedCall = ((u8, u64), RouterCallKey);

/// Skill_Group_Real_Time.
///
/// Laid out in declaration order: what agent events and routing read (the counts and the two
/// sets) shares the row's first cache lines, ahead of the three kilobytes of call families.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SkillGroupRow {
    /// The group's peripheral (from its configuration), kept here for the routing hot path.
    pub peripheral: PeripheralId,
    /// Agents of this group in each state, indexed by `AgentState as usize` (LoggedOff unused).
    pub state_counts: [u32; AgentState::COUNT],
    /// Calls waiting at the peripheral for this group (arrived, not yet ringing).
    pub calls_q_now: u32,
    /// Calls ringing, talking or on hold at agents of this group.
    pub calls_in_progress: u32,
    /// Calls in the router queue for this group (the size of `queue`).
    pub router_calls_q_now: u32,
    /// The group's agents in the Ready state, longest available first.
    pub available: SortedSet<AvailableAgent>,
    /// The group's router queue, best call first.
    pub queue: SortedSet<QueuedCall>,
    pub families: CallFamilies,
}
tandem_model::encode_struct!(SkillGroupRow {
    peripheral,
    state_counts,
    calls_q_now,
    calls_in_progress,
    router_calls_q_now,
    families,
    available,
    queue,
});

impl SkillGroupRow {
    pub fn logged_on(&self) -> u32 {
        self.state_counts[1..].iter().sum()
    }

    pub fn count(&self, state: AgentState) -> u32 {
        self.state_counts[state as usize]
    }
}

/// Call_Type_Real_Time and Service_Real_Time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallCountsRow {
    /// Calls waiting (router queue for a call type, peripheral queue for a service).
    pub calls_q_now: u32,
    pub calls_in_progress: u32,
    pub families: CallFamilies,
}
tandem_model::encode_struct!(fixed CallCountsRow {
    calls_q_now: u32,
    calls_in_progress: u32,
    families: CallFamilies,
});

/// Peripheral_Real_Time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeripheralRow {
    pub online: bool,
    pub online_since_ms: u64,
    pub agents_logged_on: u32,
    pub calls_in_progress: u32,
}
tandem_model::encode_struct!(fixed PeripheralRow {
    online: bool,
    online_since_ms: u64,
    agents_logged_on: u32,
    calls_in_progress: u32,
});

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum CallPhase {
    /// Arrived, waiting at the peripheral.
    #[default]
    Queued = 0,
    Ringing = 1,
    Talking = 2,
    Held = 3,
    /// The call ended; its agent is in after-call work. The row lives until the work ends so
    /// that the handled call carries its work time.
    WrapUp = 4,
}
tandem_model::encode_unit_enum!(CallPhase {
    Queued,
    Ringing,
    Talking,
    Held,
    WrapUp
});

/// A call at a peripheral, from arrival until its leg is finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRow {
    pub phase: CallPhase,
    pub skill_group: Option<SkillGroupId>,
    pub call_type: Option<CallTypeId>,
    pub service: Option<ServiceId>,
    pub router_call_key: Option<RouterCallKey>,
    pub agent: Option<AgentId>,
    /// Start of this leg: arrival, or the transfer that brought it to its skill group.
    pub leg_start_ms: u64,
    pub answered_ms: u64,
    pub hold_started_ms: u64,
    pub hold_ms: u64,
    /// End of talk (the CallEnded), when in wrap-up.
    pub talk_ended_ms: u64,
}
tandem_model::encode_struct!(fixed CallRow {
    phase: CallPhase,
    skill_group: Option<SkillGroupId>,
    call_type: Option<CallTypeId>,
    service: Option<ServiceId>,
    router_call_key: Option<RouterCallKey>,
    agent: Option<AgentId>,
    leg_start_ms: u64,
    answered_ms: u64,
    hold_started_ms: u64,
    hold_ms: u64,
    talk_ended_ms: u64,
});

/// Where a routed call is in its script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterCallPhase {
    /// Paused at a Wait node until the timer fires.
    Waiting,
    /// In the router queue of these skill groups.
    Queued {
        priority: u8,
        enqueued_ms: u64,
        skill_groups: Vec<SkillGroupId>,
    },
}

impl Encode for RouterCallPhase {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RouterCallPhase::Waiting => out.push(0),
            RouterCallPhase::Queued {
                priority,
                enqueued_ms,
                skill_groups,
            } => {
                out.push(1);
                priority.encode(out);
                enqueued_ms.encode(out);
                skill_groups.encode(out);
            }
        }
    }
    fn encoded_len(&self) -> usize {
        match self {
            RouterCallPhase::Waiting => 1,
            RouterCallPhase::Queued { skill_groups, .. } => 1 + 1 + 8 + skill_groups.encoded_len(),
        }
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(reader)? {
            0 => Ok(RouterCallPhase::Waiting),
            1 => Ok(RouterCallPhase::Queued {
                priority: Encode::decode(reader)?,
                enqueued_ms: Encode::decode(reader)?,
                skill_groups: Encode::decode(reader)?,
            }),
            tag => Err(DecodeError::InvalidTag {
                type_name: "RouterCallPhase",
                tag: tag as u32,
            }),
        }
    }
}

/// A route request whose script has not finished (waiting at a Wait node or in the queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterCallRow {
    pub key: RouteRequestKey,
    pub pg: PgId,
    pub dialed_number: Option<DialedNumberId>,
    pub call_type: Option<CallTypeId>,
    pub script: ScriptId,
    /// The node to run next (for Waiting) or the Queue node (for Queued).
    pub node: NodeId,
    pub phase: RouterCallPhase,
    /// Raised at every phase change; a timer carries the generation it was set for, so a stale
    /// timer is recognised and ignored.
    pub generation: u32,
    pub arrived_ms: u64,
    /// An interim (Queued) answer went out: the final answer is a DeliverQueuedCall.
    pub interim_answered: bool,
    pub ani: String,
    pub caller_entered_digits: String,
    pub call_variables: Vec<String>,
    pub dialed_digits: String,
}
tandem_model::encode_struct!(RouterCallRow {
    key,
    pg,
    dialed_number,
    call_type,
    script,
    node,
    phase,
    generation,
    arrived_ms,
    interim_answered,
    ani,
    caller_entered_digits,
    call_variables,
    dialed_digits,
});

/// The idempotency cache entry of a route request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEntry {
    pub router_call_key: RouterCallKey,
    /// The latest answer sent (interim or final); a repeat gets it again.
    pub answer: Nullable<RouteAnswer>,
    /// Routing has finished (final answer sent, or the request ended).
    pub finished: bool,
    /// The agent reserved for the call, released if the client reports the request ended.
    pub reserved_agent: Option<AgentId>,
}
tandem_model::encode_struct!(RequestEntry {
    router_call_key,
    answer,
    finished,
    reserved_agent
});

/// A deferred action, fired when ordered time reaches its due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Answer with the default label just before the routing client gives up.
    AnswerDeadline(RouterCallKey),
    /// Resume a script paused at a Wait node.
    ScriptWake(RouterCallKey, u32),
    /// Take a call out of the router queue and continue its script.
    QueueTimeout(RouterCallKey, u32),
    /// Release an agent reserved for a call that never arrived.
    ReservationTimeout(AgentId, RouterCallKey),
    /// Forget a finished request's cached answer.
    EvictRequest(RouteRequestKey),
}

impl Encode for Timer {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Timer::AnswerDeadline(k) => {
                out.push(0);
                k.encode(out);
                0u32.encode(out);
            }
            Timer::ScriptWake(k, g) => {
                out.push(1);
                k.encode(out);
                g.encode(out);
            }
            Timer::QueueTimeout(k, g) => {
                out.push(2);
                k.encode(out);
                g.encode(out);
            }
            Timer::ReservationTimeout(a, k) => {
                out.push(3);
                k.encode(out);
                a.0.encode(out);
            }
            Timer::EvictRequest(key) => {
                out.push(4);
                key.encode(out);
            }
        }
    }
    fn encoded_len(&self) -> usize {
        match self {
            Timer::EvictRequest(key) => 1 + key.encoded_len(),
            _ => 1 + 8 + 4,
        }
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = u8::decode(reader)?;
        if tag == 4 {
            return Ok(Timer::EvictRequest(Encode::decode(reader)?));
        }
        let key = RouterCallKey::decode(reader)?;
        let extra = u32::decode(reader)?;
        match tag {
            0 if extra == 0 => Ok(Timer::AnswerDeadline(key)),
            1 => Ok(Timer::ScriptWake(key, extra)),
            2 => Ok(Timer::QueueTimeout(key, extra)),
            3 => Ok(Timer::ReservationTimeout(AgentId(extra), key)),
            tag => Err(DecodeError::InvalidTag {
                type_name: "Timer",
                tag: tag as u32,
            }),
        }
    }
}

/// Per-node memory of a script: the rotary position or the weighted round robin's credits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStateRow {
    pub rotary_next: u32,
    pub credits: Vec<i64>,
}
tandem_model::encode_struct!(NodeStateRow {
    rotary_next,
    credits
});

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The set behaves as an ordered set whatever the order of inserts and removes, and its
        /// encoding round-trips.
        #[test]
        fn sorted_set_matches_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 0u32..64), 0..400)) {
            let mut set: SortedSet<u32> = SortedSet::default();
            let mut model = std::collections::BTreeSet::new();
            for (insert, member) in ops {
                if insert {
                    prop_assert_eq!(set.insert(member), model.insert(member));
                } else {
                    prop_assert_eq!(set.remove(&member), model.remove(&member));
                }
                prop_assert_eq!(set.first(), model.first());
                prop_assert_eq!(set.len(), model.len());
            }
            prop_assert!(set.iter().eq(model.iter()));
            prop_assert!((0..64).all(|m| set.contains(&m) == model.contains(&m)));
            let bytes = set.to_bytes();
            prop_assert_eq!(bytes.len(), set.encoded_len());
            prop_assert_eq!(SortedSet::<u32>::from_bytes(&bytes).unwrap(), set);
        }
    }
}
