//! The security of a running installation (SECURITY.md): every listener refuses plaintext
//! clients and certificates of another CA; a PG's certificate cannot join the private link; the
//! HTTP API needs a token, a viewer token cannot change the configuration and an admin token
//! can (the event log records who did); bad tokens from one address are refused with 429 after
//! `AUTH_FAILURES_PER_MINUTE_MAX`. Through all of it the sides stay paired and keep serving.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem::cluster::Installation;
use tandem_distributor::auth::{self, TokenRole};
use tandem_distributor::http;
use tandem_distributor::rtclient::HTTP_HEADER_READ_TIMEOUT_MS;
use tandem_mds::tls::{self, Role, Security, TlsContext};
use tandem_mds::transport::{self, FrameReader};
use tandem_mds::{PublicHello, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const START_MS: u64 = 30_000;
const PUBLIC_CONNECTIONS_MAX: usize = 8;
const HTTP_BODY_BYTES_MAX: usize = 64 << 10;
const HTTP_CONNECTIONS_MAX: usize = 4;
const WAIT_MS: u64 = 20_000;

/// A client that trusts the installation's CA (`ca_pem`), so that it goes through with the
/// handshake, but presents a certificate of `role` from a CA of its own.
fn stranger(ca_pem: &[u8], role: Role, name: &str) -> Security {
    let own = tls::generate_ca().unwrap();
    let issued = tls::issue_cert(&own, role, name, &[]).unwrap();
    let context =
        TlsContext::from_pem(ca_pem, issued.cert.as_bytes(), issued.key.as_bytes()).unwrap();
    Security::Tls(Arc::new(context))
}

/// Whether a client with `security` gets any answer on `addr`: it connects (in TLS, completes
/// its side of the handshake), sends `bytes` and reads. A refused client reads nothing.
async fn answered(addr: SocketAddr, security: &Security, server_role: Role, bytes: &[u8]) -> bool {
    let Ok(mut stream) = transport::connect(addr, 2_000, security, server_role).await else {
        return false;
    };
    if stream.write_all(bytes).await.is_err() {
        return false;
    }
    let mut buffer = [0u8; 64];
    // A TLS listener answers a plaintext client with a TLS alert record (content type 21)
    // and closes: that is a refusal, not an answer.
    const TLS_ALERT: u8 = 21;
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await,
        Ok(Ok(n)) if n > 0 && buffer[0] != TLS_ALERT
    )
}

/// One HTTP request to `addr` as `security` with `token`: its status line and body.
async fn ask(
    addr: SocketAddr,
    security: &Security,
    token: Option<&String>,
    method: &str,
    path: &str,
    body: Option<&String>,
) -> (String, String) {
    let (token, body) = (token.map(String::as_str), body.map(String::as_str));
    http::request(addr, method, path, body, 10_000, security, token)
        .await
        .unwrap()
}

fn rttest_hello() -> Vec<u8> {
    let mut bytes = Vec::new();
    tandem_mds::frame::encode(
        &PublicHello::RtTest {
            command: "status".into(),
        },
        &mut bytes,
    )
    .unwrap();
    bytes
}

