//! tandem's databases: the central database a logger writes (`CentralDb`) and the local AW
//! database a distributor writes (`aw::AwDb`), each over two backends, SQLite and PostgreSQL.
//!
//! Everything both backends share lives here: the error type, the catalogs of tables, the
//! versioned migrations, the checks on rows before they are sent, and the plan that turns a
//! batch of writes into per-table runs. The backends (`sqlite`, `postgres`) only execute runs
//! and read rows; the SQL text of both comes from `sql`.
//!
//! Durability: the central database's `write` and `insert_rows` return once their transaction
//! is durable (SQLite in WAL mode with `synchronous=FULL`; PostgreSQL with
//! `synchronous_commit=on` forced for the logger's sessions), because the caller acknowledges
//! upstream and the upstream then forgets the data. An AW database is a copy the distributor
//! rebuilds from the feed and the central configuration, so its commits need not wait for the
//! disk (`synchronous=NORMAL`, `synchronous_commit=off`): a crash loses at most the last frames,
//! which the feed sends again.

pub mod aw;

mod postgres;
pub mod schema;
mod sql;
mod sqlite;
pub mod test_postgres;

use schema::{ColumnType, Row, SqlValue, TableDef, TableKind, Write};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
pub use tandem_model::config::ConfigStamp;
use tandem_model::config::{ConfigObject, ContactCenter};
use tandem_model::logged::LoggedMessage;

pub use sql::SCHEMA_VERSION_TABLE;

/// The most rows one PostgreSQL statement carries (one array parameter per column), so a large
/// batch never becomes one enormous message.
pub const INSERT_ROWS_PER_STATEMENT_MAX: usize = 10_000;
/// The configuration version of a freshly seeded database: the initial configuration is the
/// first version, as it is for a router built from a contact center.
pub const SEED_CONFIG_VERSION: u64 = 1;
/// The most rows `rows_page` returns at once; a larger limit is an error.
pub const ROWS_PAGE_MAX: usize = 10_000;
/// The most writes one `write` or `insert_rows` transaction takes. Batches are typically
/// 500-5,000 rows; anything near this bound is a caller that stopped batching.
pub const BATCH_WRITES_MAX: usize = 1_000_000;

/// Where the central database is.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A SQLite file, created if missing; `DbLocation::SQLITE_IN_MEMORY` for a database that
    /// lives only as long as its handle.
    Sqlite(std::path::PathBuf),
    /// A libpq-style URL, e.g. `postgres://user:pw@127.0.0.1:5432/db`.
    Postgres(String),
}

impl std::fmt::Debug for DbLocation {
    /// Never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbLocation::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DbLocation::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

impl DbLocation {
    /// SQLite's name for a private in-memory database.
    pub const SQLITE_IN_MEMORY: &'static str = ":memory:";

    /// A SQLite database in memory, private to the handle that opens it.
    pub fn sqlite_in_memory() -> DbLocation {
        DbLocation::Sqlite(Self::SQLITE_IN_MEMORY.into())
    }
}

/// A connection URL without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<connection string>".into();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            let path = path.split('?').next().unwrap_or("");
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => format!(
            "{scheme}://{authority}{}",
            path.split('?').next().unwrap_or("")
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused or failed a statement.
    #[error("sqlite: {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL refused or failed a statement, or the connection failed.
    #[error("postgresql: {context}: {detail}")]
    Postgres {
        context: String,
        /// The server's message and SQLSTATE when it sent one (the error's own text is terse).
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// No PostgreSQL connection could be had in time.
    #[error("postgresql: no connection from the pool: {0}")]
    Pool(String),
    #[error("postgresql: the connection URL is not valid: {0}")]
    BadUrl(String),
    /// The blocking task running a SQLite call panicked or was cancelled.
    #[error("{backend}: the database task stopped: {message}")]
    Task {
        backend: &'static str,
        message: String,
    },
    /// What this backend does not do.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A table name the schema does not have.
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    /// Rows are copied, and pages bounded by recovery key, in ordered tables only.
    #[error("table {0} is not an ordered table")]
    NotOrdered(String),
    /// A row or key that does not fit its table (arity, type, NULL, NUL character).
    #[error("table {table}: {problem}")]
    BadRow { table: String, problem: String },
    #[error("a page of {limit} rows was asked for; at most {max} are read at once")]
    PageTooLarge { limit: usize, max: usize },
    #[error("a batch of {writes} writes is above the {max} one transaction takes")]
    BatchTooLarge { writes: usize, max: usize },
    #[error(
        "the database holds no configuration yet: seed it before writing a configuration change"
    )]
    NotSeeded,
    #[error("the database already holds a configuration: only an empty database is seeded")]
    AlreadySeeded,
    #[error(
        "the database schema is at version {found}, newer than version {known} this build \
         knows: run a newer tandem"
    )]
    NewerSchema { found: u32, known: u32 },
    #[error("the database holds what this build cannot read: {0}")]
    Corrupt(String),
}

impl DbError {
    /// Whether the same write may succeed later: the disk is full or read-only, a file or lock
    /// is busy, the server is down, restarting or out of resources. The others (a row the
    /// schema refuses, a constraint, a corrupt file, a task that panicked) fail again each
    /// time, so a writer trying them again would stop for good.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as Code;
        match self {
            DbError::Sqlite { source, .. } => match source.sqlite_error_code() {
                Some(code) => matches!(
                    code,
                    Code::PermissionDenied
                        | Code::OperationAborted
                        | Code::DatabaseBusy
                        | Code::DatabaseLocked
                        | Code::OutOfMemory
                        | Code::ReadOnly
                        | Code::OperationInterrupted
                        | Code::SystemIoFailure
                        | Code::DiskFull
                        | Code::CannotOpen
                        | Code::FileLockingProtocolFailed
                        | Code::SchemaChanged
                ),
                None => false,
            },
            DbError::Postgres { source, .. } => match source.code() {
                // No SQLSTATE: the connection or its I/O failed, or else the client could not
                // encode or decode a value, which fails every time.
                None => {
                    source.is_closed()
                        || std::error::Error::source(source)
                            .is_some_and(|cause| cause.is::<std::io::Error>())
                }
                Some(state) => {
                    let code = state.code();
                    // Connection, insufficient resources, operator intervention, system
                    // error, transaction rollback (serialization, deadlock); a read-only
                    // transaction (a standby, or default_transaction_read_only); a lock not
                    // available.
                    ["08", "53", "57", "58", "40"]
                        .iter()
                        .any(|class| code.starts_with(class))
                        || code == "25006"
                        || code == "55P03"
                }
            },
            DbError::Pool(_) => true,
            DbError::BadUrl(_)
            | DbError::Task { .. }
            | DbError::Unsupported(_)
            | DbError::UnknownTable(_)
            | DbError::NotOrdered(_)
            | DbError::BadRow { .. }
            | DbError::PageTooLarge { .. }
            | DbError::BatchTooLarge { .. }
            | DbError::NotSeeded
            | DbError::AlreadySeeded
            | DbError::NewerSchema { .. }
            | DbError::Corrupt(_) => false,
        }
    }
}

