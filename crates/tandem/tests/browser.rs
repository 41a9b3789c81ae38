//! The web client in a real browser: `tandem demo` runs the whole system, headless Chromium
//! opens the dashboard, the test waits for live values to change, checks the skill group table
//! against the REST API at the same frame, looks at the system page and the wallboard, and saves
//! screenshots under `target/tmp/screenshots`. A second test kills the distributor a page was
//! served by and checks that the page carries on from the other distributor of its site.
//!
//! Chromium is driven over the DevTools protocol on its WebSocket. Without Chromium the test
//! says so and passes, unless `TANDEM_TEST_CHROMIUM_REQUIRED` is set (as CI sets it).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem::cluster::{add_distributor, Installation};
use tandem_mds::tls::{Security, TlsContext};
use tandem_model::topology::SideName;
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM_PATHS: [&str; 3] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];
const DEMO_START_MS: u64 = 60_000;
const BROWSER_START_MS: u64 = 30_000;
const PAGE_WAIT_MS: u64 = 60_000;
const DEVTOOLS_ANSWER_MS: u64 = 10_000;

fn chromium() -> Option<&'static str> {
    CHROMIUM_PATHS.into_iter().find(|p| Path::new(p).exists())
}

/// A child process stopped when the test ends, with `signal` first so it can stop its own.
struct Stopped {
    child: Child,
    signal: &'static str,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(format!("-{}", self.signal))
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page of Chromium over the DevTools protocol.
struct Page {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("sending to Chromium");
        let answer = async {
            while let Some(message) = self.socket.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if value["id"] == id {
                    return value;
                }
            }
            panic!("Chromium closed the DevTools connection");
        };
        let value = tokio::time::timeout(Duration::from_millis(DEVTOOLS_ANSWER_MS), answer)
            .await
            .unwrap_or_else(|_| {
                panic!("Chromium did not answer {method} within {DEVTOOLS_ANSWER_MS} ms")
            });
        assert!(value.get("error").is_none(), "{method}: {value}");
        value["result"].clone()
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its JSON value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_millis(PAGE_WAIT_MS);
        while self.eval(expression).await != json!(true) {
            if Instant::now() >= deadline {
                let shown = self
                    .eval("location.href + '\\n' + document.body.innerText.slice(0, 2000)")
                    .await;
                panic!("the page: {what} within {PAGE_WAIT_MS} ms; it shows {shown}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "a real screenshot"
        );
        std::fs::write(path, &png).unwrap();
        println!("screenshot: {}", path.display());
    }
}

/// Starts Chromium headless and opens a DevTools connection to its first page.
async fn open_browser(binary: &str, profile: &Path) -> (Stopped, Page) {
    let child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1600,1000",
            // The installation's CA is its own: the browser is not told to trust it.
            "--ignore-certificate-errors",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting Chromium");
    let browser = Stopped {
        child,
        signal: "TERM",
    };
    // Chromium writes the port it chose to DevToolsActivePort.
    let deadline = Instant::now() + Duration::from_millis(BROWSER_START_MS);
    let port: u16 = loop {
        if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort")) {
            if let Some(Ok(port)) = text.lines().next().map(str::parse) {
                break port;
            }
        }
        assert!(Instant::now() < deadline, "Chromium gave no DevTools port");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let devtools = SocketAddr::from(([127, 0, 0, 1], port));
    let page_url = loop {
        let plain = Security::InsecurePlaintext;
        if let Ok(body) =
            tandem_distributor::http::get(devtools, "/json/list", 2_000, &plain, None).await
        {
            let targets: Value = serde_json::from_str(&body).expect("DevTools targets");
            let page = targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page");
            if let Some(url) = page.and_then(|p| p["webSocketDebuggerUrl"].as_str()) {
                break url.to_string();
            }
        }
        assert!(Instant::now() < deadline, "Chromium opened no page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (socket, _) = tokio_tungstenite::connect_async(page_url.as_str())
        .await
        .expect("DevTools WebSocket");
    let mut page = Page { socket, next_id: 0 };
    page.call("Page.enable", json!({})).await;
    page.call("Runtime.enable", json!({})).await;
    (browser, page)
}

/// The skill group table as the page shows it: its frame and, per row, the cells by column.
const READ_TABLE: &str = r#"(() => {
  const grid = document.getElementById("grid");
  if (!grid || grid.dataset.table !== "skill_groups") return null;
  const cols = [...grid.tHead.querySelectorAll("th")].map(th => th.dataset.col);
  const rows = {};
  for (const tr of grid.tBodies[0].rows) {
    const cells = {};
    [...tr.cells].forEach((td, i) => cells[cols[i]] = td.textContent);
    rows[tr.dataset.key] = cells;
  }
  return { frame: Number(document.body.dataset.frame || 0), rows };
})()"#;

/// The browser tests run one at a time: each runs a whole system and a browser.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Chromium's path, or None (the test is skipped) when it is not installed and not required.
fn chromium_or_skip() -> Option<&'static str> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("TANDEM_TEST_CHROMIUM_REQUIRED").is_none(),
            "TANDEM_TEST_CHROMIUM_REQUIRED is set but Chromium is not installed"
        );
        eprintln!("Chromium is not installed: the browser test is skipped");
    }
    found
}

