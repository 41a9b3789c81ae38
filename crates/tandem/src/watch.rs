//! `tandem watch`: the terminal client AW. It subscribes to one real-time table over a
//! distributor's WebSocket API, keeps the rows current from the snapshot and the deltas, and
//! redraws a table every refresh. When its distributor fails it moves to the next distributor
//! of the same site (SPEC section 7), and the new one starts it with a snapshot.

use crate::processes::runtime;
use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tandem_mds::tls::{Role, Security, TlsContext};
use tandem_mds::transport::{self, Stream};
use tandem_model::topology::Topology;
use tokio_tungstenite::tungstenite::Message;

/// How long a connection to a distributor may take before the next one is tried.
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// The pause before trying the next distributor.
const RECONNECT_PAUSE_MS: u64 = 500;
/// Rows shown at most (the agents of a large contact center do not fit a terminal).
const ROWS_SHOWN_MAX: usize = 60;
/// The longest WebSocket message taken from a distributor (a snapshot of a large table).
const MESSAGE_BYTES_MAX: usize = 256 << 20;
/// How long the configuration (for names) may take to arrive.
const NAMES_TIMEOUT_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchTable {
    SkillGroups,
    CallTypes,
    Peripherals,
    Agents,
}

impl WatchTable {
    fn api_name(self) -> &'static str {
        match self {
            WatchTable::SkillGroups => "skill_groups",
            WatchTable::CallTypes => "call_types",
            WatchTable::Peripherals => "peripherals",
            WatchTable::Agents => "agents",
        }
    }

    /// The field naming a row, and the configuration list its names come from.
    fn key_and_names(self) -> (&'static str, &'static str) {
        match self {
            WatchTable::SkillGroups => ("skill_group_id", "skill_group"),
            WatchTable::CallTypes => ("id", "call_type"),
            WatchTable::Peripherals => ("peripheral_id", "peripheral"),
            WatchTable::Agents => ("agent_id", "agent"),
        }
    }
}

#[derive(clap::Args)]
pub struct WatchArgs {
    #[arg(long)]
    config: PathBuf,
    /// The distributor to start with (default: the topology's first); the others of its site
    /// take over when it fails.
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_enum, default_value_t = WatchTable::SkillGroups)]
    table: WatchTable,
    /// Only the agents of this peripheral (the agents table).
    #[arg(long)]
    peripheral: Option<u32>,
    /// Redraw period.
    #[arg(long, default_value_t = 1_000)]
    refresh_ms: u64,
    /// Print each refresh below the last instead of redrawing the screen.
    #[arg(long)]
    plain: bool,
    /// Stop after this many refreshes.
    #[arg(long)]
    refreshes: Option<u64>,
    /// A viewer or admin token (`tandem token create`); without one, the operator's
    /// certificate from the topology's certificates directory proves who watches.
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A WebSocket to a distributor's `/ws` over `stream` (made by `transport::connect` or
/// `transport::secure`), with `token` if given.
pub async fn websocket_over(
    stream: Stream,
    security: &Security,
    addr: SocketAddr,
    token: Option<&str>,
    message_bytes_max: usize,
) -> Result<WebSocket> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}://{addr}/ws", security.ws_scheme()).into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(message_bytes_max))
        .max_frame_size(Some(message_bytes_max));
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .with_context(|| format!("a WebSocket to {addr}"))?;
    Ok(socket)
}

/// A WebSocket to the distributor at `addr`.
pub async fn websocket(
    security: &Security,
    addr: SocketAddr,
    token: Option<&str>,
    message_bytes_max: usize,
) -> Result<WebSocket> {
    let stream = transport::connect(addr, CONNECT_TIMEOUT_MS, security, Role::Aw).await?;
    websocket_over(stream, security, addr, token, message_bytes_max).await
}

/// A WebSocket of the distributors' API.
pub type WebSocket = tokio_tungstenite::WebSocketStream<Stream>;

/// How `tandem watch` reaches distributors: the token over TLS from the CA alone, or the
/// operator's certificate.
fn watch_security(topology: &Topology, token: Option<&str>) -> Result<Security> {
    if crate::certs::insecure_plaintext() || token.is_none() {
        return crate::certs::operator_security(topology);
    }
    let ca = tandem_mds::tls::ca_cert_path(&topology.certs_dir());
    Ok(Security::Tls(std::sync::Arc::new(
        TlsContext::load_client_only(&ca).with_context(|| format!("the CA in {}", ca.display()))?,
    )))
}

