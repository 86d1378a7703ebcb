//! A connection's authentication state and the checks both listeners share
//! (README, "Security"; docs/protocol.md, "Authentication").
//!
//! A connection starts unauthenticated. With a users file, a client AUTH
//! (native) or AUTH / HELLO AUTH (RESP) binds it to a user, whose grants
//! every request is checked against. With a cluster secret, a node proves
//! it knows the secret (PEER_HELLO, PEER_PROOF) before any node-to-node
//! opcode is served on the connection. Without either setting, nothing is
//! checked, as before.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_net::msg::auth::{peer_mac, verify_peer_mac, PeerChallenge, PeerHello, PeerProof, Role, NONCE_LEN};
use corekv_net::msg::{Op, Request};
use rand::RngCore;

use crate::runtime::Shard;
use crate::security::{Access, User};

/// How long a failed AUTH waits before it is answered: sequential guesses
/// on one connection slow to a few a second.
const FAILED_AUTH_DELAY: Duration = Duration::from_millis(200);

/// The handshake a PEER_HELLO opened, waiting for its PEER_PROOF.
#[derive(Debug)]
struct PendingHello {
    from: String,
    client_nonce: [u8; NONCE_LEN],
    server_nonce: [u8; NONCE_LEN],
}

/// One connection's authentication state.
#[derive(Debug, Default)]
pub struct Session {
    /// A node that proved the cluster secret.
    peer: Cell<bool>,
    /// The client's user, after a successful AUTH.
    user: RefCell<Option<Arc<User>>>,
    hello: RefCell<Option<PendingHello>>,
    /// Whether a refused node-to-node opcode was logged already (once per
    /// connection: a misconfigured node retries often).
    warned: Cell<bool>,
}

/// Why an AUTH failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The node has no users file.
    NoUsers,
    /// Too many failures node-wide in the current window.
    Throttled,
    /// Unknown user or wrong password.
    Wrong,
}

impl Session {
    /// The authenticated user, if any.
    pub fn user(&self) -> Option<Arc<User>> {
        self.user.borrow().clone()
    }

    /// Whether the connection proved the cluster secret.
    pub fn is_peer(&self) -> bool {
        self.peer.get()
    }

    /// Checks `user`'s password (off the executor: the hash is slow) and
    /// binds the connection to the user on success. A failure is logged,
    /// counted against the node's budget and answered after a delay; the
    /// connection keeps the user it had (as Redis does).
    pub async fn login(
        &self,
        shard: &Shard,
        user: &str,
        password: &[u8],
        remote: Option<SocketAddr>,
    ) -> Result<Arc<User>, LoginError> {
        let security = shard.security.clone();
        if security.users.is_none() {
            return Err(LoginError::NoUsers);
        }
        if security.throttled(Instant::now()) {
            tracing::warn!(user, remote = ?remote, "AUTH refused without checking: too many failures this second");
            glommio::timer::sleep(FAILED_AUTH_DELAY).await;
            return Err(LoginError::Throttled);
        }
        let (name, pw) = (user.to_owned(), password.to_vec());
        let s = security.clone();
        let found = glommio::executor()
            .spawn_blocking(move || s.users.as_ref().and_then(|u| u.verify(&name, &pw)))
            .await;
        match found {
            Some(u) => {
                tracing::debug!(user, remote = ?remote, "authenticated");
                *self.user.borrow_mut() = Some(u.clone());
                Ok(u)
            }
            None => {
                security.note_failure(Instant::now());
                tracing::warn!(user, remote = ?remote, "failed authentication");
                glommio::timer::sleep(FAILED_AUTH_DELAY).await;
                Err(LoginError::Wrong)
            }
        }
    }

    /// Answers a PEER_HELLO: the challenge, or why not (the connection
    /// then closes).
    pub fn peer_hello(&self, shard: &Shard, hello: &PeerHello<'_>) -> Result<PeerChallenge, String> {
        let Some(secret) = &shard.security.cluster_secret else {
            return Err(
                "this node has no cluster secret (security.cluster_secret): the nodes' [security] settings differ"
                    .to_owned(),
            );
        };
        let mut server_nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        let server_mac = peer_mac(
            secret.bytes(),
            Role::Server,
            hello.from,
            &hello.client_nonce,
            &server_nonce,
        );
        *self.hello.borrow_mut() = Some(PendingHello {
            from: hello.from.to_owned(),
            client_nonce: hello.client_nonce,
            server_nonce,
        });
        Ok(PeerChallenge {
            server_nonce,
            server_mac,
        })
    }

