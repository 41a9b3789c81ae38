//! Who may use rtclient's HTTP and WebSocket API: tokens with a role, stored hashed, and the
//! cluster's certificates.
//!
//! - A token is `tdm_<id>_<secret>`. The tokens file keeps, per token, its id, the name of its
//!   holder, its role and the BLAKE3 hash of its secret; the secret itself is printed once, by
//!   `tandem token create`, and stored nowhere. The file is read again when it changes, so a
//!   token created or revoked takes effect within `TOKENS_RELOAD_MS` on every distributor.
//! - A viewer reads real-time data and the configuration; an admin may also change the
//!   configuration. A client certificate from the cluster CA (another distributor, an
//!   operator's tools) reads like a viewer.
//! - Failed authentications are counted per address: beyond a bound of them in
//!   a minute, that address is answered 429 until the minute ends, however good its token.
//!   The bound is `limits.auth_failures_per_minute_max` of the topology.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// The prefix of every token, so that one found in a log or a paste is recognizable.
pub const TOKEN_PREFIX: &str = "tdm";
/// Random bytes in a token's id and in its secret.
const TOKEN_ID_BYTES: usize = 8;
const TOKEN_SECRET_BYTES: usize = 32;
/// How often the tokens file is checked for changes, at most.
pub const TOKENS_RELOAD_MS: u64 = 1_000;
/// The most tokens a tokens file may hold.
pub const TOKENS_MAX: usize = 10_000;
/// The longest tokens file read.
pub const TOKENS_FILE_BYTES_MAX: u64 = 4 << 20;
/// Addresses whose failures are remembered; beyond this the oldest windows are forgotten.
pub const AUTH_FAILURE_ADDRESSES_MAX: usize = 10_000;
const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Reads real-time data and the configuration.
    Viewer,
    /// Also changes the configuration.
    Admin,
}

impl TokenRole {
    pub fn parse(text: &str) -> Option<TokenRole> {
        match text {
            "viewer" => Some(TokenRole::Viewer),
            "admin" => Some(TokenRole::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Viewer => "viewer",
            TokenRole::Admin => "admin",
        }
    }
}

/// One token as the file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub id: String,
    /// Who holds it (recorded with every configuration change made with it).
    pub name: String,
    pub role: TokenRole,
    /// BLAKE3 of the secret, hex.
    pub blake3: String,
    pub created_unix_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("a token holder's name is 1 to 64 letters, digits, '-', '_', '.' or '@', not {0:?}")]
    BadName(String),
    #[error("{0} tokens exist, the most a tokens file holds")]
    TooMany(usize),
    #[error("no token has the id {0:?}")]
    UnknownId(String),
}

