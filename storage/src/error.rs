use thiserror::Error;

/// Errors from the storage layer. All of them are in the `external` domain
/// (the disk or the RocksDB files), except corrupt entries, which point at a
/// bug or at damaged files.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("storage i/o error: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("could not decode stored batch: {0}")]
    Codec(#[from] arrow::error::ArrowError),
    #[error("corrupt storage entry: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("could not write: disk full ({available} bytes free on the filesystem of {dir}, {reserve} kept in reserve)")]
    DiskFull {
        dir: String,
        available: u64,
        reserve: u64,
    },
}

pub type StorageResult<T> = Result<T, StorageError>;

impl StorageError {
    /// Whether the error is a full disk: refused before writing, or met by
    /// RocksDB or a file write.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::DiskFull { .. } => true,
            StorageError::RocksDb(e) => e.to_string().contains("No space left on device"),
            StorageError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}
