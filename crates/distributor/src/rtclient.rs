//! rtclient: the distributor's HTTP and WebSocket API for client AWs, and the web client.
//!
//! - `GET /api/rt/{table}` gives a real-time table's current rows (`skill_groups`, `call_types`,
//!   `services`, `peripherals`, `agents`, `agent_skill_groups`, `router_queue`), filtered by
//!   query parameters (`id`, `peripheral_id`, `skill_group_id`, `agent_id`).
//! - `GET /ws`: a client sends `{"subscribe": {"table": ..., "filter": {...}}}` and gets the
//!   table's rows (`"type": "snapshot"`), then one `"type": "delta"` per frame with the frame
//!   number, only for rows its filter takes. A client that falls `CLIENT_UPDATES_QUEUED_MAX`
//!   updates behind, or whose socket takes a send longer than `WS_SEND_TIMEOUT_MS`, is closed
//!   with the reason; it reconnects and gets a snapshot. Nothing a client does slows the feed or
//!   the other clients: each reads the shared updates at its own pace.
//! - `GET /api/config` is the AW database's configuration; `POST /api/config` applies a change
//!   through the side that orders input, as `tandem config apply` does, once the local
//!   database is initialized.
//! - `GET /api/status`, `/api/events` and `/api/site` feed `tandem aw status` and the web
//!   client's system page; `/metrics` is Prometheus text.

use crate::auth::{TokenEntry, TokenRole};
use crate::run::{wall_ms, ClientUpdate, Shared, CLIENT_UPDATES_QUEUED_MAX};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tandem_mds::admin;
use tandem_mds::tls::PeerIdentity;
use tandem_mds::transport::{self, ClientAuth, RefusalLog};
use tandem_mds::{AdminReply, AdminRequest};
use tandem_model::config::ConfigChange;
use tandem_model::feed::{FeedKey, FeedRow, FeedTable};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

/// A send to a client that takes longer closes it as too slow.
pub const WS_SEND_TIMEOUT_MS: u64 = 5_000;
/// How long a closed client has to answer the close before its connection is dropped.
pub const WS_CLOSE_WAIT_MS: u64 = 2_000;
/// How long a configuration edit waits for the local database to be initialized.
pub const CONFIG_WAIT_INITIALIZED_MS: u64 = 60_000;
/// How long a configuration edit waits for the side's answer.
pub const CONFIG_APPLY_TIMEOUT_MS: u64 = 10_000;

const WEB_CLIENT: &str = include_str!("web/index.html");

/// How long a client may take to send a request's head (a slow sender holds a connection no
/// longer).
pub const HTTP_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// The WebSocket subprotocol of the API; a browser offers its token as a second one,
/// `tandem.bearer.<token>`, since it cannot set a header on a WebSocket.
pub const WS_PROTOCOL: &str = "tandem.v1";
const WS_BEARER_PROTOCOL_PREFIX: &str = "tandem.bearer.";

/// The TCP connection a request came on.
#[derive(Clone, Debug)]
struct Connection {
    from: SocketAddr,
    /// The client's certificate, if it presented one.
    peer: Option<PeerIdentity>,
}

/// Who made a request.
#[derive(Clone, Debug)]
pub enum Caller {
    Token(TokenEntry),
    /// A client certificate from the cluster CA (another distributor, an operator's tools).
    Certificate(PeerIdentity),
    /// No credentials, on a distributor running with `--insecure-plaintext`.
    Plaintext,
}

impl Caller {
    fn is_admin(&self) -> bool {
        matches!(self, Caller::Token(entry) if entry.role == TokenRole::Admin)
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Token(entry) => write!(
                f,
                "{} token {:?} ({})",
                entry.role.as_str(),
                entry.name,
                entry.id
            ),
            Caller::Certificate(peer) => write!(f, "certificate {peer}"),
            Caller::Plaintext => f.write_str("an unauthenticated plaintext client"),
        }
    }
}

/// The token a request carries: `Authorization: Bearer <token>`, or for a browser's
/// WebSocket the subprotocol `tandem.bearer.<token>`.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return value.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_BEARER_PROTOCOL_PREFIX))
}

