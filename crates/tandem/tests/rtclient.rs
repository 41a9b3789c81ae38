//! rtclient's clients against real processes on loopback: a WebSocket client sees every frame
//! in order and, at each frame, the rows the REST API gives; a client that stops reading is
//! closed with its reason while the feed and the other clients go on; it reconnects with a
//! snapshot; `tandem watch` moves to the other distributor of its site when its own is killed.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem::cluster::{add_distributor, Installation};
use tandem_distributor::auth::TokenRole;
use tandem_mds::tls::{Role, Security, TlsContext};
use tandem_mds::transport;
use tandem_model::topology::SideName;
use tokio_tungstenite::tungstenite::Message;

const START_MS: u64 = 20_000;
const WAIT_MS: u64 = 30_000;
const LOAD_CPS: f64 = 40.0;
/// Frames whose rows the good client keeps, to compare with a REST answer of any of them.
const FRAMES_KEPT: usize = 200;
/// Snapshots of the agents table the slow client asks for and never reads.
const SLOW_CLIENT_SUBSCRIBES: usize = 400;

type Socket = tandem::watch::WebSocket;

/// A client workstation: the cluster CA and a viewer token, no certificate of its own.
#[derive(Clone)]
struct Viewer {
    security: Security,
    token: String,
}

impl Viewer {
    fn new(install: &Installation) -> Viewer {
        let (_, token) = tandem_distributor::auth::create(
            &install.topology.tokens_file(),
            TokenRole::Viewer,
            "rtclient-test",
        )
        .unwrap();
        let ca = tandem_mds::tls::ca_cert_path(&install.topology.certs_dir());
        Viewer {
            security: Security::Tls(Arc::new(TlsContext::load_client_only(&ca).unwrap())),
            token,
        }
    }
}

async fn subscribe(viewer: &Viewer, addr: SocketAddr, table: &str) -> Socket {
    let mut socket = tandem::watch::websocket(&viewer.security, addr, Some(&viewer.token), 1 << 24)
        .await
        .expect("a WebSocket to the distributor");
    let message = json!({ "subscribe": { "table": table } });
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
    socket
}

/// What the good client saw: the rows at each recent frame, and every frame in order.
#[derive(Default)]
struct Seen {
    rows_at: BTreeMap<u64, BTreeMap<u64, Value>>,
    frames: Vec<u64>,
    snapshots: u64,
    gaps: Vec<(u64, u64)>,
}

/// Reads skill group messages until the socket ends, checking that each delta is the frame
/// after the last.
async fn follow(mut socket: Socket, seen: Arc<Mutex<Seen>>) {
    let mut rows: BTreeMap<u64, Value> = BTreeMap::new();
    let mut last: Option<u64> = None;
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let m: Value = serde_json::from_str(&text).unwrap();
        let frame = m["frame"]["number"].as_u64().unwrap_or(0);
        let mut seen = seen.lock().unwrap();
        match m["type"].as_str() {
            Some("snapshot") => {
                rows = m["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["skill_group_id"].as_u64().unwrap(), r.clone()))
                    .collect();
                seen.snapshots += 1;
            }
            Some("delta") => {
                if let Some(last) = last {
                    if frame != last + 1 {
                        seen.gaps.push((last, frame));
                    }
                }
                for k in m["deletes"].as_array().unwrap() {
                    rows.remove(&k["skill_group_id"].as_u64().unwrap());
                }
                for r in m["upserts"].as_array().unwrap() {
                    rows.insert(r["skill_group_id"].as_u64().unwrap(), r.clone());
                }
            }
            _ => continue,
        }
        last = Some(frame);
        seen.frames.push(frame);
        seen.rows_at.insert(frame, rows.clone());
        while seen.rows_at.len() > FRAMES_KEPT {
            seen.rows_at.pop_first();
        }
    }
}

