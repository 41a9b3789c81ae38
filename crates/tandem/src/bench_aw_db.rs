//! `tandem bench aw-db`: how fast a distributor's local AW database takes the real-time feed, on
//! SQLite and on PostgreSQL, through `AwDb::write` exactly as the distributor's writer calls it
//! (one transaction per merged batch, with Feed_State).
//!
//! The rows are those of a generated contact center at its peak, every agent logged on: a
//! snapshot of every real-time table (replace), then frames of K changed rows. A frame's rows
//! follow what a call does to the feed: each agent whose state changed brings its
//! Agent_Real_Time row, its Agent_Skill_Group_Real_Time rows (its state shows in each) and the
//! Skill_Group_Real_Time rows of its groups (their counts of agents by state change), until the
//! frame holds K rows. Last, a second snapshot replaces the full tables, as after a failover of
//! the feed. Each figure is one JSON line on stdout; a table of them all follows on stderr.
//!
//! Only `AwDb::write` is timed: the frames are built before it, outside the measurement. The
//! AW database commits without waiting for the disk (`synchronous=NORMAL`,
//! `synchronous_commit=off`; see `tandem_db`), so the figures are of the database's work, not
//! of the disk's flush latency.

use anyhow::{Context, Result};
use rand::{seq::SliceRandom, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tandem_db::aw::{AwDb, AwWrite, FeedState};
use tandem_db::test_postgres::{PostgresDatabase, POSTGRES_URL};
use tandem_db::DbLocation;
use tandem_model::config::ContactCenter;
use tandem_model::domain::{AgentState, ServiceLevelType};
use tandem_model::feed::*;
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::ids::*;
use tandem_model::realtime::{AgentCounts, CallCounts};

#[derive(clap::Args)]
pub struct AwDbBenchArgs {
    /// Agents of the contact center, all logged on.
    #[arg(long, default_value_t = 100_000)]
    agents: u32,
    /// Frames timed at each frame size, after a few untimed ones.
    #[arg(long, default_value_t = 200)]
    frames: u32,
    /// Changed rows per frame (K): one measurement for each size.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    changed_rows: Vec<usize>,
    /// Which database: sqlite, postgres, or both (PostgreSQL is skipped, with a note, when no
    /// server is given).
    #[arg(long, default_value = "both")]
    backend: String,
    /// An admin URL of a PostgreSQL server (a role that may create databases): the bench writes
    /// to a new database of its own there, dropped at the end. Default: the environment's
    /// `TANDEM_TEST_POSTGRES_URL`.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Where the SQLite file goes (default: the system's temporary directory); removed at the
    /// end.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Frames written before each frame size's measurement: they prepare the statements on the
/// connections and bring the touched pages in, which a running distributor has long done.
const WARMUP_FRAMES: u32 = 5;
/// The most frames one size's measurement times, whatever `--frames` says.
const FRAMES_MAX: u32 = 100_000;
/// The largest frame: above what one feed frame of 100,000 agents changes in a second.
const CHANGED_ROWS_MAX: usize = 1_000_000;
/// Calls waiting in the router queue in the snapshot, per agent (1% of the agents).
const QUEUED_CALLS_PER_AGENT: f64 = 0.01;
/// 2026-11-21T10:00:00Z, as in the other benches: the rows' instants start here.
const START_MS: u64 = 1_795_255_200_000;
/// The frames' spacing in ordered time: one feed frame per second.
const FRAME_MS: u64 = 1_000;

/// The contact center's real-time rows at its peak, and how a frame picks changed rows.
struct RowSet {
    cc: ContactCenter,
    /// Each agent's skill groups, by the agent's index in `cc.agents`.
    groups_of_agent: Vec<Vec<SkillGroupId>>,
    /// The agents in the seeded order frames take them in, round and round.
    agent_order: Vec<usize>,
}

impl RowSet {
    fn new(agents: u32) -> RowSet {
        // The router bench's shape: 20 agents per skill group, up to 5 groups per agent.
        let cc = generate(&GenerateParams {
            agents,
            skill_groups: (agents / 20).max(1),
            call_types: (agents / 100).max(3),
            peripherals: 10.min((agents / 20).max(1)),
            skill_groups_per_agent_max: 5,
            ..GenerateParams::default()
        });
        let index: HashMap<AgentId, usize> = cc
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id, i))
            .collect();
        let mut groups_of_agent = vec![Vec::new(); cc.agents.len()];
        for member in &cc.skill_group_members {
            groups_of_agent[index[&member.agent]].push(member.skill_group);
        }
        let mut agent_order: Vec<usize> = (0..cc.agents.len()).collect();
        agent_order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        RowSet {
            cc,
            groups_of_agent,
            agent_order,
        }
    }

    /// Every real-time row at frame `frame`, in `FeedTable` order.
    fn snapshot(&self, frame: u64) -> Vec<FeedRow> {
        let cc = &self.cc;
        let mut rows = Vec::new();
        rows.extend(cc.skill_groups.iter().map(|g| skill_group_row(g.id, frame)));
        rows.extend(
            cc.call_types
                .iter()
                .map(|c| FeedRow::CallType(call_counts_row(c.id.0, frame))),
        );
        rows.extend(
            cc.services
                .iter()
                .map(|s| FeedRow::Service(call_counts_row(s.id.0, frame))),
        );
        rows.extend(cc.peripherals.iter().map(|p| {
            FeedRow::Peripheral(PeripheralRealTimeRow {
                peripheral_id: p.id,
                online: true,
                online_since_ms: START_MS,
                agents_logged_on: (cc.agents.len() / cc.peripherals.len()) as u32,
                calls_in_progress: 0,
            })
        }));
        for agent in &cc.agents {
            rows.push(agent_row(agent.id, agent.peripheral, frame));
        }
        for (i, agent) in cc.agents.iter().enumerate() {
            for &group in &self.groups_of_agent[i] {
                rows.push(agent_skill_group_row(agent.id, group, frame));
            }
        }
        let queued = (cc.agents.len() as f64 * QUEUED_CALLS_PER_AGENT) as u64;
        let groups = cc.skill_groups.len() as u64;
        rows.extend((0..queued).map(|n| {
            FeedRow::RouterQueue(RouterQueueRow {
                router_call_key: RouterCallKey(n + 1),
                request: RouteRequestKey {
                    routing_client: RoutingClientId(1),
                    pg_incarnation: 1,
                    request_id: n + 1,
                },
                call_type_id: cc.call_types.first().map(|c| c.id),
                dialed_digits: "8000000000".into(),
                priority: 1,
                enqueued_ms: START_MS + n,
                skill_groups: vec![cc.skill_groups[(n % groups) as usize].id],
            })
        }));
        rows
    }

    /// Frame `frame`'s `changed` rows: agents in order from `*cursor` (which advances), each
    /// with its skill group memberships and the groups not yet in the frame.
    fn frame(&self, frame: u64, changed: usize, cursor: &mut usize) -> Vec<FeedRow> {
        let mut rows = Vec::with_capacity(changed + 8);
        let mut groups_in_frame: HashSet<SkillGroupId> = HashSet::new();
        while rows.len() < changed {
            let i = self.agent_order[*cursor % self.agent_order.len()];
            *cursor += 1;
            let agent = &self.cc.agents[i];
            rows.push(agent_row(agent.id, agent.peripheral, frame));
            for &group in &self.groups_of_agent[i] {
                rows.push(agent_skill_group_row(agent.id, group, frame));
                if groups_in_frame.insert(group) {
                    rows.push(skill_group_row(group, frame));
                }
            }
        }
        rows.truncate(changed);
        rows
    }
}

