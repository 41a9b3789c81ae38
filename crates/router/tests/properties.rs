//! Property tests over random input sequences, valid and invalid alike:
//! - no input panics the router, and every invariant holds after every input (the Now tables,
//!   availability sets, queue and call counts are recomputed from scratch and compared);
//! - two routers fed the same inputs produce byte-identical outputs and digests;
//! - a router exported and imported at any point behaves identically from then on;
//! - Today's offered, answered, handled, abandoned, short-call and service-level counters equal a
//!   recomputation from the Termination_Call_Detail rows the router wrote and the calls it holds.

mod common;
use common::*;
use proptest::prelude::*;
use tandem_model::config::{ConfigChange, ConfigObject, ConfigOp, ObjectRef, SkillGroupMember};
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::{
    AfterCall, AgentCallReport, AgentReport, Input, OrderedInput, PeripheralReport, ReportPart,
    ReportedCallPhase, RouteEndReason, RouteRequest, WaitingCallReport,
};
use tandem_model::output::{CallDisposition, HistoricalRow, Output};
use tandem_model::script::{NodeKind, SelectRule};
use tandem_router::records::{export, import};
use tandem_router::Router;

fn agent() -> impl Strategy<Value = AgentId> {
    prop_oneof![9 => (1001u32..=1004).prop_map(AgentId), 1 => any::<u32>().prop_map(AgentId)]
}

fn group() -> impl Strategy<Value = SkillGroupId> {
    prop_oneof![Just(SG1), Just(SG2), Just(SkillGroupId(999))]
}

fn state() -> impl Strategy<Value = AgentState> {
    (0usize..AgentState::COUNT).prop_map(|i| AgentState::ALL[i])
}

fn after_call() -> impl Strategy<Value = AfterCall> {
    prop_oneof![
        Just(AfterCall::Ready),
        Just(AfterCall::NotReady),
        Just(AfterCall::WorkReady),
        Just(AfterCall::WorkNotReady)
    ]
}

fn call() -> impl Strategy<Value = PeripheralCallKey> {
    (0u64..6).prop_map(call_key)
}

fn reported_call() -> impl Strategy<Value = AgentCallReport> {
    let phase = prop_oneof![
        Just(ReportedCallPhase::Ringing),
        Just(ReportedCallPhase::Talking),
        Just(ReportedCallPhase::Held),
        Just(ReportedCallPhase::WrapUp)
    ];
    (
        0u64..6,
        phase,
        group(),
        any::<bool>(),
        0u32..60_000,
        0.0f64..=1.0,
    )
        .prop_map(
            |(call_id, phase, skill_group, typed, leg_age_ms, answered_share)| AgentCallReport {
                call_id,
                phase,
                skill_group,
                call_type: typed.then_some(CT),
                service: typed.then_some(SERVICE),
                router_call_key: None,
                leg_age_ms,
                answered_age_ms: (leg_age_ms as f64 * answered_share) as u32,
            },
        )
}

/// A re-report part of the peripheral: mostly true to itself (states that fit the calls), so
/// that most are applied; some are not, and are refused.
fn report() -> impl Strategy<Value = Input> {
    let agent_report = (
        agent(),
        proptest::option::of(reported_call()),
        0usize..4,
        any::<bool>(),
        state(),
        0u16..4,
    )
        .prop_map(|(agent, call, idle_pick, fits, any_state, reason_code)| {
            // A fitting report gives the call a skill group its agent is a member of.
            let call = call.map(|mut c| {
                if fits {
                    c.skill_group = if agent == A4 || (agent == A3 && c.call_id % 2 == 0) {
                        SG2
                    } else {
                        SG1
                    };
                }
                c
            });
            let state = match (&call, fits) {
                (_, false) => any_state,
                (Some(c), true) => match c.phase {
                    ReportedCallPhase::Ringing => AgentState::Reserved,
                    ReportedCallPhase::Talking => AgentState::TalkingIn,
                    ReportedCallPhase::Held => AgentState::Hold,
                    ReportedCallPhase::WrapUp => AgentState::WorkNotReady,
                },
                (None, true) => [
                    AgentState::Ready,
                    AgentState::NotReady,
                    AgentState::WorkReady,
                    AgentState::TalkingOut,
                ][idle_pick],
            };
            AgentReport {
                agent,
                state,
                reason_code,
                call,
            }
        });
    let range = prop_oneof![
        4 => Just((AgentId(0), AgentId(u32::MAX))),
        1 => Just((AgentId(0), A2)),
        1 => Just((AgentId(A2.0 + 1), AgentId(u32::MAX))),
    ];
    let agents = (proptest::collection::vec(agent_report, 0..5), range).prop_map(
        |(mut agents, (from, through))| {
            agents.sort_by_key(|a| a.agent);
            agents.dedup_by_key(|a| a.agent);
            agents.retain(|a| a.agent >= from && a.agent <= through);
            // Mostly one call at one agent only.
            let mut seen = std::collections::BTreeSet::new();
            for a in agents.iter_mut() {
                if a.call.is_some_and(|c| !seen.insert(c.call_id)) && a.reason_code != 3 {
                    a.call = None;
                    a.state = AgentState::NotReady;
                }
            }
            Input::PeripheralReport(PeripheralReport {
                peripheral: PERIPHERAL,
                part: ReportPart::Agents {
                    from,
                    through,
                    agents,
                },
            })
        },
    );
    let waiting = proptest::collection::vec(
        (
            0u64..6,
            proptest::option::of(group()),
            any::<bool>(),
            0u32..60_000,
        ),
        0..4,
    )
    .prop_map(|calls| {
        let mut calls: Vec<WaitingCallReport> = calls
            .into_iter()
            .map(
                |(call_id, skill_group, typed, leg_age_ms)| WaitingCallReport {
                    call_id,
                    skill_group,
                    call_type: typed.then_some(CT),
                    service: typed.then_some(SERVICE),
                    router_call_key: None,
                    leg_age_ms,
                },
            )
            .collect();
        calls.sort_by_key(|c| c.call_id);
        calls.dedup_by_key(|c| c.call_id);
        Input::PeripheralReport(PeripheralReport {
            peripheral: PERIPHERAL,
            part: ReportPart::Waiting {
                from: 0,
                through: u64::MAX,
                calls,
            },
        })
    });
    prop_oneof![2 => agents, 1 => waiting]
}

