//! The local AW database of a distributor: a copy of the central configuration (the same
//! configuration tables as the central database, kept by updateaw) and the real-time tables,
//! replaced frame by frame from the feed (rtdist).
//!
//! Real-time tables use ICM's names and one column per value: a family's counters are named
//! `<counter>_<family>` (`calls_offered_to5`, `calls_handled_today`). Metrics are stored as
//! integers: service level and abandon rate in basis points (1/10,000), average speed of answer
//! and average handle time in milliseconds, NULL where the figure is undefined (no calls yet).
//! Each frame is written in one transaction with Feed_State, so a reader sees the rows of one
//! frame and knows which.

use crate::schema::{
    self, agent_counts, hash_row, id, int, int_null, name_of, opt, text, text_null, text_value,
    u64_value, Column, Row, SqlValue, TableDef, TableKind, Write, AGENT_COUNT_NAMES,
};
use crate::{
    op_of, plan, table_def, Backend, DbError, DbLocation, Op, OpKind, Schema, ROWS_PAGE_MAX,
    STATE_ROW_ID,
};
use tandem_model::config::{ConfigChange, ConfigOp, ConfigStamp, ContactCenter};
use tandem_model::feed::*;
use tandem_model::realtime::CALL_COUNT_NAMES;

/// Where the feed stands in the AW database, one row.
pub const FEED_STATE: &str = "Feed_State";

const FAMILIES: [&str; 3] = ["to5", "half", "today"];
const METRIC_COLUMNS: [&str; 4] = ["service_level_bp", "asa_ms", "aht_ms", "abandon_rate_bp"];

fn families(columns: &mut Vec<Column>) {
    for family in FAMILIES {
        columns.extend(
            CALL_COUNT_NAMES
                .iter()
                .map(|name| int(&format!("{name}_{family}"))),
        );
        columns.extend(
            METRIC_COLUMNS
                .iter()
                .map(|name| int_null(&format!("{name}_{family}"))),
        );
    }
}

fn real_time(name: &'static str, key_len: usize, columns: Vec<Column>) -> TableDef {
    TableDef {
        name,
        kind: TableKind::RealTime,
        columns,
        key_len,
    }
}

fn ints(names: &[&str]) -> Vec<Column> {
    names.iter().map(|n| int(n)).collect()
}

/// The AW database's own tables: the seven real-time tables in `FeedTable` order, then
/// Feed_State. (The configuration tables and Local_Event are the central database's.)
pub fn tables() -> Vec<TableDef> {
    let mut skill_group = ints(&[
        "skill_group_id",
        "logged_on",
        "avail",
        "not_ready",
        "ready",
        "reserved",
        "talking_in",
        "talking_out",
        "talking_other",
        "hold",
        "work_ready",
        "work_not_ready",
        "busy_other",
        "calls_q_now",
        "calls_in_progress",
        "router_calls_q_now",
    ]);
    skill_group.push(int_null("router_longest_call_q_since_ms"));
    skill_group.push(int("expected_delay_ms"));
    families(&mut skill_group);
    let call_counts = |id: &str| {
        let mut columns = ints(&[id, "calls_q_now", "calls_in_progress"]);
        families(&mut columns);
        columns
    };
    let mut agent_skill_group = ints(&["agent_id", "skill_group_id"]);
    agent_skill_group.push(text("agent_state"));
    for family in ["half", "today"] {
        agent_skill_group.extend(
            AGENT_COUNT_NAMES
                .iter()
                .map(|name| int(&format!("{name}_{family}"))),
        );
    }
    let mut agent = ints(&["agent_id", "peripheral_id"]);
    agent.extend([
        text("agent_state"),
        int("reason_code"),
        int("date_time_last_state_change_ms"),
        int("logged_on_since_ms"),
        int_null("skill_group_id"),
        int_null("call_peripheral_id"),
        int_null("call_id"),
        int_null("reserved_for_router_call_key"),
    ]);
    let mut queue = ints(&[
        "router_call_key",
        "routing_client_id",
        "pg_incarnation",
        "request_id",
    ]);
    queue.extend([
        int_null("call_type_id"),
        text("dialed_digits"),
        int("priority"),
        int("enqueued_ms"),
        // The skill groups the call waits in, by id, comma-separated.
        text("skill_group_ids"),
    ]);
    let mut feed_state = ints(&[
        "id",
        "generation",
        "frame_number",
        "epoch",
        "config_version",
        "frame_time_ms",
        "recovery_key",
    ]);
    feed_state.extend([
        text_null("side"),
        int("snapshots"),
        int("frames"),
        int("written_wall_ms"),
        // Wall time of the write minus the frame's ordered time.
        int("lag_ms"),
    ]);
    vec![
        real_time(FeedTable::SkillGroupRealTime.name(), 1, skill_group),
        real_time(
            FeedTable::CallTypeRealTime.name(),
            1,
            call_counts("call_type_id"),
        ),
        real_time(
            FeedTable::ServiceRealTime.name(),
            1,
            call_counts("service_id"),
        ),
        real_time(
            FeedTable::PeripheralRealTime.name(),
            1,
            ints(&[
                "peripheral_id",
                "online",
                "online_since_ms",
                "agents_logged_on",
                "calls_in_progress",
            ]),
        ),
        real_time(FeedTable::AgentRealTime.name(), 1, agent),
        real_time(
            FeedTable::AgentSkillGroupRealTime.name(),
            2,
            agent_skill_group,
        ),
        real_time(FeedTable::RouterQueueRealTime.name(), 1, queue),
        TableDef {
            name: FEED_STATE,
            kind: TableKind::Local,
            columns: feed_state,
            key_len: 1,
        },
    ]
}

