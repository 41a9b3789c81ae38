//! The side's Prometheus metrics (SPEC section 9): ordering and delivery sequence numbers, the
//! delivery lag, state transfers, the router's state size, the synchronizer's state and epoch,
//! and the PG paths.
//!
//! The core builds a [`MetricsSnapshot`] of plain values and hands it to [`record`]; nothing
//! here reads the core's structures. Every metric carries a `side` label, so that two sides in
//! one process (which share the process's one recorder) stay apart. [`serve`] answers scrapes
//! on the side's metrics address with the recorder's text rendering.

use ::metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, ClientAuth, Stream};
use tandem_mds::{Side, SyncState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;

/// How often the core records a snapshot: often enough for a scrape every second, rarely
/// enough to cost the core nothing measurable.
pub const METRICS_INTERVAL_MS: u64 = 100;
/// Scrapes answered at once; further connections wait for a slot.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// The longest request head a scrape may send.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A scrape that has not sent its request head in this long is closed.
const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// The synchronizer's states, each the value of the `state` label of `tandem_mds_sync_state`.
pub const SYNC_STATES: [SyncState; 6] = [
    SyncState::Connecting,
    SyncState::Testing,
    SyncState::PairedEnabled,
    SyncState::PairedDisabled,
    SyncState::IsolatedEnabled,
    SyncState::IsolatedDisabled,
];

fn state_label(state: SyncState) -> &'static str {
    match state {
        SyncState::Connecting => "Connecting",
        SyncState::Testing => "Testing",
        SyncState::PairedEnabled => "PairedEnabled",
        SyncState::PairedDisabled => "PairedDisabled",
        SyncState::IsolatedEnabled => "IsolatedEnabled",
        SyncState::IsolatedDisabled => "IsolatedDisabled",
    }
}

fn side_label(side: Side) -> &'static str {
    match side {
        Side::A => "a",
        Side::B => "b",
    }
}

/// State transfers since the process started, as counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferCounts {
    /// State bytes of the transfers this side sent to the end.
    pub bytes_sent: u64,
    /// State bytes of the transfers this side received, checked and loaded.
    pub bytes_received: u64,
    pub sent: u64,
    pub received: u64,
    /// Failed, timed out, discarded at the join or abandoned on a buffer overflow.
    pub failed: u64,
    /// Asked for by the peer and refused for a version mismatch.
    pub refused: u64,
}

/// What the core reports, as plain values.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    pub side: Side,
    pub sync_state: SyncState,
    pub epoch: u64,
    /// The last sequence number this side holds (ordered or received from the peer).
    pub held_through: u64,
    /// The last sequence number delivered to the router.
    pub delivered_through: u64,
    pub peer_connected: bool,
    /// Per PG of the topology, in topology order: its paths connected to this side.
    pub pg_paths: Vec<(String, u32)>,
    pub state_bytes: u64,
    pub state_bytes_max: u64,
    pub transfers: TransferCounts,
    /// Inputs the router applied and refused since its state began (they travel with it).
    pub inputs_applied: u64,
    pub inputs_rejected: u64,
}

/// Messages held but not yet delivered. Sequence numbers carry their epoch's range in the upper
/// bits, so across an epoch change the difference says nothing: then the lag counts the
/// messages held in the newer range, all undelivered, which is a lower bound.
pub fn delivery_lag(held_through: u64, delivered_through: u64) -> u64 {
    let shift = tandem_mds::protocol::SEQ_EPOCH_SHIFT;
    if held_through >> shift == delivered_through >> shift {
        held_through.saturating_sub(delivered_through)
    } else {
        held_through & ((1 << shift) - 1)
    }
}

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    describe_gauge!(
        "tandem_mds_ordered_seq",
        "The last sequence number this side holds, ordered here or received from the peer (the epoch's range sits in the upper bits)."
    );
    describe_gauge!(
        "tandem_mds_delivered_seq",
        "The last sequence number delivered to the router."
    );
    describe_gauge!(
        "tandem_mds_delivery_lag",
        "Ordered messages held but not yet delivered to the router."
    );
    describe_gauge!("tandem_mds_epoch", "The synchronizer's epoch number.");
    describe_gauge!(
        "tandem_mds_sync_state",
        "1 for the synchronizer's current state (label state), 0 for the others."
    );
    describe_gauge!(
        "tandem_mds_peer_connected",
        "1 while the private link to the peer side is up."
    );
    describe_gauge!(
        "tandem_pg_paths_connected",
        "PG paths connected to this side, per PG."
    );
    describe_gauge!(
        "tandem_router_state_bytes",
        Unit::Bytes,
        "The exact size of the router's state records, what a state transfer sends."
    );
    describe_gauge!(
        "tandem_router_state_bytes_max",
        Unit::Bytes,
        "The largest router state size seen."
    );
    describe_counter!(
        "tandem_transfer_bytes_total",
        Unit::Bytes,
        "State bytes of completed state transfers, by direction (sent, received)."
    );
    describe_counter!(
        "tandem_router_inputs_total",
        "Ordered inputs the router took, by outcome: applied, or rejected (bad input, reported as an event and changing nothing)."
    );
    describe_counter!(
        "tandem_transfers_total",
        "State transfers by outcome: sent, received, failed (including timed out and discarded), refused (version mismatch)."
    );
}