/// The agent states a logged-on agent goes through for a call, one per frame.
const CALL_STATES: [AgentState; 4] = [
    AgentState::Reserved,
    AgentState::TalkingIn,
    AgentState::WorkReady,
    AgentState::Ready,
];

fn state_at(frame: u64) -> AgentState {
    CALL_STATES[(frame % CALL_STATES.len() as u64) as usize]
}

fn frame_ms(frame: u64) -> u64 {
    START_MS + frame * FRAME_MS
}

fn agent_row(agent: AgentId, peripheral: PeripheralId, frame: u64) -> FeedRow {
    let state = state_at(frame);
    let on_call = matches!(state, AgentState::TalkingIn);
    FeedRow::Agent(AgentRealTimeRow {
        agent_id: agent,
        peripheral_id: peripheral,
        agent_state: state,
        reason_code: 0,
        date_time_last_state_change_ms: frame_ms(frame),
        logged_on_since_ms: START_MS,
        skill_group_id: None,
        call: on_call.then_some(PeripheralCallKey {
            peripheral,
            call_id: frame,
        }),
        reserved_for: None,
    })
}

fn agent_skill_group_row(agent: AgentId, group: SkillGroupId, frame: u64) -> FeedRow {
    let handled = (frame / CALL_STATES.len() as u64) as u32;
    let counts = AgentCounts {
        calls_offered: handled + 1,
        calls_answered: handled,
        calls_handled: handled,
        handle_time_ms: handled.saturating_mul(180_000),
        talk_time_ms: handled.saturating_mul(150_000),
        ..AgentCounts::default()
    };
    FeedRow::AgentSkillGroup(AgentSkillGroupRealTimeRow {
        agent_id: agent,
        skill_group_id: group,
        agent_state: state_at(frame),
        half: counts,
        today: counts,
    })
}

