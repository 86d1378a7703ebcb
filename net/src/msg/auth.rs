//! Authentication messages: the client AUTH request and the node-to-node
//! challenge-response handshake (docs/protocol.md, "Authentication").
//!
//! These messages live outside [`super::Op`] and [`super::peer::PeerOp`]:
//! they change a connection's state rather than the data, and a server
//! handles them before it decodes anything else on the connection. A server
//! that predates them answers `UNKNOWN_OPCODE`, which a client reports as
//! "this node does not support authentication".
//!
//! ## Format
//!
//! ```text
//! AUTH        0x14 request   user str | password bytes            -> OK, or ERROR AUTH_FAILED
//! PEER_HELLO  0x7E request   from str | client_nonce [32]         -> server_nonce [32] | server_mac [32]
//! PEER_PROOF  0x7F request   client_mac [32]                      -> empty
//! ```
//!
//! The MACs are HMAC-SHA256 keyed with the cluster secret over
//! `label | len(from) u16 | from | client_nonce | server_nonce`, with the
//! label `corekv-peer-server-v1` for the server's MAC and
//! `corekv-peer-client-v1` for the client's. Each side proves it knows the
//! secret over a nonce the other side chose fresh for this connection, so
//! the secret never crosses the wire and a recorded handshake replayed on a
//! new connection fails (the other side's nonce differs).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::codec::{put_bytes, Reader};
use super::Limits;
use crate::error::FrameError;
use crate::frame::{encode_frame, Flags};

/// Opcode of the client AUTH request (client range).
pub const AUTH: u8 = 0x14;
/// Opcode of the first node-to-node handshake message (replication range).
pub const PEER_HELLO: u8 = 0x7E;
/// Opcode of the second node-to-node handshake message.
pub const PEER_PROOF: u8 = 0x7F;

/// Bytes of each handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of each handshake MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Longest user name or password an AUTH carries: a limit on what a server
/// buffers and hashes before the connection is authenticated.
pub const MAX_CREDENTIAL: u32 = 1024;

const SERVER_LABEL: &[u8] = b"corekv-peer-server-v1";
const CLIENT_LABEL: &[u8] = b"corekv-peer-client-v1";

/// Which side of the handshake a MAC proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that accepted the connection.
    Server,
    /// The node (or tool) that opened it.
    Client,
}

/// The handshake MAC of `role` (see the module docs).
pub fn peer_mac(
    secret: &[u8],
    role: Role,
    from: &str,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
) -> [u8; MAC_LEN] {
    let mut mac = keyed(secret);
    feed(&mut mac, role, from, client_nonce, server_nonce);
    mac.finalize().into_bytes().into()
}

/// Whether `got` is the MAC of `role`; compared in constant time so a
/// forger learns nothing from how long a refusal took.
pub fn verify_peer_mac(
    secret: &[u8],
    role: Role,
    from: &str,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    got: &[u8],
) -> bool {
    let mut mac = keyed(secret);
    feed(&mut mac, role, from, client_nonce, server_nonce);
    mac.verify_slice(got).is_ok()
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (longer ones are hashed first), so
    // `new_from_slice` cannot fail; the fallback keeps this panic-free anyway.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()))
}

fn feed(mac: &mut Hmac<Sha256>, role: Role, from: &str, cn: &[u8; NONCE_LEN], sn: &[u8; NONCE_LEN]) {
    mac.update(match role {
        Role::Server => SERVER_LABEL,
        Role::Client => CLIENT_LABEL,
    });
    // Length-prefixed so `from` cannot absorb bytes of the nonces.
    let len = u16::try_from(from.len()).unwrap_or(u16::MAX);
    mac.update(&len.to_le_bytes());
    mac.update(from.as_bytes());
    mac.update(cn);
    mac.update(sn);
}

/// A client's AUTH request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    /// User name.
    pub user: &'a str,
    /// Password, as typed (the server hashes it to compare).
    pub password: &'a [u8],
}

impl<'a> AuthRequest<'a> {
    /// Appends a whole AUTH request frame.
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, AUTH, Flags::default(), request_id, |b| {
            put_bytes(b, self.user.as_bytes());
            put_bytes(b, self.password);
        })
    }

    /// Decodes an AUTH request body.
    pub fn decode_body(body: &'a [u8], limits: &Limits) -> Result<AuthRequest<'a>, FrameError> {
        let mut r = Reader::new(body, AUTH, *limits);
        let user = r.str("user length", MAX_CREDENTIAL)?;
        let password = r.bytes("password length", MAX_CREDENTIAL)?;
        r.finish()?;
        Ok(AuthRequest { user, password })
    }
}

/// The opening node's PEER_HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHello<'a> {
    /// The sender's node id (or `corekv-cli`).
    pub from: &'a str,
    /// A fresh random nonce.
    pub client_nonce: [u8; NONCE_LEN],
}

fn fixed<const N: usize>(r: &mut Reader<'_>, what: &'static str) -> Result<[u8; N], FrameError> {
    let mut out = [0u8; N];
    for b in &mut out {
        *b = r.u8().map_err(|_| r.malformed(what))?;
    }
    Ok(out)
}

impl<'a> PeerHello<'a> {
    /// Appends a whole PEER_HELLO request frame.
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, PEER_HELLO, Flags::default(), request_id, |b| {
            put_bytes(b, self.from.as_bytes());
            b.extend_from_slice(&self.client_nonce);
        })
    }

    /// Decodes a PEER_HELLO body.
    pub fn decode_body(body: &'a [u8], limits: &Limits) -> Result<PeerHello<'a>, FrameError> {
        let mut r = Reader::new(body, PEER_HELLO, *limits);
        let from = r.str("from length", limits.max_key.min(u32::from(u16::MAX)))?;
        let client_nonce = fixed(&mut r, "PEER_HELLO nonce cut short")?;
        r.finish()?;
        Ok(PeerHello { from, client_nonce })
    }
}

