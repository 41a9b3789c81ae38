//! The central database's schema, described once as data: both backends create their tables
//! from it, write rows through it and checksum it the same way, so a SQLite side and a
//! PostgreSQL side can be compared row for row.
//!
//! Every column is a 64-bit integer or text. Unsigned values are stored by their bit pattern
//! (`u64 as i64`), so they round-trip exactly; times are ordered milliseconds since the Unix
//! epoch, never a wall clock, in every table the ordered stream writes.

use tandem_model::config::{ConfigObject, ConfigOp, LabelTarget, ObjectRef, Settings};
use tandem_model::logged::LoggedMessage;
use tandem_model::output::{
    CallDisposition, HistoricalRecord, HistoricalRow, RouteCallDetail, TerminationCallDetail,
};
use tandem_model::realtime::{AgentCounts, CallCounts, CALL_COUNT_NAMES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Text,
}

/// What a table holds, which decides how it is written and whether `logger verify` compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// A configuration table: the current objects, upserted and deleted by key.
    Configuration,
    /// Written from the ordered stream, keyed by (RecoveryKey, index): identical on both sides.
    Ordered,
    /// The side's own: progress and local events. Never compared.
    Local,
    /// An AW database's copy of a real-time table, replaced by the feed's frames.
    RealTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub kind: TableKind,
    pub columns: Vec<Column>,
    /// How many leading columns form the primary key.
    pub key_len: usize,
}

impl TableDef {
    pub fn key_columns(&self) -> &[Column] {
        &self.columns[..self.key_len]
    }
}

/// A value of one column.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
}

pub type Row = Vec<SqlValue>;

pub(crate) fn int(name: &str) -> Column {
    Column {
        name: name.into(),
        ty: ColumnType::Int,
        nullable: false,
    }
}
pub(crate) fn int_null(name: &str) -> Column {
    Column {
        nullable: true,
        ..int(name)
    }
}
pub(crate) fn text(name: &str) -> Column {
    Column {
        name: name.into(),
        ty: ColumnType::Text,
        nullable: false,
    }
}
pub(crate) fn text_null(name: &str) -> Column {
    Column {
        nullable: true,
        ..text(name)
    }
}

/// The configuration tables, in the order `ContactCenter::objects` lists their objects (an
/// object after what it refers to), each keyed by its ids and holding the object's canonical
/// JSON definition.
pub const CONFIGURATION_TABLES: [(&str, &[&str]); 13] = [
    ("Pg", &["pg_id"]),
    ("Peripheral", &["peripheral_id"]),
    ("Routing_Client", &["routing_client_id"]),
    ("Agent", &["agent_id"]),
    ("Skill_Group", &["skill_group_id"]),
    ("Skill_Group_Member", &["agent_id", "skill_group_id"]),
    ("Service", &["service_id"]),
    ("Service_Member", &["service_id", "skill_group_id"]),
    ("Call_Type", &["call_type_id"]),
    ("Label", &["label_id"]),
    ("Dialed_Number", &["dialed_number_id"]),
    ("Script", &["script_id"]),
    ("Call_Type_Map", &["call_type_id", "script_id"]),
];

pub const ROUTE_CALL_DETAIL: &str = "Route_Call_Detail";
pub const TERMINATION_CALL_DETAIL: &str = "Termination_Call_Detail";
pub const SKILL_GROUP_INTERVAL: &str = "Skill_Group_Interval";
pub const CALL_TYPE_INTERVAL: &str = "Call_Type_Interval";
pub const AGENT_SKILL_GROUP_INTERVAL: &str = "Agent_Skill_Group_Interval";
pub const EVENT: &str = "Event";
pub const CONFIG_MESSAGE_LOG: &str = "Config_Message_Log";
/// Each drop decision written: the RecoveryKey range `(after_recovery_key,
/// through_recovery_key]` it emptied. A logger that recovers a gap holding a decision copies
/// this row and empties the range in its own database too, which it may have written before.
pub const HISTORICAL_DROP: &str = "Historical_Drop";
/// The global settings and the dense configuration version, one row.
pub const CONFIGURATION_STATE: &str = "Configuration_State";
/// How far this logger has committed the ordered stream, one row.
pub const LOGGER_STATE: &str = "Logger_State";
/// Per epoch range of RecoveryKeys (`recovery_key_range`), the highest key of that range this
/// database holds every row through. One committed mark cannot say this once a side abandoned a
/// history: its logger holds keys of a range the record never continued, and misses the tail
/// of a lower range that the record did continue.
pub const LOGGER_RANGES: &str = "Logger_Ranges";
pub const LOCAL_EVENT: &str = "Local_Event";

