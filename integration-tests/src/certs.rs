//! Self-signed TLS material for tests, written as PEM files.

use std::path::{Path, PathBuf};

/// A certificate and key on disk.
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Writes a self-signed certificate for `localhost`/`127.0.0.1` into `dir`.
pub fn self_signed(dir: &Path, stem: &str) -> CertFiles {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let key = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    let cert = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, key.cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.signing_key.serialize_pem()).expect("write key");
    CertFiles {
        cert,
        key: key_path,
    }
}
