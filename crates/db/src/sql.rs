//! The SQL text of the central database, built from the schema's table definitions for both
//! backends. The two dialects differ only in their placeholders (`?N` against `$N`) and in the
//! name of the 64-bit integer type; everything else is the same statement, so a row written by
//! one backend means what it means in the other.
//!
//! Identifiers are always quoted: the ICM table names are mixed case, which PostgreSQL keeps only
//! when quoted, and quoting them in SQLite too keeps one statement text for both.

use crate::schema::{Column, ColumnType, TableDef};
use std::fmt::Write as _;

/// The name of the table recording which migrations have been applied.
pub const SCHEMA_VERSION_TABLE: &str = "Schema_Version";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The placeholder of the `n`th parameter, counted from 1.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    pub fn type_name(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (Dialect::Sqlite, ColumnType::Int) => "INTEGER",
            (Dialect::Postgres, ColumnType::Int) => "BIGINT",
            (_, ColumnType::Text) => "TEXT",
        }
    }
}

/// A quoted identifier. The schema's names hold no quote, but one would be doubled, as SQL wants.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_list(def: &TableDef) -> String {
    join(def.columns.iter().map(|c| quote(&c.name)))
}

fn key_list(def: &TableDef) -> String {
    join(def.key_columns().iter().map(|c| quote(&c.name)))
}

fn placeholders(dialect: Dialect, first: usize, count: usize) -> String {
    join((first..first + count).map(|n| dialect.placeholder(n)))
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// `CREATE TABLE` for one table. Key columns are NOT NULL whatever the definition says (SQLite
/// would otherwise accept a NULL key). SQLite tables are STRICT, so a value of the wrong type is
/// refused as PostgreSQL refuses it, and tables with a composite key are WITHOUT ROWID, so their
/// rows live in the key's b-tree instead of in a table plus an index.
pub fn create_table(dialect: Dialect, def: &TableDef) -> String {
    let mut sql = format!("CREATE TABLE {} (", quote(def.name));
    for (index, column) in def.columns.iter().enumerate() {
        let not_null = if column.nullable && index >= def.key_len {
            ""
        } else {
            " NOT NULL"
        };
        let _ = write!(
            sql,
            "{} {}{not_null}, ",
            quote(&column.name),
            dialect.type_name(column.ty)
        );
    }
    let _ = write!(sql, "PRIMARY KEY ({}))", key_list(def));
    if dialect == Dialect::Sqlite {
        sql.push_str(if def.key_len > 1 {
            " STRICT, WITHOUT ROWID"
        } else {
            " STRICT"
        });
    }
    sql
}

pub fn create_schema_version_table(dialect: Dialect) -> String {
    let int = dialect.type_name(ColumnType::Int);
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\"version\" {int} NOT NULL PRIMARY KEY, \
         \"applied_wall_ms\" {int} NOT NULL)",
        quote(SCHEMA_VERSION_TABLE)
    )
}

pub fn select_schema_version() -> String {
    format!(
        "SELECT MAX(\"version\") FROM {}",
        quote(SCHEMA_VERSION_TABLE)
    )
}

pub fn insert_schema_version(dialect: Dialect) -> String {
    format!(
        "INSERT INTO {} (\"version\", \"applied_wall_ms\") VALUES ({}, {})",
        quote(SCHEMA_VERSION_TABLE),
        dialect.placeholder(1),
        dialect.placeholder(2)
    )
}

/// Inserts one row unless a row with its key exists. `ON CONFLICT DO NOTHING` rather than
/// SQLite's `INSERT OR IGNORE`, which would also swallow a NOT NULL violation.
pub fn insert_row(dialect: Dialect, def: &TableDef) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
        quote(def.name),
        column_list(def),
        placeholders(dialect, 1, def.columns.len())
    )
}

/// What an upsert does on a key conflict: replace every non-key column.
fn on_conflict_update(def: &TableDef) -> String {
    let rest = &def.columns[def.key_len..];
    if rest.is_empty() {
        return "ON CONFLICT DO NOTHING".into();
    }
    let set = join(
        rest.iter()
            .map(|c| format!("{0} = excluded.{0}", quote(&c.name))),
    );
    format!("ON CONFLICT ({}) DO UPDATE SET {set}", key_list(def))
}

/// Inserts one row or replaces the row with its key.
pub fn upsert_row(dialect: Dialect, def: &TableDef) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES ({}) {}",
        quote(def.name),
        column_list(def),
        placeholders(dialect, 1, def.columns.len()),
        on_conflict_update(def)
    )
}

