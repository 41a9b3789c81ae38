//! Distributor AWs as real processes on loopback: the AW database follows the feed through a
//! kill -9 of the side feeding it and ends equal to the router's rows; a configuration change
//! reaches every AW database; updateaw rebuilds a deleted AW database and one whose
//! configuration version was damaged. One distributor writes SQLite, the other PostgreSQL when
//! `TANDEM_TEST_POSTGRES_URL` names a server. An AW database that refuses the feed's writes for
//! good makes its distributor start over from a snapshot, and ends equal to the router's rows.
//! Every wait is bounded.

use std::path::Path;
use std::time::{Duration, Instant};
use tandem::cluster::{add_distributor, Installation, PgCountsCheck};
use tandem_db::aw::AwDb;
use tandem_db::test_postgres::{postgres_admin_url, PostgresDatabase};
use tandem_mds::Side;
use tandem_model::topology::SideName;

const START_MS: u64 = 20_000;
const LOAD_CPS: f64 = 50.0;
const WAIT_MS: u64 = 30_000;

/// `rttest feed-digest` on a side: (frame, aw_digest) when nothing was applied since the tick.
fn router_aw_digest(install: &Installation, side: Side) -> Option<(u64, String)> {
    let text = install.rttest(side, "feed-digest")?;
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    if field("at_tick")? != "true" {
        return None;
    }
    Some((field("frame")?.parse().ok()?, field("aw_digest")?))
}

/// `tandem aw digest`: (frame, aw_digest) when no frame was written while reading.
fn aw_digest(install: &Installation, name: &str) -> Option<(u64, String)> {
    let out = install.tandem(&["aw", "digest", "--name", name]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |field: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{field}=")).map(str::to_string))
    };
    if field("settled")? != "true" {
        return None;
    }
    Some((field("frame")?.parse().ok()?, field("aw_digest")?))
}

/// Waits until the distributor's AW database holds the router's rows at one frame.
fn wait_aw_db_equals_router(install: &Installation, name: &str, side: Side) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    let mut last = None;
    while Instant::now() < deadline {
        if let (Some(router), Some(aw)) =
            (router_aw_digest(install, side), aw_digest(install, name))
        {
            if router == aw {
                return;
            }
            last = Some((router, aw));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    install.fail(&format!(
        "distributor {name}'s AW database equal to side {side}'s rows at one frame; last \
         (router, aw) {last:?}"
    ));
}

#[test]
fn distributors_follow_the_feed_through_a_failover_and_updateaw_rebuilds() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let postgres = postgres_admin_url("distributor test")
        .map(|url| rt.block_on(PostgresDatabase::create(&url)));
    let aw2_url = postgres.as_ref().map(|db| db.url.clone());
    let mut install = Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "distributors",
        None,
        |topology| {
            add_distributor(topology, "aw2", SideName::B, aw2_url);
        },
    );
    install.start_paired_under_load(LOAD_CPS, START_MS);
    install.start_distributor("aw1");
    install.start_distributor("aw2");
    let aw1 = install.wait_aw("aw1", "initialized, 20 frames", WAIT_MS, |s| {
        s.updateaw == "ok" && s.frames >= 20 && s.aw_db_frame > 0
    });
    assert_eq!(aw1.side.as_deref(), Some("a"), "aw1 prefers side A");
    assert_eq!(aw1.backend, "sqlite");
    let aw2 = install.wait_aw("aw2", "initialized, 20 frames", WAIT_MS, |s| {
        s.updateaw == "ok" && s.frames >= 20
    });
    assert_eq!(aw2.side.as_deref(), Some("b"), "aw2 prefers side B");
    if postgres.is_some() {
        assert_eq!(aw2.backend, "postgresql");
    }
    let initial_version = aw1.config_version.expect("a configuration version");

    // A configuration change reaches every AW database.
    let change = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config-change.toml");
    let out = install.tandem(&["config", "apply", change.to_str().unwrap()]);
    assert!(out.status.success(), "config apply: {out:?}");
    for name in ["aw1", "aw2"] {
        install.wait_aw(name, "the change applied", WAIT_MS, |s| {
            s.config_version == Some(initial_version + 1)
                && s.aw_db_frame >= s.frame_number.saturating_sub(50)
        });
    }

    // Kill -9 the side feeding aw1: it resumes on B with no snapshot.
    let before = install.aw_status("aw1").unwrap();
    install.kill("side-a");
    let after = install.wait_aw("aw1", "frames from side B", WAIT_MS, |s| {
        s.side.as_deref() == Some("b") && s.frames >= before.frames + 20
    });
    assert_eq!(after.snapshots, 1, "aw1 resumed on B without a snapshot");
    assert_eq!(after.subscriptions, 2, "one failover");
    assert_eq!(after.updateaw, "ok");
    assert_eq!(after.rebuilds, 0);

    // A returns by state transfer (a side alone orders nothing once its PGs stop); after the
    // load stops, each AW database holds side B's router's rows.
    install.start_side(Side::A, &[]);
    install.wait_state(Side::A, "Paired Disabled", START_MS);
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        c.assert_nothing_lost();
    }
    wait_aw_db_equals_router(&install, "aw1", Side::B);
    wait_aw_db_equals_router(&install, "aw2", Side::B);

    // updateaw: a deleted AW database is initialized again.
    install.kill("aw1");
    let aw1_dir = install
        .topology
        .resolve(&install.topology.distributor("aw1").unwrap().data_dir);
    std::fs::remove_dir_all(&aw1_dir).unwrap();
    install.start_distributor("aw1");
    let rebuilt = install.wait_aw("aw1", "initialized again", WAIT_MS, |s| {
        s.updateaw == "ok" && s.config_version == Some(initial_version + 1) && s.aw_db_frame > 0
    });
    assert_eq!(rebuilt.rebuilds, 0, "a first initialization is no rebuild");
    wait_aw_db_equals_router(&install, "aw1", Side::B);

    // A configuration of the version of record but made by another change (as a change of an
    // abandoned history leaves it) is noticed at the first frame and rebuilt, once.
    install.kill("aw2");
    let location = tandem::aw::aw_location(
        &install.topology,
        install.topology.distributor("aw2").unwrap(),
    );
    rt.block_on(async {
        let db = AwDb::open(&location).await.unwrap();
        let held = db.config().await.unwrap().expect("initialized");
        assert_eq!(held.version, initial_version + 1);
        db.set_config(tandem_db::ConfigStamp {
            version: held.version,
            recovery_key: held.recovery_key + 1,
        })
        .await
        .unwrap();
    });
    install.start_distributor("aw2");
    let repaired = install.wait_aw("aw2", "rebuilt", WAIT_MS, |s| {
        s.updateaw == "ok" && s.rebuilds == 1 && s.config_version == Some(initial_version + 1)
    });
    assert_eq!(repaired.rebuild_loops, 0);
    let events = rt.block_on(async {
        AwDb::open(&location)
            .await
            .unwrap()
            .local_events()
            .await
            .unwrap()
    });
    assert!(
        events
            .iter()
            .any(|(_, _, m)| m.contains("rebuilt") && m.contains("holds version")),
        "the rebuild is an event with its reason: {events:?}"
    );
    wait_aw_db_equals_router(&install, "aw2", Side::B);
    drop(install);
    drop(postgres);
}