/// A fraction as basis points.
fn basis_points(v: Option<f64>) -> SqlValue {
    opt(v, |v| SqlValue::Int((v * 10_000.0).round() as i64))
}
fn millis(v: Option<f64>) -> SqlValue {
    opt(v, |v| SqlValue::Int(v.round() as i64))
}
fn u32_value(v: u32) -> SqlValue {
    SqlValue::Int(i64::from(v))
}

fn push_families(row: &mut Row, figures: [&FamilyFigures; 3]) {
    for f in figures {
        row.extend(f.counts.to_array().into_iter().map(u64_value));
        row.extend([
            basis_points(f.service_level),
            millis(f.asa_ms),
            millis(f.aht_ms),
            basis_points(f.abandon_rate),
        ]);
    }
}

/// A feed key's table and key values.
pub fn key_values(key: &FeedKey) -> (&'static str, Row) {
    let values = match *key {
        FeedKey::SkillGroup(g) => vec![id(g.0)],
        FeedKey::CallType(c) => vec![id(c.0)],
        FeedKey::Service(s) => vec![id(s.0)],
        FeedKey::Peripheral(p) => vec![id(p.0)],
        FeedKey::Agent(a) => vec![id(a.0)],
        FeedKey::AgentSkillGroup(a, g) => vec![id(a.0), id(g.0)],
        FeedKey::RouterQueue(k) => vec![u64_value(k.0)],
    };
    (key.table().name(), values)
}

/// A feed row's table and values, column by column.
pub fn row_values(row: &FeedRow) -> (&'static str, Row) {
    let (table, mut values) = key_values(&row.key());
    match row {
        FeedRow::SkillGroup(g) => {
            values.extend(
                [
                    g.logged_on,
                    g.avail,
                    g.not_ready,
                    g.ready,
                    g.reserved,
                    g.talking_in,
                    g.talking_out,
                    g.talking_other,
                    g.hold,
                    g.work_ready,
                    g.work_not_ready,
                    g.busy_other,
                    g.calls_q_now,
                    g.calls_in_progress,
                    g.router_calls_q_now,
                ]
                .map(u32_value),
            );
            values.push(opt(g.router_longest_call_q_since_ms, u64_value));
            values.push(u64_value(g.expected_delay_ms));
            push_families(&mut values, [&g.to5, &g.half, &g.today]);
        }
        FeedRow::CallType(c) | FeedRow::Service(c) => {
            values.extend([u32_value(c.calls_q_now), u32_value(c.calls_in_progress)]);
            push_families(&mut values, [&c.to5, &c.half, &c.today]);
        }
        FeedRow::Peripheral(p) => values.extend([
            SqlValue::Int(i64::from(p.online)),
            u64_value(p.online_since_ms),
            u32_value(p.agents_logged_on),
            u32_value(p.calls_in_progress),
        ]),
        FeedRow::Agent(a) => values.extend([
            id(a.peripheral_id.0),
            name_of(&a.agent_state),
            u32_value(u32::from(a.reason_code)),
            u64_value(a.date_time_last_state_change_ms),
            u64_value(a.logged_on_since_ms),
            opt(a.skill_group_id, |g| id(g.0)),
            opt(a.call, |c| id(c.peripheral.0)),
            opt(a.call, |c| u64_value(c.call_id)),
            opt(a.reserved_for, |k| u64_value(k.0)),
        ]),
        FeedRow::AgentSkillGroup(m) => {
            values.push(name_of(&m.agent_state));
            values.extend(agent_counts(&m.half).into_iter().map(u32_value));
            values.extend(agent_counts(&m.today).into_iter().map(u32_value));
        }
        FeedRow::RouterQueue(q) => {
            let groups: Vec<String> = q.skill_groups.iter().map(|g| g.0.to_string()).collect();
            values.extend([
                id(q.request.routing_client.0),
                u32_value(q.request.pg_incarnation),
                u64_value(q.request.request_id),
                opt(q.call_type_id, |c| id(c.0)),
                text_value(&q.dialed_digits),
                u32_value(u32::from(q.priority)),
                u64_value(q.enqueued_ms),
                SqlValue::Text(groups.join(",")),
            ]);
        }
    }
    (table, values)
}

