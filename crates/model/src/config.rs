//! Configuration objects (the central DB's configuration tables) and the contact center that
//! holds them.
//!
//! Every object has a stable numeric id, and every reference between objects is checked, both
//! when a whole contact center is loaded ([`ContactCenter::validate`]) and when the router applies
//! a change (it uses the same [`ConfigObject::references`] and [`ConfigObject::check_own`]).

use crate::codec::{DecodeError, Encode, Reader};
use crate::domain::{LabelKind, ServiceLevelType};
use crate::ids::*;
use crate::script::Script;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// The most skill groups one agent may belong to. ICM designs assume at most 5; tandem allows more,
/// but each agent state change costs work in proportion to it, so it is bounded.
pub const SKILL_GROUPS_PER_AGENT_MAX: usize = 50;
/// The longest name, digits string or label string.
pub const CONFIG_STRING_BYTES_MAX: usize = 256;
/// The most operations one configuration change may carry.
pub const CONFIG_CHANGE_OPS_MAX: usize = 100_000;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("invalid TOML: {0}")]
    Toml(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pg {
    pub id: PgId,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peripheral {
    pub id: PeripheralId,
    pub name: String,
    pub pg: PgId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingClient {
    pub id: RoutingClientId,
    pub name: String,
    /// The PG that carries this routing client's requests and receives its answers.
    pub pg: PgId,
    /// How long the client waits for an answer before it uses its own default. The router
    /// answers with the default label `answer_margin_ms` before this.
    pub timeout_ms: u32,
    #[serde(default = "default_answer_margin_ms")]
    pub answer_margin_ms: u32,
    pub default_label: Option<LabelId>,
}

fn default_answer_margin_ms() -> u32 {
    200
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub peripheral: PeripheralId,
    /// The agent's login id on the peripheral (ICM's PeripheralNumber).
    pub peripheral_number: String,
    pub name: String,
    /// Where a call routed to this agent is sent when no label names the agent.
    pub extension: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillGroup {
    pub id: SkillGroupId,
    pub peripheral: PeripheralId,
    pub name: String,
    /// Calls answered within this many seconds are "within service level".
    #[serde(default = "default_service_level_threshold_s")]
    pub service_level_threshold_s: u32,
    #[serde(default)]
    pub service_level_type: ServiceLevelType,
    /// Calls abandoned within this many seconds are short calls: neither offered nor abandoned.
    #[serde(default)]
    pub abandon_short_call_threshold_s: u32,
}

fn default_service_level_threshold_s() -> u32 {
    20
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SkillGroupMember {
    pub agent: AgentId,
    pub skill_group: SkillGroupId,
}

impl SkillGroupMember {
    /// What a membership refers to. Memberships are most of a large configuration's objects,
    /// so their references are available without building a [`ConfigObject`].
    pub fn references(&self) -> [ObjectRef; 2] {
        [
            ObjectRef::Agent(self.agent),
            ObjectRef::SkillGroup(self.skill_group),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub peripheral: PeripheralId,
    pub name: String,
    #[serde(default = "default_service_level_threshold_s")]
    pub service_level_threshold_s: u32,
    #[serde(default)]
    pub service_level_type: ServiceLevelType,
    #[serde(default)]
    pub abandon_short_call_threshold_s: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceMember {
    pub service: ServiceId,
    pub skill_group: SkillGroupId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallType {
    pub id: CallTypeId,
    pub name: String,
    #[serde(default = "default_service_level_threshold_s")]
    pub service_level_threshold_s: u32,
    #[serde(default)]
    pub service_level_type: ServiceLevelType,
    #[serde(default)]
    pub abandon_short_call_threshold_s: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialedNumber {
    pub id: DialedNumberId,
    pub routing_client: RoutingClientId,
    pub digits: String,
    pub call_type: CallTypeId,
    /// Used when the script fails, ends without a target, or the client would time out.
    pub default_label: Option<LabelId>,
}

/// Maps a call type to a script, optionally only at some local times of day. The router takes
/// the first entry (by `priority`, then script id) whose window contains the call's local time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTypeMap {
    pub call_type: CallTypeId,
    pub script: ScriptId,
    #[serde(default)]
    pub priority: u16,
    /// Minutes since local midnight, `[from, to)`; absent means all day.
    #[serde(default)]
    pub from_minute: Option<u16>,
    #[serde(default)]
    pub to_minute: Option<u16>,
}

/// What a label routes to, when it routes to a skill target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum LabelTarget {
    Agent(AgentId),
    SkillGroup(SkillGroupId),
    Service(ServiceId),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub id: LabelId,
    pub routing_client: RoutingClientId,
    pub label: String,
    #[serde(default)]
    pub kind: LabelKind,
    #[serde(default)]
    pub target: Option<LabelTarget>,
}

/// Global settings of the contact center.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// IANA time zone for Today (midnight) and Half resets and time-of-day conditions.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Length of the historical interval (Skill_Group_Interval etc.): 5, 15 or 30 minutes.
    #[serde(default = "default_interval_minutes")]
    pub interval_minutes: u32,
    /// The state-size alarm limit in MB (ICM's default is 30).
    #[serde(default = "default_state_size_alarm_mb")]
    pub state_size_alarm_mb: u32,
    /// How long the router holds an agent it reserved for a routed call before releasing it.
    #[serde(default = "default_reservation_timeout_ms")]
    pub reservation_timeout_ms: u32,
}

fn default_time_zone() -> String {
    "UTC".into()
}
fn default_interval_minutes() -> u32 {
    30
}
fn default_state_size_alarm_mb() -> u32 {
    30
}
fn default_reservation_timeout_ms() -> u32 {
    10_000
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            time_zone: default_time_zone(),
            interval_minutes: default_interval_minutes(),
            state_size_alarm_mb: default_state_size_alarm_mb(),
            reservation_timeout_ms: default_reservation_timeout_ms(),
        }
    }
}

impl Settings {
    pub fn check(&self) -> Result<(), String> {
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!("unknown time zone {:?}", self.time_zone));
        }
        if ![5, 15, 30].contains(&self.interval_minutes) {
            return Err(format!(
                "interval_minutes is {}; it must be 5, 15 or 30",
                self.interval_minutes
            ));
        }
        if self.state_size_alarm_mb == 0 {
            return Err("state_size_alarm_mb must be positive".into());
        }
        if self.reservation_timeout_ms == 0 {
            return Err("reservation_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

/// A whole contact-center configuration, as written in TOML.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCenter {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default, rename = "pg")]
    pub pgs: Vec<Pg>,
    #[serde(default, rename = "peripheral")]
    pub peripherals: Vec<Peripheral>,
    #[serde(default, rename = "routing_client")]
    pub routing_clients: Vec<RoutingClient>,
    #[serde(default, rename = "agent")]
    pub agents: Vec<Agent>,
    #[serde(default, rename = "skill_group")]
    pub skill_groups: Vec<SkillGroup>,
    #[serde(default, rename = "skill_group_member")]
    pub skill_group_members: Vec<SkillGroupMember>,
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    #[serde(default, rename = "service_member")]
    pub service_members: Vec<ServiceMember>,
    #[serde(default, rename = "call_type")]
    pub call_types: Vec<CallType>,
    #[serde(default, rename = "dialed_number")]
    pub dialed_numbers: Vec<DialedNumber>,
    #[serde(default, rename = "script")]
    pub scripts: Vec<Script>,
    #[serde(default, rename = "call_type_map")]
    pub call_type_maps: Vec<CallTypeMap>,
    #[serde(default, rename = "label")]
    pub labels: Vec<Label>,
}

/// One configuration object of any kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum ConfigObject {
    Pg(Pg),
    Peripheral(Peripheral),
    RoutingClient(RoutingClient),
    Agent(Agent),
    SkillGroup(SkillGroup),
    SkillGroupMember(SkillGroupMember),
    Service(Service),
    ServiceMember(ServiceMember),
    CallType(CallType),
    DialedNumber(DialedNumber),
    Script(Script),
    CallTypeMap(CallTypeMap),
    Label(Label),
}

/// The identity of a configuration object: its table and key. Ordered, so it can key maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "table", content = "key", rename_all = "snake_case")]
pub enum ObjectRef {
    Pg(PgId),
    Peripheral(PeripheralId),
    RoutingClient(RoutingClientId),
    Agent(AgentId),
    SkillGroup(SkillGroupId),
    SkillGroupMember(AgentId, SkillGroupId),
    Service(ServiceId),
    ServiceMember(ServiceId, SkillGroupId),
    CallType(CallTypeId),
    DialedNumber(DialedNumberId),
    Script(ScriptId),
    CallTypeMap(CallTypeId, ScriptId),
    Label(LabelId),
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectRef::Pg(id) => write!(f, "PG {id}"),
            ObjectRef::Peripheral(id) => write!(f, "peripheral {id}"),
            ObjectRef::RoutingClient(id) => write!(f, "routing client {id}"),
            ObjectRef::Agent(id) => write!(f, "agent {id}"),
            ObjectRef::SkillGroup(id) => write!(f, "skill group {id}"),
            ObjectRef::SkillGroupMember(a, s) => {
                write!(f, "skill group member (agent {a}, skill group {s})")
            }
            ObjectRef::Service(id) => write!(f, "service {id}"),
            ObjectRef::ServiceMember(s, g) => {
                write!(f, "service member (service {s}, skill group {g})")
            }
            ObjectRef::CallType(id) => write!(f, "call type {id}"),
            ObjectRef::DialedNumber(id) => write!(f, "dialed number {id}"),
            ObjectRef::Script(id) => write!(f, "script {id}"),
            ObjectRef::CallTypeMap(c, s) => write!(f, "call type map (call type {c}, script {s})"),
            ObjectRef::Label(id) => write!(f, "label {id}"),
        }
    }
}

impl ConfigObject {
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            ConfigObject::Pg(o) => ObjectRef::Pg(o.id),
            ConfigObject::Peripheral(o) => ObjectRef::Peripheral(o.id),
            ConfigObject::RoutingClient(o) => ObjectRef::RoutingClient(o.id),
            ConfigObject::Agent(o) => ObjectRef::Agent(o.id),
            ConfigObject::SkillGroup(o) => ObjectRef::SkillGroup(o.id),
            ConfigObject::SkillGroupMember(o) => {
                ObjectRef::SkillGroupMember(o.agent, o.skill_group)
            }
            ConfigObject::Service(o) => ObjectRef::Service(o.id),
            ConfigObject::ServiceMember(o) => ObjectRef::ServiceMember(o.service, o.skill_group),
            ConfigObject::CallType(o) => ObjectRef::CallType(o.id),
            ConfigObject::DialedNumber(o) => ObjectRef::DialedNumber(o.id),
            ConfigObject::Script(o) => ObjectRef::Script(o.id),
            ConfigObject::CallTypeMap(o) => ObjectRef::CallTypeMap(o.call_type, o.script),
            ConfigObject::Label(o) => ObjectRef::Label(o.id),
        }
    }

    /// Every object this object refers to, deduplicated and sorted.
    pub fn references(&self) -> Vec<ObjectRef> {
        // Most objects name one or two others: a small vector, sorted once, allocates once.
        let mut refs = Vec::new();
        match self {
            ConfigObject::Pg(_) | ConfigObject::CallType(_) => {}
            ConfigObject::Peripheral(o) => {
                refs.push(ObjectRef::Pg(o.pg));
            }
            ConfigObject::RoutingClient(o) => {
                refs.push(ObjectRef::Pg(o.pg));
                // A routing client's default label names the client back; that cycle is fine and
                // is checked when the label exists, so it is not a reference here.
            }
            ConfigObject::Agent(o) => {
                refs.push(ObjectRef::Peripheral(o.peripheral));
            }
            ConfigObject::SkillGroup(o) => {
                refs.push(ObjectRef::Peripheral(o.peripheral));
            }
            ConfigObject::SkillGroupMember(o) => refs.extend(o.references()),
            ConfigObject::Service(o) => {
                refs.push(ObjectRef::Peripheral(o.peripheral));
            }
            ConfigObject::ServiceMember(o) => {
                refs.push(ObjectRef::Service(o.service));
                refs.push(ObjectRef::SkillGroup(o.skill_group));
            }
            ConfigObject::DialedNumber(o) => {
                refs.push(ObjectRef::RoutingClient(o.routing_client));
                refs.push(ObjectRef::CallType(o.call_type));
                if let Some(label) = o.default_label {
                    refs.push(ObjectRef::Label(label));
                }
            }
            ConfigObject::Script(o) => {
                use crate::script::{Condition, NodeKind};
                for node in &o.nodes {
                    match &node.kind {
                        NodeKind::Select { skill_groups, .. }
                        | NodeKind::Queue { skill_groups, .. } => {
                            refs.extend(skill_groups.iter().map(|s| ObjectRef::SkillGroup(*s)));
                        }
                        NodeKind::Label { labels } | NodeKind::Divert { labels } => {
                            refs.extend(labels.iter().map(|l| ObjectRef::Label(*l)));
                        }
                        NodeKind::If { condition, .. } => condition.visit(&mut |c| match c {
                            Condition::SkillGroupAvailableAtLeast { skill_group, .. }
                            | Condition::SkillGroupQueuedAtMost { skill_group, .. } => {
                                refs.push(ObjectRef::SkillGroup(*skill_group));
                            }
                            _ => {}
                        }),
                        _ => {}
                    }
                }
            }
            ConfigObject::CallTypeMap(o) => {
                refs.push(ObjectRef::CallType(o.call_type));
                refs.push(ObjectRef::Script(o.script));
            }
            ConfigObject::Label(o) => {
                refs.push(ObjectRef::RoutingClient(o.routing_client));
                match o.target {
                    Some(LabelTarget::Agent(a)) => refs.push(ObjectRef::Agent(a)),
                    Some(LabelTarget::SkillGroup(s)) => refs.push(ObjectRef::SkillGroup(s)),
                    Some(LabelTarget::Service(s)) => refs.push(ObjectRef::Service(s)),
                    None => {}
                }
            }
        }
        refs.sort_unstable();
        refs.dedup();
        refs
    }

    /// Checks what an object can be checked for on its own: string lengths, value ranges, script
    /// graph shape. References are checked by the caller against the rest of the configuration.
    pub fn check_own(&self) -> Result<(), String> {
        let what = self.object_ref();
        let strings: &[&str] = match self {
            ConfigObject::Pg(o) => &[&o.name],
            ConfigObject::Peripheral(o) => &[&o.name],
            ConfigObject::RoutingClient(o) => &[&o.name],
            ConfigObject::Agent(o) => &[&o.name, &o.peripheral_number, &o.extension],
            ConfigObject::SkillGroup(o) => &[&o.name],
            ConfigObject::Service(o) => &[&o.name],
            ConfigObject::CallType(o) => &[&o.name],
            ConfigObject::DialedNumber(o) => &[&o.digits],
            ConfigObject::Script(o) => &[&o.name],
            ConfigObject::Label(o) => &[&o.label],
            ConfigObject::SkillGroupMember(_)
            | ConfigObject::ServiceMember(_)
            | ConfigObject::CallTypeMap(_) => &[],
        };
        if let Some(long) = strings.iter().find(|s| s.len() > CONFIG_STRING_BYTES_MAX) {
            return Err(format!(
                "{what}: a string of {} bytes exceeds the limit of {CONFIG_STRING_BYTES_MAX}",
                long.len()
            ));
        }
        match self {
            ConfigObject::RoutingClient(o) if o.timeout_ms == 0 || o.answer_margin_ms >= o.timeout_ms => {
                Err(format!(
                    "{what}: timeout_ms ({}) must be positive and greater than answer_margin_ms ({})",
                    o.timeout_ms, o.answer_margin_ms
                ))
            }
            ConfigObject::DialedNumber(o) if o.digits.is_empty() => {
                Err(format!("{what}: digits must not be empty"))
            }
            ConfigObject::Script(o) => o.check_graph(),
            ConfigObject::CallTypeMap(o) => match (o.from_minute, o.to_minute) {
                (None, None) => Ok(()),
                (Some(from), Some(to)) if from < 1440 && to <= 1440 && from != to => Ok(()),
                _ => Err(format!(
                    "{what}: from_minute and to_minute must both be given, differ, and lie within 0..=1440"
                )),
            },
            _ => Ok(()),
        }
    }
}

/// One operation of a configuration change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "object", rename_all = "snake_case")]
pub enum ConfigOp {
    /// Adds the object, or replaces the object with the same key.
    Upsert(ConfigObject),
    Delete(ObjectRef),
}

/// Which configuration a database or a router holds: the dense version and the RecoveryKey of
/// the ordered change that made it (0 for a configuration loaded whole, from a file or a
/// database seeded from one). The version alone does not name a configuration: two histories
/// may number different changes alike (an isolated side's, abandoned when the other side took
/// over without it).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ConfigStamp {
    pub version: u64,
    pub recovery_key: u64,
}

