//! `tandem demo`: the whole central controller on loopback. It writes a local topology, starts
//! side A, side B, both loggers, one Distributor AW with its web client and two PGs with
//! simulated peripherals as separate processes, prints the dashboard's address, and prints each
//! side's synchronizer state and router summary (from rttest) and the distributor's feed every
//! second. At the end the PGs drain and print their counts.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem_mds::Side;
use tandem_model::topology::Topology;

/// The example contact center shipped with tandem: 2 peripherals, 200 agents, 20 skill groups,
/// 10 call types.
pub const EXAMPLE_CONTACT_CENTER: &str = include_str!("../../../examples/contact-center.toml");

/// How long the demo waits for a PG to drain and print its counts.
const PG_STOP_MS_MAX: u64 = 15_000;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Contact-center TOML (default: the shipped 200-agent example).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Offered load in calls per second, per PG.
    #[arg(long, default_value_t = 5.0)]
    cps: f64,
    /// Mean talk time in seconds (handle time also includes hold and wrap-up).
    #[arg(long, default_value_t = 30)]
    talk_s: u64,
    /// Stop after this many seconds with exit status 0 (otherwise Ctrl-C stops it).
    #[arg(long)]
    duration: Option<u64>,
    /// Where the topology, data directories and process logs go (default: a new directory
    /// under the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the traffic simulators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The demo's child processes; dropping it stops whatever still runs.
struct Children {
    running: Vec<(String, Child)>,
}

