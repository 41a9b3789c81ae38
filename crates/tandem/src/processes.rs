//! The subcommands that run the installation's processes: `init`, `central`, `pg`, `rttest`.

use crate::demo::EXAMPLE_CONTACT_CENTER;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use tandem_central::side::{self, SideOptions};
use tandem_mds::Side;
use tandem_model::config::ContactCenter;
use tandem_model::ids::PgId;
use tandem_model::topology::{
    DistributorEntry, LoggerSettings, MdsTimers, PgEntry, SideAddresses, SideName, Topology,
};
use tandem_pg::gateway::{self, GatewayOptions};
use tandem_pg::LoadParams;

#[derive(clap::Args)]
pub struct InitArgs {
    /// The directory to write `tandem.toml`, `contact-center.toml` and the data directories in.
    #[arg(long)]
    dir: PathBuf,
    /// The first of the loopback ports to use; 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Overwrite an existing topology.
    #[arg(long)]
    force: bool,
    /// Copy this contact-center configuration instead of the example (its PGs become the
    /// topology's).
    #[arg(long)]
    contact_center: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CentralArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long, value_parser = parse_side)]
    side: Side,
    /// Start from configuration although this side ran before: only when both sides lost their
    /// state.
    #[arg(long)]
    cold_start: bool,
    /// Override the logic version's build string (to check the version guard).
    #[arg(long, hide = true)]
    logic_build: Option<String>,
}

#[derive(clap::Args)]
pub struct PgArgs {
    #[arg(long)]
    config: PathBuf,
    /// The PG's name in the topology.
    #[arg(long)]
    name: String,
    /// Offered load in calls per second.
    #[arg(long, default_value_t = 1.0)]
    cps: f64,
    /// Mean talk time in seconds.
    #[arg(long, default_value_t = 120)]
    talk_s: u64,
    /// Offer a stress mix that keeps about this share (0..=1) of the PG's agents busy at
    /// `--cps`, as the router benchmark does: every agent logs in Ready, nobody takes breaks,
    /// and ring, talk, hold and after-call work are scaled so that the agents keep up with the
    /// load. Replaces `--talk-s`.
    #[arg(long)]
    occupancy: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also send this many cheap inputs per second (peripheral re-reports), to measure the
    /// central controller's ordering throughput.
    #[arg(long, default_value_t = 0)]
    flood_inputs_per_s: u64,
    /// Send this input (as JSON) once, after the simulated load's first inputs: for fault
    /// injection, such as a poison input.
    #[arg(long, hide = true)]
    inject_input_json: Option<String>,
    /// Leave the round trips of requests sent in the first seconds out of the figures.
    #[arg(long, default_value_t = 0)]
    rtt_warmup_s: u64,
}

#[derive(clap::Args)]
pub struct RtTestArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long, value_parser = parse_side, default_value = "a")]
    side: Side,
    /// status, sync or events (the side); agents, skill-groups, call-types or queue (dumps of
    /// the router's live state).
    #[arg(default_value = "status")]
    command: String,
}