/// Inserts a row of a table of marks (a key, then one value) or raises its value to the new one
/// if that is higher; a mark never goes back.
pub fn raise_mark(dialect: Dialect, def: &TableDef) -> String {
    assert_eq!(
        def.columns.len(),
        def.key_len + 1,
        "{} is not a table of marks",
        def.name
    );
    let value = quote(&def.columns[def.key_len].name);
    let greatest = match dialect {
        Dialect::Sqlite => "MAX",
        Dialect::Postgres => "GREATEST",
    };
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET \
         {value} = {greatest}({table}.{value}, excluded.{value})",
        column_list(def),
        placeholders(dialect, 1, def.columns.len()),
        key_list(def),
        table = quote(def.name),
    )
}

fn key_condition(dialect: Dialect, def: &TableDef) -> String {
    def.key_columns()
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = {}", quote(&c.name), dialect.placeholder(i + 1)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Deletes the row with a key (its key columns are the parameters).
pub fn delete_row(dialect: Dialect, def: &TableDef) -> String {
    format!(
        "DELETE FROM {} WHERE {}",
        quote(def.name),
        key_condition(dialect, def)
    )
}

/// Deletes an ordered table's rows whose recovery key (its first column) is above the first
/// parameter and at most the second.
pub fn delete_range(dialect: Dialect, def: &TableDef) -> String {
    let recovery_key = quote(&def.columns[0].name);
    format!(
        "DELETE FROM {} WHERE {recovery_key} > {} AND {recovery_key} <= {}",
        quote(def.name),
        dialect.placeholder(1),
        dialect.placeholder(2)
    )
}

/// Reads the row with a key (its key columns are the parameters).
pub fn select_row(dialect: Dialect, def: &TableDef) -> String {
    format!(
        "SELECT {} FROM {} WHERE {}",
        column_list(def),
        quote(def.name),
        key_condition(dialect, def)
    )
}

/// A page of rows in key order. The parameters are, in order: the key to start after (when
/// `after`), the highest recovery key (when `through`), then the row limit.
pub fn select_page(dialect: Dialect, def: &TableDef, after: bool, through: bool) -> String {
    let mut next = 1;
    let mut conditions = Vec::new();
    if after {
        conditions.push(format!(
            "({}) > ({})",
            key_list(def),
            placeholders(dialect, next, def.key_len)
        ));
        next += def.key_len;
    }
    if through {
        conditions.push(format!(
            "{} <= {}",
            quote(&def.columns[0].name),
            dialect.placeholder(next)
        ));
        next += 1;
    }
    let mut sql = format!("SELECT {} FROM {}", column_list(def), quote(def.name));
    if !conditions.is_empty() {
        let _ = write!(sql, " WHERE {}", conditions.join(" AND "));
    }
    let _ = write!(
        sql,
        " ORDER BY {} LIMIT {}",
        key_list(def),
        dialect.placeholder(next)
    );
    sql
}

/// Every row in key order.
pub fn select_all(def: &TableDef) -> String {
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        column_list(def),
        quote(def.name),
        key_list(def)
    )
}

pub fn count_rows(def: &TableDef) -> String {
    format!("SELECT COUNT(*) FROM {}", quote(def.name))
}

pub fn delete_all(def: &TableDef) -> String {
    format!("DELETE FROM {}", quote(def.name))
}

/// Appends a row to a table keyed by one integer, with the key one above the highest (1 for the
/// first row); the other columns are the parameters.
pub fn append_row(dialect: Dialect, def: &TableDef) -> String {
    let key = quote(&def.columns[0].name);
    let values = def.columns[1..]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "CAST({} AS {})",
                dialect.placeholder(i + 1),
                dialect.type_name(c.ty)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} ({columns}) SELECT COALESCE(MAX({key}), 0) + 1, {values} FROM {table}",
        table = quote(def.name),
        columns = column_list(def),
    )
}

/// Adds an integer column that is 0 in every existing row (a migration).
pub fn add_column(dialect: Dialect, def: &TableDef, column: &str) -> String {
    let ty = def
        .columns
        .iter()
        .find(|c| c.name == column)
        .map_or(ColumnType::Int, |c| c.ty);
    debug_assert_eq!(ty, ColumnType::Int, "only integer columns are added");
    format!(
        "ALTER TABLE {} ADD COLUMN {} {} NOT NULL DEFAULT 0",
        quote(def.name),
        quote(column),
        dialect.type_name(ty)
    )
}