/// How far the database is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Progress {
    /// The ordered stream is written through this sequence number (0 when nothing is).
    pub committed_through: u64,
    /// The configuration version the configuration tables hold (0 before any change).
    pub config_version: u64,
    /// The RecoveryKey of the change that made it (0: loaded whole).
    pub config_recovery_key: u64,
}

impl Progress {
    pub fn config(&self) -> ConfigStamp {
        ConfigStamp {
            version: self.config_version,
            recovery_key: self.config_recovery_key,
        }
    }
}

/// RecoveryKeys are numbered within epoch ranges: a key's range is its bits from this one up
/// (the MDS's `SEQ_EPOCH_SHIFT`, which the logger checks is the same). Two sides never own one
/// range, so the keys of one range form one linear history.
pub const RECOVERY_KEY_RANGE_SHIFT: u32 = 40;

/// The epoch range of a RecoveryKey.
pub fn recovery_key_range(recovery_key: u64) -> u64 {
    recovery_key >> RECOVERY_KEY_RANGE_SHIFT
}

/// A row of Logger_Ranges: the database holds every row of `epoch_range` through
/// `last_committed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMark {
    pub epoch_range: u64,
    pub last_committed: u64,
}

/// The marks that committing these RecoveryKeys sets: per range, the highest.
fn range_marks(keys: impl IntoIterator<Item = u64>) -> Vec<RangeMark> {
    let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
    for key in keys {
        let mark = highest.entry(recovery_key_range(key)).or_default();
        *mark = (*mark).max(key);
    }
    highest
        .into_iter()
        .map(|(epoch_range, last_committed)| RangeMark {
            epoch_range,
            last_committed,
        })
        .collect()
}

/// Logger_Ranges' rows as marks.
fn marks_of_rows(rows: Vec<Row>) -> Result<Vec<RangeMark>, DbError> {
    rows.into_iter()
        .map(|row| match row.as_slice() {
            [SqlValue::Int(range), SqlValue::Int(last)] => Ok(RangeMark {
                epoch_range: *range as u64,
                last_committed: *last as u64,
            }),
            _ => Err(DbError::Corrupt(format!(
                "{}: the row is {row:?}",
                schema::LOGGER_RANGES
            ))),
        })
        .collect()
}

/// Whether a database with these Logger_Ranges marks holds every row of record through
/// `recovery_key` (see `CentralDb::holds_through`); everything holds through 0.
pub fn marks_hold_through(marks: &[RangeMark], recovery_key: u64) -> bool {
    let range = recovery_key_range(recovery_key);
    recovery_key == 0
        || marks
            .iter()
            .any(|m| m.epoch_range == range && m.last_committed >= recovery_key)
}

/// Logger_State's committed mark once a gap through `resumes_after` is closed. Past the gap the
/// side's stream continues its history from `resumes_after`; a mark in another range is on a
/// history the side abandoned (or behind), and would make the logger skip the keys of record
/// below it, so the mark goes back. A mark beyond `resumes_after` in its range stays: a key names
/// one message, so what the logger holds there is what the stream would send again.
pub(crate) fn committed_after_gap(committed: Option<u64>, resumes_after: u64) -> u64 {
    match committed {
        Some(c)
            if c >= resumes_after && recovery_key_range(c) == recovery_key_range(resumes_after) =>
        {
            c
        }
        _ => resumes_after,
    }
}

/// Which database a connection holds: each has its own catalog of tables and migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// A side's central database (`schema::tables`).
    Central,
    /// A distributor's local AW database: the configuration tables and the real-time tables
    /// (`aw::tables`).
    Aw,
}

impl Schema {
    /// The tables of this database, in creation order.
    pub fn tables(self) -> &'static [&'static TableDef] {
        let catalogs = catalogs();
        match self {
            Schema::Central => &catalogs.central,
            Schema::Aw => &catalogs.aw,
        }
    }

    pub(crate) fn migrations(self) -> &'static [Migration] {
        match self {
            Schema::Central => MIGRATIONS,
            Schema::Aw => AW_MIGRATIONS,
        }
    }

    /// The schema version this build writes.
    pub fn version(self) -> u32 {
        let migrations = self.migrations();
        migrations[migrations.len() - 1].version
    }

    /// Whether a commit must be on disk when it returns (see the crate's documentation).
    pub(crate) fn durable(self) -> bool {
        self == Schema::Central
    }

    /// The name PostgreSQL shows for the sessions.
    pub(crate) fn application_name(self) -> &'static str {
        match self {
            Schema::Central => "tandem-logger",
            Schema::Aw => "tandem-distributor",
        }
    }
}

/// One versioned change of the database schema, applied in its own transaction.
pub(crate) struct Migration {
    pub version: u32,
    pub statements: fn(sql::Dialect) -> Vec<String>,
}

/// Every migration, in order, versions 1, 2, ... Migration 1 creates the tables of
/// `schema::tables()` as they are; when the schema changes, migration 1 must keep creating what it
/// created (write its statements out) and a new migration must change an existing database to
/// the new schema. The test `schema_is_unchanged_since_the_last_migration` notices a change.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        statements: create_the_first_tables,
    },
    Migration {
        version: 2,
        statements: add_the_gap_tables,
    },
    Migration {
        version: 3,
        statements: add_the_config_recovery_key,
    },
];

/// The AW database's migrations, under the same rule.
pub(crate) const AW_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        statements: create_the_first_aw_tables,
    },
    Migration {
        version: 2,
        statements: add_the_config_recovery_key,
    },
];

/// The central database's schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The tables added by a later migration, which migration 1 does not create.
const TABLES_ADDED_LATER: [&str; 2] = [schema::LOGGER_RANGES, schema::HISTORICAL_DROP];