/// Every table of the schema, configuration first, in a fixed order.
pub fn tables() -> Vec<TableDef> {
    let mut tables = Vec::new();
    for (name, keys) in CONFIGURATION_TABLES {
        let mut columns: Vec<Column> = keys.iter().map(|k| int(k)).collect();
        columns.push(text("definition"));
        tables.push(TableDef {
            name,
            kind: TableKind::Configuration,
            key_len: keys.len(),
            columns,
        });
    }
    tables.push(TableDef {
        name: CONFIGURATION_STATE,
        kind: TableKind::Configuration,
        key_len: 1,
        // config_recovery_key came with migration 3 (central) and 2 (AW).
        columns: vec![
            int("id"),
            int("config_version"),
            text("settings"),
            int("config_recovery_key"),
        ],
    });
    let ordered = |name, rest: Vec<Column>| {
        let mut columns = vec![int("recovery_key"), int("record_index")];
        columns.extend(rest);
        TableDef {
            name,
            kind: TableKind::Ordered,
            key_len: 2,
            columns,
        }
    };
    tables.push(ordered(
        CONFIG_MESSAGE_LOG,
        vec![
            int("config_version"),
            int("date_time_ms"),
            text("operation"),
            text("table_name"),
            text("message"),
        ],
    ));
    tables.push(ordered(
        ROUTE_CALL_DETAIL,
        vec![
            int("router_call_key"),
            int("routing_client_id"),
            int("pg_incarnation"),
            int("request_id"),
            text("dialed_number"),
            int_null("call_type_id"),
            int_null("script_id"),
            text("ani"),
            text("caller_entered_digits"),
            int("date_time_ms"),
            int("finished_ms"),
            text_null("answer_kind"),
            text("label"),
            text_null("target"),
            int("router_queue_wait_ms"),
            text_null("error"),
            text_null("ended"),
        ],
    ));
    tables.push(ordered(
        TERMINATION_CALL_DETAIL,
        vec![
            int("peripheral_id"),
            int("peripheral_call_id"),
            int_null("router_call_key"),
            int_null("agent_id"),
            int_null("skill_group_id"),
            int_null("call_type_id"),
            int_null("service_id"),
            text("disposition"),
            int("start_ms"),
            int("delay_ms"),
            int("talk_ms"),
            int("hold_ms"),
            int("work_ms"),
            int("end_ms"),
        ],
    ));
    let interval = |name, id: &str| {
        let mut rest = vec![int(id), int("interval_start_ms"), int("interval_minutes")];
        rest.extend(CALL_COUNT_NAMES.iter().map(|n| int(n)));
        ordered(name, rest)
    };
    tables.push(interval(SKILL_GROUP_INTERVAL, "skill_group_id"));
    tables.push(interval(CALL_TYPE_INTERVAL, "call_type_id"));
    let mut rest = vec![
        int("agent_id"),
        int("skill_group_id"),
        int("interval_start_ms"),
        int("interval_minutes"),
    ];
    rest.extend(AGENT_COUNT_NAMES.iter().map(|n| int(n)));
    tables.push(ordered(AGENT_SKILL_GROUP_INTERVAL, rest));
    tables.push(ordered(
        EVENT,
        vec![
            int("date_time_ms"),
            text("severity"),
            text("code"),
            text("message"),
        ],
    ));
    tables.push(ordered(
        HISTORICAL_DROP,
        vec![
            int("date_time_ms"),
            int("after_recovery_key"),
            int("through_recovery_key"),
        ],
    ));
    tables.push(TableDef {
        name: LOGGER_STATE,
        kind: TableKind::Local,
        key_len: 1,
        columns: vec![int("id"), int("committed_through")],
    });
    tables.push(TableDef {
        name: LOGGER_RANGES,
        kind: TableKind::Local,
        key_len: 1,
        columns: vec![int("epoch_range"), int("last_committed")],
    });
    tables.push(TableDef {
        name: LOCAL_EVENT,
        kind: TableKind::Local,
        key_len: 1,
        columns: vec![int("local_event_id"), int("wall_time_ms"), text("message")],
    });
    tables
}