pub fn parse_side(text: &str) -> Result<Side, String> {
    match text.to_ascii_lowercase().as_str() {
        "a" => Ok(Side::A),
        "b" => Ok(Side::B),
        _ => Err(format!("a side is a or b, not {text:?}")),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stopped() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A free loopback port, held (with every port chosen before it) until `init` has chosen them
/// all: a port let go at once could be handed out twice.
fn free_port(held: &mut Vec<TcpListener>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    held.push(listener);
    Ok(port)
}

pub fn init(args: InitArgs) -> Result<()> {
    let topology_path = args.dir.join("tandem.toml");
    if topology_path.exists() && !args.force {
        bail!("{} exists; --force overwrites it", topology_path.display());
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cc_text = match &args.contact_center {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => EXAMPLE_CONTACT_CENTER.to_string(),
    };
    let cc = ContactCenter::from_toml_str(&cc_text)?;
    let mut next = args.base_port;
    let mut held = Vec::new();
    let mut port = || -> Result<SocketAddr> {
        let p = if args.base_port == 0 {
            free_port(&mut held)?
        } else {
            let p = next;
            next = next.checked_add(1).context("ports run past 65535")?;
            p
        };
        Ok(SocketAddr::from(([127, 0, 0, 1], p)))
    };
    let mut side = |dir: &str| -> Result<SideAddresses> {
        Ok(SideAddresses {
            private: port()?,
            transfer: port()?,
            public: port()?,
            metrics: port()?,
            logger_peer: port()?,
            data_dir: dir.into(),
            central_db_url: None,
        })
    };
    let side_a = side("a")?;
    let side_b = side("b")?;
    let topology = Topology {
        contact_center: "contact-center.toml".into(),
        side_a,
        side_b,
        pgs: cc
            .pgs
            .iter()
            .map(|pg| PgEntry {
                name: pg.name.to_lowercase(),
                id: pg.id,
            })
            .collect(),
        distributors: vec![DistributorEntry {
            name: "aw1".into(),
            public: port()?,
            data_dir: "aw1".into(),
            preferred_side: SideName::A,
            aw_db_url: None,
            site: "main".into(),
        }],
        mds: MdsTimers::default(),
        logger: LoggerSettings::default(),
        security: Default::default(),
        limits: Default::default(),
        base_dir: args.dir.clone(),
    };
    topology.validate()?;
    std::fs::write(args.dir.join("contact-center.toml"), &cc_text)?;
    std::fs::write(&topology_path, topology.to_toml_string())?;
    // TLS is the default: the installation gets its CA and every process its certificate.
    crate::certs::init_installation(&topology)?;
    // Each side's central database starts with the contact center: the only time it is read
    // from the file rather than the database.
    let cc_path = topology.resolve(&topology.contact_center);
    if args.force {
        // A new installation starts with new central databases.
        for side in [&topology.side_a, &topology.side_b] {
            let dir = topology.resolve(&side.data_dir);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(
                    dir.join(format!("{}{suffix}", tandem_logger::run::SQLITE_FILE)),
                );
            }
        }
    }
    let versions = runtime()?.block_on(async {
        let a = crate::admin::seed_side(&topology, Side::A, &cc_path).await?;
        let b = crate::admin::seed_side(&topology, Side::B, &cc_path).await?;
        anyhow::Ok((a, b))
    })?;
    debug_assert_eq!(versions.0, versions.1);
    println!(
        "wrote {} (sides A and B, {} PGs: {}) and the contact center",
        topology_path.display(),
        topology.pgs.len(),
        topology
            .pgs
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn load_topology(path: &Path) -> Result<Topology> {
    Ok(Topology::load(path)?)
}

pub fn central(args: CentralArgs) -> Result<()> {
    let topology = load_topology(&args.config)?;
    let security = crate::certs::security(&topology, crate::certs::side_cert_name(args.side))?;
    let options = SideOptions {
        security,
        topology,
        side: args.side,
        cold_start: args.cold_start,
        logic_build: args
            .logic_build
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
    };
    runtime()?.block_on(async move {
        tokio::select! {
            result = side::run(options) => result.map_err(anyhow::Error::from),
            _ = stopped() => Ok(()),
        }
    })
}

pub fn pg(args: PgArgs) -> Result<()> {
    let topology = load_topology(&args.config)?;
    let entry = topology
        .pg_by_name(&args.name)
        .with_context(|| format!("no PG named {} in {}", args.name, args.config.display()))?
        .clone();
    let cc = ContactCenter::load(&topology.resolve(&topology.contact_center))?;
    let load = match args.occupancy {
        None => LoadParams {
            calls_per_second: args.cps,
            talk_time_mean_ms: args.talk_s * 1_000,
            seed: args.seed,
            ..LoadParams::default()
        },
        Some(occupancy) => occupancy_load(&cc, entry.id, args.cps, occupancy, args.seed)?,
    };
    load.check().map_err(anyhow::Error::msg)?;
    let options = GatewayOptions {
        security: crate::certs::security(&topology, &entry.name)?,
        topology,
        cc,
        pg: entry.id,
        name: entry.name,
        load,
        flood_inputs_per_s: args.flood_inputs_per_s,
        inject_input: args
            .inject_input_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .context("--inject-input-json")?,
        rtt_warmup_ms: args.rtt_warmup_s.saturating_mul(1_000),
    };
    let counts = runtime()?.block_on(gateway::run(options, stopped()));
    println!("{}", serde_json::to_string(&counts)?);
    Ok(())
}

/// The stress mix of [`LoadParams::for_occupancy`] for the agents on `pg`'s peripherals.
fn occupancy_load(
    cc: &ContactCenter,
    pg: PgId,
    cps: f64,
    occupancy: f64,
    seed: u64,
) -> Result<LoadParams> {
    if !(0.0..=1.0).contains(&occupancy) {
        bail!("--occupancy is {occupancy}; it must lie within 0..=1");
    }
    if !(cps > 0.0 && cps.is_finite()) {
        bail!("--occupancy needs a positive --cps, not {cps}");
    }
    let peripherals: Vec<_> = cc
        .peripherals
        .iter()
        .filter(|p| p.pg == pg)
        .map(|p| p.id)
        .collect();
    let agents = cc
        .agents
        .iter()
        .filter(|a| peripherals.contains(&a.peripheral))
        .count();
    let agents = u32::try_from(agents).context("agents of the PG")?;
    if agents == 0 {
        bail!("--occupancy: the PG has no agents to keep busy");
    }
    Ok(LoadParams {
        seed,
        ..LoadParams::for_occupancy(agents, cps, occupancy)
    })
}

pub fn rttest(args: RtTestArgs) -> Result<()> {
    let topology = load_topology(&args.config)?;
    let addr = match args.side {
        Side::A => topology.side_a.public,
        Side::B => topology.side_b.public,
    };
    let security = crate::certs::operator_security(&topology)?;
    let text = runtime()?
        .block_on(tandem_central::rttest::query(
            addr,
            &args.command,
            3_000,
            &security,
        ))
        .with_context(|| format!("asking side {} at {addr}", args.side))?;
    print!("{text}");
    Ok(())
}
