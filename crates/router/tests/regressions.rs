//! One test per defect found in review, each a sequence that once broke the router.

mod common;
use common::*;
use tandem_model::config::*;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::{Input, OrderedInput, RouteEndReason};
use tandem_model::output::{EventCode, Output};
use tandem_model::script::{Branch, NodeKind, SelectRule};
use tandem_router::records::{export, import};
use tandem_router::Router;

fn queue_script() -> Vec<tandem_model::script::Node> {
    script_with(NodeKind::Queue {
        skill_groups: vec![SG1],
        priority: 5,
        timeout_s: 60,
        timeout_next: 9,
    })
}

fn change(ops: Vec<ConfigOp>) -> Input {
    Input::ConfigChange(ConfigChange {
        ops,
        ..Default::default()
    })
}

fn config_error(out: &[Output]) -> Option<String> {
    out.iter().find_map(|o| match o {
        Output::ConfigResult { error, .. } => error.clone(),
        _ => None,
    })
}

#[test]
fn a_call_type_with_queued_calls_cannot_be_deleted_and_recreated() {
    let mut h = Harness::new(queue_script());
    h.request(1);
    let cc = contact_center(queue_script());
    let out = h.input(change(vec![
        ConfigOp::Delete(ObjectRef::DialedNumber(DialedNumberId(1))),
        ConfigOp::Delete(ObjectRef::CallTypeMap(CT, SCRIPT)),
        ConfigOp::Delete(ObjectRef::CallType(CT)),
        ConfigOp::Upsert(ConfigObject::CallType(cc.call_types[0].clone())),
    ]));
    assert!(config_error(&out)
        .unwrap()
        .contains("cannot delete call type 7"));
    h.input(Input::RouteRequestEnded {
        key: key(1),
        reason: RouteEndReason::CallerAbandoned,
    });
}

#[test]
fn a_service_with_waiting_calls_cannot_be_deleted_and_recreated() {
    let mut h = Harness::new(queue_script());
    let cc = contact_center(queue_script());
    let call = call_key(1);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG1),
        call_type: None,
        service: Some(SERVICE),
        router_call_key: None,
    });
    let out = h.input(change(vec![
        ConfigOp::Delete(ObjectRef::ServiceMember(SERVICE, SG1)),
        ConfigOp::Delete(ObjectRef::Service(SERVICE)),
        ConfigOp::Upsert(ConfigObject::Service(cc.services[0].clone())),
    ]));
    assert!(config_error(&out)
        .unwrap()
        .contains("cannot delete service 300"));
    h.input(Input::CallCleared { call });
}

#[test]
fn a_time_beyond_the_calendar_is_rejected_and_changes_nothing() {
    let mut h = Harness::new(queue_script());
    let before = h.router.digest();
    let out = h.router.apply(
        99,
        &OrderedInput {
            time_ms: 9_000_000_000_000_000,
            input: Input::TimeTick,
        },
    );
    assert!(out.iter().any(|o| matches!(o, Output::Event(e) if e.code == EventCode::InputRejected && e.message.contains("latest ordered time"))));
    assert_eq!(h.router.now_ms(), T0);
    assert_ne!(before, h.router.digest(), "the rejection counter moved");
    h.router.check_invariants().unwrap();
}

#[test]
fn an_imported_state_with_bad_settings_or_scripts_is_refused() {
    let h = Harness::new(queue_script());
    let mut state = h.router.snapshot();
    state.scalars.settings.interval_minutes = 0;
    assert!(import(&export(&state)).is_err());
    assert!(Router::from_state(state).is_err());

    let mut state = h.router.snapshot();
    let mut script = (**state.scripts.get(&SCRIPT).unwrap()).clone();
    script.nodes[1].kind = NodeKind::Select {
        rule: SelectRule::Rotary,
        skill_groups: vec![],
        none_next: 9,
    };
    state.scripts.insert(SCRIPT, std::sync::Arc::new(script));
    let error = import(&export(&state)).unwrap_err().to_string();
    assert!(error.contains("script 70"), "{error}");
    let mut state = h.router.snapshot();
    let mut script = (**state.scripts.get(&SCRIPT).unwrap()).clone();
    script.nodes[1].kind = NodeKind::PercentAllocation {
        branches: vec![Branch { weight: 0, next: 9 }],
    };
    state.scripts.insert(SCRIPT, std::sync::Arc::new(script));
    assert!(import(&export(&state)).is_err());
}

