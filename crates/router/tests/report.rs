//! A PG's re-report of a peripheral: the router's view of its agents and calls is made to agree
//! with the report, with counts that add up, and a report that agrees changes nothing.

mod common;
use common::*;
use tandem_model::domain::AgentState;
use tandem_model::ids::*;
use tandem_model::input::{
    AgentCallReport, AgentReport, Input, PeripheralReport, ReportPart, ReportedCallPhase,
    WaitingCallReport,
};
use tandem_model::output::{CallDisposition, EventCode, HistoricalRow, Output};

/// A script that hands each call to SG1's longest-available agent.
fn harness() -> Harness {
    use tandem_model::script::{NodeKind, SelectRule};
    Harness::new(vec![
        node(0, NodeKind::Start { next: 1 }),
        node(
            1,
            NodeKind::Select {
                rule: SelectRule::LongestAvailable,
                skill_groups: vec![SG1],
                none_next: 2,
            },
        ),
        node(2, NodeKind::Default),
    ])
}

fn all_agents(agents: Vec<AgentReport>) -> Input {
    agents_part(AgentId(0), AgentId(u32::MAX), agents)
}

fn agents_part(from: AgentId, through: AgentId, agents: Vec<AgentReport>) -> Input {
    Input::PeripheralReport(PeripheralReport {
        peripheral: PERIPHERAL,
        part: ReportPart::Agents {
            from,
            through,
            agents,
        },
    })
}

fn all_waiting(calls: Vec<WaitingCallReport>) -> Input {
    Input::PeripheralReport(PeripheralReport {
        peripheral: PERIPHERAL,
        part: ReportPart::Waiting {
            from: 0,
            through: u64::MAX,
            calls,
        },
    })
}

fn idle(agent: AgentId, state: AgentState, reason_code: u16) -> AgentReport {
    AgentReport {
        agent,
        state,
        reason_code,
        call: None,
    }
}

fn on_call(agent: AgentId, state: AgentState, call: AgentCallReport) -> AgentReport {
    AgentReport {
        agent,
        state,
        reason_code: 0,
        call: Some(call),
    }
}

fn call(call_id: u64, phase: ReportedCallPhase, group: SkillGroupId) -> AgentCallReport {
    AgentCallReport {
        call_id,
        phase,
        skill_group: group,
        call_type: Some(CT),
        service: None,
        router_call_key: None,
        leg_age_ms: 30_000,
        answered_age_ms: if phase == ReportedCallPhase::Ringing {
            0
        } else {
            10_000
        },
    }
}

fn waiting(call_id: u64, group: SkillGroupId) -> WaitingCallReport {
    WaitingCallReport {
        call_id,
        skill_group: Some(group),
        call_type: Some(CT),
        service: Some(SERVICE),
        router_call_key: None,
        leg_age_ms: 5_000,
    }
}

fn rejections(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) if e.code == EventCode::InputRejected => Some(e.message.clone()),
            _ => None,
        })
        .collect()
}

