//! The upstream database: its address from a `postgres://` URL, TLS per `sslmode`, and
//! opening a connection to it.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::Stream;

/// libpq's `sslmode` values, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without verification (libpq tries plain first; we
    /// try TLS first, which is what `prefer` does, because it is the safer outcome).
    Allow,
    /// TLS if the server offers it, without verification (libpq's default).
    Prefer,
    /// TLS required, certificate not verified.
    Require,
    /// TLS required, certificate chain verified against `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the host name must match the certificate.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = UpstreamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(UpstreamError::Url(format!("unknown sslmode {other:?}"))),
        })
    }
}

/// Failures reaching or configuring the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream URL could not be used.
    #[error("invalid upstream URL: {0}")]
    Url(String),
    /// TCP connect failed or timed out.
    #[error("could not connect to upstream {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// TLS negotiation failed or was refused.
    #[error("TLS to upstream {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Where and how to reach the database. The URL gives host, port and defaults; the
/// user and database a client asks for win over the URL's.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Host name or IP address, or (starting with `/`) the directory of a Unix socket,
    /// as libpq has it (`postgres:///app?host=/var/run/postgresql`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User for clients that send none.
    pub user: Option<String>,
    /// Database for clients that send none.
    pub database: Option<String>,
    /// Password for the proxy's own catalog connection (capture). Clients always
    /// authenticate end to end; this is never used for their sessions.
    pub password: Option<String>,
    /// TLS policy.
    pub sslmode: SslMode,
    /// CA bundle (PEM) for `verify-ca`/`verify-full`.
    pub sslrootcert: Option<PathBuf>,
}

impl FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|e| UpstreamError::Url(format!("{s}: {e}")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(UpstreamError::Url(format!(
                "{s}: scheme must be postgres:// or postgresql://"
            )));
        }
        let decode = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let database = Some(decode(url.path().trim_start_matches('/'))).filter(|d| !d.is_empty());
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        let mut host = host;
        let mut port = url.port().unwrap_or(5432);
        for (k, v) in url.query_pairs() {
            match &*k {
                "host" => host = v.into_owned(),
                "port" => {
                    port = v.parse().map_err(|_| {
                        UpstreamError::Url(format!("{s}: port {v:?} is not a number"))
                    })?
                }
                "sslmode" => sslmode = v.parse()?,
                "sslrootcert" => sslrootcert = Some(PathBuf::from(&*v)),
                _ => {}
            }
        }
        // Clients authenticate end to end; a password here only serves the catalog
        // connection capture uses to read primary keys.
        let password = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        Ok(Upstream {
            host,
            port,
            user,
            database,
            password,
            sslmode,
            sslrootcert,
        })
    }
}

