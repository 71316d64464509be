//! Table contents on disk.
//!
//! A table's rows live in the `rows` column family under
//! `table id (8 bytes, big-endian) ++ key`, where the key is the caller's
//! order-preserving encoding (the primary key, or the whole row of a table
//! without one). Every change reaches the rows in the same atomic, synced
//! batch as its change-log entry and that entry's [`LogMeta`], so the rows
//! are always exactly the log applied through its last entry, and opening a
//! table reads neither: only the last `LogMeta`.
//!
//! Logs are truncated from the front ([`Store::truncate_log`]) once no
//! reader needs the entries; the `LogMeta` of the last entry is always kept.

use std::ops::Bound;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Direction, IteratorMode, Options, ReadOptions, WriteBatch, DB};

use crate::error::{StorageError, StorageResult};
use crate::store::{log_key, synced, Store, CF_LOG, CF_LOG_META, CF_ROWS};

/// What is known of a table at one offset of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogMeta {
    /// Rows logged from the beginning through this entry (for source lag).
    pub rows_logged: u64,
    /// Rows in the table after this entry (a multiset row counts as often
    /// as it occurs).
    pub row_count: u64,
}

impl LogMeta {
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.rows_logged.to_be_bytes());
        b[8..].copy_from_slice(&self.row_count.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> StorageResult<LogMeta> {
        if b.len() != 16 {
            return Err(StorageError::Corrupt(format!(
                "log meta entry of {} bytes, expected 16",
                b.len()
            )));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        Ok(LogMeta {
            rows_logged: word(0),
            row_count: word(8),
        })
    }
}

/// One change of a table: its log entry and what it does to the rows.
#[derive(Debug, Clone, Default)]
pub struct TableWrite {
    pub table_id: u64,
    pub offset: u64,
    pub payload: Vec<u8>,
    pub meta: LogMeta,
    /// Row key → new value (`None`: the row is gone).
    pub rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl TableWrite {
    /// Bytes it adds to the store, about.
    pub fn size(&self) -> usize {
        self.payload.len()
            + 32
            + self
                .rows
                .iter()
                .map(|(k, v)| k.len() + 8 + v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
    }
}

fn row_key(table_id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&table_id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Options of the rows column family: bloom filters for point lookups, the
/// block cache shared with keyed state.
pub(crate) fn rows_options() -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(crate::state_db::block_cache());
    table.set_cache_index_and_filter_blocks(true);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts
}

impl Store {
    pub(crate) fn add_table_write(
        &self,
        batch: &mut WriteBatch,
        w: &TableWrite,
    ) -> StorageResult<()> {
        let log = self.cf(CF_LOG)?;
        let meta = self.cf(CF_LOG_META)?;
        let rows = self.cf(CF_ROWS)?;
        batch.put_cf(log, log_key(w.table_id, w.offset), &w.payload);
        batch.put_cf(meta, log_key(w.table_id, w.offset), w.meta.encode());
        for (k, v) in &w.rows {
            let k = row_key(w.table_id, k);
            match v {
                Some(v) => batch.put_cf(rows, k, v),
                None => batch.delete_cf(rows, k),
            }
        }
        Ok(())
    }

    pub(crate) fn drop_table_rows(
        &self,
        batch: &mut WriteBatch,
        table_id: u64,
    ) -> StorageResult<()> {
        let meta = self.cf(CF_LOG_META)?;
        let rows = self.cf(CF_ROWS)?;
        batch.delete_range_cf(meta, log_key(table_id, 0), log_key(table_id + 1, 0));
        batch.delete_range_cf(rows, table_id.to_be_bytes(), (table_id + 1).to_be_bytes());
        Ok(())
    }

    /// Writes one change of a table, synced, atomically: log entry, meta
    /// and rows.
    pub fn write_table(&self, w: &TableWrite) -> StorageResult<()> {
        self.disk.check(w.size() as u64)?;
        let mut batch = WriteBatch::default();
        self.add_table_write(&mut batch, w)?;
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Several changes of tables in one synced batch (a migration).
    pub fn write_tables(&self, writes: &[TableWrite]) -> StorageResult<()> {
        self.disk
            .check(writes.iter().map(TableWrite::size).sum::<usize>() as u64)?;
        let mut batch = WriteBatch::default();
        for w in writes {
            self.add_table_write(&mut batch, w)?;
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// The current values of `keys` of a table (`None`: no such row).
    pub fn get_rows(&self, table_id: u64, keys: &[&[u8]]) -> StorageResult<Vec<Option<Vec<u8>>>> {
        let cf = self.cf(CF_ROWS)?;
        let full: Vec<Vec<u8>> = keys.iter().map(|k| row_key(table_id, k)).collect();
        self.db
            .batched_multi_get_cf(cf, &full, false)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// The last entry of a table's log meta: (offset, meta).
    pub fn last_log_meta(&self, table_id: u64) -> StorageResult<Option<(u64, LogMeta)>> {
        let cf = self.cf(CF_LOG_META)?;
        let end = log_key(table_id, u64::MAX);
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse));
        first_of_table(table_id, iter)?
            .map(|(o, v)| Ok((o, LogMeta::decode(&v)?)))
            .transpose()
    }

    /// The meta of the entry at `offset` (or, if that one is truncated, the
    /// first one after it).
    pub fn log_meta_at(&self, table_id: u64, offset: u64) -> StorageResult<Option<LogMeta>> {
        let cf = self.cf(CF_LOG_META)?;
        let from = log_key(table_id, offset);
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward));
        first_of_table(table_id, iter)?
            .map(|(_, v)| LogMeta::decode(&v))
            .transpose()
    }

    /// About how many bytes a table's rows and log take on disk (flushed
    /// data only: what is still in RocksDB's memtables is not counted).
    pub fn table_disk_bytes(&self, table_id: u64) -> StorageResult<u64> {
        let rows = self.cf(CF_ROWS)?;
        let log = self.cf(CF_LOG)?;
        let (lo, hi) = (table_id.to_be_bytes(), (table_id + 1).to_be_bytes());
        let row_bytes: u64 = self
            .db
            .get_approximate_sizes_cf(rows, &[rocksdb::Range::new(&lo, &hi)])
            .iter()
            .sum();
        let (log_lo, log_hi) = (log_key(table_id, 0), log_key(table_id + 1, 0));
        let log_bytes: u64 = self
            .db
            .get_approximate_sizes_cf(log, &[rocksdb::Range::new(&log_lo, &log_hi)])
            .iter()
            .sum();
        Ok(row_bytes + log_bytes)
    }

    /// Writes the table rows and logs held in memory to files (VACUUM), so
    /// that space figures count them and truncated entries leave memory.
    pub fn flush_tables(&self) -> StorageResult<()> {
        for cf in [CF_ROWS, CF_LOG, CF_LOG_META] {
            self.db.flush_cf(self.cf(cf)?)?;
        }
        Ok(())
    }

    /// The first offset still in a table's log, if any.
    pub fn first_log_offset(&self, table_id: u64) -> StorageResult<Option<u64>> {
        let cf = self.cf(CF_LOG)?;
        let from = log_key(table_id, 0);
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward));
        Ok(first_of_table(table_id, iter)?.map(|(o, _)| o))
    }

    /// Deletes a table's log entries at and below `through`, and their metas
    /// below it (the meta at `through` stays: a reader positioned there
    /// still asks how many rows were logged through it), synced.
    pub fn truncate_log(&self, table_id: u64, through: u64) -> StorageResult<()> {
        let log = self.cf(CF_LOG)?;
        let meta = self.cf(CF_LOG_META)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            log,
            log_key(table_id, 0),
            log_key(table_id, through.saturating_add(1)),
        );
        batch.delete_range_cf(meta, log_key(table_id, 0), log_key(table_id, through));
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// A consistent view of the whole store as of now, kept until dropped.
    pub fn snapshot(self: &Arc<Self>) -> StoreSnapshot {
        let snap = self.db.snapshot();
        // SAFETY: the snapshot borrows the DB, which lives inside the `Arc`
        // the returned value holds: the DB does not move and outlives the
        // snapshot (fields drop in declaration order, snapshot first).
        let snap: rocksdb::SnapshotWithThreadMode<'static, DB> =
            unsafe { std::mem::transmute(snap) };
        StoreSnapshot {
            snap,
            store: self.clone(),
        }
    }
}

/// The (offset, value) of the first item of a log-keyed iteration, if it
/// belongs to `table_id`.
fn first_of_table<I>(table_id: u64, mut iter: I) -> StorageResult<Option<(u64, Box<[u8]>)>>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
{
    match iter.next() {
        Some(item) => {
            let (k, v) = item?;
            Ok((k.len() == 16 && k[..8] == table_id.to_be_bytes()).then(|| (offset_of(&k), v)))
        }
        None => Ok(None),
    }
}

fn offset_of(key: &[u8]) -> u64 {
    let mut off = [0u8; 8];
    off.copy_from_slice(&key[8..16]);
    u64::from_be_bytes(off)
}

/// A point-in-time view of the store (see [`Store::snapshot`]).
pub struct StoreSnapshot {
    snap: rocksdb::SnapshotWithThreadMode<'static, DB>,
    store: Arc<Store>,
}

impl StoreSnapshot {
    /// Up to `max` rows of a table with keys in `(lower, upper)`, in key
    /// order, as (key without the table prefix, value).
    pub fn scan_rows(
        &self,
        table_id: u64,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        max: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.store.cf(CF_ROWS)?;
        let prefix = table_id.to_be_bytes();
        let start = match lower {
            Bound::Included(k) | Bound::Excluded(k) => row_key(table_id, k),
            Bound::Unbounded => prefix.to_vec(),
        };
        let mut opts = ReadOptions::default();
        match upper {
            // The smallest key after every key starting with `k`... is not
            // needed: an inclusive bound is checked below.
            Bound::Included(_) | Bound::Unbounded => {
                opts.set_iterate_upper_bound((table_id + 1).to_be_bytes().to_vec())
            }
            Bound::Excluded(k) => opts.set_iterate_upper_bound(row_key(table_id, k)),
        }
        let mut out = Vec::new();
        for item in
            self.snap
                .iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            let key = &k[8..];
            if let Bound::Excluded(l) = lower {
                if key == l {
                    continue;
                }
            }
            if let Bound::Included(u) = upper {
                if key > u {
                    break;
                }
            }
            out.push((key.to_vec(), v.to_vec()));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// The last log meta of a table as of the snapshot: (offset, meta).
    pub fn last_log_meta(&self, table_id: u64) -> StorageResult<Option<(u64, LogMeta)>> {
        let cf = self.store.cf(CF_LOG_META)?;
        let end = log_key(table_id, u64::MAX);
        let iter = self
            .snap
            .iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse));
        first_of_table(table_id, iter)?
            .map(|(o, v)| Ok((o, LogMeta::decode(&v)?)))
            .transpose()
    }

    /// The first offset in a table's log as of the snapshot.
    pub fn first_log_offset(&self, table_id: u64) -> StorageResult<Option<u64>> {
        let cf = self.store.cf(CF_LOG)?;
        let from = log_key(table_id, 0);
        let iter = self
            .snap
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward));
        Ok(first_of_table(table_id, iter)?.map(|(o, _)| o))
    }

    /// Log entries of a table after `after`, up to `max`, as of the snapshot.
    pub fn read_log(
        &self,
        table_id: u64,
        after: u64,
        max: usize,
    ) -> StorageResult<Vec<crate::LogEntry>> {
        let cf = self.store.cf(CF_LOG)?;
        let start = log_key(table_id, after.saturating_add(1));
        let iter = self
            .snap
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward));
        crate::store::log_entries(table_id, iter, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weir-rows-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn write(store: &Store, table: u64, offset: u64, rows: &[(&str, Option<&str>)]) {
        store
            .write_table(&TableWrite {
                table_id: table,
                offset,
                payload: format!("entry {offset}").into_bytes(),
                meta: LogMeta {
                    rows_logged: offset * 10,
                    row_count: offset,
                },
                rows: rows
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                    .collect(),
            })
            .unwrap();
    }

    fn keys(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
        rows.iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect()
    }

    #[test]
    fn rows_snapshot_scan_truncate() {
        let dir = tmp("scan");
        let store = Arc::new(Store::open(&dir).unwrap());
        write(
            &store,
            7,
            1,
            &[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))],
        );
        write(&store, 8, 1, &[("a", Some("other table"))]);
        let snap = store.snapshot();
        write(&store, 7, 2, &[("b", None), ("d", Some("4"))]);

        // The snapshot sees the rows before the second write, the store after.
        let all = snap
            .scan_rows(7, Bound::Unbounded, Bound::Unbounded, 100)
            .unwrap();
        assert_eq!(keys(&all), ["a", "b", "c"]);
        let now = store.snapshot();
        let all = now
            .scan_rows(7, Bound::Unbounded, Bound::Unbounded, 100)
            .unwrap();
        assert_eq!(keys(&all), ["a", "c", "d"]);
        let some = now
            .scan_rows(7, Bound::Excluded(b"a"), Bound::Included(b"c"), 100)
            .unwrap();
        assert_eq!(keys(&some), ["c"]);
        let paged = now
            .scan_rows(7, Bound::Unbounded, Bound::Unbounded, 2)
            .unwrap();
        assert_eq!(keys(&paged), ["a", "c"]);
        let got = store.get_rows(7, &[b"a", b"b", b"d"]).unwrap();
        assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"4".to_vec())]);

        assert_eq!(store.last_log_meta(7).unwrap().unwrap().0, 2);
        assert_eq!(store.log_meta_at(7, 1).unwrap().unwrap().rows_logged, 10);
        store.truncate_log(7, 2).unwrap();
        assert_eq!(store.first_log_offset(7).unwrap(), None);
        assert_eq!(store.last_log_meta(7).unwrap().unwrap().0, 2);
        assert_eq!(store.first_log_offset(8).unwrap(), Some(1));
        assert_eq!(
            snap.read_log(7, 0, 10).unwrap().len(),
            1,
            "the snapshot keeps its view"
        );
        drop(snap);
        drop(now);

        store.drop_log(7).unwrap();
        assert!(store.last_log_meta(7).unwrap().is_none());
        assert!(store.get_rows(7, &[b"a"]).unwrap()[0].is_none());
        assert_eq!(
            store.get_rows(8, &[b"a"]).unwrap()[0].as_deref(),
            Some(&b"other table"[..])
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