impl Children {
    fn spawn(&mut self, name: &str, dir: &Path, args: &[String]) -> Result<()> {
        let log = |ext: &str| -> Result<std::fs::File> {
            let path = dir.join("logs").join(format!("{name}.{ext}"));
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
        };
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .args(crate::certs::insecure_plaintext().then_some("--insecure-plaintext"))
            .stdin(Stdio::null())
            .stdout(log("out")?)
            .stderr(log("err")?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.running.push((name.to_string(), child));
        Ok(())
    }

    fn signal(&self, name: &str, signal: &str) {
        if let Some((_, child)) = self.running.iter().find(|(n, _)| n == name) {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Waits for `name` to end, up to `timeout_ms`; kills it after that.
    fn wait(&mut self, name: &str, timeout_ms: u64) {
        let Some(i) = self.running.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, mut child) = self.running.remove(i);
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            // Polling a child's exit: there is no portable way to wait with a deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    anyhow::ensure!(args.cps >= 0.0, "--cps must not be negative");
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id())),
    };
    let mut init = vec![
        "init".to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--force".into(),
    ];
    if let Some(config) = &args.config {
        init.push("--contact-center".into());
        init.push(config.display().to_string());
    }
    // A fresh start: no side remembers an earlier run in this directory, and `init` seeds new
    // central databases.
    for side in ["a", "b", "aw1"] {
        let _ = std::fs::remove_dir_all(dir.join(side));
    }
    let status = Command::new(std::env::current_exe()?)
        .args(&init)
        .args(crate::certs::insecure_plaintext().then_some("--insecure-plaintext"))
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "tandem init failed");
    std::fs::create_dir_all(dir.join("logs"))?;
    let config = dir.join("tandem.toml");
    let topology = Topology::load(&config)?;
    let config_arg = config.display().to_string();

    let mut children = Children {
        running: Vec::new(),
    };
    for side in ["a", "b"] {
        children.spawn(
            &format!("logger-{side}"),
            &dir,
            &[
                "logger".into(),
                "run".into(),
                "--config".into(),
                config_arg.clone(),
                "--side".into(),
                side.into(),
            ],
        )?;
        children.spawn(
            &format!("side-{side}"),
            &dir,
            &[
                "central".into(),
                "--config".into(),
                config_arg.clone(),
                "--side".into(),
                side.into(),
            ],
        )?;
    }
    // One Distributor AW with its web client.
    let distributor = topology
        .distributors
        .first()
        .context("the demo topology has no distributor")?
        .clone();
    children.spawn(
        &distributor.name,
        &dir,
        &[
            "distributor".into(),
            "--config".into(),
            config_arg.clone(),
            "--name".into(),
            distributor.name.clone(),
        ],
    )?;
    let pg_names: Vec<String> = topology.pgs.iter().map(|p| p.name.clone()).collect();
    for (n, name) in pg_names.iter().enumerate() {
        children.spawn(
            name,
            &dir,
            &[
                "pg".into(),
                "--config".into(),
                config_arg.clone(),
                "--name".into(),
                name.clone(),
                "--cps".into(),
                args.cps.to_string(),
                "--talk-s".into(),
                args.talk_s.to_string(),
                "--seed".into(),
                (args.seed + n as u64).to_string(),
            ],
        )?;
    }
    println!(
        "tandem demo: sides A and B, {} PGs ({}) at {} calls/s each; topology, data and logs in {}",
        pg_names.len(),
        pg_names.join(", "),
        args.cps,
        dir.display()
    );
    println!(
        "rttest: tandem rttest --config {} --side a status",
        config.display()
    );
    // The demo's own admin token, handed to the web client in the URL's fragment (which the
    // browser never sends); the page keeps it and removes it from the address bar.
    let (_, token) = tandem_distributor::auth::create(
        &topology.tokens_file(),
        tandem_distributor::auth::TokenRole::Admin,
        "demo",
    )?;
    let security = crate::certs::operator_security(&topology)?;
    println!(
        "dashboard: {}://{}/#token={token}",
        security.http_scheme(),
        distributor.public
    );
    if security.is_tls() {
        println!(
            "TLS from the demo's own CA: a browser warns until {} is trusted",
            tandem_mds::tls::ca_cert_path(&topology.certs_dir()).display()
        );
    }
    println!("Ctrl-C stops it.");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let started = Instant::now();
    let mut next_report = Duration::from_secs(1);
    loop {
        // The report's cadence against the wall clock, not a synchronization.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            println!();
            break;
        }
        let elapsed = started.elapsed();
        if elapsed < next_report {
            continue;
        }
        next_report += Duration::from_secs(1);
        for side in [Side::A, Side::B] {
            let addr = match side {
                Side::A => topology.side_a.public,
                Side::B => topology.side_b.public,
            };
            let ask = |command: &str| {
                runtime
                    .block_on(tandem_central::rttest::query(
                        addr, command, 1_000, &security,
                    ))
                    .ok()
            };
            let line = match (ask("status"), ask("summary")) {
                (Some(status), Some(summary)) => {
                    let field = |name: &str| {
                        status
                            .lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}:")))
                            .map(str::trim)
                            .unwrap_or("")
                            .to_string()
                    };
                    format!(
                        "{:<17} epoch {:<7} seq {:<28} {}",
                        field("Synchronizer"),
                        field("Epoch"),
                        field("Sequence"),
                        summary.trim_end()
                    )
                }
                _ => "starting".to_string(),
            };
            println!("{:>4}s  side {side}  {line}", elapsed.as_secs());
        }
        let aw = match runtime.block_on(crate::aw::status(&security, distributor.public)) {
            Ok(s) => format!(
                "{:<17} frame {:<7} feed lag {} ms  AW DB frame {} lag {} ms  updateaw {}  clients {}",
                format!("feed from side {}", s.side.as_deref().unwrap_or("-").to_uppercase()),
                s.frame_number,
                s.feed_lag_ms.map_or("-".into(), |v| v.to_string()),
                s.aw_db_frame,
                s.aw_db_lag_ms.map_or("-".into(), |v| v.to_string()),
                s.updateaw,
                s.clients
            ),
            Err(_) => "starting".to_string(),
        };
        println!("{:>4}s  {:<6}  {aw}", elapsed.as_secs(), distributor.name);
        if args
            .duration
            .is_some_and(|d| elapsed >= Duration::from_secs(d))
        {
            break;
        }
    }

    // The PGs drain (every route request answered, every input acknowledged) and print their
    // counts; then the sides stop.
    for name in &pg_names {
        children.signal(name, "TERM");
    }
    for name in &pg_names {
        children.wait(name, PG_STOP_MS_MAX);
        let out = std::fs::read_to_string(dir.join("logs").join(format!("{name}.out")))
            .unwrap_or_default();
        match out.lines().last() {
            Some(counts) => println!("{name}: {counts}"),
            None => println!("{name}: printed no counts (see {}/logs)", dir.display()),
        }
    }
    children.signal(&distributor.name, "TERM");
    children.wait(&distributor.name, 5_000);
    for side in ["side-a", "side-b"] {
        children.signal(side, "TERM");
        children.wait(side, 5_000);
    }
    Ok(())
}