/// Waits until the page shows skill group rows named from the configuration.
const ROWS_WITH_NAMES: &str = r#"(() => { const g = document.getElementById("grid");
     return !!g && g.tBodies[0].rows.length > 0
       && !/^\d+$/.test(g.tBodies[0].rows[0].cells[0].textContent); })()"#;

#[test]
fn the_web_client_fails_over_to_another_distributor_of_its_site() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut install = Installation::new(
        Path::new(env!("CARGO_BIN_EXE_tandem")),
        &tmp,
        "browser-failover",
        None,
        |topology| {
            add_distributor(topology, "aw2", SideName::B, None);
        },
    );
    install.start_paired_under_load(10.0, DEMO_START_MS);
    install.start_distributor("aw1");
    install.start_distributor("aw2");
    for name in ["aw1", "aw2"] {
        install.wait_aw(name, "initialized", DEMO_START_MS, |s| {
            s.updateaw == "ok" && s.frames >= 5
        });
    }
    let aw1 = install.topology.distributor("aw1").unwrap().public;
    let created = install.tandem(&["token", "create", "--role", "viewer", "--name", "browser"]);
    assert!(created.status.success(), "token create: {created:?}");
    let token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    let profile = install.dir.join("chromium-profile");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_browser, mut page) = runtime.block_on(open_browser(binary, &profile));
    runtime.block_on(async {
        page.call(
            "Page.navigate",
            json!({ "url": format!("https://{aw1}/#skill_groups&token={token}") }),
        )
        .await;
        page.wait_for("aw1's rows", ROWS_WITH_NAMES).await;
        page.wait_for(
            "the page says it is on aw1",
            r#"document.getElementById("conn-text").textContent.startsWith("aw1 ·")"#,
        )
        .await;
    });
    install.kill("aw1");
    runtime.block_on(async {
        page.wait_for(
            "the page on aw2, its frames advancing",
            r#"(() => { const t = document.getElementById("conn-text").textContent;
                 if (!t.startsWith("aw2 ·")) return false;
                 const f = Number(document.body.dataset.frame);
                 if (!window.__aw2Frame) { window.__aw2Frame = f; return false; }
                 return f > window.__aw2Frame + 5; })()"#,
        )
        .await;
        page.wait_for("aw2's rows", ROWS_WITH_NAMES).await;
        // The system page reads aw2's API from aw1's page: across origins.
        page.eval(r#"location.hash = "system"; true"#).await;
        page.wait_for(
            "aw2's system page",
            r#"document.querySelectorAll("[data-side]").length === 2
                 && !!document.querySelector('[data-distributor="aw2"]')"#,
        )
        .await;
        let shots = tmp.join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        page.screenshot(&shots.join("failover-system.png")).await;
    });
}