/// Lets a request through with its `Caller`, or answers 401 (no or a bad token), 403 (a
/// change without the admin role) or 429 (too many bad tokens from this address). The web
/// client's page itself holds no data and is served to anyone.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == "/" && request.method() == Method::GET {
        return next.run(request).await;
    }
    let connection = request.extensions().get::<Connection>().cloned();
    let ip = connection.as_ref().map(|c| c.from.ip());
    let now = std::time::Instant::now();
    if let Some(ip) = ip {
        if let Some(wait_s) = shared.auth_failures.blocked(ip, now) {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed authentications from {ip}; try again in {wait_s} s"),
            );
        }
    }
    let caller = match bearer(request.headers()) {
        Some(token) => match shared.tokens.verify(token) {
            Some(entry) => Caller::Token(entry),
            None => {
                if let Some(ip) = ip {
                    shared.auth_failures.record(ip, now);
                }
                return unauthorized("the token is not valid");
            }
        },
        None => match connection.and_then(|c| c.peer) {
            Some(peer) => Caller::Certificate(peer),
            None if !shared.settings.security.is_tls() => Caller::Plaintext,
            None => return unauthorized("a token is required (Authorization: Bearer <token>)"),
        },
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && !caller.is_admin() {
        return error(
            StatusCode::FORBIDDEN,
            format!("{caller} may read but not change anything: that needs an admin token"),
        );
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unauthorized(reason: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, reason.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/", get(|| async { Html(WEB_CLIENT) }))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/site", get(site))
        .route("/api/system", get(system))
        .route("/api/rt/{table}", get(rt_rows))
        .route("/api/config", get(config_get).post(config_post))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws_upgrade))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authorize,
        ))
        .layer(DefaultBodyLimit::max(
            shared.settings.limits.http_body_bytes_max,
        ))
        // A web client that failed over to another distributor of its site reads from it
        // across origins, with its token; only reads are allowed so. Outside `authorize`, so
        // that a preflight needs no token.
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET])
                .allow_headers([header::AUTHORIZATION]),
        )
        .with_state(shared.clone());
    let connections_max = shared.settings.limits.http_connections_max;
    let slots = Arc::new(tokio::sync::Semaphore::new(connections_max));
    let refusals = Arc::new(RefusalLog::new("rtclient"));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                warn!(distributor = %shared.settings.name, "accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.refused(format_args!(
                "{from}: limits.http_connections_max ({connections_max}) connections are open"
            ));
            continue;
        };
        let app = app.clone();
        let security = shared.settings.security.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (stream, peer) =
                match transport::accept(stream, &security, ClientAuth::Optional).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        refusals.refused(format_args!("{from}: {e}"));
                        return;
                    }
                };
            let connection = Connection { from, peer };
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(connection.clone());
                    tower::ServiceExt::oneshot(app.clone(), request)
                },
            );
            // HTTP/1.1 only, served by hyper's own connection: its header read timeout runs
            // from the connection's start, so a client that sends nothing is closed too.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(HTTP_HEADER_READ_TIMEOUT_MS))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// The API's name of a table.
pub fn api_name(table: FeedTable) -> &'static str {
    match table {
        FeedTable::SkillGroupRealTime => "skill_groups",
        FeedTable::CallTypeRealTime => "call_types",
        FeedTable::ServiceRealTime => "services",
        FeedTable::PeripheralRealTime => "peripherals",
        FeedTable::AgentRealTime => "agents",
        FeedTable::AgentSkillGroupRealTime => "agent_skill_groups",
        FeedTable::RouterQueueRealTime => "router_queue",
    }
}

fn table_of(name: &str) -> Option<FeedTable> {
    FeedTable::ALL.into_iter().find(|t| api_name(*t) == name)
}

/// What a client may filter rows by; absent fields take every row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The row's own id (skill group, call type, service, peripheral, agent).
    pub id: Option<u32>,
    pub peripheral_id: Option<u32>,
    pub skill_group_id: Option<u32>,
    pub agent_id: Option<u32>,
}

