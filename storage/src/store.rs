//! The RocksDB instance and its column families.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteOptions, DB};

use crate::error::{StorageError, StorageResult};

const CF_CATALOG: &str = "catalog";
pub(crate) const CF_LOG: &str = "log";
const CF_CHECKPOINTS: &str = "checkpoints";
/// Table contents by (table id, key): see `table_rows.rs`.
pub(crate) const CF_ROWS: &str = "rows";
/// Per log entry: rows logged through it and the table's row count after
/// it (`LogMeta`).
pub(crate) const CF_LOG_META: &str = "log_meta";
const FAMILIES: [&str; 5] = [CF_CATALOG, CF_LOG, CF_CHECKPOINTS, CF_ROWS, CF_LOG_META];

/// Writes that must land together or not at all: the record of a completed
/// checkpoint and the result-table changes it commits.
#[derive(Debug, Default)]
pub struct Commit {
    /// Tables emptied first, log and rows (a result table whose columns
    /// changed).
    pub log_drops: Vec<u64>,
    /// Result-table changes: log entries with their row changes.
    pub table_writes: Vec<crate::TableWrite>,
    pub checkpoint_puts: Vec<(String, Vec<u8>)>,
    pub checkpoint_deletes: Vec<String>,
    /// Catalog entries written and deleted with the rest (a query's
    /// version changing together with its checkpoints).
    pub catalog_puts: Vec<(String, Vec<u8>)>,
    pub catalog_deletes: Vec<String>,
}

