//! Ordered inputs: everything that reaches the router, in the order the MDS assigned.

use crate::config::ConfigChange;
use crate::domain::AgentState;
use crate::ids::*;
use serde::{Deserialize, Serialize};

/// The most call variables a route request carries (ICM: Call.PeripheralVariable1..10).
pub const CALL_VARIABLES_MAX: usize = 10;
/// The longest call variable, in bytes (ICM: 40 characters).
pub const CALL_VARIABLE_BYTES_MAX: usize = 40;
/// The longest dialed number, ANI or caller-entered digits string, in bytes.
pub const DIGITS_BYTES_MAX: usize = 40;

/// An input with its place in the ordered stream's time. `time_ms` is ordered time: milliseconds
/// since the Unix epoch as stamped by the enabled synchronizer, never a local clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderedInput {
    pub time_ms: u64,
    pub input: Input,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Moves ordered time on when nothing else arrives; drives timers, To5 steps and intervals.
    TimeTick,
    /// A configuration change, applied whole or rejected whole.
    ConfigChange(ConfigChange),
    PeripheralOnline {
        peripheral: PeripheralId,
    },
    PeripheralOffline {
        peripheral: PeripheralId,
    },
    /// The agent logs on in `state` (Ready or NotReady).
    AgentLogin {
        agent: AgentId,
        state: AgentState,
        reason_code: u16,
    },
    AgentLogout {
        agent: AgentId,
        reason_code: u16,
    },
    /// A state change that is not part of a routed call: NotReady (with reason), Ready, WorkReady,
    /// WorkNotReady, TalkingOut, TalkingOther or BusyOther.
    AgentStateChange {
        agent: AgentId,
        state: AgentState,
        reason_code: u16,
    },
    /// A call arrives at a peripheral, queued there for `skill_group` when one is known.
    CallArrived {
        call: PeripheralCallKey,
        skill_group: Option<SkillGroupId>,
        call_type: Option<CallTypeId>,
        service: Option<ServiceId>,
        /// Set when the router routed this call (pre-route or post-route).
        router_call_key: Option<RouterCallKey>,
    },
    /// The call rings at an agent, for `skill_group` (default: the call's skill group).
    CallOffered {
        call: PeripheralCallKey,
        agent: AgentId,
        skill_group: Option<SkillGroupId>,
    },
    CallAnswered {
        call: PeripheralCallKey,
    },
    CallHeld {
        call: PeripheralCallKey,
    },
    CallRetrieved {
        call: PeripheralCallKey,
    },
    /// The agent transfers the call to `skill_group`; the agent's leg ends, the call waits there.
    CallTransferred {
        call: PeripheralCallKey,
        skill_group: SkillGroupId,
        after_call: AfterCall,
    },
    /// The answered call ends; the agent moves on to `after_call`.
    CallEnded {
        call: PeripheralCallKey,
        after_call: AfterCall,
    },
    /// The caller hangs up before an agent answered.
    CallAbandoned {
        call: PeripheralCallKey,
    },
    /// A waiting call leaves the peripheral without reaching an agent there: it was routed
    /// elsewhere (a network label, another peripheral, a default) or its routing client took it
    /// back. Neither answered nor abandoned at this peripheral.
    CallCleared {
        call: PeripheralCallKey,
    },
    RouteRequest(RouteRequest),
    /// A PG's statement of what one of its peripherals holds now, sent when the PG (re)connects:
    /// the router makes its own view of the peripheral agree with it (see [`PeripheralReport`]).
    PeripheralReport(PeripheralReport),
    /// The routing client gave up on a request (its own timeout) or the caller hung up while the
    /// router held the call; any agent reserved for it is released.
    RouteRequestEnded {
        key: RouteRequestKey,
        reason: RouteEndReason,
    },
}

/// Where an agent goes when a call leg ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterCall {
    Ready,
    NotReady,
    /// Wrap-up, then Ready. The call counts as handled when the wrap-up ends.
    WorkReady,
    /// Wrap-up, then NotReady.
    WorkNotReady,
}