#[test]
fn the_dashboard_shows_live_values_equal_to_the_rest_api() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(format!("browser-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let screenshots = tmp.join("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();

    let mut demo = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "demo",
            "--cps",
            "8",
            "--talk-s",
            "5",
            "--duration",
            "600",
            "--dir",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tandem demo");
    let stdout = demo.stdout.take().unwrap();
    let _demo = Stopped {
        child: demo,
        signal: "INT",
    };
    // The demo prints the dashboard's address before its first report.
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("dashboard: ") {
                let _ = found_tx.send(url.trim().to_string());
            }
        }
    });
    let dashboard = found_rx
        .recv_timeout(Duration::from_millis(DEMO_START_MS))
        .expect("the demo printed its dashboard address");
    // https://ADDRESS/#token=TOKEN
    let (address, token) = dashboard
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once("/#token="))
        .expect("an https dashboard address with its token");
    let http: SocketAddr = address.parse().expect("the dashboard's address");
    let token = token.to_string();
    let ca = tandem_mds::tls::ca_cert_path(&dir.join("certs"));
    let security = Security::Tls(std::sync::Arc::new(
        TlsContext::load_client_only(&ca).expect("the demo's CA"),
    ));
    let get = |path: &'static str| {
        let (security, token) = (security.clone(), token.clone());
        async move {
            tandem_distributor::http::get(http, path, 5_000, &security, Some(&token))
                .await
                .unwrap()
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_browser, mut page) = open_browser(binary, &dir.join("chromium-profile")).await;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        page.call("Page.navigate", json!({ "url": dashboard })).await;

        // The table fills from the WebSocket, with names from the configuration.
        page.wait_for("skill group rows with names", ROWS_WITH_NAMES)
            .await;
        let first = page.eval(READ_TABLE).await;
        let deadline = Instant::now() + Duration::from_millis(PAGE_WAIT_MS);
        loop {
            let now = page.eval(READ_TABLE).await;
            if now["rows"] != first["rows"] && now["frame"].as_u64() > first["frame"].as_u64() {
                break;
            }
            assert!(Instant::now() < deadline, "no live value changed within {PAGE_WAIT_MS} ms");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The page against REST, at one frame: read both until they are of the same frame.
        let names: Value = serde_json::from_str(
            &get("/api/config").await,
        )
        .unwrap();
        let name_of = |id: u64| {
            names["contact_center"]["skill_group"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["id"] == id)
                .map(|g| g["name"].as_str().unwrap().to_string())
                .unwrap()
        };
        let mut compared = false;
        for _ in 0..200 {
            let shown = page.eval(READ_TABLE).await;
            let rest: Value = serde_json::from_str(&get("/api/rt/skill_groups").await).unwrap();
            let after = page.eval(READ_TABLE).await;
            let frame = rest["frame"]["number"].as_u64().unwrap();
            if shown["frame"].as_u64() != Some(frame) || after["frame"].as_u64() != Some(frame) {
                continue;
            }
            let rows = rest["rows"].as_array().unwrap();
            assert_eq!(
                rows.len(),
                shown["rows"].as_object().unwrap().len(),
                "the page shows every skill group"
            );
            for row in rows {
                let id = row["skill_group_id"].as_u64().unwrap();
                let cells = &shown["rows"][id.to_string()];
                let number = |v: &Value| v.as_u64().unwrap().to_string();
                let queued = row["router_calls_q_now"].as_u64().unwrap()
                    + row["calls_q_now"].as_u64().unwrap();
                assert_eq!(cells["Skill group"], json!(name_of(id)), "group {id}");
                assert_eq!(cells["Logged on"], json!(number(&row["logged_on"])), "group {id}");
                assert_eq!(cells["Avail"], json!(number(&row["avail"])), "group {id}");
                assert_eq!(cells["Not ready"], json!(number(&row["not_ready"])), "group {id}");
                assert_eq!(cells["Queued"], json!(queued.to_string()), "group {id}");
                assert_eq!(
                    cells["Offered"],
                    json!(number(&row["half"]["counts"]["calls_offered"])),
                    "group {id}"
                );
            }
            compared = true;
            break;
        }
        assert!(compared, "the page and REST never showed the same frame");
        page.screenshot(&screenshots.join("skill-groups.png")).await;

        // The system page: both sides paired, the distributor's feed with its lag.
        page.eval(r#"location.hash = "system"; true"#).await;
        page.wait_for(
            "both sides paired on the system page",
            r#"(() => { const cards = [...document.querySelectorAll("[data-side]")];
                 return cards.length === 2 && cards.every(c => /Paired (En|Dis)abled/.test(c.textContent))
                   && !!document.querySelector('[data-distributor="aw1"]'); })()"#,
        )
        .await;
        let distributor_row = page
            .eval(r#"document.querySelector('[data-distributor="aw1"]').textContent"#)
            .await;
        assert!(
            distributor_row.as_str().unwrap().contains(" ms"),
            "the system page shows the feed lag: {distributor_row}"
        );
        page.screenshot(&screenshots.join("system.png")).await;

        // The wallboard: a card per skill group.
        page.eval(r#"location.hash = "wallboard"; true"#).await;
        page.wait_for(
            "a wallboard card per skill group",
            r#"document.querySelectorAll(".cards .card").length > 0"#,
        )
        .await;
        page.screenshot(&screenshots.join("wallboard.png")).await;
    });
}