    /// Checks a PEER_PROOF against the pending PEER_HELLO (one attempt per
    /// hello); on success node-to-node opcodes are served from now on.
    pub fn peer_proof(&self, shard: &Shard, proof: &PeerProof, remote: Option<SocketAddr>) -> Result<(), String> {
        let Some(secret) = &shard.security.cluster_secret else {
            return Err("this node has no cluster secret".to_owned());
        };
        let Some(h) = self.hello.borrow_mut().take() else {
            return Err("PEER_PROOF without a PEER_HELLO before it".to_owned());
        };
        if verify_peer_mac(
            secret.bytes(),
            Role::Client,
            &h.from,
            &h.client_nonce,
            &h.server_nonce,
            &proof.client_mac,
        ) {
            tracing::debug!(from = %h.from, remote = ?remote, "node authenticated");
            self.peer.set(true);
            Ok(())
        } else {
            tracing::warn!(from = %h.from, remote = ?remote, "a node failed the handshake: wrong cluster secret");
            Err("wrong cluster secret".to_owned())
        }
    }

    /// Whether a node-to-node opcode may be served on this connection;
    /// `Err` with the refusal's message. Logs the first refusal.
    pub fn may_serve_peer_op(&self, shard: &Shard, from: &str, remote: Option<SocketAddr>) -> Result<(), String> {
        let sec = &shard.security;
        let refusal = if sec.cluster_secret.is_some() {
            if self.peer.get() {
                return Ok(());
            }
            "node-to-node opcodes need the cluster handshake first (PEER_HELLO, PEER_PROOF): \
             the sender lacks the cluster secret (security.cluster_secret)"
        } else if sec.requires_auth() {
            // Single node with accounts and no secret (config validation
            // refuses accounts without a secret in cluster mode): operator
            // commands come from an admin user.
            match self.user() {
                Some(u) if u.can_all_under(Access::Admin, b"") => return Ok(()),
                Some(_) => "node-to-node and operator opcodes need a user with admin on every key (prefix \"\")",
                None => "authentication required: send AUTH first",
            }
        } else {
            return Ok(());
        };
        if !self.warned.replace(true) {
            tracing::warn!(from, remote = ?remote, "refused a node-to-node request from an unauthenticated connection");
        }
        Err(refusal.to_owned())
    }
}

/// Whether `user` may run `req`; `Err` names the missing right.
pub fn authorize(user: &User, req: &Request<'_>) -> Result<(), String> {
    let need = |access: Access, key: &[u8]| -> Result<(), String> {
        if user.can(access, key) {
            Ok(())
        } else {
            Err(format!(
                "user {} has no {} permission on key '{}'",
                user.name,
                access_name(access),
                String::from_utf8_lossy(key)
            ))
        }
    };
    let under = |access: Access, prefix: &[u8]| -> Result<(), String> {
        if user.can_all_under(access, prefix) {
            Ok(())
        } else {
            Err(format!(
                "user {} has no {} permission on every key with prefix '{}'",
                user.name,
                access_name(access),
                String::from_utf8_lossy(prefix)
            ))
        }
    };
    match req.op {
        Op::Ping | Op::Ring => Ok(()),
        Op::Get { key } | Op::Exists { key } | Op::Ttl { key } | Op::GetVersions { key } | Op::SerialGet { key } => {
            need(Access::Read, key)
        }
        Op::Put { key, .. }
        | Op::Delete { key }
        | Op::Expire { key, .. }
        | Op::PutVersioned { key, .. }
        | Op::DeleteVersioned { key, .. } => need(Access::Write, key),
        // These answer with the key's value or version too.
        Op::Incr { key, .. } | Op::Cas { key, .. } | Op::CasValue { key, .. } => {
            need(Access::Read, key)?;
            need(Access::Write, key)
        }
        Op::MGet { keys } => keys.iter().try_for_each(|k| need(Access::Read, k)),
        Op::MPut { entries, .. } => entries.iter().try_for_each(|kv| need(Access::Write, kv.key)),
        // A token range holds keys of every prefix.
        Op::Scan { .. } => under(Access::Read, b""),
        Op::List { prefix, .. } => under(Access::Read, prefix),
    }
}

/// The right's name in messages.
pub fn access_name(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::Write => "write",
        Access::Admin => "admin",
    }
}