#[test]
fn an_agent_leaving_a_reservation_does_not_take_the_next_queued_call() {
    for leave in [
        Input::AgentStateChange {
            agent: A1,
            state: AgentState::NotReady,
            reason_code: 3,
        },
        Input::AgentLogout {
            agent: A1,
            reason_code: 1,
        },
    ] {
        let mut h = Harness::new(script_with(NodeKind::Queue {
            skill_groups: vec![SG1],
            priority: 5,
            timeout_s: 60,
            timeout_next: 9,
        }));
        h.login(A1, AgentState::Ready);
        assert_eq!(reserved(&h.request(1)), Some((A1, SG1)));
        h.request(2); // queued
        let out = h.input(leave.clone());
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::ReleaseAgent { agent, .. } if *agent == A1)));
        assert!(
            !out.iter().any(|o| matches!(
                o,
                Output::ReserveAgent { .. } | Output::DeliverQueuedCall { .. }
            )),
            "{out:?}"
        );
        assert_eq!(
            h.router
                .skill_group_real_time(SG1)
                .unwrap()
                .router_calls_q_now,
            1
        );
        assert!(h
            .router
            .state()
            .agent_rt
            .get(&A1)
            .unwrap()
            .reserved_for
            .is_none());
        if matches!(leave, Input::AgentStateChange { .. }) {
            // Ready again: now the queued call comes.
            let out = h.set_state(A1, AgentState::Ready);
            assert_eq!(reserved(&out), Some((A1, SG1)));
        }
    }
}

#[test]
fn queued_calls_are_delivered_when_the_peripheral_comes_back() {
    let mut h = Harness::new(queue_script());
    h.input(Input::PeripheralOffline {
        peripheral: PERIPHERAL,
    });
    h.request(1);
    h.login(A1, AgentState::Ready);
    h.input(Input::PeripheralOnline {
        peripheral: PERIPHERAL,
    });
    let out = h.advance(100);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::DeliverQueuedCall { key: k, .. } if *k == key(1))),
        "{out:?}"
    );
    assert_eq!(h.state_of(A1), AgentState::Reserved);
}

#[test]
fn an_available_agent_added_to_a_group_takes_its_queued_calls() {
    let mut h = Harness::new(queue_script());
    h.login(A4, AgentState::Ready); // in SG2 only
    h.request(1); // queued in SG1
    h.input(change(vec![ConfigOp::Upsert(
        ConfigObject::SkillGroupMember(SkillGroupMember {
            agent: A4,
            skill_group: SG1,
        }),
    )]));
    let out = h.advance(100);
    assert_eq!(reserved(&out), Some((A4, SG1)));
}

#[test]
fn a_moved_skill_group_routes_on_its_new_peripheral() {
    let mut cc = contact_center(script_with(NodeKind::Select {
        rule: SelectRule::Homing,
        skill_groups: vec![SG2],
        none_next: 9,
    }));
    let p2 = PeripheralId(11);
    cc.peripherals.push(Peripheral {
        id: p2,
        name: "ACD2".into(),
        pg: PG,
    });
    // SG2 loses its members so that it may move.
    cc.skill_group_members.retain(|m| m.skill_group != SG2);
    cc.scripts[0].nodes[1].kind = NodeKind::Busy;
    let mut h = Harness::with(cc.clone());
    let mut moved = cc.skill_groups[1].clone();
    moved.peripheral = p2;
    let agent = Agent {
        id: AgentId(9),
        peripheral: p2,
        peripheral_number: "9".into(),
        name: "Nine".into(),
        extension: "x9".into(),
    };
    let mut script = cc.scripts[0].clone();
    script.nodes[1].kind = NodeKind::Select {
        rule: SelectRule::Homing,
        skill_groups: vec![SG2],
        none_next: 9,
    };
    let out = h.input(change(vec![
        ConfigOp::Upsert(ConfigObject::SkillGroup(moved)),
        ConfigOp::Upsert(ConfigObject::Agent(agent)),
        ConfigOp::Upsert(ConfigObject::SkillGroupMember(SkillGroupMember {
            agent: AgentId(9),
            skill_group: SG2,
        })),
        ConfigOp::Upsert(ConfigObject::Script(script)),
    ]));
    assert_eq!(config_error(&out), None);
    h.input(Input::PeripheralOnline { peripheral: p2 });
    h.input(Input::PeripheralOffline {
        peripheral: PERIPHERAL,
    });
    h.login(AgentId(9), AgentState::Ready);
    assert_eq!(reserved(&h.request(1)), Some((AgentId(9), SG2)));
}

