//! The simulator in a closed loop with a strict fake router: every input it sends must be one
//! a router accepts, in time order, and every call must be accounted for.

mod common;

use common::*;
use proptest::prelude::*;
use tandem_model::{AgentState, Input};
use tandem_pg::{LoadParams, SimStats, TrafficSim};

/// Every call sent is finished by exactly one outcome or still in flight.
fn assert_calls_conserved(stats: &SimStats, in_flight: usize) {
    assert_eq!(
        stats.route_requests_sent,
        stats.calls_finished() + in_flight as u64,
        "{stats:#?}"
    );
}

#[test]
fn agents_go_offered_answered_ended_ready_and_never_get_an_illegal_input() {
    let cc = small_cc(20, 1);
    let mut sim = TrafficSim::new(&cc, fast_params(11), START_MS);
    let mut router = FakeRouter::new(&cc, false);
    let all = drive(&mut sim, START_MS + 600_000, |input| router.apply(input));

    let cycles = router.check_cycles();
    let stats = sim.stats().clone();
    assert!(cycles > 100, "only {cycles} whole call cycles: {stats:#?}");
    assert!(stats.calls_handled > 100, "{stats:#?}");
    assert!(
        stats.outbound_calls > 0 && stats.not_ready_periods > 0,
        "{stats:#?}"
    );
    assert!(stats.calls_abandoned_ringing + stats.calls_default_routed > 0);
    assert_eq!(stats.route_requests_answered, stats.route_requests_sent);
    assert_eq!(stats.route_requests_answered_more_than_once, 0);
    assert_eq!(stats.route_requests_timed_out, 0);
    assert_eq!((stats.ignored_outputs, stats.late_outputs), (0, 0));
    // Every reservation leads to an offer, except for calls still on their way at the end.
    let routed_in_flight = (stats.reservations - stats.calls_offered) as usize;
    assert!(routed_in_flight <= sim.calls_in_flight(), "{stats:#?}");
    assert_eq!(stats.inputs_sent as usize, sim_inputs(&all).len());
    assert_calls_conserved(&stats, sim.calls_in_flight());

    // Holds happened, and each held call was retrieved before it ended.
    let holds = all
        .iter()
        .filter(|i| matches!(i.input, Input::CallHeld { .. }))
        .count();
    assert!(holds > 10, "only {holds} holds");

    // The simulator's view of every agent equals the router's at the end of the loop.
    for (agent, fake) in &router.agents {
        let expected = match fake {
            FakeAgent::LoggedOff => AgentState::LoggedOff,
            FakeAgent::NotReady => AgentState::NotReady,
            FakeAgent::Ready => AgentState::Ready,
            FakeAgent::Reserved(_) | FakeAgent::Ringing(_) => AgentState::Reserved,
            FakeAgent::Talking(_) => AgentState::TalkingIn,
            FakeAgent::Held(_) => AgentState::Hold,
            FakeAgent::WorkReady => AgentState::WorkReady,
            FakeAgent::WorkNotReady => AgentState::WorkNotReady,
            FakeAgent::TalkingOut => AgentState::TalkingOut,
        };
        assert_eq!(sim.agent_state(*agent), Some(expected), "agent {agent}");
    }
}

#[test]
fn queueing_router_delivers_and_callers_abandon_without_disagreement() {
    // Few agents for the load, so calls queue, some get delivered and some callers give up,
    // including in the same batch as their delivery.
    let cc = small_cc(6, 1);
    let params = LoadParams {
        calls_per_second: 2.0,
        ..fast_params(5)
    };
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut router = FakeRouter::new(&cc, true);
    drive(&mut sim, START_MS + 600_000, |input| router.apply(input));
    router.check_cycles();
    let stats = sim.stats().clone();
    assert!(stats.route_requests_queued > 100, "{stats:#?}");
    assert!(stats.deliveries > 50, "{stats:#?}");
    assert!(stats.calls_abandoned_in_queue > 50, "{stats:#?}");
    assert_eq!(stats.ignored_outputs, 0, "{stats:#?}");
    // A late delivery reserves an agent for a caller who is gone; the release frees it.
    assert!(stats.releases <= stats.late_outputs, "{stats:#?}");
    assert_calls_conserved(&stats, sim.calls_in_flight());
}

#[test]
fn two_pgs_are_simulated_apart() {
    let cc = small_cc(20, 2);
    let mut sim = TrafficSim::new(
        &cc,
        LoadParams {
            pg: Some(tandem_model::PgId(2)),
            ..fast_params(3)
        },
        START_MS,
    );
    let mut router = FakeRouter::new(&cc, true);
    let all = drive(&mut sim, START_MS + 120_000, |input| router.apply(input));
    let pg2_peripheral = cc.peripherals.iter().find(|p| p.pg.0 == 2).unwrap().id;
    let pg2_agents: Vec<_> = cc
        .agents
        .iter()
        .filter(|a| a.peripheral == pg2_peripheral)
        .map(|a| a.id)
        .collect();
    let pg2_client = cc.routing_clients.iter().find(|c| c.pg.0 == 2).unwrap().id;
    assert!(sim.stats().calls_handled > 0);
    for input in sim_inputs(&all) {
        match &input.input {
            Input::PeripheralOnline { peripheral } => assert_eq!(*peripheral, pg2_peripheral),
            Input::AgentLogin { agent, .. }
            | Input::AgentStateChange { agent, .. }
            | Input::CallOffered { agent, .. } => assert!(pg2_agents.contains(agent)),
            Input::CallArrived { call, .. } => assert_eq!(call.peripheral, pg2_peripheral),
            Input::RouteRequest(r) => assert_eq!(r.key.routing_client, pg2_client),
            _ => {}
        }
    }
    let pg1_agent = cc
        .agents
        .iter()
        .find(|a| a.peripheral != pg2_peripheral)
        .unwrap();
    assert_eq!(sim.agent_state(pg1_agent.id), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the seed and the mix, the strict fake router accepts every input, time never
    /// goes back, and every call is accounted for.
    #[test]
    fn any_mix_stays_legal_and_conserves_calls(
        seed in any::<u64>(),
        pre_route_share in 0.0..=1.0f64,
        hold_probability in 0.0..=1.0f64,
        not_ready_probability in 0.0..=1.0f64,
        outbound_probability in 0.0..=1.0f64,
        wrap_up_mean_ms in prop_oneof![Just(0u64), 1u64..5_000],
        calls_per_second in 0.1..5.0f64,
        queueing in any::<bool>(),
    ) {
        let cc = small_cc(8, 1);
        let params = LoadParams {
            pre_route_share,
            hold_probability,
            not_ready_probability,
            outbound_probability,
            wrap_up_mean_ms,
            calls_per_second,
            ..fast_params(seed)
        };
        let mut sim = TrafficSim::new(&cc, params, START_MS);
        let mut router = FakeRouter::new(&cc, queueing);
        drive(&mut sim, START_MS + 120_000, |input| router.apply(input));
        router.check_cycles();
        let stats = sim.stats();
        prop_assert_eq!(stats.ignored_outputs, 0);
        prop_assert_eq!(stats.route_requests_answered_more_than_once, 0);
        prop_assert_eq!(
            stats.route_requests_sent,
            stats.calls_finished() + sim.calls_in_flight() as u64
        );
    }
}
