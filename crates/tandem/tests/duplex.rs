//! Duplex scenarios with real processes on loopback: both sides, the PGs under load, state
//! transfer, kills, pauses and a cut private link. Each test runs alone (see
//! `installation::one_at_a_time`), and every wait is bounded.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tandem::cluster::{FaultProxy, Installation, PgCountsCheck, Status};
use tandem_mds::Side;

const PAIRED_ENABLED: &str = "Paired Enabled";
const PAIRED_DISABLED: &str = "Paired Disabled";
const ISOLATED_ENABLED: &str = "Isolated Enabled";
const ISOLATED_DISABLED: &str = "Isolated Disabled";

/// Generous bounds for what has no target of its own: a start, a transfer, a rejoin.
const START_MS: u64 = 20_000;
/// The offered load per PG while sides fail.
const LOAD_CPS: f64 = 50.0;

/// Multi-process tests run one at a time: two installations at once would load the machine
/// enough to fire failure detectors falsely.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn installation(
    name: &str,
    contact_center: Option<&Path>,
    edit: impl FnOnce(&mut tandem_model::topology::Topology),
) -> Installation {
    Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        name,
        contact_center,
        edit,
    )
}

/// Starts A, then B, and waits until they pair with B taking A's state.
fn paired(install: &mut Installation) -> (Status, Status) {
    install.start_paired(START_MS)
}

/// A pair under load from both PGs, which reach both sides, after a while under that load.
fn paired_under_load(name: &str) -> Installation {
    let mut install = installation(name, None, |_| {});
    paired(&mut install);
    install.start_pg("pg1", LOAD_CPS);
    install.start_pg("pg2", LOAD_CPS);
    install.wait_pgs_reachable(Side::A, 2, START_MS);
    install.wait_pgs_reachable(Side::B, 2, START_MS);
    // A phase of the scenario: the pair works under load before anything fails.
    std::thread::sleep(Duration::from_secs(2));
    install
}

/// Waits for B to become Isolated Enabled after A failed at `failed_at`, within `limit_ms`.
fn b_takes_over_within(install: &Installation, failed_at: Instant, limit_ms: u64, what: &str) {
    install.wait_state(Side::B, ISOLATED_ENABLED, 5_000);
    let takeover = failed_at.elapsed();
    eprintln!("{what} to B enabled: {takeover:?}");
    assert!(
        takeover <= Duration::from_millis(limit_ms),
        "{what}: B took {takeover:?} to take over"
    );
}

