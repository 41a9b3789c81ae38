//! The open-loop properties of the simulator: determinism, the arrival rate, the start-up and
//! the bound on calls in flight.

mod common;

use common::*;
use tandem_model::{Input, OrderedInput};
use tandem_pg::{LoadParams, TrafficSim, LOGIN_SPREAD_MS};

fn closed_loop_inputs(seed: u64) -> Vec<OrderedInput> {
    let cc = small_cc(30, 2);
    let mut sim = TrafficSim::new(&cc, fast_params(seed), START_MS);
    let mut router = FakeRouter::new(&cc, true);
    drive(&mut sim, START_MS + 180_000, |input| router.apply(input))
}

#[test]
fn same_seed_and_outputs_give_the_same_inputs_and_other_seeds_do_not() {
    let first = closed_loop_inputs(42);
    let again = closed_loop_inputs(42);
    assert!(first.len() > 1_000, "only {} inputs", first.len());
    assert_eq!(first, again);
    let other = closed_loop_inputs(43);
    assert_ne!(first, other);
}

#[test]
fn open_loop_is_deterministic_and_ordered_in_time() {
    let cc = small_cc(50, 2);
    let run = |seed| {
        let mut sim = TrafficSim::new(&cc, fast_params(seed), START_MS);
        let mut out = Vec::new();
        // Irregular poll bounds must not change what is sent.
        let mut now = START_MS;
        while now < START_MS + 60_000 {
            now += 1 + (now % 997);
            sim.poll(now, &mut out);
        }
        out
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    assert!(a.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));

    // One big poll gives the same inputs as many small ones.
    let mut sim = TrafficSim::new(&cc, fast_params(7), START_MS);
    let mut whole = Vec::new();
    sim.poll(a.last().unwrap().time_ms, &mut whole);
    assert_eq!(whole, a);
}

#[test]
fn arrivals_follow_the_requested_rate() {
    let cc = small_cc(10, 2);
    let rate = 50.0;
    let span_ms = 1_000_000;
    let params = LoadParams {
        calls_per_second: rate,
        ..LoadParams::default()
    };
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let arrivals_start = START_MS + LOGIN_SPREAD_MS;
    let mut out = Vec::new();
    let mut requests = 0u64;
    let mut now = START_MS;
    while now < arrivals_start + span_ms {
        now += 1_000;
        sim.poll(now, &mut out);
        requests += out
            .drain(..)
            .filter(|i| matches!(i.input, Input::RouteRequest(_)))
            .count() as u64;
    }
    let expected = rate * span_ms as f64 / 1000.0;
    let error = (requests as f64 - expected).abs() / expected;
    // The standard deviation of a Poisson count of 50,000 is about 0.45%.
    assert!(error < 0.02, "{requests} requests, expected {expected}");
    assert_eq!(sim.stats().route_requests_sent, requests);
    assert_eq!(sim.stats().arrivals_dropped, 0);
    // Nobody answered, so every request but the last few seconds' timed out at the client.
    let timed_out = sim.stats().route_requests_timed_out;
    assert_eq!(timed_out + sim.calls_in_flight() as u64, requests);
}

#[test]
fn start_brings_peripherals_online_then_logs_agents_in_within_the_window() {
    let cc = small_cc(200, 2);
    let params = LoadParams {
        logged_on_share: 0.5,
        not_ready_probability: 0.1,
        ..LoadParams::default()
    };
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut out = Vec::new();
    sim.poll(START_MS + LOGIN_SPREAD_MS - 1, &mut out);
    assert!(out[..2]
        .iter()
        .all(|i| matches!(i.input, Input::PeripheralOnline { .. }) && i.time_ms == START_MS));
    let logins: Vec<_> = out
        .iter()
        .filter_map(|i| match i.input {
            Input::AgentLogin { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(logins.len() + 2, out.len(), "only logins follow");
    assert!(
        (70..=130).contains(&logins.len()),
        "{} logins",
        logins.len()
    );
    let not_ready = logins
        .iter()
        .filter(|s| **s == tandem_model::AgentState::NotReady)
        .count();
    assert!(
        not_ready > 0 && not_ready < logins.len() / 3,
        "{not_ready} NotReady"
    );
    assert_eq!(
        sim.next_due_ms()
            .map(|t| t >= START_MS + LOGIN_SPREAD_MS - 1),
        Some(true)
    );
}

#[test]
fn arrivals_beyond_the_bound_are_dropped_and_counted() {
    let cc = small_cc(10, 1);
    let params = LoadParams {
        calls_per_second: 20.0,
        calls_in_flight_max: 3,
        ..LoadParams::default()
    };
    let mut sim = TrafficSim::new(&cc, params, START_MS);
    let mut out = Vec::new();
    let mut requests = 0;
    for step in 1..=300 {
        sim.poll(START_MS + step * 100, &mut out);
        requests += out
            .drain(..)
            .filter(|i| matches!(i.input, Input::RouteRequest(_)))
            .count() as u64;
        assert!(sim.calls_in_flight() <= 3);
    }
    let stats = sim.stats();
    assert!(stats.arrivals_dropped > 400, "{stats:#?}");
    assert_eq!(stats.calls_in_flight_peak, 3);
    // The client timeout frees room: more than the bound got through over 30 s.
    assert!(requests > 3);
    assert_eq!(stats.route_requests_sent, requests);
}

#[test]
fn next_due_lets_a_driver_jump_time() {
    let cc = small_cc(10, 1);
    let mut sim = TrafficSim::new(&cc, LoadParams::default(), START_MS);
    let mut out = Vec::new();
    let mut jumps = 0;
    while let Some(due) = sim.next_due_ms() {
        if due > START_MS + 60_000 {
            break;
        }
        let before = out.len();
        sim.poll(due, &mut out);
        assert!(out.len() > before, "polling at next_due_ms sent nothing");
        assert!(out[before..].iter().all(|i| i.time_ms == due));
        jumps += 1;
    }
    assert!(jumps > 10);
}
