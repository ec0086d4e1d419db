//! How a proxy is configured, and why it may fail to start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::upstream::{Upstream, UpstreamError};

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// The database.
    pub upstream: Upstream,
    /// TLS for clients (`SSLRequest` answered `S`); `None` answers `N`.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest message accepted from either side.
    pub max_frame_len: usize,
    /// Limit on reaching the upstream (TCP connect, then TLS).
    pub connect_timeout: Duration,
    /// Limit on a client's startup and authentication, like `authentication_timeout`.
    pub startup_timeout: Duration,
    /// On shutdown, how long busy sessions get to become idle before they are cut.
    pub shutdown_timeout: Duration,
    /// The login capture's catalog connections use for every database and session role
    /// (`--catalog-user`); `None`: each session's own role, with `--upstream`'s password.
    pub catalog_login: Option<CatalogLogin>,
    /// Count statements by command and time them ([`crate::StatementStats`]); on when
    /// metrics are served.
    pub statement_metrics: bool,
}

/// A dedicated, low-privilege login for reading `pg_catalog`; privileges are still checked
/// for each session's role (`has_table_privilege(role, …)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogLogin {
    /// Role name.
    pub user: String,
    /// Its password, when the server asks for one.
    pub password: Option<String>,
}

impl ProxyConfig {
    /// A configuration with the defaults for everything but the two addresses.
    pub fn new(listen: SocketAddr, upstream: Upstream) -> Self {
        Self {
            listen,
            upstream,
            client_tls: None,
            max_frame_len: crate::frame::DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            catalog_login: None,
            statement_metrics: false,
        }
    }
}

/// Loads a PEM certificate chain and private key into a TLS server configuration.
pub fn client_tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ProxyError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: &Path, e: &dyn std::fmt::Display| {
        ProxyError::Tls(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert, &e))?;
    if certs.is_empty() {
        return Err(tls_err(cert, &"no certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| tls_err(cert, &e))?;
    Ok(Arc::new(config))
}

/// Failures starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The upstream settings are unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}
