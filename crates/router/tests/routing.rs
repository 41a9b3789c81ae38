//! Script nodes and the route-request lifecycle, one behaviour per test.

mod common;
use common::*;
use tandem_model::config::LabelTarget;
use tandem_model::domain::AgentState;
use tandem_model::input::{Input, RouteEndReason};
use tandem_model::output::{AnswerKind, EventCode, HistoricalRow, Output};
use tandem_model::script::{Branch, Condition, NodeKind, SelectRule};

fn select(
    rule: SelectRule,
    groups: Vec<tandem_model::SkillGroupId>,
) -> Vec<tandem_model::script::Node> {
    script_with(NodeKind::Select {
        rule,
        skill_groups: groups,
        none_next: 9,
    })
}

#[test]
fn select_longest_available_picks_the_agent_ready_longest() {
    let mut h = Harness::new(select(SelectRule::LongestAvailable, vec![SG1, SG2]));
    h.login(A4, AgentState::Ready);
    h.advance(1_000);
    h.login(A1, AgentState::Ready);
    let out = h.request(1);
    assert_eq!(reserved(&out), Some((A4, SG2)));
    let first = answer(&out).unwrap();
    assert_eq!(first.kind, AnswerKind::Label);
    assert_eq!(first.label, format!("x{}", A4.0));
    assert_eq!(first.target, Some(LabelTarget::Agent(A4)));
    assert_eq!(h.state_of(A4), AgentState::Reserved);
    // The next call goes to the next longest available.
    assert_eq!(reserved(&h.request(2)), Some((A1, SG1)));
    // Nobody left: the none branch answers with the default label.
    let out = h.request(3);
    assert_eq!(answer(&out).unwrap().kind, AnswerKind::Default);
    assert_eq!(answer(&out).unwrap().label, "dn-default");
}

#[test]
fn select_homing_always_starts_with_the_first_group() {
    let mut h = Harness::new(select(SelectRule::Homing, vec![SG2, SG1]));
    h.login(A1, AgentState::Ready);
    h.advance(1_000);
    h.login(A4, AgentState::Ready);
    // A1 is longer available, but SG2 is listed first.
    assert_eq!(reserved(&h.request(1)), Some((A4, SG2)));
    assert_eq!(reserved(&h.request(2)), Some((A1, SG1)));
}

#[test]
fn select_rotary_starts_after_the_previous_choice() {
    let mut h = Harness::new(select(SelectRule::Rotary, vec![SG1, SG2]));
    for agent in [A1, A2, A4] {
        h.login(agent, AgentState::Ready);
        h.advance(100);
    }
    assert_eq!(reserved(&h.request(1)).unwrap().1, SG1);
    assert_eq!(reserved(&h.request(2)).unwrap().1, SG2);
    assert_eq!(reserved(&h.request(3)).unwrap().1, SG1);
}

#[test]
fn select_minimum_expected_delay_prefers_the_group_with_most_available() {
    let mut h = Harness::new(select(SelectRule::MinimumExpectedDelay, vec![SG2, SG1]));
    h.login(A4, AgentState::Ready);
    h.login(A1, AgentState::Ready);
    h.login(A2, AgentState::Ready);
    assert_eq!(reserved(&h.request(1)).unwrap().1, SG1);
}

#[test]
fn offline_peripheral_agents_are_not_selected() {
    let mut h = Harness::new(select(SelectRule::LongestAvailable, vec![SG1]));
    h.login(A1, AgentState::Ready);
    h.input(Input::PeripheralOffline {
        peripheral: PERIPHERAL,
    });
    assert_eq!(answer(&h.request(1)).unwrap().kind, AnswerKind::Default);
}

fn queue_script(priority: u8) -> Vec<tandem_model::script::Node> {
    script_with(NodeKind::Queue {
        skill_groups: vec![SG1],
        priority,
        timeout_s: 60,
        timeout_next: 8,
    })
}

