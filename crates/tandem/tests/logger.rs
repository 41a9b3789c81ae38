//! The loggers with real processes on loopback: configuration changes through `tandem config`,
//! both central databases kept identical through a killed logger and a killed side, and
//! exactly-once Route_Call_Detail rows counted against what the PGs sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tandem::cluster::{Installation, PgCounts};
use tandem_logger::db::CentralDb;
use tandem_logger::schema::SqlValue;
use tandem_logger::test_postgres::{postgres_admin_url, PostgresDatabase};
use tandem_mds::Side;
use tandem_model::config::{ConfigChange, ConfigObject, ConfigOp, ContactCenter, ObjectRef};

const START_MS: u64 = 20_000;
const LOAD_CPS: f64 = 50.0;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn installation(
    name: &str,
    edit: impl FnOnce(&mut tandem_model::topology::Topology),
) -> Installation {
    Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        name,
        None,
        edit,
    )
}

fn paired_under_load(install: &mut Installation) {
    install.start_paired(START_MS);
    install.start_pg("pg1", LOAD_CPS);
    install.start_pg("pg2", LOAD_CPS);
    install.wait_pgs_reachable(Side::A, 2, START_MS);
    install.wait_pgs_reachable(Side::B, 2, START_MS);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn open(install: &Installation, side: Side) -> CentralDb {
    runtime()
        .block_on(CentralDb::open(&tandem_logger::run::location(
            &install.topology,
            side,
        )))
        .unwrap()
}

fn row_count(install: &Installation, side: Side, table: &str) -> u64 {
    let db = open(install, side);
    runtime().block_on(db.row_count(table)).unwrap()
}

/// The route request keys (routing client, PG incarnation, request id) of every
/// Route_Call_Detail row, and how many rows there are.
fn route_call_detail_keys(install: &Installation, side: Side) -> (u64, BTreeSet<(i64, i64, i64)>) {
    let db = open(install, side);
    let rt = runtime();
    let mut after: Option<Vec<SqlValue>> = None;
    let mut rows = 0;
    let mut keys = BTreeSet::new();
    loop {
        let page = rt
            .block_on(db.rows_page("Route_Call_Detail", after.as_deref(), None, 5_000))
            .unwrap();
        if page.is_empty() {
            break;
        }
        for row in &page {
            rows += 1;
            let int = |i: usize| match row[i] {
                SqlValue::Int(v) => v,
                ref other => panic!("column {i} is {other:?}"),
            };
            // recovery_key, record_index, router_call_key, routing_client_id, pg_incarnation,
            // request_id, ...
            keys.insert((int(3), int(4), int(5)));
        }
        after = Some(page.last().unwrap()[..2].to_vec());
    }
    (rows, keys)
}

fn verify(install: &Installation) -> String {
    let out = install.tandem(&["logger", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "logger verify: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("the central databases are identical"),
        "{text}"
    );
    text
}

fn export(install: &Installation) -> (ContactCenter, u64) {
    let out = install.tandem(&["config", "export"]);
    assert!(out.status.success(), "config export: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# configuration version "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version line: {text}"));
    (ContactCenter::from_toml_str(&text).unwrap(), version)
}

fn write_change(install: &Installation, name: &str, change: &ConfigChange) -> String {
    let path = install.dir.join(name);
    std::fs::write(&path, toml::to_string(change).unwrap()).unwrap();
    path.display().to_string()
}

/// Every route request the PGs sent has exactly one Route_Call_Detail row in both central
/// databases once its routing finished; the rest are still in the router (queued for an
/// agent), which says how many.
fn assert_exactly_once(install: &Installation, counts: &[PgCounts]) {
    let sent: u64 = counts.iter().map(|c| c.route_requests_sent).sum();
    assert!(sent > 0, "{counts:?}");
    for side in [Side::A, Side::B] {
        let status = install.logger_status(side).unwrap();
        let n = |k: &str| status[k].parse::<u64>().unwrap();
        assert_eq!(n("route_requests"), sent, "side {side}: {status:?}");
        let (rows, keys) = route_call_detail_keys(install, side);
        assert_eq!(
            rows,
            keys.len() as u64,
            "side {side}: a request has two rows"
        );
        assert_eq!(
            rows + n("route_requests_in_progress"),
            sent,
            "side {side}: {rows} Route_Call_Detail rows for {sent} requests: {status:?}"
        );
        assert!(rows > 0);
    }
}

/// Side B's central database on a PostgreSQL database of its own, side A's on SQLite; None
/// (the test is skipped with a note) when no PostgreSQL server is configured.
fn installation_with_side_b_on_postgresql(
    name: &str,
    test: &str,
) -> Option<(Installation, PostgresDatabase)> {
    let admin_url = postgres_admin_url(test)?;
    let database = runtime().block_on(PostgresDatabase::create(&admin_url));
    let url = database.url.clone();
    let install = installation(name, |t| t.side_b.central_db_url = Some(url));
    Some((install, database))
}

#[test]
fn configuration_changes_reach_both_routers_and_both_central_databases() {
    let _alone = one_at_a_time();
    let mut install = installation("config", |_| {});
    configuration_changes(&mut install);
}

#[test]
fn configuration_changes_with_side_b_on_postgresql() {
    let _alone = one_at_a_time();
    let test = "configuration_changes_with_side_b_on_postgresql";
    if let Some((mut install, _database)) =
        installation_with_side_b_on_postgresql("config-pg", test)
    {
        configuration_changes(&mut install);
    }
}

fn configuration_changes(install: &mut Installation) {
    paired_under_load(install);
    let (cc, version) = export(install);
    assert_eq!(version, 1, "init seeds version 1");

    // A new agent, cloned from the first.
    let mut agent = cc.agents[0].clone();
    agent.id.0 = 900_001;
    agent.name = "added by config apply".into();
    let change = ConfigChange {
        ops: vec![ConfigOp::Upsert(ConfigObject::Agent(agent.clone()))],
        author: String::new(),
    };
    let file = write_change(install, "add-agent.toml", &change);
    let out = install.tandem(&["config", "apply", &file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "config apply: {out:?}");
    assert!(
        stdout.contains("applied: configuration version 2"),
        "{stdout}"
    );
    assert!(stdout.contains("written by both loggers"), "{stdout}");
    let (after, version) = export(install);
    assert_eq!(version, 2);
    assert!(after.agents.contains(&agent));
    for side in [Side::A, Side::B] {
        assert_eq!(
            row_count(install, side, "Config_Message_Log"),
            1,
            "side {side}"
        );
        let db = open(install, side);
        let (stored, stored_version) = runtime()
            .block_on(db.load_configuration())
            .unwrap()
            .unwrap();
        assert_eq!(stored_version.version, 2, "side {side}");
        assert!(stored.agents.contains(&agent), "side {side}");
    }

    // Deleting a peripheral its agents refer to is refused whole, with the reason.
    let peripheral = cc.peripherals[0].id;
    let bad = ConfigChange {
        ops: vec![
            ConfigOp::Delete(ObjectRef::Agent(agent.id)),
            ConfigOp::Delete(ObjectRef::Peripheral(peripheral)),
        ],
        author: String::new(),
    };
    let file = write_change(install, "bad.toml", &bad);
    let out = install.tandem(&["config", "apply", &file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("rejected: operation 2"), "{stderr}");
    let (unchanged, version) = export(install);
    assert_eq!(version, 2);
    assert!(
        unchanged.agents.contains(&agent),
        "the first operation was undone too"
    );

    // A phase of the scenario: calls flow with the new configuration.
    std::thread::sleep(Duration::from_secs(3));
    let counts = install.stop_pgs(&["pg1", "pg2"]);
    install.wait_loggers_caught_up(START_MS);
    assert_exactly_once(install, &counts);
    for side in [Side::A, Side::B] {
        assert_eq!(
            row_count(install, side, "Config_Message_Log"),
            1,
            "side {side}"
        );
    }
    let report = verify(install);
    eprintln!("{report}");
}

/// A logger killed under load comes back and catches up from its side's buffer; a side killed
/// under load comes back by state transfer, and its logger recovers the rows it missed from
/// the peer's central database. Both central databases end identical, with one
/// Route_Call_Detail row per route request sent.
#[test]
fn killed_logger_and_killed_side_leave_both_central_databases_identical() {
    let _alone = one_at_a_time();
    let mut install = installation("recovery", |_| {});
    killed_logger_and_killed_side(&mut install);
}

#[test]
fn killed_logger_and_killed_side_with_side_b_on_postgresql() {
    let _alone = one_at_a_time();
    let test = "killed_logger_and_killed_side_with_side_b_on_postgresql";
    if let Some((mut install, _database)) =
        installation_with_side_b_on_postgresql("recovery-pg", test)
    {
        killed_logger_and_killed_side(&mut install);
    }
}

fn killed_logger_and_killed_side(install: &mut Installation) {
    paired_under_load(install);
    // A phase of the scenario: both loggers write under load.
    std::thread::sleep(Duration::from_secs(2));

    install.kill("logger-a");
    // Side A notices its logger is gone and holds rows for it while calls go on.
    let deadline = std::time::Instant::now() + Duration::from_millis(START_MS);
    loop {
        let held = install.logger_status(Side::A).unwrap();
        if held["connected"] == "false" && held["held_rows"].parse::<u64>().unwrap() > 100 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            install.fail(&format!(
                "side A held no rows for its killed logger: {held:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    install.start_logger(Side::A);

    install.kill("side-b");
    // A phase of the scenario: A orders alone while B is down.
    std::thread::sleep(Duration::from_secs(2));
    install.start_side(Side::B, &[]);
    install.wait_state(Side::B, "Paired Disabled", START_MS);
    // A phase of the scenario: the pair works under load again.
    std::thread::sleep(Duration::from_secs(2));

    let counts = install.stop_pgs(&["pg1", "pg2"]);
    install.wait_loggers_caught_up(START_MS);
    assert_exactly_once(install, &counts);
    verify(install);
    let events = install.events(Side::B);
    assert!(
        events.contains("recovers the rest from its peer"),
        "{events}"
    );
}

/// The rows per table that the ordered drop decisions in a central database say were dropped.
fn decided_drops(install: &Installation, side: Side) -> BTreeMap<String, u64> {
    let db = open(install, side);
    let rt = runtime();
    let mut after: Option<Vec<SqlValue>> = None;
    let mut dropped = BTreeMap::new();
    loop {
        let page = rt
            .block_on(db.rows_page("Event", after.as_deref(), None, 5_000))
            .unwrap();
        if page.is_empty() {
            break;
        }
        for row in &page {
            // recovery_key, record_index, date_time_ms, severity, code, message
            if row[4] != SqlValue::Text("HistoricalRecordsDropped".into()) {
                continue;
            }
            let SqlValue::Text(message) = &row[5] else {
                panic!("an event's message: {row:?}");
            };
            let counts = message
                .rsplit_once('(')
                .and_then(|(_, c)| c.strip_suffix(')'))
                .unwrap_or_else(|| panic!("no counts in {message}"));
            for pair in counts.split_whitespace() {
                let (table, n) = pair.split_once('=').expect("table=count");
                *dropped.entry(table.to_string()).or_insert(0) += n.parse::<u64>().unwrap();
            }
        }
        after = Some(page.last().unwrap()[..2].to_vec());
    }
    dropped
}

/// With both loggers down the routers keep routing and hold rows up to the bound; past it the
/// enabled side orders a drop decision, both sides drop the same records, and when the loggers
/// return both central databases are identical, each request's Route_Call_Detail row either
/// written or counted in a decision's event.
#[test]
fn both_loggers_down_drop_the_same_records_by_an_ordered_decision() {
    let _alone = one_at_a_time();
    let mut install = installation("both-down", |t| t.logger.buffer_rows = 150);
    paired_under_load(&mut install);
    install.kill("logger-b");
    install.kill("logger-a");
    let deadline = std::time::Instant::now() + Duration::from_millis(START_MS);
    loop {
        let a = install.logger_status(Side::A).unwrap();
        let b = install.logger_status(Side::B).unwrap();
        let n = |s: &BTreeMap<String, String>, k: &str| s[k].parse::<u64>().unwrap();
        if n(&a, "decided_dropped_rows") > 0 && n(&b, "decided_dropped_rows") > 0 {
            assert!(n(&a, "held_rows") <= 2 * 150, "{a:?}");
            break;
        }
        if std::time::Instant::now() >= deadline {
            install.fail(&format!("no drop decision: A {a:?}, B {b:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts = install.stop_pgs(&["pg1", "pg2"]);
    let dropped_a = install.logger_status(Side::A).unwrap()["decided_dropped_rows"].clone();
    let dropped_b = install.logger_status(Side::B).unwrap()["decided_dropped_rows"].clone();
    assert_eq!(dropped_a, dropped_b, "both sides dropped the same rows");
    install.start_logger(Side::A);
    install.start_logger(Side::B);
    install.wait_loggers_caught_up(START_MS);
    verify(&install);

    let sent: u64 = counts.iter().map(|c| c.route_requests_sent).sum();
    for side in [Side::A, Side::B] {
        let dropped = decided_drops(&install, side);
        let total: u64 = dropped.values().sum();
        assert_eq!(total.to_string(), dropped_a, "side {side}: {dropped:?}");
        let status = install.logger_status(side).unwrap();
        let in_progress: u64 = status["route_requests_in_progress"].parse().unwrap();
        let (rows, keys) = route_call_detail_keys(&install, side);
        assert_eq!(
            rows,
            keys.len() as u64,
            "side {side}: a request has two rows"
        );
        let dropped_rcd = dropped.get("Route_Call_Detail").copied().unwrap_or(0);
        assert!(dropped_rcd > 0, "side {side}: {dropped:?}");
        assert_eq!(
            rows + dropped_rcd + in_progress,
            sent,
            "side {side}: {rows} written, {dropped_rcd} dropped, {in_progress} in progress"
        );
    }
}

/// Copies side A's SQLite central database files (the database, its write-ahead log and its
/// shared-memory index) from `from` to `to`, removing those `to` has that `from` lacks.
fn copy_central_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{}{suffix}", tandem_logger::run::SQLITE_FILE);
        let source = from.join(&name);
        let target = to.join(&name);
        if source.exists() {
            std::fs::copy(&source, &target).unwrap();
        } else if target.exists() {
            std::fs::remove_file(&target).unwrap();
        }
    }
}

/// A logger whose central database is restored from an old copy (older rows, an older
/// configuration) returns by taking the configuration from its peer and recovering the rows it
/// lacks, and both central databases end identical.
#[test]
fn a_central_database_restored_from_an_old_copy_recovers_from_its_peer() {
    let _alone = one_at_a_time();
    let mut install = installation("restore", |_| {});
    paired_under_load(&mut install);
    let data_dir = install.topology.resolve(&install.topology.side_a.data_dir);
    let backup = install.dir.join("backup-a");
    // The copy must hold rows: side A's logger has committed some before it is taken.
    let deadline = std::time::Instant::now() + Duration::from_millis(START_MS);
    while row_count(&install, Side::A, "Route_Call_Detail") == 0 {
        if std::time::Instant::now() >= deadline {
            install.fail("side A's logger wrote no Route_Call_Detail row");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    install.kill("logger-a");
    copy_central_db(&data_dir, &backup);
    install.start_logger(Side::A);

    // After the copy: a configuration change, and more calls.
    let (cc, _) = export(&install);
    let mut agent = cc.agents[0].clone();
    agent.id.0 = 900_002;
    agent.name = "added after the backup".into();
    let change = ConfigChange {
        ops: vec![ConfigOp::Upsert(ConfigObject::Agent(agent.clone()))],
        author: String::new(),
    };
    let file = write_change(&install, "after-backup.toml", &change);
    let out = install.tandem(&["config", "apply", &file]);
    assert!(out.status.success(), "config apply: {out:?}");
    // A phase of the scenario: calls go on after the change.
    std::thread::sleep(Duration::from_secs(2));

    install.kill("logger-a");
    copy_central_db(&backup, &data_dir);
    let restored = open(&install, Side::A);
    let progress = runtime().block_on(restored.progress()).unwrap();
    assert_eq!(progress.config_version, 1, "the copy predates the change");
    drop(restored);
    install.start_logger(Side::A);

    let counts = install.stop_pgs(&["pg1", "pg2"]);
    install.wait_loggers_caught_up(START_MS);
    assert_exactly_once(&install, &counts);
    verify(&install);
    let db = open(&install, Side::A);
    let (stored, version) = runtime()
        .block_on(db.load_configuration())
        .unwrap()
        .unwrap();
    assert_eq!(version.version, 2);
    assert!(stored.agents.contains(&agent));
    assert_eq!(row_count(&install, Side::A, "Config_Message_Log"), 1);
    let events = install.events(Side::A);
    assert!(
        events.contains("recovers the rest from its peer"),
        "{events}"
    );
}