/// The accepting node's answer to PEER_HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerChallenge {
    /// A fresh random nonce.
    pub server_nonce: [u8; NONCE_LEN],
    /// [`peer_mac`] with [`Role::Server`].
    pub server_mac: [u8; MAC_LEN],
}

impl PeerChallenge {
    /// Appends the whole response frame.
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, PEER_HELLO, Flags::RESPONSE, request_id, |b| {
            b.extend_from_slice(&self.server_nonce);
            b.extend_from_slice(&self.server_mac);
        })
    }

    /// Decodes the response body.
    pub fn decode_body(body: &[u8]) -> Result<PeerChallenge, FrameError> {
        let mut r = Reader::new(body, PEER_HELLO, Limits::default());
        let server_nonce = fixed(&mut r, "PEER_HELLO answer cut short")?;
        let server_mac = fixed(&mut r, "PEER_HELLO answer cut short")?;
        r.finish()?;
        Ok(PeerChallenge {
            server_nonce,
            server_mac,
        })
    }
}

/// The opening node's PEER_PROOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProof {
    /// [`peer_mac`] with [`Role::Client`].
    pub client_mac: [u8; MAC_LEN],
}

impl PeerProof {
    /// Appends a whole PEER_PROOF request frame.
    pub fn encode_frame(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(out, PEER_PROOF, Flags::default(), request_id, |b| {
            b.extend_from_slice(&self.client_mac)
        })
    }

    /// Decodes a PEER_PROOF body.
    pub fn decode_body(body: &[u8]) -> Result<PeerProof, FrameError> {
        let mut r = Reader::new(body, PEER_PROOF, Limits::default());
        let client_mac = fixed(&mut r, "PEER_PROOF cut short")?;
        r.finish()?;
        Ok(PeerProof { client_mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn one_frame(bytes: &[u8]) -> (u8, Vec<u8>) {
        let mut dec = FrameDecoder::new(1 << 20);
        let spare = dec.spare(bytes.len());
        spare[..bytes.len()].copy_from_slice(bytes);
        dec.commit(bytes.len());
        let f = dec.next_frame().unwrap().unwrap();
        (f.header.opcode, f.body.to_vec())
    }

    #[test]
    fn messages_round_trip() {
        let mut b = Vec::new();
        AuthRequest {
            user: "alice",
            password: b"pw",
        }
        .encode_frame(7, &mut b)
        .unwrap();
        let (op, body) = one_frame(&b);
        assert_eq!(op, AUTH);
        let a = AuthRequest::decode_body(&body, &Limits::default()).unwrap();
        assert_eq!((a.user, a.password), ("alice", &b"pw"[..]));

        let hello = PeerHello {
            from: "node-1",
            client_nonce: [3; 32],
        };
        b.clear();
        hello.encode_frame(1, &mut b).unwrap();
        let (op, body) = one_frame(&b);
        assert_eq!(op, PEER_HELLO);
        assert_eq!(PeerHello::decode_body(&body, &Limits::default()).unwrap(), hello);

        let ch = PeerChallenge {
            server_nonce: [1; 32],
            server_mac: [2; 32],
        };
        b.clear();
        ch.encode_frame(1, &mut b).unwrap();
        let (_, body) = one_frame(&b);
        assert_eq!(PeerChallenge::decode_body(&body).unwrap(), ch);

        let p = PeerProof { client_mac: [9; 32] };
        b.clear();
        p.encode_frame(2, &mut b).unwrap();
        let (op, body) = one_frame(&b);
        assert_eq!(op, PEER_PROOF);
        assert_eq!(PeerProof::decode_body(&body).unwrap(), p);
    }

    #[test]
    fn short_or_long_bodies_are_malformed_not_panics() {
        for len in 0..80 {
            let body = vec![0x05u8; len];
            let _ = AuthRequest::decode_body(&body, &Limits::default());
            let _ = PeerHello::decode_body(&body, &Limits::default());
            assert_eq!(PeerChallenge::decode_body(&body).is_ok(), len == 64);
            assert_eq!(PeerProof::decode_body(&body).is_ok(), len == 32);
        }
    }

    #[test]
    fn macs_bind_the_secret_the_role_and_both_nonces() {
        let (cn, sn) = ([1u8; 32], [2u8; 32]);
        let m = peer_mac(b"secret", Role::Server, "n1", &cn, &sn);
        assert!(verify_peer_mac(b"secret", Role::Server, "n1", &cn, &sn, &m));
        assert!(
            !verify_peer_mac(b"other", Role::Server, "n1", &cn, &sn, &m),
            "wrong secret"
        );
        assert!(
            !verify_peer_mac(b"secret", Role::Client, "n1", &cn, &sn, &m),
            "reflected"
        );
        assert!(
            !verify_peer_mac(b"secret", Role::Server, "n2", &cn, &sn, &m),
            "other sender"
        );
        assert!(
            !verify_peer_mac(b"secret", Role::Server, "n1", &cn, &[3; 32], &m),
            "replayed with a new server nonce"
        );
        assert!(
            !verify_peer_mac(b"secret", Role::Server, "n1", &[4; 32], &sn, &m),
            "replayed with a new client nonce"
        );
        assert!(!verify_peer_mac(b"secret", Role::Server, "n1", &cn, &sn, &m[..31]));
    }
}