impl Filter {
    fn takes_key(&self, key: &FeedKey) -> bool {
        let own = match *key {
            FeedKey::SkillGroup(g) => Some(g.0),
            FeedKey::CallType(c) => Some(c.0),
            FeedKey::Service(s) => Some(s.0),
            FeedKey::Peripheral(p) => Some(p.0),
            FeedKey::Agent(a) => Some(a.0),
            FeedKey::AgentSkillGroup(..) | FeedKey::RouterQueue(_) => None,
        };
        if self.id.is_some() && own.is_some() && self.id != own {
            return false;
        }
        match *key {
            FeedKey::AgentSkillGroup(a, g) => {
                self.agent_id.is_none_or(|x| x == a.0)
                    && self.skill_group_id.is_none_or(|x| x == g.0)
            }
            FeedKey::SkillGroup(g) => self.skill_group_id.is_none_or(|x| x == g.0),
            FeedKey::Peripheral(p) => self.peripheral_id.is_none_or(|x| x == p.0),
            FeedKey::Agent(a) => self.agent_id.is_none_or(|x| x == a.0),
            _ => true,
        }
    }

    /// Filters that look inside the row (an agent's peripheral, a queued call's groups).
    fn takes(&self, row: &FeedRow) -> bool {
        if !self.takes_key(&row.key()) {
            return false;
        }
        match row {
            FeedRow::Agent(a) => self.peripheral_id.is_none_or(|p| p == a.peripheral_id.0),
            FeedRow::RouterQueue(q) => self
                .skill_group_id
                .is_none_or(|g| q.skill_groups.iter().any(|x| x.0 == g)),
            _ => true,
        }
    }
}

/// A row as JSON: the table's fields, without the enum's tag.
pub fn row_json(row: &FeedRow) -> Value {
    let value = match row {
        FeedRow::SkillGroup(r) => serde_json::to_value(r),
        FeedRow::CallType(r) | FeedRow::Service(r) => serde_json::to_value(r),
        FeedRow::Peripheral(r) => serde_json::to_value(r),
        FeedRow::Agent(r) => serde_json::to_value(r),
        FeedRow::AgentSkillGroup(r) => serde_json::to_value(r),
        FeedRow::RouterQueue(r) => serde_json::to_value(r),
    };
    value.unwrap_or(Value::Null)
}

/// A key as JSON, named as the row's id fields.
pub fn key_json(key: &FeedKey) -> Value {
    match *key {
        FeedKey::SkillGroup(g) => json!({ "skill_group_id": g.0 }),
        FeedKey::CallType(c) => json!({ "id": c.0 }),
        FeedKey::Service(s) => json!({ "id": s.0 }),
        FeedKey::Peripheral(p) => json!({ "peripheral_id": p.0 }),
        FeedKey::Agent(a) => json!({ "agent_id": a.0 }),
        FeedKey::AgentSkillGroup(a, g) => json!({ "agent_id": a.0, "skill_group_id": g.0 }),
        FeedKey::RouterQueue(k) => json!({ "router_call_key": k.0 }),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "status": shared.status(), "events": shared.events() }))
}

async fn events(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "events": shared.events() }))
}

/// Both sides, this distributor and the others: the system page.
async fn system(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let view = crate::system::view(&shared).await;
    Json(json!({
        "this": shared.status(),
        "events": shared.events(),
        "sides": view.sides,
        "distributors": view.distributors,
        "gathered_at_ms": view.gathered_at_ms,
    }))
}

/// This distributor and the others of its site, for client failover.
async fn site(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let peers: Vec<Value> = shared
        .settings
        .site_peers
        .iter()
        .map(|(name, addr)| json!({ "name": name, "address": addr.to_string() }))
        .collect();
    Json(json!({
        "name": shared.settings.name,
        "address": shared.settings.http.to_string(),
        "peers": peers,
    }))
}

/// The rows of one table the filter takes, with the frame they are of.
fn table_rows(shared: &Shared, table: FeedTable, filter: &Filter) -> (Value, Vec<Value>) {
    let image = shared.image.read().unwrap_or_else(PoisonError::into_inner);
    let header = serde_json::to_value(image.header).unwrap_or(Value::Null);
    let rows = image
        .rows
        .values()
        .filter(|r| r.table() == table && filter.takes(r))
        .map(row_json)
        .collect();
    (header, rows)
}

async fn rt_rows(
    State(shared): State<Arc<Shared>>,
    Path(table): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let Some(table) = table_of(&table) else {
        let known: Vec<&str> = FeedTable::ALL.into_iter().map(api_name).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("no real-time table {table:?}; the tables are {known:?}"),
        );
    };
    let (header, rows) = table_rows(&shared, table, &filter);
    Json(json!({ "table": api_name(table), "frame": header, "rows": rows })).into_response()
}

