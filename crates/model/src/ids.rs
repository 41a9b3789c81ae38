//! Stable numeric identifiers of configuration objects (ICM's SkillTargetID and friends).
//!
//! Each object kind has its own id type so that a skill group id can never be passed where an
//! agent id is meant. Ids are chosen by the configuration's author and never reused by tandem.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);
        $crate::encode_newtype!($name(u32));
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A peripheral gateway (one PG serves one or more peripherals).
    PgId
);
id_type!(
    /// A peripheral: an ACD or IP switch that hosts agents and calls.
    PeripheralId
);
id_type!(
    /// A routing client: the source of route requests (a carrier network or a PG's post-route).
    RoutingClientId
);
id_type!(
    /// An agent's SkillTargetID.
    AgentId
);
id_type!(
    /// A skill group's SkillTargetID.
    SkillGroupId
);
id_type!(
    /// A service's SkillTargetID.
    ServiceId
);
id_type!(
    /// A call type.
    CallTypeId
);
id_type!(
    /// A dialed number.
    DialedNumberId
);
id_type!(
    /// A routing script (its versions share the id).
    ScriptId
);
id_type!(
    /// A label: what a routing client is told to do with a call.
    LabelId
);

/// The router's own key for a routed call (ICM's RouterCallKey; unique per router lifetime).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RouterCallKey(pub u64);
crate::encode_newtype!(RouterCallKey(u64));

/// A call at a peripheral: the peripheral and the peripheral's own call id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PeripheralCallKey {
    pub peripheral: PeripheralId,
    pub call_id: u64,
}
crate::encode_struct!(fixed PeripheralCallKey { peripheral: PeripheralId, call_id: u64 });

/// What identifies a route request for idempotency: a repeat of the same key gets the same answer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RouteRequestKey {
    pub routing_client: RoutingClientId,
    /// Changes each time the PG restarts, so that request ids may restart from zero.
    pub pg_incarnation: u32,
    pub request_id: u64,
}
crate::encode_struct!(fixed RouteRequestKey {
    routing_client: RoutingClientId,
    pg_incarnation: u32,
    request_id: u64,
});