fn figures(frame: u64) -> FamilyFigures {
    let counts = CallCounts {
        calls_offered: frame * 20 + 3,
        calls_answered: frame * 19,
        calls_handled: frame * 19,
        calls_abandoned: frame,
        handle_time_ms: frame * 19 * 180_000,
        talk_time_ms: frame * 19 * 150_000,
        answer_wait_time_ms: frame * 19 * 8_000,
        service_level_calls_offered: frame * 20,
        service_level_calls: frame * 17,
        ..CallCounts::default()
    };
    FamilyFigures::new(counts, ServiceLevelType::IgnoreAbandoned)
}

fn skill_group_row(group: SkillGroupId, frame: u64) -> FeedRow {
    let f = frame as u32;
    FeedRow::SkillGroup(Box::new(SkillGroupRealTimeRow {
        skill_group_id: group,
        logged_on: 60,
        avail: 5 + f % 7,
        not_ready: 3,
        ready: 10,
        reserved: f % 3,
        talking_in: 30 + f % 5,
        talking_out: 0,
        talking_other: 0,
        hold: f % 2,
        work_ready: 8,
        work_not_ready: 1,
        busy_other: 2,
        calls_q_now: f % 4,
        calls_in_progress: 30 + f % 5,
        router_calls_q_now: f % 4,
        router_longest_call_q_since_ms: (!f.is_multiple_of(4)).then_some(frame_ms(frame) - 4_000),
        expected_delay_ms: u64::from(f % 4) * 2_000,
        to5: figures(frame % 300),
        half: figures(frame % 1_800),
        today: figures(frame),
    }))
}

fn call_counts_row(id: u32, frame: u64) -> Box<CallCountsRealTimeRow> {
    Box::new(CallCountsRealTimeRow {
        id,
        calls_q_now: 2,
        calls_in_progress: 40,
        to5: figures(frame % 300),
        half: figures(frame % 1_800),
        today: figures(frame),
    })
}

/// Rows per table, for the figures.
fn rows_by_table(rows: &[FeedRow]) -> BTreeMap<&'static str, usize> {
    let mut by_table = BTreeMap::new();
    for row in rows {
        *by_table.entry(row.key().table().name()).or_default() += 1;
    }
    by_table
}

/// What one measurement found; one line of the table.
struct Figure {
    backend: &'static str,
    what: String,
    rows_per_write: usize,
    writes: usize,
    seconds: f64,
    /// Per-transaction latencies, sorted (a snapshot has one).
    write_ms: Vec<f64>,
}

