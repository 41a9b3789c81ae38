//! The real router driven by the real traffic simulator, as the demo and benchmarks run them.

use tandem::demo::EXAMPLE_CONTACT_CENTER;
use tandem::driver::{ClosedLoop, TICK_MS_DEFAULT};
use tandem_model::config::ContactCenter;
use tandem_model::output::{EventCode, HistoricalRow, Output};
use tandem_pg::{LoadParams, TrafficSim};
use tandem_router::records::{export, import};
use tandem_router::Router;

const T0: u64 = 1_795_255_200_000;

fn closed_loop(seed: u64) -> ClosedLoop {
    let cc = ContactCenter::from_toml_str(EXAMPLE_CONTACT_CENTER).unwrap();
    let load = LoadParams {
        calls_per_second: 1.5,
        talk_time_mean_ms: 60_000,
        seed,
        ..LoadParams::default()
    };
    let router = Router::from_contact_center(&cc, T0).unwrap();
    ClosedLoop::new(router, TrafficSim::new(&cc, load, T0), T0, TICK_MS_DEFAULT)
}

#[derive(Default, Debug)]
struct Seen {
    rejected: Vec<String>,
    script_errors: u64,
    route_call_details: u64,
    interval_rows: u64,
    responses: u64,
}

fn run(driver: &mut ClosedLoop, until_ms: u64, seen: &mut Seen) {
    driver.run_until(until_ms, |output| match output {
        Output::Event(e) if e.code == EventCode::InputRejected => {
            seen.rejected.push(e.message.clone())
        }
        Output::Event(e) if e.code == EventCode::ScriptError => seen.script_errors += 1,
        Output::Historical(r) => match r.row {
            HistoricalRow::RouteCallDetail(_) => seen.route_call_details += 1,
            HistoricalRow::SkillGroupInterval { .. } | HistoricalRow::CallTypeInterval { .. } => {
                seen.interval_rows += 1
            }
            _ => {}
        },
        Output::RouteResponse { repeat: false, .. } => seen.responses += 1,
        _ => {}
    });
}

#[test]
fn forty_minutes_of_simulated_load_are_accepted_whole_and_consistent() {
    let mut driver = closed_loop(7);
    let mut seen = Seen::default();
    // Check every invariant once a simulated minute, across the 10:30 interval boundary.
    for minute in 1..=40 {
        run(&mut driver, T0 + minute * 60_000, &mut seen);
        driver
            .router
            .check_invariants()
            .unwrap_or_else(|e| panic!("minute {minute}: {e}"));
    }
    assert!(
        seen.rejected.is_empty(),
        "{} rejected inputs, first: {:?}",
        seen.rejected.len(),
        seen.rejected.first()
    );
    assert_eq!(seen.script_errors, 0);
    let stats = driver.sim.stats().clone();
    assert!(stats.route_requests_sent > 3_000, "{stats:?}");
    assert!(stats.calls_handled > 1_500, "{stats:?}");
    // Exactly one answer per request, none lost to a client timeout.
    assert_eq!(stats.route_requests_answered_more_than_once, 0);
    assert_eq!(stats.route_requests_timed_out, 0);
    assert_eq!(seen.responses, stats.route_requests_answered);
    // One Route_Call_Detail per finished request.
    let router_calls_open = driver.router.state().router_calls.len() as u64;
    assert_eq!(
        seen.route_call_details + router_calls_open,
        stats.route_requests_sent
    );
    // 20 skill groups + 10 call types wrote their 10:00-10:30 interval rows.
    assert_eq!(seen.interval_rows, 30);
    // The router's calls are the simulator's calls: none leak.
    let summary = driver.router.summary();
    assert!(summary.service_level_today.is_some());
    assert!(
        driver.router.state().calls.len()
            <= driver.sim.calls_in_flight()
                + summary.agents_by_state["WorkReady"] as usize
                + summary.agents_by_state["WorkNotReady"] as usize
    );
}

#[test]
fn the_closed_loop_is_deterministic_and_survives_a_state_transfer() {
    let mut a = closed_loop(3);
    let mut b = closed_loop(3);
    let mut seen = Seen::default();
    run(&mut a, T0 + 300_000, &mut seen);
    run(&mut b, T0 + 300_000, &mut seen);
    assert_eq!(a.router.digest(), b.router.digest());
    // b's router goes through its state records mid-run; the loop carries on identically.
    b.router = Router::from_state(import(&export(b.router.state())).unwrap()).unwrap();
    run(&mut a, T0 + 600_000, &mut seen);
    run(&mut b, T0 + 600_000, &mut seen);
    assert_eq!(a.router.digest(), b.router.digest());
    assert_eq!(a.sim.stats(), b.sim.stats());
    // A different seed gives a different run.
    let mut c = closed_loop(4);
    run(&mut c, T0 + 300_000, &mut seen);
    assert_ne!(c.router.digest(), closed_loop_digest_at(3, T0 + 300_000));
}

