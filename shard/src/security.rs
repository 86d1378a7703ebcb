//! Who may talk to the node: the cluster secret that node-to-node
//! connections prove they know, and the users file of client accounts with
//! their per-prefix permissions (README, "Security").
//!
//! Both are off by default (`[security]` empty): every connection may do
//! everything, as before. [`Security::load`] reads what the configuration
//! names once, before the cores start, and every core shares the result.
//!
//! ## The users file
//!
//! ```toml
//! [[users]]
//! name = "app1"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `corekv hash-password`
//! permissions = [
//!   { prefix = "app1:", read = true, write = true },
//!   { prefix = "shared:", read = true },
//! ]
//! ```
//!
//! corekv has no keyspaces, so a *keyspace* here is a key prefix: a grant
//! applies to every key that starts with its `prefix`, and `""` means every
//! key. A user's rights on a key are the union of the grants whose prefix
//! the key starts with. A request over many keys (MGET, MPUT, DEL of several
//! keys) needs the right on each; a listing needs a grant whose prefix
//! covers the listed prefix (a token-range SCAN covers every key, so it
//! needs a grant on `""`). `admin` allows the operator commands (`corekv
//! status`, `repair`, ...) when they reach the node over a client
//! connection (single-node mode without a cluster secret) and is otherwise
//! reserved.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result};

/// The shortest cluster secret accepted, in bytes: a shorter one could be
/// guessed offline from one recorded handshake.
pub const MIN_SECRET_LEN: usize = 16;

/// Failed AUTH attempts a node hashes per [`FAILURE_WINDOW`]; past that,
/// further attempts in the window are refused without hashing, so a
/// password-guessing flood costs neither the node's CPU nor many guesses.
pub const MAX_FAILURES_PER_WINDOW: u32 = 20;

/// The window of [`MAX_FAILURES_PER_WINDOW`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(1);

/// The shared secret of the cluster's nodes. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: &[u8]) -> ClusterSecret {
        ClusterSecret(Arc::from(bytes))
    }

    /// The secret's bytes (the HMAC key of the handshake).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(redacted)")
    }
}

/// A right a grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read values (GET, MGET, EXISTS, TTL, SCAN, LIST).
    Read,
    /// Write values (PUT, DELETE, EXPIRE, INCR, CAS, MPUT).
    Write,
    /// Operator commands.
    Admin,
}

/// One permission of a user: rights on every key starting with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The key prefix; `""` is every key.
    pub prefix: String,
    /// May read.
    #[serde(default)]
    pub read: bool,
    /// May write.
    #[serde(default)]
    pub write: bool,
    /// May run operator commands.
    #[serde(default)]
    pub admin: bool,
}

impl Grant {
    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
            Access::Admin => self.admin,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default)]
    permissions: Vec<Grant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// An account of the users file.
#[derive(Debug)]
pub struct User {
    /// The name it authenticates with.
    pub name: String,
    /// Its permissions.
    pub grants: Vec<Grant>,
    password_hash: String,
}

impl User {
    /// Whether the user has `access` on `key`.
    pub fn can(&self, access: Access, key: &[u8]) -> bool {
        self.grants
            .iter()
            .any(|g| key.starts_with(g.prefix.as_bytes()) && g.allows(access))
    }

    /// Whether the user has `access` on every key that starts with
    /// `prefix` (one grant must cover them all: its prefix is a prefix of
    /// `prefix`).
    pub fn can_all_under(&self, access: Access, prefix: &[u8]) -> bool {
        self.grants
            .iter()
            .any(|g| prefix.starts_with(g.prefix.as_bytes()) && g.allows(access))
    }
}

/// The accounts of the users file, by name.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
}

