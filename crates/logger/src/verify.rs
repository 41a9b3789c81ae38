//! `tandem logger verify`: compares two central databases table by table. Each table is read
//! in key order, page by page, from both at once; the report gives each table's row count and
//! checksum (xxh3-128 over a canonical encoding of the rows, the same for SQLite and
//! PostgreSQL), and for a table that differs, how many keys differ and the first of them.

use crate::db::{CentralDb, DbError};
use crate::schema::{self, hash_row, Row, SqlValue, TableKind};
use std::cmp::Ordering;
use xxhash_rust::xxh3::Xxh3;

/// Rows read per page from each database.
pub const VERIFY_PAGE_ROWS: usize = 5_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableComparison {
    pub table: &'static str,
    pub rows: [u64; 2],
    pub checksums: [u128; 2],
    /// Keys present in one database only, or with different rows.
    pub differing_keys: u64,
    pub first_difference: Option<String>,
}

impl TableComparison {
    pub fn identical(&self) -> bool {
        self.differing_keys == 0 && self.rows[0] == self.rows[1]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// The ordered tables are compared through this RecoveryKey: the lower of the two
    /// databases' committed marks, so rows one logger has and the other is still writing do
    /// not count as differences.
    pub through_recovery_key: u64,
    pub tables: Vec<TableComparison>,
}

impl Verification {
    pub fn identical(&self) -> bool {
        self.tables.iter().all(TableComparison::identical)
    }

    pub fn render(&self, names: [&str; 2]) -> String {
        let mut out = format!(
            "ordered tables compared through RecoveryKey {}\n",
            self.through_recovery_key
        );
        out += &format!(
            "{:<28} {:>10} {:>10}  {:<32} {}\n",
            "table", names[0], names[1], "checksum", "result"
        );
        for t in &self.tables {
            let result = if t.identical() {
                "identical".to_string()
            } else {
                format!(
                    "DIFFERENT: {} keys differ; first {}",
                    t.differing_keys,
                    t.first_difference.as_deref().unwrap_or("?")
                )
            };
            out.push_str(&format!(
                "{:<28} {:>10} {:>10}  {:032x} {}\n",
                t.table, t.rows[0], t.rows[1], t.checksums[0], result
            ));
        }
        out.push_str(if self.identical() {
            "the central databases are identical\n"
        } else {
            "the central databases differ\n"
        });
        out
    }
}

fn describe_key(columns: &[schema::Column], key: &[SqlValue]) -> String {
    columns
        .iter()
        .zip(key)
        .map(|(c, v)| match v {
            SqlValue::Int(i) => format!("{}={i}", c.name),
            SqlValue::Text(t) => format!("{}={t:?}", c.name),
            SqlValue::Null => format!("{}=NULL", c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One database's rows of a table, in key order, read a page at a time.
struct Cursor<'a> {
    db: &'a CentralDb,
    table: &'static str,
    key_len: usize,
    through: Option<u64>,
    page: std::collections::VecDeque<Row>,
    after: Option<Row>,
    done: bool,
}

impl<'a> Cursor<'a> {
    async fn peek(&mut self) -> Result<Option<&Row>, DbError> {
        if self.page.is_empty() && !self.done {
            let rows = self
                .db
                .rows_page(
                    self.table,
                    self.after.as_deref(),
                    self.through,
                    VERIFY_PAGE_ROWS,
                )
                .await?;
            self.done = rows.len() < VERIFY_PAGE_ROWS;
            if let Some(last) = rows.last() {
                self.after = Some(last[..self.key_len].to_vec());
            }
            self.page.extend(rows);
        }
        Ok(self.page.front())
    }

    fn pop(&mut self) -> Option<Row> {
        self.page.pop_front()
    }
}

/// Compares every configuration and ordered table of the two databases.
pub async fn verify(first: &CentralDb, second: &CentralDb) -> Result<Verification, DbError> {
    let through = first
        .progress()
        .await?
        .committed_through
        .min(second.progress().await?.committed_through);
    let mut tables = Vec::new();
    for def in schema::tables() {
        if def.kind == TableKind::Local {
            continue;
        }
        let key_len = def.key_len;
        let cursor = |db| Cursor {
            db,
            table: def.name,
            key_len,
            through: (def.kind == TableKind::Ordered).then_some(through),
            page: Default::default(),
            after: None,
            done: false,
        };
        let mut cursors = [cursor(first), cursor(second)];
        let mut hashers = [Xxh3::new(), Xxh3::new()];
        let mut rows = [0u64; 2];
        let mut differing_keys = 0u64;
        let mut first_difference = None;
        loop {
            let a = cursors[0].peek().await?.cloned();
            let b = cursors[1].peek().await?.cloned();
            let order = match (&a, &b) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => a[..key_len].cmp(&b[..key_len]),
            };
            let mut note = |what: String| {
                differing_keys += 1;
                if first_difference.is_none() {
                    first_difference = Some(what);
                }
            };
            match order {
                Ordering::Less => {
                    let row = cursors[0].pop().expect("peeked");
                    note(format!(
                        "{}: only in the first",
                        describe_key(&def.columns, &row[..key_len])
                    ));
                    hash_row(&mut hashers[0], &row);
                    rows[0] += 1;
                }
                Ordering::Greater => {
                    let row = cursors[1].pop().expect("peeked");
                    note(format!(
                        "{}: only in the second",
                        describe_key(&def.columns, &row[..key_len])
                    ));
                    hash_row(&mut hashers[1], &row);
                    rows[1] += 1;
                }
                Ordering::Equal => {
                    let ra = cursors[0].pop().expect("peeked");
                    let rb = cursors[1].pop().expect("peeked");
                    if ra != rb {
                        let column = def
                            .columns
                            .iter()
                            .zip(ra.iter().zip(&rb))
                            .find(|(_, (x, y))| x != y)
                            .map(|(c, _)| c.name.clone())
                            .unwrap_or_default();
                        note(format!(
                            "{}: {column} differs",
                            describe_key(&def.columns, &ra[..key_len])
                        ));
                    }
                    hash_row(&mut hashers[0], &ra);
                    hash_row(&mut hashers[1], &rb);
                    rows[0] += 1;
                    rows[1] += 1;
                }
            }
        }
        tables.push(TableComparison {
            table: def.name,
            rows,
            checksums: [hashers[0].digest128(), hashers[1].digest128()],
            differing_keys,
            first_difference,
        });
    }
    Ok(Verification {
        through_recovery_key: through,
        tables,
    })
}
