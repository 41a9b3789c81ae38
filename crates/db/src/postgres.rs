//! The PostgreSQL backend: a small pool of connections, one per call.
//!
//! A run of rows goes to the server as one statement with an array parameter per column
//! (`INSERT ... SELECT * FROM UNNEST($1::bigint[], ...)`), in chunks of
//! `INSERT_ROWS_PER_STATEMENT_MAX` rows, so a batch costs a round trip per table instead of per
//! row. The logger's sessions run with `synchronous_commit=on` whatever the server's default, so
//! a commit has reached the server's disk when it returns.

use super::sql::{self, Dialect};
use super::{
    advance, batch_after, committed_after_gap, configuration_tables, marks_of_rows, object_tables,
    range_marks, table_def, wall_ms, Batch, ConfigStamp, DbError, MessageOps, OpKind, Progress,
    Query, RangeMark, Run, Schema, StoredConfiguration, INSERT_ROWS_PER_STATEMENT_MAX,
    STATE_ROW_ID,
};
use crate::schema::{self, Column, ColumnType, Row, SqlValue, TableDef};
use bytes::BytesMut;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use std::time::Duration;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

pub(super) const BACKEND: &str = "postgresql";
const DIALECT: Dialect = Dialect::Postgres;
/// Connections in the pool: the logger writes one batch at a time; the rest serve reads (a
/// recovering peer paging through tables, `verify`).
const POOL_SIZE_MAX: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call waits for a free connection, or for a new one to be made.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The advisory lock that serializes migrations of one database across processes.
const MIGRATION_LOCK_KEY: i64 = 0x7461_6e64_656d_0001;

#[derive(Clone)]
pub(super) struct PostgresDb {
    pool: Pool,
    schema: Schema,
}

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            SqlValue::Text(s) if *ty == Type::TEXT || *ty == Type::VARCHAR => {
                s.as_str().to_sql(ty, out)
            }
            other => Err(format!("{other:?} for a parameter of type {ty}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INT8 || *ty == Type::TEXT || *ty == Type::VARCHAR
    }

    to_sql_checked!();
}

/// A column of a run of rows, as one array parameter.
enum ColumnArray<'a> {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<&'a str>>),
}

impl ColumnArray<'_> {
    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            ColumnArray::Int(values) => values,
            ColumnArray::Text(values) => values,
        }
    }
}