impl Users {
    /// Parses a users file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Users> {
        let bad = |reason: String| Error::SecurityFile {
            what: "users file (security.users_file)",
            path: path.to_owned(),
            reason,
        };
        let file: UsersFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut by_name = HashMap::new();
        for u in file.users {
            if u.name.is_empty() {
                return Err(bad("a user has an empty name".to_owned()));
            }
            // Refused at start, not at the first AUTH: a typo in a hash
            // would otherwise lock the user out silently.
            PasswordHash::new(&u.password_hash).map_err(|e| {
                bad(format!(
                    "user `{}`: password_hash is not a PHC string ({e}); write one with `corekv hash-password`",
                    u.name
                ))
            })?;
            let user = Arc::new(User {
                name: u.name.clone(),
                grants: u.permissions,
                password_hash: u.password_hash,
            });
            if by_name.insert(u.name.clone(), user).is_some() {
                return Err(bad(format!("user `{}` appears twice", u.name)));
            }
        }
        Ok(Users { by_name })
    }

    /// Reads and parses the users file at `path`.
    pub fn load(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::SecurityFile {
            what: "users file (security.users_file)",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Users::parse(&text, path)
    }

    /// The user named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.by_name.get(name).cloned()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user if `password` is theirs. Slow on purpose (a password hash,
    /// tens of milliseconds): call it off the executor. An unknown user
    /// costs the same hash, so timing does not tell which names exist.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        match self.by_name.get(name) {
            Some(u) if verify_password(&u.password_hash, password) => Some(u.clone()),
            Some(_) => None,
            None => {
                let _ = verify_password(dummy_hash(), password);
                None
            }
        }
    }
}

/// A hash of no one's password, verified for unknown users so they take as
/// long to refuse as known ones (same algorithm and cost as
/// [`hash_password`]'s). Made once, on the first unknown name.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(b"corekv-no-such-user").unwrap_or_default())
}

/// Hashes a password into a PHC string (Argon2id, the `argon2` crate's
/// default cost, a random 16-byte salt) for the users file.
pub fn hash_password(password: &[u8]) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::PasswordHash { reason: e.to_string() })?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::PasswordHash { reason: e.to_string() })
}

/// Whether `password` matches the PHC string `hash` (any algorithm and
/// cost the `argon2` crate reads from the string).
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
        Err(_) => false,
    }
}

/// The node's security settings, loaded once and shared by every core.
#[derive(Debug, Default)]
pub struct Security {
    /// The cluster secret, when node-to-node connections must prove it.
    pub cluster_secret: Option<ClusterSecret>,
    /// The client accounts, when clients must authenticate.
    pub users: Option<Users>,
    /// TLS on the listeners and between nodes (`[tls]`), when on.
    pub tls: Option<crate::tls::NodeTls>,
    /// Failed AUTH attempts in the current window: (window start, count).
    failures: Mutex<Option<(Instant, u32)>>,
}

impl Security {
    /// Nothing required: the defaults.
    pub fn open() -> Security {
        Security::default()
    }

    /// Reads the secret, the users file and the TLS files that `config` names.
    pub fn load(config: &Config) -> Result<Security> {
        let s = &config.security;
        let cluster_secret = if !s.cluster_secret.is_empty() {
            Some(ClusterSecret::new(s.cluster_secret.as_bytes()))
        } else if !s.cluster_secret_file.is_empty() {
            Some(read_secret_file(Path::new(&s.cluster_secret_file))?)
        } else {
            None
        };
        let users = if s.users_file.is_empty() {
            None
        } else {
            Some(Users::load(Path::new(&s.users_file))?)
        };
        let tls = crate::tls::NodeTls::load(config)?;
        Ok(Security {
            cluster_secret,
            users,
            tls,
            failures: Mutex::new(None),
        })
    }

    /// With the given secret and users (tests, tools).
    pub fn new(cluster_secret: Option<ClusterSecret>, users: Option<Users>) -> Security {
        Security {
            cluster_secret,
            users,
            tls: None,
            failures: Mutex::new(None),
        }
    }

    /// Whether clients must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.users.is_some()
    }

    /// Counts a failed AUTH; false when the window's budget is spent (the
    /// caller then refuses further attempts without hashing).
    pub fn note_failure(&self, now: Instant) -> bool {
        let Ok(mut f) = self.failures.lock() else {
            // A poisoned lock means a panic elsewhere; refusing is the safe side.
            return false;
        };
        match &mut *f {
            Some((start, n)) if now.saturating_duration_since(*start) < FAILURE_WINDOW => {
                *n = n.saturating_add(1);
                *n <= MAX_FAILURES_PER_WINDOW
            }
            _ => {
                *f = Some((now, 1));
                true
            }
        }
    }

    /// Whether failed attempts in the current window already spent its
    /// budget (checked before hashing).
    pub fn throttled(&self, now: Instant) -> bool {
        match self.failures.lock() {
            Ok(f) => matches!(*f, Some((start, n))
                if now.saturating_duration_since(start) < FAILURE_WINDOW && n >= MAX_FAILURES_PER_WINDOW),
            Err(_) => true,
        }
    }
}

