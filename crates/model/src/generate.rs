//! A generator of synthetic contact centers, from the 200-agent example to 100,000 agents.
//!
//! The output is a deterministic function of the parameters (including the seed), so benchmarks
//! and tests can name a configuration by its parameters alone.

use crate::config::*;
use crate::domain::{LabelKind, ServiceLevelType};
use crate::ids::*;
use crate::script::{Branch, Condition, Node, NodeKind, Script, SelectRule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub agents: u32,
    pub skill_groups: u32,
    pub call_types: u32,
    pub peripherals: u32,
    /// The most skill groups an agent belongs to (each agent gets 1..=this).
    pub skill_groups_per_agent_max: u32,
    pub time_zone: String,
    pub seed: u64,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            agents: 200,
            skill_groups: 20,
            call_types: 10,
            peripherals: 2,
            skill_groups_per_agent_max: 3,
            time_zone: "UTC".into(),
            seed: 1,
        }
    }
}

/// The first id of each kind; distinct ranges make ids in logs easy to tell apart.
pub const AGENT_ID_BASE: u32 = 100_000;
pub const SKILL_GROUP_ID_BASE: u32 = 10_000;
pub const SERVICE_ID_BASE: u32 = 20_000;
pub const CALL_TYPE_ID_BASE: u32 = 1_000;
pub const DIALED_NUMBER_ID_BASE: u32 = 30_000;
pub const SCRIPT_ID_BASE: u32 = 40_000;
pub const LABEL_ID_BASE: u32 = 50_000;

/// The digits of call type `index`'s dialed number.
pub fn dialed_number_digits(index: u32) -> String {
    format!("800{:07}", index)
}