/// One entry of a change log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// Up to `max` entries of log `log_id` from a forward iteration that starts
/// at one of its keys.
pub(crate) fn log_entries<I>(log_id: u64, iter: I, max: usize) -> StorageResult<Vec<LogEntry>>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    let mut out = Vec::new();
    for item in iter {
        let (k, v) = item?;
        if k.len() != 16 || k[..8] != log_id.to_be_bytes() {
            break;
        }
        let mut off = [0u8; 8];
        off.copy_from_slice(&k[8..]);
        out.push(LogEntry {
            offset: u64::from_be_bytes(off),
            payload: v.to_vec(),
        });
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Weir's durable store. Cheap to share behind an `Arc`; RocksDB does its
/// own locking and groups concurrent synced writes into one WAL sync.
pub struct Store {
    pub(crate) db: DB,
    pub(crate) disk: crate::DiskSpace,
}

pub(crate) fn log_key(log_id: u64, offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&log_id.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

pub(crate) fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> StorageResult<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = FAMILIES.into_iter().map(|name| {
            let opts = if name == CF_ROWS {
                crate::table_rows::rows_options()
            } else {
                Options::default()
            };
            ColumnFamilyDescriptor::new(name, opts)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Store {
            db,
            disk: crate::DiskSpace::new(dir),
        })
    }

    pub(crate) fn cf(&self, name: &str) -> StorageResult<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Corrupt(format!("missing column family {name}")))
    }

    /// Writes a catalog entry, synced.
    pub fn put_catalog(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        let cf = self.cf(CF_CATALOG)?;
        self.db.put_cf_opt(cf, key.as_bytes(), value, &synced())?;
        Ok(())
    }

    /// Removes a catalog entry, synced.
    pub fn delete_catalog(&self, key: &str) -> StorageResult<()> {
        let cf = self.cf(CF_CATALOG)?;
        self.db.delete_cf_opt(cf, key.as_bytes(), &synced())?;
        Ok(())
    }

    /// (block cache bytes, memtable bytes) over every column family.
    pub fn memory_usage(&self) -> (u64, u64) {
        let mut cache = 0;
        let mut mem = 0;
        for name in FAMILIES {
            if let Ok(cf) = self.cf(name) {
                cache += self
                    .db
                    .property_int_value_cf(cf, "rocksdb.block-cache-usage")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                mem += self
                    .db
                    .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
        }
        (cache, mem)
    }

    /// One catalog entry.
    pub fn get_catalog(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let cf = self.cf(CF_CATALOG)?;
        Ok(self.db.get_cf(cf, key.as_bytes())?)
    }

    /// All catalog entries, in key order.
    pub fn list_catalog(&self) -> StorageResult<Vec<(String, Vec<u8>)>> {
        let cf = self.cf(CF_CATALOG)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| StorageError::Corrupt("catalog key is not utf-8".into()))?;
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }

    /// Appends one entry to a log, synced before returning. Offsets are
    /// chosen by the caller (the table owning the log serializes appends).
    pub fn append_log(&self, log_id: u64, offset: u64, payload: &[u8]) -> StorageResult<()> {
        let cf = self.cf(CF_LOG)?;
        self.db
            .put_cf_opt(cf, log_key(log_id, offset), payload, &synced())?;
        Ok(())
    }

    /// Reads up to `max_entries` entries with offset >= `from`.
    pub fn read_log(
        &self,
        log_id: u64,
        from: u64,
        max_entries: usize,
    ) -> StorageResult<Vec<LogEntry>> {
        let cf = self.cf(CF_LOG)?;
        let start = log_key(log_id, from);
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward));
        log_entries(log_id, iter, max_entries)
    }

    /// Fails with 53100 (`StorageError::DiskFull`) when writing `bytes`
    /// more would leave less than the reserve free on the data directory's
    /// filesystem.
    pub fn check_space(&self, bytes: u64) -> StorageResult<()> {
        self.disk.check(bytes)
    }

    /// Applies a [`Commit`] atomically, synced.
    pub fn commit(&self, commit: Commit) -> StorageResult<()> {
        let bytes: usize = commit
            .table_writes
            .iter()
            .map(crate::TableWrite::size)
            .sum::<usize>()
            + commit
                .checkpoint_puts
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        self.disk.check(bytes as u64)?;
        let log = self.cf(CF_LOG)?;
        let ckpt = self.cf(CF_CHECKPOINTS)?;
        let mut batch = rocksdb::WriteBatch::default();
        for log_id in &commit.log_drops {
            batch.delete_range_cf(log, log_key(*log_id, 0), log_key(*log_id + 1, 0));
            self.drop_table_rows(&mut batch, *log_id)?;
        }
        for write in &commit.table_writes {
            self.add_table_write(&mut batch, write)?;
        }
        for (k, v) in &commit.checkpoint_puts {
            batch.put_cf(ckpt, k.as_bytes(), v);
        }
        for k in &commit.checkpoint_deletes {
            batch.delete_cf(ckpt, k.as_bytes());
        }
        if !commit.catalog_puts.is_empty() || !commit.catalog_deletes.is_empty() {
            let catalog = self.cf(CF_CATALOG)?;
            for (k, v) in &commit.catalog_puts {
                batch.put_cf(catalog, k.as_bytes(), v);
            }
            for k in &commit.catalog_deletes {
                batch.delete_cf(catalog, k.as_bytes());
            }
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Checkpoint records whose key starts with `prefix`, in key order.
    pub fn list_checkpoint_records(&self, prefix: &str) -> StorageResult<Vec<(String, Vec<u8>)>> {
        let cf = self.cf(CF_CHECKPOINTS)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            cf,
            IteratorMode::From(prefix.as_bytes(), Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| StorageError::Corrupt("checkpoint key is not utf-8".into()))?;
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes a whole log and the table's rows (when its table is
    /// dropped).
    pub fn drop_log(&self, log_id: u64) -> StorageResult<()> {
        let cf = self.cf(CF_LOG)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(cf, log_key(log_id, 0), log_key(log_id + 1, 0));
        self.drop_table_rows(&mut batch, log_id)?;
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "weir-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn log_append_read_reopen() {
        let dir = tmp();
        {
            let s = Store::open(&dir).unwrap();
            assert!(s.read_log(7, 0, 10).unwrap().is_empty());
            for i in 1..=5u64 {
                s.append_log(7, i, format!("e{i}").as_bytes()).unwrap();
            }
            s.append_log(8, 1, b"other").unwrap();
            s.put_catalog("table/t", b"{}").unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.read_log(7, 0, 10).unwrap().last().map(|e| e.offset),
            Some(5)
        );
        let got = s.read_log(7, 3, 10).unwrap();
        assert_eq!(
            got.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(got[0].payload, b"e3");
        assert_eq!(s.read_log(7, 1, 2).unwrap().len(), 2);
        assert_eq!(s.list_catalog().unwrap().len(), 1);
        s.drop_log(7).unwrap();
        assert!(s.read_log(7, 0, 10).unwrap().is_empty());
        assert_eq!(s.read_log(8, 0, 10).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