fn call_ends(out: &[Output]) -> Vec<(u64, CallDisposition)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Historical(h) => match &h.row {
                HistoricalRow::TerminationCallDetail(t) => Some((t.call.call_id, t.disposition)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The report of a busy peripheral: one agent of each kind, and a call waiting.
fn busy_report() -> (Input, Input) {
    (
        all_agents(vec![
            idle(A1, AgentState::Ready, 0),
            idle(A2, AgentState::NotReady, 3),
            on_call(
                A3,
                AgentState::TalkingIn,
                call(5, ReportedCallPhase::Talking, SG2),
            ),
            on_call(
                A4,
                AgentState::WorkReady,
                call(6, ReportedCallPhase::WrapUp, SG2),
            ),
        ]),
        all_waiting(vec![waiting(7, SG1)]),
    )
}

#[test]
fn a_router_that_lost_everything_takes_the_peripheral_from_its_report() {
    let mut h = harness();
    h.now_ms += 60_000;
    let (agents, calls) = busy_report();
    let mut out = h.input(agents);
    out.extend(h.input(calls));
    assert_eq!(rejections(&out), Vec::<String>::new());
    assert_eq!(h.state_of(A1), AgentState::Ready);
    assert_eq!(h.state_of(A2), AgentState::NotReady);
    assert_eq!(h.router.state().agent_rt.get(&A2).unwrap().reason_code, 3);
    assert_eq!(h.state_of(A3), AgentState::TalkingIn);
    assert_eq!(h.state_of(A4), AgentState::WorkReady);
    assert_eq!(h.router.agents_logged_on_count(), 4);

    let sg1 = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!((sg1.calls_q_now, sg1.calls_in_progress), (1, 0));
    let sg2 = h.router.skill_group_real_time(SG2).unwrap();
    // The talking call is in progress; the one in wrap-up has already left the Now counts.
    assert_eq!((sg2.calls_q_now, sg2.calls_in_progress), (0, 1));
    assert_eq!((sg2.talking_in, sg2.work_ready), (1, 1));
    // The answered calls count as answered once, with the wait the ages give (20 s).
    assert_eq!(sg2.today.counts.calls_answered, 2);
    assert_eq!(sg2.today.counts.answer_wait_time_ms, 40_000);
    let call5 = h.router.state().calls.get(&call_key(5)).unwrap();
    assert_eq!(call5.answered_ms, h.now_ms - 10_000);
    assert_eq!(call5.leg_start_ms, h.now_ms - 30_000);

    // The calls go on as if the router had seen them from the start.
    h.now_ms += 5_000;
    let out = h.input(Input::CallEnded {
        call: call_key(5),
        after_call: tandem_model::input::AfterCall::Ready,
    });
    assert_eq!(rejections(&out), Vec::<String>::new());
    assert_eq!(call_ends(&out), vec![(5, CallDisposition::Handled)]);
    let out = h.set_state(A4, AgentState::Ready);
    assert_eq!(call_ends(&out), vec![(6, CallDisposition::Handled)]);
    assert_eq!(
        h.router
            .skill_group_real_time(SG2)
            .unwrap()
            .today
            .counts
            .calls_handled,
        2
    );
}

#[test]
fn a_report_that_agrees_changes_nothing() {
    let mut h = harness();
    let (agents, calls) = busy_report();
    h.input(agents.clone());
    h.input(calls.clone());
    let before = h.router.state().clone();
    // Same time: nothing may move, not even a family roll.
    let mut out = h.input(agents);
    out.extend(h.input(calls));
    assert!(out.is_empty(), "{out:?}");
    let mut after = h.router.state().clone();
    assert_eq!(after.scalars.last_seq, before.scalars.last_seq + 2);
    assert_eq!(
        after.scalars.counters.inputs_applied,
        before.scalars.counters.inputs_applied + 2
    );
    after.scalars.last_seq = before.scalars.last_seq;
    after.scalars.counters = before.scalars.counters;
    assert!(after == before, "an agreeing report changed the state");
}

#[test]
fn what_the_peripheral_no_longer_reports_is_forgotten() {
    let mut h = harness();
    h.login(A1, AgentState::Ready);
    h.login(A2, AgentState::Ready);
    h.login(A4, AgentState::Ready);
    // A1 talks on call 1; call 2 waits in SG1; call 3 rings at A4.
    h.input(Input::CallArrived {
        call: call_key(1),
        skill_group: Some(SG1),
        call_type: Some(CT),
        service: None,
        router_call_key: None,
    });
    h.input(Input::CallOffered {
        call: call_key(1),
        agent: A1,
        skill_group: None,
    });
    h.input(Input::CallAnswered { call: call_key(1) });
    for (id, group) in [(2, SG1), (3, SG2)] {
        h.input(Input::CallArrived {
            call: call_key(id),
            skill_group: Some(group),
            call_type: None,
            service: None,
            router_call_key: None,
        });
    }
    h.input(Input::CallOffered {
        call: call_key(3),
        agent: A4,
        skill_group: None,
    });
    h.now_ms += 20_000;

    // The peripheral restarted: A1 is NotReady, A2 and A4 logged off, nothing waits.
    let mut out = h.input(all_agents(vec![idle(A1, AgentState::NotReady, 2)]));
    out.extend(h.input(all_waiting(vec![])));
    assert_eq!(rejections(&out), Vec::<String>::new());
    let mut ends = call_ends(&out);
    ends.sort_by_key(|(id, _)| *id);
    assert_eq!(
        ends,
        vec![
            (1, CallDisposition::Handled),
            (2, CallDisposition::Unreported),
            (3, CallDisposition::Unreported)
        ]
    );
    assert_eq!(h.state_of(A1), AgentState::NotReady);
    assert_eq!(h.state_of(A2), AgentState::LoggedOff);
    assert_eq!(h.state_of(A4), AgentState::LoggedOff);
    assert!(h.router.state().calls.is_empty());
    let sg1 = h.router.skill_group_real_time(SG1).unwrap();
    assert_eq!((sg1.calls_q_now, sg1.calls_in_progress), (0, 0));
    // The talking call ended unseen: handled, with the talk time up to now.
    assert_eq!(sg1.today.counts.calls_handled, 1);
    assert_eq!(sg1.today.counts.calls_abandoned, 0);
}

#[test]
fn a_part_speaks_only_for_its_own_range() {
    let mut h = harness();
    for agent in [A1, A2, A3] {
        h.login(agent, AgentState::Ready);
    }
    // The first part covers A1 and A2 only: A3 is not its business.
    let out = h.input(agents_part(
        AgentId(0),
        A2,
        vec![idle(A2, AgentState::NotReady, 1)],
    ));
    assert_eq!(rejections(&out), Vec::<String>::new());
    assert_eq!(h.state_of(A1), AgentState::LoggedOff);
    assert_eq!(h.state_of(A2), AgentState::NotReady);
    assert_eq!(h.state_of(A3), AgentState::Ready);
    h.input(agents_part(AgentId(A2.0 + 1), AgentId(u32::MAX), vec![]));
    assert_eq!(h.state_of(A3), AgentState::LoggedOff);
    assert_eq!(h.router.agents_logged_on_count(), 1);
}

#[test]
fn a_reservation_stays_while_the_peripheral_shows_the_agent_ready() {
    let mut h = harness();
    h.login(A1, AgentState::Ready);
    h.router.state().agent_rt.get(&A1).unwrap();
    // The router reserves A1 for a routed call.
    let out = h.request(1);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ReserveAgent { agent, .. } if *agent == A1)));
    assert_eq!(h.state_of(A1), AgentState::Reserved);
    let out = h.input(all_agents(vec![idle(A1, AgentState::Ready, 0)]));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.state_of(A1), AgentState::Reserved);
    // NotReady at the peripheral ends the reservation, and the PG is told.
    let out = h.input(all_agents(vec![idle(A1, AgentState::NotReady, 4)]));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ReleaseAgent { agent, .. } if *agent == A1)));
    assert_eq!(h.state_of(A1), AgentState::NotReady);
}