/// The columns added by a later migration (table, column), which migration 1 does not create.
const COLUMNS_ADDED_LATER: [(&str, &str); 1] =
    [(schema::CONFIGURATION_STATE, "config_recovery_key")];

/// A table as migration 1 created it: without the columns added later.
fn as_first_created(def: &TableDef) -> TableDef {
    let mut def = def.clone();
    def.columns
        .retain(|c| !COLUMNS_ADDED_LATER.contains(&(def.name, c.name.as_str())));
    def
}

/// Migration 1: every table the schema had then.
fn create_the_first_tables(dialect: sql::Dialect) -> Vec<String> {
    Schema::Central
        .tables()
        .iter()
        .filter(|def| !TABLES_ADDED_LATER.contains(&def.name))
        .map(|def| sql::create_table(dialect, &as_first_created(def)))
        .collect()
}

/// The AW database's migration 1: every table its schema had then.
fn create_the_first_aw_tables(dialect: sql::Dialect) -> Vec<String> {
    Schema::Aw
        .tables()
        .iter()
        .map(|def| sql::create_table(dialect, &as_first_created(def)))
        .collect()
}

/// Central migration 3, AW migration 2: Configuration_State names the change that made its
/// version. A database of an earlier schema holds a version whose change it cannot name: 0,
/// as for a configuration loaded whole, which a peer or a feed of another history then does not
/// take for its own unless it is the seeded one.
fn add_the_config_recovery_key(dialect: sql::Dialect) -> Vec<String> {
    vec![sql::add_column(
        dialect,
        table_def(schema::CONFIGURATION_STATE).expect("a table of the schema"),
        "config_recovery_key",
    )]
}

/// Migration 2: the tables a gap recovery across histories needs. Logger_Ranges, marking each
/// range through the highest key the database holds in it, up to Logger_State's committed mark
/// (which marks its own range): a logger of schema 1 wrote its stream without holes up to that
/// mark, so it holds each range it passed through up to its last row there, as its one mark
/// said. A peer recovering a gap in a lower range then finds it held. Historical_Drop, empty:
/// the decisions written before are in Event.
fn add_the_gap_tables(dialect: sql::Dialect) -> Vec<String> {
    let ranges = table_def(schema::LOGGER_RANGES).expect("a table of the schema");
    let drops = table_def(schema::HISTORICAL_DROP).expect("a table of the schema");
    let mut keys: Vec<String> = Schema::Central
        .tables()
        .iter()
        .filter(|def| def.kind == TableKind::Ordered && !TABLES_ADDED_LATER.contains(&def.name))
        .map(|def| {
            format!(
                "SELECT \"recovery_key\" AS \"k\" FROM {}",
                sql::quote(def.name)
            )
        })
        .collect();
    let state = sql::quote(schema::LOGGER_STATE);
    keys.push(format!("SELECT \"committed_through\" FROM {state}"));
    let span = 1u64 << RECOVERY_KEY_RANGE_SHIFT;
    vec![
        sql::create_table(dialect, ranges),
        sql::create_table(dialect, drops),
        format!(
            "INSERT INTO {} SELECT \"k\" / {span}, MAX(\"k\") FROM ({}) AS \"keys\" \
             WHERE \"k\" <= (SELECT MAX(\"committed_through\") FROM {state}) \
             GROUP BY \"k\" / {span}",
            sql::quote(schema::LOGGER_RANGES),
            keys.join(" UNION ALL "),
        ),
    ]
}

#[cfg(test)]
fn create_every_table(dialect: sql::Dialect) -> Vec<String> {
    create_tables(dialect, Schema::Central)
}

#[cfg(test)]
fn create_every_aw_table(dialect: sql::Dialect) -> Vec<String> {
    create_tables(dialect, Schema::Aw)
}

#[cfg(test)]
fn create_tables(dialect: sql::Dialect, schema: Schema) -> Vec<String> {
    schema
        .tables()
        .iter()
        .map(|def| sql::create_table(dialect, def))
        .collect()
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every table of both databases, each once (a table both have, such as a configuration table,
/// is the same definition in both), and each database's tables.
struct Catalogs {
    central: Vec<&'static TableDef>,
    aw: Vec<&'static TableDef>,
}

/// The tables, built once.
fn catalogs() -> &'static Catalogs {
    static CATALOGS: OnceLock<Catalogs> = OnceLock::new();
    CATALOGS.get_or_init(|| {
        let central: &'static [TableDef] = schema::tables().leak();
        let shared =
            |t: &&TableDef| t.kind == TableKind::Configuration || t.name == schema::LOCAL_EVENT;
        let mut aw: Vec<&'static TableDef> = central.iter().filter(shared).collect();
        aw.extend(aw::tables().leak().iter());
        Catalogs {
            central: central.iter().collect(),
            aw,
        }
    })
}

/// Every table either database has.
fn catalog() -> impl Iterator<Item = &'static TableDef> {
    let catalogs = catalogs();
    catalogs
        .central
        .iter()
        .chain(catalogs.aw.iter().filter(|t| !catalogs.central.contains(t)))
        .copied()
}

pub(crate) fn table_def(name: &str) -> Result<&'static TableDef, DbError> {
    catalog()
        .find(|t| t.name == name)
        .ok_or_else(|| DbError::UnknownTable(name.to_string()))
}

/// The configuration tables holding objects (all but Configuration_State), in the order objects
/// refer to each other. Both databases have them.
fn object_tables() -> impl Iterator<Item = &'static TableDef> {
    configuration_tables().filter(|t| t.name != schema::CONFIGURATION_STATE)
}

/// Configuration_State and every object table: what a configuration replaces.
fn configuration_tables() -> impl Iterator<Item = &'static TableDef> {
    Schema::Central
        .tables()
        .iter()
        .copied()
        .filter(|t| t.kind == TableKind::Configuration)
}

fn bad_row(def: &TableDef, problem: String) -> DbError {
    DbError::BadRow {
        table: def.name.to_string(),
        problem,
    }
}

/// Checks a value against its column: its type, NULL only where allowed, and no NUL character
/// in text (PostgreSQL cannot store one, so neither backend takes one and both stay equal).
pub(crate) fn check_value(def: &TableDef, index: usize, value: &SqlValue) -> Result<(), DbError> {
    let column = &def.columns[index];
    let nullable = column.nullable && index >= def.key_len;
    match (column.ty, value) {
        (_, SqlValue::Null) if nullable => Ok(()),
        (_, SqlValue::Null) => Err(bad_row(def, format!("column {} is NULL", column.name))),
        (ColumnType::Int, SqlValue::Int(_)) => Ok(()),
        (ColumnType::Text, SqlValue::Text(text)) if !text.contains('\0') => Ok(()),
        (ColumnType::Text, SqlValue::Text(_)) => Err(bad_row(
            def,
            format!("column {} holds a NUL character", column.name),
        )),
        (ColumnType::Int, _) => Err(bad_row(
            def,
            format!("column {} is an integer column", column.name),
        )),
        (ColumnType::Text, _) => Err(bad_row(
            def,
            format!("column {} is a text column", column.name),
        )),
    }
}

