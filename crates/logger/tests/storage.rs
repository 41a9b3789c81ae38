//! The central database's storage layer, the same checks on both backends.
//!
//! Each check is an `async fn check(fx: &Fixture)` run once on a SQLite file and once on a fresh
//! PostgreSQL database. PostgreSQL comes from `TANDEM_TEST_POSTGRES_URL`, an admin URL (e.g.
//! `postgres://tandem:tandem@127.0.0.1:5432/tandem_test`) of a role that may create databases:
//! each test creates its own database and drops it at the end, so tests run in parallel. Without
//! the URL the PostgreSQL half is skipped with a note, unless `TANDEM_TEST_POSTGRES_REQUIRED` is
//! set, when it fails.

use tandem_logger::db::{
    CentralDb, ConfigStamp, DbError, DbLocation, Progress, RangeMark, RECOVERY_KEY_RANGE_SHIFT,
    ROWS_PAGE_MAX, SCHEMA_VERSION, SCHEMA_VERSION_TABLE,
};
use tandem_logger::peer::DatabasePeer;
use tandem_logger::run::{copy_gap, take_configuration, GapToRecover};
use tandem_logger::schema::{self, Row, SqlValue, TableKind};
use tandem_logger::test_postgres::{postgres_admin_url, PostgresDatabase};
use tandem_mds::SideToLogger;
use tandem_model::config::{
    ConfigChange, ConfigObject, ConfigOp, ContactCenter, LabelTarget, ObjectRef, Pg,
};
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::ids::*;
use tandem_model::input::RouteEndReason;
use tandem_model::logged::{DroppedRange, LoggedConfigChange, LoggedMessage};
use tandem_model::output::{
    CallDisposition, EventCode, HistoricalRecord, HistoricalRow, RouteCallDetail, RouterEvent,
    Severity, TerminationCallDetail,
};
use tandem_model::realtime::{AgentCounts, CallCounts};
use tandem_model::AnswerKind;

/// A database for one test, removed at its end.
struct Fixture {
    location: DbLocation,
    db: CentralDb,
    _dir: Option<tempfile::TempDir>,
    _postgres: Option<PostgresDatabase>,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let location = DbLocation::Sqlite(dir.path().join("central.db"));
        let db = CentralDb::open(&location).await.expect("open SQLite");
        Fixture {
            location,
            db,
            _dir: Some(dir),
            _postgres: None,
        }
    }

    /// None (after saying why) when no PostgreSQL server is configured.
    async fn postgres(test: &str) -> Option<Fixture> {
        let admin_url = postgres_admin_url(test)?;
        let database = PostgresDatabase::create(&admin_url).await;
        let location = DbLocation::Postgres(database.url.clone());
        let db = CentralDb::open(&location).await.expect("open PostgreSQL");
        Some(Fixture {
            location,
            db,
            _dir: None,
            _postgres: Some(database),
        })
    }

    async fn reopen(&self) -> CentralDb {
        CentralDb::open(&self.location).await.expect("reopen")
    }

    /// Runs SQL on the database behind the layer's back.
    async fn raw_execute(&self, statement: &str) {
        let statement = statement.to_string();
        match &self.location {
            DbLocation::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let connection = rusqlite::Connection::open(path).unwrap();
                    connection
                        .busy_timeout(std::time::Duration::from_secs(10))
                        .unwrap();
                    connection.execute_batch(&statement).unwrap();
                })
                .await
                .unwrap();
            }
            DbLocation::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client.batch_execute(&statement).await.unwrap();
            }
        }
    }
}

/// Runs a check once on SQLite and once on PostgreSQL, as tests `<check>::sqlite` and
/// `<check>::postgres`.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test]
            async fn sqlite() {
                let fx = super::Fixture::sqlite().await;
                super::$check(&fx).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(fx) = super::Fixture::postgres(stringify!($check)).await {
                    super::$check(&fx).await;
                }
            }
        }
    )*};
}

on_both_backends!(
    migrations,
    schema_2_gets_the_config_recovery_key,
    a_gap_takes_the_sides_configuration_unless_it_is_held,
    seed_and_load,
    configuration_change_before_seed,
    write_batch,
    upsert_then_delete_ends_deleted,
    drop_decision_empties_its_range,
    u64_round_trip,
    paging,
    copy_within_backend,
    replace_configuration,
    restart,
    bad_input,
    local_events,
    batch_of_5000_rows,
    schema_1_gets_its_range_mark,
    range_marks_and_gaps,
    a_gap_holding_a_drop_decision_empties_its_range,
    batches_written_together_mark_where_the_stream_left_each_range,
    a_recovery_copies_the_gap_and_applies_the_decisions_of_record,
    a_recovery_copies_a_lower_range_only_as_the_record_holds_it,
    a_capped_database_refuses_writes,
);

// ---------------------------------------------------------------------------------------------
// Data.

fn contact_center(seed: u64, agents: u32) -> ContactCenter {
    generate(&GenerateParams {
        agents,
        skill_groups: 8,
        call_types: 5,
        peripherals: 2,
        seed,
        ..GenerateParams::default()
    })
}

/// The contact center as it loads: each table's objects in key order.
fn sorted(mut cc: ContactCenter) -> ContactCenter {
    fn sort<T: Clone>(objects: &mut [T], wrap: fn(T) -> ConfigObject) {
        objects.sort_by_key(|o| wrap(o.clone()).object_ref());
    }
    sort(&mut cc.pgs, ConfigObject::Pg);
    sort(&mut cc.peripherals, ConfigObject::Peripheral);
    sort(&mut cc.routing_clients, ConfigObject::RoutingClient);
    sort(&mut cc.agents, ConfigObject::Agent);
    sort(&mut cc.skill_groups, ConfigObject::SkillGroup);
    sort(&mut cc.skill_group_members, ConfigObject::SkillGroupMember);
    sort(&mut cc.services, ConfigObject::Service);
    sort(&mut cc.service_members, ConfigObject::ServiceMember);
    sort(&mut cc.call_types, ConfigObject::CallType);
    sort(&mut cc.dialed_numbers, ConfigObject::DialedNumber);
    sort(&mut cc.scripts, ConfigObject::Script);
    sort(&mut cc.call_type_maps, ConfigObject::CallTypeMap);
    sort(&mut cc.labels, ConfigObject::Label);
    cc
}

fn object_count(cc: &ContactCenter, table: &str) -> u64 {
    cc.objects()
        .filter(|o| schema::table_of(o) == table)
        .count() as u64
}

fn call_counts(base: u64) -> CallCounts {
    let mut values = [0u64; tandem_model::realtime::CALL_COUNT_FIELDS];
    for (i, v) in values.iter_mut().enumerate() {
        *v = base + i as u64;
    }
    CallCounts::from_array(values)
}

