//! Mutual TLS for every tandem link, from one cluster CA.
//!
//! Every certificate the CA issues names a role and a process: the subject's organizational
//! unit is the role (`central`, `pg` or `aw`) and its common name is the process's name (`a`,
//! `pg1`, `aw1`). It also carries the DNS name `<role>.tandem`, which is what a client asks
//! for when it connects: a PG connecting to a side verifies that the server holds a `central`
//! certificate, whatever address it dialled. A listener verifies the client's chain during the
//! handshake and then checks the role it read from the certificate against the roles that may
//! use that listener (`transport::accept`).
//!
//! TLS 1.3 only, with rustls's ring provider. Plaintext exists only as
//! `Security::InsecurePlaintext`, which the processes use when started with
//! `--insecure-plaintext`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// The suffix of the DNS name that proves a certificate's role: `central.tandem`.
pub const ROLE_NAME_SUFFIX: &str = "tandem";

/// How long a peer may take to complete the TLS handshake before its connection is closed
/// (a client that opens a connection and says nothing holds no resources for longer).
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// What a certificate lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A side (router and MDS), a logger, or an operator's tool on a central host.
    Central,
    /// A peripheral gateway.
    Pg,
    /// A distributor admin workstation.
    Aw,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Central, Role::Pg, Role::Aw];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Central => "central",
            Role::Pg => "pg",
            Role::Aw => "aw",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// The DNS name every certificate of this role carries, which clients verify servers
    /// against.
    pub fn dns_name(self) -> String {
        format!("{}.{ROLE_NAME_SUFFIX}", self.as_str())
    }

    fn server_name(self) -> ServerName<'static> {
        ServerName::try_from(self.dns_name()).expect("a role's DNS name is a valid server name")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a certificate: its role and the process's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub role: Role,
    pub name: String,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} holds no {what}")]
    Missing { path: String, what: &'static str },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("the certificate does not name a tandem role and process: {0}")]
    Identity(String),
}

/// Where one process's certificate files are: the CA's certificate, the process's certificate
/// and its private key, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The files of process `name` in a certificates directory (`tandem certs` writes them).
    pub fn in_dir(dir: &Path, name: &str) -> CertFiles {
        CertFiles {
            ca: ca_cert_path(dir),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// The CA's certificate in a certificates directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The CA's private key in a certificates directory.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// The role and process a certificate names (organizational unit and common name).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::Identity(format!("unreadable certificate: {e}")))?;
    let subject = parsed.subject();
    let unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|unit| unit.as_str().ok())
        .ok_or_else(|| TlsError::Identity("no organizational unit (role)".into()))?;
    let role =
        Role::parse(unit).ok_or_else(|| TlsError::Identity(format!("{unit:?} is not a role")))?;
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .ok_or_else(|| TlsError::Identity("no common name (process)".into()))?;
    Ok(PeerIdentity {
        role,
        name: name.to_string(),
    })
}

/// How long a CA's certificate is valid.
pub const CA_VALIDITY_DAYS: i64 = 3_650;
/// How long a process's certificate is valid.
pub const CERT_VALIDITY_DAYS: i64 = 825;

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

fn validity(params: &mut rcgen::CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A day's margin before now, for clocks a little behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// A new cluster CA.
pub fn generate_ca() -> Result<PemPair, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa};
    let key = rcgen::KeyPair::generate().map_err(config_error)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "tandem cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(config_error)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A process's certificate from `ca`: `role` and `name` in its subject, `<role>.tandem` and