pub(crate) const AGENT_COUNT_NAMES: [&str; 8] = [
    "calls_offered",
    "calls_answered",
    "calls_handled",
    "handle_time_ms",
    "talk_time_ms",
    "hold_time_ms",
    "work_time_ms",
    "transfers_out",
];

pub(crate) fn agent_counts(c: &AgentCounts) -> [u32; 8] {
    [
        c.calls_offered,
        c.calls_answered,
        c.calls_handled,
        c.handle_time_ms,
        c.talk_time_ms,
        c.hold_time_ms,
        c.work_time_ms,
        c.transfers_out,
    ]
}

/// A u64 by its bit pattern.
pub fn u64_value(v: u64) -> SqlValue {
    SqlValue::Int(v as i64)
}
pub(crate) fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> SqlValue) -> SqlValue {
    v.map_or(SqlValue::Null, f)
}
pub(crate) fn id(v: u32) -> SqlValue {
    SqlValue::Int(v as i64)
}
pub(crate) fn text_value(v: &str) -> SqlValue {
    SqlValue::Text(v.to_string())
}
/// A unit enum's variant name.
pub(crate) fn name_of<T: std::fmt::Debug>(v: &T) -> SqlValue {
    SqlValue::Text(format!("{v:?}"))
}

fn target_text(target: &LabelTarget) -> SqlValue {
    SqlValue::Text(match target {
        LabelTarget::Agent(a) => format!("Agent:{a}"),
        LabelTarget::SkillGroup(g) => format!("SkillGroup:{g}"),
        LabelTarget::Service(s) => format!("Service:{s}"),
    })
}

fn disposition(d: CallDisposition) -> SqlValue {
    name_of(&d)
}

fn route_call_detail(r: &RouteCallDetail) -> Vec<SqlValue> {
    vec![
        u64_value(r.router_call_key.0),
        id(r.key.routing_client.0),
        id(r.key.pg_incarnation),
        u64_value(r.key.request_id),
        text_value(&r.dialed_number),
        opt(r.call_type, |v| id(v.0)),
        opt(r.script, |v| id(v.0)),
        text_value(&r.ani),
        text_value(&r.caller_entered_digits),
        u64_value(r.date_time_ms),
        u64_value(r.finished_ms),
        opt(r.answer_kind, |k| name_of(&k)),
        text_value(&r.label),
        opt(r.target.as_ref(), target_text),
        u64_value(r.router_queue_wait_ms),
        opt(r.error.as_deref(), text_value),
        opt(r.ended, |e| name_of(&e)),
    ]
}

fn termination_call_detail(t: &TerminationCallDetail) -> Vec<SqlValue> {
    vec![
        id(t.call.peripheral.0),
        u64_value(t.call.call_id),
        opt(t.router_call_key, |k| u64_value(k.0)),
        opt(t.agent, |v| id(v.0)),
        opt(t.skill_group, |v| id(v.0)),
        opt(t.call_type, |v| id(v.0)),
        opt(t.service, |v| id(v.0)),
        disposition(t.disposition),
        u64_value(t.start_ms),
        u64_value(t.delay_ms),
        u64_value(t.talk_ms),
        u64_value(t.hold_ms),
        u64_value(t.work_ms),
        u64_value(t.end_ms),
    ]
}

fn call_counts(owner: u32, start_ms: u64, minutes: u32, counts: &CallCounts) -> Vec<SqlValue> {
    let mut row = vec![id(owner), u64_value(start_ms), id(minutes)];
    row.extend(counts.to_array().into_iter().map(u64_value));
    row
}

