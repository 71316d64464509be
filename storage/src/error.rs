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
}

pub type StorageResult<T> = Result<T, StorageError>;

impl StorageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}