/// The rows one watch holds, and what it shows about where they come from.
struct Watched {
    table: WatchTable,
    rows: BTreeMap<u64, Value>,
    names: BTreeMap<u64, String>,
    frame: Option<Value>,
    refreshes: u64,
}

/// One column: its title and how a row shows in it.
type ColumnFn = fn(&Value, &BTreeMap<u64, String>) -> String;
type Column = (&'static str, ColumnFn);

fn number(row: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(row, |v, field| &v[*field])
        .as_u64()
        .unwrap_or(0)
}

fn percent(row: &Value, path: &[&str]) -> String {
    match path.iter().fold(row, |v, field| &v[*field]).as_f64() {
        Some(v) => format!("{:.1}%", v * 100.0),
        None => "-".into(),
    }
}

fn seconds(row: &Value, path: &[&str]) -> String {
    match path.iter().fold(row, |v, field| &v[*field]).as_f64() {
        Some(v) => format!("{:.1}s", v / 1000.0),
        None => "-".into(),
    }
}

fn name(names: &BTreeMap<u64, String>, id: &Value) -> String {
    match id.as_u64() {
        Some(id) => names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
        None => String::new(),
    }
}

/// The current half hour's figures, which skill groups and call types both show.
fn half_hour_columns() -> [Column; 4] {
    [
        ("Offered", |r, _| {
            number(r, &["half", "counts", "calls_offered"]).to_string()
        }),
        ("Handled", |r, _| {
            number(r, &["half", "counts", "calls_handled"]).to_string()
        }),
        ("SL", |r, _| percent(r, &["half", "service_level"])),
        ("ASA", |r, _| seconds(r, &["half", "asa_ms"])),
    ]
}

fn columns(table: WatchTable) -> Vec<Column> {
    match table {
        WatchTable::SkillGroups => [
            (
                "Skill group",
                (|r, n| name(n, &r["skill_group_id"])) as ColumnFn,
            ),
            ("Logged on", |r, _| number(r, &["logged_on"]).to_string()),
            ("Avail", |r, _| number(r, &["avail"]).to_string()),
            ("Talking", |r, _| {
                (number(r, &["talking_in"])
                    + number(r, &["talking_out"])
                    + number(r, &["talking_other"])
                    + number(r, &["hold"]))
                .to_string()
            }),
            ("Not ready", |r, _| number(r, &["not_ready"]).to_string()),
            ("Queued", |r, _| {
                (number(r, &["router_calls_q_now"]) + number(r, &["calls_q_now"])).to_string()
            }),
        ]
        .into_iter()
        .chain(half_hour_columns())
        .collect(),
        WatchTable::CallTypes => [
            ("Call type", (|r, n| name(n, &r["id"])) as ColumnFn),
            ("Queued", |r, _| number(r, &["calls_q_now"]).to_string()),
            ("In progress", |r, _| {
                number(r, &["calls_in_progress"]).to_string()
            }),
        ]
        .into_iter()
        .chain(half_hour_columns())
        .chain([(
            "Offered today",
            (|r, _| number(r, &["today", "counts", "calls_offered"]).to_string()) as ColumnFn,
        )])
        .collect(),
        WatchTable::Peripherals => vec![
            ("Peripheral", |r, n| name(n, &r["peripheral_id"])),
            ("Online", |r, _| {
                if r["online"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                }
            }),
            ("Agents logged on", |r, _| {
                number(r, &["agents_logged_on"]).to_string()
            }),
            ("Calls in progress", |r, _| {
                number(r, &["calls_in_progress"]).to_string()
            }),
        ],
        WatchTable::Agents => vec![
            ("Agent", |r, n| name(n, &r["agent_id"])),
            ("State", |r, _| {
                r["agent_state"].as_str().unwrap_or("").into()
            }),
            ("Reason", |r, _| number(r, &["reason_code"]).to_string()),
            ("Peripheral", |r, _| {
                number(r, &["peripheral_id"]).to_string()
            }),
            ("Skill group", |r, _| {
                r["skill_group_id"]
                    .as_u64()
                    .map_or(String::new(), |g| g.to_string())
            }),
        ],
    }
}

impl Watched {
    fn apply(&mut self, message: &Value) -> Result<()> {
        let (key_field, _) = self.table.key_and_names();
        let key = |row: &Value| row[key_field].as_u64();
        match message["type"].as_str() {
            Some("snapshot") => {
                self.rows = message["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| Some((key(r)?, r.clone())))
                    .collect();
            }
            Some("delta") => {
                for deleted in message["deletes"].as_array().into_iter().flatten() {
                    if let Some(k) = key(deleted) {
                        self.rows.remove(&k);
                    }
                }
                for row in message["upserts"].as_array().into_iter().flatten() {
                    if let Some(k) = key(row) {
                        self.rows.insert(k, row.clone());
                    }
                }
            }
            Some("error") => bail!("the distributor: {}", message["message"]),
            _ => return Ok(()),
        }
        if !message["frame"].is_null() {
            self.frame = Some(message["frame"].clone());
        }
        Ok(())
    }

    /// The table as text, with a heading naming the distributor and the frame.
    fn render(&self, distributor: &str) -> String {
        let columns = columns(self.table);
        let mut lines: Vec<Vec<String>> =
            vec![columns.iter().map(|(title, _)| title.to_string()).collect()];
        let mut rows: Vec<Vec<String>> = self
            .rows
            .values()
            .map(|r| columns.iter().map(|(_, f)| f(r, &self.names)).collect())
            .collect();
        rows.sort_by(|a, b| natural(&a[0], &b[0]));
        let total = rows.len();
        lines.extend(rows.into_iter().take(ROWS_SHOWN_MAX));
        let widths: Vec<usize> = (0..columns.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let frame = match &self.frame {
            Some(f) => format!(
                "frame {} (epoch {}, configuration version {})",
                f["number"], f["epoch"], f["config_version"]
            ),
            None => "no frame yet".into(),
        };
        let mut out = format!(
            "tandem watch: {} via {distributor}, {frame}, {total} rows\n",
            self.table.api_name()
        );
        for line in &lines {
            let cells: Vec<String> = line
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i == 0 {
                        format!("{cell:<w$}", w = widths[i])
                    } else {
                        format!("{cell:>w$}", w = widths[i])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if total > ROWS_SHOWN_MAX {
            out.push_str(&format!("... and {} more\n", total - ROWS_SHOWN_MAX));
        }
        out
    }
}

/// Orders names with their numbers by value ("Agent 2" before "Agent 10").
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (text, number) = s.split_at(s.len() - digits);
        (text.to_string(), number.parse::<u64>().unwrap_or(0))
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// Why a session with one distributor ended.
enum SessionEnd {
    /// The refreshes asked for were shown.
    Done,
    Failed(String),
}

async fn load_names(
    security: &Security,
    token: Option<&str>,
    addr: SocketAddr,
    list: &str,
) -> BTreeMap<u64, String> {
    let Ok(body) =
        tandem_distributor::http::get(addr, "/api/config", NAMES_TIMEOUT_MS, security, token).await
    else {
        return BTreeMap::new();
    };
    let Ok(value) = serde_json::from_str::<Value>(&body) else {
        return BTreeMap::new();
    };
    value["contact_center"][list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["id"].as_u64()?, o["name"].as_str()?.to_string())))
        .collect()
}

async fn session(
    args: &WatchArgs,
    name: &str,
    addr: SocketAddr,
    watched: &mut Watched,
    security: &Security,
) -> SessionEnd {
    let token = args.token.as_deref();
    let connect = websocket(security, addr, token, MESSAGE_BYTES_MAX);
    let mut socket =
        match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => return SessionEnd::Failed(format!("{name} ({addr}): {e:#}")),
            Err(_) => {
                return SessionEnd::Failed(format!(
                    "{name} ({addr}): no connection within {CONNECT_TIMEOUT_MS} ms"
                ))
            }
        };
    watched.names = load_names(security, token, addr, watched.table.key_and_names().1).await;
    let filter = match (watched.table, args.peripheral) {
        (WatchTable::Agents, Some(p)) => json!({ "peripheral_id": p }),
        _ => json!({}),
    };
    let subscribe = json!({ "subscribe": { "table": watched.table.api_name(), "filter": filter } });
    if let Err(e) = socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
    {
        return SessionEnd::Failed(format!("{name}: {e}"));
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(args.refresh_ms.max(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            message = socket.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map_or(String::new(), |f| f.reason.to_string());
                        return SessionEnd::Failed(format!("{name} closed the connection: {reason}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return SessionEnd::Failed(format!("{name}: {e}")),
                    None => return SessionEnd::Failed(format!("{name} closed the connection")),
                };
                let message: Value = match serde_json::from_str(&text) {
                    Ok(message) => message,
                    Err(e) => return SessionEnd::Failed(format!("{name} sent bad JSON: {e}")),
                };
                if let Err(e) = watched.apply(&message) {
                    return SessionEnd::Failed(e.to_string());
                }
            }
            _ = ticker.tick() => {
                if watched.frame.is_none() {
                    continue;
                }
                let text = watched.render(name);
                let mut out = std::io::stdout().lock();
                if !args.plain {
                    // Home and clear: the table redraws in place.
                    let _ = out.write_all(b"\x1b[H\x1b[2J");
                }
                let _ = out.write_all(text.as_bytes());
                if args.plain {
                    let _ = out.write_all(b"\n");
                }
                let _ = out.flush();
                watched.refreshes += 1;
                if args.refreshes.is_some_and(|n| watched.refreshes >= n) {
                    return SessionEnd::Done;
                }
            }
        }
    }
}

pub fn watch(args: WatchArgs) -> Result<()> {
    let topology = Topology::load(&args.config)?;
    let security = watch_security(&topology, args.token.as_deref())?;
    let first = match &args.name {
        Some(name) => topology.distributor(name)?,
        None => topology
            .distributors
            .first()
            .context("the topology has no distributor")?,
    };
    // This distributor first, then the others of its site in the topology's order.
    let mut candidates = vec![(first.name.clone(), first.public)];
    candidates.extend(
        topology
            .distributors
            .iter()
            .filter(|d| d.site == first.site && d.name != first.name)
            .map(|d| (d.name.clone(), d.public)),
    );
    let mut watched = Watched {
        table: args.table,
        rows: BTreeMap::new(),
        names: BTreeMap::new(),
        frame: None,
        refreshes: 0,
    };
    runtime()?.block_on(async {
        let mut at = 0;
        loop {
            let (name, addr) = &candidates[at];
            match session(&args, name, *addr, &mut watched, &security).await {
                SessionEnd::Done => return Ok(()),
                SessionEnd::Failed(reason) => {
                    at = (at + 1) % candidates.len();
                    eprintln!(
                        "tandem watch: {reason}; trying {} ({})",
                        candidates[at].0, candidates[at].1
                    );
                    tokio::time::sleep(Duration::from_millis(RECONNECT_PAUSE_MS)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_their_numbers() {
        let mut names = vec!["Agent 10", "Agent 2", "Agent 1", "Billing"];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(names, ["Agent 1", "Agent 2", "Agent 10", "Billing"]);
    }

    #[test]
    fn deltas_update_and_delete_rows_of_the_snapshot() {
        let mut watched = Watched {
            table: WatchTable::SkillGroups,
            rows: BTreeMap::new(),
            names: BTreeMap::from([(7, "Sales".to_string())]),
            frame: None,
            refreshes: 0,
        };
        let row = |id: u64, avail: u64| json!({ "skill_group_id": id, "avail": avail });
        watched
            .apply(&json!({ "type": "snapshot", "frame": { "number": 4 }, "rows": [row(7, 1), row(8, 2)] }))
            .unwrap();
        watched
            .apply(&json!({ "type": "delta", "frame": { "number": 5 },
                "upserts": [row(7, 3)], "deletes": [{ "skill_group_id": 8 }] }))
            .unwrap();
        assert_eq!(watched.rows.len(), 1);
        assert_eq!(watched.rows[&7]["avail"], 3);
        assert_eq!(watched.frame.as_ref().unwrap()["number"], 5);
        let text = watched.render("aw1");
        assert!(
            text.starts_with("tandem watch: skill_groups via aw1, frame 5"),
            "{text}"
        );
        assert!(text.contains("Sales"), "{text}");
        assert!(watched
            .apply(&json!({ "type": "error", "message": "no" }))
            .is_err());
    }
}