/// A historical record's table and row.
pub fn historical_row(record: &HistoricalRecord) -> (&'static str, Row) {
    let mut row = vec![u64_value(record.recovery_key), id(record.index)];
    let table = match &record.row {
        HistoricalRow::RouteCallDetail(r) => {
            row.extend(route_call_detail(r));
            ROUTE_CALL_DETAIL
        }
        HistoricalRow::TerminationCallDetail(t) => {
            row.extend(termination_call_detail(t));
            TERMINATION_CALL_DETAIL
        }
        HistoricalRow::SkillGroupInterval {
            skill_group,
            interval_start_ms,
            interval_minutes,
            counts,
        } => {
            row.extend(call_counts(
                skill_group.0,
                *interval_start_ms,
                *interval_minutes,
                counts,
            ));
            SKILL_GROUP_INTERVAL
        }
        HistoricalRow::CallTypeInterval {
            call_type,
            interval_start_ms,
            interval_minutes,
            counts,
        } => {
            row.extend(call_counts(
                call_type.0,
                *interval_start_ms,
                *interval_minutes,
                counts,
            ));
            CALL_TYPE_INTERVAL
        }
        HistoricalRow::AgentSkillGroupInterval {
            agent,
            skill_group,
            interval_start_ms,
            interval_minutes,
            counts,
        } => {
            row.extend([
                id(agent.0),
                id(skill_group.0),
                u64_value(*interval_start_ms),
                id(*interval_minutes),
            ]);
            row.extend(agent_counts(counts).into_iter().map(id));
            AGENT_SKILL_GROUP_INTERVAL
        }
    };
    // The feed counts dropped rows by the model's table names.
    debug_assert_eq!(table, record.row.table_name());
    (table, row)
}

/// The configuration table an object (or a reference to one) lives in, and its key values.
pub fn object_key(reference: &ObjectRef) -> (&'static str, Row) {
    let (table, key): (&str, Vec<u32>) = match *reference {
        ObjectRef::Pg(i) => ("Pg", vec![i.0]),
        ObjectRef::Peripheral(i) => ("Peripheral", vec![i.0]),
        ObjectRef::RoutingClient(i) => ("Routing_Client", vec![i.0]),
        ObjectRef::Agent(i) => ("Agent", vec![i.0]),
        ObjectRef::SkillGroup(i) => ("Skill_Group", vec![i.0]),
        ObjectRef::SkillGroupMember(a, g) => ("Skill_Group_Member", vec![a.0, g.0]),
        ObjectRef::Service(i) => ("Service", vec![i.0]),
        ObjectRef::ServiceMember(s, g) => ("Service_Member", vec![s.0, g.0]),
        ObjectRef::CallType(i) => ("Call_Type", vec![i.0]),
        ObjectRef::DialedNumber(i) => ("Dialed_Number", vec![i.0]),
        ObjectRef::Script(i) => ("Script", vec![i.0]),
        ObjectRef::CallTypeMap(c, s) => ("Call_Type_Map", vec![c.0, s.0]),
        ObjectRef::Label(i) => ("Label", vec![i.0]),
    };
    (table, key.into_iter().map(id).collect())
}

/// An object's canonical definition: JSON with the fields in declaration order.
pub fn definition(object: &ConfigObject) -> String {
    serde_json::to_string(object).expect("a configuration object always serializes")
}

pub fn parse_definition(text: &str) -> Result<ConfigObject, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

pub fn settings_text(settings: &Settings) -> String {
    serde_json::to_string(settings).expect("settings always serialize")
}

pub fn parse_settings(text: &str) -> Result<Settings, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Feeds a row into a digest: the same values give the same bytes on either backend.
pub fn hash_row(hasher: &mut xxhash_rust::xxh3::Xxh3, row: &[SqlValue]) {
    for value in row {
        match value {
            SqlValue::Null => hasher.update(&[0]),
            SqlValue::Int(v) => {
                hasher.update(&[1]);
                hasher.update(&v.to_le_bytes());
            }
            SqlValue::Text(t) => {
                hasher.update(&[2]);
                hasher.update(&(t.len() as u64).to_le_bytes());
                hasher.update(t.as_bytes());
            }
        }
    }
}