/// The real-time tables in the order a digest reads them.
fn real_time_tables() -> impl Iterator<Item = &'static TableDef> {
    Schema::Aw
        .tables()
        .iter()
        .copied()
        .filter(|t| t.kind == TableKind::RealTime)
}

/// A digest of real-time rows as the AW database stores them: each table's rows in key order,
/// tables in `FeedTable` order. A router's feed rows mapped through `row_values` and an AW
/// database read back give the same digest exactly when they hold the same rows.
pub fn rows_digest<'a>(rows: impl IntoIterator<Item = &'a FeedRow>) -> u128 {
    let mut per_table: Vec<(&'static str, Vec<Row>)> =
        real_time_tables().map(|t| (t.name, Vec::new())).collect();
    for row in rows {
        let (table, values) = row_values(row);
        if let Some((_, rows)) = per_table.iter_mut().find(|(t, _)| *t == table) {
            rows.push(values);
        }
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (table, mut rows) in per_table {
        let key_len = table_def(table).map_or(1, |t| t.key_len);
        rows.sort_by(|a, b| a[..key_len].cmp(&b[..key_len]));
        hasher.update(table.as_bytes());
        for row in &rows {
            hash_row(&mut hasher, row);
        }
    }
    hasher.digest128()
}

/// Feed_State's row: which frame the real-time tables hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedState {
    pub generation: u64,
    pub frame_number: u64,
    pub epoch: u64,
    /// The configuration version the frame's rows were computed under.
    pub config_version: u64,
    /// The frame's ordered time.
    pub frame_time_ms: u64,
    pub recovery_key: u64,
    /// The side it came from ("a" or "b").
    pub side: Option<String>,
    /// Snapshots and frames written since the distributor started.
    pub snapshots: u64,
    pub frames: u64,
    pub written_wall_ms: u64,
    /// `written_wall_ms - frame_time_ms`: how far the AW database is behind the router.
    pub lag_ms: i64,
}

impl FeedState {
    /// The tables now hold the rows of the frame or snapshot at `header`.
    pub fn follow(&mut self, header: &FeedFrameHeader) {
        self.generation = header.generation;
        self.frame_number = header.number;
        self.epoch = header.epoch;
        self.config_version = header.config_version;
        self.frame_time_ms = header.time_ms;
        self.recovery_key = header.recovery_key;
    }

    fn row(&self) -> Row {
        vec![
            SqlValue::Int(STATE_ROW_ID),
            u64_value(self.generation),
            u64_value(self.frame_number),
            u64_value(self.epoch),
            u64_value(self.config_version),
            u64_value(self.frame_time_ms),
            u64_value(self.recovery_key),
            opt(self.side.as_deref(), text_value),
            u64_value(self.snapshots),
            u64_value(self.frames),
            u64_value(self.written_wall_ms),
            SqlValue::Int(self.lag_ms),
        ]
    }

    fn of(row: &[SqlValue]) -> Result<FeedState, DbError> {
        let int = |i: usize| match row.get(i) {
            Some(SqlValue::Int(v)) => Ok(*v),
            other => Err(DbError::Corrupt(format!(
                "{FEED_STATE} column {i} is {other:?}"
            ))),
        };
        Ok(FeedState {
            generation: int(1)? as u64,
            frame_number: int(2)? as u64,
            epoch: int(3)? as u64,
            config_version: int(4)? as u64,
            frame_time_ms: int(5)? as u64,
            recovery_key: int(6)? as u64,
            side: match row.get(7) {
                Some(SqlValue::Text(t)) => Some(t.clone()),
                _ => None,
            },
            snapshots: int(8)? as u64,
            frames: int(9)? as u64,
            written_wall_ms: int(10)? as u64,
            lag_ms: int(11)?,
        })
    }
}

/// What one transaction of the AW database writes.
#[derive(Debug, Default)]
pub struct AwWrite<'a> {
    /// A snapshot: every real-time row goes before `upserts` are written.
    pub replace: bool,
    pub upserts: &'a [FeedRow],
    pub deletes: &'a [FeedKey],
    /// Configuration changes to apply, and the configuration the database holds after them.
    pub config: Option<(&'a [ConfigChange], ConfigStamp)>,
    /// Feed_State's new row, if the write comes from the feed.
    pub feed_state: Option<&'a FeedState>,
}

impl AwWrite<'_> {
    /// The number of rows written, for throughput figures.
    pub fn rows(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }
}