impl std::fmt::Display for ConfigStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "version {} (change {})", self.version, self.recovery_key)
    }
}

/// A configuration change: applied whole or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub ops: Vec<ConfigOp>,
    /// Who made the change, as the side that ordered it established: the certificate that
    /// sent it and, through a distributor, the token's holder. Recorded in the event log.
    /// (No `skip_serializing_if`: the change travels in postcard, which is not
    /// self-describing.)
    #[serde(default)]
    pub author: String,
}

impl ContactCenter {
    pub fn from_toml_str(text: &str) -> Result<ContactCenter, ConfigError> {
        let cc: ContactCenter =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        cc.validate()?;
        Ok(cc)
    }

    pub fn load(path: &std::path::Path) -> Result<ContactCenter, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text)
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a contact center always serializes to TOML")
    }

    /// Every object, in dependency order (an object comes after what it refers to, except labels
    /// named as defaults, which the router checks once the whole change is in place).
    pub fn objects(&self) -> impl Iterator<Item = ConfigObject> + '_ {
        let pgs = self.pgs.iter().cloned().map(ConfigObject::Pg);
        let peripherals = self
            .peripherals
            .iter()
            .cloned()
            .map(ConfigObject::Peripheral);
        let clients = self
            .routing_clients
            .iter()
            .cloned()
            .map(ConfigObject::RoutingClient);
        let agents = self.agents.iter().cloned().map(ConfigObject::Agent);
        let groups = self
            .skill_groups
            .iter()
            .cloned()
            .map(ConfigObject::SkillGroup);
        let members = self
            .skill_group_members
            .iter()
            .cloned()
            .map(ConfigObject::SkillGroupMember);
        let services = self.services.iter().cloned().map(ConfigObject::Service);
        let service_members = self
            .service_members
            .iter()
            .cloned()
            .map(ConfigObject::ServiceMember);
        let call_types = self.call_types.iter().cloned().map(ConfigObject::CallType);
        let labels = self.labels.iter().cloned().map(ConfigObject::Label);
        let dialed = self
            .dialed_numbers
            .iter()
            .cloned()
            .map(ConfigObject::DialedNumber);
        let scripts = self.scripts.iter().cloned().map(ConfigObject::Script);
        let maps = self
            .call_type_maps
            .iter()
            .cloned()
            .map(ConfigObject::CallTypeMap);
        pgs.chain(peripherals)
            .chain(clients)
            .chain(agents)
            .chain(groups)
            .chain(members)
            .chain(services)
            .chain(service_members)
            .chain(call_types)
            .chain(labels)
            .chain(dialed)
            .chain(scripts)
            .chain(maps)
    }

    /// The whole contact center as one change that creates it from nothing.
    pub fn to_change(&self) -> ConfigChange {
        ConfigChange {
            ops: self.objects().map(ConfigOp::Upsert).collect(),
            author: String::new(),
        }
    }

    /// Checks every object and every reference; the first problem is reported, naming the object.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::Invalid;
        self.settings
            .check()
            .map_err(|e| invalid(format!("settings: {e}")))?;
        // A topology needs a PG for the split-brain guard, and a router needs something to
        // route for; an empty file is a mistake, not a contact center.
        if self.pgs.is_empty() {
            return Err(invalid("a contact center needs at least one PG".into()));
        }
        let mut known: BTreeMap<ObjectRef, ()> = BTreeMap::new();
        for object in self.objects() {
            let key = object.object_ref();
            if known.insert(key, ()).is_some() {
                return Err(invalid(format!("duplicate {key}")));
            }
        }
        // The cross-object rules the router enforces on a change, so that a configuration that
        // validates always builds a router.
        let agent_peripheral: BTreeMap<AgentId, PeripheralId> =
            self.agents.iter().map(|a| (a.id, a.peripheral)).collect();
        let group_peripheral: BTreeMap<SkillGroupId, PeripheralId> = self
            .skill_groups
            .iter()
            .map(|g| (g.id, g.peripheral))
            .collect();
        let label_client: BTreeMap<LabelId, RoutingClientId> = self
            .labels
            .iter()
            .map(|l| (l.id, l.routing_client))
            .collect();
        let mut member_count: BTreeMap<AgentId, usize> = BTreeMap::new();
        let mut digits: BTreeMap<(RoutingClientId, &str), DialedNumberId> = BTreeMap::new();
        for object in self.objects() {
            object.check_own().map_err(invalid)?;
            let key = object.object_ref();
            for reference in object.references() {
                if !known.contains_key(&reference) {
                    return Err(invalid(format!("{key} refers to unknown {reference}")));
                }
            }
            match &object {
                ConfigObject::SkillGroupMember(m) => {
                    let (agent_on, group_on) = (
                        agent_peripheral.get(&m.agent),
                        group_peripheral.get(&m.skill_group),
                    );
                    if let (Some(agent_on), Some(group_on)) = (agent_on, group_on) {
                        if agent_on != group_on {
                            return Err(invalid(format!(
                                "agent {} is on peripheral {agent_on} but skill group {} is on peripheral {group_on}",
                                m.agent, m.skill_group
                            )));
                        }
                    }
                    let count = member_count.entry(m.agent).or_default();
                    *count += 1;
                    if *count > SKILL_GROUPS_PER_AGENT_MAX {
                        return Err(invalid(format!(
                            "agent {} is in more than {SKILL_GROUPS_PER_AGENT_MAX} skill groups",
                            m.agent
                        )));
                    }
                }
                ConfigObject::RoutingClient(rc) => {
                    if let Some(label) = rc.default_label {
                        match label_client.get(&label) {
                            None => {
                                return Err(invalid(format!(
                                    "{key} refers to unknown label {label}"
                                )))
                            }
                            Some(client) if *client != rc.id => {
                                return Err(invalid(format!(
                                "{key}: default label {label} belongs to routing client {client}"
                            )))
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => {}
            }
        }
        for dn in &self.dialed_numbers {
            if let Some(other) = digits.insert((dn.routing_client, dn.digits.as_str()), dn.id) {
                return Err(invalid(format!(
                    "dialed number {} repeats digits {:?} of dialed number {other} on routing client {}",
                    dn.id, dn.digits, dn.routing_client
                )));
            }
        }
        Ok(())
    }
}

// State-record encodings of configuration objects.

crate::encode_struct!(Pg { id, name });
crate::encode_struct!(Peripheral { id, name, pg });
crate::encode_struct!(RoutingClient {
    id,
    name,
    pg,
    timeout_ms,
    answer_margin_ms,
    default_label
});
crate::encode_struct!(Agent {
    id,
    peripheral,
    peripheral_number,
    name,
    extension
});
crate::encode_struct!(SkillGroup {
    id,
    peripheral,
    name,
    service_level_threshold_s,
    service_level_type,
    abandon_short_call_threshold_s
});
crate::encode_struct!(fixed SkillGroupMember { agent: AgentId, skill_group: SkillGroupId });
crate::encode_struct!(Service {
    id,
    peripheral,
    name,
    service_level_threshold_s,
    service_level_type,
    abandon_short_call_threshold_s
});
crate::encode_struct!(fixed ServiceMember { service: ServiceId, skill_group: SkillGroupId });
crate::encode_struct!(CallType {
    id,
    name,
    service_level_threshold_s,
    service_level_type,
    abandon_short_call_threshold_s
});
crate::encode_struct!(DialedNumber {
    id,
    routing_client,
    digits,
    call_type,
    default_label
});
crate::encode_struct!(CallTypeMap {
    call_type,
    script,
    priority,
    from_minute,
    to_minute
});
crate::encode_struct!(Label {
    id,
    routing_client,
    label,
    kind,
    target
});
crate::encode_struct!(Settings {
    time_zone,
    interval_minutes,
    state_size_alarm_mb,
    reservation_timeout_ms
});

impl Default for LabelTarget {
    fn default() -> Self {
        LabelTarget::Agent(AgentId(0))
    }
}

impl Encode for LabelTarget {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        let (tag, id) = match self {
            LabelTarget::Agent(a) => (0u8, a.0),
            LabelTarget::SkillGroup(s) => (1, s.0),
            LabelTarget::Service(s) => (2, s.0),
        };
        out.push(tag);
        id.encode(out);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        5
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = u8::decode(reader)?;
        let id = u32::decode(reader)?;
        match tag {
            0 => Ok(LabelTarget::Agent(AgentId(id))),
            1 => Ok(LabelTarget::SkillGroup(SkillGroupId(id))),
            2 => Ok(LabelTarget::Service(ServiceId(id))),
            tag => Err(DecodeError::InvalidTag {
                type_name: "LabelTarget",
                tag: tag as u32,
            }),
        }
    }
}
impl crate::codec::FixedLen for LabelTarget {
    const LEN: usize = 5;
}

impl Default for ObjectRef {
    fn default() -> Self {
        ObjectRef::Pg(PgId(0))
    }
}

/// An object reference is a table tag and two ids (the second is zero for single-id keys), so it
/// has a fixed length.
impl Encode for ObjectRef {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        let (tag, a, b): (u8, u32, u32) = match *self {
            ObjectRef::Pg(id) => (0, id.0, 0),
            ObjectRef::Peripheral(id) => (1, id.0, 0),
            ObjectRef::RoutingClient(id) => (2, id.0, 0),
            ObjectRef::Agent(id) => (3, id.0, 0),
            ObjectRef::SkillGroup(id) => (4, id.0, 0),
            ObjectRef::SkillGroupMember(a, s) => (5, a.0, s.0),
            ObjectRef::Service(id) => (6, id.0, 0),
            ObjectRef::ServiceMember(s, g) => (7, s.0, g.0),
            ObjectRef::CallType(id) => (8, id.0, 0),
            ObjectRef::DialedNumber(id) => (9, id.0, 0),
            ObjectRef::Script(id) => (10, id.0, 0),
            ObjectRef::CallTypeMap(c, s) => (11, c.0, s.0),
            ObjectRef::Label(id) => (12, id.0, 0),
        };
        out.push(tag);
        a.encode(out);
        b.encode(out);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        9
    }
    #[inline]
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = u8::decode(reader)?;
        let a = u32::decode(reader)?;
        let b = u32::decode(reader)?;
        let single = |r: ObjectRef| {
            if b == 0 {
                Ok(r)
            } else {
                Err(DecodeError::Invalid(
                    "non-zero second id in a single-id reference",
                ))
            }
        };
        match tag {
            0 => single(ObjectRef::Pg(PgId(a))),
            1 => single(ObjectRef::Peripheral(PeripheralId(a))),
            2 => single(ObjectRef::RoutingClient(RoutingClientId(a))),
            3 => single(ObjectRef::Agent(AgentId(a))),
            4 => single(ObjectRef::SkillGroup(SkillGroupId(a))),
            5 => Ok(ObjectRef::SkillGroupMember(AgentId(a), SkillGroupId(b))),
            6 => single(ObjectRef::Service(ServiceId(a))),
            7 => Ok(ObjectRef::ServiceMember(ServiceId(a), SkillGroupId(b))),
            8 => single(ObjectRef::CallType(CallTypeId(a))),
            9 => single(ObjectRef::DialedNumber(DialedNumberId(a))),
            10 => single(ObjectRef::Script(ScriptId(a))),
            11 => Ok(ObjectRef::CallTypeMap(CallTypeId(a), ScriptId(b))),
            12 => single(ObjectRef::Label(LabelId(a))),
            tag => Err(DecodeError::InvalidTag {
                type_name: "ObjectRef",
                tag: tag as u32,
            }),
        }
    }
}
impl crate::codec::FixedLen for ObjectRef {
    const LEN: usize = 9;
}
