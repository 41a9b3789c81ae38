//! A local installation run as real processes on loopback, for the multi-process tests and the
//! duplex benchmarks: `tandem init` writes the topology, `tandem central` runs each side and
//! `tandem pg` each PG. Callers wait on what rttest reports, each wait bounded, and a fault proxy
//! can stand between two processes to cut a link while both stay up (or slow it down).
//!
//! This is a harness: an expectation that does not hold panics with a report of both sides'
//! status and events and the tail of every process log.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_mds::tls::{Role, Security};
use tandem_mds::Side;
use tandem_model::topology::{PgEntry, Topology};

/// How often a wait asks again.
const POLL_MS: u64 = 10;

/// What a PG printed when it stopped.
pub type PgCounts = tandem_pg::gateway::GatewayCounts;

/// Checks on a stopped PG's counts.
pub trait PgCountsCheck {
    /// Every input acknowledged, every route request answered exactly once and none timed out.
    fn assert_nothing_lost(&self);
}

impl PgCountsCheck for PgCounts {
    fn assert_nothing_lost(&self) {
        assert!(
            self.route_requests_sent > 0,
            "{self:?}: no load was offered"
        );
        assert_eq!(
            self.inputs_acknowledged, self.inputs_sent,
            "{self:?}: inputs unacknowledged"
        );
        assert_eq!(
            self.route_requests_answered, self.route_requests_sent,
            "{self:?}: route requests unanswered"
        );
        assert_eq!(
            self.route_requests_answered_more_than_once, 0,
            "{self:?}: answered twice"
        );
        assert_eq!(self.route_requests_timed_out, 0, "{self:?}: timed out");
    }
}

/// One side's `rttest status`, by field.
#[derive(Debug, Clone)]
pub struct Status {
    pub text: String,
}

impl Status {
    pub fn field(&self, name: &str) -> &str {
        let prefix = format!("{name}:");
        self.text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(str::trim)
            .unwrap_or("")
    }

    pub fn sync_state(&self) -> &str {
        self.field("Synchronizer")
    }

    pub fn is_enabled(&self) -> bool {
        self.sync_state().ends_with("Enabled")
    }

    /// The last DigestCheck's digest and sequence number.
    pub fn digest(&self) -> Option<(u64, &str)> {
        let words: Vec<&str> = self.field("State digest").split_whitespace().collect();
        match words.as_slice() {
            [digest, "at", "sequence", seq] => Some((seq.parse().ok()?, *digest)),
            _ => None,
        }
    }

    /// DigestChecks that found the sides equal, and that found them different.
    pub fn digest_checks(&self) -> (u64, u64) {
        let words: Vec<u64> = self
            .field("Digest checks")
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').parse().ok())
            .collect();
        (
            words.first().copied().unwrap_or(0),
            words.get(1).copied().unwrap_or(0),
        )
    }

    /// "held N delivered M".
    pub fn delivered(&self) -> u64 {
        let words: Vec<&str> = self.field("Sequence").split_whitespace().collect();
        words.get(3).and_then(|w| w.parse().ok()).unwrap_or(0)
    }

    pub fn epoch(&self) -> u64 {
        self.field("Epoch")
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0)
    }

    pub fn router_sync(&self) -> &str {
        self.field("Router Sync")
    }

    pub fn transfer_under_way(&self) -> bool {
        self.field("Peer").contains("state transfer under way")
    }

    /// A transfer whose session began: the state's size is known and bytes are arriving.
    pub fn transfer_session_began(&self) -> bool {
        self.field("Peer").contains("state transfer under way:")
    }
}

pub struct Installation {
    /// The `tandem` binary the processes run.
    bin: PathBuf,
    pub dir: PathBuf,
    /// The topology every process reads, unless a process was given its own.
    pub config: PathBuf,
    pub topology: Topology,
    processes: BTreeMap<String, Child>,
    runtime: tokio::runtime::Runtime,
    /// The operator's certificate (or plaintext, when this process runs with
    /// `--insecure-plaintext`, as every process of the installation then does).
    pub security: Security,
}

static INSTALLATIONS: AtomicU64 = AtomicU64::new(0);