fn closed_loop_digest_at(seed: u64, until_ms: u64) -> u128 {
    let mut driver = closed_loop(seed);
    run(&mut driver, until_ms, &mut Seen::default());
    driver.router.digest()
}

/// A state above `PARALLEL_STATE_BYTES_MIN` is imported and checked (the check on two threads):
/// the result equals the exported state and behaves identically, and a damaged stream is
/// refused.
#[test]
fn a_large_state_round_trips_through_the_two_thread_import() {
    use tandem_model::generate::{generate, GenerateParams};
    use tandem_router::records::state_size;
    use tandem_router::{ImportError, PARALLEL_STATE_BYTES_MIN, PREFETCH_STATE_BYTES_MIN};

    let cc = generate(&GenerateParams {
        agents: 6_000,
        skill_groups: 300,
        call_types: 60,
        peripherals: 4,
        skill_groups_per_agent_max: 5,
        ..GenerateParams::default()
    });
    let load = LoadParams::for_occupancy(6_000, 300.0, 0.85);
    let router = Router::from_contact_center(&cc, T0).unwrap();
    let mut a = ClosedLoop::new(router, TrafficSim::new(&cc, load, T0), T0, TICK_MS_DEFAULT);
    a.run_until(T0 + 40_000, |_| {});
    let state = a.router.snapshot();
    assert!(state_size(&state) >= PARALLEL_STATE_BYTES_MIN);
    assert!(state.calls.len() > 1_000 && state.requests.len() > 1_000);

    let bytes = export(&state);
    let imported = import(&bytes).unwrap();
    assert!(imported == state);
    // The imported router, fed what the live one is fed next, stays byte-identical.
    let mut b = Router::from_state(imported.clone()).unwrap();
    let first_seq = a.seq + 1;
    a.recorded = Some(Vec::new());
    a.run_until(T0 + 60_000, |_| {});
    let inputs = a.recorded.take().unwrap();
    assert!(inputs.len() > 1_000);
    let mut outputs_one_by_one = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        b.apply_into(first_seq + i as u64, input, &mut outputs_one_by_one);
    }
    assert_eq!(a.router.digest(), b.digest());

    // Applied as a batch, with the rows of the next inputs prefetched (the state is large
    // enough for the prefetch to run), the same inputs give the same outputs and state.
    assert!(state.scalars.state_size_max >= PREFETCH_STATE_BYTES_MIN);
    let mut c = Router::from_state(imported).unwrap();
    let mut outputs_batched = Vec::new();
    c.apply_batch(first_seq, &inputs, &mut outputs_batched);
    assert_eq!(outputs_batched, outputs_one_by_one);
    assert_eq!(c.digest(), b.digest());

    // A flipped byte is caught, and the same way every time.
    for fraction in [0.3, 0.6] {
        let mut damaged = bytes.clone();
        let at = (damaged.len() as f64 * fraction) as usize;
        damaged[at] ^= 0x40;
        let first = import(&damaged).unwrap_err();
        assert!(matches!(first, ImportError::Checksum { .. }), "{first}");
        assert_eq!(import(&damaged).unwrap_err(), first);
    }
}

/// Both sides lost their state (a cold start): a router built from configuration alone learns
/// the peripherals' agents and calls from their re-report, and from then on every agent and
/// call input is accepted and every agent is where its peripheral says.
#[test]
fn a_router_started_from_configuration_takes_the_peripherals_state_from_their_report() {
    let cc = ContactCenter::from_toml_str(EXAMPLE_CONTACT_CENTER).unwrap();
    let mut driver = closed_loop(5);
    let mut before = Seen::default();
    run(&mut driver, T0 + 300_000, &mut before);
    assert!(before.rejected.is_empty(), "{:?}", before.rejected.first());
    let logged_on = driver.router.agents_logged_on_count();
    assert!(logged_on > 10, "{logged_on} agents logged on");

    driver.router = Router::from_contact_center(&cc, driver.now_ms).unwrap();
    assert_eq!(driver.router.agents_logged_on_count(), 0);
    driver.sim.report_peripherals();
    let mut after = Seen::default();
    for minute in 6..=15 {
        run(&mut driver, T0 + minute * 60_000, &mut after);
        driver
            .router
            .check_invariants()
            .unwrap_or_else(|e| panic!("minute {minute}: {e}"));
    }
    // Only what the old router alone knew can be refused: the route requests it had taken.
    let about_agents_or_calls: Vec<&String> = after
        .rejected
        .iter()
        .filter(|m| !m.contains("route request"))
        .collect();
    assert!(
        about_agents_or_calls.is_empty(),
        "{} refused, first: {:?}",
        about_agents_or_calls.len(),
        about_agents_or_calls.first()
    );
    assert!(driver.sim.stats().reports_sent >= 1);
    for agent in &cc.agents {
        let router_state = driver
            .router
            .state()
            .agent_rt
            .get(&agent.id)
            .map(|row| row.state);
        assert_eq!(
            router_state,
            driver.sim.agent_state(agent.id),
            "agent {}",
            agent.id
        );
    }
    assert!(driver.router.agents_logged_on_count() > 10);
}