/// One historical record of every kind, indexes 0 to 4.
fn records_of_every_kind(recovery_key: u64, n: u64) -> Vec<HistoricalRecord> {
    let rows = vec![
        HistoricalRow::RouteCallDetail(RouteCallDetail {
            router_call_key: RouterCallKey(n),
            key: RouteRequestKey {
                routing_client: RoutingClientId(3),
                pg_incarnation: 2,
                request_id: n * 7,
            },
            dialed_number: "8000000001".into(),
            call_type: Some(CallTypeId(1000)),
            script: None,
            ani: "5551234".into(),
            caller_entered_digits: String::new(),
            date_time_ms: 1_700_000_000_000 + n,
            finished_ms: 1_700_000_000_050 + n,
            answer_kind: Some(AnswerKind::Label),
            label: "lbl-1".into(),
            target: Some(LabelTarget::SkillGroup(SkillGroupId(10_000))),
            router_queue_wait_ms: 0,
            error: None,
            ended: Some(RouteEndReason::CallerAbandoned),
        }),
        HistoricalRow::TerminationCallDetail(TerminationCallDetail {
            call: PeripheralCallKey {
                peripheral: PeripheralId(1),
                call_id: n,
            },
            router_call_key: Some(RouterCallKey(n)),
            agent: Some(AgentId(100_000)),
            skill_group: Some(SkillGroupId(10_000)),
            call_type: None,
            service: None,
            disposition: CallDisposition::Handled,
            start_ms: 1_700_000_000_000 + n,
            delay_ms: 3_000,
            talk_ms: 60_000,
            hold_ms: 0,
            work_ms: 5_000,
            end_ms: 1_700_000_068_000 + n,
        }),
        HistoricalRow::SkillGroupInterval {
            skill_group: SkillGroupId(10_000),
            interval_start_ms: 1_699_999_200_000,
            interval_minutes: 30,
            counts: call_counts(n),
        },
        HistoricalRow::CallTypeInterval {
            call_type: CallTypeId(1000),
            interval_start_ms: 1_699_999_200_000,
            interval_minutes: 30,
            counts: call_counts(n + 100),
        },
        HistoricalRow::AgentSkillGroupInterval {
            agent: AgentId(100_000),
            skill_group: SkillGroupId(10_000),
            interval_start_ms: 1_699_999_200_000,
            interval_minutes: 30,
            counts: AgentCounts {
                calls_offered: 4,
                calls_answered: 3,
                calls_handled: 3,
                handle_time_ms: 90_000,
                talk_time_ms: 80_000,
                hold_time_ms: 0,
                work_time_ms: 10_000,
                transfers_out: n as u32,
            },
        },
    ];
    rows.into_iter()
        .enumerate()
        .map(|(index, row)| HistoricalRecord {
            recovery_key,
            index: index as u32,
            row,
        })
        .collect()
}

fn event(message: &str) -> RouterEvent {
    RouterEvent {
        severity: Severity::Info,
        code: EventCode::ConfigApplied,
        message: message.into(),
    }
}

fn message(
    recovery_key: u64,
    config: Option<(u64, Vec<ConfigOp>)>,
    records: Vec<HistoricalRecord>,
    events: Vec<RouterEvent>,
) -> LoggedMessage {
    LoggedMessage {
        recovery_key,
        time_ms: 1_700_000_000_000 + recovery_key,
        config: config.map(|(config_version, ops)| LoggedConfigChange {
            config_version,
            change: ConfigChange {
                ops,
                ..Default::default()
            },
        }),
        records,
        events,
        dropped: None,
    }
}

fn pg(id: u32, name: &str) -> ConfigObject {
    ConfigObject::Pg(Pg {
        id: PgId(id),
        name: name.into(),
    })
}

/// Every table's rows, in key order.
async fn dump(db: &CentralDb) -> Vec<(&'static str, Vec<Row>)> {
    let mut out = Vec::new();
    for def in schema::tables() {
        out.push((def.name, all_rows(db, def.name).await));
    }
    out
}