/// `hosts` as its names.
pub fn issue_cert(
    ca: &PemPair,
    role: Role,
    name: &str,
    hosts: &[String],
) -> Result<PemPair, TlsError> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose};
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(TlsError::Identity(format!(
            "a process name is 1 to 64 letters, digits, '-' and '_', not {name:?}"
        )));
    }
    let mut names = vec![role.dns_name()];
    for host in hosts {
        if host == ROLE_NAME_SUFFIX || host.ends_with(&format!(".{ROLE_NAME_SUFFIX}")) {
            return Err(TlsError::Identity(format!(
                "{host:?}: names under .{ROLE_NAME_SUFFIX} prove roles and are not hosts"
            )));
        }
        names.push(host.clone());
    }
    let ca_key = rcgen::KeyPair::from_pem(&ca.key).map_err(config_error)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(config_error)?;
    let mut params = CertificateParams::new(names).map_err(config_error)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, name);
    subject.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = subject;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, CERT_VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().map_err(config_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(config_error)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new certificate of `role` from `ca`, ready to use: for tests and benchmarks that run
/// links inside one process.
pub fn issued_security(ca: &PemPair, role: Role, name: &str) -> Result<Security, TlsError> {
    let issued = issue_cert(ca, role, name, &[])?;
    let context = TlsContext::from_pem(
        ca.cert.as_bytes(),
        issued.cert.as_bytes(),
        issued.key.as_bytes(),
    )?;
    Ok(Security::Tls(Arc::new(context)))
}

/// The TLS settings of one process: the cluster CA it trusts and, unless it is only a client
/// (a client workstation with a token), its own certificate.
pub struct TlsContext {
    identity: Option<PeerIdentity>,
    client: Arc<ClientConfig>,
    /// A listener that requires a client certificate from the cluster CA.
    server_mutual: Option<Arc<ServerConfig>>,
    /// A listener where a client certificate is optional (HTTP: browsers present none and
    /// authenticate with a token).
    server_optional: Option<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// ring's provider with AES-128-GCM first: as secure for these links as AES-256, and faster on
/// the state transfer's gigabyte, which is bound by the processor on both ends.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

fn config_error(e: impl fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

impl TlsContext {
    /// Loads a process's CA, certificate and key.
    pub fn load(files: &CertFiles) -> Result<TlsContext, TlsError> {
        let ca = read(&files.ca)?;
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        TlsContext::from_pem(&ca, &cert, &key).map_err(|e| match e {
            TlsError::Read { message, .. } => TlsError::Read {
                path: format!("{} or {}", files.cert.display(), files.key.display()),
                message,
            },
            other => other,
        })
    }

    /// Loads only the CA: a client that proves who it is some other way (a token).
    pub fn load_client_only(ca: &Path) -> Result<TlsContext, TlsError> {
        let roots = roots(&read(ca)?, ca)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsContext {
            identity: None,
            client: Arc::new(client),
            server_mutual: None,
            server_optional: None,
        })
    }

    pub fn from_pem(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<TlsContext, TlsError> {
        let here = Path::new("the certificate");
        let roots = roots(ca_pem, Path::new("the CA certificate"))?;
        let chain = certificates(cert_pem, here)?;
        let identity = identity_of(&chain[0])?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Read {
            path: "the private key".into(),
            message: e.to_string(),
        })?;
        let roots = Arc::new(roots);
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        client.resumption = rustls::client::Resumption::disabled();
        let server = |optional: bool| -> Result<Arc<ServerConfig>, TlsError> {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let verifier = if optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            }
            .build()
            .map_err(config_error)?;
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(config_error)?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(config_error)?;
            // No session tickets: nothing resumes sessions here, and tickets are bytes a client
            // that only writes (a state transfer's sender) would leave unread, so that closing
            // its socket resets the connection and destroys the end of what it sent.
            config.send_tls13_tickets = 0;
            // Browsers negotiate HTTP/1.1 over ALPN; the cluster's own links use none.
            if optional {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            Ok(Arc::new(config))
        };
        Ok(TlsContext {
            identity: Some(identity),
            client: Arc::new(client),
            server_mutual: Some(server(false)?),
            server_optional: Some(server(true)?),
        })
    }

    /// The role and name of this process's own certificate (none for a client-only context).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    pub(crate) fn server_config(&self, client_cert_required: bool) -> Option<Arc<ServerConfig>> {
        if client_cert_required {
            self.server_mutual.clone()
        } else {
            self.server_optional.clone()
        }
    }

    pub(crate) fn server_name(role: Role) -> ServerName<'static> {
        role.server_name()
    }
}

fn roots(pem: &[u8], path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, path)? {
        roots.add(cert).map_err(config_error)?;
    }
    Ok(roots)
}

/// How a process's links are protected: TLS from the cluster CA (the default), or plaintext
/// when started with `--insecure-plaintext`.
#[derive(Clone, Debug)]
pub enum Security {
    Tls(Arc<TlsContext>),
    InsecurePlaintext,
}

impl Security {
    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls(_))
    }

    /// This process's own identity (none in plaintext or for a client-only context).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        match self {
            Security::Tls(context) => context.identity(),
            Security::InsecurePlaintext => None,
        }
    }

    /// `http` or `https`, for URLs this process prints or follows.
    pub fn http_scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// `ws` or `wss`.
    pub fn ws_scheme(&self) -> &'static str {
        if self.is_tls() {
            "wss"
        } else {
            "ws"
        }
    }
}
