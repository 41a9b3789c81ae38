//! The SQLite backend: one connection behind a mutex, used from tokio's blocking threads.
//!
//! The file is in WAL mode with `synchronous=FULL`, so a committed transaction is on disk when
//! the commit returns, and another process (`tandem logger verify`) reads it while the logger
//! writes; a busy timeout makes a write wait out a reader's checkpoint instead of failing.

use super::sql::{self, Dialect};
use super::{
    advance, batch_after, committed_after_gap, configuration_tables, marks_of_rows, object_tables,
    range_marks, table_def, wall_ms, Batch, ConfigStamp, DbError, MessageOps, OpKind, Progress,
    Query, RangeMark, Run, Schema, StoredConfiguration, STATE_ROW_ID,
};
use crate::schema::{self, ColumnType, Row, SqlValue, TableDef};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub(super) const BACKEND: &str = "sqlite";
const DIALECT: Dialect = Dialect::Sqlite;
/// How long a statement waits for a lock another connection holds before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite's own default for `max_page_count`: no cap short of its format's limit.
const PAGE_COUNT_UNCAPPED: i64 = 4_294_967_294;
/// Prepared statements kept: a few per table and kind, with room to spare.
const STATEMENT_CACHE_CAPACITY: usize = 256;

#[derive(Clone)]
pub(super) struct SqliteDb {
    connection: Arc<Mutex<Connection>>,
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Int(v) => ValueRef::Integer(*v),
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// Maps a rusqlite error to one that says what was being done.
fn failed(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Sqlite { context, source }
}

/// Like `failed`, with the context made only on failure (for the per-row paths).
fn failed_with(context: impl FnOnce() -> String) -> impl FnOnce(rusqlite::Error) -> DbError {
    move |source| DbError::Sqlite {
        context: context(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DbError::Task {
            backend: BACKEND,
            message: e.to_string(),
        })?
}

impl SqliteDb {
    pub async fn open(path: PathBuf, schema: Schema) -> Result<SqliteDb, DbError> {
        let connection = blocking(move || {
            let shown = path.display().to_string();
            let mut connection =
                Connection::open(&path).map_err(failed(format!("opening {shown}")))?;
            configure(&connection, &shown, schema.durable())?;
            migrate(&mut connection, schema)?;
            Ok(connection)
        })
        .await?;
        Ok(SqliteDb {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` with the connection on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let connection = self.connection.clone();
        blocking(move || {
            // A panic while holding the lock dropped its transaction, which rolled back: the
            // connection is as good as before.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
    }

    pub async fn schema_version(&self) -> Result<u32, DbError> {
        self.call(|c| schema_version(c)).await
    }

    pub async fn progress(&self) -> Result<Progress, DbError> {
        self.call(|c| {
            let tx = c.transaction().map_err(failed("starting a transaction"))?;
            Ok(Progress {
                committed_through: committed_through(&tx)?.unwrap_or(0),
                config_version: config_version(&tx)?.unwrap_or(0),
                config_recovery_key: state_value(&tx, schema::CONFIGURATION_STATE, 3)?.unwrap_or(0),
            })
        })
        .await
    }

    pub async fn write(&self, messages: Vec<MessageOps>, through: u64) -> Result<(), DbError> {
        self.call(move |c| {
            let tx = write_transaction(c)?;
            let committed = committed_through(&tx)?;
            let Batch {
                runs,
                config,
                committed_through: through,
                range_marks,
            } = batch_after(messages, committed, through);
            if let Some(config) = config {
                if config_version(&tx)?.is_none() {
                    return Err(DbError::NotSeeded);
                }
                set_config(&tx, config)?;
            }
            execute_runs(&tx, &runs)?;
            set_committed_through(&tx, through)?;
            raise_range_marks(&tx, &range_marks)?;
            tx.commit().map_err(failed("committing a batch"))
        })
        .await
    }

    pub async fn write_runs(
        &self,
        emptied: Vec<&'static TableDef>,
        runs: Vec<Run>,
        config: Option<ConfigStamp>,
    ) -> Result<(), DbError> {
        self.call(move |c| {
            let tx = write_transaction(c)?;
            for def in emptied {
                tx.execute(&sql::delete_all(def), [])
                    .map_err(failed(format!("emptying {}", def.name)))?;
            }
            execute_runs(&tx, &runs)?;
            if let Some(config) = config {
                set_config(&tx, config)?;
            }
            tx.commit().map_err(failed("committing a write"))
        })
        .await
    }

    pub async fn seed(&self, runs: Vec<Run>) -> Result<(), DbError> {
        self.call(move |c| {
            let tx = write_transaction(c)?;
            if config_version(&tx)?.is_some() {
                return Err(DbError::AlreadySeeded);
            }
            execute_runs(&tx, &runs)?;
            tx.commit().map_err(failed("committing the seed"))
        })
        .await
    }

    pub async fn replace_configuration(&self, runs: Vec<Run>) -> Result<(), DbError> {
        self.call(move |c| {
            let tx = write_transaction(c)?;
            for def in configuration_tables() {
                tx.execute(&sql::delete_all(def), [])
                    .map_err(failed(format!("emptying {}", def.name)))?;
            }
            execute_runs(&tx, &runs)?;
            tx.commit()
                .map_err(failed("committing the replaced configuration"))
        })
        .await
    }

    pub async fn load_configuration(&self) -> Result<Option<StoredConfiguration>, DbError> {
        self.call(|c| {
            // One read transaction: the state and the tables are of one moment.
            let tx = c.transaction().map_err(failed("starting a transaction"))?;
            let Some(state) = state_row(&tx, schema::CONFIGURATION_STATE)? else {
                return Ok(None);
            };
            let mut tables = Vec::new();
            for def in object_tables() {
                tables.push((def, select(&tx, def, &sql::select_all(def), &[])?));
            }
            Ok(Some(StoredConfiguration { state, tables }))
        })
        .await
    }

    pub async fn select(
        &self,
        def: &'static TableDef,
        query: Query,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Row>, DbError> {
        self.call(move |c| select(c, def, &query.text(DIALECT, def), &params))
            .await
    }

    pub async fn execute(
        &self,
        def: &'static TableDef,
        query: Query,
        params: Vec<SqlValue>,
    ) -> Result<(), DbError> {
        self.call(move |c| {
            let mut statement = c
                .prepare_cached(&query.text(DIALECT, def))
                .map_err(failed(format!("preparing a statement on {}", def.name)))?;
            statement
                .execute(rusqlite::params_from_iter(&params))
                .map_err(failed(format!("writing {}", def.name)))?;
            Ok(())
        })
        .await
    }

    pub async fn insert_rows(&self, runs: Vec<Run>, committed: Option<u64>) -> Result<(), DbError> {
        self.call(move |c| {
            let tx = write_transaction(c)?;
            execute_runs(&tx, &runs)?;
            if let Some(committed) = committed {
                let through = advance(committed_through(&tx)?, Some(committed));
                set_committed_through(&tx, through)?;
                raise_range_marks(&tx, &range_marks([committed]))?;
            }
            tx.commit().map_err(failed("committing copied rows"))
        })
        .await
    }

    pub async fn committed_ranges(&self) -> Result<Vec<RangeMark>, DbError> {
        self.call(|c| {
            let def = table_def(schema::LOGGER_RANGES)?;
            marks_of_rows(select(c, def, &sql::select_all(def), &[])?)
        })
        .await
    }

    pub async fn close_gap(
        &self,
        resumes_after: u64,
        marks: Vec<RangeMark>,
        drops: Vec<Run>,
    ) -> Result<(), DbError> {
        self.call(move |c| {
            let tx = write_transaction(c)?;
            execute_runs(&tx, &drops)?;
            let committed = committed_after_gap(committed_through(&tx)?, resumes_after);
            set_committed_through(&tx, committed)?;
            raise_range_marks(&tx, &marks)?;
            tx.commit().map_err(failed("closing a gap"))
        })
        .await
    }

    /// Caps the database at its current size (`Some`) or lifts the cap (`None`): a write that
    /// needs another page then fails as it would on a full disk.
    pub async fn cap_growth(&self, capped: bool) -> Result<(), DbError> {
        self.call(move |c| {
            let pages: i64 = if capped {
                c.pragma_query_value(None, "page_count", |r| r.get(0))
                    .map_err(failed("reading page_count"))?
            } else {
                PAGE_COUNT_UNCAPPED
            };
            c.pragma_update(None, "max_page_count", pages)
                .map_err(failed("setting max_page_count"))
        })
        .await
    }

    /// Makes the database refuse every write (`PRAGMA query_only`), or take writes again: as a
    /// file system that errors remount read-only does.
    pub async fn refuse_writes(&self, refuse: bool) -> Result<(), DbError> {
        self.call(move |c| {
            c.pragma_update(None, "query_only", refuse)
                .map_err(failed("setting query_only"))
        })
        .await
    }

    pub async fn row_count(&self, def: &'static TableDef) -> Result<u64, DbError> {
        self.call(move |c| {
            let count: i64 = c
                .prepare_cached(&sql::count_rows(def))
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(failed(format!("counting the rows of {}", def.name)))?;
            Ok(count as u64)
        })
        .await
    }
}

fn configure(connection: &Connection, shown: &str, durable: bool) -> Result<(), DbError> {
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(failed(format!("setting the busy timeout of {shown}")))?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(failed(format!("setting WAL mode on {shown}")))?;
    // An in-memory database (the whole-system simulation's) keeps its journal in memory.
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(file = shown, mode, "SQLite did not take WAL mode");
    }
    let synchronous = if durable { "FULL" } else { "NORMAL" };
    connection
        .pragma_update(None, "synchronous", synchronous)
        .map_err(failed(format!(
            "setting synchronous={synchronous} on {shown}"
        )))?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(())
}

/// A transaction that takes the write lock at once, so it never fails half way for a lock it
/// could not upgrade.
fn write_transaction(c: &mut Connection) -> Result<Transaction<'_>, DbError> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed("starting a write transaction"))
}

fn schema_version(c: &Connection) -> Result<u32, DbError> {
    c.execute(&sql::create_schema_version_table(DIALECT), [])
        .map_err(failed("creating Schema_Version"))?;
    let found: Option<i64> = c
        .query_row(&sql::select_schema_version(), [], |r| r.get(0))
        .map_err(failed("reading Schema_Version"))?;
    let found = found.unwrap_or(0);
    u32::try_from(found).map_err(|_| DbError::Corrupt(format!("Schema_Version holds {found}")))
}

/// Applies the migrations the database lacks, each in its own transaction, which holds the
/// write lock from its start so two processes opening the file at once apply each only once.
fn migrate(c: &mut Connection, schema: Schema) -> Result<(), DbError> {
    let migrations = schema.migrations();
    for _ in 0..=migrations.len() {
        let tx = write_transaction(c)?;
        let found = schema_version(&tx)?;
        if found > schema.version() {
            return Err(DbError::NewerSchema {
                found,
                known: schema.version(),
            });
        }
        let Some(migration) = migrations.get(found as usize) else {
            return tx.commit().map_err(failed("committing Schema_Version"));
        };
        for statement in (migration.statements)(DIALECT) {
            tx.execute(&statement, []).map_err(failed(format!(
                "migration {}: {statement}",
                migration.version
            )))?;
        }
        tx.execute(
            &sql::insert_schema_version(DIALECT),
            [i64::from(migration.version), wall_ms()],
        )
        .map_err(failed(format!("recording migration {}", migration.version)))?;
        tx.commit().map_err(failed(format!(
            "committing migration {}",
            migration.version
        )))?;
    }
    Ok(())
}

fn read_row(row: &rusqlite::Row<'_>, def: &TableDef) -> Result<Row, DbError> {
    let mut out = Vec::with_capacity(def.columns.len());
    for (index, column) in def.columns.iter().enumerate() {
        let value = row
            .get_ref(index)
            .map_err(failed(format!("reading {}.{}", def.name, column.name)))?;
        out.push(match (column.ty, value) {
            (_, ValueRef::Null) => SqlValue::Null,
            (ColumnType::Int, ValueRef::Integer(v)) => SqlValue::Int(v),
            (ColumnType::Text, ValueRef::Text(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => SqlValue::Text(text.to_string()),
                Err(e) => {
                    return Err(DbError::Corrupt(format!(
                        "{}.{} holds text that is not UTF-8: {e}",
                        def.name, column.name
                    )))
                }
            },
            (_, other) => {
                return Err(DbError::Corrupt(format!(
                    "{}.{} holds a {:?} value",
                    def.name,
                    column.name,
                    other.data_type()
                )))
            }
        });
    }
    Ok(out)
}

fn select(
    c: &Connection,
    def: &TableDef,
    query: &str,
    params: &[SqlValue],
) -> Result<Vec<Row>, DbError> {
    let mut statement = c
        .prepare_cached(query)
        .map_err(failed(format!("preparing a read of {}", def.name)))?;
    let mut rows = statement
        .query(rusqlite::params_from_iter(params))
        .map_err(failed(format!("reading {}", def.name)))?;
    let mut out = Vec::new();
    while let Some(row) = rows
        .next()
        .map_err(failed(format!("reading {}", def.name)))?
    {
        out.push(read_row(row, def)?);
    }
    Ok(out)
}

/// The one row of Configuration_State or Logger_State, if present.
fn state_row(c: &Connection, table: &str) -> Result<Option<Row>, DbError> {
    let def = table_def(table)?;
    let mut statement = c
        .prepare_cached(&sql::select_row(DIALECT, def))
        .map_err(failed(format!("preparing a read of {table}")))?;
    let row = statement
        .query_row([STATE_ROW_ID], |r| Ok(read_row(r, def)))
        .optional()
        .map_err(failed(format!("reading {table}")))?;
    row.transpose()
}

fn state_value(c: &Connection, table: &str, column: usize) -> Result<Option<u64>, DbError> {
    match state_row(c, table)? {
        None => Ok(None),
        Some(row) => match row.get(column) {
            Some(SqlValue::Int(v)) => Ok(Some(*v as u64)),
            _ => Err(DbError::Corrupt(format!("{table}: the row is {row:?}"))),
        },
    }
}

fn committed_through(c: &Connection) -> Result<Option<u64>, DbError> {
    state_value(c, schema::LOGGER_STATE, 1)
}

fn config_version(c: &Connection) -> Result<Option<u64>, DbError> {
    state_value(c, schema::CONFIGURATION_STATE, 1)
}

fn set_committed_through(c: &Connection, through: u64) -> Result<(), DbError> {
    let def = table_def(schema::LOGGER_STATE)?;
    c.prepare_cached(&sql::upsert_row(DIALECT, def))
        .and_then(|mut s| s.execute([STATE_ROW_ID, through as i64]))
        .map_err(failed("writing Logger_State"))?;
    Ok(())
}

fn raise_range_marks(c: &Connection, marks: &[RangeMark]) -> Result<(), DbError> {
    let def = table_def(schema::LOGGER_RANGES)?;
    let mut statement = c
        .prepare_cached(&sql::raise_mark(DIALECT, def))
        .map_err(failed("preparing a write of Logger_Ranges"))?;
    for mark in marks {
        statement
            .execute([mark.epoch_range as i64, mark.last_committed as i64])
            .map_err(failed("writing Logger_Ranges"))?;
    }
    Ok(())
}

fn set_config(c: &Connection, config: ConfigStamp) -> Result<(), DbError> {
    let def = table_def(schema::CONFIGURATION_STATE)?;
    for (column, value) in [
        ("config_version", config.version),
        ("config_recovery_key", config.recovery_key),
    ] {
        c.prepare_cached(&sql::update_column(DIALECT, def, column))
            .and_then(|mut s| s.execute([value as i64, STATE_ROW_ID]))
            .map_err(failed("writing Configuration_State"))?;
    }
    Ok(())
}

fn execute_runs(c: &Connection, runs: &[Run]) -> Result<(), DbError> {
    for run in runs {
        let def = run.table;
        let (query, verb) = match run.kind {
            OpKind::Insert => (sql::insert_row(DIALECT, def), "inserting into"),
            OpKind::Upsert => (sql::upsert_row(DIALECT, def), "upserting into"),
            OpKind::Delete => (sql::delete_row(DIALECT, def), "deleting from"),
            OpKind::DeleteRange => (sql::delete_range(DIALECT, def), "deleting a range from"),
        };
        let mut statement = c
            .prepare_cached(&query)
            .map_err(failed(format!("preparing {verb} {}", def.name)))?;
        for row in &run.rows {
            statement
                .execute(rusqlite::params_from_iter(row))
                .map_err(failed_with(|| {
                    format!("{verb} {} the row {row:?}", def.name)
                }))?;
        }
    }
    Ok(())
}
