//! `tandem demo`: one router fed by simulated peripherals in real time, with a summary line every
//! second. (Later the demo grows into the whole duplex system; this is its core.)

use crate::driver::{ClosedLoop, TICK_MS_DEFAULT};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_model::config::ContactCenter;
use tandem_model::domain::AgentState;
use tandem_model::output::Output;
use tandem_pg::{LoadParams, TrafficSim};
use tandem_router::Router;

/// The example contact center shipped with tandem: 2 peripherals, 200 agents, 20 skill groups,
/// 10 call types.
pub const EXAMPLE_CONTACT_CENTER: &str = include_str!("../../../examples/contact-center.toml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Contact-center TOML (default: the shipped 200-agent example).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Offered load in calls per second.
    #[arg(long, default_value_t = 1.0)]
    cps: f64,
    /// Mean talk time in seconds (handle time also includes hold and wrap-up).
    #[arg(long, default_value_t = 120)]
    talk_s: u64,
    /// Run ordered time this many times faster than the wall clock.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Stop after this many seconds (wall clock) with exit status 0.
    #[arg(long)]
    duration: Option<u64>,
    /// Seed of the traffic simulator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    anyhow::ensure!(
        args.speed > 0.0 && args.speed <= 1000.0,
        "--speed must be within (0, 1000]"
    );
    let cc = match &args.config {
        Some(path) => ContactCenter::load(path)?,
        None => ContactCenter::from_toml_str(EXAMPLE_CONTACT_CENTER)
            .context("the shipped example is invalid")?,
    };
    // The binary reads the wall clock once, to start ordered time; the router never does.
    let start_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let router = Router::from_contact_center(&cc, start_ms)?;
    let load = LoadParams {
        calls_per_second: args.cps,
        talk_time_mean_ms: args.talk_s * 1000,
        seed: args.seed,
        ..LoadParams::default()
    };
    load.check().map_err(anyhow::Error::msg)?;
    let sim = TrafficSim::new(&cc, load, start_ms);
    let mut driver = ClosedLoop::new(router, sim, start_ms, TICK_MS_DEFAULT);
    println!(
        "tandem demo: router with {} agents, {} skill groups, {} call types; {} calls/s offered{}",
        cc.agents.len(),
        cc.skill_groups.len(),
        cc.call_types.len(),
        args.cps,
        if args.speed != 1.0 {
            format!(", {}x real time", args.speed)
        } else {
            String::new()
        }
    );
    println!("Ctrl-C stops it.");

    let wall_start = Instant::now();
    let mut next_report = Duration::from_secs(1);
    let mut answered_in_second = 0u64;
    loop {
        let elapsed = wall_start.elapsed();
        let target_ms = start_ms + (elapsed.as_secs_f64() * args.speed * 1000.0) as u64;
        driver.run_until(target_ms, |output| {
            if matches!(output, Output::RouteResponse { repeat: false, .. }) {
                answered_in_second += 1;
            }
        });
        if elapsed >= next_report {
            print_summary(&driver, answered_in_second as f64 / args.speed);
            answered_in_second = 0;
            next_report += Duration::from_secs(1);
            if args
                .duration
                .is_some_and(|d| elapsed >= Duration::from_secs(d))
            {
                let stats = driver.sim.stats();
                println!(
                    "done: {} inputs applied, {} route requests, {} calls handled, digest {:032x}",
                    driver.seq,
                    stats.route_requests_sent,
                    stats.calls_handled,
                    driver.router.digest()
                );
                return Ok(());
            }
        }
        // Pace the loop against the wall clock: the demo runs in real time on purpose.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn print_summary(driver: &ClosedLoop, calls_per_second: f64) {
    let s = driver.router.summary();
    let count = |state: AgentState| s.agents_by_state.get(state.name()).copied().unwrap_or(0);
    let talking = count(AgentState::TalkingIn)
        + count(AgentState::TalkingOut)
        + count(AgentState::TalkingOther)
        + count(AgentState::Hold);
    let wrap = count(AgentState::WorkReady) + count(AgentState::WorkNotReady);
    let secs = driver.now_ms / 1000;
    let percent =
        |v: Option<f64>| v.map_or("   -  ".to_string(), |v| format!("{:5.1}%", v * 100.0));
    println!(
        "{:02}:{:02}:{:02}Z  calls/s {:5.1}  agents ready {:4} reserved {:3} talking {:4} wrap-up {:3} not ready {:4}  queued {:4}  SL today {}  ASA {:5.1} s  handled {:6}  state {:.2} MB",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        calls_per_second,
        count(AgentState::Ready),
        count(AgentState::Reserved),
        talking,
        wrap,
        count(AgentState::NotReady),
        s.router_calls_queued,
        percent(s.service_level_today),
        s.today.asa_ms().unwrap_or(0.0) / 1000.0,
        s.today.calls_handled,
        s.state_size_bytes as f64 / 1e6,
    );
}