/// Generates a contact center. Panics only on parameters no caller should pass (zero counts).
pub fn generate(params: &GenerateParams) -> ContactCenter {
    assert!(params.agents > 0 && params.skill_groups > 0 && params.call_types > 0);
    assert!(params.peripherals > 0 && params.peripherals <= params.skill_groups);
    assert!(params.skill_groups_per_agent_max > 0);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut cc = ContactCenter {
        settings: Settings {
            time_zone: params.time_zone.clone(),
            ..Settings::default()
        },
        ..ContactCenter::default()
    };

    // One PG per peripheral, each with a post-route routing client.
    for p in 0..params.peripherals {
        let pg = PgId(p + 1);
        cc.pgs.push(Pg {
            id: pg,
            name: format!("PG{}", p + 1),
        });
        cc.peripherals.push(Peripheral {
            id: PeripheralId(5000 + p),
            name: format!("ACD{}", p + 1),
            pg,
        });
        let rc = RoutingClientId(p + 1);
        let default_label = LabelId(LABEL_ID_BASE + p * 10);
        cc.routing_clients.push(RoutingClient {
            id: rc,
            name: format!("PG{}_PostRoute", p + 1),
            pg,
            timeout_ms: 5_000,
            answer_margin_ms: 200,
            default_label: Some(default_label),
        });
        cc.labels.push(Label {
            id: default_label,
            routing_client: rc,
            label: format!("7{}000", p + 1),
            kind: LabelKind::Normal,
            target: None,
        });
        cc.labels.push(Label {
            id: LabelId(default_label.0 + 1),
            routing_client: rc,
            label: String::new(),
            kind: LabelKind::Busy,
            target: None,
        });
        cc.labels.push(Label {
            id: LabelId(default_label.0 + 2),
            routing_client: rc,
            label: format!("7{}999", p + 1),
            kind: LabelKind::Divert,
            target: None,
        });
    }
    let peripheral_of_group = |g: u32| PeripheralId(5000 + g % params.peripherals);

    let group_names = [
        "Sales",
        "Support",
        "Billing",
        "Claims",
        "Retention",
        "Premier",
        "Spanish",
        "Tech",
    ];
    for g in 0..params.skill_groups {
        let sl_type = match g % 3 {
            0 => ServiceLevelType::IgnoreAbandoned,
            1 => ServiceLevelType::AbandonedCountAgainst,
            _ => ServiceLevelType::AbandonedCountFor,
        };
        cc.skill_groups.push(SkillGroup {
            id: SkillGroupId(SKILL_GROUP_ID_BASE + g),
            peripheral: peripheral_of_group(g),
            name: format!("{}_{}", group_names[g as usize % group_names.len()], g + 1),
            service_level_threshold_s: [20, 30, 60][g as usize % 3],
            service_level_type: sl_type,
            abandon_short_call_threshold_s: 5,
        });
    }

    // Services group four skill groups of one peripheral each.
    let services = params.skill_groups.div_ceil(4);
    for s in 0..services {
        let service = ServiceId(SERVICE_ID_BASE + s);
        let first = s * 4;
        cc.services.push(Service {
            id: service,
            peripheral: peripheral_of_group(first),
            name: format!("Service_{}", s + 1),
            service_level_threshold_s: 30,
            service_level_type: ServiceLevelType::IgnoreAbandoned,
            abandon_short_call_threshold_s: 5,
        });
        for g in (first..(first + 4).min(params.skill_groups)).step_by(params.peripherals as usize)
        {
            if peripheral_of_group(g) == peripheral_of_group(first) {
                cc.service_members.push(ServiceMember {
                    service,
                    skill_group: SkillGroupId(SKILL_GROUP_ID_BASE + g),
                });
            }
        }
    }

    // Agents: each on one peripheral, in 1..=max skill groups of that peripheral. The primary
    // group spreads agents evenly; the others are drawn near it, so groups overlap realistically.
    let groups_per_peripheral = params.skill_groups / params.peripherals;
    for a in 0..params.agents {
        let agent = AgentId(AGENT_ID_BASE + a);
        let primary = a % params.skill_groups;
        let peripheral = peripheral_of_group(primary);
        cc.agents.push(Agent {
            id: agent,
            peripheral,
            peripheral_number: format!("{}", 10_000 + a),
            name: format!("Agent {}", a + 1),
            extension: format!("{}", 20_000 + a),
        });
        let count = rng
            .random_range(1..=params.skill_groups_per_agent_max)
            .min(groups_per_peripheral.max(1));
        let mut groups = vec![primary];
        let mut step = 1;
        while groups.len() < count as usize && step < params.skill_groups {
            // Groups of the same peripheral are `peripherals` apart.
            let candidate = (primary + step * params.peripherals) % params.skill_groups;
            if peripheral_of_group(candidate) == peripheral && !groups.contains(&candidate) {
                groups.push(candidate);
            }
            step += rng.random_range(1..=3);
        }
        groups.sort_unstable();
        for g in groups {
            cc.skill_group_members.push(SkillGroupMember {
                agent,
                skill_group: SkillGroupId(SKILL_GROUP_ID_BASE + g),
            });
        }
    }

    // Call types, each with a dialed number on one routing client and a script.
    let call_type_names = ["Sales", "Support", "Billing", "Claims", "Account", "Outage"];
    for c in 0..params.call_types {
        let call_type = CallTypeId(CALL_TYPE_ID_BASE + c);
        cc.call_types.push(CallType {
            id: call_type,
            name: format!(
                "CT_{}_{}",
                call_type_names[c as usize % call_type_names.len()],
                c + 1
            ),
            service_level_threshold_s: 30,
            service_level_type: ServiceLevelType::IgnoreAbandoned,
            abandon_short_call_threshold_s: 5,
        });
        let p = c % params.peripherals;
        let rc = RoutingClientId(p + 1);
        cc.dialed_numbers.push(DialedNumber {
            id: DialedNumberId(DIALED_NUMBER_ID_BASE + c),
            routing_client: rc,
            digits: dialed_number_digits(c),
            call_type,
            default_label: Some(LabelId(LABEL_ID_BASE + p * 10)),
        });
        // The call type's skill groups: a run of the peripheral's groups, so that together the
        // call types of a peripheral cover every one of its groups (and every agent gets calls).
        let call_types_here = params.call_types.div_ceil(params.peripherals);
        let span = groups_per_peripheral
            .div_ceil(call_types_here)
            .clamp(2, 8)
            .min(groups_per_peripheral.max(1));
        let start =
            (c / params.peripherals) * groups_per_peripheral.max(1) / call_types_here.max(1);
        let groups: Vec<SkillGroupId> = (0..span)
            .map(|i| {
                let index_in_peripheral = (start + i) % groups_per_peripheral.max(1);
                SkillGroupId(SKILL_GROUP_ID_BASE + p + index_in_peripheral * params.peripherals)
            })
            .collect();
        let script = ScriptId(SCRIPT_ID_BASE + c);
        let divert = LabelId(LABEL_ID_BASE + p * 10 + 2);
        cc.scripts.push(Script {
            id: script,
            name: format!("Route_{}", c + 1),
            version: 1,
            nodes: script_template(c % 3, &groups, divert),
        });
        cc.call_type_maps.push(CallTypeMap {
            call_type,
            script,
            priority: 0,
            from_minute: None,
            to_minute: None,
        });
    }
    debug_assert!(cc.validate().is_ok(), "{:?}", cc.validate());
    cc
}