/// The first `columns.len()` values of each row, column by column. The rows were checked
/// against their table, so a value of the wrong type is a bug; it is an error all the same.
fn column_arrays<'a>(
    def: &TableDef,
    columns: &[Column],
    rows: &'a [Row],
) -> Result<Vec<ColumnArray<'a>>, DbError> {
    let mut arrays = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let value = |row: &'a Row| row.get(index).unwrap_or(&SqlValue::Null);
        let mismatch = || DbError::BadRow {
            table: def.name.to_string(),
            problem: format!("a value of the wrong type in column {}", column.name),
        };
        arrays.push(match column.ty {
            ColumnType::Int => ColumnArray::Int(
                rows.iter()
                    .map(|row| match value(row) {
                        SqlValue::Int(v) => Ok(Some(*v)),
                        SqlValue::Null => Ok(None),
                        SqlValue::Text(_) => Err(mismatch()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ColumnType::Text => ColumnArray::Text(
                rows.iter()
                    .map(|row| match value(row) {
                        SqlValue::Text(s) => Ok(Some(s.as_str())),
                        SqlValue::Null => Ok(None),
                        SqlValue::Int(_) => Err(mismatch()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        });
    }
    Ok(arrays)
}

/// The server's own message when it sent one: the client error's text alone is "db error".
fn detail(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(more) = db.detail() {
            text.push_str(": ");
            text.push_str(more);
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

fn failed(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Postgres {
        context,
        detail: detail(&source),
        source,
    }
}

fn params(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

impl PostgresDb {
    pub async fn open(url: &str, schema: Schema) -> Result<PostgresDb, DbError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                DbError::BadUrl(format!("{e}{}", source_text(&e)))
            })?;
        let commit = if schema.durable() { "on" } else { "off" };
        let options = match config.get_options() {
            Some(given) => format!("{given} -c synchronous_commit={commit}"),
            None => format!("-c synchronous_commit={commit}"),
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name(schema.application_name());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE_MAX)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(POOL_WAIT_TIMEOUT))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let db = PostgresDb { pool, schema };
        db.migrate().await?;
        Ok(db)
    }

    async fn client(&self) -> Result<Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => DbError::Postgres {
                context: "connecting".into(),
                detail: detail(&source),
                source,
            },
            other => DbError::Pool(other.to_string()),
        })
    }

    /// Applies the migrations the database lacks, each in its own transaction holding an
    /// advisory lock, so two processes opening the database at once apply each only once.
    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let migrations = self.schema.migrations();
        for _ in 0..=migrations.len() {
            let tx = begin(&mut client).await?;
            tx.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            ))
            .await
            .map_err(failed("locking the schema for migration"))?;
            let found = schema_version(&tx).await?;
            if found > self.schema.version() {
                return Err(DbError::NewerSchema {
                    found,
                    known: self.schema.version(),
                });
            }
            let Some(migration) = migrations.get(found as usize) else {
                return tx
                    .commit()
                    .await
                    .map_err(failed("committing Schema_Version"));
            };
            for statement in (migration.statements)(DIALECT) {
                tx.batch_execute(&statement).await.map_err(failed(format!(
                    "migration {}: {statement}",
                    migration.version
                )))?;
            }
            tx.execute(
                sql::insert_schema_version(DIALECT).as_str(),
                &[&i64::from(migration.version), &wall_ms()],
            )
            .await
            .map_err(failed(format!("recording migration {}", migration.version)))?;
            tx.commit().await.map_err(failed(format!(
                "committing migration {}",
                migration.version
            )))?;
        }
        Ok(())
    }

    pub async fn schema_version(&self) -> Result<u32, DbError> {
        let client = self.client().await?;
        schema_version(&client).await
    }

    pub async fn progress(&self) -> Result<Progress, DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        Ok(Progress {
            committed_through: committed_through(&tx).await?.unwrap_or(0),
            config_version: config_version(&tx).await?.unwrap_or(0),
            config_recovery_key: state_value_at(&tx, schema::CONFIGURATION_STATE, 3)
                .await?
                .unwrap_or(0),
        })
    }

    pub async fn write(&self, messages: Vec<MessageOps>, through: u64) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        // Locks Logger_State's row first: two writers of one database take turns whole.
        let committed = committed_through_for_update(&tx).await?;
        let Batch {
            runs,
            config,
            committed_through: through,
            range_marks,
        } = batch_after(messages, committed, through);
        if let Some(config) = config {
            if config_version(&tx).await?.is_none() {
                return Err(DbError::NotSeeded);
            }
            set_config(&tx, config).await?;
        }
        execute_runs(&tx, &runs).await?;
        set_committed_through(&tx, through).await?;
        raise_range_marks(&tx, &range_marks).await?;
        tx.commit().await.map_err(failed("committing a batch"))
    }

    pub async fn write_runs(
        &self,
        emptied: Vec<&'static TableDef>,
        runs: Vec<Run>,
        config: Option<ConfigStamp>,
    ) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        for def in emptied {
            tx.batch_execute(&sql::delete_all(def))
                .await
                .map_err(failed(format!("emptying {}", def.name)))?;
        }
        execute_runs(&tx, &runs).await?;
        if let Some(config) = config {
            set_config(&tx, config).await?;
        }
        tx.commit().await.map_err(failed("committing a write"))
    }

    pub async fn seed(&self, runs: Vec<Run>) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        lock_configuration(&tx).await?;
        if config_version(&tx).await?.is_some() {
            return Err(DbError::AlreadySeeded);
        }
        execute_runs(&tx, &runs).await?;
        tx.commit().await.map_err(failed("committing the seed"))
    }

    pub async fn replace_configuration(&self, runs: Vec<Run>) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        lock_configuration(&tx).await?;
        for def in configuration_tables() {
            tx.batch_execute(&sql::delete_all(def))
                .await
                .map_err(failed(format!("emptying {}", def.name)))?;
        }
        execute_runs(&tx, &runs).await?;
        tx.commit()
            .await
            .map_err(failed("committing the replaced configuration"))
    }

    pub async fn load_configuration(&self) -> Result<Option<StoredConfiguration>, DbError> {
        let mut client = self.client().await?;
        // One snapshot: the state and the tables are of one moment.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(failed("starting a read transaction"))?;
        let Some(state) = state_row(&tx, schema::CONFIGURATION_STATE, false).await? else {
            return Ok(None);
        };
        let mut tables = Vec::new();
        for def in object_tables() {
            tables.push((def, select(&tx, def, &sql::select_all(def), &[]).await?));
        }
        tx.commit()
            .await
            .map_err(failed("ending a read transaction"))?;
        Ok(Some(StoredConfiguration { state, tables }))
    }

    pub async fn select(
        &self,
        def: &'static TableDef,
        query: Query,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client().await?;
        select(&client, def, &query.text(DIALECT, def), &params).await
    }

    pub async fn execute(
        &self,
        def: &'static TableDef,
        query: Query,
        values: Vec<SqlValue>,
    ) -> Result<(), DbError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&query.text(DIALECT, def))
            .await
            .map_err(failed(format!("preparing a statement on {}", def.name)))?;
        client
            .execute(&statement, &params(&values))
            .await
            .map_err(failed(format!("writing {}", def.name)))?;
        Ok(())
    }

    pub async fn insert_rows(&self, runs: Vec<Run>, committed: Option<u64>) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let existing = committed_through_for_update(&tx).await?;
        execute_runs(&tx, &runs).await?;
        if let Some(committed) = committed {
            set_committed_through(&tx, advance(existing, Some(committed))).await?;
            raise_range_marks(&tx, &range_marks([committed])).await?;
        }
        tx.commit().await.map_err(failed("committing copied rows"))
    }

    pub async fn committed_ranges(&self) -> Result<Vec<RangeMark>, DbError> {
        let client = self.client().await?;
        let def = table_def(schema::LOGGER_RANGES)?;
        marks_of_rows(select(&client, def, &sql::select_all(def), &[]).await?)
    }

    pub async fn close_gap(
        &self,
        resumes_after: u64,
        marks: Vec<RangeMark>,
        drops: Vec<Run>,
    ) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client).await?;
        let existing = committed_through_for_update(&tx).await?;
        execute_runs(&tx, &drops).await?;
        set_committed_through(&tx, committed_after_gap(existing, resumes_after)).await?;
        raise_range_marks(&tx, &marks).await?;
        tx.commit().await.map_err(failed("closing a gap"))
    }

    pub async fn row_count(&self, def: &'static TableDef) -> Result<u64, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(sql::count_rows(def).as_str(), &[])
            .await
            .map_err(failed(format!("counting the rows of {}", def.name)))?;
        let count: i64 = row
            .try_get(0)
            .map_err(failed(format!("counting the rows of {}", def.name)))?;
        Ok(count as u64)
    }
}