/// A distributor's local AW database.
#[derive(Clone)]
pub struct AwDb {
    backend: Backend,
}

impl AwDb {
    /// Opens (creating if needed) and migrates the AW schema, as `CentralDb::open` does.
    pub async fn open(location: &DbLocation) -> Result<AwDb, DbError> {
        Ok(AwDb {
            backend: Backend::open(location, Schema::Aw).await?,
        })
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Writes real-time rows, configuration changes and Feed_State in one transaction.
    pub async fn write(&self, write: AwWrite<'_>) -> Result<(), DbError> {
        let mut ops = Vec::with_capacity(write.rows() + 1);
        for key in write.deletes {
            let (table, key) = key_values(key);
            ops.push(op_of(Write::Delete { table, key })?);
        }
        for row in write.upserts {
            let (table, row) = row_values(row);
            ops.push(op_of(Write::Upsert { table, row })?);
        }
        let mut config = None;
        if let Some((changes, stamp)) = write.config {
            for change in changes {
                ops.extend(configuration_change_ops(change)?);
            }
            config = Some(stamp);
        }
        if let Some(state) = write.feed_state {
            let table = table_def(FEED_STATE)?;
            ops.push(Op {
                table,
                kind: OpKind::Upsert,
                row: state.row(),
            });
        }
        let emptied: Vec<&'static TableDef> = if write.replace {
            real_time_tables().collect()
        } else {
            Vec::new()
        };
        self.backend.write_runs(emptied, plan(ops), config).await
    }

    /// Replaces the configuration tables with this configuration at `config`, in one
    /// transaction (updateaw's "Initialize Local Database").
    pub async fn replace_configuration(
        &self,
        cc: &ContactCenter,
        config: ConfigStamp,
    ) -> Result<(), DbError> {
        self.backend.replace_configuration(cc, config).await
    }

    pub async fn load_configuration(
        &self,
    ) -> Result<Option<(ContactCenter, ConfigStamp)>, DbError> {
        self.backend.load_configuration().await
    }

    /// The configuration the database holds, None before it was initialized.
    pub async fn config(&self) -> Result<Option<ConfigStamp>, DbError> {
        let rows = self
            .backend
            .rows_page(schema::CONFIGURATION_STATE, None, None, 1)
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        match (row.get(1), row.get(3)) {
            (Some(SqlValue::Int(version)), Some(SqlValue::Int(key))) => Ok(Some(ConfigStamp {
                version: *version as u64,
                recovery_key: *key as u64,
            })),
            _ => Err(DbError::Corrupt(format!(
                "{}: the row is {row:?}",
                schema::CONFIGURATION_STATE
            ))),
        }
    }

    /// Sets the configuration's stamp alone (a tool to test updateaw's checks with).
    pub async fn set_config(&self, config: ConfigStamp) -> Result<(), DbError> {
        self.backend
            .write_runs(Vec::new(), Vec::new(), Some(config))
            .await
    }

    pub async fn feed_state(&self) -> Result<Option<FeedState>, DbError> {
        let rows = self.backend.rows_page(FEED_STATE, None, None, 1).await?;
        rows.first().map(|row| FeedState::of(row)).transpose()
    }