/// Sets one column of the row with a one-column key (the value is `$1`, the key `$2`).
pub fn update_column(dialect: Dialect, def: &TableDef, column: &str) -> String {
    format!(
        "UPDATE {} SET {} = {} WHERE {} = {}",
        quote(def.name),
        quote(column),
        dialect.placeholder(1),
        quote(&def.columns[0].name),
        dialect.placeholder(2)
    )
}

/// PostgreSQL: the rows of a whole batch as one array parameter per column.
fn unnest_arrays(columns: &[Column]) -> String {
    join(columns.iter().enumerate().map(|(i, c)| {
        format!(
            "${}::{}[]",
            i + 1,
            Dialect::Postgres.type_name(c.ty).to_lowercase()
        )
    }))
}

/// PostgreSQL: inserts many rows at once, each unless its key exists.
pub fn insert_unnest(def: &TableDef) -> String {
    format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}) ON CONFLICT DO NOTHING",
        quote(def.name),
        column_list(def),
        unnest_arrays(&def.columns)
    )
}

/// PostgreSQL: inserts or replaces many rows at once. The rows' keys must be distinct.
pub fn upsert_unnest(def: &TableDef) -> String {
    format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}) {}",
        quote(def.name),
        column_list(def),
        unnest_arrays(&def.columns),
        on_conflict_update(def)
    )
}

/// PostgreSQL: deletes the rows with any of many keys.
pub fn delete_unnest(def: &TableDef) -> String {
    format!(
        "DELETE FROM {} WHERE ({}) IN (SELECT * FROM UNNEST({}))",
        quote(def.name),
        key_list(def),
        unnest_arrays(def.key_columns())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TableKind;

    fn table() -> TableDef {
        let column = |name: &str, ty, nullable| Column {
            name: name.into(),
            ty,
            nullable,
        };
        TableDef {
            name: "Some_Table",
            kind: TableKind::Ordered,
            columns: vec![
                column("recovery_key", ColumnType::Int, false),
                column("record_index", ColumnType::Int, false),
                column("label", ColumnType::Text, true),
            ],
            key_len: 2,
        }
    }

    #[test]
    fn tables_are_created_with_their_types_and_key() {
        assert_eq!(
            create_table(Dialect::Postgres, &table()),
            "CREATE TABLE \"Some_Table\" (\"recovery_key\" BIGINT NOT NULL, \
             \"record_index\" BIGINT NOT NULL, \"label\" TEXT, \
             PRIMARY KEY (\"recovery_key\", \"record_index\"))"
        );
        assert!(create_table(Dialect::Sqlite, &table())
            .ends_with("\"label\" TEXT, PRIMARY KEY (\"recovery_key\", \"record_index\")) STRICT, WITHOUT ROWID"));
    }

    #[test]
    fn statements_use_the_dialect_placeholders() {
        assert_eq!(
            upsert_row(Dialect::Sqlite, &table()),
            "INSERT INTO \"Some_Table\" (\"recovery_key\", \"record_index\", \"label\") \
             VALUES (?1, ?2, ?3) ON CONFLICT (\"recovery_key\", \"record_index\") \
             DO UPDATE SET \"label\" = excluded.\"label\""
        );
        assert_eq!(
            delete_row(Dialect::Postgres, &table()),
            "DELETE FROM \"Some_Table\" WHERE \"recovery_key\" = $1 AND \"record_index\" = $2"
        );
        assert_eq!(
            select_page(Dialect::Postgres, &table(), true, true),
            "SELECT \"recovery_key\", \"record_index\", \"label\" FROM \"Some_Table\" \
             WHERE (\"recovery_key\", \"record_index\") > ($1, $2) AND \"recovery_key\" <= $3 \
             ORDER BY \"recovery_key\", \"record_index\" LIMIT $4"
        );
        assert_eq!(
            select_page(Dialect::Sqlite, &table(), false, false),
            "SELECT \"recovery_key\", \"record_index\", \"label\" FROM \"Some_Table\" \
             ORDER BY \"recovery_key\", \"record_index\" LIMIT ?1"
        );
    }

    #[test]
    fn batches_are_one_statement_with_an_array_per_column() {
        assert_eq!(
            insert_unnest(&table()),
            "INSERT INTO \"Some_Table\" (\"recovery_key\", \"record_index\", \"label\") \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            delete_unnest(&table()),
            "DELETE FROM \"Some_Table\" WHERE (\"recovery_key\", \"record_index\") IN \
             (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))"
        );
    }

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
