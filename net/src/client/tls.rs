//! The client's TLS settings ([`Tls`]): which authorities it trusts, the
//! certificate it presents to nodes that require one (mutual TLS), and the
//! name it checks each node's certificate against.
//!
//! The SDK reaches nodes by the addresses in the ring, which are IP
//! addresses: by default a node's certificate must list the IP address it is
//! reached at (an IP subject alternative name). A cluster whose certificates
//! carry a DNS name instead sets that name with [`Tls::with_server_name`],
//! and every node's certificate is checked against it.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

use crate::tls::{self as pem, Identity, TlsError};

/// TLS settings of a client; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts the certificate authorities in the PEM file `ca_file`; with
    /// `client_cert` (a PEM certificate chain and its PEM private key),
    /// presents that certificate to nodes that ask for one (`tls.ca_file`
    /// set on the node). Fails naming the file that is missing or bad, or
    /// both when the key is not the certificate's.
    pub fn from_pem_files(ca_file: impl AsRef<Path>, client_cert: Option<(&Path, &Path)>) -> Result<Tls, TlsError> {
        let identity = match client_cert {
            Some((cert, key)) => Some(Identity::load(cert, key, "client certificate file", "client key file")?),
            None => None,
        };
        let config = pem::client_config(ca_file.as_ref(), "CA file", identity.as_ref(), "client key file")?;
        Ok(Tls {
            config,
            server_name: None,
        })
    }

    /// Uses a rustls configuration built by the application (its own
    /// verifier, resumption or key log). It must have a crypto provider;
    /// [`crate::tls::provider`] is the one the SDK uses.
    pub fn from_config(config: Arc<ClientConfig>) -> Tls {
        Tls {
            config,
            server_name: None,
        }
    }

    /// Checks every node's certificate against `name` (a DNS name, or an IP
    /// address) instead of the IP address the node is reached at.
    pub fn with_server_name(self, name: &str) -> Result<Tls, TlsError> {
        Ok(Tls {
            server_name: Some(pem::server_name(name)?),
            ..self
        })
    }

    /// The name to check the certificate of the node at `address` against.
    pub(crate) fn name_for(&self, address: &str) -> Result<ServerName<'static>, TlsError> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => pem::server_name_of(address),
        }
    }
}