async fn config_get(State(shared): State<Arc<Shared>>) -> Response {
    let held = shared
        .configuration
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match held {
        Some(held) => Json(json!({
            "config_version": held.1.version,
            "config_recovery_key": held.1.recovery_key,
            "contact_center": held.0,
        }))
        .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the local database is being initialized",
        ),
    }
}

async fn config_post(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Response {
    let mut change: ConfigChange = match serde_json::from_str(&body) {
        Ok(change) => change,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the change: {e}")),
    };
    // The side adds the certificate it came with (this distributor's).
    change.author = caller.to_string();
    // Edits wait while updateaw initializes or rebuilds the local database.
    let mut initialized = shared.initialized.subscribe();
    let ready = matches!(
        tokio::time::timeout(
            Duration::from_millis(CONFIG_WAIT_INITIALIZED_MS),
            initialized.wait_for(|done| *done),
        )
        .await,
        Ok(Ok(_))
    );
    if !ready {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the local database was not initialized within {CONFIG_WAIT_INITIALIZED_MS} ms"
            ),
        );
    }
    let reply = admin::ask_ordering_side(
        shared.settings.side_addrs(),
        &AdminRequest::ApplyConfig(change),
        CONFIG_APPLY_TIMEOUT_MS,
        &shared.settings.security,
    )
    .await;
    match reply {
        Ok(AdminReply::Applied {
            config_version,
            recovery_key,
        }) => {
            info!(distributor = %shared.settings.name, config_version, "configuration change applied");
            Json(json!({ "applied": { "config_version": config_version, "recovery_key": recovery_key } }))
                .into_response()
        }
        Ok(AdminReply::Rejected { reason }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "rejected": reason })),
        )
            .into_response(),
        Ok(other) => error(
            StatusCode::BAD_GATEWAY,
            format!("unexpected answer: {other:?}"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let name = status.name.clone();
    metrics::with_local_recorder(&recorder, || {
        let gauge = |metric: &'static str, value: f64| {
            metrics::gauge!(metric, "distributor" => name.clone()).set(value);
        };
        gauge("tandem_aw_feed_frame", status.frame_number as f64);
        gauge("tandem_aw_feed_frames", status.frames as f64);
        gauge("tandem_aw_feed_snapshots", status.snapshots as f64);
        gauge("tandem_aw_feed_subscriptions", status.subscriptions as f64);
        gauge(
            "tandem_aw_feed_lag_ms",
            status.feed_lag_ms.unwrap_or(0) as f64,
        );
        gauge("tandem_aw_db_frame", status.aw_db_frame as f64);
        gauge(
            "tandem_aw_db_lag_ms",
            status.aw_db_lag_ms.unwrap_or(0) as f64,
        );
        gauge("tandem_aw_db_writes", status.aw_db_writes as f64);
        gauge(
            "tandem_aw_db_rows_written",
            status.aw_db_rows_written as f64,
        );
        gauge(
            "tandem_aw_db_writes_queued",
            status.aw_db_writes_queued as f64,
        );
        gauge(
            "tandem_aw_db_write_failures",
            status.aw_db_write_failures as f64,
        );
        gauge(
            "tandem_aw_db_updates_unwritten",
            status.aw_db_updates_unwritten as f64,
        );
        gauge(
            "tandem_aw_config_version",
            status.config_version.unwrap_or(0) as f64,
        );
        gauge("tandem_aw_rebuilds", status.rebuilds as f64);
        gauge("tandem_aw_rebuild_loops", status.rebuild_loops as f64);
        gauge("tandem_aw_clients", status.clients as f64);
        gauge(
            "tandem_aw_clients_disconnected_slow",
            status.clients_disconnected_slow as f64,
        );
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

async fn ws_upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    // A browser offered its token as a second subprotocol; the answer names only this one.
    ws.protocols([WS_PROTOCOL])
        .max_message_size(shared.settings.limits.ws_message_bytes_max)
        .max_frame_size(shared.settings.limits.ws_message_bytes_max)
        .on_upgrade(move |socket| ws_client(shared, socket))
}

/// What a WebSocket client sends.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe {
        table: String,
        #[serde(default)]
        filter: Filter,
    },
    Unsubscribe {
        table: String,
    },
}

/// A WebSocket client's message, as the distributor reads it.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, serde_json::Error> {
    serde_json::from_str(text)
}