    /// Every row of a table in key order, read a page at a time.
    pub async fn rows(&self, table: &str) -> Result<Vec<Row>, DbError> {
        let def = table_def(table)?;
        let mut out: Vec<Row> = Vec::new();
        loop {
            let after = out.last().map(|row| &row[..def.key_len]);
            let page = self
                .backend
                .rows_page(table, after, None, ROWS_PAGE_MAX)
                .await?;
            let full = page.len() == ROWS_PAGE_MAX;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// The digest of the real-time tables as `rows_digest` computes it.
    pub async fn real_time_digest(&self) -> Result<u128, DbError> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for def in real_time_tables() {
            hasher.update(def.name.as_bytes());
            for row in self.rows(def.name).await? {
                hash_row(&mut hasher, &row);
            }
        }
        Ok(hasher.digest128())
    }

    pub async fn row_count(&self, table: &str) -> Result<u64, DbError> {
        self.backend.row_count(table_def(table)?).await
    }

    /// Caps a SQLite database at its current size, or lifts the cap, as
    /// `CentralDb::cap_growth` does: how tests fill the disk.
    pub async fn cap_growth(&self, capped: bool) -> Result<(), DbError> {
        self.backend.cap_growth(capped).await
    }

    /// Makes a SQLite database refuse every write, or take writes again: how the whole-system
    /// simulation makes an AW database's disk fail (rows updated in place need no new space,
    /// so a growth cap alone refuses few of its writes). PostgreSQL has no such switch.
    pub async fn refuse_writes(&self, refuse: bool) -> Result<(), DbError> {
        self.backend.refuse_writes(refuse).await
    }

    pub async fn local_event(&self, wall_time_ms: u64, message: &str) -> Result<(), DbError> {
        self.backend.local_event(wall_time_ms, message).await
    }

    /// Local_Event's rows, oldest first: (id, wall time, message).
    pub async fn local_events(&self) -> Result<Vec<(u64, u64, String)>, DbError> {
        let rows = self.rows(schema::LOCAL_EVENT).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [SqlValue::Int(id), SqlValue::Int(time), SqlValue::Text(message)] => {
                    Some((*id as u64, *time as u64, message.clone()))
                }
                _ => None,
            })
            .collect())
    }
}

