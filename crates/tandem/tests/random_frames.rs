//! 10,000 random frames to each port of a running installation under load: random bytes,
//! frames with a good checksum around a random payload, frames with a bad checksum, and
//! lengths past the limit, a few per connection. Afterwards every process still serves: both
//! sides are paired with equal digests (their private link never went down), the PGs lost
//! nothing, the router counted exactly the
//! route requests the PGs sent (no random frame was taken as an input), and the distributor
//! answers.
//!
//! The installation runs with `--insecure-plaintext`, so that the frames reach the decoders
//! behind the TLS handshake; with TLS on, a client without a cluster certificate does not get
//! that far (`tests/security.rs`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tandem::cluster::{Installation, PgCountsCheck};
use tandem_mds::frame::{self, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use tandem_mds::{PublicHello, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRAMES_PER_PORT: u64 = 10_000;
/// Frames sent on one connection before it is closed.
const FRAMES_PER_CONNECTION_MAX: u64 = 8;
/// Connections open at once.
const CONNECTIONS_AT_ONCE: usize = 16;
const START_MS: u64 = 30_000;
const WAIT_MS: u64 = 30_000;

/// A frame around `payload` with its length and checksum as the codec writes them.
fn framed(payload: &[u8], checksum_good: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let checksum = xxhash_rust::xxh3::xxh3_64(payload);
    let checksum = if checksum_good { checksum } else { !checksum };
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn random_bytes(rng: &mut ChaCha8Rng, len_max: usize) -> Vec<u8> {
    let len = rng.random_range(0..len_max);
    (0..len).map(|_| rng.random()).collect()
}

/// One random frame (or what poses as one).
fn random_frame(rng: &mut ChaCha8Rng) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => random_bytes(rng, 200),
        1 => framed(&random_bytes(rng, 300), true),
        2 => framed(&random_bytes(rng, 300), false),
        _ => {
            let len = rng.random_range(FRAME_PAYLOAD_BYTES_MAX as u32 + 1..=u32::MAX);
            let mut out = len.to_le_bytes().to_vec();
            out.extend_from_slice(&random_bytes(rng, 64));
            out
        }
    }
}

/// A valid first message for the public listener, so that what follows reaches the decoder of
/// the link it opens: a PG the topology does not have, or rttest.
fn public_hello(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let hello = if rng.random_bool(0.5) {
        PublicHello::Pg {
            pg: tandem_model::ids::PgId(60_000 + rng.random_range(0..1_000)),
            incarnation: rng.random(),
        }
    } else {
        PublicHello::RtTest {
            command: String::from_utf8_lossy(&random_bytes(rng, 40)).into_owned(),
        }
    };
    let mut out = Vec::new();
    frame::encode(&hello, &mut out).unwrap();
    out
}

/// Sends `FRAMES_PER_PORT` random frames to `addr`, a few per connection, reading whatever
/// comes back. Returns the connections made.
async fn flood(addr: SocketAddr, seed: u64, hello_first: bool) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS_AT_ONCE {
        let (sent, connections) = (sent.clone(), connections.clone());
        tasks.spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 1_000 + worker as u64);
            while sent.load(Ordering::Relaxed) < FRAMES_PER_PORT {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::Relaxed);
                let mut bytes = Vec::new();
                if hello_first && rng.random_bool(0.5) {
                    bytes.extend(public_hello(&mut rng));
                }
                let frames = rng.random_range(1..=FRAMES_PER_CONNECTION_MAX);
                for _ in 0..frames {
                    bytes.extend(random_frame(&mut rng));
                }
                sent.fetch_add(frames, Ordering::Relaxed);
                // The far end may close at the first bad frame; what it did not read is lost.
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
        });
    }
    tasks.join_all().await;
    connections.load(Ordering::Relaxed)
}

/// The router's count of route requests, from rttest `summary`.
fn route_requests(install: &Installation, side: Side) -> u64 {
    let summary = install.rttest(side, "summary").expect("rttest summary");
    let after = summary
        .split("route requests")
        .nth(1)
        .unwrap_or_else(|| panic!("no route requests in {summary:?}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn random_frames_to_every_port_change_nothing() {
    tandem::certs::set_insecure_plaintext(true);
    let mut install = Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "random-frames",
        None,
        |_| {},
    );
    install.start_paired_under_load(10.0, START_MS);
    install.start_logger(Side::A);
    install.start_logger(Side::B);
    install.start_distributor("aw1");
    install.wait_aw("aw1", "initialized", WAIT_MS, |s| s.updateaw == "ok");
    let topology = install.topology.clone();
    let ports = [
        ("side A public", topology.side_a.public, true),
        ("side B public", topology.side_b.public, true),
        ("side B private", topology.side_b.private, false),
        ("side B transfer", topology.side_b.transfer, false),
        ("side A metrics", topology.side_a.metrics, false),
        ("side A logger peer", topology.side_a.logger_peer, false),
        ("side B logger peer", topology.side_b.logger_peer, false),
        (
            "aw1 HTTP",
            topology.distributor("aw1").unwrap().public,
            false,
        ),
    ];
    let links_down =
        |install: &Installation| install.events(Side::A).matches("private link down").count();
    let links_down_before = links_down(&install);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (seed, (what, addr, hello_first)) in ports.into_iter().enumerate() {
        let connections = rt.block_on(flood(addr, seed as u64, hello_first));
        assert!(
            connections >= FRAMES_PER_PORT / FRAMES_PER_CONNECTION_MAX,
            "{what}: only {connections} connections made"
        );
        // Every process answers after each port's flood.
        assert!(install.status(Side::A).is_some(), "side A after {what}");
        assert!(install.status(Side::B).is_some(), "side B after {what}");
        assert!(install.aw_status("aw1").is_some(), "aw1 after {what}");
    }

    // A connection to the private listener that does not begin with a Hello never displaced
    // the sides' own link.
    assert_eq!(
        links_down(&install),
        links_down_before,
        "the private link went down during the flood:\n{}",
        install.events(Side::A)
    );
    let a = install.wait_state(Side::A, "Paired Enabled", WAIT_MS);
    install.wait_state(Side::B, "Paired Disabled", WAIT_MS);
    install.wait_equal_digests(a.delivered(), WAIT_MS);
    let counts = install.stop_pgs(&["pg1", "pg2"]);
    let sent: u64 = counts.iter().map(|c| c.route_requests_sent).sum();
    for c in &counts {
        c.assert_nothing_lost();
    }
    for side in [Side::A, Side::B] {
        assert_eq!(
            route_requests(&install, side),
            sent,
            "side {side}: the router counted a route request no PG sent"
        );
    }
    let status = install.aw_status("aw1").expect("aw1 serves");
    assert_eq!(status.updateaw, "ok");
}