/// One step: an input and how far time moves before it.
fn step() -> impl Strategy<Value = (u64, Input)> {
    let input = prop_oneof![
        3 => Just(Input::TimeTick),
        3 => (agent(), prop_oneof![Just(AgentState::Ready), Just(AgentState::NotReady)], 0u16..4)
            .prop_map(|(agent, state, reason_code)| Input::AgentLogin { agent, state, reason_code }),
        1 => agent().prop_map(|agent| Input::AgentLogout { agent, reason_code: 1 }),
        4 => (agent(), state(), 0u16..4).prop_map(|(agent, state, reason_code)| Input::AgentStateChange { agent, state, reason_code }),
        3 => (call(), proptest::option::of(group()), any::<bool>())
            .prop_map(|(call, skill_group, typed)| Input::CallArrived { call, skill_group, call_type: typed.then_some(CT), service: typed.then_some(SERVICE), router_call_key: None }),
        3 => (call(), agent(), proptest::option::of(group())).prop_map(|(call, agent, skill_group)| Input::CallOffered { call, agent, skill_group }),
        3 => call().prop_map(|call| Input::CallAnswered { call }),
        1 => call().prop_map(|call| Input::CallHeld { call }),
        1 => call().prop_map(|call| Input::CallRetrieved { call }),
        1 => (call(), group(), after_call()).prop_map(|(call, skill_group, after_call)| Input::CallTransferred { call, skill_group, after_call }),
        3 => (call(), after_call()).prop_map(|(call, after_call)| Input::CallEnded { call, after_call }),
        2 => call().prop_map(|call| Input::CallAbandoned { call }),
        1 => call().prop_map(|call| Input::CallCleared { call }),
        4 => (0u64..8, any::<bool>(), prop_oneof![Just(DIGITS.to_string()), Just("0".to_string())]).prop_map(|(id, vip, dialed_number)| Input::RouteRequest(RouteRequest {
            key: key(id),
            dialed_number,
            ani: "4420".into(),
            caller_entered_digits: String::new(),
            call_variables: if vip { vec!["vip".into()] } else { vec![] },
        })),
        2 => (0u64..8, any::<bool>()).prop_map(|(id, timeout)| Input::RouteRequestEnded {
            key: key(id),
            reason: if timeout { RouteEndReason::ClientTimeout } else { RouteEndReason::CallerAbandoned },
        }),
        3 => report(),
        1 => any::<bool>().prop_map(|online| if online { Input::PeripheralOnline { peripheral: PERIPHERAL } } else { Input::PeripheralOffline { peripheral: PERIPHERAL } }),
        1 => (agent(), group(), any::<bool>()).prop_map(|(agent, skill_group, add)| Input::ConfigChange(ConfigChange {
            ops: vec![if add {
                ConfigOp::Upsert(ConfigObject::SkillGroupMember(SkillGroupMember { agent, skill_group }))
            } else {
                ConfigOp::Delete(ObjectRef::SkillGroupMember(agent, skill_group))
            }],
            author: String::new(),
        })),
    ];
    (prop_oneof![3 => 0u64..500, 1 => 0u64..20_000], input)
}

fn script() -> Vec<tandem_model::script::Node> {
    use tandem_model::script::Condition;
    vec![
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
                skill_groups: vec![SG1, SG2],
                priority: 1,
                timeout_s: 20,
                timeout_next: 4,
            },
        ),
        node(
            3,
            NodeKind::Select {
                rule: SelectRule::LongestAvailable,
                skill_groups: vec![SG1, SG2],
                none_next: 5,
            },
        ),
        node(
            4,
            NodeKind::Label {
                labels: vec![LABEL_A],
            },
        ),
        node(
            5,
            NodeKind::Wait {
                seconds: 2,
                next: 6,
            },
        ),
        node(
            6,
            NodeKind::Queue {
                skill_groups: vec![SG1],
                priority: 5,
                timeout_s: 10,
                timeout_next: 9,
            },
        ),
        node(9, NodeKind::Default),
    ]
}

