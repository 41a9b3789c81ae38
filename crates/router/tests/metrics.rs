//! Real-time metrics through the router, against hand-computed values.

mod common;
use common::*;
use tandem_model::domain::AgentState;
use tandem_model::input::{AfterCall, Input};
use tandem_model::output::{CallDisposition, HistoricalRow, Output};
use tandem_model::script::NodeKind;

fn harness() -> Harness {
    Harness::new(script_with(NodeKind::Default))
}

fn tcds(h: &Harness) -> Vec<tandem_model::output::TerminationCallDetail> {
    h.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Historical(r) => match &r.row {
                HistoricalRow::TerminationCallDetail(t) => Some(t.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_handled_call_counts_exact_wait_talk_hold_and_work() {
    let mut h = harness();
    h.login(A1, AgentState::Ready);
    // Wait 12.345 s, talk 60.001 s of which 5.5 s on hold, wrap-up 10.250 s.
    h.handled_call(1, SG1, A1, 12_345, 54_501, 5_500, 10_250);
    let g = h.router.skill_group_real_time(SG1).unwrap();
    let c = g.today.counts;
    assert_eq!(
        (c.calls_offered, c.calls_answered, c.calls_handled),
        (1, 1, 1)
    );
    assert_eq!(c.answer_wait_time_ms, 12_345);
    assert_eq!(c.talk_time_ms, 54_501);
    assert_eq!(c.hold_time_ms, 5_500);
    assert_eq!(c.work_time_ms, 10_250);
    assert_eq!(c.handle_time_ms, 54_501 + 5_500 + 10_250);
    assert_eq!(g.today.asa_ms, Some(12_345.0));
    assert_eq!(g.today.aht_ms, Some(70_251.0));
    // Answered within the 20 s threshold.
    assert_eq!(
        (c.service_level_calls_offered, c.service_level_calls),
        (1, 1)
    );
    assert_eq!(g.today.service_level, Some(1.0));
    // The call type and service get the same call.
    let ct = &h.router.call_types_real_time()[0];
    assert_eq!(ct.today.counts.handle_time_ms, 70_251);
    let t = &tcds(&h)[0];
    assert_eq!(t.disposition, CallDisposition::Handled);
    assert_eq!(
        (t.delay_ms, t.talk_ms, t.hold_ms, t.work_ms),
        (12_345, 54_501, 5_500, 10_250)
    );
    assert_eq!(t.end_ms - t.start_ms, 12_345 + 54_501 + 5_500 + 10_250);
    // Agent_Skill_Group_Real_Time carries it too.
    let asg = h
        .router
        .state()
        .agent_skill_group_rt
        .get(&(A1, SG1))
        .unwrap();
    assert_eq!(
        (
            asg.families.today.calls_handled,
            asg.families.today.handle_time_ms
        ),
        (1, 70_251)
    );
}

#[test]
fn handled_is_counted_when_wrap_up_ends_not_when_the_call_ends() {
    let mut h = harness();
    h.login(A1, AgentState::Ready);
    let call = call_key(1);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG1),
        call_type: None,
        service: None,
        router_call_key: None,
    });
    h.input(Input::CallOffered {
        call,
        agent: A1,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    h.now_ms += 1_000;
    h.input(Input::CallEnded {
        call,
        after_call: AfterCall::WorkNotReady,
    });
    assert_eq!(
        h.router
            .skill_group_real_time(SG1)
            .unwrap()
            .today
            .counts
            .calls_handled,
        0
    );
    assert_eq!(
        h.router.skill_group_real_time(SG1).unwrap().work_not_ready,
        1
    );
    h.now_ms += 2_000;
    h.set_state(A1, AgentState::NotReady);
    let c = h.router.skill_group_real_time(SG1).unwrap().today.counts;
    assert_eq!((c.calls_handled, c.work_time_ms), (1, 2_000));
}

#[test]
fn short_calls_are_neither_offered_nor_abandoned() {
    let mut h = harness();
    for (id, wait) in [(1, 4_999), (2, 5_000), (3, 25_000)] {
        let call = call_key(id);
        h.input(Input::CallArrived {
            call,
            skill_group: Some(SG1),
            call_type: Some(CT),
            service: None,
            router_call_key: None,
        });
        h.now_ms += wait;
        h.input(Input::CallAbandoned { call });
    }
    let c = h.router.skill_group_real_time(SG1).unwrap().today.counts;
    assert_eq!(c.short_calls, 1);
    assert_eq!((c.calls_offered, c.calls_abandoned), (2, 2));
    assert_eq!(c.abandon_wait_time_ms, 30_000);
    // 5 s is within the 20 s threshold, 25 s is not.
    assert_eq!(
        (c.service_level_calls_offered, c.service_level_abandoned),
        (2, 1)
    );
    let dispositions: Vec<_> = tcds(&h).iter().map(|t| t.disposition).collect();
    assert_eq!(
        dispositions,
        vec![
            CallDisposition::ShortCall,
            CallDisposition::Abandoned,
            CallDisposition::Abandoned
        ]
    );
}

#[test]
fn service_level_types_through_the_router() {
    // In SG1 (type 1, 20 s): answered at 10 s and 30 s, abandoned at 15 s.
    // In SG2 (type 2, 30 s, no short calls): the same calls.
    let mut h = harness();
    h.login(A3, AgentState::Ready);
    for group in [SG1, SG2] {
        h.handled_call(group.0 as u64, group, A3, 10_000, 1_000, 0, 0);
        h.handled_call(group.0 as u64 + 1, group, A3, 30_000, 1_000, 0, 0);
        let call = call_key(group.0 as u64 + 2);
        h.input(Input::CallArrived {
            call,
            skill_group: Some(group),
            call_type: None,
            service: None,
            router_call_key: None,
        });
        h.now_ms += 15_000;
        h.input(Input::CallAbandoned { call });
    }
    // Type 1: 1 within / (3 offered - 1 abandoned within) = 0.5.
    assert_eq!(
        h.router
            .skill_group_real_time(SG1)
            .unwrap()
            .today
            .service_level,
        Some(0.5)
    );
    // Type 2 with a 30 s threshold: 2 within / 3 offered.
    assert_eq!(
        h.router
            .skill_group_real_time(SG2)
            .unwrap()
            .today
            .service_level,
        Some(2.0 / 3.0)
    );
}

#[test]
fn agent_counts_follow_the_call_specific_state_rules() {
    let mut h = harness();
    h.login(A3, AgentState::Ready);
    let g1 = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!((g1.logged_on, g1.avail, g1.ready), (1, 1, 1));
    let call = call_key(1);
    h.input(Input::CallArrived {
        call,
        skill_group: Some(SG2),
        call_type: None,
        service: None,
        router_call_key: None,
    });
    h.input(Input::CallOffered {
        call,
        agent: A3,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call });
    // Talking for SG2; busy-other in SG1.
    assert_eq!(h.router.skill_group_real_time(SG2).unwrap().talking_in, 1);
    let g1 = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!((g1.busy_other, g1.avail, g1.talking_in), (1, 0, 0));
    // Agent_Skill_Group_Real_Time shows the same, per group.
    let state_in = |h: &Harness, g| {
        h.router
            .agent_skill_group_real_time(A3, g)
            .unwrap()
            .agent_state
    };
    assert_eq!(
        (state_in(&h, SG1), state_in(&h, SG2)),
        ("BusyOther", "TalkingIn")
    );
    h.input(Input::CallHeld { call });
    assert_eq!(h.router.skill_group_real_time(SG2).unwrap().hold, 1);
    h.input(Input::CallRetrieved { call });
    h.input(Input::CallEnded {
        call,
        after_call: AfterCall::NotReady,
    });
    let g1 = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!((g1.not_ready, g1.ready, g1.logged_on), (1, 0, 1));
    let summary = h.router.summary();
    assert_eq!(summary.agents_by_state["NotReady"], 1);
}

#[test]
fn to5_half_and_today_reset_on_their_boundaries() {
    let mut h = harness();
    h.login(A1, AgentState::Ready);
    h.handled_call(1, SG1, A1, 1_000, 1_000, 0, 0); // ends at 10:00:02
    let today = |h: &Harness| h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!(today(&h).to5.counts.calls_handled, 1);
    // To5 still holds it 4 min 50 s later, not at 5 min 10 s.
    h.now_ms = T0 + 290_000;
    h.input(Input::TimeTick);
    assert_eq!(today(&h).to5.counts.calls_handled, 1);
    h.now_ms = T0 + 310_000;
    h.input(Input::TimeTick);
    assert_eq!(today(&h).to5.counts.calls_handled, 0);
    assert_eq!(today(&h).half.counts.calls_handled, 1);
    // Half resets at 10:30; Today does not.
    h.now_ms = T0 + 30 * 60_000;
    h.input(Input::TimeTick);
    assert_eq!(today(&h).half.counts.calls_handled, 0);
    assert_eq!(today(&h).today.counts.calls_handled, 1);
    // Today resets at midnight UTC (14 hours after 10:00).
    h.now_ms = T0 + 14 * 3_600_000;
    h.input(Input::TimeTick);
    assert_eq!(today(&h).today.counts.calls_handled, 0);
}

#[test]
fn interval_rows_are_written_for_every_group_and_call_type_in_bounded_chunks() {
    let mut h = harness();
    h.login(A1, AgentState::Ready);
    h.handled_call(1, SG1, A1, 1_000, 1_000, 0, 0);
    h.now_ms = T0 + 30 * 60_000;
    let out = h.input(Input::TimeTick);
    let rows: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Historical(r) => Some((r.recovery_key, r.index, r.row.clone())),
            _ => None,
        })
        .collect();
    let groups: Vec<_> = rows
        .iter()
        .filter_map(|(_, _, r)| match r {
            HistoricalRow::SkillGroupInterval {
                skill_group,
                interval_start_ms,
                counts,
                ..
            } => Some((*skill_group, *interval_start_ms, counts.calls_handled)),
            _ => None,
        })
        .collect();
    assert_eq!(groups, vec![(SG1, T0, 1), (SG2, T0, 0)]);
    assert!(rows
        .iter()
        .any(|(_, _, r)| matches!(r, HistoricalRow::CallTypeInterval { .. })));
    assert!(rows.iter().any(|(_, _, r)| matches!(r, HistoricalRow::AgentSkillGroupInterval { agent, counts, .. } if *agent == A1 && counts.calls_handled == 1)));
    // Keyed by (RecoveryKey, index): all from this input, indexes 0, 1, 2, ...
    assert!(rows.iter().all(|(k, _, _)| *k == h.seq));
    assert!(rows
        .iter()
        .enumerate()
        .all(|(i, (_, index, _))| *index as usize == i));
    // A second tick writes no interval row again.
    let again = h.input(Input::TimeTick);
    assert!(!again.iter().any(|o| matches!(o, Output::Historical(_))));
}

#[test]
fn interval_flush_is_bounded_per_tick() {
    use tandem_model::generate::{generate, GenerateParams};
    let cc = generate(&GenerateParams {
        agents: 3_000,
        skill_groups: 300,
        call_types: 20,
        peripherals: 2,
        skill_groups_per_agent_max: 3,
        ..Default::default()
    });
    let mut router = tandem_router::Router::from_contact_center(&cc, T0).unwrap();
    let out = router.apply(
        1,
        &tandem_model::OrderedInput {
            time_ms: T0 + 30 * 60_000,
            input: Input::TimeTick,
        },
    );
    let rows = out
        .iter()
        .filter(|o| matches!(o, Output::Historical(_)))
        .count();
    assert!(rows <= tandem_router::INTERVAL_ROWS_PER_TICK_MAX, "{rows}");
    assert!(rows >= 320, "every group and call type first: {rows}");
    let mut total = rows;
    for i in 0..10 {
        let out = router.apply(
            2 + i,
            &tandem_model::OrderedInput {
                time_ms: T0 + 30 * 60_000 + 100 * (i + 1),
                input: Input::TimeTick,
            },
        );
        total += out.len();
    }
    // Agent skill group rows with no activity are not written, so 320 in all.
    assert_eq!(total, 320);
}
