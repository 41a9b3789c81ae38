//! `tandem certs init|issue`: the cluster CA and the certificates of its processes, and how
//! each process finds its own (`security`).
//!
//! A certificate names its role in the subject's organizational unit and its process in the
//! common name, and carries the DNS name `<role>.tandem` that clients verify servers against
//! (`tandem_mds::tls`). Hosts given with `--host` are added as further names, so that a browser
//! can reach a distributor by its host name or address.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use tandem_mds::tls::{self, CertFiles, PemPair, Role, Security, TlsContext};
use tandem_model::topology::Topology;

/// The name of the certificate that operators' tools (`tandem rttest`, `tandem config`,
/// `tandem aw status`) present: a `central` certificate.
pub const OPERATOR_CERT_NAME: &str = "operator";

#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Creates the cluster CA (ca.pem and ca.key) in a directory.
    Init {
        /// The certificates directory (the topology's `security.certs_dir`).
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA: every certificate it issued stops being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Issues a process's certificate and key (NAME.pem, NAME.key) from the cluster CA.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// central (a side, a logger or an operator's tools), pg or aw.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The process's name: a, b, operator, a PG's or a distributor's name.
        #[arg(long)]
        name: String,
        /// A host name or address the process is reached by (repeatable), for browsers.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

pub fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("a role is central, pg or aw, not {text:?}"))
}

pub fn certs_command(command: CertsCommand) -> Result<()> {
    match command {
        CertsCommand::Init { dir, force } => {
            init_ca(&dir, force)?;
            println!(
                "wrote the cluster CA to {}",
                tls::ca_cert_path(&dir).display()
            );
        }
        CertsCommand::Issue {
            dir,
            role,
            name,
            hosts,
        } => {
            let files = issue(&dir, role, &name, &hosts)?;
            println!(
                "issued a {role} certificate for {name:?}: {} and {}",
                files.cert.display(),
                files.key.display()
            );
        }
    }
    Ok(())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates the CA in `dir`.
pub fn init_ca(dir: &Path, force: bool) -> Result<()> {
    let cert_path = tls::ca_cert_path(dir);
    if cert_path.exists() && !force {
        bail!(
            "{} exists; --force replaces the CA (and distrusts every certificate it issued)",
            cert_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = tls::generate_ca()?;
    write_private(&tls::ca_key_path(dir), &ca.key)?;
    std::fs::write(&cert_path, &ca.cert)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(())
}

/// Issues the certificate of process `name` with `role` from the CA in `dir`.
pub fn issue(dir: &Path, role: Role, name: &str, hosts: &[String]) -> Result<CertFiles> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (`tandem certs init --dir {}` creates the CA)",
                path.display(),
                dir.display()
            )
        })
    };
    let ca = PemPair {
        cert: read(tls::ca_cert_path(dir))?,
        key: read(tls::ca_key_path(dir))?,
    };
    let issued = tls::issue_cert(&ca, role, name, hosts)?;
    let files = CertFiles::in_dir(dir, name);
    write_private(&files.key, &issued.key)?;
    std::fs::write(&files.cert, &issued.cert)
        .with_context(|| format!("writing {}", files.cert.display()))?;
    Ok(files)
}

/// The certificate name of a side and its logger.
pub fn side_cert_name(side: tandem_mds::Side) -> &'static str {
    match side {
        tandem_mds::Side::A => "side-a",
        tandem_mds::Side::B => "side-b",
    }
}

/// The CA and every certificate an installation needs: both sides (and their loggers), the
/// operator's tools, each PG and each distributor (also valid for `localhost` and its
/// listener's address, for browsers).
pub fn init_installation(topology: &Topology) -> Result<()> {
    init_ca(&topology.certs_dir(), true)?;
    issue_missing(topology)
}

/// Issues the certificates of the processes of `topology` that have none yet, from its CA.
pub fn issue_missing(topology: &Topology) -> Result<()> {
    let dir = topology.certs_dir();
    let mut wanted: Vec<(Role, String, Vec<String>)> = vec![
        (
            Role::Central,
            side_cert_name(tandem_mds::Side::A).into(),
            vec![],
        ),
        (
            Role::Central,
            side_cert_name(tandem_mds::Side::B).into(),
            vec![],
        ),
        (Role::Central, OPERATOR_CERT_NAME.into(), vec![]),
    ];
    wanted.extend(
        topology
            .pgs
            .iter()
            .map(|pg| (Role::Pg, pg.name.clone(), vec![])),
    );
    wanted.extend(topology.distributors.iter().map(|d| {
        let hosts = vec!["localhost".to_string(), d.public.ip().to_string()];
        (Role::Aw, d.name.clone(), hosts)
    }));
    for (role, name, hosts) in wanted {
        if !CertFiles::in_dir(&dir, &name).cert.exists() {
            issue(&dir, role, &name, &hosts)?;
        }
    }
    Ok(())
}

/// A certificate of `role` from a CA of its own, loaded: for benchmarks and tests
/// that run links inside one process.
pub fn ephemeral_security(role: Role, name: &str) -> Result<Security> {
    Ok(tls::issued_security(&tls::generate_ca()?, role, name)?)
}

/// Whether this process was started with `--insecure-plaintext`.
static INSECURE_PLAINTEXT: OnceLock<bool> = OnceLock::new();

/// Records `--insecure-plaintext` for every link this process makes (once, from `main`, or a
/// benchmark that drives a plaintext installation).
pub fn set_insecure_plaintext(insecure: bool) {
    let _ = INSECURE_PLAINTEXT.set(insecure);
    if insecure {
        tracing::warn!(
            "--insecure-plaintext: links are neither encrypted nor authenticated, and HTTP \
             readers need no token"
        );
    }
}

pub fn insecure_plaintext() -> bool {
    INSECURE_PLAINTEXT.get().copied().unwrap_or(false)
}

/// The security of process `name` of `topology`: its certificate from the topology's
/// certificates directory, or plaintext under `--insecure-plaintext`. Loaded once per
/// directory and name.
pub fn security(topology: &Topology, name: &str) -> Result<Security> {
    if insecure_plaintext() {
        return Ok(Security::InsecurePlaintext);
    }
    static LOADED: Mutex<BTreeMap<(PathBuf, String), Security>> = Mutex::new(BTreeMap::new());
    let dir = topology.certs_dir();
    let key = (dir.clone(), name.to_string());
    if let Some(security) = LOADED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(security.clone());
    }
    let files = CertFiles::in_dir(&dir, name);
    let context = TlsContext::load(&files).with_context(|| {
        format!(
            "loading the certificate of {name:?} from {} (`tandem certs issue` creates it; \
             `--insecure-plaintext` runs without TLS)",
            dir.display()
        )
    })?;
    let security = Security::Tls(std::sync::Arc::new(context));
    LOADED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, security.clone());
    Ok(security)
}

/// The operator's tools' security.
pub fn operator_security(topology: &Topology) -> Result<Security> {
    security(topology, OPERATOR_CERT_NAME)
}