/// Records a snapshot in the installed recorder.
pub fn record(s: &MetricsSnapshot) {
    let side = side_label(s.side);
    gauge!("tandem_mds_ordered_seq", "side" => side).set(s.held_through as f64);
    gauge!("tandem_mds_delivered_seq", "side" => side).set(s.delivered_through as f64);
    gauge!("tandem_mds_delivery_lag", "side" => side)
        .set(delivery_lag(s.held_through, s.delivered_through) as f64);
    gauge!("tandem_mds_epoch", "side" => side).set(s.epoch as f64);
    for state in SYNC_STATES {
        gauge!("tandem_mds_sync_state", "side" => side, "state" => state_label(state))
            .set(if state == s.sync_state { 1.0 } else { 0.0 });
    }
    gauge!("tandem_mds_peer_connected", "side" => side).set(u8::from(s.peer_connected) as f64);
    for (pg, paths) in &s.pg_paths {
        gauge!("tandem_pg_paths_connected", "side" => side, "pg" => pg.clone()).set(*paths as f64);
    }
    gauge!("tandem_router_state_bytes", "side" => side).set(s.state_bytes as f64);
    gauge!("tandem_router_state_bytes_max", "side" => side).set(s.state_bytes_max as f64);
    for (outcome, count) in [
        ("applied", s.inputs_applied),
        ("rejected", s.inputs_rejected),
    ] {
        counter!("tandem_router_inputs_total", "side" => side, "outcome" => outcome)
            .absolute(count);
    }
    let t = &s.transfers;
    for (direction, bytes) in [("sent", t.bytes_sent), ("received", t.bytes_received)] {
        counter!("tandem_transfer_bytes_total", "side" => side, "direction" => direction)
            .absolute(bytes);
    }
    for (outcome, count) in [
        ("sent", t.sent),
        ("received", t.received),
        ("failed", t.failed),
        ("refused", t.refused),
    ] {
        counter!("tandem_transfers_total", "side" => side, "outcome" => outcome).absolute(count);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed as the global one on first use. A process has one global
/// recorder; a second side in the same process shares it. If some other recorder was installed
/// first, this side's metrics go there and its endpoint serves none, which is reported.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match ::metrics::set_global_recorder(recorder) {
                Ok(()) => describe(),
                Err(e) => warn!("metrics: {e}; this side's metrics endpoint serves no metrics"),
            }
            handle
        })
        .clone()
}

/// Answers scrapes on `listener` with `handle`'s rendering, at most `METRICS_CONNECTIONS_MAX`
/// at a time. In TLS a scraper presents a certificate from the cluster CA, of any role.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, security: Security) {
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        let security = security.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let auth = ClientAuth::Roles(&Role::ALL);
            if let Ok((stream, _)) = transport::accept(stream, &security, auth).await {
                let _ = answer(stream, &handle).await;
            }
        });
    }
}

