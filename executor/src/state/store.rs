//! A stateful subtask's RocksDB store (see the module docs of `state`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use weir_storage::StateDb;

use super::store_key;
use crate::error::{ExecError, ExecResult};
use crate::operator::StateEntry;

pub struct SubtaskStore {
    /// `None` only while dropping. RocksDB is safe for concurrent use: the
    /// lock only keeps the db open while in use, so reads go on while a
    /// checkpoint is cut.
    db: RwLock<Option<StateDb>>,
    dir: PathBuf,
    /// Set from a snapshot until its checkpoint is cut: evicting now would
    /// put state from after the barrier into that checkpoint.
    frozen: AtomicBool,
    /// Every key the store holds is also in its operator's cache: the store
    /// started empty and the operator never evicted. A key missing from
    /// the cache then has no entry here either, so lookups are skipped.
    cached_all: AtomicBool,
    cache_keys: usize,
}

impl std::fmt::Debug for SubtaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubtaskStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn storage(e: weir_storage::StorageError) -> ExecError {
    ExecError::Storage(e)
}

impl SubtaskStore {
    /// Opens a new store in a fresh directory under `work_root`, empty or
    /// (with `from`) as a copy of a checkpoint's store, whose SST files are
    /// hard-linked.
    pub fn open(
        work_root: &Path,
        name: &str,
        from: Option<&Path>,
        cache_keys: usize,
    ) -> ExecResult<Arc<SubtaskStore>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = work_root.join(format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        if let Some(src) = from {
            StateDb::check_checkpoint(src).map_err(storage)?;
        }
        std::fs::create_dir_all(work_root).map_err(|e| {
            storage(weir_storage::StorageError::io(
                format!("create {}", work_root.display()),
                e,
            ))
        })?;
        let db = StateDb::open(&dir, from).map_err(storage)?;
        Ok(Arc::new(SubtaskStore {
            db: RwLock::new(Some(db)),
            dir,
            frozen: AtomicBool::new(false),
            cached_all: AtomicBool::new(from.is_none()),
            cache_keys: cache_keys.max(1),
        }))
    }

    /// How many keys an operator map may keep in memory.
    pub fn cache_keys(&self) -> usize {
        self.cache_keys
    }

    /// Whether the operator may evict from its cache now.
    pub fn can_evict(&self) -> bool {
        !self.frozen.load(Ordering::Acquire)
    }

    /// Whether the operator's cache holds every key of the store: a key
    /// missing from the cache need not be looked up.
    pub fn caches_all(&self) -> bool {
        self.cached_all.load(Ordering::Acquire)
    }

    /// Values of `(key group, key)` pairs, in order.
    pub fn fetch(&self, keys: &[(usize, &[u8])]) -> ExecResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() || self.caches_all() {
            return Ok(vec![None; keys.len()]);
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|(kg, k)| store_key(*kg, k)).collect();
        let guard = self.db.read();
        let db = guard.as_ref().expect("store open");
        db.get_many(&keys).map_err(storage)
    }

    /// Writes entries (a `None` value deletes).
    pub fn write(&self, entries: Vec<StateEntry>) -> ExecResult<()> {
        self.apply(
            entries
                .into_iter()
                .map(|e| (store_key(e.key_group as usize, &e.key), e.value)),
        )
    }

    /// Writes what an eviction produced: from now on the cache is not all
    /// of the state, and keys missing from it are looked up.
    pub fn write_evicted(&self, entries: Vec<StateEntry>) -> ExecResult<()> {
        self.cached_all.store(false, Ordering::Release);
        self.write(entries)
    }

    /// The operator has loaded every entry of the store into its cache
    /// (e.g. with [`SubtaskStore::entries`] after a restore).
    pub fn mark_cached_all(&self) {
        self.cached_all.store(true, Ordering::Release);
    }

    /// Puts (`Some`) and deletes (`None`) by store key, in one batch.
    fn apply(
        &self,
        entries: impl ExactSizeIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> ExecResult<()> {
        if entries.len() == 0 {
            return Ok(());
        }
        let guard = self.db.read();
        let db = guard.as_ref().expect("store open");
        db.apply(entries).map_err(storage)
    }

    /// Writes what a snapshot produced and holds evictions until the
    /// checkpoint is cut (or a later snapshot comes).
    pub fn write_snapshot(&self, entries: Vec<StateEntry>) -> ExecResult<()> {
        self.write(entries)?;
        self.frozen.store(true, Ordering::Release);
        Ok(())
    }

    /// Lets evictions (and a final snapshot) go on without a cut: the
    /// checkpoint the last snapshot was for was abandoned.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::Release);
    }

    /// Cuts a RocksDB checkpoint of the store into `target`, then lets
    /// evictions go on.
    pub fn cut(&self, target: &Path) -> ExecResult<()> {
        let guard = self.db.read();
        let db = guard.as_ref().expect("store open");
        let r = db.checkpoint(target).map_err(storage);
        self.frozen.store(false, Ordering::Release);
        r
    }

    /// Every entry of the store.
    pub fn entries(&self) -> ExecResult<Vec<StateEntry>> {
        let guard = self.db.read();
        let db = guard.as_ref().expect("store open");
        let mut out = Vec::new();
        db.scan(&mut |k, v| {
            out.push(StateEntry {
                key_group: u16::from_be_bytes([k[0], k[1]]),
                key: k[2..].to_vec(),
                value: Some(v.to_vec()),
            });
            Ok(())
        })
        .map_err(storage)?;
        Ok(out)
    }

    /// Adds entries read from elsewhere (a restore that redistributes).
    pub fn import(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> ExecResult<()> {
        self.cached_all.store(false, Ordering::Release);
        self.apply(entries.into_iter().map(|(k, v)| (k, Some(v))))
    }
}

impl Drop for SubtaskStore {
    fn drop(&mut self) {
        // Close first, then the working files go: checkpoints hold their own
        // links.
        self.db.write().take();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a state store");
            }
        }
    }
}
