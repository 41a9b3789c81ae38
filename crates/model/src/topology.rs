//! The topology of one installation (`tandem.toml`): the two sides with their private and public
//! addresses and data directories, the PGs, the distributors, the synchronizer's timers, and
//! where the contact-center configuration lives. Every process reads the same file.

use crate::ids::PgId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TopologyError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: {message}")]
    Toml { path: String, message: String },
    #[error("invalid topology: {0}")]
    Invalid(String),
}

/// One side of the central controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideAddresses {
    /// The MDS link: side B listens here, side A's MDS connects.
    pub private: SocketAddr,
    /// State-transfer sessions: side B listens here, side A's MDS always opens the session.
    pub transfer: SocketAddr,
    /// PGs, rttest and the other public clients.
    pub public: SocketAddr,
    /// Prometheus metrics (`/metrics`).
    pub metrics: SocketAddr,
    /// The side's logger listens here for its peer logger, which recovers from it the
    /// configuration and the rows it missed.
    pub logger_peer: SocketAddr,
    /// The side's persistent files (its epoch); relative paths are from the topology file.
    pub data_dir: PathBuf,
    /// The side's central database on PostgreSQL (a URL such as
    /// `postgres://user:password@host/db`); without it, a SQLite file in `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_db_url: Option<String>,
}

/// The loggers' settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggerSettings {
    /// Historical rows each side holds for its logger while the logger is away; beyond this
    /// the oldest are dropped and an event says how many.
    pub buffer_rows: u64,
}

impl Default for LoggerSettings {
    fn default() -> LoggerSettings {
        // An hour at 100 calls/s, each call writing a route call detail, a termination call
        // detail and its share of the interval rows.
        LoggerSettings {
            buffer_rows: 100 * 3_600 * 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgEntry {
    pub name: String,
    pub id: PgId,
}

/// A side, as a topology names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideName {
    #[default]
    A,
    B,
}

/// A Distributor AW: rtdist, updateaw and rtclient with its local AW database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributorEntry {
    pub name: String,
    /// rtclient's HTTP and WebSocket listener, which also serves the web client.
    pub public: SocketAddr,
    /// The distributor's files (its AW database on SQLite); relative paths are from the
    /// topology file.
    pub data_dir: PathBuf,
    /// The side the feed comes from while it can; the other one otherwise.
    #[serde(default)]
    pub preferred_side: SideName,
    /// The local AW database on PostgreSQL (a URL); without it, a SQLite file in `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aw_db_url: Option<String>,
    /// Client AWs fail over between the distributors of one site.
    #[serde(default = "default_site")]
    pub site: String,
}

fn default_site() -> String {
    "main".into()
}

/// The synchronizer's timers (SPEC section 4 defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MdsTimers {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_misses_max: u64,
    pub tick_interval_ms: u64,
    pub pg_heartbeat_interval_ms: u64,
    /// A PG path silent for this many heartbeats is failed.
    pub pg_heartbeat_misses_max: u64,
    pub lease_ms: u64,
    /// An ordered DigestCheck every this many milliseconds of ordered time (0: never).
    pub digest_check_interval_ms: u64,
    /// The state-size event is raised once the router's state passes this many bytes.
    pub state_size_alarm_bytes: u64,
}

impl Default for MdsTimers {
    fn default() -> MdsTimers {
        MdsTimers {
            heartbeat_interval_ms: 100,
            heartbeat_misses_max: 5,
            tick_interval_ms: 100,
            pg_heartbeat_interval_ms: 400,
            pg_heartbeat_misses_max: 3,
            lease_ms: 500,
            digest_check_interval_ms: 10_000,
            state_size_alarm_bytes: 30 << 20,
        }
    }
}

/// Where the installation's certificates and HTTP tokens are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecuritySettings {
    /// The cluster CA and every process's certificate (`tandem certs`); relative paths are
    /// from the topology file.
    pub certs_dir: PathBuf,
    /// The HTTP and WebSocket tokens, stored hashed (`tandem token create`).
    pub tokens_file: PathBuf,
}

