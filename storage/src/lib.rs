//! `weir-storage` owns Weir's durable bytes: one RocksDB instance holding the
//! catalog (one entry per table and streaming query) and the change logs of
//! tables (append-only, addressed by `(log id, offset)`).
//!
//! Storage never sees operators or SQL: it stores opaque entries and Arrow
//! record batches encoded as Arrow IPC. Entry points: [`Store::open`],
//! [`Store::append_log`], [`Store::read_log`], [`Store::put_catalog`].
//! Every write here is synced to the write-ahead log before it returns, so a
//! caller may acknowledge it to a client.
//!
//! Checkpoints: [`Store::commit`] writes a checkpoint's record together with
//! the result-table changes it commits, in one atomic synced batch;
//! [`StateDb`] keeps a query's keyed state for the RocksDB state backend and
//! cuts incremental checkpoints (hard-linked SST files) from it;
//! [`state_file`] is the checksummed file format of full snapshots.

mod codec;
mod disk_space;
mod error;
mod state_db;
pub mod state_file;
mod store;
mod table_rows;

pub use codec::{decode_batch, encode_batch};
pub use disk_space::{space, DiskSpace};
pub use error::{StorageError, StorageResult};
pub use state_db::{dir_size, key_prefix, StateDb};
pub use store::{Commit, LogEntry, Store};
pub use table_rows::{LogMeta, StoreSnapshot, TableWrite};