#[test]
fn a_report_that_cannot_be_true_is_refused_whole() {
    let mut h = harness();
    h.login(A1, AgentState::NotReady);
    let bad = [
        // Talking without a call.
        all_agents(vec![idle(A2, AgentState::TalkingIn, 0)]),
        // A call whose phase does not fit the agent's state.
        all_agents(vec![on_call(
            A3,
            AgentState::Hold,
            call(9, ReportedCallPhase::Talking, SG1),
        )]),
        // A4 is not a member of SG1.
        all_agents(vec![on_call(
            A4,
            AgentState::TalkingIn,
            call(9, ReportedCallPhase::Talking, SG1),
        )]),
        // Out of order.
        all_agents(vec![
            idle(A2, AgentState::Ready, 0),
            idle(A1, AgentState::Ready, 0),
        ]),
        // Outside its own range.
        agents_part(AgentId(0), A1, vec![idle(A2, AgentState::Ready, 0)]),
        // One call at two agents.
        all_agents(vec![
            on_call(
                A1,
                AgentState::TalkingIn,
                call(9, ReportedCallPhase::Talking, SG1),
            ),
            on_call(
                A2,
                AgentState::TalkingIn,
                call(9, ReportedCallPhase::Talking, SG1),
            ),
        ]),
        // Answered before it arrived.
        all_agents(vec![on_call(
            A1,
            AgentState::TalkingIn,
            AgentCallReport {
                answered_age_ms: 40_000,
                ..call(9, ReportedCallPhase::Talking, SG1)
            },
        )]),
        // An unknown agent, and an unknown skill group.
        all_agents(vec![idle(AgentId(4242), AgentState::Ready, 0)]),
        all_waiting(vec![waiting(1, SkillGroupId(999))]),
        // An empty range.
        agents_part(A2, A1, vec![]),
    ];
    for input in bad {
        let before = h.router.state().clone();
        let out = h.input(input.clone());
        assert_eq!(
            rejections(&out).len(),
            1,
            "{input:?} was not refused: {out:?}"
        );
        let mut after = h.router.state().clone();
        after.scalars.counters = before.scalars.counters;
        after.scalars.last_seq = before.scalars.last_seq;
        assert!(after == before, "{input:?} changed the state");
    }
}