impl Default for SecuritySettings {
    fn default() -> SecuritySettings {
        SecuritySettings {
            certs_dir: "certs".into(),
            tokens_file: "tokens.toml".into(),
        }
    }
}

/// What any one client may hold or send (SECURITY.md): each a named bound, refused with an error
/// that names it when exceeded. `[limits]` in the topology; every process reads the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections a side's public listener holds at once (PGs, loggers, distributors,
    /// operators' tools); one more is closed at once.
    pub public_connections_max: usize,
    /// The largest frame payload a side takes on its public listener (PG links and every
    /// client's first message). The links that carry whole configurations have their own,
    /// larger bound.
    pub frame_payload_bytes_max: usize,
    /// HTTP and WebSocket connections one distributor holds at once.
    pub http_connections_max: usize,
    /// The largest HTTP request body a distributor takes (a configuration change).
    pub http_body_bytes_max: usize,
    /// The longest WebSocket message a client may send.
    pub ws_message_bytes_max: usize,
    /// Tables one WebSocket client may subscribe to at once.
    pub ws_subscriptions_max: usize,
    /// Failed token authentications one address may make in a minute; beyond them it is
    /// refused (429) until the minute ends.
    pub auth_failures_per_minute_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            public_connections_max: 1_024,
            frame_payload_bytes_max: 4 << 20,
            http_connections_max: 4_096,
            http_body_bytes_max: 4 << 20,
            ws_message_bytes_max: 64 << 10,
            ws_subscriptions_max: 16,
            auth_failures_per_minute_max: 20,
        }
    }
}

/// The most any limit may be raised to: a bound of gigabytes or billions is no bound.
const LIMIT_MAX: usize = 1 << 30;