fn file_error(path: &Path, message: impl ToString) -> TokenError {
    TokenError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn read_file(path: &Path) -> Result<TokensFile, TokenError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
        Err(e) => return Err(file_error(path, e)),
        Ok(meta) if meta.len() > TOKENS_FILE_BYTES_MAX => {
            return Err(file_error(
                path,
                format!("longer than {TOKENS_FILE_BYTES_MAX} bytes"),
            ))
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let file: TokensFile = toml::from_str(&text).map_err(|e| file_error(path, e))?;
    if file.token.len() > TOKENS_MAX {
        return Err(file_error(path, format!("more than {TOKENS_MAX} tokens")));
    }
    Ok(file)
}

fn write_file(path: &Path, file: &TokensFile) -> Result<(), TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = toml::to_string(file).map_err(|e| file_error(path, e))?;
    // Written aside and renamed, so a distributor never reads half a file.
    let temporary = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&temporary);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| file_error(&temporary, e))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| file_error(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| file_error(path, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut buffer);
    hex(&buffer)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Creates a token for `name` with `role` in the tokens file and returns it: the only time
/// the secret is seen.
pub fn create(
    path: &Path,
    role: TokenRole,
    name: &str,
) -> Result<(TokenEntry, String), TokenError> {
    if !valid_name(name) {
        return Err(TokenError::BadName(name.to_string()));
    }
    let mut file = read_file(path)?;
    if file.token.len() >= TOKENS_MAX {
        return Err(TokenError::TooMany(file.token.len()));
    }
    let id = random_hex(TOKEN_ID_BYTES);
    let secret = random_hex(TOKEN_SECRET_BYTES);
    let entry = TokenEntry {
        id: id.clone(),
        name: name.to_string(),
        role,
        blake3: blake3::hash(secret.as_bytes()).to_hex().to_string(),
        created_unix_ms: unix_ms(),
    };
    file.token.push(entry.clone());
    write_file(path, &file)?;
    Ok((entry, format!("{TOKEN_PREFIX}_{id}_{secret}")))
}

/// Every token's entry (no secrets: the file has none).
pub fn list(path: &Path) -> Result<Vec<TokenEntry>, TokenError> {
    Ok(read_file(path)?.token)
}

/// Removes the token with `id`.
pub fn revoke(path: &Path, id: &str) -> Result<TokenEntry, TokenError> {
    let mut file = read_file(path)?;
    let index = file
        .token
        .iter()
        .position(|t| t.id == id)
        .ok_or_else(|| TokenError::UnknownId(id.to_string()))?;
    let entry = file.token.remove(index);
    write_file(path, &file)?;
    Ok(entry)
}

/// The tokens of one installation, read again when the file changes.
pub struct TokenStore {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    /// By id.
    tokens: BTreeMap<String, TokenEntry>,
}

impl TokenStore {
    pub fn new(path: PathBuf) -> TokenStore {
        TokenStore {
            path,
            loaded: Mutex::new(Loaded::default()),
        }
    }

    /// The holder of `token`, if it is a valid token.
    pub fn verify(&self, token: &str) -> Option<TokenEntry> {
        let mut parts = token.splitn(3, '_');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        self.refresh(&mut loaded);
        let entry = loaded.tokens.get(id)?;
        let stored = blake3::Hash::from_hex(&entry.blake3).ok()?;
        // blake3::Hash compares in constant time.
        (blake3::hash(secret.as_bytes()) == stored).then(|| entry.clone())
    }

    fn refresh(&self, loaded: &mut Loaded) {
        let now = Instant::now();
        if loaded
            .checked
            .is_some_and(|at| now.duration_since(at) < Duration::from_millis(TOKENS_RELOAD_MS))
        {
            return;
        }
        loaded.checked = Some(now);
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some() && modified == loaded.modified {
            return;
        }
        match read_file(&self.path) {
            Ok(file) => {
                loaded.modified = modified;
                loaded.tokens = file.token.into_iter().map(|t| (t.id.clone(), t)).collect();
            }
            // A broken file keeps the tokens read before; the error is in the log.
            Err(e) => tracing::warn!("tokens: {e}"),
        }
    }
}

/// Failed authentications per address, in one-minute windows.
pub struct AuthFailures {
    per_minute_max: u32,
    windows: Mutex<BTreeMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    /// At most `per_minute_max` failures per address and minute.
    pub fn new(per_minute_max: u32) -> AuthFailures {
        AuthFailures {
            per_minute_max,
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `addr` used up its failures for this minute (and for how many more seconds).
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (started, failures) = windows.get(&addr)?;
        let elapsed = now.duration_since(*started);
        (elapsed < AUTH_FAILURE_WINDOW && *failures >= self.per_minute_max)
            .then(|| (AUTH_FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    pub fn record(&self, addr: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if !windows.contains_key(&addr) && windows.len() >= AUTH_FAILURE_ADDRESSES_MAX {
            windows.retain(|_, (started, _)| now.duration_since(*started) < AUTH_FAILURE_WINDOW);
            if windows.len() >= AUTH_FAILURE_ADDRESSES_MAX {
                // Still full of live windows: forget the oldest.
                if let Some(oldest) = windows.iter().min_by_key(|(_, (s, _))| *s).map(|(a, _)| *a) {
                    windows.remove(&oldest);
                }
            }
        }
        let window = windows.entry(addr).or_insert((now, 0));
        if now.duration_since(window.0) >= AUTH_FAILURE_WINDOW {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_verifies_and_a_revoked_one_does_not() {
        let dir = std::env::temp_dir().join(format!("tandem-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.toml");
        let _ = std::fs::remove_file(&path);
        let (entry, token) = create(&path, TokenRole::Admin, "alice").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let secret = token.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "the file holds the secret: {text}");
        let store = TokenStore::new(path.clone());
        assert_eq!(store.verify(&token).unwrap().name, "alice");
        assert_eq!(store.verify(&token).unwrap().role, TokenRole::Admin);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(store.verify(&forged).is_none());
        assert!(store.verify("tdm_nothing").is_none());
        assert!(store.verify("").is_none());
        revoke(&path, &entry.id).unwrap();
        // A new store reads the file as it is now.
        assert!(TokenStore::new(path.clone()).verify(&token).is_none());
        assert!(matches!(
            create(&path, TokenRole::Viewer, "bad name"),
            Err(TokenError::BadName(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_beyond_the_limit_block_the_address_for_the_minute() {
        const MAX: u32 = 20;
        let failures = AuthFailures::new(MAX);
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let start = Instant::now();
        for _ in 0..MAX - 1 {
            failures.record(addr, start);
        }
        assert!(failures.blocked(addr, start).is_none());
        failures.record(addr, start);
        assert!(failures.blocked(addr, start).is_some());
        assert!(failures.blocked(other, start).is_none());
        assert!(failures
            .blocked(addr, start + AUTH_FAILURE_WINDOW)
            .is_none());
    }
}