#[test]
fn moving_a_default_label_to_another_client_is_refused() {
    let mut h = Harness::new(queue_script());
    let cc = contact_center(queue_script());
    let mut label = cc
        .labels
        .iter()
        .find(|l| l.id == DEFAULT_LABEL)
        .unwrap()
        .clone();
    label.routing_client = OTHER_RC;
    let error =
        config_error(&h.input(change(vec![ConfigOp::Upsert(ConfigObject::Label(label))]))).unwrap();
    assert!(
        error.contains("routing client 1") && error.contains("another routing client"),
        "{error}"
    );
}

#[test]
fn call_events_must_stay_on_one_peripheral() {
    let mut cc = contact_center(queue_script());
    let p2 = PeripheralId(11);
    cc.peripherals.push(Peripheral {
        id: p2,
        name: "ACD2".into(),
        pg: PG,
    });
    let mut h = Harness::with(cc);
    let foreign = PeripheralCallKey {
        peripheral: p2,
        call_id: 1,
    };
    let out = h.input(Input::CallArrived {
        call: foreign,
        skill_group: Some(SG1),
        call_type: None,
        service: None,
        router_call_key: None,
    });
    assert!(out.iter().any(
        |o| matches!(o, Output::Event(e) if e.message.contains("not on the call's peripheral"))
    ));
    h.input(Input::CallArrived {
        call: foreign,
        skill_group: None,
        call_type: Some(CT),
        service: None,
        router_call_key: None,
    });
    h.login(A1, AgentState::Ready);
    let out = h.input(Input::CallOffered {
        call: foreign,
        agent: A1,
        skill_group: Some(SG1),
    });
    assert!(out.iter().any(
        |o| matches!(o, Output::Event(e) if e.message.contains("agent 1001 is on peripheral 10"))
    ));
}

#[test]
fn a_caller_abandoning_in_the_router_queue_counts_for_the_call_type() {
    let mut h = Harness::new(queue_script());
    h.request(1);
    h.advance(30_000);
    h.input(Input::RouteRequestEnded {
        key: key(1),
        reason: RouteEndReason::CallerAbandoned,
    });
    let ct = &h.router.call_types_real_time()[0].today.counts;
    assert_eq!(
        (
            ct.calls_offered,
            ct.calls_abandoned,
            ct.abandon_wait_time_ms
        ),
        (1, 1, 30_000)
    );
    assert_eq!(
        (ct.service_level_calls_offered, ct.service_level_abandoned),
        (1, 0)
    );
}

#[test]
fn a_transferred_call_counts_once_for_its_call_type() {
    let mut h = Harness::new(queue_script());
    h.login(A1, AgentState::Ready);
    h.login(A4, AgentState::Ready);
    let call = call_key(1);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG1),
        call_type: Some(CT),
        service: None,
        router_call_key: None,
    });
    h.input(Input::CallOffered {
        call,
        agent: A1,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    h.input(Input::CallTransferred {
        call,
        skill_group: SG2,
        after_call: tandem_model::AfterCall::Ready,
    });
    h.input(Input::CallOffered {
        call,
        agent: A4,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    h.input(Input::CallEnded {
        call,
        after_call: tandem_model::AfterCall::Ready,
    });
    let ct = &h.router.call_types_real_time()[0].today.counts;
    assert_eq!(
        (ct.calls_offered, ct.calls_answered, ct.calls_handled),
        (1, 1, 1)
    );
    let sg2 = h.router.skill_group_real_time(SG2).unwrap().today.counts;
    assert_eq!((sg2.calls_answered, sg2.calls_handled), (1, 1));
}

#[test]
fn a_parked_call_is_defaulted_after_its_lifetime() {
    let mut h = Harness::new(vec![
        node(0, NodeKind::Start { next: 1 }),
        node(
            1,
            NodeKind::Queue {
                skill_groups: vec![SG1],
                priority: 5,
                timeout_s: 3_600,
                timeout_next: 2,
            },
        ),
        node(
            2,
            NodeKind::Wait {
                seconds: 1,
                next: 1,
            },
        ),
    ]);
    h.request(1);
    for _ in 0..25 {
        h.now_ms += 3_600_000;
        h.input(Input::TimeTick);
        h.now_ms += 1_000;
        h.input(Input::TimeTick);
    }
    assert!(h.router.state().router_calls.is_empty());
    assert!(h.outputs.iter().any(|o| matches!(o, Output::DeliverQueuedCall { answer, .. } if answer.kind == tandem_model::AnswerKind::Default)));
}
