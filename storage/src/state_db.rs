//! The RocksDB state backend's database: one per stateful operator subtask,
//! holding that subtask's keyed state (the operator keeps a bounded cache of
//! it in memory). At each checkpoint the subtask writes the entries it
//! changed, then a RocksDB checkpoint is cut into the checkpoint's
//! directory: SST files are hard links, so files unchanged since the
//! previous checkpoint are shared, not copied (incremental checkpoints).

use std::path::Path;
use std::sync::OnceLock;

use rocksdb::{
    checkpoint::Checkpoint, BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use crate::error::{StorageError, StorageResult};

/// The first 8 bytes of a key as a big-endian integer (zero-padded): a
/// smaller prefix means a smaller key (so sorting by it first saves a
/// memcmp call per comparison when most keys differ in those bytes).
pub fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Called with each (key, value) of a scan.
pub type EntryFn<'a> = dyn FnMut(&[u8], &[u8]) -> StorageResult<()> + 'a;

pub struct StateDb {
    db: DB,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StorageError {
    move |e| StorageError::io(context, e)
}

impl StateDb {
    /// Opens the working database in `dir`; with `from`, first replaces it by
    /// a copy of that checkpoint (SST files hard-linked, the rest copied).
    pub fn open(dir: &Path, from: Option<&Path>) -> StorageResult<StateDb> {
        if let Some(src) = from {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io(format!("remove {}", dir.display())))?;
            }
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
            let entries = std::fs::read_dir(src).map_err(io(format!("read {}", src.display())))?;
            for entry in entries {
                let entry = entry.map_err(io(format!("read {}", src.display())))?;
                let path = entry.path();
                let target = dir.join(entry.file_name());
                if path.extension().is_some_and(|e| e == "sst") {
                    std::fs::hard_link(&path, &target)
                        .map_err(io(format!("link {}", path.display())))?;
                } else {
                    std::fs::copy(&path, &target)
                        .map_err(io(format!("copy {}", path.display())))?;
                }
            }
        }
        Ok(StateDb {
            db: DB::open(&db_options(), dir)?,
        })
    }

    /// Values of `keys`, in order (`None`: absent).
    pub fn get_many(&self, keys: &[Vec<u8>]) -> StorageResult<Vec<Option<Vec<u8>>>> {
        self.db
            .multi_get(keys)
            .into_iter()
            .map(|r| r.map_err(StorageError::from))
            .collect()
    }

    /// Applies puts (`Some`) and deletes (`None`) in one batch. No WAL: the
    /// checkpoint that follows flushes the memtable into SST files.
    pub fn apply(
        &self,
        entries: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> StorageResult<()> {
        // In key order the memtable inserts each key next to the previous
        // one instead of searching its skip list from the top (that search
        // was about a tenth of Nexmark q7's profile at 1 s checkpoints).
        // Equal keys keep their order, so a key written twice keeps its
        // last value.
        let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries.into_iter().collect();
        let mut order: Vec<(u64, usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (key_prefix(k), i))
            .collect();
        // Most keys differ in their first 8 bytes (key group, then the key):
        // comparing those as an integer saves a memcmp call per comparison.
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| entries[a.1].0.cmp(&entries[b.1].0))
                .then(a.1.cmp(&b.1))
        });
        // Sized up front (a record is a tag and two varint lengths besides
        // the bytes): growing the batch copied it at every doubling.
        let bytes: usize = entries
            .iter()
            .map(|(k, v)| 11 + k.len() + v.as_ref().map_or(0, |v| v.len() + 5))
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(12 + bytes);
        for (_, i) in order {
            let (k, v) = std::mem::take(&mut entries[i]);
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Calls `f` with every entry, in key order.
    pub fn scan(&self, f: &mut EntryFn<'_>) -> StorageResult<()> {
        for item in self.db.iterator(IteratorMode::Start) {
            let (k, v) = item?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Cuts a checkpoint of the current contents into `target` (which must
    /// not exist yet).
    pub fn checkpoint(&self, target: &Path) -> StorageResult<()> {
        Checkpoint::new(&self.db)?.create_checkpoint(target)?;
        Ok(())
    }

    /// Every entry under `prefix` in the checkpoint at `dir` (opened read-only).
    pub fn read_checkpoint(dir: &Path, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        Self::scan_checkpoint(dir, prefix, None, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Checks that `dir` holds a RocksDB checkpoint (its `CURRENT` file).
    pub fn check_checkpoint(dir: &Path) -> StorageResult<()> {
        if dir.join("CURRENT").exists() {
            Ok(())
        } else {
            Err(StorageError::Corrupt(format!(
                "{}: not a RocksDB checkpoint (CURRENT missing)",
                dir.display()
            )))
        }
    }

    /// Calls `f` with every entry of the checkpoint at `dir` (opened
    /// read-only) from key `from` up to, not including, `to`.
    pub fn scan_checkpoint(
        dir: &Path,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut EntryFn<'_>,
    ) -> StorageResult<()> {
        Self::check_checkpoint(dir)?;
        let mut opts = Options::default();
        opts.set_paranoid_checks(true);
        let db = DB::open_for_read_only(&opts, dir, false)?;
        for item in db.iterator(IteratorMode::From(from, Direction::Forward)) {
            let (k, v) = item?;
            match to {
                Some(to) if k.as_ref() >= to => break,
                None if !k.starts_with(from) => break,
                _ => f(&k, &v)?,
            }
        }
        Ok(())
    }

    /// The SST files of a checkpoint directory with their sizes.
    pub fn sst_files(dir: &Path) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
            .map(|e| {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), size)
            })
            .collect()
    }
}

/// Options of a state db: bloom filters (most lookups of a key that is not
/// there stop at the filter), one block cache shared by every state db of
/// the process, and moderate memtables (there is one db per stateful
/// subtask).
/// The block cache shared by keyed state and table rows.
pub(crate) fn block_cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache::new_lru_cache(256 << 20))
}

