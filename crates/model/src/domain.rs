//! Small domain enums shared by configuration, inputs and real-time rows.

use serde::{Deserialize, Serialize};

/// An agent's state, as ICM reports it in Agent_Real_Time.AgentState.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[repr(u8)]
pub enum AgentState {
    #[default]
    LoggedOff = 0,
    NotReady = 1,
    /// Available for a routed call ("Avail" in skill group counts).
    Ready = 2,
    /// Reserved for a call the router or the peripheral is delivering.
    Reserved = 3,
    TalkingIn = 4,
    TalkingOut = 5,
    TalkingOther = 6,
    Hold = 7,
    /// After-call work, then available.
    WorkReady = 8,
    /// After-call work, then not ready.
    WorkNotReady = 9,
    /// Busy on something for another skill group.
    BusyOther = 10,
}
crate::encode_unit_enum!(AgentState {
    LoggedOff,
    NotReady,
    Ready,
    Reserved,
    TalkingIn,
    TalkingOut,
    TalkingOther,
    Hold,
    WorkReady,
    WorkNotReady,
    BusyOther,
});

impl AgentState {
    /// The number of states, for per-state count arrays indexed by `state as usize`.
    pub const COUNT: usize = 11;

    pub const ALL: [AgentState; Self::COUNT] = [
        AgentState::LoggedOff,
        AgentState::NotReady,
        AgentState::Ready,
        AgentState::Reserved,
        AgentState::TalkingIn,
        AgentState::TalkingOut,
        AgentState::TalkingOther,
        AgentState::Hold,
        AgentState::WorkReady,
        AgentState::WorkNotReady,
        AgentState::BusyOther,
    ];

    /// States that belong to one call and therefore to that call's skill group only; in the
    /// agent's other skill groups they show as BusyOther.
    pub fn is_call_specific(self) -> bool {
        matches!(
            self,
            AgentState::Reserved
                | AgentState::TalkingIn
                | AgentState::Hold
                | AgentState::WorkReady
                | AgentState::WorkNotReady
        )
    }

    pub fn is_logged_on(self) -> bool {
        self != AgentState::LoggedOff
    }

    pub fn name(self) -> &'static str {
        match self {
            AgentState::LoggedOff => "LoggedOff",
            AgentState::NotReady => "NotReady",
            AgentState::Ready => "Ready",
            AgentState::Reserved => "Reserved",
            AgentState::TalkingIn => "TalkingIn",
            AgentState::TalkingOut => "TalkingOut",
            AgentState::TalkingOther => "TalkingOther",
            AgentState::Hold => "Hold",
            AgentState::WorkReady => "WorkReady",
            AgentState::WorkNotReady => "WorkNotReady",
            AgentState::BusyOther => "BusyOther",
        }
    }
}

/// How abandoned calls affect the service level (ICM's ServiceLevelType).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ServiceLevelType {
    /// Type 1: calls abandoned within the threshold leave the calculation:
    /// `SL = answered_within / (offered - abandoned_within)`.
    #[default]
    IgnoreAbandoned = 1,
    /// Type 2: abandoned calls count against: `SL = answered_within / offered`.
    AbandonedCountAgainst = 2,
    /// Type 3: calls abandoned within the threshold count for:
    /// `SL = (answered_within + abandoned_within) / offered`.
    AbandonedCountFor = 3,
}
crate::encode_unit_enum!(ServiceLevelType {
    IgnoreAbandoned,
    AbandonedCountAgainst,
    AbandonedCountFor
});

/// What kind of network target a label is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum LabelKind {
    #[default]
    Normal = 0,
    Busy = 1,
    Ring = 2,
    Divert = 3,
}
crate::encode_unit_enum!(LabelKind {
    Normal,
    Busy,
    Ring,
    Divert
});