/// Reads a secret file: its bytes, less trailing whitespace (an editor's
/// newline must not change the secret).
pub fn read_secret_file(path: &Path) -> Result<ClusterSecret> {
    let bad = |reason: String| Error::SecurityFile {
        what: "cluster secret file (security.cluster_secret_file)",
        path: PathBuf::from(path),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < MIN_SECRET_LEN {
        return Err(bad(format!("the secret must be at least {MIN_SECRET_LEN} bytes")));
    }
    Ok(ClusterSecret::new(&bytes[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password(b"hunter2").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, b"hunter2"));
        assert!(!verify_password(&h, b"hunter3"));
        assert!(!verify_password("not a hash", b"hunter2"));
        let again = hash_password(b"hunter2").unwrap();
        assert_ne!(h, again, "a fresh salt each time");
        assert!(PasswordHash::new(dummy_hash()).is_ok());
    }

    #[test]
    fn users_file_and_permissions() {
        let h = hash_password(b"pw").unwrap();
        let text = format!(
            r#"
[[users]]
name = "ro"
password_hash = "{h}"
permissions = [{{ prefix = "", read = true }}]

[[users]]
name = "app1"
password_hash = "{h}"
permissions = [{{ prefix = "app1:", read = true, write = true }}, {{ prefix = "shared:", read = true }}]
"#
        );
        let users = Users::parse(&text, Path::new("users.toml")).unwrap();
        assert_eq!(users.len(), 2);
        let ro = users.verify("ro", b"pw").unwrap();
        assert!(users.verify("ro", b"nope").is_none());
        assert!(users.verify("ghost", b"pw").is_none());
        assert!(ro.can(Access::Read, b"anything"));
        assert!(!ro.can(Access::Write, b"anything"));
        assert!(ro.can_all_under(Access::Read, b""));
        let app = users.get("app1").unwrap();
        assert!(app.can(Access::Write, b"app1:k"));
        assert!(!app.can(Access::Write, b"shared:k"));
        assert!(app.can(Access::Read, b"shared:k"));
        assert!(!app.can(Access::Read, b"app2:k"));
        assert!(!app.can(Access::Read, b"app1"), "the prefix is the whole grant prefix");
        assert!(app.can_all_under(Access::Read, b"app1:sub"));
        assert!(!app.can_all_under(Access::Read, b"app"));
        assert!(!app.can_all_under(Access::Read, b""));
        assert!(!app.can(Access::Admin, b"app1:k"));

        for bad in [
            "[[users]]\nname = \"x\"\npassword_hash = \"plain\"\n",
            "[[users]]\nname = \"\"\npassword_hash = \"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n",
            "[[users]]\nname = \"x\"\npassword = \"pw\"\n",
            "[[user]]\n",
        ] {
            let err = Users::parse(bad, Path::new("u.toml")).unwrap_err();
            assert!(err.to_string().contains("u.toml"), "{err}");
        }
        let dup = format!(
            "[[users]]\nname = \"a\"\npassword_hash = \"{h}\"\n[[users]]\nname = \"a\"\npassword_hash = \"{h}\"\n"
        );
        assert!(Users::parse(&dup, Path::new("u.toml"))
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn failures_are_budgeted_per_window() {
        let s = Security::open();
        let t = Instant::now();
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            assert!(!s.throttled(t));
            assert!(s.note_failure(t));
        }
        assert!(s.throttled(t));
        assert!(!s.note_failure(t));
        let later = t + FAILURE_WINDOW;
        assert!(!s.throttled(later), "a new window");
        assert!(s.note_failure(later));
    }

    #[test]
    fn secret_files_trim_the_newline_and_refuse_short_secrets() {
        let dir = std::env::temp_dir().join(format!("corekv-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("secret");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().bytes(), b"0123456789abcdef");
        std::fs::write(&p, "short\n").unwrap();
        assert!(read_secret_file(&p).is_err());
        assert!(read_secret_file(&dir.join("missing")).is_err());
        assert_eq!(format!("{:?}", ClusterSecret::new(b"x")), "ClusterSecret(redacted)");
    }
}