pub(crate) fn check_row(def: &TableDef, row: &[SqlValue]) -> Result<(), DbError> {
    if row.len() != def.columns.len() {
        return Err(bad_row(
            def,
            format!(
                "a row of {} values for {} columns",
                row.len(),
                def.columns.len()
            ),
        ));
    }
    for (index, value) in row.iter().enumerate() {
        check_value(def, index, value)?;
    }
    Ok(())
}

pub(crate) fn check_key(def: &TableDef, key: &[SqlValue]) -> Result<(), DbError> {
    if key.len() != def.key_len {
        return Err(bad_row(
            def,
            format!(
                "a key of {} values for {} key columns",
                key.len(),
                def.key_len
            ),
        ));
    }
    for (index, value) in key.iter().enumerate() {
        check_value(def, index, value)?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Unless the key exists.
    Insert,
    /// Insert or replace by key.
    Upsert,
    /// By key; the row is the key.
    Delete,
    /// An ordered table's rows in a RecoveryKey range; the row is `[after, through]`.
    DeleteRange,
}

/// One checked write.
pub(crate) struct Op {
    pub table: &'static TableDef,
    pub kind: OpKind,
    pub row: Row,
}

pub(crate) fn op_of(write: Write) -> Result<Op, DbError> {
    let (table, kind, row) = match write {
        Write::Insert { table, row } => (table, OpKind::Insert, row),
        Write::Upsert { table, row } => (table, OpKind::Upsert, row),
        Write::Delete { table, key } => (table, OpKind::Delete, key),
        Write::DeleteRange {
            table,
            after,
            through,
        } => (
            table,
            OpKind::DeleteRange,
            vec![schema::u64_value(after), schema::u64_value(through)],
        ),
    };
    let table = table_def(table)?;
    match kind {
        OpKind::Delete => check_key(table, &row)?,
        OpKind::Insert | OpKind::Upsert => check_row(table, &row)?,
        OpKind::DeleteRange => {
            if table.kind != TableKind::Ordered {
                return Err(DbError::NotOrdered(table.name.to_string()));
            }
        }
    }
    Ok(Op { table, kind, row })
}

/// Consecutive writes of one kind to one table, executed as one statement (PostgreSQL) or one
/// prepared statement (SQLite).
pub(crate) struct Run {
    pub table: &'static TableDef,
    pub kind: OpKind,
    pub rows: Vec<Row>,
}

/// Groups writes into runs. Writes to different tables commute (no table refers to another), so
/// each table's writes are grouped on their own, keeping their order within the table: an upsert
/// then a delete of one key still ends deleted. Within an upsert run the last row of a key wins
/// and a delete run names each key once, which is what executing them one by one would do, and
/// what lets PostgreSQL take the run as one statement.
pub(crate) fn plan(ops: impl IntoIterator<Item = Op>) -> Vec<Run> {
    let mut per_table: Vec<(&'static TableDef, Vec<Run>)> = Vec::new();
    for op in ops {
        let index = match per_table
            .iter()
            .position(|(t, _)| std::ptr::eq(*t, op.table))
        {
            Some(index) => index,
            None => {
                per_table.push((op.table, Vec::new()));
                per_table.len() - 1
            }
        };
        let runs = &mut per_table[index].1;
        match runs.last_mut() {
            Some(run) if run.kind == op.kind => run.rows.push(op.row),
            _ => runs.push(Run {
                table: op.table,
                kind: op.kind,
                rows: vec![op.row],
            }),
        }
    }
    let mut runs: Vec<Run> = per_table.into_iter().flat_map(|(_, r)| r).collect();
    for run in &mut runs {
        if matches!(run.kind, OpKind::Upsert | OpKind::Delete) {
            dedup_by_key(run);
        }
    }
    runs
}

/// Keeps one row per key: the last one, at the place of the first.
fn dedup_by_key(run: &mut Run) {
    let key_len = run.table.key_len;
    let mut position: HashMap<Row, usize> = HashMap::with_capacity(run.rows.len());
    let mut kept: Vec<Row> = Vec::with_capacity(run.rows.len());
    for row in run.rows.drain(..) {
        match position.get(&row[..key_len]) {
            Some(&at) => kept[at] = row,
            None => {
                position.insert(row[..key_len].to_vec(), kept.len());
                kept.push(row);
            }
        }
    }
    run.rows = kept;
}

/// One logged message's checked writes.
pub(crate) struct MessageOps {
    recovery_key: u64,
    config: Option<ConfigStamp>,
    ops: Vec<Op>,
}

fn message_ops(messages: &[LoggedMessage]) -> Result<Vec<MessageOps>, DbError> {
    let writes: usize = messages.iter().map(|m| m.row_count()).sum();
    if writes > BATCH_WRITES_MAX {
        return Err(DbError::BatchTooLarge {
            writes,
            max: BATCH_WRITES_MAX,
        });
    }
    let mut out = Vec::with_capacity(messages.len());
    let mut writes = Vec::new();
    for message in messages {
        writes.clear();
        schema::writes_of(message, &mut writes);
        let ops = writes.drain(..).map(op_of).collect::<Result<_, _>>()?;
        out.push(MessageOps {
            recovery_key: message.recovery_key,
            config: message.config.as_ref().map(|c| ConfigStamp {
                version: c.config_version,
                recovery_key: message.recovery_key,
            }),
            ops,
        });
    }
    Ok(out)
}

/// What a `write` transaction does once it knows how far the database is.
pub(crate) struct Batch {
    pub runs: Vec<Run>,
    /// The configuration after the batch's last configuration change, if it has one.
    pub config: Option<ConfigStamp>,
    pub committed_through: u64,
    /// Logger_Ranges' marks the batch raises.
    pub range_marks: Vec<RangeMark>,
}

/// The writes of the messages not yet committed. A message at or below `committed_through` is
/// already in the database: writing it again would change nothing for the ordered tables, but
/// would put back an older configuration over a newer one, so it is skipped whole.
fn batch_after(messages: Vec<MessageOps>, committed: Option<u64>, through: u64) -> Batch {
    let fresh = |m: &MessageOps| committed.is_none_or(|c| m.recovery_key > c);
    let mut config = None;
    let mut ops = Vec::new();
    let mut keys = vec![through];
    for message in messages.into_iter().filter(fresh) {
        keys.push(message.recovery_key);
        if message.config.is_some() {
            config = message.config;
        }
        ops.extend(message.ops);
    }
    Batch {
        runs: plan(ops),
        config,
        committed_through: advance(committed, Some(through)),
        range_marks: range_marks(keys),
    }
}

/// The committed sequence number after committing through `to`: it never goes back.
fn advance(committed: Option<u64>, to: Option<u64>) -> u64 {
    committed.unwrap_or(0).max(to.unwrap_or(0))
}

/// The rows of Configuration_State and of every object table that hold this configuration.
fn configuration_ops(cc: &ContactCenter, config: ConfigStamp) -> Result<Vec<Op>, DbError> {
    let mut ops = Vec::new();
    for object in cc.objects() {
        let (table, mut row) = schema::object_key(&object.object_ref());
        row.push(SqlValue::Text(schema::definition(&object)));
        let table = table_def(table)?;
        check_row(table, &row)?;
        ops.push(Op {
            table,
            kind: OpKind::Upsert,
            row,
        });
    }
    let table = table_def(schema::CONFIGURATION_STATE)?;
    let row = configuration_state_row(cc, config);
    check_row(table, &row)?;
    ops.push(Op {
        table,
        kind: OpKind::Upsert,
        row,
    });
    Ok(ops)
}

fn configuration_state_row(cc: &ContactCenter, config: ConfigStamp) -> Row {
    vec![
        SqlValue::Int(STATE_ROW_ID),
        schema::u64_value(config.version),
        SqlValue::Text(schema::settings_text(&cc.settings)),
        schema::u64_value(config.recovery_key),
    ]
}

/// The id of the one row of Configuration_State and of Logger_State.
pub(crate) const STATE_ROW_ID: i64 = 1;

/// A stored u64 (by its bit pattern).
fn u64_of(value: &SqlValue, what: &str) -> Result<u64, DbError> {
    match value {
        SqlValue::Int(v) => Ok(*v as u64),
        other => Err(DbError::Corrupt(format!("{what} is {other:?}"))),
    }
}

/// What `load_configuration` reads, in one transaction.
pub(crate) struct StoredConfiguration {
    /// Configuration_State's row.
    state: Row,
    /// Each object table's rows in key order.
    tables: Vec<(&'static TableDef, Vec<Row>)>,
}

fn configuration_of(stored: StoredConfiguration) -> Result<(ContactCenter, ConfigStamp), DbError> {
    let state = &stored.state;
    let (Some(version), Some(SqlValue::Text(settings)), Some(key)) =
        (state.get(1), state.get(2), state.get(3))
    else {
        return Err(DbError::Corrupt(format!(
            "{}: the row is {state:?}",
            schema::CONFIGURATION_STATE
        )));
    };
    let config = ConfigStamp {
        version: u64_of(version, "Configuration_State.config_version")?,
        recovery_key: u64_of(key, "Configuration_State.config_recovery_key")?,
    };
    let settings = schema::parse_settings(settings)
        .map_err(|e| DbError::Corrupt(format!("{}.settings: {e}", schema::CONFIGURATION_STATE)))?;
    let mut cc = ContactCenter {
        settings,
        ..ContactCenter::default()
    };
    for (def, rows) in stored.tables {
        for row in rows {
            push_object(&mut cc, object_of(def, &row)?);
        }
    }
    Ok((cc, config))
}

/// The object an object table's row defines; its kind and key must be the row's.
fn object_of(def: &TableDef, row: &[SqlValue]) -> Result<ConfigObject, DbError> {
    let key = &row[..def.key_len.min(row.len())];
    let Some(SqlValue::Text(text)) = row.last() else {
        return Err(DbError::Corrupt(format!(
            "{} {key:?}: no definition",
            def.name
        )));
    };
    let object = schema::parse_definition(text)
        .map_err(|e| DbError::Corrupt(format!("{} {key:?}: {e}", def.name)))?;
    let (table, object_key) = schema::object_key(&object.object_ref());
    if table != def.name || object_key[..] != *key {
        return Err(DbError::Corrupt(format!(
            "{} {key:?} holds the definition of {table} {object_key:?}",
            def.name
        )));
    }
    Ok(object)
}

fn push_object(cc: &mut ContactCenter, object: ConfigObject) {
    match object {
        ConfigObject::Pg(o) => cc.pgs.push(o),
        ConfigObject::Peripheral(o) => cc.peripherals.push(o),
        ConfigObject::RoutingClient(o) => cc.routing_clients.push(o),
        ConfigObject::Agent(o) => cc.agents.push(o),
        ConfigObject::SkillGroup(o) => cc.skill_groups.push(o),
        ConfigObject::SkillGroupMember(o) => cc.skill_group_members.push(o),
        ConfigObject::Service(o) => cc.services.push(o),
        ConfigObject::ServiceMember(o) => cc.service_members.push(o),
        ConfigObject::CallType(o) => cc.call_types.push(o),
        ConfigObject::DialedNumber(o) => cc.dialed_numbers.push(o),
        ConfigObject::Script(o) => cc.scripts.push(o),
        ConfigObject::CallTypeMap(o) => cc.call_type_maps.push(o),
        ConfigObject::Label(o) => cc.labels.push(o),
    }
}

/// The central database of one side.
#[derive(Clone)]
pub struct CentralDb {
    backend: Backend,
}

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(sqlite::SqliteDb),
    Postgres(postgres::PostgresDb),
}

/// What both databases do the same way, dispatched to the backend.
impl Backend {
    pub(crate) async fn open(location: &DbLocation, schema: Schema) -> Result<Backend, DbError> {
        Ok(match location {
            DbLocation::Sqlite(path) => {
                Backend::Sqlite(sqlite::SqliteDb::open(path.clone(), schema).await?)
            }
            DbLocation::Postgres(url) => {
                Backend::Postgres(postgres::PostgresDb::open(url, schema).await?)
            }
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => sqlite::BACKEND,
            Backend::Postgres(_) => postgres::BACKEND,
        }
    }

    pub(crate) async fn cap_growth(&self, capped: bool) -> Result<(), DbError> {
        match self {
            Backend::Sqlite(db) => db.cap_growth(capped).await,
            Backend::Postgres(_) => Err(DbError::Unsupported(
                "a growth cap is a SQLite database's only".into(),
            )),
        }
    }

    pub(crate) async fn refuse_writes(&self, refuse: bool) -> Result<(), DbError> {
        match self {
            Backend::Sqlite(db) => db.refuse_writes(refuse).await,
            Backend::Postgres(_) => Err(DbError::Unsupported(
                "refusing writes is a SQLite database's only".into(),
            )),
        }
    }

    async fn schema_version(&self) -> Result<u32, DbError> {
        match self {
            Backend::Sqlite(db) => db.schema_version().await,
            Backend::Postgres(db) => db.schema_version().await,
        }
    }

    /// In one transaction: empties `emptied`, executes `runs`, and sets Configuration_State's
    /// version and its change when given.
    pub(crate) async fn write_runs(
        &self,
        emptied: Vec<&'static TableDef>,
        runs: Vec<Run>,
        config: Option<ConfigStamp>,
    ) -> Result<(), DbError> {
        match self {
            Backend::Sqlite(db) => db.write_runs(emptied, runs, config).await,
            Backend::Postgres(db) => db.write_runs(emptied, runs, config).await,
        }
    }

    pub(crate) async fn load_configuration(
        &self,
    ) -> Result<Option<(ContactCenter, ConfigStamp)>, DbError> {
        let stored = match self {
            Backend::Sqlite(db) => db.load_configuration().await?,
            Backend::Postgres(db) => db.load_configuration().await?,
        };
        stored.map(configuration_of).transpose()
    }

    pub(crate) async fn replace_configuration(
        &self,
        cc: &ContactCenter,
        config: ConfigStamp,
    ) -> Result<(), DbError> {
        let runs = plan(configuration_ops(cc, config)?);
        match self {
            Backend::Sqlite(db) => db.replace_configuration(runs).await,
            Backend::Postgres(db) => db.replace_configuration(runs).await,
        }
    }

    pub(crate) async fn rows_page(
        &self,
        table: &str,
        after: Option<&[SqlValue]>,
        through_recovery_key: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        let def = table_def(table)?;
        if limit > ROWS_PAGE_MAX {
            return Err(DbError::PageTooLarge {
                limit,
                max: ROWS_PAGE_MAX,
            });
        }
        if let Some(key) = after {
            check_key(def, key)?;
        }
        if through_recovery_key.is_some() && def.kind != TableKind::Ordered {
            return Err(DbError::NotOrdered(def.name.to_string()));
        }
        // A bound above every stored (signed) recovery key is no bound.
        let through = through_recovery_key.map(|k| i64::try_from(k).unwrap_or(i64::MAX));
        let mut params: Vec<SqlValue> = after.map(<[SqlValue]>::to_vec).unwrap_or_default();
        params.extend(through.map(SqlValue::Int));
        params.push(SqlValue::Int(limit as i64));
        let query = Query::Page {
            after: after.is_some(),
            through: through.is_some(),
        };
        match self {
            Backend::Sqlite(db) => db.select(def, query, params).await,
            Backend::Postgres(db) => db.select(def, query, params).await,
        }
    }

    pub(crate) async fn local_event(
        &self,
        wall_time_ms: u64,
        message: &str,
    ) -> Result<(), DbError> {
        let def = table_def(schema::LOCAL_EVENT)?;
        let values = vec![
            schema::u64_value(wall_time_ms),
            SqlValue::Text(message.to_string()),
        ];
        for (index, value) in values.iter().enumerate() {
            check_value(def, index + 1, value)?;
        }
        let query = Query::Append;
        match self {
            Backend::Sqlite(db) => db.execute(def, query, values).await,
            Backend::Postgres(db) => db.execute(def, query, values).await,
        }
    }

    pub(crate) async fn row_count(&self, def: &'static TableDef) -> Result<u64, DbError> {
        match self {
            Backend::Sqlite(db) => db.row_count(def).await,
            Backend::Postgres(db) => db.row_count(def).await,
        }
    }
}

impl CentralDb {
    /// Opens (creating if needed) and migrates the schema: each migration of `MIGRATIONS` above
    /// the database's version is applied in its own transaction and recorded in Schema_Version.
    /// A database whose version is above what this build knows is refused (`NewerSchema`).
    /// Opening twice, even at once from two processes, is harmless.
    pub async fn open(location: &DbLocation) -> Result<CentralDb, DbError> {
        Ok(CentralDb {
            backend: Backend::open(location, Schema::Central).await?,
        })
    }

    /// "sqlite" or "postgresql".
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub async fn schema_version(&self) -> Result<u32, DbError> {
        self.backend.schema_version().await
    }

    /// `committed_through` from Logger_State and `config_version` from Configuration_State, 0
    /// where the row is absent.
    pub async fn progress(&self) -> Result<Progress, DbError> {
        match &self.backend {
            Backend::Sqlite(db) => db.progress().await,
            Backend::Postgres(db) => db.progress().await,
        }
    }

    /// Writes a batch of logged messages in one transaction, durable when this returns: every
    /// message's writes in order; Configuration_State's version set to the last configuration
    /// change's; Logger_State's `committed_through` advanced to `through` (never back). Messages
    /// at or below the committed sequence number are already written and are skipped, so a
    /// replay changes nothing. A configuration change before the database is seeded is refused
    /// (`NotSeeded`) and nothing is written.
    pub async fn write(&self, messages: &[LoggedMessage], through: u64) -> Result<(), DbError> {
        let messages = message_ops(messages)?;
        match &self.backend {
            Backend::Sqlite(db) => db.write(messages, through).await,
            Backend::Postgres(db) => db.write(messages, through).await,
        }
    }

    /// Seeds an empty database with a whole contact center at `SEED_CONFIG_VERSION`, in one
    /// transaction; `AlreadySeeded` if it holds a configuration.
    pub async fn seed(&self, cc: &ContactCenter) -> Result<(), DbError> {
        let seeded = ConfigStamp {
            version: SEED_CONFIG_VERSION,
            recovery_key: 0,
        };
        let runs = plan(configuration_ops(cc, seeded)?);
        match &self.backend {
            Backend::Sqlite(db) => db.seed(runs).await,
            Backend::Postgres(db) => db.seed(runs).await,
        }
    }

    /// The configuration and its version: every object table read in key order, so each
    /// `Vec` of the contact center comes back sorted by key. None if not seeded.
    pub async fn load_configuration(
        &self,
    ) -> Result<Option<(ContactCenter, ConfigStamp)>, DbError> {
        self.backend.load_configuration().await
    }

    /// Replaces every configuration table's rows and Configuration_State with this configuration
    /// at `config`, in one transaction (a logger taking its side's configuration at a gap).
    pub async fn replace_configuration(
        &self,
        cc: &ContactCenter,
        config: ConfigStamp,
    ) -> Result<(), DbError> {
        self.backend.replace_configuration(cc, config).await
    }

    /// A page of a table's rows in key order: those whose key is above `after` (None: from the
    /// start) and, for an ordered table, whose recovery key is at most `through_recovery_key`;
    /// at most `limit` (up to `ROWS_PAGE_MAX`) rows. Keys compare as the stored signed integers.
    pub async fn rows_page(
        &self,
        table: &str,
        after: Option<&[SqlValue]>,
        through_recovery_key: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        self.backend
            .rows_page(table, after, through_recovery_key, limit)
            .await
    }

    /// Logger_Ranges in range order.
    pub async fn committed_ranges(&self) -> Result<Vec<RangeMark>, DbError> {
        match &self.backend {
            Backend::Sqlite(db) => db.committed_ranges().await,
            Backend::Postgres(db) => db.committed_ranges().await,
        }
    }

    /// Whether the database holds every row of record through `recovery_key`: its range's mark
    /// reaches it. A range's first keys come either from the side's stream, which reached the
    /// range along a history the logger held, or from a gap recovery that copied every range
    /// below, so holding the range through the key is holding the history through it.
    pub async fn holds_through(&self, recovery_key: u64) -> Result<bool, DbError> {
        Ok(marks_hold_through(
            &self.committed_ranges().await?,
            recovery_key,
        ))
    }

    /// Closes a gap through `resumes_after` once its rows are copied, in one transaction: raises
    /// Logger_Ranges to the `copied` marks and to `resumes_after`, and sets Logger_State's mark
    /// to where the side's stream continues (`committed_after_gap`), back if need be.
    ///
    /// `drops` are the ranges of the drop decisions the copied rows hold (Historical_Drop): the
    /// gap's writes never reached this database, so it may hold rows a decision emptied in the
    /// peer's, written before; they are deleted in the same transaction.
    pub async fn close_gap(
        &self,
        resumes_after: u64,
        copied: &[RangeMark],
        drops: &[(u64, u64)],
    ) -> Result<(), DbError> {
        let mut marks = copied.to_vec();
        marks.extend(range_marks([resumes_after]));
        let ops = drops
            .iter()
            .flat_map(|&(after, through)| schema::drop_writes(after, through))
            .map(op_of)
            .collect::<Result<Vec<Op>, DbError>>()?;
        let runs = plan(ops);
        match &self.backend {
            Backend::Sqlite(db) => db.close_gap(resumes_after, marks, runs).await,
            Backend::Postgres(db) => db.close_gap(resumes_after, marks, runs).await,
        }
    }

    /// Inserts rows into an ordered table unless their key exists, in one transaction, and
    /// advances Logger_State's `committed_through` to `committed_through` (never back) in it,
    /// raising its range's mark.
    pub async fn insert_rows(
        &self,
        table: &str,
        rows: &[Row],
        committed_through: Option<u64>,
    ) -> Result<(), DbError> {
        let def = table_def(table)?;
        if def.kind != TableKind::Ordered {
            return Err(DbError::NotOrdered(def.name.to_string()));
        }
        if rows.len() > BATCH_WRITES_MAX {
            return Err(DbError::BatchTooLarge {
                writes: rows.len(),
                max: BATCH_WRITES_MAX,
            });
        }
        for row in rows {
            check_row(def, row)?;
        }
        let runs = plan(rows.iter().map(|row| Op {
            table: def,
            kind: OpKind::Insert,
            row: row.clone(),
        }));
        match &self.backend {
            Backend::Sqlite(db) => db.insert_rows(runs, committed_through).await,
            Backend::Postgres(db) => db.insert_rows(runs, committed_through).await,
        }
    }

    /// Appends a Local_Event row, its id one above the highest.
    pub async fn local_event(&self, wall_time_ms: u64, message: &str) -> Result<(), DbError> {
        self.backend.local_event(wall_time_ms, message).await
    }

    /// The number of rows of a table.
    pub async fn row_count(&self, table: &str) -> Result<u64, DbError> {
        self.backend.row_count(table_def(table)?).await
    }

    /// Caps a SQLite database at its current size, or lifts the cap: while capped, a write that
    /// needs more space fails as on a full disk and changes nothing. This is how the
    /// whole-system simulation makes a database refuse writes; PostgreSQL has no such cap.
    pub async fn cap_growth(&self, capped: bool) -> Result<(), DbError> {
        self.backend.cap_growth(capped).await
    }
}

/// A statement on one table whose text each backend makes in its dialect.
#[derive(Clone, Copy)]
pub(crate) enum Query {
    /// `sql::select_page`.
    Page { after: bool, through: bool },
    /// `sql::append_row`.
    Append,
}

impl Query {
    fn text(&self, dialect: sql::Dialect, def: &TableDef) -> String {
        match *self {
            Query::Page { after, through } => sql::select_page(dialect, def, after, through),
            Query::Append => sql::append_row(dialect, def),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_tables_have_their_columns(name: &str, columns: &[&str]) {
        let def = table_def(name).unwrap();
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, columns, "{name}");
        assert_eq!(def.key_len, 1, "{name}");
    }

    #[test]
    fn the_tables_the_layer_names_exist() {
        state_tables_have_their_columns(
            schema::CONFIGURATION_STATE,
            &["id", "config_version", "settings", "config_recovery_key"],
        );
        state_tables_have_their_columns(schema::LOGGER_STATE, &["id", "committed_through"]);
        state_tables_have_their_columns(
            schema::LOCAL_EVENT,
            &["local_event_id", "wall_time_ms", "message"],
        );
        for def in catalog().filter(|t| t.kind == TableKind::Ordered) {
            assert_eq!(def.columns[0].name, "recovery_key", "{}", def.name);
        }
        for def in object_tables() {
            assert_eq!(def.columns.last().unwrap().name, "definition");
            assert_eq!(def.columns.len(), def.key_len + 1);
        }
    }

    #[test]
    fn migrations_are_numbered_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1);
        }
    }

    /// Migration 1 creates the tables from the schema as it is. If this fails, the schema
    /// changed: databases created before have the old tables. Freeze migration 1 (write out the
    /// statements it made), add a migration that changes the old tables into the new ones, then
    /// update the fingerprint here.
    #[test]
    fn schema_is_unchanged_since_the_last_migration() {
        let ddl = create_every_table(sql::Dialect::Postgres).join(";\n");
        let fingerprint = xxhash_rust::xxh3::xxh3_64(ddl.as_bytes());
        assert_eq!(
            (SCHEMA_VERSION, fingerprint),
            (3, SCHEMA_FINGERPRINT),
            "the schema changed without a migration:\n{ddl}"
        );
    }
    const SCHEMA_FINGERPRINT: u64 = 2744128275003325129;

    /// Migration 1 still creates what it created when it was the last.
    #[test]
    fn migration_1_is_unchanged() {
        let ddl = create_the_first_tables(sql::Dialect::Postgres).join(";\n");
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(ddl.as_bytes()),
            9924491072996801280,
            "migration 1 changed:\n{ddl}"
        );
    }

    #[test]
    fn a_gap_moves_the_committed_mark_back_only_to_leave_another_range() {
        let range = |r: u64, n: u64| (r << RECOVERY_KEY_RANGE_SHIFT) | n;
        // Ahead in the range the stream resumes in: the keys there are the same messages.
        assert_eq!(
            committed_after_gap(Some(range(3, 9)), range(3, 5)),
            range(3, 9)
        );
        // In a range of an abandoned history above it: back.
        assert_eq!(
            committed_after_gap(Some(range(4, 2)), range(3, 5)),
            range(3, 5)
        );
        // Behind: forward.
        assert_eq!(
            committed_after_gap(Some(range(3, 2)), range(3, 5)),
            range(3, 5)
        );
        assert_eq!(committed_after_gap(None, range(3, 5)), range(3, 5));
    }

    #[test]
    fn a_batch_marks_each_range_it_commits_at_its_highest_key() {
        let range = |r: u64, n: u64| (r << RECOVERY_KEY_RANGE_SHIFT) | n;
        assert_eq!(
            range_marks([range(2, 7), range(2, 9), range(5, 1), range(2, 8)]),
            vec![
                RangeMark {
                    epoch_range: 2,
                    last_committed: range(2, 9)
                },
                RangeMark {
                    epoch_range: 5,
                    last_committed: range(5, 1)
                },
            ]
        );
    }

    /// The same rule for the AW database.
    #[test]
    fn aw_schema_is_unchanged_since_the_last_migration() {
        let ddl = create_every_aw_table(sql::Dialect::Postgres).join(";\n");
        let fingerprint = xxhash_rust::xxh3::xxh3_64(ddl.as_bytes());
        assert_eq!(
            (Schema::Aw.version(), fingerprint),
            (2, AW_SCHEMA_FINGERPRINT),
            "the AW schema changed without a migration:\n{ddl}"
        );
    }

    /// The AW database's migration 1 still creates what it created when it was the last.
    #[test]
    fn aw_migration_1_is_unchanged() {
        let ddl = create_the_first_aw_tables(sql::Dialect::Postgres).join(";\n");
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(ddl.as_bytes()),
            7739839645968997074,
            "AW migration 1 changed:\n{ddl}"
        );
    }
    const AW_SCHEMA_FINGERPRINT: u64 = 47361154126070247;

    #[test]
    fn a_bad_table_or_row_is_an_error() {
        assert!(matches!(
            table_def("No_Such_Table"),
            Err(DbError::UnknownTable(_))
        ));
        let def = table_def(schema::EVENT).unwrap();
        assert!(check_row(def, &[SqlValue::Int(1)]).is_err());
        let mut row = vec![
            SqlValue::Int(1),
            SqlValue::Int(0),
            SqlValue::Int(5),
            SqlValue::Text("Info".into()),
            SqlValue::Text("ConfigApplied".into()),
            SqlValue::Text("fine".into()),
        ];
        assert!(check_row(def, &row).is_ok());
        row[5] = SqlValue::Null;
        assert!(check_row(def, &row).is_err());
        row[5] = SqlValue::Int(3);
        assert!(check_row(def, &row).is_err());
        row[5] = SqlValue::Text("a\0b".into());
        assert!(check_row(def, &row).is_err());
    }

    fn op(kind: OpKind, table: &str, key: i64, text: &str) -> Op {
        let table = table_def(table).unwrap();
        let mut row = vec![SqlValue::Int(key)];
        if kind != OpKind::Delete {
            row.push(SqlValue::Text(text.into()));
        }
        Op { table, kind, row }
    }

    #[test]
    fn plans_keep_each_tables_order_and_the_last_upsert_of_a_key() {
        let runs = plan([
            op(OpKind::Upsert, "Agent", 1, "a"),
            op(OpKind::Upsert, "Pg", 7, "p"),
            op(OpKind::Upsert, "Agent", 2, "b"),
            op(OpKind::Upsert, "Agent", 1, "c"),
            op(OpKind::Delete, "Agent", 2, ""),
            op(OpKind::Upsert, "Agent", 2, "d"),
        ]);
        let summary: Vec<(&str, OpKind, Vec<Row>)> = runs
            .into_iter()
            .map(|r| (r.table.name, r.kind, r.rows))
            .collect();
        let row = |k: i64, t: &str| vec![SqlValue::Int(k), SqlValue::Text(t.into())];
        assert_eq!(
            summary,
            vec![
                ("Agent", OpKind::Upsert, vec![row(1, "c"), row(2, "b")]),
                ("Agent", OpKind::Delete, vec![vec![SqlValue::Int(2)]]),
                ("Agent", OpKind::Upsert, vec![row(2, "d")]),
                ("Pg", OpKind::Upsert, vec![row(7, "p")]),
            ]
        );
    }

    #[test]
    fn committed_never_goes_back() {
        assert_eq!(advance(None, Some(0)), 0);
        assert_eq!(advance(Some(9), Some(4)), 9);
        assert_eq!(advance(Some(9), Some(12)), 12);
        assert_eq!(advance(Some(9), None), 9);
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        let location = DbLocation::Postgres("postgres://tandem:secret@db:5432/central".into());
        let shown = format!("{location:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("postgres://tandem:***@db:5432/central"),
            "{shown}"
        );
        let shown = format!(
            "{:?}",
            DbLocation::Postgres("host=db password=secret".into())
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
