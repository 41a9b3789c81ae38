//! The simulator's reactions to single router outputs, scripted by hand: queueing and the
//! caller's patience, late and duplicate answers, releases, and outputs it cannot match.

mod common;

use common::*;
use tandem_model::config::{ContactCenter, LabelTarget};
use tandem_model::{
    AgentId, AnswerKind, Input, OrderedInput, Output, PgId, RouteAnswer, RouteEndReason,
    RouteRequestKey, RouterCallKey, SkillGroupId,
};
use tandem_pg::{LoadParams, TrafficSim};

const PG: PgId = PgId(1);

fn answer(kind: AnswerKind, target: Option<LabelTarget>) -> RouteAnswer {
    RouteAnswer {
        kind,
        label: String::new(),
        label_id: None,
        target,
    }
}

fn response(key: RouteRequestKey, kind: AnswerKind, target: Option<LabelTarget>) -> Output {
    response_full(PG, key, kind, target, false)
}

fn response_full(
    pg: PgId,
    key: RouteRequestKey,
    kind: AnswerKind,
    target: Option<LabelTarget>,
    repeat: bool,
) -> Output {
    Output::RouteResponse {
        pg,
        key,
        router_call_key: RouterCallKey(key.request_id),
        answer: answer(kind, target),
        repeat,
    }
}

fn reserve(agent: AgentId, key: RouteRequestKey) -> Output {
    Output::ReserveAgent {
        pg: PG,
        peripheral: Default::default(),
        agent,
        skill_group: SkillGroupId(10_000),
        router_call_key: RouterCallKey(key.request_id),
        key,
    }
}

/// One PG with one agent, post-routed calls only, every agent logged in Ready.
fn one_agent() -> (ContactCenter, AgentId, LoadParams) {
    let cc = small_cc(1, 1);
    let agent = cc.agents[0].id;
    let params = LoadParams {
        calls_per_second: 0.2,
        pre_route_share: 0.0,
        logged_on_share: 1.0,
        not_ready_probability: 0.0,
        outbound_probability: 0.0,
        patience_mean_ms: 20_000,
        ..LoadParams::default()
    };
    (cc, agent, params)
}

fn first_key(all: &[OrderedInput]) -> RouteRequestKey {
    all.iter()
        .find_map(|i| match &i.input {
            Input::RouteRequest(r) => Some(r.key),
            _ => None,
        })
        .expect("a call arrived")
}

/// Drives a run in which the first request is queued and, when `deliver_after_ms` is given,
/// delivered to the agent on the first TimeTick that much later; every later request is
/// answered Default.
fn queued_run(deliver_after_ms: Option<u64>) -> (TrafficSim, Vec<OrderedInput>) {
    let (cc, agent, params) = one_agent();
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut queued_at = None;
    let all = drive(&mut sim, START_MS + 300_000, |input| match &input.input {
        Input::RouteRequest(r) if r.key.request_id == 1 => {
            queued_at = Some(input.time_ms);
            vec![response(r.key, AnswerKind::Queued, None)]
        }
        Input::RouteRequest(r) => vec![response(r.key, AnswerKind::Default, None)],
        Input::TimeTick => match (queued_at, deliver_after_ms) {
            (Some(at), Some(after)) if input.time_ms >= at + after => {
                queued_at = None;
                let key = RouteRequestKey {
                    routing_client: cc.routing_clients[0].id,
                    pg_incarnation: 1,
                    request_id: 1,
                };
                vec![
                    Output::DeliverQueuedCall {
                        pg: PG,
                        key,
                        router_call_key: RouterCallKey(1),
                        answer: answer(AnswerKind::Label, Some(LabelTarget::Agent(agent))),
                    },
                    reserve(agent, key),
                ]
            }
            _ => vec![],
        },
        _ => vec![],
    });
    (sim, all)
}

fn ended_at(all: &[OrderedInput], key: RouteRequestKey) -> Option<(u64, RouteEndReason)> {
    all.iter().find_map(|i| match i.input {
        Input::RouteRequestEnded { key: k, reason } if k == key => Some((i.time_ms, reason)),
        _ => None,
    })
}