/// One write to the central database.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Inserts the row unless its key is present (the ordered tables: a replay changes nothing).
    Insert { table: &'static str, row: Row },
    /// Inserts or replaces the row with the same key (configuration tables).
    Upsert { table: &'static str, row: Row },
    /// Deletes the row with this key, if present.
    Delete { table: &'static str, key: Row },
    /// Deletes an ordered table's rows whose RecoveryKey is in `after < key <= through`.
    DeleteRange {
        table: &'static str,
        after: u64,
        through: u64,
    },
}

/// The tables a drop decision empties in its range: every ordered table but
/// Config_Message_Log, because a configuration change is never dropped.
pub const DROPPABLE_TABLES: [&str; 6] = [
    ROUTE_CALL_DETAIL,
    TERMINATION_CALL_DETAIL,
    SKILL_GROUP_INTERVAL,
    CALL_TYPE_INTERVAL,
    AGENT_SKILL_GROUP_INTERVAL,
    EVENT,
];

/// The writes that empty a drop decision's range `(after, through]`.
pub fn drop_writes(after: u64, through: u64) -> impl Iterator<Item = Write> {
    DROPPABLE_TABLES
        .into_iter()
        .map(move |table| Write::DeleteRange {
            table,
            after,
            through,
        })
}

/// The decision's RecoveryKey and the range `(after, through]` a Historical_Drop row names;
/// `None` unless the range is one a decision can name: not empty, and before the decision.
pub fn drop_range_of(row: &Row) -> Option<(u64, u64, u64)> {
    match row.as_slice() {
        [SqlValue::Int(key), _, _, SqlValue::Int(after), SqlValue::Int(through)] => {
            let (key, after, through) = (*key as u64, *after as u64, *through as u64);
            (after < through && through < key).then_some((key, after, through))
        }
        _ => None,
    }
}

/// The writes one logged message makes, in order.
pub fn writes_of(message: &LoggedMessage, out: &mut Vec<Write>) {
    if let Some(range) = message.dropped {
        // Rows of the range written before the decision reached this logger are removed, so
        // that both databases lack exactly the rows the decision counted.
        out.extend(drop_writes(range.after, range.through));
        out.push(Write::Insert {
            table: HISTORICAL_DROP,
            row: vec![
                u64_value(message.recovery_key),
                id(0),
                u64_value(message.time_ms),
                u64_value(range.after),
                u64_value(range.through),
            ],
        });
    }
    if let Some(config) = &message.config {
        for (index, op) in config.change.ops.iter().enumerate() {
            let (operation, reference, body) = match op {
                ConfigOp::Upsert(object) => ("upsert", object.object_ref(), definition(object)),
                ConfigOp::Delete(reference) => ("delete", *reference, reference.to_string()),
            };
            let (table, key) = object_key(&reference);
            out.push(Write::Insert {
                table: CONFIG_MESSAGE_LOG,
                row: vec![
                    u64_value(message.recovery_key),
                    id(index as u32),
                    u64_value(config.config_version),
                    u64_value(message.time_ms),
                    text_value(operation),
                    text_value(table),
                    SqlValue::Text(body.clone()),
                ],
            });
            match op {
                ConfigOp::Upsert(_) => {
                    let mut row = key;
                    row.push(SqlValue::Text(body));
                    out.push(Write::Upsert { table, row });
                }
                ConfigOp::Delete(_) => out.push(Write::Delete { table, key }),
            }
        }
    }
    for record in &message.records {
        let (table, row) = historical_row(record);
        out.push(Write::Insert { table, row });
    }
    for (index, event) in message.events.iter().enumerate() {
        out.push(Write::Insert {
            table: EVENT,
            row: vec![
                u64_value(message.recovery_key),
                id(index as u32),
                u64_value(message.time_ms),
                name_of(&event.severity),
                name_of(&event.code),
                text_value(&event.message),
            ],
        });
    }
}

/// A configuration table's name for an object's kind.
pub fn table_of(object: &ConfigObject) -> &'static str {
    object_key(&object.object_ref()).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_matches_its_table() {
        let tables = tables();
        let find = |name: &str| tables.iter().find(|t| t.name == name).unwrap();
        let record = HistoricalRecord {
            recovery_key: 7,
            index: 0,
            row: HistoricalRow::AgentSkillGroupInterval {
                agent: tandem_model::ids::AgentId(1),
                skill_group: tandem_model::ids::SkillGroupId(2),
                interval_start_ms: 0,
                interval_minutes: 30,
                counts: AgentCounts::default(),
            },
        };
        let (table, row) = historical_row(&record);
        assert_eq!(row.len(), find(table).columns.len());
        let record = HistoricalRecord {
            recovery_key: 7,
            index: 1,
            row: HistoricalRow::CallTypeInterval {
                call_type: tandem_model::ids::CallTypeId(1),
                interval_start_ms: 0,
                interval_minutes: 30,
                counts: CallCounts::default(),
            },
        };
        let (table, row) = historical_row(&record);
        assert_eq!(row.len(), find(table).columns.len());
    }
}