async fn send(socket: &mut WebSocket, value: &Value) -> Result<(), String> {
    let text = value.to_string();
    match tokio::time::timeout(
        Duration::from_millis(WS_SEND_TIMEOUT_MS),
        socket.send(Message::Text(text.into())),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "too slow: a send took longer than {WS_SEND_TIMEOUT_MS} ms"
        )),
    }
}

async fn close(socket: &mut WebSocket, reason: String) {
    let frame = CloseFrame {
        // 1008: policy violation (the client broke the bounds it was given).
        code: 1008,
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let sent = tokio::time::timeout(
        Duration::from_millis(WS_SEND_TIMEOUT_MS),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    // The closing handshake: read (and drop) what the client still sends until its Close.
    // Dropping the socket with its messages unread would reset the connection, and the client
    // would lose the close frame and its reason before reading them.
    let _ = tokio::time::timeout(Duration::from_millis(WS_CLOSE_WAIT_MS), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn snapshot_message(shared: &Shared, table: FeedTable, filter: &Filter) -> Value {
    let (header, rows) = table_rows(shared, table, filter);
    json!({ "type": "snapshot", "table": api_name(table), "frame": header, "rows": rows })
}

async fn ws_client(shared: Arc<Shared>, mut socket: WebSocket) {
    let subscriptions_max = shared.settings.limits.ws_subscriptions_max;
    let mut updates = shared.updates.subscribe();
    let mut subscriptions: BTreeMap<FeedTable, Filter> = BTreeMap::new();
    let outcome: Result<(), String> = loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Err(e.to_string()),
                };
                let reply = match parse_client_message(&text) {
                    Err(e) => json!({ "type": "error", "message": format!("not understood: {e}") }),
                    Ok(ClientMessage::Subscribe { table, filter }) => match table_of(&table) {
                        None => json!({ "type": "error", "message": format!("no real-time table {table:?}") }),
                        Some(t) if !subscriptions.contains_key(&t)
                            && subscriptions.len() >= subscriptions_max => json!({
                                "type": "error",
                                "message": format!(
                                    "at most limits.ws_subscriptions_max ({subscriptions_max}) subscriptions"
                                ),
                            }),
                        Some(t) => {
                            let message = snapshot_message(&shared, t, &filter);
                            subscriptions.insert(t, filter);
                            message
                        }
                    },
                    Ok(ClientMessage::Unsubscribe { table }) => {
                        if let Some(t) = table_of(&table) {
                            subscriptions.remove(&t);
                        }
                        json!({ "type": "unsubscribed", "table": table })
                    }
                };
                if let Err(e) = send(&mut socket, &reply).await {
                    break Err(e);
                }
            }
            update = updates.recv() => {
                let update = match update {
                    Ok(update) => update,
                    Err(RecvError::Lagged(missed)) => break Err(format!(
                        "too slow: {missed} updates behind (at most {CLIENT_UPDATES_QUEUED_MAX}); \
                         reconnect for a snapshot"
                    )),
                    Err(RecvError::Closed) => break Ok(()),
                };
                let mut failed = None;
                for (table, filter) in &subscriptions {
                    let message = match &*update {
                        ClientUpdate::Snapshot { .. } => snapshot_message(&shared, *table, filter),
                        ClientUpdate::Frame { header, upserts, deletes } => {
                            let upserts: Vec<Value> = upserts
                                .iter()
                                .filter(|r| r.table() == *table && filter.takes(r))
                                .map(row_json)
                                .collect();
                            let deletes: Vec<Value> = deletes
                                .iter()
                                .filter(|k| k.table() == *table && filter.takes_key(k))
                                .map(key_json)
                                .collect();
                            json!({
                                "type": "delta",
                                "table": api_name(*table),
                                "frame": header,
                                "upserts": upserts,
                                "deletes": deletes,
                            })
                        }
                    };
                    if let Err(e) = send(&mut socket, &message).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    break Err(e);
                }
            }
        }
    };
    if let Err(reason) = outcome {
        if reason.starts_with("too slow") {
            let mut status = shared.status.lock().unwrap_or_else(PoisonError::into_inner);
            status.clients_disconnected_slow += 1;
        }
        info!(distributor = %shared.settings.name, at_ms = wall_ms(), "a WebSocket client is closed: {reason}");
        close(&mut socket, reason).await;
    }
}