/// A configuration change's writes to the configuration tables (no Config_Message_Log: the AW
/// database keeps the configuration, not its history).
fn configuration_change_ops(change: &ConfigChange) -> Result<Vec<Op>, DbError> {
    let mut ops = Vec::with_capacity(change.ops.len());
    for op in &change.ops {
        let write = match op {
            ConfigOp::Upsert(object) => {
                let (table, mut row) = schema::object_key(&object.object_ref());
                row.push(SqlValue::Text(schema::definition(object)));
                Write::Upsert { table, row }
            }
            ConfigOp::Delete(reference) => {
                let (table, key) = schema::object_key(reference);
                Write::Delete { table, key }
            }
        };
        ops.push(op_of(write)?);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_row;
    use crate::schema::ColumnType;

    #[test]
    fn every_real_time_row_fits_its_table() {
        let rows = crate::aw::tests_support::sample_rows();
        assert_eq!(rows.len(), FeedTable::ALL.len());
        for row in &rows {
            let (table, values) = row_values(row);
            let def = table_def(table).unwrap();
            assert_eq!(def.kind, TableKind::RealTime);
            check_row(def, &values).unwrap_or_else(|e| panic!("{table}: {e}"));
            let (key_table, key) = key_values(&row.key());
            assert_eq!((key_table, &key[..]), (table, &values[..def.key_len]));
        }
        let skill_group = table_def("Skill_Group_Real_Time").unwrap();
        let names: Vec<&str> = skill_group
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(names.contains(&"calls_offered_to5"));
        assert!(names.contains(&"service_level_bp_today"));
        assert_eq!(
            skill_group
                .columns
                .iter()
                .filter(|c| c.ty == ColumnType::Text)
                .count(),
            0
        );
    }

    fn write_rows(rows: &[FeedRow]) -> AwWrite<'_> {
        AwWrite {
            replace: false,
            upserts: rows,
            deletes: &[],
            config: None,
            feed_state: None,
        }
    }

    #[tokio::test]
    async fn a_full_or_read_only_disk_is_transient_a_refused_row_is_not() {
        let db = AwDb::open(&crate::DbLocation::sqlite_in_memory())
            .await
            .unwrap();
        let rows = crate::aw::tests_support::sample_rows();
        db.write(write_rows(&rows)).await.unwrap();

        db.refuse_writes(true).await.unwrap();
        let read_only = db.write(write_rows(&rows)).await.unwrap_err();
        assert!(read_only.is_transient(), "{read_only}");
        db.refuse_writes(false).await.unwrap();

        db.cap_growth(true).await.unwrap();
        let more: Vec<FeedRow> = (2..=400)
            .flat_map(crate::aw::tests_support::sample_rows_n)
            .collect();
        let full = db.write(write_rows(&more)).await.unwrap_err();
        assert!(full.is_transient(), "{full}");
        db.cap_growth(false).await.unwrap();
        db.write(write_rows(&more)).await.unwrap();

        let refused = |code| DbError::Sqlite {
            context: "writing".into(),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        assert!(refused(rusqlite::ffi::SQLITE_BUSY).is_transient());
        assert!(refused(rusqlite::ffi::SQLITE_IOERR).is_transient());
        assert!(!refused(rusqlite::ffi::SQLITE_CONSTRAINT).is_transient());
        assert!(!refused(rusqlite::ffi::SQLITE_CORRUPT).is_transient());
        assert!(!DbError::BadRow {
            table: "Agent_Real_Time".into(),
            problem: "a NUL character".into()
        }
        .is_transient());
    }
}

/// Sample rows of every real-time table, for tests here and in the distributor.
#[doc(hidden)]
pub mod tests_support {
    use tandem_model::domain::{AgentState, ServiceLevelType};
    use tandem_model::feed::*;
    use tandem_model::ids::*;
    use tandem_model::realtime::{AgentCounts, CallCounts};

    /// A row of each table, in `FeedTable` order; `n` varies their values.
    pub fn sample_rows_n(n: u32) -> Vec<FeedRow> {
        let counts = CallCounts {
            calls_offered: u64::from(n) + 10,
            calls_handled: u64::from(n) + 7,
            ..CallCounts::default()
        };
        let figures = FamilyFigures::new(counts, ServiceLevelType::IgnoreAbandoned);
        vec![
            FeedRow::SkillGroup(Box::new(SkillGroupRealTimeRow {
                skill_group_id: SkillGroupId(n),
                logged_on: 5,
                avail: 1,
                not_ready: 1,
                ready: 4,
                reserved: 0,
                talking_in: 2,
                talking_out: 0,
                talking_other: 0,
                hold: 0,
                work_ready: 1,
                work_not_ready: 0,
                busy_other: 0,
                calls_q_now: n,
                calls_in_progress: 2,
                router_calls_q_now: 0,
                router_longest_call_q_since_ms: None,
                expected_delay_ms: 0,
                to5: figures.clone(),
                half: figures.clone(),
                today: FamilyFigures::default(),
            })),
            FeedRow::CallType(Box::new(CallCountsRealTimeRow {
                id: n,
                calls_q_now: 1,
                calls_in_progress: 3,
                to5: figures.clone(),
                half: figures.clone(),
                today: figures,
            })),
            FeedRow::Service(Box::new(CallCountsRealTimeRow {
                id: n,
                calls_q_now: 0,
                calls_in_progress: 1,
                to5: FamilyFigures::default(),
                half: FamilyFigures::default(),
                today: FamilyFigures::default(),
            })),
            FeedRow::Peripheral(PeripheralRealTimeRow {
                peripheral_id: PeripheralId(n),
                online: true,
                online_since_ms: 1_000,
                agents_logged_on: 5,
                calls_in_progress: 2,
            }),
            FeedRow::Agent(AgentRealTimeRow {
                agent_id: AgentId(n),
                peripheral_id: PeripheralId(1),
                agent_state: AgentState::TalkingIn,
                reason_code: 0,
                date_time_last_state_change_ms: 5_000 + u64::from(n),
                logged_on_since_ms: 1_000,
                skill_group_id: Some(SkillGroupId(1)),
                call: Some(PeripheralCallKey {
                    peripheral: PeripheralId(1),
                    call_id: 99,
                }),
                reserved_for: None,
            }),
            FeedRow::AgentSkillGroup(AgentSkillGroupRealTimeRow {
                agent_id: AgentId(n),
                skill_group_id: SkillGroupId(1),
                agent_state: AgentState::TalkingIn,
                half: AgentCounts {
                    calls_handled: n,
                    ..AgentCounts::default()
                },
                today: AgentCounts::default(),
            }),
            FeedRow::RouterQueue(RouterQueueRow {
                router_call_key: RouterCallKey(u64::from(n) << 40),
                request: RouteRequestKey {
                    routing_client: RoutingClientId(1),
                    pg_incarnation: 3,
                    request_id: 77,
                },
                call_type_id: Some(CallTypeId(1)),
                dialed_digits: "8005551000".into(),
                priority: 1,
                enqueued_ms: 4_000,
                skill_groups: vec![SkillGroupId(1), SkillGroupId(2)],
            }),
        ]
    }

    pub fn sample_rows() -> Vec<FeedRow> {
        sample_rows_n(1)
    }
}