/// Refuses every write of Feed_State, which each write of the feed makes: the SQLite error a
/// trigger raises is a constraint, one that fails every time.
const REFUSE_FEED_STATE: &str = "
    CREATE TRIGGER refuse_feed_state_insert BEFORE INSERT ON Feed_State
        BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
    CREATE TRIGGER refuse_feed_state_update BEFORE UPDATE ON Feed_State
        BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;";
const TAKE_FEED_STATE: &str = "
    DROP TRIGGER refuse_feed_state_insert;
    DROP TRIGGER refuse_feed_state_update;";

#[test]
fn an_aw_database_that_refuses_writes_for_good_starts_over_from_a_snapshot() {
    let mut install = Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "aw-refuses",
        None,
        |_| {},
    );
    install.start_paired_under_load(LOAD_CPS, START_MS);
    install.start_distributor("aw1");
    let before = install.wait_aw("aw1", "initialized, 20 frames", WAIT_MS, |s| {
        s.updateaw == "ok" && s.frames >= 20 && s.aw_db_frame > 0
    });
    let location = tandem::aw::aw_location(
        &install.topology,
        install.topology.distributor("aw1").unwrap(),
    );
    let tandem_db::DbLocation::Sqlite(path) = &location else {
        panic!("aw1 writes SQLite: {location:?}");
    };
    let beside = rusqlite::Connection::open(path).unwrap();
    beside.busy_timeout(Duration::from_millis(WAIT_MS)).unwrap();
    beside.execute_batch(REFUSE_FEED_STATE).unwrap();

    // The refused write is left out, and the feed starts over: a configuration copy and a new
    // subscription, whose snapshot is refused too while the trigger stays. What is left out is
    // counted, and the lag grows meanwhile.
    let refused = install.wait_aw("aw1", "writes refused, a new snapshot", WAIT_MS, |s| {
        s.aw_db_write_failures >= 2
            && s.snapshots > before.snapshots
            && s.subscriptions > before.subscriptions
            && s.rebuilds > before.rebuilds
            && s.aw_db_updates_unwritten > 0
            && s.aw_db_lag_ms.is_some_and(|lag_ms| lag_ms >= 2_000)
    });
    assert!(
        refused.aw_db_frame < refused.frame_number,
        "the database holds an older frame than the feed: {refused:?}"
    );

    // Once the database takes writes again, the next start-over brings it to the router's
    // rows.
    beside.execute_batch(TAKE_FEED_STATE).unwrap();
    for c in install.stop_pgs(&["pg1", "pg2"]) {
        c.assert_nothing_lost();
    }
    wait_aw_db_equals_router(&install, "aw1", Side::A);
    let events = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { AwDb::open(&location).await?.local_events().await })
        .unwrap();
    assert!(
        events
            .iter()
            .any(|(_, _, m)| m.contains("for good") && m.contains("starts over from a snapshot")),
        "the refusal is an event: {events:?}"
    );
    drop(install);
}