#[test]
fn a_queued_caller_hangs_up_when_patience_runs_out() {
    let (sim, all) = queued_run(None);
    let key = first_key(&all);
    let requested_at = all
        .iter()
        .find(|i| matches!(&i.input, Input::RouteRequest(r) if r.key == key))
        .unwrap()
        .time_ms;
    let (ended, reason) = ended_at(&all, key).expect("the caller gave up");
    assert_eq!(reason, RouteEndReason::CallerAbandoned);
    // The patience is drawn when the Queued answer arrives, at the first step after the request.
    assert!(
        ended > requested_at + STEP_MS,
        "patience of {} ms",
        ended - requested_at
    );
    // A post-routed call is abandoned at its peripheral too, at the same time.
    let leg_abandoned = all
        .iter()
        .any(|i| matches!(i.input, Input::CallAbandoned { .. }) && i.time_ms == ended);
    assert!(leg_abandoned);
    assert_eq!(sim.stats().calls_abandoned_in_queue, 1);
    assert_eq!(sim.stats().route_requests_queued, 1);
    assert_eq!(sim.stats().deliveries, 0);
}

#[test]
fn a_delivery_within_patience_cancels_the_hang_up() {
    // The same seed draws the same patience; the run without delivery shows it is longer
    // than the delivery delay, so only the delivery can have prevented the hang-up.
    let (_, undelivered) = queued_run(None);
    let key = first_key(&undelivered);
    let (ended, _) = ended_at(&undelivered, key).unwrap();
    let queued_at = undelivered
        .iter()
        .find(|i| matches!(&i.input, Input::RouteRequest(r) if r.key == key))
        .unwrap()
        .time_ms;
    assert!(
        ended > queued_at + 1_000,
        "patience too short for this test"
    );

    let (sim, all) = queued_run(Some(500));
    assert_eq!(ended_at(&all, key), None);
    assert_eq!(sim.stats().deliveries, 1);
    assert_eq!(sim.stats().calls_abandoned_in_queue, 0);
    let offered = all
        .iter()
        .any(|i| matches!(i.input, Input::CallOffered { .. }));
    assert!(offered, "the delivered call was offered");
    let answered = all
        .iter()
        .any(|i| matches!(i.input, Input::CallAnswered { .. }));
    assert!(answered || sim.stats().calls_abandoned_ringing == 1);
}

#[test]
fn duplicate_repeated_late_and_unknown_answers_are_counted_not_obeyed() {
    let (cc, agent, params) = one_agent();
    let client = cc.routing_clients[0].id;
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut out = Vec::new();
    let mut key = None;
    let mut now = START_MS;
    while key.is_none() {
        now += STEP_MS;
        sim.poll(now, &mut out);
        key = out.iter().find_map(|i| match &i.input {
            Input::RouteRequest(r) => Some(r.key),
            _ => None,
        });
    }
    let key = key.unwrap();
    sim.on_output(now, &response(key, AnswerKind::Default, None));
    sim.on_output(
        now,
        &response_full(PG, key, AnswerKind::Default, None, true),
    );
    sim.on_output(now, &response(key, AnswerKind::Label, None));
    // A delivery and a reservation for the finished call come too late to matter, but the
    // router now holds the agent until it releases it.
    sim.on_output(
        now,
        &Output::DeliverQueuedCall {
            pg: PG,
            key,
            router_call_key: RouterCallKey(1),
            answer: answer(AnswerKind::Label, None),
        },
    );
    sim.on_output(now, &reserve(agent, key));
    assert_eq!(
        sim.agent_state(agent),
        Some(tandem_model::AgentState::Reserved)
    );
    // Unknown: another incarnation, an id never issued, an unknown agent, another PG.
    let unknown = RouteRequestKey {
        pg_incarnation: 9,
        ..key
    };
    sim.on_output(now, &response(unknown, AnswerKind::Default, None));
    let never = RouteRequestKey {
        routing_client: client,
        pg_incarnation: 1,
        request_id: 1_000,
    };
    sim.on_output(now, &response(never, AnswerKind::Default, None));
    sim.on_output(now, &reserve(AgentId(1), never));
    sim.on_output(
        now,
        &response_full(PgId(77), never, AnswerKind::Default, None, false),
    );
    // A release of the orphan reservation frees the agent.
    sim.on_output(
        now,
        &Output::ReleaseAgent {
            pg: PG,
            peripheral: Default::default(),
            agent,
            router_call_key: RouterCallKey(key.request_id),
        },
    );
    assert_eq!(
        sim.agent_state(agent),
        Some(tandem_model::AgentState::Ready)
    );

    let stats = sim.stats();
    assert_eq!(stats.route_requests_answered, 1);
    assert_eq!(stats.route_responses_repeated, 1);
    assert_eq!(stats.route_requests_answered_more_than_once, 1);
    assert_eq!(stats.calls_default_routed, 1);
    assert_eq!(stats.late_outputs, 2);
    assert_eq!(stats.ignored_outputs, 3);
    assert_eq!(stats.reservations, 1);
    assert_eq!(stats.releases, 1);
    assert_eq!(sim.calls_in_flight(), 0);
}

