//! Random configuration changes (objects of every kind, with ids and references scrambled; about a
//! fifth of them valid and accepted) never
//! panic the router, never break an invariant, and move the configuration version by exactly one
//! when, and only when, they are accepted.

mod common;
use common::*;
use proptest::prelude::*;
use tandem_model::config::{ConfigChange, ConfigObject, ConfigOp};
use tandem_model::domain::AgentState;
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;
use tandem_model::script::NodeKind;
use tandem_router::Router;

/// An object of the example configuration with one id or reference replaced by `value` (small
/// values often hit existing objects, so changes are accepted as well as rejected).
fn scramble(object: &ConfigObject, field: u8, value: u32) -> ConfigObject {
    let mut o = object.clone();
    match &mut o {
        ConfigObject::Pg(x) => x.id.0 = value,
        ConfigObject::Peripheral(x) => {
            if field.is_multiple_of(2) {
                x.id.0 = value
            } else {
                x.pg.0 = value
            }
        }
        ConfigObject::RoutingClient(x) => match field % 3 {
            0 => x.id.0 = value,
            1 => x.default_label = Some(tandem_model::LabelId(value)),
            _ => x.timeout_ms = value % 10_000,
        },
        ConfigObject::Agent(x) => {
            if field.is_multiple_of(2) {
                x.id.0 = value
            } else {
                x.peripheral.0 = value
            }
        }
        ConfigObject::SkillGroup(x) => {
            if field.is_multiple_of(2) {
                x.id.0 = value
            } else {
                x.peripheral.0 = value
            }
        }
        ConfigObject::SkillGroupMember(x) => {
            if field.is_multiple_of(2) {
                x.agent.0 = value
            } else {
                x.skill_group.0 = value
            }
        }
        ConfigObject::Service(x) => x.id.0 = value,
        ConfigObject::ServiceMember(x) => x.skill_group.0 = value,
        ConfigObject::CallType(x) => x.id.0 = value,
        ConfigObject::DialedNumber(x) => match field % 3 {
            0 => x.id.0 = value,
            1 => x.call_type.0 = value,
            _ => x.digits = format!("{}", value % 3),
        },
        ConfigObject::Script(x) => {
            if let Some(node) = x
                .nodes
                .iter_mut()
                .find(|n| matches!(n.kind, NodeKind::Select { .. } | NodeKind::Queue { .. }))
            {
                match &mut node.kind {
                    NodeKind::Select { skill_groups, .. }
                    | NodeKind::Queue { skill_groups, .. } => skill_groups[0].0 = value,
                    _ => {}
                }
            } else {
                x.id.0 = value;
            }
        }
        ConfigObject::CallTypeMap(x) => x.script.0 = value,
        ConfigObject::Label(x) => {
            if field.is_multiple_of(2) {
                x.id.0 = value
            } else {
                x.routing_client.0 = value
            }
        }
    }
    o
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..3, 1u32..1_200, any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_configuration_changes_are_atomic_and_safe(
        changes in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>(), any::<u8>(), proptest::option::weighted(0.6, value())), 1..4),
            1..25,
        )
    ) {
        let cc = contact_center(script_with(NodeKind::Select { rule: tandem_model::script::SelectRule::Homing, skill_groups: vec![SG1, SG2], none_next: 9 }));
        let objects: Vec<ConfigObject> = cc.objects().collect();
        let mut router = Router::from_contact_center(&cc, T0).unwrap();
        let mut seq = 0;
        let mut apply = |router: &mut Router, input: Input| {
            seq += 1;
            router.apply(seq, &OrderedInput { time_ms: T0 + seq * 10, input })
        };
        apply(&mut router, Input::PeripheralOnline { peripheral: PERIPHERAL });
        apply(&mut router, Input::AgentLogin { agent: A1, state: AgentState::Ready, reason_code: 0 });
        apply(&mut router, Input::AgentLogin { agent: A4, state: AgentState::NotReady, reason_code: 2 });
        for ops in changes {
            let ops: Vec<ConfigOp> = ops
                .into_iter()
                .map(|(delete, index, field, v)| {
                    let original = index.get(&objects);
                    let object = match v {
                        Some(v) => scramble(original, field, v),
                        None => original.clone(),
                    };
                    if delete { ConfigOp::Delete(object.object_ref()) } else { ConfigOp::Upsert(object) }
                })
                .collect();
            let version = router.config_version();
            let out = apply(&mut router, Input::ConfigChange(ConfigChange { ops, ..Default::default() }));
            let accepted = out.iter().any(|o| matches!(o, Output::ConfigResult { error: None, .. }));
            prop_assert_eq!(router.config_version(), version + accepted as u64);
            if let Err(e) = router.check_invariants() {
                panic!("invariant broken after a configuration change: {e}");
            }
            // Routing still works (or defaults) whatever the configuration became.
            let request_id = router.last_seq();
            apply(&mut router, Input::RouteRequest(tandem_model::RouteRequest {
                key: key(request_id), dialed_number: DIGITS.into(), ani: String::new(), caller_entered_digits: String::new(), call_variables: vec![],
            }));
            prop_assert!(router.check_invariants().is_ok());
        }
    }
}
