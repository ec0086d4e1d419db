//! What can go wrong with a data dir, and making one only its owner can read.

use std::path::{Path, PathBuf};

use crate::db::SCHEMA_VERSION;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error.
    #[error("store {path}: {source}")]
    Rocks {
        /// The data dir.
        path: PathBuf,
        /// The error.
        source: rocksdb::Error,
    },
    /// The data dir was written by another layout version.
    #[error("store {path} has schema version {found}, this flux reads version {SCHEMA_VERSION}: use the flux that wrote it, or a new --data-dir (versions 2 and 3 are upgraded in place when flux proxy opens them)")]
    Schema {
        /// The data dir.
        path: PathBuf,
        /// What it holds.
        found: u32,
    },
    /// A stored value could not be decoded.
    #[error("store {path}: corrupt {what} record")]
    Corrupt {
        /// The data dir.
        path: PathBuf,
        /// Which kind of record.
        what: &'static str,
    },
    /// Opening a reader needs a scratch directory.
    #[error("store {path}: {source}")]
    Io {
        /// The data dir.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A reader was asked to write.
    #[error("store {path} was opened for reading; only the proxy's writer writes to it")]
    ReadOnly {
        /// The data dir.
        path: PathBuf,
    },
    /// The writer has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
    /// The data dir can be read by any user; Flux's record holds row images.
    #[error("data dir {path} is readable by every user (mode {mode:o}) and Flux's record holds your rows: chmod 700 {path} (or choose another --data-dir)")]
    Exposed {
        /// The data dir.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Creates the data dir (and missing parents) readable by its owner only, or checks an
/// existing one is not readable by every user. What it records are rows of the database.
pub fn private_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io)?;
    }
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(StoreError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}