fn source_text(error: &tokio_postgres::Error) -> String {
    std::error::Error::source(error).map_or(String::new(), |s| format!(": {s}"))
}

async fn begin(client: &mut Object) -> Result<Tx<'_>, DbError> {
    client
        .transaction()
        .await
        .map_err(failed("starting a transaction"))
}

async fn schema_version(client: &impl GenericClient) -> Result<u32, DbError> {
    client
        .batch_execute(&sql::create_schema_version_table(DIALECT))
        .await
        .map_err(failed("creating Schema_Version"))?;
    let row = client
        .query_one(sql::select_schema_version().as_str(), &[])
        .await
        .map_err(failed("reading Schema_Version"))?;
    let found: Option<i64> = row.try_get(0).map_err(failed("reading Schema_Version"))?;
    let found = found.unwrap_or(0);
    u32::try_from(found).map_err(|_| DbError::Corrupt(format!("Schema_Version holds {found}")))
}

fn read_row(row: &tokio_postgres::Row, def: &TableDef) -> Result<Row, DbError> {
    let mut out = Vec::with_capacity(def.columns.len());
    for (index, column) in def.columns.iter().enumerate() {
        let context = || format!("reading {}.{}", def.name, column.name);
        let value = match column.ty {
            ColumnType::Int => row
                .try_get::<_, Option<i64>>(index)
                .map(|v| v.map_or(SqlValue::Null, SqlValue::Int)),
            ColumnType::Text => row
                .try_get::<_, Option<String>>(index)
                .map(|v| v.map_or(SqlValue::Null, SqlValue::Text)),
        };
        out.push(value.map_err(|e| failed(context())(e))?);
    }
    Ok(out)
}

async fn select(
    client: &impl GenericClient,
    def: &TableDef,
    query: &str,
    values: &[SqlValue],
) -> Result<Vec<Row>, DbError> {
    let statement = client
        .prepare_cached(query)
        .await
        .map_err(failed(format!("preparing a read of {}", def.name)))?;
    let rows = client
        .query(&statement, &params(values))
        .await
        .map_err(failed(format!("reading {}", def.name)))?;
    rows.iter().map(|row| read_row(row, def)).collect()
}

/// The one row of Configuration_State or Logger_State, if present; locked until the end of the
/// transaction when `for_update`.
async fn state_row(
    client: &impl GenericClient,
    table: &str,
    for_update: bool,
) -> Result<Option<Row>, DbError> {
    let def = table_def(table)?;
    let mut query = sql::select_row(DIALECT, def);
    if for_update {
        query.push_str(" FOR UPDATE");
    }
    let row = client
        .query_opt(query.as_str(), &[&STATE_ROW_ID])
        .await
        .map_err(failed(format!("reading {table}")))?;
    row.map(|row| read_row(&row, def)).transpose()
}

async fn state_value(
    client: &impl GenericClient,
    table: &str,
    for_update: bool,
) -> Result<Option<u64>, DbError> {
    state_value_in(client, table, 1, for_update).await
}