impl Upstream {
    /// The Unix socket path, when the host is a directory.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.host
            .starts_with('/')
            .then(|| PathBuf::from(&self.host).join(format!(".s.PGSQL.{}", self.port)))
    }

    /// `host:port` (or the socket path), for messages.
    pub fn addr(&self) -> String {
        if let Some(path) = self.socket_path() {
            return path.display().to_string();
        }
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Builds the TLS client configuration this upstream needs (`None` for `disable`,
    /// and for Unix sockets, which PostgreSQL never encrypts).
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, UpstreamError> {
        if self.socket_path().is_some() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.tls_err(e))?;
        let config = match self.sslmode {
            SslMode::Disable => return Ok(None),
            SslMode::Allow | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    chain: None,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let path = self.sslrootcert.as_ref().ok_or_else(|| {
                    UpstreamError::Url(format!(
                        "sslmode={:?} needs sslrootcert=PATH (a PEM CA bundle) in the upstream URL",
                        self.sslmode
                    ))
                })?;
                let mut roots = rustls::RootCertStore::empty();
                use rustls::pki_types::pem::PemObject;
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| self.tls_err(e))? {
                    roots
                        .add(cert.map_err(|e| self.tls_err(e))?)
                        .map_err(|e| self.tls_err(e))?;
                }
                let algorithms = provider.signature_verification_algorithms;
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| self.tls_err(e))?;
                let verifier: Arc<dyn ServerCertVerifier> = if self.sslmode == SslMode::VerifyCa {
                    Arc::new(Lenient {
                        chain: Some(webpki),
                        algorithms,
                    })
                } else {
                    webpki
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(Some(Arc::new(config)))
    }

    fn tls_err(&self, e: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Tls {
            addr: self.addr(),
            reason: e.to_string(),
        }
    }

    /// Opens a connection, negotiating TLS as `sslmode` says.
    pub async fn connect(
        &self,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Stream, UpstreamError> {
        let addr = self.addr();
        let connect_err = |reason: String| UpstreamError::Connect {
            addr: addr.clone(),
            reason,
        };
        if let Some(path) = self.socket_path() {
            let unix = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&path))
                .await
                .map_err(|_| connect_err(format!("timed out after {timeout:?}")))?
                .map_err(|e| connect_err(e.to_string()))?;
            return Ok(Stream::Unix(unix));
        }
        let mut tcp =
            tokio::time::timeout(timeout, TcpStream::connect((self.host.as_str(), self.port)))
                .await
                .map_err(|_| connect_err(format!("timed out after {timeout:?}")))?
                .map_err(|e| connect_err(e.to_string()))?;
        // Small request/response messages dominate; Nagle would add latency to each.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        // SSLRequest: length 8, code 80877103.
        let negotiate = async {
            tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
            tcp.read_u8().await
        };
        let answer = tokio::time::timeout(timeout, negotiate)
            .await
            .map_err(|_| self.tls_err("no answer to SSLRequest"))?
            .map_err(|e| connect_err(e.to_string()))?;
        match answer {
            b'S' => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| self.tls_err(e))?;
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| self.tls_err("handshake timed out"))?
                    .map_err(|e| self.tls_err(e))?;
                Ok(Stream::Tls(Box::new(stream.into())))
            }
            b'N' if matches!(self.sslmode, SslMode::Allow | SslMode::Prefer) => {
                Ok(Stream::Plain(tcp))
            }
            b'N' => Err(self.tls_err(format!(
                "the server does not accept TLS but sslmode={:?} requires it",
                self.sslmode
            ))),
            other => Err(self.tls_err(format!("unexpected answer {other:#04x} to SSLRequest"))),
        }
    }
}

/// The verifier of the lenient modes: `sslmode=require` (and `allow`, `prefer`) accept any
/// certificate, as libpq does (`chain: None`); `verify-ca` verifies the chain but not the
/// host name. Either way the handshake's signatures are checked with the provider's
/// algorithms, so the peer holds the certificate's key.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u: Upstream = "postgres://alice@db.internal:6543/app?sslmode=require"
            .parse()
            .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("db.internal", 6543));
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.database.as_deref(), Some("app"));
        assert_eq!(u.sslmode, SslMode::Require);
        let u: Upstream = "postgresql://127.0.0.1".parse().unwrap();
        assert_eq!(
            (u.port, u.user, u.database, u.sslmode),
            (5432, None, None, SslMode::Prefer)
        );
        let u: Upstream = "postgres://a%40b@[::1]:5/d%20b".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.user.as_deref(), u.database.as_deref()),
            ("::1", Some("a@b"), Some("d b"))
        );
        assert_eq!(u.addr(), "[::1]:5");
        let u: Upstream = "postgres:///app?host=/var/run/postgresql&port=5433"
            .parse()
            .unwrap();
        assert_eq!(u.addr(), "/var/run/postgresql/.s.PGSQL.5433");
        assert_eq!(u.database.as_deref(), Some("app"));
        assert!(u.tls_config().unwrap().is_none());
        assert!("http://x".parse::<Upstream>().is_err());
        assert!("postgres://x/?sslmode=maybe".parse::<Upstream>().is_err());
    }
}
