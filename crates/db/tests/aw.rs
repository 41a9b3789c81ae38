//! The AW database on both backends: snapshots and frames of the real-time tables, configuration
//! changes by version, and Feed_State, each written in one transaction and read back equal.
//! PostgreSQL comes from `TANDEM_TEST_POSTGRES_URL` as in the central database's tests.

use std::collections::BTreeMap;
use tandem_db::aw::tests_support::sample_rows_n;
use tandem_db::aw::{self, AwDb, AwWrite, FeedState};
use tandem_db::test_postgres::{postgres_admin_url, PostgresDatabase};
use tandem_db::{schema, ConfigStamp, DbLocation};
use tandem_model::config::{ConfigChange, ConfigObject, ConfigOp, ObjectRef};
use tandem_model::feed::{FeedKey, FeedRow};
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::ids::AgentId;

struct Fixture {
    location: DbLocation,
    _dir: Option<tempfile::TempDir>,
    _postgres: Option<PostgresDatabase>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    Fixture {
        location: DbLocation::Sqlite(dir.path().join("aw.db")),
        _dir: Some(dir),
        _postgres: None,
    }
}

async fn postgres(test: &str) -> Option<Fixture> {
    let database = PostgresDatabase::create(&postgres_admin_url(test)?).await;
    Some(Fixture {
        location: DbLocation::Postgres(database.url.clone()),
        _dir: None,
        _postgres: Some(database),
    })
}

fn state(frame_number: u64, config_version: u64) -> FeedState {
    FeedState {
        generation: 2,
        frame_number,
        epoch: 1,
        config_version,
        frame_time_ms: 1_000 * frame_number,
        recovery_key: 10 * frame_number,
        side: Some("a".into()),
        snapshots: 1,
        frames: frame_number,
        written_wall_ms: 1_000 * frame_number + 30,
        lag_ms: 30,
    }
}

/// Version `version`, made by the change at RecoveryKey `version * 100`.
fn stamp(version: u64) -> ConfigStamp {
    ConfigStamp {
        version,
        recovery_key: version * 100,
    }
}

async fn frames_and_configuration_round_trip(fx: &Fixture) {
    let db = AwDb::open(&fx.location).await.unwrap();
    assert_eq!(db.config().await.unwrap(), None);
    assert_eq!(db.feed_state().await.unwrap(), None);

    // Initialize Local Database.
    let cc = generate(&GenerateParams {
        agents: 20,
        skill_groups: 3,
        call_types: 2,
        peripherals: 1,
        ..GenerateParams::default()
    });
    db.replace_configuration(&cc, stamp(7)).await.unwrap();
    assert_eq!(db.config().await.unwrap(), Some(stamp(7)));

    // A snapshot.
    let mut image: BTreeMap<FeedKey, FeedRow> = BTreeMap::new();
    let snapshot: Vec<FeedRow> = (1..=3).flat_map(sample_rows_n).collect();
    for row in &snapshot {
        image.insert(row.key(), row.clone());
    }
    db.write(AwWrite {
        replace: true,
        upserts: &snapshot,
        feed_state: Some(&state(5, 7)),
        ..AwWrite::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.real_time_digest().await.unwrap(),
        aw::rows_digest(image.values())
    );
    assert_eq!(db.feed_state().await.unwrap(), Some(state(5, 7)));
    assert_eq!(db.row_count("Agent_Real_Time").await.unwrap(), 3);

    // A frame: a row changed, one gone, and a configuration change at version 8.
    let changed: Vec<FeedRow> = sample_rows_n(9)
        .into_iter()
        .map(|row| match row {
            FeedRow::Agent(mut a) => {
                a.agent_id = AgentId(2);
                FeedRow::Agent(a)
            }
            other => other,
        })
        .collect();
    let gone = [FeedKey::Agent(AgentId(1))];
    for row in &changed {
        image.insert(row.key(), row.clone());
    }
    image.remove(&gone[0]);
    let mut agent = cc.agents[0].clone();
    agent.name = "renamed".into();
    let deleted = cc.labels[0].clone();
    let change = ConfigChange {
        ops: vec![
            ConfigOp::Upsert(ConfigObject::Agent(agent.clone())),
            ConfigOp::Delete(ObjectRef::Label(deleted.id)),
        ],
        author: String::new(),
    };
    db.write(AwWrite {
        upserts: &changed,
        deletes: &gone,
        config: Some((std::slice::from_ref(&change), stamp(8))),
        feed_state: Some(&state(6, 8)),
        ..AwWrite::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.real_time_digest().await.unwrap(),
        aw::rows_digest(image.values())
    );
    assert_eq!(db.config().await.unwrap(), Some(stamp(8)));
    let (stored, version) = db.load_configuration().await.unwrap().unwrap();
    assert_eq!(version, stamp(8));
    assert!(stored
        .agents
        .iter()
        .any(|a| a.id == agent.id && a.name == "renamed"));
    assert!(!stored.labels.iter().any(|l| l.id == deleted.id));

    // Another snapshot replaces every real-time row.
    let snapshot = sample_rows_n(4);
    db.write(AwWrite {
        replace: true,
        upserts: &snapshot,
        feed_state: Some(&state(9, 8)),
        ..AwWrite::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.real_time_digest().await.unwrap(),
        aw::rows_digest(&snapshot)
    );
    assert_eq!(
        db.row_count("Agent_Skill_Group_Real_Time").await.unwrap(),
        1
    );

    // A bad row changes nothing: the whole transaction is refused.
    let mut bad = sample_rows_n(5);
    if let FeedRow::RouterQueue(q) = &mut bad[6] {
        q.dialed_digits = "80\0".into();
    }
    assert!(db
        .write(AwWrite {
            upserts: &bad,
            feed_state: Some(&state(10, 8)),
            ..AwWrite::default()
        })
        .await
        .is_err());
    assert_eq!(
        db.real_time_digest().await.unwrap(),
        aw::rows_digest(&snapshot)
    );
    assert_eq!(db.feed_state().await.unwrap(), Some(state(9, 8)));

    // Reopening keeps everything; local events are kept in order.
    let db = AwDb::open(&fx.location).await.unwrap();
    assert_eq!(db.config().await.unwrap(), Some(stamp(8)));
    db.local_event(1, "initialized").await.unwrap();
    db.local_event(2, "rebuilt").await.unwrap();
    let events: Vec<String> = db
        .local_events()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(events, ["initialized", "rebuilt"]);
    assert_eq!(db.row_count(schema::CONFIGURATION_STATE).await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_frames_and_configuration_round_trip() {
    frames_and_configuration_round_trip(&sqlite().await).await;
}

#[tokio::test]
async fn postgres_frames_and_configuration_round_trip() {
    if let Some(fx) = postgres("postgres_frames_and_configuration_round_trip").await {
        frames_and_configuration_round_trip(&fx).await;
    }
}