impl AfterCall {
    pub fn state(self) -> AgentState {
        match self {
            AfterCall::Ready => AgentState::Ready,
            AfterCall::NotReady => AgentState::NotReady,
            AfterCall::WorkReady => AgentState::WorkReady,
            AfterCall::WorkNotReady => AgentState::WorkNotReady,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteEndReason {
    ClientTimeout,
    CallerAbandoned,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRequest {
    pub key: RouteRequestKey,
    pub dialed_number: String,
    pub ani: String,
    pub caller_entered_digits: String,
    /// Call variables 1..10, in order; absent trailing ones may be omitted.
    pub call_variables: Vec<String>,
}

impl RouteRequest {
    /// Checks the request's own limits; the router rejects a request that fails them.
    pub fn check(&self) -> Result<(), String> {
        for (what, s) in [
            ("dialed number", &self.dialed_number),
            ("ANI", &self.ani),
            ("caller-entered digits", &self.caller_entered_digits),
        ] {
            if s.len() > DIGITS_BYTES_MAX {
                return Err(format!(
                    "{what} of {} bytes exceeds {DIGITS_BYTES_MAX}",
                    s.len()
                ));
            }
        }
        if self.call_variables.len() > CALL_VARIABLES_MAX {
            return Err(format!(
                "{} call variables exceed {CALL_VARIABLES_MAX}",
                self.call_variables.len()
            ));
        }
        if let Some(v) = self
            .call_variables
            .iter()
            .find(|v| v.len() > CALL_VARIABLE_BYTES_MAX)
        {
            return Err(format!(
                "a call variable of {} bytes exceeds {CALL_VARIABLE_BYTES_MAX}",
                v.len()
            ));
        }
        Ok(())
    }
}

impl Input {
    pub fn name(&self) -> &'static str {
        match self {
            Input::TimeTick => "TimeTick",
            Input::ConfigChange(_) => "ConfigChange",
            Input::PeripheralOnline { .. } => "PeripheralOnline",
            Input::PeripheralOffline { .. } => "PeripheralOffline",
            Input::AgentLogin { .. } => "AgentLogin",
            Input::AgentLogout { .. } => "AgentLogout",
            Input::AgentStateChange { .. } => "AgentStateChange",
            Input::CallArrived { .. } => "CallArrived",
            Input::CallOffered { .. } => "CallOffered",
            Input::CallAnswered { .. } => "CallAnswered",
            Input::CallHeld { .. } => "CallHeld",
            Input::CallRetrieved { .. } => "CallRetrieved",
            Input::CallTransferred { .. } => "CallTransferred",
            Input::CallEnded { .. } => "CallEnded",
            Input::CallAbandoned { .. } => "CallAbandoned",
            Input::CallCleared { .. } => "CallCleared",
            Input::RouteRequest(_) => "RouteRequest",
            Input::PeripheralReport(_) => "PeripheralReport",
            Input::RouteRequestEnded { .. } => "RouteRequestEnded",
        }
    }
}

/// The most agents one [`PeripheralReport`] part lists; a larger peripheral reports in parts.
pub const REPORT_AGENTS_MAX: usize = 2_000;
/// The most waiting calls one [`PeripheralReport`] part lists.
pub const REPORT_CALLS_MAX: usize = 2_000;

/// One part of a peripheral's re-report. Each part is a complete statement about a range of
/// keys: every logged-on agent of the peripheral with an id in the range (with the call it has),
/// or every call waiting at the peripheral with a call id in the range. What the router holds in
/// that range and the part does not list is gone. A PG's parts cover every key between them, so
/// the router needs no memory between parts and its state is consistent after each one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeripheralReport {
    pub peripheral: PeripheralId,
    pub part: ReportPart,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportPart {
    /// The logged-on agents with ids in `from..=through`, in id order; the others are logged off.
    Agents {
        from: AgentId,
        through: AgentId,
        agents: Vec<AgentReport>,
    },
    /// The calls waiting at the peripheral (no agent has them) with ids in `from..=through`, in
    /// id order.
    Waiting {
        from: u64,
        through: u64,
        calls: Vec<WaitingCallReport>,
    },
}

/// An agent as its peripheral sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    pub agent: AgentId,
    /// Never LoggedOff (such an agent is not listed). With a call: Reserved (ringing),
    /// TalkingIn, Hold, WorkReady or WorkNotReady; without: any state an agent reaches by its
    /// own events.
    pub state: AgentState,
    pub reason_code: u16,
    pub call: Option<AgentCallReport>,
}

/// Where a call with an agent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedCallPhase {
    Ringing,
    Talking,
    Held,
    /// The call ended; the agent is in its after-call work.
    WrapUp,
}

impl ReportedCallPhase {
    /// The agent state this phase of its call puts the agent in (wrap-up: either work state).
    pub fn agent_state_fits(self, state: AgentState) -> bool {
        match self {
            ReportedCallPhase::Ringing => state == AgentState::Reserved,
            ReportedCallPhase::Talking => state == AgentState::TalkingIn,
            ReportedCallPhase::Held => state == AgentState::Hold,
            ReportedCallPhase::WrapUp => {
                matches!(state, AgentState::WorkReady | AgentState::WorkNotReady)
            }
        }
    }
}

/// A call an agent has: ringing, talking, held or in wrap-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCallReport {
    pub call_id: u64,
    pub phase: ReportedCallPhase,
    pub skill_group: SkillGroupId,
    pub call_type: Option<CallTypeId>,
    pub service: Option<ServiceId>,
    pub router_call_key: Option<RouterCallKey>,
    /// How long ago this leg started (arrival, or the transfer that brought it).
    pub leg_age_ms: u32,
    /// How long ago the call was answered (0 while it rings).
    pub answered_age_ms: u32,
}

/// A call waiting at the peripheral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingCallReport {
    pub call_id: u64,
    pub skill_group: Option<SkillGroupId>,
    pub call_type: Option<CallTypeId>,
    pub service: Option<ServiceId>,
    pub router_call_key: Option<RouterCallKey>,
    pub leg_age_ms: u32,
}