#[test]
fn a_release_before_the_offer_frees_the_agent_and_forgets_the_call() {
    let (cc, agent, params) = one_agent();
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut out = Vec::new();
    let mut now = START_MS;
    let key = loop {
        now += STEP_MS;
        sim.poll(now, &mut out);
        if let Some(key) = out.iter().find_map(|i| match &i.input {
            Input::RouteRequest(r) => Some(r.key),
            _ => None,
        }) {
            break key;
        }
    };
    sim.on_output(now, &reserve(agent, key));
    sim.on_output(
        now,
        &response(key, AnswerKind::Label, Some(LabelTarget::Agent(agent))),
    );
    assert_eq!(
        sim.agent_state(agent),
        Some(tandem_model::AgentState::Reserved)
    );
    sim.on_output(
        now,
        &Output::ReleaseAgent {
            pg: PG,
            peripheral: Default::default(),
            agent,
            router_call_key: RouterCallKey(key.request_id),
        },
    );
    assert_eq!(
        sim.agent_state(agent),
        Some(tandem_model::AgentState::Ready)
    );
    out.clear();
    sim.poll(now + 1_000, &mut out);
    assert!(!out
        .iter()
        .any(|i| matches!(i.input, Input::CallOffered { .. })));
    let stats = sim.stats();
    assert_eq!(stats.calls_released_before_offer, 1);
    assert_eq!(stats.releases, 1);
    assert_eq!(stats.calls_offered, 0);
}

#[test]
fn a_pre_routed_call_arrives_with_its_router_call_key_when_delivered() {
    let (cc, agent, params) = one_agent();
    let params = LoadParams {
        pre_route_share: 1.0,
        ..params
    };
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut out = Vec::new();
    let mut now = START_MS;
    let key = loop {
        now += STEP_MS;
        sim.poll(now, &mut out);
        assert!(!out
            .iter()
            .any(|i| matches!(i.input, Input::CallArrived { .. })));
        if let Some(key) = out.iter().find_map(|i| match &i.input {
            Input::RouteRequest(r) => Some(r.key),
            _ => None,
        }) {
            break key;
        }
    };
    sim.on_output(
        now,
        &response(key, AnswerKind::Label, Some(LabelTarget::Agent(agent))),
    );
    sim.on_output(now, &reserve(agent, key));
    out.clear();
    sim.poll(now + 100, &mut out);
    let kinds: Vec<_> = out.iter().map(|i| &i.input).collect();
    match kinds.as_slice() {
        [Input::CallArrived {
            call,
            skill_group: Some(_),
            call_type: Some(_),
            router_call_key: Some(rck),
            ..
        }, Input::CallOffered {
            call: offered,
            agent: a,
            skill_group: Some(_),
        }, ..] => {
            assert_eq!(*rck, RouterCallKey(key.request_id));
            assert_eq!(offered, call);
            assert_eq!(*a, agent);
            assert_eq!(call.peripheral, cc.agents[0].peripheral);
        }
        other => panic!("expected arrival then offer, got {other:?}"),
    }
}