#[test]
fn queue_parks_the_call_then_delivers_to_the_next_available_agent() {
    let mut h = Harness::new(queue_script(5));
    let out = h.request(1);
    assert_eq!(answer(&out).unwrap().kind, AnswerKind::Queued);
    assert_eq!(
        h.router
            .skill_group_real_time(SG1)
            .unwrap()
            .router_calls_q_now,
        1
    );
    h.advance(3_000);
    let out = h.login(A2, AgentState::Ready);
    assert_eq!(reserved(&out), Some((A2, SG1)));
    assert!(
        matches!(out.iter().find(|o| matches!(o, Output::DeliverQueuedCall { .. })), Some(Output::DeliverQueuedCall { answer, .. }) if answer.target == Some(LabelTarget::Agent(A2)))
    );
    let group = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!(group.router_calls_q_now, 0);
    assert_eq!(group.today.counts.router_calls_queued, 1);
    assert_eq!(group.today.counts.router_queue_wait_time_ms, 3_000);
    // No deadline default fires later for a parked call.
    let later = h.advance(10_000);
    assert!(answer(&later).is_none());
}

#[test]
fn queue_serves_the_highest_priority_first_then_the_oldest() {
    let mut h = Harness::new(vec![
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
                skill_groups: vec![SG1],
                priority: 1,
                timeout_s: 300,
                timeout_next: 9,
            },
        ),
        node(
            3,
            NodeKind::Queue {
                skill_groups: vec![SG1],
                priority: 5,
                timeout_s: 300,
                timeout_next: 9,
            },
        ),
        node(9, NodeKind::Default),
    ]);
    h.request(1);
    h.advance(100);
    h.request(2);
    h.advance(100);
    h.request_with(3, vec!["vip".into()]);
    let router_call_of = |out: &[Output]| {
        out.iter().find_map(|o| match o {
            Output::DeliverQueuedCall { key, .. } => Some(key.request_id),
            _ => None,
        })
    };
    assert_eq!(router_call_of(&h.login(A1, AgentState::Ready)), Some(3));
    assert_eq!(router_call_of(&h.login(A2, AgentState::Ready)), Some(1));
    assert_eq!(router_call_of(&h.login(A3, AgentState::Ready)), Some(2));
}

#[test]
fn queue_timeout_continues_the_script() {
    let mut h = Harness::new(queue_script(5));
    h.request(1);
    let out = h.advance(59_900);
    assert!(answer(&out).is_none());
    let out = h.advance(100);
    let delivered = out.iter().find_map(|o| match o {
        Output::DeliverQueuedCall { answer, .. } => Some(answer.clone()),
        _ => None,
    });
    assert_eq!(delivered.unwrap().label, "label-a");
    assert_eq!(
        h.router
            .skill_group_real_time(SG1)
            .unwrap()
            .router_calls_q_now,
        0
    );
}

#[test]
fn caller_abandon_in_queue_is_counted_and_dequeued() {
    let mut h = Harness::new(queue_script(5));
    h.request(1);
    h.advance(4_000);
    h.input(Input::RouteRequestEnded {
        key: key(1),
        reason: RouteEndReason::CallerAbandoned,
    });
    let group = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!(group.router_calls_q_now, 0);
    assert_eq!(group.today.counts.router_calls_abandoned_q, 1);
    let rcd = h.outputs.iter().rev().find_map(|o| match o {
        Output::Historical(r) => match &r.row {
            HistoricalRow::RouteCallDetail(d) => Some(d.clone()),
            _ => None,
        },
        _ => None,
    });
    let rcd = rcd.unwrap();
    assert_eq!(rcd.ended, Some(RouteEndReason::CallerAbandoned));
    assert_eq!(rcd.router_queue_wait_ms, 4_000);
    // A later agent gets nothing from the queue.
    assert!(reserved(&h.login(A1, AgentState::Ready)).is_none());
}

#[test]
fn percent_allocation_splits_by_weight_deterministically() {
    let mut h = Harness::new(vec![
        node(0, NodeKind::Start { next: 1 }),
        node(
            1,
            NodeKind::PercentAllocation {
                branches: vec![Branch { weight: 3, next: 2 }, Branch { weight: 1, next: 3 }],
            },
        ),
        node(
            2,
            NodeKind::Label {
                labels: vec![LABEL_A],
            },
        ),
        node(3, NodeKind::Busy),
    ]);
    let kinds: Vec<AnswerKind> = (1..=8)
        .map(|i| answer(&h.request(i)).unwrap().kind)
        .collect();
    let labels = kinds.iter().filter(|k| **k == AnswerKind::Label).count();
    assert_eq!(labels, 6);
    assert_eq!(
        kinds[..4]
            .iter()
            .filter(|k| **k == AnswerKind::Busy)
            .count(),
        1,
        "{kinds:?}"
    );
}

