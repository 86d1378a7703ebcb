//! TLS material from PEM files and the rustls configurations built from it
//! (feature `tls`): the node's server configuration and its configuration
//! as a client of other nodes, and the client configuration of the SDK and
//! the `corekv` CLI. One place reads the files, so every caller reports a
//! bad file the same way: naming it and saying what is wrong.
//!
//! Only the `ring` crypto provider is compiled in (never aws-lc); every
//! configuration is built with it explicitly, so the process-wide default
//! provider is never consulted.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The first byte of every TLS connection (a handshake record); a server
/// that sees another first byte on a TLS port is talking to a plain client.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// The largest PEM file read. Certificate chains are a few KiB; the bound
/// keeps a wrong path (`/dev/zero`, a log file) from filling memory.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// What can go wrong building a TLS configuration.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file cannot be used.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file it is (and the setting that named it, when known).
        what: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the one of the certificate.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A name that cannot be checked against a certificate.
    #[error("`{0}` is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName(String),
    /// rustls refused the configuration for another reason.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider every configuration here uses.
///
/// rustls 0.23.48 deprecated the ring provider because it lacks the
/// post-quantum key exchange (X25519MLKEM768) that aws-lc-rs has. corekv keeps
/// ring on purpose: aws-lc is a long C/cmake build on every machine and CI
/// run, and ring's X25519 and P-256 key exchange and AES-GCM/ChaCha20 suites
/// are the classical TLS 1.2/1.3 set every client (redis-cli's OpenSSL
/// included) speaks.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        what: what.to_owned(),
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The bytes of a PEM file, refused past [`MAX_PEM_FILE_BYTES`].
fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| file_error(what, path, e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(file_error(
            what,
            path,
            format!("larger than {MAX_PEM_FILE_BYTES} bytes; is it a PEM file?"),
        ));
    }
    Ok(bytes)
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => e.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The certificates of a PEM file, in order (a chain: the leaf first).
/// `what` names the file in errors (e.g. "TLS certificate file (tls.cert_file)").
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(file_error(
            what,
            path,
            "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem_file(path, what)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => file_error(
            what,
            path,
            "no private key in it (expected a PEM `PRIVATE KEY` block: PKCS#8, PKCS#1 or SEC1)",
        ),
        other => file_error(what, path, pem_reason(&other)),
    })
}

/// The certificate authorities of a PEM file, as a root store.
pub fn read_roots(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| file_error(what, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, read from PEM files.
#[derive(Debug)]
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
        }
    }
}

impl Identity {
    /// Reads `cert` (a PEM chain, leaf first) and `key`; `what` prefixes the
    /// file descriptions in errors ("TLS" gives "TLS certificate file ...").
    /// Whether the two belong together is checked when a configuration is
    /// built from them.
    pub fn load(cert: &Path, key: &Path, cert_what: &str, key_what: &str) -> Result<Identity, TlsError> {
        Ok(Identity {
            certs: read_certs(cert, cert_what)?,
            key: read_key(key, key_what)?,
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
        })
    }

    /// Turns rustls' refusal of this identity into an error naming its files.
    fn refused(&self, e: rustls::Error, key_what: &str) -> TlsError {
        match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: self.cert_path.clone(),
                key: self.key_path.clone(),
            },
            other => file_error(
                key_what,
                &self.key_path,
                format!("unusable key or certificate: {other}"),
            ),
        }
    }
}

/// A server configuration presenting `identity`; with `client_ca`, every
/// client must present a certificate that chains to one of its authorities
/// (mutual TLS), else none is asked for.
pub fn server_config(
    identity: &Identity,
    client_ca: Option<(&Path, &str)>,
    key_what: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let p = provider();
    let builder = ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some((ca, what)) => {
            let roots = Arc::new(read_roots(ca, what)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, p)
                .build()
                .map_err(|e| file_error(what, ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| identity.refused(e, key_what))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting the authorities of `ca` (`ca_what` names
/// it in errors), presenting `identity` when given (for servers that require
/// client certificates).
pub fn client_config(
    ca: &Path,
    ca_what: &str,
    identity: Option<&Identity>,
    key_what: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca, ca_what)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(|e| id.refused(e, key_what))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `name` as a server name to check certificates against: an IP address or
/// a DNS name.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
}

/// The server name of an address `host:port` (or `[v6]:port`): its host,
/// so a node reached by IP must have that IP in its certificate.
pub fn server_name_of(address: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    server_name(host)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn server_names_of_addresses() {
        assert_eq!(
            server_name_of("127.0.0.2:7380").ok(),
            Some(ServerName::IpAddress("127.0.0.2".parse::<IpAddr>().unwrap().into()))
        );
        assert_eq!(
            server_name_of("[::1]:7380").ok(),
            Some(ServerName::IpAddress("::1".parse::<IpAddr>().unwrap().into()))
        );
        assert_eq!(server_name_of("db.example:7380").ok(), server_name("db.example").ok());
        assert!(server_name_of("bad name:1").is_err());
        assert!(server_name("").is_err());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("corekv-net-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = read_certs(&missing, "TLS certificate file").err();
        assert!(
            matches!(&e, Some(TlsError::File { path, .. }) if *path == missing),
            "{e:?}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = read_certs(&junk, "TLS certificate file").map(|_| ()).err();
        assert!(
            matches!(&e, Some(TlsError::File { reason, .. }) if reason.contains("no certificate")),
            "{e:?}"
        );
        let e = read_key(&junk, "TLS key file").map(|_| ()).err();
        assert!(
            matches!(&e, Some(TlsError::File { reason, .. }) if reason.contains("no private key")),
            "{e:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