/// Three script shapes over the call type's skill groups. Template 0 is the five-node script the
/// route benchmark measures: Start -> If (an agent available in the first group?) -> Select LAA
/// (all groups) -> Queue (all groups) -> Default.
fn script_template(template: u32, groups: &[SkillGroupId], divert: LabelId) -> Vec<Node> {
    let node = |id, kind| Node { id, kind };
    let a = groups[0];
    let half = groups.len().div_ceil(2);
    let (first_half, second_half) = (groups[..half].to_vec(), groups[half..].to_vec());
    let second_half = if second_half.is_empty() {
        first_half.clone()
    } else {
        second_half
    };
    match template {
        0 => vec![
            node(0, NodeKind::Start { next: 1 }),
            node(
                1,
                NodeKind::If {
                    condition: Condition::SkillGroupAvailableAtLeast {
                        skill_group: a,
                        count: 1,
                    },
                    then_next: 2,
                    else_next: 3,
                },
            ),
            node(
                2,
                NodeKind::Select {
                    rule: SelectRule::LongestAvailable,
                    skill_groups: groups.to_vec(),
                    none_next: 3,
                },
            ),
            node(
                3,
                NodeKind::Queue {
                    skill_groups: groups.to_vec(),
                    priority: 5,
                    timeout_s: 180,
                    timeout_next: 4,
                },
            ),
            node(4, NodeKind::Default),
        ],
        1 => vec![
            node(0, NodeKind::Start { next: 1 }),
            node(
                1,
                NodeKind::PercentAllocation {
                    branches: vec![
                        Branch {
                            weight: 70,
                            next: 2,
                        },
                        Branch {
                            weight: 30,
                            next: 3,
                        },
                    ],
                },
            ),
            node(
                2,
                NodeKind::Queue {
                    skill_groups: first_half.clone(),
                    priority: 5,
                    timeout_s: 120,
                    timeout_next: 3,
                },
            ),
            node(
                3,
                NodeKind::Queue {
                    skill_groups: second_half.clone(),
                    priority: 4,
                    timeout_s: 120,
                    timeout_next: 4,
                },
            ),
            node(
                4,
                NodeKind::Divert {
                    labels: vec![divert],
                },
            ),
        ],
        _ => vec![
            node(0, NodeKind::Start { next: 1 }),
            node(
                1,
                NodeKind::If {
                    condition: Condition::CallVariableEquals {
                        index: 1,
                        value: "vip".into(),
                    },
                    then_next: 2,
                    else_next: 3,
                },
            ),
            node(
                2,
                NodeKind::Queue {
                    skill_groups: groups.to_vec(),
                    priority: 1,
                    timeout_s: 300,
                    timeout_next: 5,
                },
            ),
            node(
                3,
                NodeKind::Select {
                    rule: SelectRule::MinimumExpectedDelay,
                    skill_groups: groups.to_vec(),
                    none_next: 4,
                },
            ),
            node(
                4,
                NodeKind::Queue {
                    skill_groups: groups.to_vec(),
                    priority: 5,
                    timeout_s: 180,
                    timeout_next: 5,
                },
            ),
            node(5, NodeKind::Default),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configuration_is_valid_and_deterministic() {
        let params = GenerateParams::default();
        let cc = generate(&params);
        cc.validate().unwrap();
        assert_eq!(cc.agents.len(), 200);
        assert_eq!(cc.skill_groups.len(), 20);
        assert_eq!(cc.call_types.len(), 10);
        assert_eq!(cc, generate(&params));
    }

    #[test]
    fn toml_round_trip() {
        let cc = generate(&GenerateParams::default());
        let text = cc.to_toml_string();
        assert_eq!(ContactCenter::from_toml_str(&text).unwrap(), cc);
    }

    #[test]
    fn call_types_cover_every_skill_group() {
        for (agents, groups, call_types, peripherals) in [
            (200, 20, 10, 2),
            (100_000, 5_000, 1_000, 10),
            (1_000, 50, 10, 10),
        ] {
            let cc = generate(&GenerateParams {
                agents,
                skill_groups: groups,
                call_types,
                peripherals,
                skill_groups_per_agent_max: 5,
                ..Default::default()
            });
            let mut covered = std::collections::BTreeSet::new();
            for script in &cc.scripts {
                for node in &script.nodes {
                    if let NodeKind::Queue { skill_groups, .. } = &node.kind {
                        covered.extend(skill_groups.iter().copied());
                    }
                }
            }
            assert_eq!(
                covered.len(),
                groups as usize,
                "{agents} agents, {groups} groups"
            );
        }
    }

    #[test]
    fn larger_configurations_are_valid() {
        let cc = generate(&GenerateParams {
            agents: 5_000,
            skill_groups: 250,
            call_types: 50,
            peripherals: 5,
            skill_groups_per_agent_max: 5,
            ..GenerateParams::default()
        });
        cc.validate().unwrap();
        assert!(cc.skill_group_members.len() > 5_000);
    }
}