#[test]
fn only_the_clusters_certificates_and_valid_tokens_get_in() {
    let mut install = Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "security",
        None,
        |topology| {
            // Small enough to reach in a test: the sides' own clients (two PGs, a logger and a
            // distributor) take 4 of the 8.
            topology.limits.public_connections_max = PUBLIC_CONNECTIONS_MAX;
            topology.limits.http_body_bytes_max = HTTP_BODY_BYTES_MAX;
            topology.limits.http_connections_max = HTTP_CONNECTIONS_MAX;
        },
    );
    install.start_paired_under_load(5.0, START_MS);
    install.start_distributor("aw1");
    install.wait_aw("aw1", "initialized", WAIT_MS, |s| s.updateaw == "ok");
    let topology = install.topology.clone();
    let aw1 = topology.distributor("aw1").unwrap().public;
    let operator = install.security.clone();
    let pg = tandem::certs::security(&topology, "pg1").unwrap();
    let ca = tls::ca_cert_path(&topology.certs_dir());
    let ca_pem = std::fs::read(&ca).unwrap();
    let anonymous = Security::Tls(Arc::new(TlsContext::load_client_only(&ca).unwrap()));
    let (_, viewer) = auth::create(&topology.tokens_file(), TokenRole::Viewer, "vera").unwrap();
    let (_, admin) = auth::create(&topology.tokens_file(), TokenRole::Admin, "alice").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    rt.block_on(async {
        let hello = rttest_hello();
        // The operator's certificate is answered on the public listener: the probe works.
        assert!(answered(topology.side_a.public, &operator, Role::Central, &hello).await);
        let http_get = b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n".as_slice();
        let listeners = [
            (
                "side A public",
                topology.side_a.public,
                Role::Central,
                hello.as_slice(),
            ),
            (
                "side B private",
                topology.side_b.private,
                Role::Central,
                hello.as_slice(),
            ),
            (
                "side B transfer",
                topology.side_b.transfer,
                Role::Central,
                hello.as_slice(),
            ),
            (
                "side A metrics",
                topology.side_a.metrics,
                Role::Central,
                http_get,
            ),
            (
                "side A logger peer",
                topology.side_a.logger_peer,
                Role::Central,
                hello.as_slice(),
            ),
            ("aw1 HTTP", aw1, Role::Aw, http_get),
        ];
        for (what, addr, role, bytes) in listeners {
            assert!(
                !answered(addr, &Security::InsecurePlaintext, role, bytes).await,
                "{what} answered a plaintext client"
            );
            assert!(
                !answered(
                    addr,
                    &stranger(&ca_pem, Role::Central, "side-a"),
                    role,
                    bytes
                )
                .await,
                "{what} answered a certificate of another CA"
            );
        }

        // A PG's certificate is the cluster's, but the private link takes only a side's.
        let mut before = 0;
        if let Ok(stream) =
            transport::connect(topology.side_b.private, 2_000, &pg, Role::Central).await
        {
            let (read, mut write) = stream.into_split();
            let _ = transport::write_message(&mut write, &1u64).await;
            let mut reader = FrameReader::<_, u64>::new(read);
            before += 1;
            assert!(
                !matches!(reader.next().await, Ok(Some(_))),
                "the private link answered a PG"
            );
        }
        assert_eq!(
            before, 1,
            "the handshake of a cluster certificate completes"
        );
        // Nor may a PG ask for rttest or a feed on the public listener.
        assert!(!answered(topology.side_a.public, &pg, Role::Central, &hello).await);

        // HTTP: no token, a bad token, a viewer, an admin.
        let (status, _) = ask(aw1, &anonymous, None, "GET", "/api/status", None).await;
        assert!(status.contains(" 401 "), "no token: {status}");
        let (status, _) = ask(aw1, &anonymous, Some(&viewer), "GET", "/api/status", None).await;
        assert!(status.contains(" 200 "), "a viewer reads: {status}");
        // The web client's page itself is served without a token (it holds no data).
        let (status, body) = ask(aw1, &anonymous, None, "GET", "/", None).await;
        assert!(
            status.contains(" 200 ") && body.contains("<html"),
            "{status}"
        );

        // A real change: rename the first agent.
        let config: serde_json::Value = serde_json::from_str(
            &http::get(aw1, "/api/config", 5_000, &anonymous, Some(&viewer))
                .await
                .unwrap(),
        )
        .unwrap();
        let mut agent = config["contact_center"]["agent"][0].clone();
        agent["name"] = "Renamed by alice".into();
        let mut object = agent.as_object().unwrap().clone();
        object.insert("table".into(), "agent".into());
        let change =
            serde_json::json!({ "ops": [{ "op": "upsert", "object": object }] }).to_string();
        let (status, body) = ask(
            aw1,
            &anonymous,
            Some(&viewer),
            "POST",
            "/api/config",
            Some(&change),
        )
        .await;
        assert!(
            status.contains(" 403 "),
            "a viewer changes nothing: {status} {body}"
        );
        // A distributor's or an operator's certificate reads, and changes nothing either.
        let (status, _) = ask(aw1, &operator, None, "POST", "/api/config", Some(&change)).await;
        assert!(
            status.contains(" 403 "),
            "a certificate changes nothing: {status}"
        );
        let (status, body) = ask(
            aw1,
            &anonymous,
            Some(&admin),
            "POST",
            "/api/config",
            Some(&change),
        )
        .await;
        assert!(
            status.contains(" 200 "),
            "an admin changes: {status} {body}"
        );
        let events =
            tandem_central::rttest::query(topology.side_a.public, "events", 3_000, &operator)
                .await
                .unwrap();
        assert!(
            events.contains("by admin token \"alice\"")
                && events.contains("via certificate aw \"aw1\""),
            "the event log records who changed the configuration: {events}"
        );

        // A body over limits.http_body_bytes_max is refused whole.
        let huge = format!(
            "{{\"ops\": [], \"author\": \"{}\"}}",
            "x".repeat(HTTP_BODY_BYTES_MAX)
        );
        let (status, _) = ask(
            aw1,
            &anonymous,
            Some(&admin),
            "POST",
            "/api/config",
            Some(&huge),
        )
        .await;
        assert!(status.contains(" 413 "), "an oversized body: {status}");

        // The public listener holds limits.public_connections_max connections: idle clients
        // fill the slots the sides' own clients leave, and the next one is closed at once.
        let mut idle = Vec::new();
        for _ in 0..PUBLIC_CONNECTIONS_MAX {
            match transport::connect(topology.side_a.public, 2_000, &operator, Role::Central).await
            {
                Ok(stream) => idle.push(stream),
                Err(_) => break,
            }
        }
        assert!(
            !answered(topology.side_a.public, &operator, Role::Central, &hello).await,
            "a connection past limits.public_connections_max was served"
        );
        drop(idle);
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        while !answered(topology.side_a.public, &operator, Role::Central, &hello).await {
            assert!(
                Instant::now() < deadline,
                "the slots came back when the clients left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The distributor holds limits.http_connections_max connections; the next is closed at
        // once. Clients that never send a request head are closed after
        // HTTP_HEADER_READ_TIMEOUT_MS (slowloris), and their slots come back.
        let mut idle = Vec::new();
        for _ in 0..HTTP_CONNECTIONS_MAX {
            idle.push(
                transport::connect(aw1, 2_000, &anonymous, Role::Aw)
                    .await
                    .unwrap(),
            );
        }
        let (status, _) = http::request(
            aw1,
            "GET",
            "/api/status",
            None,
            5_000,
            &anonymous,
            Some(&viewer),
        )
        .await
        .unwrap_or_else(|e| (format!("refused: {e}"), String::new()));
        assert!(
            !status.contains(" 200 "),
            "a connection past the limit was served: {status}"
        );
        let started = Instant::now();
        for mut stream in idle {
            let mut buffer = [0u8; 256];
            let closed = tokio::time::timeout(
                Duration::from_millis(HTTP_HEADER_READ_TIMEOUT_MS + WAIT_MS),
                async {
                    loop {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                },
            )
            .await;
            assert!(
                closed.is_ok(),
                "a client that sent no request head was kept"
            );
        }
        assert!(started.elapsed() >= Duration::from_millis(HTTP_HEADER_READ_TIMEOUT_MS / 2));
        let (status, _) = ask(aw1, &anonymous, Some(&viewer), "GET", "/api/status", None).await;
        assert!(status.contains(" 200 "), "the slots came back: {status}");

        // Bad tokens: each is 401 until the address used up its minute, then 429 even with
        // a good token.
        let mut bad = viewer.clone();
        bad.pop();
        bad.push(if viewer.ends_with('0') { '1' } else { '0' });
        for n in 0..topology.limits.auth_failures_per_minute_max {
            let (status, _) = ask(aw1, &anonymous, Some(&bad), "GET", "/api/status", None).await;
            assert!(status.contains(" 401 "), "bad token {n}: {status}");
        }
        let (status, body) = ask(aw1, &anonymous, Some(&viewer), "GET", "/api/status", None).await;
        assert!(status.contains(" 429 "), "rate-limited: {status} {body}");
    });

    // Through all of it both sides stayed paired and serve the PGs.
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    for (side, state) in [(Side::A, "Paired Enabled"), (Side::B, "Paired Disabled")] {
        let status = install.wait_state(
            side,
            state,
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        );
        assert_eq!(status.sync_state(), state);
    }
    install.wait_pgs_reachable(Side::A, 2, WAIT_MS);
}
