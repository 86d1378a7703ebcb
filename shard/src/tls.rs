//! The node's TLS material (`[tls]`, README "Security"), read once at start
//! and shared by every core: the server configuration its TLS listeners
//! use and, in cluster mode, the client configuration its peer pools use to
//! reach other nodes (mutual TLS: each node presents its own certificate
//! and checks the other's against `tls.ca_file`).
//!
//! A missing, unreadable or malformed file, or a key that is not the
//! certificate's, stops the start with an error naming the file
//! ([`Error::SecurityFile`]). Only paths are ever printed.

use std::path::Path;
use std::sync::Arc;

use corekv_net::tls::{self as pem, Identity, TlsError};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use crate::config::{Config, TlsListeners};
use crate::error::{Error, Result};

const CERT: &str = "TLS certificate file (tls.cert_file)";
const KEY: &str = "TLS key file (tls.key_file)";
const CA: &str = "TLS CA file (tls.ca_file)";

/// The node's loaded TLS settings.
#[derive(Debug)]
pub struct NodeTls {
    /// What TLS listeners present and require.
    pub server: Arc<ServerConfig>,
    /// Which listeners use TLS.
    pub listeners: TlsListeners,
    /// How this node connects to other nodes; `None` outside cluster mode.
    pub peer: Option<PeerTls>,
    /// Whether clients must present certificates.
    pub mutual: bool,
}

/// How a node connects to other nodes over TLS.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// Trusts `tls.ca_file`, presents this node's certificate.
    pub config: Arc<ClientConfig>,
    /// The name peers' certificates are checked against; `None`: their IP.
    pub server_name: Option<ServerName<'static>>,
}

/// Equal when they share the configuration (pool options compare).
impl PartialEq for PeerTls {
    fn eq(&self, other: &PeerTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl PeerTls {
    /// The name to check the certificate of the node at `addr` against.
    pub fn name_for(&self, addr: std::net::SocketAddr) -> ServerName<'static> {
        match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        }
    }
}

fn to_error(e: TlsError) -> Error {
    match e {
        TlsError::File { what, path, reason } => Error::SecurityFile {
            what: match what.as_str() {
                CERT => CERT,
                KEY => KEY,
                _ => CA,
            },
            path,
            reason,
        },
        TlsError::KeyMismatch { cert, key } => Error::SecurityFile {
            what: KEY,
            path: key,
            reason: format!("this private key does not match the certificate in {}", cert.display()),
        },
        TlsError::ServerName(name) => Error::InvalidValue {
            key: "tls.server_name".to_owned(),
            value: name,
            reason: "not a DNS name or an IP address".to_owned(),
            origin: crate::error::ConfigOrigin::Default,
        },
        TlsError::Config(reason) => Error::Runtime {
            what: "building the TLS configuration".to_owned(),
            reason,
        },
        // TlsError is non-exhaustive; a new kind still stops the start.
        other => Error::Runtime {
            what: "building the TLS configuration".to_owned(),
            reason: other.to_string(),
        },
    }
}

impl NodeTls {
    /// Reads the files `config` names; `None` when TLS is off.
    pub fn load(config: &Config) -> Result<Option<NodeTls>> {
        let t = &config.tls;
        if !t.enabled() {
            return Ok(None);
        }
        let identity = Identity::load(Path::new(&t.cert_file), Path::new(&t.key_file), CERT, KEY).map_err(to_error)?;
        let ca = (!t.ca_file.is_empty()).then(|| Path::new(&t.ca_file));
        let server = pem::server_config(&identity, ca.map(|p| (p, CA)), KEY).map_err(to_error)?;
        let peer = match (config.cluster.enabled(), ca) {
            (true, Some(ca)) => {
                let server_name = if t.server_name.is_empty() {
                    None
                } else {
                    Some(pem::server_name(&t.server_name).map_err(to_error)?)
                };
                Some(PeerTls {
                    config: pem::client_config(ca, CA, Some(&identity), KEY).map_err(to_error)?,
                    server_name,
                })
            }
            // `Config::validate` requires a CA in cluster mode.
            _ => None,
        };
        Ok(Some(NodeTls {
            server,
            listeners: t.listeners,
            peer,
            mutual: ca.is_some(),
        }))
    }
}
