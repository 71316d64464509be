//! Where a subtask's keyed state comes from when it starts.

use std::path::PathBuf;
use std::sync::Arc;

use weir_storage::StateDb;

use super::{key_group_range, store_key, subtask_dir_name, SubtaskStore};
use crate::checkpoint::StateBackendKind;
use crate::error::{ExecError, ExecResult};
use crate::operator::StateEntry;

/// The checkpoint a subtask resumes from.
pub(crate) struct RestoreFrom {
    /// `chk-<epoch>` directory.
    pub chk_dir: PathBuf,
    /// The backend that wrote the checkpoint.
    pub backend: StateBackendKind,
    /// Subtasks of this node that have a store in the checkpoint
    /// (RocksDB checkpoints).
    pub stores: Vec<usize>,
    /// The node's parallelism when the checkpoint was taken.
    pub old_parallelism: usize,
    /// Memory checkpoints: this subtask's entries, already read.
    pub entries: Vec<StateEntry>,
}

/// How to set up one stateful subtask's state.
pub(crate) struct StatePlan {
    /// Where working stores live.
    pub work_root: PathBuf,
    pub node: usize,
    pub subtask: usize,
    pub parallelism: usize,
    /// The backend the query runs with.
    pub backend: StateBackendKind,
    pub cache_keys: usize,
    pub from: Option<RestoreFrom>,
}

impl StatePlan {
    /// Blocking. The store (RocksDB backend), or the entries the operator
    /// restores into its maps (memory backend).
    pub fn prepare(mut self) -> ExecResult<(Option<Arc<SubtaskStore>>, Vec<StateEntry>)> {
        let name = subtask_dir_name(self.node, self.subtask);
        match self.backend {
            StateBackendKind::Rocksdb => {
                let same_layout = self.from.as_ref().is_some_and(|f| {
                    f.backend == StateBackendKind::Rocksdb
                        && f.old_parallelism == self.parallelism
                        && f.stores.contains(&self.subtask)
                });
                if same_layout {
                    // Link the checkpoint's files: nothing is read now.
                    let f = self.from.as_ref().expect("checked");
                    let src = f.chk_dir.join("state").join(&name);
                    let store =
                        SubtaskStore::open(&self.work_root, &name, Some(&src), self.cache_keys)?;
                    return Ok((Some(store), Vec::new()));
                }
                let store = SubtaskStore::open(&self.work_root, &name, None, self.cache_keys)?;
                if let Some(f) = &self.from {
                    store.import(f.read(self.node, self.subtask, self.parallelism)?)?;
                }
                Ok((Some(store), Vec::new()))
            }
            StateBackendKind::Memory => {
                let entries = match &mut self.from {
                    Some(f) if f.backend == StateBackendKind::Memory => {
                        std::mem::take(&mut f.entries)
                    }
                    Some(f) => f
                        .read(self.node, self.subtask, self.parallelism)?
                        .into_iter()
                        .map(|(k, v)| StateEntry {
                            key_group: u16::from_be_bytes([k[0], k[1]]),
                            key: k[2..].to_vec(),
                            value: Some(v),
                        })
                        .collect(),
                    None => Vec::new(),
                };
                Ok((None, entries))
            }
        }
    }
}

impl RestoreFrom {
    /// The entries of the key groups `subtask` of `parallelism` owns, as
    /// (store key, value).
    fn read(
        &self,
        node: usize,
        subtask: usize,
        parallelism: usize,
    ) -> ExecResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if self.backend == StateBackendKind::Memory {
            return Ok(self
                .entries
                .iter()
                .filter_map(|e| {
                    let v = e.value.clone()?;
                    Some((store_key(e.key_group as usize, &e.key), v))
                })
                .collect());
        }
        let (first, end) = key_group_range(subtask, parallelism);
        let from = store_key(first, &[]);
        let to = store_key(end, &[]);
        let mut out = Vec::new();
        for &old in &self.stores {
            let (ofirst, oend) = key_group_range(old, self.old_parallelism);
            if oend <= first || ofirst >= end {
                continue;
            }
            let dir = self.chk_dir.join("state").join(subtask_dir_name(node, old));
            StateDb::scan_checkpoint(&dir, &from, Some(&to), &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .map_err(ExecError::Storage)?;
        }
        Ok(out)
    }
}