#[test]
fn if_node_branches_on_available_agents() {
    let nodes = script_with(NodeKind::If {
        condition: Condition::SkillGroupAvailableAtLeast {
            skill_group: SG1,
            count: 2,
        },
        then_next: 8,
        else_next: 9,
    });
    let mut h = Harness::new(nodes);
    h.login(A1, AgentState::Ready);
    assert_eq!(answer(&h.request(1)).unwrap().kind, AnswerKind::Default);
    h.login(A2, AgentState::Ready);
    assert_eq!(answer(&h.request(2)).unwrap().label, "label-a");
}

#[test]
fn if_node_branches_on_time_of_day_and_weekday() {
    // T0 is Saturday 10:00 UTC.
    let condition = Condition::All {
        conditions: vec![
            Condition::TimeOfDayBetween {
                from_minute: 9 * 60,
                to_minute: 17 * 60,
            },
            Condition::DayOfWeekIn { days: vec![5, 6] },
        ],
    };
    let mut h = Harness::new(script_with(NodeKind::If {
        condition,
        then_next: 8,
        else_next: 9,
    }));
    assert_eq!(answer(&h.request(1)).unwrap().label, "label-a");
    h.now_ms += 7 * 3_600_000 + 60_000; // 17:01
    h.input(Input::TimeTick);
    assert_eq!(answer(&h.request(2)).unwrap().kind, AnswerKind::Default);
}

#[test]
fn label_nodes_answer_with_the_routing_clients_label() {
    let mut h = Harness::new(script_with(NodeKind::Label {
        labels: vec![LABEL_OTHER_RC, LABEL_A],
    }));
    let a = answer(&h.request(1)).unwrap();
    assert_eq!(
        (a.kind, a.label.as_str(), a.label_id),
        (AnswerKind::Label, "label-a", Some(LABEL_A))
    );
}

#[test]
fn a_label_node_without_a_label_for_the_client_is_a_script_error() {
    let mut h = Harness::new(script_with(NodeKind::Label {
        labels: vec![LABEL_OTHER_RC],
    }));
    let out = h.request(1);
    assert_eq!(answer(&out).unwrap().label, "dn-default");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(e) if e.code == EventCode::ScriptError)));
    let ct = &h.router.call_types_real_time()[0];
    assert_eq!(
        (
            ct.today.counts.route_errors,
            ct.today.counts.calls_default_routed
        ),
        (1, 1)
    );
}

#[test]
fn divert_busy_ring_default_and_end() {
    for (kind, expected) in [
        (
            NodeKind::Divert {
                labels: vec![DIVERT_LABEL],
            },
            AnswerKind::Divert,
        ),
        (NodeKind::Busy, AnswerKind::Busy),
        (NodeKind::Ring, AnswerKind::Ring),
        (NodeKind::Default, AnswerKind::Default),
        (NodeKind::End, AnswerKind::Default),
    ] {
        let mut h = Harness::new(script_with(kind.clone()));
        assert_eq!(answer(&h.request(1)).unwrap().kind, expected, "{kind:?}");
    }
}

#[test]
fn wait_pauses_in_ordered_time() {
    let mut h = Harness::new(vec![
        node(0, NodeKind::Start { next: 1 }),
        node(
            1,
            NodeKind::Wait {
                seconds: 2,
                next: 8,
            },
        ),
        node(
            8,
            NodeKind::Label {
                labels: vec![LABEL_A],
            },
        ),
    ]);
    assert!(answer(&h.request(1)).is_none());
    assert!(answer(&h.advance(1_900)).is_none());
    assert_eq!(answer(&h.advance(100)).unwrap().label, "label-a");
}

#[test]
fn the_router_answers_just_before_the_client_timeout() {
    let mut h = Harness::new(vec![
        node(0, NodeKind::Start { next: 1 }),
        node(
            1,
            NodeKind::Wait {
                seconds: 30,
                next: 8,
            },
        ),
        node(
            8,
            NodeKind::Label {
                labels: vec![LABEL_A],
            },
        ),
    ]);
    h.request(1);
    assert!(answer(&h.advance((TIMEOUT_MS - MARGIN_MS) as u64 - 100)).is_none());
    let out = h.advance(100);
    let a = answer(&out).unwrap();
    assert_eq!(
        (a.kind, a.label.as_str()),
        (AnswerKind::Default, "dn-default")
    );
    // The script does not answer a second time when its Wait ends.
    assert!(answer(&h.advance(30_000)).is_none());
}