impl Figure {
    fn rows_per_s(&self) -> f64 {
        (self.rows_per_write * self.writes) as f64 / self.seconds
    }
    fn writes_per_s(&self) -> f64 {
        self.writes as f64 / self.seconds
    }
    /// The `p` quantile (nearest rank) of the per-transaction latencies.
    fn ms_at(&self, p: f64) -> f64 {
        let n = self.write_ms.len();
        self.write_ms[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The writer's side of the bench: one database, its Feed_State, the frame counter.
struct Writer {
    db: AwDb,
    feed_state: FeedState,
    frame: u64,
}

impl Writer {
    /// Writes `rows` as frame `self.frame` in one transaction, as the distributor's writer
    /// does, and returns how long `AwDb::write` took.
    async fn write(&mut self, rows: &[FeedRow], replace: bool) -> Result<Duration> {
        let s = &mut self.feed_state;
        s.generation = 1;
        s.frame_number = self.frame;
        s.epoch = 1;
        s.config_version = tandem_db::SEED_CONFIG_VERSION;
        s.frame_time_ms = frame_ms(self.frame);
        s.recovery_key = self.frame;
        s.side = Some("a".into());
        if replace {
            s.snapshots += 1;
        } else {
            s.frames += 1;
        }
        s.written_wall_ms = frame_ms(self.frame);
        s.lag_ms = 0;
        let started = Instant::now();
        self.db
            .write(AwWrite {
                replace,
                upserts: rows,
                deletes: &[],
                config: None,
                feed_state: Some(&self.feed_state),
            })
            .await
            .with_context(|| format!("writing frame {} ({} rows)", self.frame, rows.len()))?;
        Ok(started.elapsed())
    }
}

async fn snapshot_figure(
    writer: &mut Writer,
    set: &RowSet,
    what: &str,
    backend: &'static str,
) -> Result<Figure> {
    writer.frame += 1;
    let rows = set.snapshot(writer.frame);
    let elapsed = writer.write(&rows, true).await?.as_secs_f64();
    let figure = Figure {
        backend,
        what: what.to_string(),
        rows_per_write: rows.len(),
        writes: 1,
        seconds: elapsed,
        write_ms: vec![elapsed * 1e3],
    };
    println!(
        "{}",
        json!({
            "bench": "aw-db",
            "backend": backend,
            "what": what,
            "agents": set.cc.agents.len(),
            "rows": rows.len(),
            "rows_by_table": rows_by_table(&rows),
            "write_ms": round1(elapsed * 1e3),
            "rows_per_s": figure.rows_per_s().round(),
        })
    );
    Ok(figure)
}

async fn frames_figure(
    writer: &mut Writer,
    set: &RowSet,
    changed: usize,
    frames: u32,
    backend: &'static str,
) -> Result<Figure> {
    let mut cursor = 0;
    let mut build = |writer: &mut Writer| {
        writer.frame += 1;
        set.frame(writer.frame, changed, &mut cursor)
    };
    for _ in 0..WARMUP_FRAMES {
        let rows = build(writer);
        writer.write(&rows, false).await?;
    }
    let mut write_ms = Vec::with_capacity(frames as usize);
    let mut seconds = 0.0;
    let mut by_table: BTreeMap<&'static str, usize> = BTreeMap::new();
    for _ in 0..frames {
        let rows = build(writer);
        for (table, n) in rows_by_table(&rows) {
            *by_table.entry(table).or_default() += n;
        }
        let elapsed = writer.write(&rows, false).await?.as_secs_f64();
        seconds += elapsed;
        write_ms.push(elapsed * 1e3);
    }
    write_ms.sort_by(f64::total_cmp);
    let figure = Figure {
        backend,
        what: format!("frames of {changed} rows"),
        rows_per_write: changed,
        writes: frames as usize,
        seconds,
        write_ms,
    };
    println!(
        "{}",
        json!({
            "bench": "aw-db",
            "backend": backend,
            "what": "frames",
            "agents": set.cc.agents.len(),
            "changed_rows_per_frame": changed,
            "frames": frames,
            "warmup_frames": WARMUP_FRAMES,
            "rows_by_table": by_table,
            "frames_per_s": round1(figure.writes_per_s()),
            "rows_per_s": figure.rows_per_s().round(),
            "write_ms_p50": round1(figure.ms_at(0.5)),
            "write_ms_p99": round1(figure.ms_at(0.99)),
            "write_ms_max": round1(figure.ms_at(1.0)),
        })
    );
    Ok(figure)
}

/// Every measurement on one database: the snapshot into empty tables, each frame size, the
/// snapshot over full tables.
async fn measure(location: &DbLocation, set: &RowSet, args: &AwDbBenchArgs) -> Result<Vec<Figure>> {
    let db = AwDb::open(location).await?;
    let backend = db.backend_name();
    eprintln!("{backend}: writing ...");
    let mut writer = Writer {
        db,
        feed_state: FeedState::default(),
        frame: 0,
    };
    let mut figures =
        vec![snapshot_figure(&mut writer, set, "snapshot, empty tables", backend).await?];
    for &changed in &args.changed_rows {
        figures.push(frames_figure(&mut writer, set, changed, args.frames, backend).await?);
    }
    figures.push(snapshot_figure(&mut writer, set, "snapshot, full tables", backend).await?);
    let state = writer.db.feed_state().await?.context("no Feed_State row")?;
    anyhow::ensure!(
        state.frame_number == writer.frame && state == writer.feed_state,
        "Feed_State reads back {state:?}, not the last frame written"
    );
    Ok(figures)
}

fn print_table(figures: &[Figure]) {
    eprintln!(
        "{:<10} {:<24} {:>10} {:>7} {:>10} {:>11} {:>9} {:>9}",
        "backend", "write", "rows/txn", "txns", "txns/s", "rows/s", "p50 ms", "p99 ms"
    );
    for f in figures {
        eprintln!(
            "{:<10} {:<24} {:>10} {:>7} {:>10.1} {:>11.0} {:>9.1} {:>9.1}",
            f.backend,
            f.what,
            f.rows_per_write,
            f.writes,
            f.writes_per_s(),
            f.rows_per_s(),
            f.ms_at(0.5),
            f.ms_at(0.99),
        );
    }
}

/// A new database on the server, or why there is none.
fn postgres_database(url: &str) -> Result<PostgresDatabase> {
    // `PostgresDatabase::create` is the tests' helper and panics when the server refuses.
    let rt = runtime()?;
    std::panic::catch_unwind(|| rt.block_on(PostgresDatabase::create(url)))
        .map_err(|_| anyhow::anyhow!("could not create a database on the PostgreSQL server"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn run(args: AwDbBenchArgs) -> Result<()> {
    let (sqlite, postgres) = match args.backend.as_str() {
        "sqlite" => (true, false),
        "postgres" => (false, true),
        "both" => (true, true),
        other => anyhow::bail!("--backend is sqlite, postgres or both, not {other:?}"),
    };
    anyhow::ensure!(args.agents >= 20, "--agents must be at least 20");
    anyhow::ensure!(
        (1..=FRAMES_MAX).contains(&args.frames),
        "--frames must be 1 to {FRAMES_MAX}"
    );
    anyhow::ensure!(
        args.changed_rows
            .iter()
            .all(|k| (1..=CHANGED_ROWS_MAX.min(args.agents as usize)).contains(k)),
        "--changed-rows must each be 1 to {CHANGED_ROWS_MAX} and at most --agents (a frame \
         takes each agent once)"
    );
    let postgres_url = args
        .postgres_url
        .clone()
        .or_else(|| std::env::var(POSTGRES_URL).ok().filter(|u| !u.is_empty()));
    if postgres && postgres_url.is_none() {
        anyhow::ensure!(
            sqlite,
            "--backend postgres needs --postgres-url or {POSTGRES_URL}"
        );
        eprintln!(
            "postgresql skipped: no server (give --postgres-url or set {POSTGRES_URL}, e.g. \
             postgres://tandem:tandem@127.0.0.1:5432/tandem_test)"
        );
    }
    let started = Instant::now();
    let set = RowSet::new(args.agents);
    eprintln!(
        "{} agents, {} skill groups, {} memberships (generated in {:.1} s)",
        set.cc.agents.len(),
        set.cc.skill_groups.len(),
        set.cc.skill_group_members.len(),
        started.elapsed().as_secs_f64()
    );
    let rt = runtime()?;
    let mut figures = Vec::new();
    if sqlite {
        let dir = args
            .dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("tandem-bench-aw-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let location = DbLocation::Sqlite(dir.join("aw.sqlite"));
        let measured = rt.block_on(measure(&location, &set, &args));
        std::fs::remove_dir_all(&dir)?;
        figures.extend(measured?);
    }
    if let (true, Some(url)) = (postgres, postgres_url) {
        let database = postgres_database(&url)?;
        let location = DbLocation::Postgres(database.url.clone());
        figures.extend(rt.block_on(measure(&location, &set, &args))?);
        // Dropping `database` drops the bench's database on the server.
    }
    print_table(&figures);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_exactly_k_distinct_rows_of_agents_and_their_groups() {
        let set = RowSet::new(1_000);
        let snapshot = set.snapshot(1);
        let by_table = rows_by_table(&snapshot);
        assert_eq!(by_table["Agent_Real_Time"], 1_000);
        assert_eq!(
            by_table["Agent_Skill_Group_Real_Time"],
            set.cc.skill_group_members.len()
        );
        let mut cursor = 0;
        for changed in [1, 100, 1_000] {
            let rows = set.frame(2, changed, &mut cursor);
            assert_eq!(rows.len(), changed);
            let keys: HashSet<FeedKey> = rows.iter().map(FeedRow::key).collect();
            assert_eq!(keys.len(), changed, "a frame's rows have distinct keys");
            assert!(keys.iter().all(|k| matches!(
                k,
                FeedKey::Agent(_) | FeedKey::AgentSkillGroup(..) | FeedKey::SkillGroup(_)
            )));
        }
    }
}
