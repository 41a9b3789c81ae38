//! Bad input is rejected with a reason and changes nothing; configuration changes apply whole.

mod common;
use common::*;
use tandem_model::config::*;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::{AfterCall, Input};
use tandem_model::output::{EventCode, Output};
use tandem_model::script::{Node, NodeKind, Script, SelectRule};

/// Applies `input` and asserts it was rejected naming `needle`, with nothing but the rejection
/// counters and the sequence number changed.
fn assert_rejected(h: &mut Harness, input: Input, needle: &str) {
    let before = h.router.state().clone();
    let out = h.input(input);
    let rejection = out.iter().find_map(|o| match o {
        Output::Event(e) if e.code == EventCode::InputRejected => Some(e.message.clone()),
        _ => None,
    });
    let message = rejection.unwrap_or_else(|| panic!("not rejected: {out:?}"));
    assert!(
        message.contains(needle),
        "{message:?} does not mention {needle:?}"
    );
    let mut after = h.router.state().clone();
    assert_eq!(
        after.scalars.counters.inputs_rejected,
        before.scalars.counters.inputs_rejected + 1
    );
    after.scalars.counters = before.scalars.counters;
    after.scalars.last_seq = before.scalars.last_seq;
    assert!(after == before, "state changed");
}

#[test]
fn unknown_objects_illegal_transitions_and_duplicates_change_nothing() {
    let mut h = Harness::new(script_with(NodeKind::Default));
    h.login(A1, AgentState::Ready);
    assert_rejected(
        &mut h,
        Input::AgentLogin {
            agent: AgentId(9),
            state: AgentState::Ready,
            reason_code: 0,
        },
        "unknown agent 9",
    );
    assert_rejected(
        &mut h,
        Input::AgentLogin {
            agent: A1,
            state: AgentState::Ready,
            reason_code: 0,
        },
        "already logged on",
    );
    assert_rejected(
        &mut h,
        Input::AgentLogin {
            agent: A2,
            state: AgentState::TalkingIn,
            reason_code: 0,
        },
        "cannot log on",
    );
    assert_rejected(
        &mut h,
        Input::AgentStateChange {
            agent: A2,
            state: AgentState::Ready,
            reason_code: 0,
        },
        "not logged on",
    );
    assert_rejected(
        &mut h,
        Input::AgentStateChange {
            agent: A1,
            state: AgentState::TalkingIn,
            reason_code: 0,
        },
        "call events",
    );
    let call = call_key(1);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG1),
        call_type: None,
        service: None,
        router_call_key: None,
    });
    assert_rejected(
        &mut h,
        Input::CallArrived {
            call,
            skill_group: Some(SG1),
            call_type: None,
            service: None,
            router_call_key: None,
        },
        "duplicate call id",
    );
    assert_rejected(&mut h, Input::CallAnswered { call }, "not ringing");
    assert_rejected(
        &mut h,
        Input::CallOffered {
            call,
            agent: A4,
            skill_group: None,
        },
        "cannot take a call in state LoggedOff",
    );
    h.login(A4, AgentState::Ready);
    assert_rejected(
        &mut h,
        Input::CallOffered {
            call,
            agent: A4,
            skill_group: None,
        },
        "not a member",
    );
    h.input(Input::CallOffered {
        call,
        agent: A1,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    assert_rejected(
        &mut h,
        Input::AgentLogout {
            agent: A1,
            reason_code: 0,
        },
        "cannot go LoggedOff",
    );
    assert_rejected(&mut h, Input::CallAbandoned { call }, "was answered");
    assert_rejected(
        &mut h,
        Input::CallEnded {
            call: call_key(2),
            after_call: AfterCall::Ready,
        },
        "unknown call",
    );
    assert_rejected(
        &mut h,
        Input::CallArrived {
            call: call_key(3),
            skill_group: Some(SkillGroupId(5)),
            call_type: None,
            service: None,
            router_call_key: None,
        },
        "unknown skill group 5",
    );
    assert_rejected(
        &mut h,
        Input::PeripheralOnline {
            peripheral: PeripheralId(77),
        },
        "unknown peripheral 77",
    );
    assert_rejected(
        &mut h,
        Input::RouteRequestEnded {
            key: key(42),
            reason: tandem_model::RouteEndReason::ClientTimeout,
        },
        "unknown route request",
    );
    let mut long = tandem_model::RouteRequest {
        key: key(1),
        dialed_number: "1".repeat(41),
        ani: String::new(),
        caller_entered_digits: String::new(),
        call_variables: vec![],
    };
    assert_rejected(
        &mut h,
        Input::RouteRequest(long.clone()),
        "dialed number of 41 bytes",
    );
    long.dialed_number = DIGITS.into();
    long.call_variables = vec!["v".into(); 11];
    assert_rejected(&mut h, Input::RouteRequest(long), "11 call variables");
}

#[test]
fn time_never_goes_backwards() {
    let mut h = Harness::new(script_with(NodeKind::Default));
    h.now_ms += 1_000;
    h.input(Input::TimeTick);
    let out = h.router.apply(
        99,
        &tandem_model::OrderedInput {
            time_ms: T0,
            input: Input::TimeTick,
        },
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(e) if e.code == EventCode::TimeWentBackwards)));
    assert_eq!(h.router.now_ms(), T0 + 1_000);
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
fn a_bad_configuration_change_is_rejected_whole_naming_the_object() {
    let mut h = Harness::new(script_with(NodeKind::Default));
    let version = h.router.config_version();
    let before = h.router.state().clone();
    let new_group = SkillGroup {
        id: SkillGroupId(300),
        peripheral: PERIPHERAL,
        name: "New".into(),
        service_level_threshold_s: 20,
        service_level_type: Default::default(),
        abandon_short_call_threshold_s: 0,
    };
    let dangling = SkillGroupMember {
        agent: AgentId(4242),
        skill_group: SkillGroupId(300),
    };
    let out = h.input(change(vec![
        ConfigOp::Upsert(ConfigObject::SkillGroup(new_group.clone())),
        ConfigOp::Upsert(ConfigObject::SkillGroupMember(dangling)),
    ]));
    let error = config_error(&out).expect("rejected");
    assert!(
        error.contains("operation 2") && error.contains("unknown agent 4242"),
        "{error}"
    );
    assert_eq!(h.router.config_version(), version);
    assert!(h
        .router
        .state()
        .skill_groups
        .get(&SkillGroupId(300))
        .is_none());
    assert_eq!(
        h.router.state().skill_group_rt.len(),
        before.skill_group_rt.len()
    );

    // The good half alone applies, and the version rises by exactly one.
    let out = h.input(change(vec![ConfigOp::Upsert(ConfigObject::SkillGroup(
        new_group,
    ))]));
    assert_eq!(config_error(&out), None);
    assert_eq!(h.router.config_version(), version + 1);
}