#[test]
fn a_repeated_request_gets_the_cached_answer_until_eviction() {
    let mut h = Harness::new(script_with(NodeKind::Label {
        labels: vec![LABEL_A],
    }));
    let first = h.request(1);
    let repeat = h.request(1);
    match (
        &first[..],
        repeat
            .iter()
            .find(|o| matches!(o, Output::RouteResponse { .. })),
    ) {
        (
            _,
            Some(Output::RouteResponse {
                answer,
                repeat: true,
                router_call_key,
                ..
            }),
        ) => {
            assert_eq!(answer.label, "label-a");
            assert!(first.iter().any(|o| matches!(o, Output::RouteResponse { router_call_key: k, .. } if k == router_call_key)));
        }
        other => panic!("no cached answer: {other:?}"),
    }
    // Exactly one Route_Call_Detail for the two copies.
    let details = h.outputs.iter().filter(|o| matches!(o, Output::Historical(r) if matches!(r.row, HistoricalRow::RouteCallDetail(_)))).count();
    assert_eq!(details, 1);
    assert_eq!(h.router.state().scalars.counters.route_request_repeats, 1);
    // Evicted after twice the client's timeout.
    h.advance(2 * TIMEOUT_MS as u64);
    assert!(h.router.state().requests.is_empty());
}

#[test]
fn a_client_timeout_releases_the_reserved_agent() {
    let mut h = Harness::new(select(SelectRule::LongestAvailable, vec![SG1]));
    h.login(A1, AgentState::Ready);
    h.request(1);
    assert_eq!(h.state_of(A1), AgentState::Reserved);
    let out = h.input(Input::RouteRequestEnded {
        key: key(1),
        reason: RouteEndReason::ClientTimeout,
    });
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ReleaseAgent { agent, .. } if *agent == A1)));
    assert_eq!(h.state_of(A1), AgentState::Ready);
}

#[test]
fn a_reservation_expires_when_the_call_never_arrives() {
    let mut h = Harness::new(select(SelectRule::LongestAvailable, vec![SG1]));
    h.login(A1, AgentState::Ready);
    h.request(1);
    h.advance(9_900);
    assert_eq!(h.state_of(A1), AgentState::Reserved);
    let out = h.advance(100);
    assert!(out.iter().any(|o| matches!(o, Output::ReleaseAgent { .. })));
    assert_eq!(h.state_of(A1), AgentState::Ready);
}

#[test]
fn a_reservation_is_consumed_by_the_offered_call() {
    let mut h = Harness::new(select(SelectRule::LongestAvailable, vec![SG1]));
    h.login(A1, AgentState::Ready);
    let out = h.request(1);
    let rck = out.iter().find_map(|o| match o {
        Output::ReserveAgent {
            router_call_key, ..
        } => Some(*router_call_key),
        _ => None,
    });
    let call = call_key(1);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG1),
        call_type: Some(CT),
        service: None,
        router_call_key: rck,
    });
    h.input(Input::CallOffered {
        call,
        agent: A1,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    // The reservation timer passes without releasing the talking agent.
    let out = h.advance(20_000);
    assert!(!out.iter().any(|o| matches!(o, Output::ReleaseAgent { .. })));
    assert_eq!(h.state_of(A1), AgentState::TalkingIn);
}

#[test]
fn unknown_dialed_number_gets_the_clients_default_label() {
    let mut h = Harness::new(script_with(NodeKind::Busy));
    let out = h.input(Input::RouteRequest(tandem_model::input::RouteRequest {
        key: key(1),
        dialed_number: "999".into(),
        ani: String::new(),
        caller_entered_digits: String::new(),
        call_variables: vec![],
    }));
    let a = answer(&out).unwrap();
    assert_eq!(
        (a.kind, a.label.as_str()),
        (AnswerKind::Default, "rc-default")
    );
}

#[test]
fn every_request_gets_exactly_one_route_call_detail() {
    let mut h = Harness::new(queue_script(5));
    for i in 1..=5 {
        h.request(i);
        h.request(i);
    }
    h.login(A1, AgentState::Ready);
    h.input(Input::RouteRequestEnded {
        key: key(2),
        reason: RouteEndReason::CallerAbandoned,
    });
    h.advance(61_000);
    let mut ids: Vec<u64> = h
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Historical(r) => match &r.row {
                HistoricalRow::RouteCallDetail(d) => Some(d.key.request_id),
                _ => None,
            },
            _ => None,
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}