async fn all_rows(db: &CentralDb, table: &str) -> Vec<Row> {
    let key_len = key_len(table);
    let mut rows: Vec<Row> = Vec::new();
    loop {
        let after = rows.last().map(|r| r[..key_len].to_vec());
        let page = db
            .rows_page(table, after.as_deref(), None, ROWS_PAGE_MAX)
            .await
            .unwrap();
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

fn key_len(table: &str) -> usize {
    schema::tables()
        .into_iter()
        .find(|t| t.name == table)
        .unwrap()
        .key_len
}

async fn count(db: &CentralDb, table: &str) -> u64 {
    db.row_count(table).await.unwrap()
}

fn ordered_tables() -> Vec<&'static str> {
    schema::tables()
        .into_iter()
        .filter(|t| t.kind == TableKind::Ordered)
        .map(|t| t.name)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks.

async fn migrations(fx: &Fixture) {
    let backend = match fx.location {
        DbLocation::Sqlite(_) => "sqlite",
        DbLocation::Postgres(_) => "postgresql",
    };
    assert_eq!(fx.db.backend_name(), backend);
    assert_eq!(fx.db.schema_version().await.unwrap(), SCHEMA_VERSION);
    for def in schema::tables() {
        assert_eq!(count(&fx.db, def.name).await, 0, "{}", def.name);
    }
    fx.db.local_event(1, "kept across opens").await.unwrap();

    let again = fx.reopen().await;
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(count(&again, schema::LOCAL_EVENT).await, 1);
    drop(again);

    fx.raw_execute(&format!(
        "INSERT INTO \"{SCHEMA_VERSION_TABLE}\" (\"version\", \"applied_wall_ms\") VALUES ({}, 0)",
        SCHEMA_VERSION + 1
    ))
    .await;
    match CentralDb::open(&fx.location).await {
        Err(DbError::NewerSchema { found, known }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        Err(other) => panic!("expected NewerSchema, got {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

fn stamp(version: u64, recovery_key: u64) -> ConfigStamp {
    ConfigStamp {
        version,
        recovery_key,
    }
}

/// The configuration of a database seeded whole.
fn seeded() -> ConfigStamp {
    stamp(tandem_db::SEED_CONFIG_VERSION, 0)
}

/// A gap's configuration is taken unless the database holds that very one: the same version
/// made by another change (of a history the side abandoned) is replaced.
async fn a_gap_takes_the_sides_configuration_unless_it_is_held(fx: &Fixture) {
    let cc = contact_center(4, 12);
    fx.db.seed(&cc).await.unwrap();
    assert!(!take_configuration(&fx.db, &contact_center(5, 3), seeded())
        .await
        .unwrap());
    assert_eq!(
        fx.db.load_configuration().await.unwrap(),
        Some((sorted(cc.clone()), seeded()))
    );
    fx.db
        .write(
            &[message(
                in_range(1, 4),
                Some((2, vec![ConfigOp::Upsert(pg(40, "abandoned"))])),
                vec![],
                vec![],
            )],
            in_range(1, 4),
        )
        .await
        .unwrap();
    let mut of_record = cc.clone();
    of_record.pgs.push(Pg {
        id: PgId(41),
        name: "of record".into(),
    });
    let config = stamp(2, in_range(1, 3));
    assert!(take_configuration(&fx.db, &of_record, config)
        .await
        .unwrap());
    assert_eq!(
        fx.db.load_configuration().await.unwrap(),
        Some((sorted(of_record), config))
    );
    // The rows the abandoned change logged stay, not of record; the committed mark too.
    assert_eq!(count(&fx.db, schema::CONFIG_MESSAGE_LOG).await, 1);
    assert_eq!(
        fx.db.progress().await.unwrap().committed_through,
        in_range(1, 4)
    );
}

async fn seed_and_load(fx: &Fixture) {
    let db = &fx.db;
    assert_eq!(db.load_configuration().await.unwrap(), None);
    let cc = contact_center(7, 60);
    db.seed(&cc).await.unwrap();
    let (loaded, version) = db.load_configuration().await.unwrap().expect("seeded");
    assert_eq!(
        version,
        ConfigStamp {
            version: tandem_db::SEED_CONFIG_VERSION,
            recovery_key: 0
        }
    );
    assert_eq!(loaded, sorted(cc.clone()));
    for (table, _) in schema::CONFIGURATION_TABLES {
        assert_eq!(count(db, table).await, object_count(&cc, table), "{table}");
    }
    assert_eq!(count(db, schema::CONFIGURATION_STATE).await, 1);
    assert!(matches!(db.seed(&cc).await, Err(DbError::AlreadySeeded)));
    let other = contact_center(8, 10);
    assert!(matches!(db.seed(&other).await, Err(DbError::AlreadySeeded)));
    assert_eq!(
        db.load_configuration().await.unwrap().unwrap().0,
        sorted(cc)
    );
}

async fn configuration_change_before_seed(fx: &Fixture) {
    let db = &fx.db;
    let batch = [
        message(1, None, records_of_every_kind(1, 1), vec![]),
        message(
            2,
            Some((1, vec![ConfigOp::Upsert(pg(5, "p"))])),
            vec![],
            vec![],
        ),
    ];
    assert!(matches!(db.write(&batch, 2).await, Err(DbError::NotSeeded)));
    for def in schema::tables() {
        assert_eq!(count(db, def.name).await, 0, "{} written", def.name);
    }
    assert_eq!(db.progress().await.unwrap(), Progress::default());
    // Rows without a configuration change need no configuration.
    db.write(&batch[..1], 1).await.unwrap();
    assert_eq!(count(db, schema::ROUTE_CALL_DETAIL).await, 1);
    assert_eq!(db.progress().await.unwrap().committed_through, 1);
}

async fn write_batch(fx: &Fixture) {
    let db = &fx.db;
    let cc = contact_center(3, 40);
    db.seed(&cc).await.unwrap();

    let mut renamed = cc.agents[0].clone();
    renamed.name = "Renamed Agent".into();
    let removed = cc.skill_group_members[0];
    let first_change = vec![
        ConfigOp::Upsert(ConfigObject::Agent(renamed.clone())),
        ConfigOp::Upsert(pg(999, "new")),
        ConfigOp::Delete(ObjectRef::SkillGroupMember(
            removed.agent,
            removed.skill_group,
        )),
        ConfigOp::Upsert(pg(998, "short-lived")),
        ConfigOp::Delete(ObjectRef::Pg(PgId(998))),
    ];
    let batch = vec![
        message(
            10,
            Some((1, first_change)),
            records_of_every_kind(10, 1),
            vec![event("first"), event("second")],
        ),
        message(11, None, records_of_every_kind(11, 2), vec![event("third")]),
        message(
            12,
            Some((2, vec![ConfigOp::Upsert(pg(997, "later"))])),
            vec![],
            vec![],
        ),
    ];
    db.write(&batch, 12).await.unwrap();

    for table in [
        schema::ROUTE_CALL_DETAIL,
        schema::TERMINATION_CALL_DETAIL,
        schema::SKILL_GROUP_INTERVAL,
        schema::CALL_TYPE_INTERVAL,
        schema::AGENT_SKILL_GROUP_INTERVAL,
    ] {
        assert_eq!(count(db, table).await, 2, "{table}");
    }
    assert_eq!(count(db, schema::EVENT).await, 3);
    assert_eq!(count(db, schema::CONFIG_MESSAGE_LOG).await, 6);
    assert_eq!(count(db, "Pg").await, cc.pgs.len() as u64 + 2);
    assert_eq!(
        count(db, "Skill_Group_Member").await,
        cc.skill_group_members.len() as u64 - 1
    );
    assert_eq!(
        db.progress().await.unwrap(),
        Progress {
            committed_through: 12,
            config_version: 2,
            config_recovery_key: 12,
        }
    );

    let mut expected = cc.clone();
    expected.agents[0] = renamed;
    expected.skill_group_members.remove(0);
    for (id, name) in [(999, "new"), (997, "later")] {
        expected.pgs.push(Pg {
            id: PgId(id),
            name: name.into(),
        });
    }
    let (loaded, version) = db.load_configuration().await.unwrap().unwrap();
    assert_eq!(version, stamp(2, 12));
    assert_eq!(loaded, sorted(expected));

    // The log names each operation.
    let log = all_rows(db, schema::CONFIG_MESSAGE_LOG).await;
    let operations: Vec<(SqlValue, SqlValue)> =
        log.iter().map(|r| (r[4].clone(), r[5].clone())).collect();
    let op = |o: &str, t: &str| (SqlValue::Text(o.into()), SqlValue::Text(t.into()));
    assert_eq!(
        operations,
        vec![
            op("upsert", "Agent"),
            op("upsert", "Pg"),
            op("delete", "Skill_Group_Member"),
            op("upsert", "Pg"),
            op("delete", "Pg"),
            op("upsert", "Pg"),
        ]
    );

    // A replay changes nothing, with `through` as before or behind, nor does a replay of an
    // older part of the batch, which would otherwise set the configuration version back.
    let before = dump(db).await;
    db.write(&batch, 12).await.unwrap();
    db.write(&batch, 11).await.unwrap();
    db.write(&batch[..1], 10).await.unwrap();
    assert_eq!(dump(db).await, before);
    assert_eq!(db.progress().await.unwrap().config_version, 2);

    // Only `through` advances with no messages.
    db.write(&[], 20).await.unwrap();
    assert_eq!(db.progress().await.unwrap().committed_through, 20);
    db.write(&[], 15).await.unwrap();
    assert_eq!(db.progress().await.unwrap().committed_through, 20);
}

async fn upsert_then_delete_ends_deleted(fx: &Fixture) {
    let db = &fx.db;
    let cc = contact_center(4, 10);
    db.seed(&cc).await.unwrap();
    let agent = cc.agents[1].clone();
    let existing = ObjectRef::Agent(agent.id);
    let ops = vec![
        ConfigOp::Upsert(ConfigObject::Agent(agent.clone())),
        ConfigOp::Delete(existing),
        ConfigOp::Upsert(pg(50, "a")),
        ConfigOp::Upsert(pg(50, "b")),
        ConfigOp::Delete(ObjectRef::Pg(PgId(50))),
        ConfigOp::Upsert(pg(51, "x")),
        ConfigOp::Delete(ObjectRef::Pg(PgId(51))),
        ConfigOp::Upsert(pg(51, "y")),
    ];
    db.write(&[message(1, Some((1, ops)), vec![], vec![])], 1)
        .await
        .unwrap();
    let (loaded, _) = db.load_configuration().await.unwrap().unwrap();
    assert!(!loaded.agents.iter().any(|a| a.id == agent.id));
    assert!(!loaded.pgs.iter().any(|p| p.id == PgId(50)));
    let kept: Vec<&Pg> = loaded.pgs.iter().filter(|p| p.id == PgId(51)).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].name, "y");
    assert_eq!(count(db, schema::CONFIG_MESSAGE_LOG).await, 8);
}

/// A drop decision's message removes the historical rows and ordered events of its range that
/// the logger wrote before hearing of it, and keeps the configuration changes.
async fn drop_decision_empties_its_range(fx: &Fixture) {
    let db = &fx.db;
    db.seed(&contact_center(5, 10)).await.unwrap();
    let mut written = Vec::new();
    for key in 1..=6 {
        let config = (key == 4).then(|| (2, vec![ConfigOp::Upsert(pg(60, "kept"))]));
        written.push(message(
            key,
            config,
            records_of_every_kind(key, 2),
            vec![event("before")],
        ));
    }
    db.write(&written, 6).await.unwrap();
    let before_log = all_rows(db, schema::CONFIG_MESSAGE_LOG).await;
    let mut decision = message(9, None, vec![], vec![event("dropped")]);
    decision.dropped = Some(DroppedRange {
        after: 2,
        through: 5,
    });
    db.write(&[decision.clone()], 9).await.unwrap();
    for table in schema::DROPPABLE_TABLES {
        let keys: Vec<i64> = all_rows(db, table)
            .await
            .iter()
            .map(|row| match row[0] {
                SqlValue::Int(k) => k,
                ref other => panic!("a recovery key: {other:?}"),
            })
            .collect();
        assert!(!keys.is_empty(), "{table} keeps rows outside the range");
        assert!(
            keys.iter().all(|&k| k <= 2 || k > 5),
            "{table} holds a dropped key: {keys:?}"
        );
    }
    assert_eq!(all_rows(db, schema::CONFIG_MESSAGE_LOG).await, before_log);
    assert_eq!(
        count(db, schema::EVENT).await,
        3 + 1,
        "keys 1, 2 and 6, and the decision"
    );
    // A replayed decision changes nothing.
    let after = dump(db).await;
    db.write(&[decision], 9).await.unwrap();
    assert_eq!(dump(db).await, after);
}

async fn u64_round_trip(fx: &Fixture) {
    let db = &fx.db;
    let mut records = records_of_every_kind(5, 1);
    let HistoricalRow::TerminationCallDetail(tcd) = &mut records[1].row else {
        unreachable!()
    };
    tcd.call.call_id = u64::MAX;
    tcd.router_call_key = Some(RouterCallKey(u64::MAX - 1));
    tcd.end_ms = 1 << 63;
    let HistoricalRow::SkillGroupInterval { counts, .. } = &mut records[2].row else {
        unreachable!()
    };
    counts.calls_offered = u64::MAX;
    db.write(&[message(5, None, records, vec![])], 5)
        .await
        .unwrap();

    let tcd = all_rows(db, schema::TERMINATION_CALL_DETAIL).await;
    let columns = column_names(schema::TERMINATION_CALL_DETAIL);
    let value = |name: &str| match &tcd[0][columns.iter().position(|c| c == name).unwrap()] {
        SqlValue::Int(v) => *v as u64,
        other => panic!("{name} is {other:?}"),
    };
    assert_eq!(value("peripheral_call_id"), u64::MAX);
    assert_eq!(value("router_call_key"), u64::MAX - 1);
    assert_eq!(value("end_ms"), 1 << 63);
    let interval = all_rows(db, schema::SKILL_GROUP_INTERVAL).await;
    let at = column_names(schema::SKILL_GROUP_INTERVAL)
        .iter()
        .position(|c| c == "calls_offered")
        .unwrap();
    assert_eq!(interval[0][at], SqlValue::Int(u64::MAX as i64));

    // The committed sequence number is a u64 too.
    db.write(&[], u64::MAX - 3).await.unwrap();
    assert_eq!(db.progress().await.unwrap().committed_through, u64::MAX - 3);
    db.write(&[], 9).await.unwrap();
    assert_eq!(db.progress().await.unwrap().committed_through, u64::MAX - 3);
}

fn column_names(table: &str) -> Vec<String> {
    schema::tables()
        .into_iter()
        .find(|t| t.name == table)
        .unwrap()
        .columns
        .into_iter()
        .map(|c| c.name)
        .collect()
}

fn event_row(recovery_key: i64, index: i64) -> Row {
    vec![
        SqlValue::Int(recovery_key),
        SqlValue::Int(index),
        SqlValue::Int(1_700_000_000_000 + recovery_key),
        SqlValue::Text("Info".into()),
        SqlValue::Text("ConfigApplied".into()),
        SqlValue::Text(format!("event {recovery_key}.{index}")),
    ]
}

async fn paging(fx: &Fixture) {
    let db = &fx.db;
    // 2,500 rows, three per recovery key, inserted backwards and in two batches.
    let mut rows: Vec<Row> = (0..2_500).map(|i| event_row(i / 3 + 1, i % 3)).collect();
    rows.reverse();
    db.insert_rows(schema::EVENT, &rows[..1_200], None)
        .await
        .unwrap();
    db.insert_rows(schema::EVENT, &rows[1_200..], None)
        .await
        .unwrap();
    rows.reverse();
    assert_eq!(count(db, schema::EVENT).await, 2_500);

    let mut seen: Vec<Row> = Vec::new();
    let mut pages = Vec::new();
    loop {
        let after = seen.last().map(|r| r[..2].to_vec());
        let page = db
            .rows_page(schema::EVENT, after.as_deref(), None, 1_000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        pages.push(page.len());
        seen.extend(page);
    }
    assert_eq!(pages, vec![1_000, 1_000, 500]);
    assert_eq!(seen, rows);

    // Bounded by recovery key: keys 1 to 400 hold 1,200 rows.
    let mut bounded: Vec<Row> = Vec::new();
    loop {
        let after = bounded.last().map(|r| r[..2].to_vec());
        let page = db
            .rows_page(schema::EVENT, after.as_deref(), Some(400), 1_000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        bounded.extend(page);
    }
    assert_eq!(bounded, rows[..1_200].to_vec());
    let from_middle = db
        .rows_page(
            schema::EVENT,
            Some(&[SqlValue::Int(400), SqlValue::Int(1)]),
            Some(401),
            10,
        )
        .await
        .unwrap();
    assert_eq!(from_middle, rows[1_199..1_203].to_vec());
    assert_eq!(
        db.rows_page(schema::EVENT, None, Some(u64::MAX), 3)
            .await
            .unwrap(),
        rows[..3].to_vec()
    );
    assert!(db
        .rows_page(schema::EVENT, None, Some(0), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        db.rows_page(schema::EVENT, None, None, ROWS_PAGE_MAX + 1)
            .await,
        Err(DbError::PageTooLarge { .. })
    ));
}

/// Copies every ordered table of `from` into `to` page by page, the way a recovering logger
/// takes its peer's rows, twice: the second copy changes nothing.
async fn check_copy(from: &CentralDb, to: &CentralDb) {
    let batch: Vec<LoggedMessage> = (1..=40)
        .map(|k| {
            message(
                k,
                None,
                records_of_every_kind(k, k),
                vec![event(&format!("e{k}"))],
            )
        })
        .collect();
    from.write(&batch, 40).await.unwrap();
    let through = from.progress().await.unwrap().committed_through;
    for _ in 0..2 {
        for table in ordered_tables() {
            let key_len = key_len(table);
            let mut after: Option<Row> = None;
            loop {
                let page = from
                    .rows_page(table, after.as_deref(), Some(through), 64)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                after = Some(last[..key_len].to_vec());
                to.insert_rows(table, &page, None).await.unwrap();
            }
        }
        to.insert_rows(schema::EVENT, &[], Some(through))
            .await
            .unwrap();
    }
    for table in ordered_tables() {
        assert_eq!(
            all_rows(from, table).await,
            all_rows(to, table).await,
            "{table}"
        );
    }
    assert_eq!(count(to, schema::ROUTE_CALL_DETAIL).await, 40);
    assert_eq!(to.progress().await.unwrap().committed_through, 40);
    // Committed never goes back, and advances with rows.
    to.insert_rows(schema::EVENT, &[event_row(41, 0)], Some(39))
        .await
        .unwrap();
    assert_eq!(to.progress().await.unwrap().committed_through, 40);
    to.insert_rows(schema::EVENT, &[event_row(42, 0)], Some(42))
        .await
        .unwrap();
    assert_eq!(to.progress().await.unwrap().committed_through, 42);
}

/// A copy into a second database of the same backend.
async fn copy_within_backend(fx: &Fixture) {
    let other = match &fx.location {
        DbLocation::Sqlite(_) => Fixture::sqlite().await,
        DbLocation::Postgres(_) => Fixture::postgres("copy_within_backend").await.unwrap(),
    };
    check_copy(&fx.db, &other.db).await;
}

#[tokio::test]
async fn copy_sqlite_to_postgres() {
    let Some(postgres) = Fixture::postgres("copy_sqlite_to_postgres").await else {
        return;
    };
    let sqlite = Fixture::sqlite().await;
    check_copy(&sqlite.db, &postgres.db).await;
}

#[tokio::test]
async fn copy_postgres_to_sqlite() {
    let Some(postgres) = Fixture::postgres("copy_postgres_to_sqlite").await else {
        return;
    };
    let sqlite = Fixture::sqlite().await;
    check_copy(&postgres.db, &sqlite.db).await;
}

/// Both backends hold the same rows for the same batch.
#[tokio::test]
async fn both_backends_write_the_same_rows() {
    let Some(postgres) = Fixture::postgres("both_backends_write_the_same_rows").await else {
        return;
    };
    let sqlite = Fixture::sqlite().await;
    let cc = contact_center(5, 30);
    let batch = vec![
        message(
            3,
            Some((1, vec![ConfigOp::Upsert(pg(77, "seventy-seven"))])),
            records_of_every_kind(3, 9),
            vec![event("x")],
        ),
        message(4, None, records_of_every_kind(4, 10), vec![]),
    ];
    for db in [&sqlite.db, &postgres.db] {
        db.seed(&cc).await.unwrap();
        db.write(&batch, 4).await.unwrap();
    }
    assert_eq!(dump(&sqlite.db).await, dump(&postgres.db).await);
}

/// `logger verify` finds a SQLite and a PostgreSQL database with the same history identical,
/// with equal checksums, and names the first row that differs once one is changed.
#[tokio::test]
async fn verify_compares_across_backends_and_names_the_first_difference() {
    let Some(postgres) = Fixture::postgres("verify_across_backends").await else {
        return;
    };
    let sqlite = Fixture::sqlite().await;
    let cc = contact_center(5, 30);
    let batch = vec![
        message(3, None, records_of_every_kind(3, 9), vec![event("x")]),
        message(4, None, records_of_every_kind(4, 10), vec![]),
    ];
    for db in [&sqlite.db, &postgres.db] {
        db.seed(&cc).await.unwrap();
        db.write(&batch, 4).await.unwrap();
    }
    let same = tandem_logger::verify::verify(&sqlite.db, &postgres.db)
        .await
        .unwrap();
    assert!(
        same.identical(),
        "{}",
        same.render(["sqlite", "postgresql"])
    );
    assert_eq!(same.through_recovery_key, 4);
    assert!(same.tables.iter().all(|t| t.checksums[0] == t.checksums[1]));
    // One more event on one side only, at a RecoveryKey both have committed.
    postgres
        .db
        .insert_rows(schema::EVENT, &[event_row(4, 7)], None)
        .await
        .unwrap();
    let differ = tandem_logger::verify::verify(&sqlite.db, &postgres.db)
        .await
        .unwrap();
    assert!(!differ.identical());
    let events = differ
        .tables
        .iter()
        .find(|t| t.table == schema::EVENT)
        .unwrap();
    assert_eq!(events.differing_keys, 1);
    assert!(
        events
            .first_difference
            .as_deref()
            .unwrap()
            .contains("recovery_key=4, record_index=7"),
        "{events:?}"
    );
    assert!(differ
        .render(["a", "b"])
        .contains("the central databases differ"));
}

async fn replace_configuration(fx: &Fixture) {
    let db = &fx.db;
    let first = contact_center(1, 50);
    db.seed(&first).await.unwrap();
    db.write(
        &[message(
            1,
            Some((1, vec![ConfigOp::Upsert(pg(900, "extra"))])),
            vec![],
            vec![],
        )],
        1,
    )
    .await
    .unwrap();
    let mut second = contact_center(2, 12);
    second.settings.interval_minutes = 15;
    db.replace_configuration(&second, stamp(42, 420))
        .await
        .unwrap();
    let (loaded, version) = db.load_configuration().await.unwrap().unwrap();
    assert_eq!(version, stamp(42, 420));
    assert_eq!(loaded, sorted(second.clone()));
    for (table, _) in schema::CONFIGURATION_TABLES {
        assert_eq!(
            count(db, table).await,
            object_count(&second, table),
            "{table}"
        );
    }
    assert_eq!(db.progress().await.unwrap().config_version, 42);
    // The ordered tables are not configuration: the log stays.
    assert_eq!(count(db, schema::CONFIG_MESSAGE_LOG).await, 1);
    // Replacing an empty database seeds it.
    let empty = match &fx.location {
        DbLocation::Sqlite(_) => Fixture::sqlite().await,
        DbLocation::Postgres(_) => Fixture::postgres("replace_configuration").await.unwrap(),
    };
    empty
        .db
        .replace_configuration(&first, stamp(7, 70))
        .await
        .unwrap();
    assert_eq!(
        empty.db.load_configuration().await.unwrap(),
        Some((sorted(first), stamp(7, 70)))
    );
}

async fn restart(fx: &Fixture) {
    let cc = contact_center(9, 20);
    fx.db.seed(&cc).await.unwrap();
    let batch = vec![
        message(
            1,
            Some((1, vec![ConfigOp::Upsert(pg(60, "sixty"))])),
            records_of_every_kind(1, 1),
            vec![event("before restart")],
        ),
        message(2, None, records_of_every_kind(2, 2), vec![]),
    ];
    fx.db.write(&batch, 2).await.unwrap();
    fx.db.local_event(123, "before restart").await.unwrap();
    let progress = fx.db.progress().await.unwrap();
    let before = dump(&fx.db).await;
    let configuration = fx.db.load_configuration().await.unwrap();

    let reopened = fx.reopen().await;
    assert_eq!(reopened.progress().await.unwrap(), progress);
    assert_eq!(
        progress,
        Progress {
            committed_through: 2,
            config_version: 1,
            config_recovery_key: 1,
        }
    );
    assert_eq!(dump(&reopened).await, before);
    assert_eq!(reopened.load_configuration().await.unwrap(), configuration);
    reopened
        .write(&[message(3, None, records_of_every_kind(3, 3), vec![])], 3)
        .await
        .unwrap();
    assert_eq!(count(&reopened, schema::ROUTE_CALL_DETAIL).await, 3);
}

async fn bad_input(fx: &Fixture) {
    let db = &fx.db;
    assert!(matches!(
        db.row_count("No_Such_Table").await,
        Err(DbError::UnknownTable(_))
    ));
    assert!(matches!(
        db.rows_page("route_call_detail", None, None, 10).await,
        Err(DbError::UnknownTable(_))
    ));
    assert!(matches!(
        db.insert_rows("Robert'); DROP TABLE \"Event\";--", &[], None)
            .await,
        Err(DbError::UnknownTable(_))
    ));
    assert!(matches!(
        db.insert_rows("Agent", &[], None).await,
        Err(DbError::NotOrdered(_))
    ));
    assert!(matches!(
        db.rows_page("Agent", None, Some(5), 10).await,
        Err(DbError::NotOrdered(_))
    ));
    let mut short = event_row(1, 0);
    short.pop();
    assert!(matches!(
        db.insert_rows(schema::EVENT, &[event_row(1, 1), short], Some(9))
            .await,
        Err(DbError::BadRow { .. })
    ));
    let mut wrong_type = event_row(1, 0);
    wrong_type[2] = SqlValue::Text("later".into());
    assert!(matches!(
        db.insert_rows(schema::EVENT, &[wrong_type], None).await,
        Err(DbError::BadRow { .. })
    ));
    let mut null = event_row(1, 0);
    null[5] = SqlValue::Null;
    assert!(matches!(
        db.insert_rows(schema::EVENT, &[null], None).await,
        Err(DbError::BadRow { .. })
    ));
    assert!(matches!(
        db.rows_page(schema::EVENT, Some(&[SqlValue::Int(1)]), None, 10)
            .await,
        Err(DbError::BadRow { .. })
    ));
    let nul = message(1, None, vec![], vec![event("a NUL \0 cannot be stored")]);
    assert!(matches!(
        db.write(&[nul], 1).await,
        Err(DbError::BadRow { .. })
    ));
    // Nothing of the refused calls was written, and the database still works.
    assert_eq!(count(db, schema::EVENT).await, 0);
    assert_eq!(db.progress().await.unwrap(), Progress::default());
    db.insert_rows(schema::EVENT, &[event_row(1, 0)], Some(1))
        .await
        .unwrap();
    assert_eq!(count(db, schema::EVENT).await, 1);
}

async fn local_events(fx: &Fixture) {
    let db = &fx.db;
    db.local_event(1_000, "started").await.unwrap();
    db.local_event(2_000, "peer's configuration taken")
        .await
        .unwrap();
    assert_eq!(
        all_rows(db, schema::LOCAL_EVENT).await,
        vec![
            vec![
                SqlValue::Int(1),
                SqlValue::Int(1_000),
                SqlValue::Text("started".into())
            ],
            vec![
                SqlValue::Int(2),
                SqlValue::Int(2_000),
                SqlValue::Text("peer's configuration taken".into())
            ],
        ]
    );
}

/// A batch of the usual size; prints its rate (no assertion on time).
async fn batch_of_5000_rows(fx: &Fixture) {
    let db = &fx.db;
    let batch: Vec<LoggedMessage> = (1..=1_000)
        .map(|k| message(k, None, records_of_every_kind(k, k), vec![]))
        .collect();
    let started = std::time::Instant::now();
    db.write(&batch, 1_000).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "{}: one batch of 5,000 rows written in {:.1} ms: {:.0} rows/s",
        db.backend_name(),
        elapsed.as_secs_f64() * 1e3,
        5_000.0 / elapsed.as_secs_f64()
    );
    for table in [
        schema::ROUTE_CALL_DETAIL,
        schema::TERMINATION_CALL_DETAIL,
        schema::SKILL_GROUP_INTERVAL,
        schema::CALL_TYPE_INTERVAL,
        schema::AGENT_SKILL_GROUP_INTERVAL,
    ] {
        assert_eq!(count(db, table).await, 1_000, "{table}");
    }
    assert_eq!(db.progress().await.unwrap().committed_through, 1_000);
}

/// RecoveryKey `n` of epoch range `range`.
fn in_range(range: u64, n: u64) -> u64 {
    (range << RECOVERY_KEY_RANGE_SHIFT) | n
}

fn mark(epoch_range: u64, last_committed: u64) -> RangeMark {
    RangeMark {
        epoch_range,
        last_committed,
    }
}

/// A database of schema 1 (what migrations 2 and 3 added dropped, the migrations forgotten)
/// gets, on opening, a mark for each range it holds rows of: through its last row there, and
/// through the committed mark in that mark's range.
async fn schema_1_gets_its_range_mark(fx: &Fixture) {
    let key = in_range(3, 17);
    fx.db
        .write(
            &[
                message(in_range(2, 5), None, vec![], vec![event("x")]),
                message(in_range(2, 9), None, vec![], vec![event("x")]),
                message(in_range(3, 2), None, vec![], vec![event("x")]),
            ],
            key,
        )
        .await
        .unwrap();
    fx.raw_execute(&format!(
        "DROP TABLE \"{}\"; DROP TABLE \"{}\"; \
         ALTER TABLE \"{}\" DROP COLUMN \"config_recovery_key\"; \
         DELETE FROM \"{SCHEMA_VERSION_TABLE}\" WHERE \"version\" >= 2",
        schema::LOGGER_RANGES,
        schema::HISTORICAL_DROP,
        schema::CONFIGURATION_STATE,
    ))
    .await;
    let reopened = fx.reopen().await;
    assert_eq!(reopened.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(
        reopened.committed_ranges().await.unwrap(),
        vec![mark(2, in_range(2, 9)), mark(3, key)]
    );
}

/// A database of schema 2 gets Configuration_State's config_recovery_key, 0 (its version's
/// change is not known), its version kept; the next change names its own.
async fn schema_2_gets_the_config_recovery_key(fx: &Fixture) {
    let cc = contact_center(3, 10);
    fx.db.seed(&cc).await.unwrap();
    fx.db
        .write(
            &[message(
                7,
                Some((2, vec![ConfigOp::Upsert(pg(70, "seventy"))])),
                vec![],
                vec![],
            )],
            7,
        )
        .await
        .unwrap();
    assert_eq!(fx.db.progress().await.unwrap().config(), stamp(2, 7));
    fx.raw_execute(&format!(
        "ALTER TABLE \"{}\" DROP COLUMN \"config_recovery_key\"; \
         DELETE FROM \"{SCHEMA_VERSION_TABLE}\" WHERE \"version\" = 3",
        schema::CONFIGURATION_STATE,
    ))
    .await;
    let reopened = fx.reopen().await;
    assert_eq!(reopened.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(reopened.progress().await.unwrap().config(), stamp(2, 0));
    let (loaded, config) = reopened.load_configuration().await.unwrap().unwrap();
    assert_eq!(config, stamp(2, 0));
    assert!(loaded.pgs.iter().any(|p| p.name == "seventy"));
    reopened
        .write(
            &[message(
                9,
                Some((3, vec![ConfigOp::Upsert(pg(90, "ninety"))])),
                vec![],
                vec![],
            )],
            9,
        )
        .await
        .unwrap();
    assert_eq!(reopened.progress().await.unwrap().config(), stamp(3, 9));
}

/// Batches mark each range they commit; closing a gap raises the copied ranges' marks and moves
/// the committed mark back out of an abandoned range, so the keys of record below it are
/// written, not skipped.
async fn range_marks_and_gaps(fx: &Fixture) {
    let db = &fx.db;
    let batch: Vec<LoggedMessage> = (1..=5)
        .map(|n| message(in_range(1, n), None, vec![], vec![event("one")]))
        .collect();
    db.write(&batch, in_range(1, 5)).await.unwrap();
    // A history abandoned later: range 2, above what the record continues in range 1.
    db.write(
        &[message(
            in_range(2, 1),
            None,
            vec![],
            vec![event("abandoned")],
        )],
        in_range(2, 3),
    )
    .await
    .unwrap();
    assert_eq!(
        db.committed_ranges().await.unwrap(),
        vec![mark(1, in_range(1, 5)), mark(2, in_range(2, 3))]
    );
    assert!(db.holds_through(in_range(1, 5)).await.unwrap());
    assert!(!db.holds_through(in_range(1, 6)).await.unwrap());
    assert!(!db.holds_through(in_range(4, 1)).await.unwrap());

    // The peer's rows of range 1 through 8 were copied; the stream resumes after 8.
    db.insert_rows(schema::EVENT, &[event_row(in_range(1, 7) as i64, 0)], None)
        .await
        .unwrap();
    db.close_gap(in_range(1, 8), &[mark(1, in_range(1, 8))], &[])
        .await
        .unwrap();
    assert_eq!(
        db.progress().await.unwrap().committed_through,
        in_range(1, 8)
    );
    assert_eq!(
        db.committed_ranges().await.unwrap(),
        vec![mark(1, in_range(1, 8)), mark(2, in_range(2, 3))]
    );
    // The next key of record, below the abandoned mark, is written.
    db.write(
        &[message(in_range(1, 9), None, vec![], vec![event("record")])],
        in_range(1, 9),
    )
    .await
    .unwrap();
    assert_eq!(count(db, schema::EVENT).await, 5 + 1 + 1 + 1);
    assert_eq!(
        db.progress().await.unwrap().committed_through,
        in_range(1, 9)
    );
    // A mark never goes back: an older gap through a lower key leaves range 1 at 9.
    db.close_gap(in_range(1, 2), &[], &[]).await.unwrap();
    assert_eq!(
        db.committed_ranges().await.unwrap()[0],
        mark(1, in_range(1, 9))
    );
    assert_eq!(
        db.progress().await.unwrap().committed_through,
        in_range(1, 9)
    );
}

/// A drop decision is recorded in Historical_Drop; a gap whose copied rows hold one empties
/// its range here too, where rows were written before the decision was taken.
async fn a_gap_holding_a_drop_decision_empties_its_range(fx: &Fixture) {
    let db = &fx.db;
    let batch: Vec<LoggedMessage> = (1..=5)
        .map(|n| message(in_range(1, n), None, vec![], vec![event("before")]))
        .collect();
    db.write(&batch, in_range(1, 5)).await.unwrap();
    let mut decision = message(in_range(1, 9), None, vec![], vec![event("the drop")]);
    decision.dropped = Some(DroppedRange {
        after: in_range(1, 1),
        through: in_range(1, 2),
    });
    db.write(&[decision], in_range(1, 9)).await.unwrap();
    assert_eq!(count(db, schema::EVENT).await, 4 + 1);
    let drops = db
        .rows_page(schema::HISTORICAL_DROP, None, None, 10)
        .await
        .unwrap();
    assert_eq!(drops.len(), 1);
    assert_eq!(
        schema::drop_range_of(&drops[0]),
        Some((in_range(1, 9), in_range(1, 1), in_range(1, 2)))
    );
    // A row naming a range that is empty, or not before its decision, is not one.
    let mut bad = drops[0].clone();
    bad[4] = schema::u64_value(in_range(1, 10));
    assert_eq!(schema::drop_range_of(&bad), None);
    bad[4] = schema::u64_value(in_range(1, 1));
    assert_eq!(schema::drop_range_of(&bad), None);

    // The peer's decision through 4, copied in a gap through 12, empties 3 and 4 here.
    db.close_gap(
        in_range(1, 12),
        &[mark(1, in_range(1, 12))],
        &[(in_range(1, 2), in_range(1, 4))],
    )
    .await
    .unwrap();
    let keys: Vec<SqlValue> = db
        .rows_page(schema::EVENT, None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(
        keys,
        [1, 5, 9]
            .map(|n| schema::u64_value(in_range(1, n)))
            .to_vec()
    );
    assert_eq!(
        db.progress().await.unwrap().committed_through,
        in_range(1, 12)
    );
}

/// Batches that queued up while the logger was busy are written together, yet the end of a
/// range the stream left is marked exactly, though no row came with it.
async fn batches_written_together_mark_where_the_stream_left_each_range(fx: &Fixture) {
    let batch = |keys: &[u64], through: u64| SideToLogger::Batch {
        messages: keys
            .iter()
            .map(|&k| message(k, None, vec![], vec![event("row")]))
            .collect(),
        through,
    };
    tandem_logger::run::write_batches(
        &fx.db,
        vec![
            batch(&[in_range(5, 1)], in_range(5, 3)),
            batch(&[], in_range(5, 7)),
            batch(&[in_range(7, 2)], in_range(7, 2)),
            batch(&[], in_range(7, 4)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        fx.db.committed_ranges().await.unwrap(),
        vec![mark(5, in_range(5, 7)), mark(7, in_range(7, 4))]
    );
    assert!(fx.db.holds_through(in_range(5, 7)).await.unwrap());
    assert_eq!(count(&fx.db, schema::EVENT).await, 2);
}

/// One message per `(epoch range, number)` key, each with one event.
fn events(keys: &[(u64, u64)]) -> Vec<LoggedMessage> {
    keys.iter()
        .map(|&(r, n)| message(in_range(r, n), None, vec![], vec![event("row")]))
        .collect()
}

/// A drop decision ordered at `key`, emptying `(after, through]`.
fn decision(key: u64, after: u64, through: u64) -> LoggedMessage {
    let mut m = message(key, None, vec![], vec![event("the drop")]);
    m.dropped = Some(DroppedRange { after, through });
    m
}

/// The RecoveryKeys of a database's events, in order.
async fn keys_of(db: CentralDb) -> Vec<SqlValue> {
    db.rows_page(schema::EVENT, None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row[0].clone())
        .collect()
}

/// `(epoch range, number)` keys as the database stores them.
fn keys(keys: &[(u64, u64)]) -> Vec<SqlValue> {
    keys.iter()
        .map(|&(r, n)| schema::u64_value(in_range(r, n)))
        .collect()
}

/// A peer whose database holds one message per event key, written in batches each through
/// its last key.
async fn peer_holding(batches: &[&[(u64, u64)]]) -> DatabasePeer {
    let db = in_memory().await;
    for batch in batches {
        let &(r, n) = batch.last().expect("a batch holds a key");
        db.write(&events(batch), in_range(r, n)).await.unwrap();
    }
    DatabasePeer {
        db,
        recovering_through: None,
    }
}

async fn in_memory() -> CentralDb {
    CentralDb::open(&DbLocation::sqlite_in_memory())
        .await
        .unwrap()
}

/// A gap recovery copies what it missed range by range and empties the range of a decision it
/// copied when the decision is of record: in the gap's own epoch range, or in a lower range at
/// or before where the side's history left it. The peer's side may have run on past that
/// point in a history the record never continued.
async fn a_recovery_copies_the_gap_and_applies_the_decisions_of_record(fx: &Fixture) {
    // The peer dropped 2 and 3 by a decision at 9; this logger wrote them before it.
    let peer = in_memory().await;
    peer.write(
        &events(&[(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]),
        in_range(1, 5),
    )
    .await
    .unwrap();
    peer.write(
        &[decision(in_range(1, 9), in_range(1, 1), in_range(1, 3))],
        in_range(1, 9),
    )
    .await
    .unwrap();
    fx.db
        .write(&events(&[(1, 1), (1, 2), (1, 3)]), in_range(1, 3))
        .await
        .unwrap();
    let mut source = DatabasePeer {
        db: peer.clone(),
        recovering_through: None,
    };
    let gap = GapToRecover {
        resumes_after: in_range(1, 9),
        ranges_left: vec![],
    };
    let copied = copy_gap(&fx.db, &mut source, &gap, || Ok(()))
        .await
        .unwrap();
    assert_eq!(
        copied,
        3 + 1,
        "4, 5 and the decision's event, and its Historical_Drop row"
    );
    assert_eq!(keys_of(fx.db.clone()).await, keys_of(peer).await);
    assert_eq!(
        fx.db.progress().await.unwrap().committed_through,
        in_range(1, 9)
    );

    // A decision at (1, 5) dropping (1, 2), held by the peer, and a gap in range 2: the
    // decision empties its range here only when the history the stream continues left range 1
    // at or after it; a range the side does not name is not trusted.
    for (ranges_left, kept) in [
        // Nor does it copy what the peer holds of range 1 past where the record left it.
        (vec![in_range(1, 4)], vec![(1, 1), (1, 2), (2, 1)]),
        (vec![], vec![(1, 1), (1, 2), (1, 5), (2, 1)]),
        (vec![in_range(1, 5)], vec![(1, 1), (1, 5), (2, 1)]),
        (
            vec![in_range(0, 3), in_range(1, 7)],
            vec![(1, 1), (1, 5), (2, 1)],
        ),
    ] {
        let peer = in_memory().await;
        peer.write(&events(&[(1, 1), (1, 2)]), in_range(1, 2))
            .await
            .unwrap();
        peer.write(
            &[decision(in_range(1, 5), in_range(1, 1), in_range(1, 2))],
            in_range(1, 5),
        )
        .await
        .unwrap();
        peer.write(&events(&[(2, 1)]), in_range(2, 1))
            .await
            .unwrap();
        let ours = in_memory().await;
        ours.write(&events(&[(1, 1), (1, 2)]), in_range(1, 2))
            .await
            .unwrap();
        let mut source = DatabasePeer {
            db: peer,
            recovering_through: None,
        };
        let gap = GapToRecover {
            resumes_after: in_range(2, 1),
            ranges_left: ranges_left.clone(),
        };
        copy_gap(&ours, &mut source, &gap, || Ok(())).await.unwrap();
        assert_eq!(
            keys_of(ours).await,
            keys(&kept),
            "range 1 left at {ranges_left:?}"
        );
    }
}

/// In an epoch range below the gap's, a recovery copies the peer's rows only through where the
/// history of record left the range; and a logger holding a tail of that range the record did
/// not continue copies again the rows of record a drop decision in that tail emptied.
async fn a_recovery_copies_a_lower_range_only_as_the_record_holds_it(fx: &Fixture) {
    let gap = GapToRecover {
        resumes_after: in_range(2, 1),
        ranges_left: vec![in_range(1, 3)],
    };

    // The peer's side ran on in range 1 past (1, 3), where the record left it.
    let mut source = peer_holding(&[&[(1, 1), (1, 2), (1, 3), (1, 5)], &[(2, 1)]]).await;
    let ours = in_memory().await;
    ours.write(&events(&[(1, 1)]), in_range(1, 1))
        .await
        .unwrap();
    copy_gap(&ours, &mut source, &gap, || Ok(())).await.unwrap();
    assert_eq!(
        keys_of(ours.clone()).await,
        keys(&[(1, 1), (1, 2), (1, 3), (2, 1)])
    );
    assert_eq!(
        ours.committed_ranges().await.unwrap(),
        vec![mark(1, in_range(1, 3)), mark(2, in_range(2, 1))]
    );

    // This logger's side ran on alone in range 1 and dropped (1, 3), which its logger never
    // had, by a decision at (1, 6); the record, which the peer holds, left range 1 at (1, 3).
    let mut source = peer_holding(&[&[(1, 1), (1, 2), (1, 3)], &[(2, 1)]]).await;
    fx.db
        .write(&events(&[(1, 1), (1, 2)]), in_range(1, 2))
        .await
        .unwrap();
    fx.db
        .write(
            &[decision(in_range(1, 6), in_range(1, 2), in_range(1, 5))],
            in_range(1, 6),
        )
        .await
        .unwrap();
    copy_gap(&fx.db, &mut source, &gap, || Ok(()))
        .await
        .unwrap();
    assert_eq!(
        keys_of(fx.db.clone()).await,
        keys(&[(1, 1), (1, 2), (1, 3), (1, 6), (2, 1)]),
        "every row of record, and the abandoned tail's own decision"
    );

    // The same across ranges: this logger's side, alone in range 2 past (2, 1), where the
    // record left it, dropped (1, 2) and (2, 1) by a decision at (2, 3); the stream had passed
    // (1, 2) without its logger writing it.
    let mut source = peer_holding(&[&[(1, 1), (1, 2)], &[(2, 1)], &[(3, 1)]]).await;
    let ours = in_memory().await;
    ours.write(&events(&[(1, 1)]), in_range(1, 2))
        .await
        .unwrap();
    ours.write(
        &[decision(in_range(2, 3), in_range(1, 1), in_range(2, 2))],
        in_range(2, 3),
    )
    .await
    .unwrap();
    assert_eq!(
        ours.committed_ranges().await.unwrap(),
        vec![mark(1, in_range(1, 2)), mark(2, in_range(2, 3))],
        "this logger's marks pass (1, 2) and (2, 1), which it lacks"
    );
    let across = GapToRecover {
        resumes_after: in_range(3, 1),
        ranges_left: vec![in_range(1, 2), in_range(2, 1)],
    };
    copy_gap(&ours, &mut source, &across, || Ok(()))
        .await
        .unwrap();
    assert_eq!(
        keys_of(ours).await,
        keys(&[(1, 1), (1, 2), (2, 1), (2, 3), (3, 1)])
    );
}

/// A SQLite database capped at its size refuses a write that needs room and changes nothing,
/// then takes it once the cap is lifted; PostgreSQL says it has no cap.
async fn a_capped_database_refuses_writes(fx: &Fixture) {
    let db = &fx.db;
    if let DbLocation::Postgres(_) = fx.location {
        assert!(matches!(
            db.cap_growth(true).await,
            Err(DbError::Unsupported(_))
        ));
        return;
    }
    db.write(&[message(1, None, vec![], vec![event("before")])], 1)
        .await
        .unwrap();
    db.cap_growth(true).await.unwrap();
    let big: Vec<LoggedMessage> = (2..=400)
        .map(|n| message(n, None, records_of_every_kind(n, 3), vec![event("after")]))
        .collect();
    let before = dump(db).await;
    assert!(
        db.write(&big, 400).await.is_err(),
        "a capped database took the batch"
    );
    assert_eq!(dump(db).await, before);
    assert_eq!(db.progress().await.unwrap().committed_through, 1);
    db.cap_growth(false).await.unwrap();
    db.write(&big, 400).await.unwrap();
    assert_eq!(db.progress().await.unwrap().committed_through, 400);
}