/// Polls both sides every few milliseconds for `duration_ms` and fails if both ever report an
/// enabled state at once. A side that does not answer (paused) counts as not seen.
fn never_two_enabled(install: &Installation, duration_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    while Instant::now() < deadline {
        let a = install.status(Side::A);
        let b = install.status(Side::B);
        if let (Some(a), Some(b)) = (&a, &b) {
            if a.is_enabled() && b.is_enabled() {
                install.fail(&format!(
                    "never two enabled sides, but A is {} (epoch {}) and B is {} (epoch {})",
                    a.sync_state(),
                    a.epoch(),
                    b.sync_state(),
                    b.epoch()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Scenario a: B receives A's state; both report the pairing, the direction and equal state.
#[test]
fn b_started_after_a_receives_its_state() {
    let _alone = one_at_a_time();
    let mut install = installation("start", None, |_| {});
    let (_, b) = paired(&mut install);
    assert!(b.router_sync().ends_with("(A->B)"), "B: {}", b.text);
    let a = install.wait_status(Side::A, START_MS, "Router Sync (A->B)", |s| {
        s.router_sync().ends_with("(A->B)")
    });
    assert_eq!(a.field("State size now"), b.field("State size now"));
    install.wait_equal_digests(0, START_MS);
    let sync_a = install.rttest(Side::A, "sync").unwrap();
    let sync_b = install.rttest(Side::B, "sync").unwrap();
    assert!(
        sync_a.contains("(A->B)") && sync_a.contains("sent"),
        "{sync_a}"
    );
    assert!(
        sync_b.contains("(A->B)") && sync_b.contains("received"),
        "{sync_b}"
    );
    assert!(
        install.events(Side::B).contains("digest checked"),
        "{}",
        install.events(Side::B)
    );
    // The same facts on each side's Prometheus endpoint (refreshed every 100 ms).
    let deadline = Instant::now() + Duration::from_millis(START_MS);
    loop {
        let a = install.metrics(Side::A);
        let b = install.metrics(Side::B);
        if a.contains(r#"tandem_mds_sync_state{side="a",state="PairedEnabled"} 1"#)
            && b.contains(r#"tandem_mds_sync_state{side="b",state="PairedDisabled"} 1"#)
            && b.contains(r#"tandem_transfers_total{side="b",outcome="received"} 1"#)
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics:\n{a}\n{b}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The live-state dumps answer from the received state as from the sender's.
    for side in [Side::A, Side::B] {
        let groups = install.rttest(side, "skill-groups").unwrap();
        assert!(groups.lines().count() > 20, "{groups}");
        let call_types = install.rttest(side, "call-types").unwrap();
        assert!(call_types.lines().count() > 10, "{call_types}");
    }
}

/// Scenarios b and c: under load from two PGs the enabled side is killed; the other takes over
/// within a second, and the PGs lose nothing. The killed side restarts and takes the
/// survivor's state while the load goes on.
#[test]
fn killed_enabled_side_fails_over_and_rejoins() {
    let _alone = one_at_a_time();
    let mut install = paired_under_load("kill");

    let killed_at = Instant::now();
    install.kill("side-a");
    b_takes_over_within(&install, killed_at, 1_000, "kill -9 of A");

    // Scenario c: after a while alone under load, A comes back, takes B's state (A's MDS still
    // opens the session) and pairs.
    std::thread::sleep(Duration::from_secs(1));
    install.start_side(Side::A, &[]);
    let a = install.wait_state(Side::A, PAIRED_DISABLED, START_MS);
    install.wait_state(Side::B, PAIRED_ENABLED, START_MS);
    assert!(a.router_sync().ends_with("(B->A)"), "A: {}", a.text);
    let sync_b = install.rttest(Side::B, "sync").unwrap();
    assert!(
        sync_b.contains("(B->A)") && sync_b.contains("sent"),
        "{sync_b}"
    );
    std::thread::sleep(Duration::from_secs(1));

    let counts = install.stop_pgs(&["pg1", "pg2"]);
    for c in &counts {
        c.assert_nothing_lost();
        assert!(c.path_switches >= 1, "{c:?}: the PG never left side A");
        // Away from A and back at most a few times, not once per refused input.
        assert!(c.path_switches <= 6, "{c:?}: the PG swung between paths");
        // B answered the requests sent as A died once it took over, not after a PG timeout.
        assert!(
            c.route_rtt_us_max < 1_000_000,
            "{c:?}: an answer took a second"
        );
    }
    install.wait_equal_digests(a.delivered(), START_MS);
}

/// Scenario d: the receiver is killed in mid-transfer, and later the sender's transfer link is
/// dropped in mid-transfer. The sender keeps serving its PGs; each time the transfer is retried
/// and completes. The transfer link is throttled so that the state takes seconds to cross.
#[test]
fn interrupted_transfers_are_retried_while_the_sender_serves() {
    let _alone = one_at_a_time();
    let mut install = installation("transfer", None, |_| {});
    let proxy = FaultProxy::to(
        &install.topology,
        install.topology.side_b.transfer,
        Some(100_000),
    );
    let a_config = install.variant("a", |t| t.side_b.transfer = proxy.addr);
    install.start_side_with(Side::A, &a_config, &[]);
    install.start_pg("pg1", LOAD_CPS);
    install.start_pg("pg2", LOAD_CPS);
    install.wait_state(Side::A, ISOLATED_ENABLED, START_MS);

    // The receiver dies in mid-transfer.
    install.start_side(Side::B, &[]);
    install.wait_status(
        Side::B,
        START_MS,
        "a transfer session",
        Status::transfer_session_began,
    );
    install.kill("side-b");
    install.start_side(Side::B, &[]);
    install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
    install.wait_state(Side::A, PAIRED_ENABLED, START_MS);

    // The transfer link drops in mid-transfer: the link between the sides is dropped by
    // restarting B, and its new transfer is cut while under way.
    install.kill("side-b");
    install.wait_state(Side::A, ISOLATED_ENABLED, 5_000);
    install.start_side(Side::B, &[]);
    install.wait_status(
        Side::B,
        START_MS,
        "a transfer session",
        Status::transfer_session_began,
    );
    proxy.cut();
    install.wait_status(Side::B, START_MS, "the transfer abandoned", |s| {
        !s.transfer_under_way()
    });
    proxy.heal();
    let b = install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
    install.wait_state(Side::A, PAIRED_ENABLED, START_MS);
    let events = install.events(Side::B);
    assert!(events.contains("state transfer failed"), "{events}");
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        c.assert_nothing_lost();
    }
    install.wait_equal_digests(b.delivered(), START_MS);
    let sent = install.rttest(Side::A, "sync").unwrap();
    assert!(
        sent.lines().filter(|l| l.contains("sent")).count() >= 2,
        "{sent}"
    );
}

/// Scenario f: a side with another logic version is refused with an event naming both
/// versions, and the running side goes on serving.
#[test]
fn other_logic_version_is_refused() {
    let _alone = one_at_a_time();
    let mut install = installation("version", None, |_| {});
    install.start_side(Side::A, &[]);
    install.start_pg("pg1", LOAD_CPS);
    install.start_pg("pg2", LOAD_CPS);
    install.wait_state(Side::A, ISOLATED_ENABLED, START_MS);
    install.start_side(Side::B, &["--logic-build", "9.9.9-other"]);
    let deadline = Instant::now() + Duration::from_millis(START_MS);
    loop {
        let events = install.events(Side::A) + &install.events(Side::B);
        if events.contains("9.9.9-other") && events.contains(env!("CARGO_PKG_VERSION")) {
            break;
        }
        if Instant::now() >= deadline {
            install.fail("an event naming both logic versions");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let a = install.status(Side::A).unwrap();
    assert_eq!(a.sync_state(), ISOLATED_ENABLED, "{}", a.text);
    let b = install.status(Side::B).unwrap();
    assert!(!b.is_enabled(), "{}", b.text);
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        c.assert_nothing_lost();
    }
}

/// Scenario g: with the alarm limit below the state's size, the event is raised once.
#[test]
fn state_size_alarm_is_raised_once() {
    let _alone = one_at_a_time();
    let mut install = installation("alarm", None, |t| {
        t.mds.state_size_alarm_bytes = 50_000;
    });
    install.start_side(Side::A, &[]);
    install.start_pg("pg1", LOAD_CPS);
    install.start_pg("pg2", LOAD_CPS);
    install.wait_state(Side::A, ISOLATED_ENABLED, START_MS);
    let raised = |install: &Installation| {
        let events = install.events(Side::A);
        let count = events
            .lines()
            .filter(|l| l.contains("has grown beyond the alarm limit"))
            .count();
        (count, events)
    };
    let deadline = Instant::now() + Duration::from_millis(START_MS);
    while raised(&install).0 == 0 {
        assert!(
            Instant::now() < deadline,
            "no alarm: {}",
            raised(&install).1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The state stays above the limit under load for a while: still one event.
    std::thread::sleep(Duration::from_secs(2));
    let (count, events) = raised(&install);
    assert_eq!(count, 1, "{events}");
    install.stop_pgs(&["pg1", "pg2"]);
}

/// Scenario e2: the enabled side is paused (SIGSTOP) under load. The other takes over within
/// 1.2 s with no routing client timing out; the woken side finds the later epoch, stops
/// ordering and rejoins by state transfer.
#[test]
fn paused_enabled_side_is_fenced_and_rejoins() {
    let _alone = one_at_a_time();
    let mut install = paired_under_load("pause");

    let paused_at = Instant::now();
    install.pause("side-a");
    b_takes_over_within(&install, paused_at, 1_200, "SIGSTOP of A");
    std::thread::sleep(Duration::from_secs(2));
    install.resume("side-a");
    never_two_enabled(&install, 2_000);
    let a = install.wait_state(Side::A, PAIRED_DISABLED, START_MS);
    assert!(a.router_sync().ends_with("(B->A)"), "A: {}", a.text);
    install.wait_state(Side::B, PAIRED_ENABLED, START_MS);
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        c.assert_nothing_lost();
    }
    install.wait_equal_digests(a.delivered(), START_MS);
}

/// Scenario e: only the private link is cut (a proxy between the sides), both sides up.
/// Exactly one side is enabled, with two PGs, with three, and with the PGs cut off from A.
#[test]
fn cut_private_link_leaves_one_enabled_side() {
    let _alone = one_at_a_time();
    for pgs in [2, 3] {
        let mut install = installation(&format!("cut{pgs}"), None, |t| {
            if pgs == 3 {
                Installation::extra_pg(t, "pg3", 3);
            }
        });
        let proxy = FaultProxy::to(&install.topology, install.topology.side_b.private, None);
        let a_config = install.variant("a", |t| t.side_b.private = proxy.addr);
        install.start_side_with(Side::A, &a_config, &[]);
        install.start_side(Side::B, &[]);
        install.wait_state(Side::A, PAIRED_ENABLED, START_MS);
        install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
        let names: Vec<String> = (1..=pgs).map(|n| format!("pg{n}")).collect();
        for name in &names {
            install.start_pg(name, LOAD_CPS);
        }
        install.wait_pgs_reachable(Side::B, pgs, START_MS);
        std::thread::sleep(Duration::from_secs(1));

        proxy.cut();
        never_two_enabled(&install, 3_000);
        let a = install.status(Side::A).unwrap();
        let b = install.status(Side::B).unwrap();
        assert_eq!(a.sync_state(), ISOLATED_ENABLED, "{pgs} PGs: A\n{}", a.text);
        assert!(!b.is_enabled(), "{pgs} PGs: B\n{}", b.text);

        proxy.heal();
        let b = install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
        install.wait_state(Side::A, PAIRED_ENABLED, START_MS);
        install.wait_equal_digests(b.delivered(), START_MS);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for c in install.stop_pgs(&names) {
            if c.pg != "pg3" {
                c.assert_nothing_lost();
            }
        }
    }
}

/// Scenario e, the last case: the private link is cut and the PGs cannot reach side A either;
/// B takes over and A stops ordering.
#[test]
fn cut_private_link_and_pgs_cut_from_a_enables_b_only() {
    let _alone = one_at_a_time();
    let mut install = installation("cut-a", None, |_| {});
    let private = FaultProxy::to(&install.topology, install.topology.side_b.private, None);
    let public_a = FaultProxy::to(&install.topology, install.topology.side_a.public, None);
    let a_config = install.variant("a", |t| t.side_b.private = private.addr);
    let pg_config = install.variant("pg", |t| t.side_a.public = public_a.addr);
    install.start_side_with(Side::A, &a_config, &[]);
    install.start_side(Side::B, &[]);
    install.wait_state(Side::A, PAIRED_ENABLED, START_MS);
    install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
    install.start_pg_with("pg1", &pg_config, LOAD_CPS);
    install.start_pg_with("pg2", &pg_config, LOAD_CPS);
    install.wait_pgs_reachable(Side::A, 2, START_MS);
    std::thread::sleep(Duration::from_secs(1));

    private.cut();
    public_a.cut();
    never_two_enabled(&install, 3_000);
    let a = install.status(Side::A).unwrap();
    let b = install.status(Side::B).unwrap();
    assert_eq!(b.sync_state(), ISOLATED_ENABLED, "B\n{}", b.text);
    assert_eq!(a.sync_state(), ISOLATED_DISABLED, "A\n{}", a.text);
    // The links heal: B holds the later epoch, so A takes B's state and they pair. (The PGs
    // stop only then: side B alone needs both of them for its majority, and a PG that has
    // drained leaves.)
    private.heal();
    public_a.heal();
    let a = install.wait_state(Side::A, PAIRED_DISABLED, START_MS);
    assert!(a.router_sync().ends_with("(B->A)"), "A: {}", a.text);
    install.wait_state(Side::B, PAIRED_ENABLED, START_MS);
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        c.assert_nothing_lost();
    }
    install.wait_equal_digests(a.delivered(), START_MS);
}

/// Both sides lose their state at once and are started from configuration (`--cold-start`)
/// while the PGs run. Asked for inputs the lost sides had acknowledged, each PG starts a new
/// incarnation with what it still holds, and takes the new sides' outputs, numbered anew; the
/// pair serves again.
#[test]
fn both_sides_cold_started_under_load_serve_again() {
    let _alone = one_at_a_time();
    let mut install = paired_under_load("cold");
    install.kill("side-a");
    install.kill("side-b");
    install.start_side(Side::A, &["--cold-start"]);
    install.wait_status(Side::A, START_MS, "answering rttest", |_| true);
    install.start_side(Side::B, &["--cold-start"]);
    install.wait_state(Side::A, PAIRED_ENABLED, START_MS);
    install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
    // A phase of the scenario: the new pair serves the load for a while.
    std::thread::sleep(Duration::from_secs(2));
    let a = install.status(Side::A).unwrap();
    let counts = install.stop_pgs(&["pg1", "pg2"]);
    for c in &counts {
        assert!(c.incarnations_started >= 1, "{c:?}: no new incarnation");
        assert!(
            c.reports_sent >= 2,
            "{c:?}: no re-report after the cold start"
        );
        assert_eq!(c.inputs_acknowledged, c.inputs_sent, "{c:?}");
        assert_eq!(c.route_requests_answered_more_than_once, 0, "{c:?}");
        // Every request ends answered or timed out; only one whose answer died with both
        // sides can time out.
        assert_eq!(
            c.route_requests_answered + c.route_requests_timed_out,
            c.route_requests_sent,
            "{c:?}"
        );
        assert!(c.route_requests_timed_out <= 2, "{c:?}");
        assert!(c.outputs_received > 0, "{c:?}");
    }
    install.wait_equal_digests(a.delivered(), START_MS);
    // The routers started from configuration alone; the PGs' re-reports told them the rest.
    assert_routers_agree_with_pgs(&install, &counts);
}

/// The agents by state, with Ready and Reserved counted together: the router reserves and
/// releases agents by itself, so those two may differ from what a stopped PG last saw.
fn agents_settled(states: &std::collections::BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut settled: std::collections::BTreeMap<String, u64> = Default::default();
    for (state, count) in states {
        let state = match state.as_str() {
            "Ready" | "Reserved" => "Ready or Reserved",
            other => other,
        };
        *settled.entry(state.to_string()).or_default() += count;
    }
    settled.into_iter().collect()
}

/// Both routers see every stopped PG's agents in the states the PG last had them.
fn assert_routers_agree_with_pgs(install: &Installation, counts: &[tandem::cluster::PgCounts]) {
    for side in [Side::A, Side::B] {
        let router = install.agent_states(side);
        for c in counts {
            let seen = router.get(&c.pg).cloned().unwrap_or_default();
            assert_eq!(
                agents_settled(&seen),
                agents_settled(&c.agents_by_state),
                "{side:?}'s router and {} disagree about its agents",
                c.pg
            );
        }
    }
}

/// A PG killed and started again under load: its new process re-reports its peripheral, so the
/// agents and calls the old process left in the router are replaced, its agents log on again
/// without a refusal, and at the end both routers see every agent where the PG has it.
#[test]
fn restarted_pg_replaces_what_its_last_process_left() {
    let _alone = one_at_a_time();
    let mut install = paired_under_load("pgrestart");
    install.kill("pg1");
    // Another seed: the new process's peripherals go their own way from the start, as a real
    // ACD's would after a restart, instead of replaying the old process's inputs.
    let config = install.config.clone();
    install.start_pg_args("pg1", &config, LOAD_CPS, 2, &["--seed", "2"]);
    install.wait_pgs_reachable(Side::A, 2, START_MS);
    // A phase of the scenario: the new PG process logs its agents on and takes calls.
    std::thread::sleep(Duration::from_secs(4));
    let counts = install.stop_pgs(&["pg1", "pg2"]);
    let a = install.status(Side::A).unwrap();
    for c in &counts {
        assert!(c.reports_sent >= 1, "{c:?}");
        assert_eq!(c.inputs_acknowledged, c.inputs_sent, "{c:?}");
        assert_eq!(c.route_requests_answered_more_than_once, 0, "{c:?}");
        assert!(!c.agents_by_state.is_empty(), "{c:?}");
    }
    install.wait_equal_digests(a.delivered(), START_MS);
    assert_routers_agree_with_pgs(&install, &counts);
    // Nothing either PG process sent was refused: not a login of an agent the old process had
    // left logged on, nor a call id it had left in use.
    for side in [Side::A, Side::B] {
        let metrics = install.metrics(side);
        let side_label = if side == Side::A { "a" } else { "b" };
        let rejected =
            format!("tandem_router_inputs_total{{side=\"{side_label}\",outcome=\"rejected\"}} 0");
        assert!(
            metrics.contains(&rejected),
            "{side:?} refused inputs:\n{metrics}"
        );
    }
}

/// A poison input (planted: test builds panic applying it) crashes both sides at once, and
/// again when its PG sends it to the pair restarted from configuration, under a new
/// incarnation's numbers. The third start quarantines it, and the pair serves again with
/// nothing lost: the PG's every input acknowledged, the poison included.
#[test]
fn poison_input_is_quarantined_after_crashing_both_sides_twice() {
    let _alone = one_at_a_time();
    let mut install = installation("poison", None, |_| {});
    paired(&mut install);
    let config = install.config.clone();
    let poison = format!(
        r#"{{"AgentLogout":{{"agent":100000,"reason_code":{}}}}}"#,
        u16::MAX
    );
    install.start_pg_args(
        "pg1",
        &config,
        LOAD_CPS,
        2,
        &["--inject-input-json", &poison],
    );
    install.start_pg("pg2", LOAD_CPS);
    for crash in 1..=2 {
        for side in ["side-a", "side-b"] {
            let code = install.wait_exit(side, START_MS);
            assert_eq!(code, Some(70), "{side}, crash {crash}");
        }
        install.start_side(Side::A, &["--cold-start"]);
        install.wait_status(Side::A, START_MS, "answering rttest", |_| true);
        install.start_side(Side::B, &["--cold-start"]);
    }
    install.wait_state(Side::A, PAIRED_ENABLED, START_MS);
    install.wait_state(Side::B, PAIRED_DISABLED, START_MS);
    install.wait_pgs_reachable(Side::A, 2, START_MS);
    // A phase of the scenario: the pair serves with the poison skipped.
    std::thread::sleep(Duration::from_secs(2));
    let events = install.events(Side::A);
    assert!(events.contains("quarantined"), "{events}");
    let a = install.status(Side::A).unwrap();
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        assert_eq!(c.inputs_acknowledged, c.inputs_sent, "{c:?}");
        assert_eq!(c.route_requests_answered_more_than_once, 0, "{c:?}");
        assert!(c.route_requests_answered > 0, "{c:?}");
    }
    install.wait_equal_digests(a.delivered(), START_MS);
}