#[test]
fn scripts_with_loops_without_wait_or_unknown_targets_are_rejected() {
    let mut h = Harness::new(script_with(NodeKind::Default));
    let looping = Script {
        id: ScriptId(71),
        name: "loop".into(),
        version: 1,
        nodes: vec![
            Node {
                id: 0,
                kind: NodeKind::Start { next: 1 },
            },
            Node {
                id: 1,
                kind: NodeKind::Select {
                    rule: SelectRule::Homing,
                    skill_groups: vec![SG1],
                    none_next: 1,
                },
            },
        ],
    };
    let error = config_error(&h.input(change(vec![ConfigOp::Upsert(ConfigObject::Script(
        looping,
    ))])))
    .unwrap();
    assert!(
        error.contains("script 71") && error.contains("without passing a Wait"),
        "{error}"
    );
    let unknown_target = Script {
        id: ScriptId(72),
        name: "bad".into(),
        version: 1,
        nodes: vec![
            Node {
                id: 0,
                kind: NodeKind::Start { next: 1 },
            },
            Node {
                id: 1,
                kind: NodeKind::Select {
                    rule: SelectRule::Homing,
                    skill_groups: vec![SkillGroupId(555)],
                    none_next: 2,
                },
            },
            Node {
                id: 2,
                kind: NodeKind::End,
            },
        ],
    };
    let error = config_error(&h.input(change(vec![ConfigOp::Upsert(ConfigObject::Script(
        unknown_target,
    ))])))
    .unwrap();
    assert!(
        error.contains("script 72 refers to unknown skill group 555"),
        "{error}"
    );
}

#[test]
fn referenced_objects_cannot_be_deleted_and_logged_on_agents_stay() {
    let mut h = Harness::new(script_with(NodeKind::Select {
        rule: SelectRule::Homing,
        skill_groups: vec![SG1],
        none_next: 9,
    }));
    let error =
        config_error(&h.input(change(vec![ConfigOp::Delete(ObjectRef::SkillGroup(SG1))]))).unwrap();
    assert!(
        error.contains("cannot delete skill group 100") && error.contains("refer to it"),
        "{error}"
    );
    h.login(A4, AgentState::Ready);
    let error = config_error(&h.input(change(vec![
        ConfigOp::Delete(ObjectRef::SkillGroupMember(A4, SG2)),
        ConfigOp::Delete(ObjectRef::Agent(A4)),
    ])))
    .unwrap();
    assert!(
        error.contains("agent 1004") && error.contains("logged on"),
        "{error}"
    );
    // The member delete in that change was rolled back.
    assert!(h.router.state().agent_skill_group_rt.contains(&(A4, SG2)));
}

#[test]
fn membership_changes_move_live_agent_counts() {
    let mut h = Harness::new(script_with(NodeKind::Default));
    h.login(A4, AgentState::Ready);
    assert_eq!(h.router.skill_group_real_time(SG1).unwrap().avail, 0);
    h.input(change(vec![ConfigOp::Upsert(
        ConfigObject::SkillGroupMember(SkillGroupMember {
            agent: A4,
            skill_group: SG1,
        }),
    )]));
    assert_eq!(h.router.skill_group_real_time(SG1).unwrap().avail, 1);
    h.input(change(vec![ConfigOp::Delete(ObjectRef::SkillGroupMember(
        A4, SG2,
    ))]));
    let g2 = h.router.skill_group_real_time(SG2).unwrap();
    assert_eq!((g2.avail, g2.logged_on), (0, 0));
}

#[test]
fn a_script_update_raises_its_version_and_calls_follow_it() {
    let mut h = Harness::new(script_with(NodeKind::Busy));
    let mut cc = contact_center(script_with(NodeKind::Label {
        labels: vec![LABEL_A],
    }));
    let script = cc.scripts.remove(0);
    h.input(change(vec![ConfigOp::Upsert(ConfigObject::Script(script))]));
    assert_eq!(h.router.state().scripts.get(&SCRIPT).unwrap().version, 2);
    assert_eq!(answer(&h.request(1)).unwrap().label, "label-a");
}

#[test]
fn the_contact_center_loader_rejects_duplicates_and_dangling_references() {
    let mut cc = contact_center(script_with(NodeKind::Default));
    cc.agents.push(cc.agents[0].clone());
    let error = tandem_router::Router::from_contact_center(&cc, T0)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("duplicate agent 1001"), "{error}");
    let mut cc = contact_center(script_with(NodeKind::Default));
    cc.dialed_numbers[0].call_type = CallTypeId(404);
    let error = tandem_router::Router::from_contact_center(&cc, T0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("dialed number 1 refers to unknown call type 404"),
        "{error}"
    );
}