/// Reads one request head and answers it: the metrics for `GET /metrics` (or `/`), 404 for
/// another path, 405 for another method. One request per connection.
async fn answer(mut stream: Stream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() >= REQUEST_HEAD_BYTES_MAX {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buffer[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), read_head)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = request_line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next());
    let (status, body) = match (method, path) {
        (b"GET", Some(b"/metrics" | b"/")) => {
            handle.run_upkeep();
            ("200 OK", handle.render())
        }
        (b"GET", _) => (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET is served\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusRecorder;

    fn snapshot() -> MetricsSnapshot {
        let epoch_range = 2 << tandem_mds::protocol::SEQ_EPOCH_SHIFT;
        MetricsSnapshot {
            side: Side::B,
            sync_state: SyncState::PairedDisabled,
            epoch: 1,
            held_through: epoch_range | 120,
            delivered_through: epoch_range | 117,
            peer_connected: true,
            pg_paths: vec![("PG1".into(), 1), ("PG2".into(), 0)],
            state_bytes: 744_048,
            state_bytes_max: 800_000,
            inputs_applied: 5_000,
            inputs_rejected: 3,
            transfers: TransferCounts {
                bytes_sent: 0,
                bytes_received: 744_000,
                sent: 0,
                received: 1,
                failed: 2,
                refused: 0,
            },
        }
    }

    /// Records into a recorder of the test's own, so no global state is involved.
    fn rendered(recorder: &PrometheusRecorder, s: &MetricsSnapshot) -> String {
        ::metrics::with_local_recorder(recorder, || {
            describe();
            record(s);
        });
        recorder.handle().render()
    }

    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .to_string()
    }

    #[test]
    fn a_snapshot_renders_every_metric() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let s = snapshot();
        let text = rendered(&recorder, &s);
        let held = (s.held_through as f64).to_string();
        assert_eq!(value(&text, r#"tandem_mds_ordered_seq{side="b"}"#), held);
        assert_eq!(value(&text, r#"tandem_mds_delivery_lag{side="b"}"#), "3");
        assert_eq!(value(&text, r#"tandem_mds_epoch{side="b"}"#), "1");
        assert_eq!(
            value(
                &text,
                r#"tandem_mds_sync_state{side="b",state="PairedDisabled"}"#
            ),
            "1"
        );
        assert_eq!(
            value(
                &text,
                r#"tandem_mds_sync_state{side="b",state="PairedEnabled"}"#
            ),
            "0"
        );
        assert_eq!(value(&text, r#"tandem_mds_peer_connected{side="b"}"#), "1");
        assert_eq!(
            value(&text, r#"tandem_pg_paths_connected{side="b",pg="PG2"}"#),
            "0"
        );
        assert_eq!(
            value(&text, r#"tandem_router_state_bytes{side="b"}"#),
            "744048"
        );
        assert_eq!(
            value(&text, r#"tandem_router_state_bytes_max{side="b"}"#),
            "800000"
        );
        assert_eq!(
            value(
                &text,
                r#"tandem_transfer_bytes_total{side="b",direction="received"}"#
            ),
            "744000"
        );
        assert_eq!(
            value(
                &text,
                r#"tandem_transfers_total{side="b",outcome="failed"}"#
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                r#"tandem_router_inputs_total{side="b",outcome="rejected"}"#
            ),
            "3"
        );
        assert!(
            text.contains("# TYPE tandem_transfers_total counter"),
            "{text}"
        );
        assert!(text.contains("# HELP tandem_mds_delivery_lag "), "{text}");
        // Only the current state is 1.
        let states = text
            .lines()
            .filter(|l| l.starts_with("tandem_mds_sync_state{") && l.ends_with(" 1"))
            .count();
        assert_eq!(states, 1, "{text}");
    }

    #[test]
    fn counters_follow_the_snapshot() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let mut s = snapshot();
        rendered(&recorder, &s);
        s.transfers.received += 1;
        s.transfers.bytes_received += 1_000;
        s.sync_state = SyncState::PairedEnabled;
        let text = rendered(&recorder, &s);
        assert_eq!(
            value(
                &text,
                r#"tandem_transfers_total{side="b",outcome="received"}"#
            ),
            "2"
        );
        assert_eq!(
            value(
                &text,
                r#"tandem_transfer_bytes_total{side="b",direction="received"}"#
            ),
            "745000"
        );
        assert_eq!(
            value(
                &text,
                r#"tandem_mds_sync_state{side="b",state="PairedDisabled"}"#
            ),
            "0"
        );
    }

    #[test]
    fn the_lag_across_an_epoch_change_counts_the_newer_range() {
        let shift = tandem_mds::protocol::SEQ_EPOCH_SHIFT;
        assert_eq!(delivery_lag(2 << shift | 9, 2 << shift | 4), 5);
        assert_eq!(delivery_lag(6 << shift | 3, 2 << shift | 9), 3);
        assert_eq!(delivery_lag(0, 0), 0);
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_rendering() {
        let recorder = PrometheusBuilder::new().build_recorder();
        rendered(&recorder, &snapshot());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(
            listener,
            recorder.handle(),
            Security::InsecurePlaintext,
        ));
        let get = |request: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("\ntandem_mds_epoch{side=\"b\"} 1\n"),
            "{response}"
        );
        let response = get("GET /other HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
        let response = get("POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 405 "), "{response}");
        server.abort();
    }
}