async fn rest_skill_groups(viewer: &Viewer, addr: SocketAddr) -> (u64, BTreeMap<u64, Value>) {
    let token = Some(viewer.token.as_str());
    let body =
        tandem_distributor::http::get(addr, "/api/rt/skill_groups", 5_000, &viewer.security, token)
            .await
            .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["skill_group_id"].as_u64().unwrap(), r.clone()))
        .collect();
    (v["frame"]["number"].as_u64().unwrap(), rows)
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within {WAIT_MS} ms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn websocket_clients_see_every_frame_slow_ones_are_closed_and_watch_fails_over() {
    let mut install = Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "rtclient",
        None,
        |topology| {
            add_distributor(topology, "aw2", SideName::B, None);
        },
    );
    install.start_paired_under_load(LOAD_CPS, START_MS);
    install.start_distributor("aw1");
    install.start_distributor("aw2");
    for name in ["aw1", "aw2"] {
        install.wait_aw(name, "initialized, 10 frames", WAIT_MS, |s| {
            s.updateaw == "ok" && s.frames >= 10
        });
    }
    let aw1 = install.topology.distributor("aw1").unwrap().public;
    let viewer = Viewer::new(&install);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    rt.block_on(async {
        // A good client follows the skill groups from the snapshot on.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let follower = tokio::spawn(follow(
            subscribe(&viewer, aw1, "skill_groups").await,
            seen.clone(),
        ));
        wait_until("the good client's first frames", || {
            seen.lock().unwrap().frames.len() >= 5
        })
        .await;

        // REST and WebSocket agree at every frame compared.
        let mut compared = 0;
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        while compared < 5 {
            assert!(Instant::now() < deadline, "5 frames compared with REST");
            let (frame, rest) = rest_skill_groups(&viewer, aw1).await;
            wait_until("the good client at the REST answer's frame", || {
                seen.lock()
                    .unwrap()
                    .frames
                    .last()
                    .is_some_and(|f| *f >= frame)
            })
            .await;
            if let Some(ws) = seen.lock().unwrap().rows_at.get(&frame) {
                assert_eq!(ws, &rest, "WebSocket and REST rows at frame {frame}");
                assert!(!rest.is_empty());
                compared += 1;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }

        // A client that asks for many snapshots and never reads is closed as too slow.
        let frames_before = seen.lock().unwrap().frames.len();
        let stream = {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(aw1).await.unwrap()
        };
        let stream = transport::secure(stream, &viewer.security, Role::Aw)
            .await
            .unwrap();
        let mut slow = tandem::watch::websocket_over(
            stream,
            &viewer.security,
            aw1,
            Some(&viewer.token),
            1 << 24,
        )
        .await
        .unwrap();
        for _ in 0..SLOW_CLIENT_SUBSCRIBES {
            let message = json!({ "subscribe": { "table": "agents" } });
            slow.send(Message::Text(message.to_string().into()))
                .await
                .unwrap();
        }
        let status_addr = aw1;
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            let status = tandem::aw::status(&install.security, status_addr)
                .await
                .unwrap();
            if status.clients_disconnected_slow >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the slow client closed within {WAIT_MS} ms: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The slow client reads what was sent to it, then the reason it was closed.
        let close = tokio::time::timeout(Duration::from_millis(WAIT_MS), async {
            while let Some(message) = slow.next().await {
                match message {
                    Ok(Message::Close(frame)) => return frame,
                    Ok(_) => continue,
                    Err(e) => panic!("the slow client's connection failed without a close: {e}"),
                }
            }
            panic!("the slow client's connection ended without a close");
        })
        .await
        .expect("the close frame");
        let close = close.expect("a close with a reason");
        assert_eq!(u16::from(close.code), 1008);
        assert!(
            close.reason.starts_with("too slow"),
            "the reason: {}",
            close.reason
        );

        // Meanwhile the good client got every frame, in order, and the feed went on.
        let (frames_after, gaps, snapshots) = {
            let seen = seen.lock().unwrap();
            (seen.frames.len(), seen.gaps.clone(), seen.snapshots)
        };
        assert!(
            frames_after > frames_before + 10,
            "the good client kept getting frames ({frames_before} -> {frames_after})"
        );
        assert!(
            gaps.is_empty(),
            "frames missed by the good client: {gaps:?}"
        );
        assert_eq!(snapshots, 1, "the good client needed no second snapshot");

        // Reconnecting gives a snapshot.
        let mut again = subscribe(&viewer, aw1, "agents").await;
        let first = tokio::time::timeout(Duration::from_millis(WAIT_MS), again.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
        assert_eq!(first["type"], "snapshot");
        assert!(!first["rows"].as_array().unwrap().is_empty());
        follower.abort();
    });

    // tandem watch follows aw1, and aw2 when aw1 is killed.
    install.start_watch("watch", "aw1", "skill-groups", 200);
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while !install.output("watch").contains("via aw1, frame") {
        assert!(Instant::now() < deadline, "tandem watch showed aw1's rows");
        std::thread::sleep(Duration::from_millis(50));
    }
    install.kill("aw1");
    let shown_before = install.output("watch").len();
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while !install.output("watch")[shown_before..].contains("via aw2, frame") {
        assert!(
            Instant::now() < deadline,
            "tandem watch moved to aw2; it printed {}",
            install.output("watch")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tables = install.output("watch");
    let last = tables.rsplit("tandem watch:").next().unwrap();
    assert!(
        last.lines().filter(|l| !l.trim().is_empty()).count() > 10,
        "aw2's table has the skill groups: {last}"
    );
}