impl Limits {
    fn validate(&self) -> Result<(), TopologyError> {
        let sizes = [
            ("public_connections_max", self.public_connections_max),
            ("frame_payload_bytes_max", self.frame_payload_bytes_max),
            ("http_connections_max", self.http_connections_max),
            ("http_body_bytes_max", self.http_body_bytes_max),
            ("ws_message_bytes_max", self.ws_message_bytes_max),
            ("ws_subscriptions_max", self.ws_subscriptions_max),
            (
                "auth_failures_per_minute_max",
                self.auth_failures_per_minute_max as usize,
            ),
        ];
        for (name, value) in sizes {
            if value == 0 || value > LIMIT_MAX {
                return Err(TopologyError::Invalid(format!(
                    "limits.{name} is {value}; it must lie within 1..={LIMIT_MAX}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The contact-center configuration; relative paths are from the topology file.
    pub contact_center: PathBuf,
    pub side_a: SideAddresses,
    pub side_b: SideAddresses,
    pub pgs: Vec<PgEntry>,
    #[serde(default)]
    pub distributors: Vec<DistributorEntry>,
    #[serde(default)]
    pub mds: MdsTimers,
    #[serde(default)]
    pub logger: LoggerSettings,
    #[serde(default)]
    pub security: SecuritySettings,
    #[serde(default)]
    pub limits: Limits,
    /// Where the file was read from: relative paths resolve against its directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|e| TopologyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut topology: Topology = toml::from_str(&text).map_err(|e| TopologyError::Toml {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        topology.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        topology.validate()?;
        Ok(topology)
    }

    pub fn distributor(&self, name: &str) -> Result<&DistributorEntry, TopologyError> {
        self.distributors
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.distributors.iter().map(|d| d.name.as_str()).collect();
                TopologyError::Invalid(format!(
                    "no distributor is named {name:?} (the topology has {known:?})"
                ))
            })
    }

    /// The certificates directory, resolved.
    pub fn certs_dir(&self) -> PathBuf {
        self.resolve(&self.security.certs_dir)
    }

    /// The tokens file, resolved.
    pub fn tokens_file(&self) -> PathBuf {
        self.resolve(&self.security.tokens_file)
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a topology always serializes to TOML")
    }

    /// Every address a process of the installation listens on.
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        let mut addresses = Vec::new();
        for side in [&self.side_a, &self.side_b] {
            addresses.extend([
                side.private,
                side.transfer,
                side.public,
                side.metrics,
                side.logger_peer,
            ]);
        }
        addresses.extend(self.distributors.iter().map(|d| d.public));
        addresses
    }

    pub fn validate(&self) -> Result<(), TopologyError> {
        let invalid = |m: String| Err(TopologyError::Invalid(m));
        self.limits.validate()?;
        if self.pgs.is_empty() {
            return invalid("at least one PG is needed for the split-brain guard".into());
        }
        let mut ids: Vec<PgId> = self.pgs.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != self.pgs.len() {
            return invalid("two PGs share an id".into());
        }
        let mut names: Vec<&str> = self.pgs.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != self.pgs.len() {
            return invalid("two PGs share a name".into());
        }
        let mut distributors: Vec<&str> =
            self.distributors.iter().map(|d| d.name.as_str()).collect();
        distributors.sort();
        distributors.dedup();
        if distributors.len() != self.distributors.len() {
            return invalid("two distributors share a name".into());
        }
        let mut addresses = self.listen_addresses();
        let count = addresses.len();
        addresses.sort();
        addresses.dedup();
        if addresses.len() != count {
            return invalid("two listeners share an address".into());
        }
        let t = &self.mds;
        for (name, value) in [
            ("heartbeat_interval_ms", t.heartbeat_interval_ms),
            ("heartbeat_misses_max", t.heartbeat_misses_max),
            ("tick_interval_ms", t.tick_interval_ms),
            ("pg_heartbeat_interval_ms", t.pg_heartbeat_interval_ms),
            ("pg_heartbeat_misses_max", t.pg_heartbeat_misses_max),
            ("lease_ms", t.lease_ms),
        ] {
            if value == 0 {
                return invalid(format!("mds.{name} must be greater than zero"));
            }
        }
        Ok(())
    }

    /// A path from the file, resolved against its directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    pub fn pg_by_name(&self, name: &str) -> Option<&PgEntry> {
        self.pgs.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Topology {
        let side = |port: u16, dir: &str| SideAddresses {
            private: ([127, 0, 0, 1], port).into(),
            transfer: ([127, 0, 0, 1], port + 1).into(),
            public: ([127, 0, 0, 1], port + 2).into(),
            metrics: ([127, 0, 0, 1], port + 3).into(),
            logger_peer: ([127, 0, 0, 1], port + 4).into(),
            data_dir: dir.into(),
            central_db_url: None,
        };
        Topology {
            contact_center: "contact-center.toml".into(),
            side_a: side(41_000, "a"),
            side_b: side(41_010, "b"),
            pgs: vec![PgEntry {
                name: "pg1".into(),
                id: PgId(1),
            }],
            distributors: vec![],
            mds: MdsTimers::default(),
            logger: LoggerSettings::default(),
            security: Default::default(),
            limits: Default::default(),
            base_dir: PathBuf::new(),
        }
    }

    #[test]
    fn a_topology_round_trips_through_toml_and_is_checked() {
        let topology = example();
        let text = topology.to_toml_string();
        let back: Topology = toml::from_str(&text).unwrap();
        assert_eq!(back, topology);
        assert!(topology.validate().is_ok());
        let mut shared = topology.clone();
        shared.side_b.public = shared.side_a.public;
        assert!(shared.validate().is_err());
        let mut none = topology.clone();
        none.pgs.clear();
        assert!(none.validate().is_err());
        let mut zero = topology;
        zero.mds.heartbeat_interval_ms = 0;
        assert!(zero.validate().is_err());
    }
}