fn run(
    router: &mut Router,
    steps: &[(u64, Input)],
    start_seq: u64,
    start_ms: u64,
) -> (Vec<Output>, u64) {
    let mut outputs = Vec::new();
    let mut now = start_ms;
    for (i, (dt, input)) in steps.iter().enumerate() {
        now += dt;
        let seq = start_seq + i as u64 + 1;
        router.apply_into(
            seq,
            &OrderedInput {
                time_ms: now,
                input: input.clone(),
            },
            &mut outputs,
        );
        if let Err(e) = router.check_invariants() {
            panic!("after input {seq} ({}): {e}", input.name());
        }
    }
    (outputs, now)
}

/// Today's skill-group counters recomputed independently of the router's incremental ones: from
/// the Termination_Call_Detail rows it wrote (every finished leg) plus the answered calls still in
/// its call table, each classified against the group's own service-level and short-call
/// thresholds (SG1: 20 s / 5 s; SG2: 30 s / none).
fn recompute_today(
    outputs: &[Output],
    router: &Router,
    group: SkillGroupId,
) -> tandem_model::realtime::CallCounts {
    use tandem_router::rows::CallPhase;
    let (sl_ms, short_ms) = if group == SG1 {
        (20_000, 5_000)
    } else {
        (30_000, 0)
    };
    let mut c = tandem_model::realtime::CallCounts::default();
    let answered = |c: &mut tandem_model::realtime::CallCounts, wait: u64| {
        c.calls_offered += 1;
        c.calls_answered += 1;
        c.answer_wait_time_ms += wait;
        c.service_level_calls_offered += 1;
        c.service_level_calls += (wait <= sl_ms) as u64;
    };
    for output in outputs {
        let Output::Historical(record) = output else {
            continue;
        };
        let HistoricalRow::TerminationCallDetail(t) = &record.row else {
            continue;
        };
        if t.skill_group != Some(group) {
            continue;
        }
        match t.disposition {
            CallDisposition::Handled | CallDisposition::Transferred => {
                answered(&mut c, t.delay_ms);
                c.calls_handled += 1;
                c.handle_time_ms += t.talk_ms + t.hold_ms + t.work_ms;
            }
            CallDisposition::Abandoned => {
                assert!(t.delay_ms >= short_ms);
                c.calls_offered += 1;
                c.calls_abandoned += 1;
                c.abandon_wait_time_ms += t.delay_ms;
                c.service_level_calls_offered += 1;
                c.service_level_abandoned += (t.delay_ms <= sl_ms) as u64;
            }
            CallDisposition::ShortCall => c.short_calls += 1,
            CallDisposition::Cleared | CallDisposition::Unreported => {}
        }
    }
    for call in router.state().calls.values() {
        if call.skill_group == Some(group)
            && matches!(
                call.phase,
                CallPhase::Talking | CallPhase::Held | CallPhase::WrapUp
            )
        {
            answered(&mut c, call.answered_ms - call.leg_start_ms);
        }
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn random_inputs_keep_invariants_determinism_and_round_trips(
        steps in proptest::collection::vec(step(), 1..250),
        cut in 0usize..250,
    ) {
        let cc = contact_center(script());
        let mut a = Router::from_contact_center(&cc, T0).unwrap();
        let mut b = Router::from_contact_center(&cc, T0).unwrap();
        let cut = cut.min(steps.len());
        let (out_a1, now) = run(&mut a, &steps[..cut], 0, T0);
        let (out_b1, _) = run(&mut b, &steps[..cut], 0, T0);
        prop_assert_eq!(&out_a1, &out_b1);
        prop_assert_eq!(a.digest(), b.digest());

        // Move b through its state records, then carry on with both.
        let bytes = export(b.state());
        prop_assert_eq!(bytes.len() as u64, b.state_size());
        let mut b = Router::from_state(import(&bytes).unwrap()).unwrap();
        let (out_a2, _) = run(&mut a, &steps[cut..], cut as u64, now);
        let (out_b2, _) = run(&mut b, &steps[cut..], cut as u64, now);
        prop_assert_eq!(&out_a2, &out_b2);
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert_eq!(export(a.state()), export(b.state()));

        // Steps stay within one day, so Today holds every counted call.
        let all: Vec<Output> = out_a1.into_iter().chain(out_a2).collect();
        for group in [SG1, SG2] {
            let today = a.skill_group_real_time(group).unwrap().today.counts;
            let e = recompute_today(&all, &a, group);
            let pick = |c: &tandem_model::realtime::CallCounts| (
                c.calls_offered, c.calls_answered, c.answer_wait_time_ms, c.calls_handled, c.handle_time_ms,
                c.calls_abandoned, c.abandon_wait_time_ms, c.short_calls,
                c.service_level_calls_offered, c.service_level_calls, c.service_level_abandoned,
            );
            prop_assert_eq!(pick(&today), pick(&e), "skill group {}", group);
        }
    }
}