/// Column `column` of the one row of `table`.
async fn state_value_at(
    client: &impl GenericClient,
    table: &str,
    column: usize,
) -> Result<Option<u64>, DbError> {
    state_value_in(client, table, column, false).await
}

async fn state_value_in(
    client: &impl GenericClient,
    table: &str,
    column: usize,
    for_update: bool,
) -> Result<Option<u64>, DbError> {
    match state_row(client, table, for_update).await? {
        None => Ok(None),
        Some(row) => match row.get(column) {
            Some(SqlValue::Int(v)) => Ok(Some(*v as u64)),
            _ => Err(DbError::Corrupt(format!("{table}: the row is {row:?}"))),
        },
    }
}

async fn committed_through(client: &impl GenericClient) -> Result<Option<u64>, DbError> {
    state_value(client, schema::LOGGER_STATE, false).await
}

async fn committed_through_for_update(client: &impl GenericClient) -> Result<Option<u64>, DbError> {
    state_value(client, schema::LOGGER_STATE, true).await
}

async fn config_version(client: &impl GenericClient) -> Result<Option<u64>, DbError> {
    state_value(client, schema::CONFIGURATION_STATE, false).await
}

/// Serializes seeding and replacing the configuration against each other: two seeds of an empty
/// database at once would otherwise both find it empty.
async fn lock_configuration(client: &impl GenericClient) -> Result<(), DbError> {
    let def = table_def(schema::CONFIGURATION_STATE)?;
    client
        .batch_execute(&format!(
            "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            sql::quote(def.name)
        ))
        .await
        .map_err(failed("locking Configuration_State"))
}

async fn set_committed_through(client: &impl GenericClient, through: u64) -> Result<(), DbError> {
    let def = table_def(schema::LOGGER_STATE)?;
    client
        .execute(
            sql::upsert_row(DIALECT, def).as_str(),
            &[&STATE_ROW_ID, &(through as i64)],
        )
        .await
        .map_err(failed("writing Logger_State"))?;
    Ok(())
}

async fn raise_range_marks(
    client: &impl GenericClient,
    marks: &[RangeMark],
) -> Result<(), DbError> {
    if marks.is_empty() {
        return Ok(());
    }
    let def = table_def(schema::LOGGER_RANGES)?;
    let statement = client
        .prepare_cached(sql::raise_mark(DIALECT, def).as_str())
        .await
        .map_err(failed("preparing a write of Logger_Ranges"))?;
    for mark in marks {
        client
            .execute(
                &statement,
                &[&(mark.epoch_range as i64), &(mark.last_committed as i64)],
            )
            .await
            .map_err(failed("writing Logger_Ranges"))?;
    }
    Ok(())
}

async fn set_config(client: &impl GenericClient, config: ConfigStamp) -> Result<(), DbError> {
    let def = table_def(schema::CONFIGURATION_STATE)?;
    for (column, value) in [
        ("config_version", config.version),
        ("config_recovery_key", config.recovery_key),
    ] {
        client
            .execute(
                sql::update_column(DIALECT, def, column).as_str(),
                &[&(value as i64), &STATE_ROW_ID],
            )
            .await
            .map_err(failed("writing Configuration_State"))?;
    }
    Ok(())
}

async fn execute_runs(tx: &impl GenericClient, runs: &[Run]) -> Result<(), DbError> {
    for run in runs {
        let def = run.table;
        let (query, columns, verb) = match run.kind {
            OpKind::Insert => (sql::insert_unnest(def), &def.columns[..], "inserting into"),
            OpKind::Upsert => (sql::upsert_unnest(def), &def.columns[..], "upserting into"),
            OpKind::Delete => (sql::delete_unnest(def), def.key_columns(), "deleting from"),
            OpKind::DeleteRange => {
                let statement = tx
                    .prepare_cached(&sql::delete_range(DIALECT, def))
                    .await
                    .map_err(failed(format!(
                        "preparing a range delete from {}",
                        def.name
                    )))?;
                for range in &run.rows {
                    tx.execute(&statement, &params(range))
                        .await
                        .map_err(failed(format!("deleting a range from {}", def.name)))?;
                }
                continue;
            }
        };
        let statement = tx
            .prepare_cached(&query)
            .await
            .map_err(failed(format!("preparing {verb} {}", def.name)))?;
        for chunk in run.rows.chunks(INSERT_ROWS_PER_STATEMENT_MAX) {
            let arrays = column_arrays(def, columns, chunk)?;
            let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(ColumnArray::param).collect();
            tx.execute(&statement, &params)
                .await
                .map_err(failed(format!(
                    "{verb} {} ({} rows)",
                    def.name,
                    chunk.len()
                )))?;
        }
    }
    Ok(())
}