fn db_options() -> Options {
    let cache = block_cache();
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_block_based_table_factory(&table);
    opts.set_write_buffer_size(32 << 20);
    opts
}

/// Total size of the files under `dir` (recursively).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_checkpoints_share_files_and_restore() {
        let root = std::env::temp_dir().join(format!("weir-state-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let entries = |chk: &str| {
            StateDb::read_checkpoint(&root.join(chk), b"")
                .unwrap()
                .len()
        };
        let db = StateDb::open(&root.join("work"), None).unwrap();
        db.apply((0..1000u32).map(|i| (i.to_be_bytes().to_vec(), Some(vec![1u8; 100]))))
            .unwrap();
        db.checkpoint(&root.join("chk-1")).unwrap();
        db.apply([(5u32.to_be_bytes().to_vec(), None)]).unwrap();
        db.checkpoint(&root.join("chk-2")).unwrap();
        let one = StateDb::sst_files(&root.join("chk-1"));
        let two = StateDb::sst_files(&root.join("chk-2"));
        assert!(!one.is_empty());
        assert!(
            one.iter().all(|f| two.contains(f)),
            "chk-2 shares chk-1's files"
        );
        assert_eq!(two.len(), one.len() + 1);
        assert_eq!(entries("chk-1"), 1000);
        assert_eq!(entries("chk-2"), 999);
        drop(db);
        // Restore the working db from chk-1, then change it: chk-1 unchanged.
        let db = StateDb::open(&root.join("work"), Some(&root.join("chk-1"))).unwrap();
        db.apply([(7u32.to_be_bytes().to_vec(), None)]).unwrap();
        db.checkpoint(&root.join("chk-3")).unwrap();
        assert_eq!(entries("chk-1"), 1000);
        assert_eq!(entries("chk-3"), 999);
        assert!(StateDb::read_checkpoint(&root.join("missing"), b"").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_batch_keeps_the_last_write_of_a_key_whatever_the_order() {
        let root = std::env::temp_dir().join(format!("weir-state-db-last-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let db = StateDb::open(&root, None).unwrap();
        // Keys sharing 8-byte prefixes, shorter than 8 bytes, written
        // twice, deleted then put, put then deleted.
        let k = |s: &str| s.as_bytes().to_vec();
        let v = |s: &str| Some(s.as_bytes().to_vec());
        db.apply([
            (k("prefix00-b"), v("1")),
            (k("ab"), v("2")),
            (k("prefix00-a"), v("3")),
            (k("ab\0"), v("4")),
            (k("prefix00-b"), v("5")),
            (k("ab"), None),
            (k("z"), None),
            (k("z"), v("6")),
            (k("prefix00-a"), None),
        ])
        .unwrap();
        let mut got = Vec::new();
        db.scan(&mut |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [("ab\0", "4"), ("prefix00-b", "5"), ("z", "6")]
            .iter()
            .map(|(a, b)| (k(a), k(b)))
            .collect();
        assert_eq!(got, want);
        drop(db);
        let _ = std::fs::remove_dir_all(&root);
    }
}