/// Adds a distributor of the site "main" to `topology`, on a free loopback port that no
/// listener of the topology has, with its AW database on SQLite unless `aw_db_url` names one.
pub fn add_distributor(
    topology: &mut Topology,
    name: &str,
    preferred_side: tandem_model::topology::SideName,
    aw_db_url: Option<String>,
) {
    let used: Vec<SocketAddr> = [&topology.side_a, &topology.side_b]
        .iter()
        .flat_map(|s| [s.private, s.transfer, s.public, s.metrics, s.logger_peer])
        .chain(topology.distributors.iter().map(|d| d.public))
        .collect();
    // Listeners held until a port outside the topology comes up, so none repeats.
    let mut held = Vec::new();
    let public = loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        held.push(listener);
        if !used.contains(&addr) {
            break addr;
        }
    };
    topology
        .distributors
        .push(tandem_model::topology::DistributorEntry {
            name: name.into(),
            public,
            data_dir: name.into(),
            preferred_side,
            aw_db_url,
            site: "main".into(),
        });
}

/// `--insecure-plaintext` for the processes an installation starts, when this process runs
/// with it.
fn plaintext_flag() -> Option<&'static str> {
    crate::certs::insecure_plaintext().then_some("--insecure-plaintext")
}

impl Installation {
    /// `tandem init` (with `bin`) in a new directory under `parent`, with the topology then
    /// changed by `edit`. DigestChecks run every second unless `edit` says otherwise.
    pub fn new(
        bin: &Path,
        parent: &Path,
        name: &str,
        contact_center: Option<&Path>,
        edit: impl FnOnce(&mut Topology),
    ) -> Self {
        let n = INSTALLATIONS.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("duplex-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut init = Command::new(bin);
        init.args(["init", "--dir"]).arg(&dir);
        init.args(plaintext_flag());
        if let Some(cc) = contact_center {
            init.arg("--contact-center").arg(cc);
        }
        let out = init.output().expect("running tandem init");
        assert!(out.status.success(), "tandem init: {out:?}");
        let config = dir.join("tandem.toml");
        let mut topology = Topology::load(&config).expect("the topology tandem init wrote");
        // Digest checks every second, so a test sees one soon.
        topology.mds.digest_check_interval_ms = 1_000;
        let before = topology.clone();
        edit(&mut topology);
        std::fs::write(&config, topology.to_toml_string()).unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        // PGs and distributors the edit added need certificates too.
        crate::certs::issue_missing(&topology).expect("certificates for the topology");
        // A central database the edit moved (to PostgreSQL) is seeded as init seeded the first.
        for (side, name, was, is) in [
            ("a", "A", &before.side_a, &topology.side_a),
            ("b", "B", &before.side_b, &topology.side_b),
        ] {
            if was.central_db_url != is.central_db_url {
                let out = Command::new(bin)
                    .args(plaintext_flag())
                    .args(["logger", "seed", "--side", side, "--config"])
                    .arg(&config)
                    .output()
                    .expect("running tandem logger seed");
                assert!(out.status.success(), "seeding side {name}: {out:?}");
            }
        }
        let security =
            crate::certs::operator_security(&topology).expect("the operator's certificate");
        Installation {
            security,
            bin: bin.to_path_buf(),
            dir,
            config,
            topology,
            processes: BTreeMap::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Writes a variant of the topology for some processes (to put a proxy in their way).
    pub fn variant(&self, name: &str, edit: impl FnOnce(&mut Topology)) -> PathBuf {
        let mut topology = self.topology.clone();
        edit(&mut topology);
        let path = self.dir.join(format!("tandem-{name}.toml"));
        std::fs::write(&path, topology.to_toml_string()).unwrap();
        path
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = |ext: &str| {
            std::fs::File::create(self.dir.join("logs").join(format!("{name}.{ext}"))).unwrap()
        };
        let child = Command::new(&self.bin)
            .args(plaintext_flag())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        if let Some(mut old) = self.processes.insert(name.to_string(), child) {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    pub fn side_name(side: Side) -> &'static str {
        match side {
            Side::A => "a",
            Side::B => "b",
        }
    }

    pub fn start_side(&mut self, side: Side, extra: &[&str]) {
        let config = self.config.clone();
        self.start_side_with(side, &config, extra);
    }

    pub fn start_side_with(&mut self, side: Side, config: &Path, extra: &[&str]) {
        let name = Self::side_name(side);
        let config = config.to_str().unwrap().to_string();
        let mut args = vec!["central", "--config", &config, "--side", name];
        args.extend_from_slice(extra);
        self.spawn(&format!("side-{name}"), &args);
        // A side needs its logger (a cold start takes the configuration from it); one that is
        // still running from before is kept.
        let logger = format!("logger-{name}");
        let running = self
            .processes
            .get_mut(&logger)
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        if !running {
            self.start_logger_with(side, &config);
        }
    }

    /// Starts (or restarts) a distributor of the topology.
    pub fn start_distributor(&mut self, name: &str) {
        let config = self.config.to_str().unwrap().to_string();
        self.spawn(name, &["distributor", "--config", &config, "--name", name]);
    }

    /// Starts `tandem watch` on a table from `distributor`, printing every refresh to
    /// `logs/{name}.out`.
    pub fn start_watch(&mut self, name: &str, distributor: &str, table: &str, refresh_ms: u64) {
        let config = self.config.to_str().unwrap().to_string();
        let refresh = refresh_ms.to_string();
        self.spawn(
            name,
            &[
                "watch",
                "--config",
                &config,
                "--name",
                distributor,
                "--table",
                table,
                "--refresh-ms",
                &refresh,
                "--plain",
            ],
        );
    }

    /// A process's standard output so far.
    pub fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.out")))
            .unwrap_or_default()
    }

    /// A distributor's status from its HTTP API; None while it does not answer.
    pub fn aw_status(&self, name: &str) -> Option<tandem_distributor::run::DistributorStatus> {
        let entry = self.topology.distributor(name).ok()?;
        self.runtime
            .block_on(crate::aw::status(&self.security, entry.public))
            .ok()
    }

    /// Waits until a distributor's status satisfies `ready`.
    pub fn wait_aw(
        &self,
        name: &str,
        what: &str,
        timeout_ms: u64,
        ready: impl Fn(&tandem_distributor::run::DistributorStatus) -> bool,
    ) -> tandem_distributor::run::DistributorStatus {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut last = None;
        loop {
            if let Some(status) = self.aw_status(name) {
                if ready(&status) {
                    return status;
                }
                last = Some(status);
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "distributor {name}: {what} within {timeout_ms} ms; last status {last:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts (or restarts) a side's logger.
    pub fn start_logger(&mut self, side: Side) {
        let config = self.config.to_str().unwrap().to_string();
        self.start_logger_with(side, &config);
    }

    fn start_logger_with(&mut self, side: Side, config: &str) {
        let name = Self::side_name(side);
        let args = ["logger", "run", "--config", config, "--side", name];
        self.spawn(&format!("logger-{name}"), &args);
    }

    pub fn start_pg(&mut self, name: &str, cps: f64) {
        let config = self.config.clone();
        self.start_pg_with(name, &config, cps);
    }

    pub fn start_pg_with(&mut self, name: &str, config: &Path, cps: f64) {
        // Short calls, so that agents free up and calls queue and end under load.
        self.start_pg_load(name, config, cps, 2);
    }

    /// A PG offering `cps` calls per second with a mean talk time of `talk_s` seconds.
    pub fn start_pg_load(&mut self, name: &str, config: &Path, cps: f64, talk_s: u64) {
        self.start_pg_args(name, config, cps, talk_s, &[]);
    }

    /// A PG as `start_pg_load` starts it, with more arguments of `tandem pg`.
    pub fn start_pg_args(
        &mut self,
        name: &str,
        config: &Path,
        cps: f64,
        talk_s: u64,
        extra: &[&str],
    ) {
        let config = config.to_str().unwrap().to_string();
        let cps = cps.to_string();
        let talk_s = talk_s.to_string();
        let mut args = vec![
            "pg", "--config", &config, "--name", name, "--cps", &cps, "--talk-s", &talk_s,
        ];
        args.extend_from_slice(extra);
        self.spawn(name, &args);
    }

    /// The running processes by name, with their process ids.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|(name, child)| (name.clone(), child.id()))
            .collect()
    }

    fn pid(&self, name: &str) -> u32 {
        self.processes
            .get(name)
            .unwrap_or_else(|| panic!("no process {name}"))
            .id()
    }

    fn signal(&self, name: &str, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(name).to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {name}");
    }

    /// Waits up to `timeout_ms` for the process to end by itself; returns its exit code (None
    /// when a signal ended it) and forgets it.
    pub fn wait_exit(&mut self, name: &str, timeout_ms: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let child = self
                .processes
                .get_mut(name)
                .unwrap_or_else(|| panic!("no process {name}"));
            if let Some(status) = child.try_wait().unwrap() {
                self.processes.remove(name);
                return status.code();
            }
            if Instant::now() >= deadline {
                self.fail(&format!("{name} still running after {timeout_ms} ms"));
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// kill -9.
    pub fn kill(&mut self, name: &str) {
        let mut child = self
            .processes
            .remove(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pause(&self, name: &str) {
        self.signal(name, "STOP");
    }

    pub fn resume(&self, name: &str) {
        self.signal(name, "CONT");
    }

    /// SIGTERM to a PG, which drains and prints its counts.
    pub fn stop_pg(&mut self, name: &str) -> PgCounts {
        self.stop_pgs(&[name]).remove(0)
    }

    /// Stops every PG given, all at once, and returns their counts.
    pub fn stop_pgs(&mut self, names: &[&str]) -> Vec<PgCounts> {
        for name in names {
            self.signal(name, "TERM");
        }
        names.iter().map(|name| self.wait_pg(name)).collect()
    }

    fn wait_pg(&mut self, name: &str) -> PgCounts {
        let mut child = self.processes.remove(name).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{name} ended with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not stop");
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let out =
            std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.out"))).unwrap();
        let line = out
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{name} printed nothing"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{name} printed {line:?}: {e}"))
    }

    /// Runs `tandem` with `args` and this installation's `--config` after them.
    pub fn tandem(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(plaintext_flag())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("running tandem {args:?}: {e}"))
    }

    /// A side's logger status (`rttest logger`), field by field.
    pub fn logger_status(&self, side: Side) -> Option<BTreeMap<String, String>> {
        let text = self.rttest(side, "logger")?;
        Some(
            text.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Waits until both sides' loggers have committed every row their side holds for them and
    /// the stream through what each side had delivered when called (a logger recovering rows
    /// from its peer holds none in its side's buffer, yet has not committed them).
    pub fn wait_loggers_caught_up(&self, timeout_ms: u64) {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let number = |s: &BTreeMap<String, String>, k: &str| {
            s.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        let targets: Vec<u64> = [Side::A, Side::B]
            .iter()
            .map(|&side| {
                self.logger_status(side)
                    .map_or(0, |s| number(&s, "delivered_through"))
            })
            .collect();
        loop {
            let caught_up = [Side::A, Side::B]
                .iter()
                .zip(&targets)
                .all(|(&side, &target)| {
                    self.logger_status(side).is_some_and(|s| {
                        // Rows leave the buffer only once the logger committed them.
                        s.get("connected").map(String::as_str) == Some("true")
                            && s.get("held_rows").map(String::as_str) == Some("0")
                            && number(&s, "committed_through") >= target
                    })
                });
            if caught_up {
                return;
            }
            if Instant::now() >= deadline {
                self.fail("the loggers did not catch up");
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    pub fn public(&self, side: Side) -> SocketAddr {
        match side {
            Side::A => self.topology.side_a.public,
            Side::B => self.topology.side_b.public,
        }
    }

    pub fn rttest(&self, side: Side, command: &str) -> Option<String> {
        let addr = self.public(side);
        self.runtime
            .block_on(tandem_central::rttest::query(
                addr,
                command,
                1_000,
                &self.security,
            ))
            .ok()
    }

    pub fn status(&self, side: Side) -> Option<Status> {
        self.rttest(side, "status").map(|text| Status { text })
    }

    /// The side's Prometheus page, read with the operator's certificate.
    pub fn metrics(&self, side: Side) -> String {
        let addr = match side {
            Side::A => self.topology.side_a.metrics,
            Side::B => self.topology.side_b.metrics,
        };
        self.runtime.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream =
                tandem_mds::transport::connect(addr, 5_000, &self.security, Role::Central)
                    .await
                    .expect("the metrics endpoint");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut page = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut page)).await;
            String::from_utf8_lossy(&page).into_owned()
        })
    }

    pub fn events(&self, side: Side) -> String {
        self.rttest(side, "events").unwrap_or_default()
    }

    /// The agents logged on as the side's router sees them, counted by PG name and state, from
    /// the rttest `agents` dump (whose columns are separated by two or more spaces).
    pub fn agent_states(&self, side: Side) -> BTreeMap<String, BTreeMap<String, u64>> {
        let dump = self
            .rttest(side, "agents")
            .unwrap_or_else(|| self.fail("no agents dump"));
        let split = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(String::from)
                .collect()
        };
        let mut lines = dump.lines();
        let header = split(lines.next().unwrap_or_default());
        let column = |name: &str| {
            header
                .iter()
                .position(|title| title == name)
                .unwrap_or_else(|| panic!("no column {name} in\n{dump}"))
        };
        let (pg, state) = (column("pg"), column("state"));
        let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for cells in lines.map(split).filter(|cells| cells.len() == header.len()) {
            *counts
                .entry(cells[pg].to_lowercase())
                .or_default()
                .entry(cells[state].clone())
                .or_default() += 1;
        }
        counts
    }

    /// Waits up to `timeout_ms` for `check` to hold on the side's status; panics with what the
    /// sides last said and their logs otherwise.
    pub fn wait_status(
        &self,
        side: Side,
        timeout_ms: u64,
        what: &str,
        check: impl Fn(&Status) -> bool,
    ) -> Status {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            if let Some(status) = self.status(side) {
                if check(&status) {
                    return status;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!("side {side}: {what} within {timeout_ms} ms"));
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Starts A, waits until it answers, starts B, and waits until they pair with B taking
    /// A's state; returns both sides' status then.
    pub fn start_paired(&mut self, timeout_ms: u64) -> (Status, Status) {
        self.start_side(Side::A, &[]);
        self.wait_status(Side::A, timeout_ms, "answering rttest", |_| true);
        self.start_side(Side::B, &[]);
        let a = self.wait_state(Side::A, "Paired Enabled", timeout_ms);
        let b = self.wait_state(Side::B, "Paired Disabled", timeout_ms);
        (a, b)
    }

    /// Both sides paired, then pg1 and pg2 offering `cps` calls per second each, until side A
    /// reaches both.
    pub fn start_paired_under_load(&mut self, cps: f64, timeout_ms: u64) {
        self.start_paired(timeout_ms);
        self.start_pg("pg1", cps);
        self.start_pg("pg2", cps);
        self.wait_pgs_reachable(Side::A, 2, timeout_ms);
    }

    /// Waits until the side reaches all `pgs` PGs.
    pub fn wait_pgs_reachable(&self, side: Side, pgs: usize, timeout_ms: u64) -> Status {
        let all = format!("{pgs} of {pgs}");
        self.wait_status(side, timeout_ms, &format!("{all} PGs reachable"), |s| {
            s.field("PGs reachable").starts_with(&all)
        })
    }

    pub fn wait_state(&self, side: Side, state: &str, timeout_ms: u64) -> Status {
        self.wait_status(side, timeout_ms, state, |s| s.sync_state() == state)
    }

    /// Panics with both sides' status and events and the tail of every log.
    pub fn fail(&self, what: &str) -> ! {
        let mut report = format!("expected {what}\n");
        for side in [Side::A, Side::B] {
            report.push_str(&format!(
                "--- side {side} status\n{}\n--- side {side} events\n{}\n",
                self.rttest(side, "status")
                    .unwrap_or_else(|| "(no answer)".into()),
                self.events(side)
            ));
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.join("logs")) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                report.push_str(&format!("--- {}\n{}\n", path.display(), tail.join("\n")));
            }
        }
        panic!("{report}");
    }

    /// Waits until both sides report a DigestCheck at one sequence number after `after_seq`,
    /// and checks that their digests there are equal and that no check ever differed.
    pub fn wait_equal_digests(&self, after_seq: u64, timeout_ms: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            if let (Some(a), Some(b)) = (self.status(Side::A), self.status(Side::B)) {
                if let (Some((seq_a, digest_a)), Some((seq_b, digest_b))) = (a.digest(), b.digest())
                {
                    if seq_a == seq_b && seq_a > after_seq {
                        assert_eq!(digest_a, digest_b, "the digests differ at sequence {seq_a}");
                        assert_eq!(a.digest_checks().1, 0, "A:\n{}", a.text);
                        assert_eq!(b.digest_checks().1, 0, "B:\n{}", b.text);
                        return seq_a;
                    }
                }
            }
            if Instant::now() >= deadline {
                self.fail("a DigestCheck seen by both sides");
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Adds a PG to the topology (one the contact center does not list: it grants leases and
    /// answers Test Other Side, with no peripherals of its own).
    pub fn extra_pg(topology: &mut Topology, name: &str, id: u32) {
        topology.pgs.push(PgEntry {
            name: name.into(),
            id: tandem_model::ids::PgId(id),
        });
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.processes) {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy that can cut its link while both ends stay up: every connection it carries is
/// shut down, and new ones are refused until it heals.
pub struct FaultProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy to one of `topology`'s addresses, on a port none of its listeners uses (a free
    /// port the installation has not yet bound could otherwise be chosen twice).
    pub fn to(topology: &Topology, upstream: SocketAddr, bytes_per_s: Option<u64>) -> FaultProxy {
        FaultProxy::start_throttled(upstream, bytes_per_s, &topology.listen_addresses())
    }

    /// A proxy that also carries at most `bytes_per_s` each way per connection, so that a
    /// transfer lasts long enough to be interrupted.
    pub fn start_throttled(
        upstream: SocketAddr,
        bytes_per_s: Option<u64>,
        avoid: &[SocketAddr],
    ) -> FaultProxy {
        let mut listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Held ones are skipped, so each new bind gives another port.
        let mut skipped = Vec::new();
        while avoid.contains(&listener.local_addr().unwrap()) {
            skipped.push(listener);
            listener = TcpListener::bind("127.0.0.1:0").unwrap();
        }
        drop(skipped);
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (cut2, live2, stop2) = (cut.clone(), live.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        if cut2.load(Ordering::Relaxed) {
                            let _ = down.shutdown(Shutdown::Both);
                            continue;
                        }
                        down.set_nonblocking(false).unwrap();
                        let Ok(up) = TcpStream::connect(upstream) else {
                            let _ = down.shutdown(Shutdown::Both);
                            continue;
                        };
                        let _ = up.set_nodelay(true);
                        let _ = down.set_nodelay(true);
                        {
                            let mut live = live2.lock().unwrap();
                            live.retain(|s: &TcpStream| s.peer_addr().is_ok());
                            live.push(down.try_clone().unwrap());
                            live.push(up.try_clone().unwrap());
                        }
                        pipe(
                            down.try_clone().unwrap(),
                            up.try_clone().unwrap(),
                            bytes_per_s,
                        );
                        pipe(up, down, bytes_per_s);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        FaultProxy {
            addr,
            cut,
            live,
            stop,
        }
    }

    /// Shuts every carried connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, bytes_per_s: Option<u64>) {
    std::thread::spawn(move || {
        let chunk = if bytes_per_s.is_some() {
            4 * 1024
        } else {
            64 * 1024
        };
        let mut buffer = vec![0u8; chunk];
        let started = Instant::now();
        let mut carried = 0u64;
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    carried += n as u64;
                    if let Some(rate) = bytes_per_s {
                        // The rate limit: hold the next read until the carried bytes fit it.
                        let due = Duration::from_secs_f64(carried as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
