//! Where a query's checkpoints live and how they are written and read.
//!
//! - The *record* of a completed checkpoint (source offsets, sizes, where
//!   its state is) goes into the store's `checkpoints` column family, in the
//!   same atomic batch as the result-table changes the checkpoint commits.
//!   A checkpoint without a record never happened.
//! - State files go under `<data>/checkpoints/q<query id>/chk-<epoch>/`:
//!   `state.bin` (memory backend: every entry, checksummed) or
//!   `state/n<node>-s<subtask>/` (RocksDB backend: a RocksDB checkpoint of
//!   each stateful subtask's store, SST files hard-linked and shared with
//!   earlier checkpoints), plus `channels.bin` for the in-flight data an
//!   unaligned checkpoint captured.
//! - The stores themselves (working state) live under
//!   `<data>/checkpoints/q<query id>/work/`, which is emptied when the
//!   query starts: they are rebuilt from a checkpoint.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use weir_storage::{decode_batch, dir_size, encode_batch, state_file, StateDb, Store};

use super::config::StateBackendKind;
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::message::CheckpointMode;
use crate::operator::StateEntry;
use crate::state::{subtask_dir_name, SubtaskStore};

/// What one subtask contributes to a checkpoint.
#[derive(Debug, Default, Clone)]
pub struct SubtaskSnapshot {
    pub node: usize,
    pub subtask: usize,
    /// Memory backend: the subtask's state.
    pub entries: Vec<StateEntry>,
    /// RocksDB backend: the subtask's store, holding its state as of the
    /// barrier until the checkpoint is cut from it.
    pub store: Option<Arc<SubtaskStore>>,
    /// Sources: the log offset up to which input is covered.
    pub source_offset: Option<u64>,
    /// Connector sources: (split id, position) of each split the subtask
    /// reads (`connectors::SplitPositions`).
    pub source_splits: Option<Vec<(u64, u64)>>,
    pub alignment_ms: u64,
    /// Unaligned: in-flight data the barrier overtook; replayed first on
    /// recovery.
    pub channel_state: Vec<ChannelChunk>,
    pub timed_out_to_unaligned: bool,
    /// The subtask snapshotted at the first barrier without aligning.
    pub unaligned: bool,
}

/// A chunk in flight at an unaligned barrier, addressed to the subtask
/// input that must receive it on recovery.
#[derive(Debug, Clone)]
pub struct ChannelChunk {
    pub node: usize,
    pub subtask: usize,
    pub input: usize,
    pub chunk: Chunk,
    /// Captured by the sender from its output queue (delivered after what
    /// the receiver captured from the same channel).
    pub from_sender: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceOffset {
    pub node: usize,
    pub subtask: usize,
    pub offset: u64,
    /// Connector sources: (split id, position) of the subtask's splits,
    /// which another parallelism can take over; `None` in records written
    /// before positions were kept per split (`offset` was then the rows
    /// the subtask had emitted).
    #[serde(default)]
    pub splits: Option<Vec<(u64, u64)>>,
}

/// The durable description of a completed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub query_id: u64,
    pub epoch: u64,
    pub backend: StateBackendKind,
    pub mode: CheckpointMode,
    pub timed_out_to_unaligned: bool,
    pub triggered_at_ms: u64,
    pub completed_at_ms: u64,
    pub duration_ms: u64,
    pub state_bytes: u64,
    pub incremental_bytes: u64,
    pub in_flight_bytes: u64,
    pub alignment_ms: u64,
    /// Node names of the plan, to refuse a checkpoint of another plan.
    pub nodes: Vec<String>,
    /// The plan's node fingerprints (`StreamGraph::fingerprints`): a
    /// checkpoint is restored only into a plan with the same ones (empty in
    /// records written before they were kept: then the names decide).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<String>,
    /// Parallelism of each node when the checkpoint was taken.
    #[serde(default)]
    pub parallelism: Vec<usize>,
    pub sources: Vec<SourceOffset>,
    /// Bad records skipped (`on_error = 'skip'`) up to this checkpoint,
    /// since the query was created.
    #[serde(default)]
    pub skipped_records: u64,
    /// Bad records sent to `system.dead_letters` up to this checkpoint.
    #[serde(default)]
    pub dead_letter_records: u64,
    /// RocksDB backend: the (node, subtask) pairs with a store in the
    /// checkpoint.
    #[serde(default)]
    pub stores: Vec<(usize, usize)>,
    /// (log id, smallest offset over the subtasks) of each table the query
    /// reads: the changes after it are needed to restore this checkpoint
    /// (a table's log is truncated below the smallest of these). Empty in
    /// records written before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_offsets: Vec<(u64, u64)>,
    /// The result table's log offset once this checkpoint's changes are
    /// applied (`None`: no result table, or an older record), so an older
    /// checkpoint's results can be read back (`START ... FROM CHECKPOINT`).
    #[serde(default)]
    pub result_version: Option<u64>,
    /// Written by an upgrade that kept state (never by a checkpoint): the
    /// nodes that emit their results again when restored from it, because
    /// the operators above them are new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reemit: Vec<usize>,
    /// Written by an upgrade that kept state: the results on record are the
    /// old version's, retracted in the first commit after the restore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retract_results: bool,
    /// Its directory under the query's, when not `chk-<epoch>`: a restored
    /// point is imported into a directory no other record uses, so a
    /// crash before its record commits leaves every record's files intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// State read back from a checkpoint.
#[derive(Default)]
pub struct LoadedState {
    pub entries: HashMap<usize, Vec<StateEntry>>,
    /// (node, subtask) → (input channel, chunk)
    pub channels: HashMap<(usize, usize), Vec<(usize, Chunk)>>,
}

/// Sizes of what a checkpoint wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct WrittenSizes {
    pub state_bytes: u64,
    pub incremental_bytes: u64,
    pub in_flight_bytes: u64,
}

pub struct CheckpointStorage {
    store: Arc<Store>,
    query_id: u64,
    root: PathBuf,
}

fn ioerr(what: String) -> impl FnOnce(std::io::Error) -> ExecError {
    move |e| ExecError::Storage(weir_storage::StorageError::io(what, e))
}

fn put_u32(buf: &mut Vec<u8>, v: usize) {
    buf.extend_from_slice(&(v as u32).to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> ExecResult<&'a [u8]> {
        if self.pos + n > self.bytes.len() {
            return Err(ExecError::internal("checkpoint state ends early"));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> ExecResult<usize> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }
    fn u16(&mut self) -> ExecResult<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// SST files of every store of a checkpoint, as (store/file, size).
fn store_files(chk: &Path) -> HashSet<(String, u64)> {
    let Ok(dirs) = std::fs::read_dir(chk.join("state")) else {
        return HashSet::new();
    };
    let mut out = HashSet::new();
    for d in dirs.flatten() {
        let store = d.file_name().to_string_lossy().into_owned();
        for (name, size) in StateDb::sst_files(&d.path()) {
            out.insert((format!("{store}/{name}"), size));
        }
    }
    out
}

impl CheckpointStorage {
    pub fn new(store: Arc<Store>, data_dir: &Path, query_id: u64) -> Arc<Self> {
        Arc::new(CheckpointStorage {
            store,
            query_id,
            root: data_dir.join("checkpoints").join(format!("q{query_id}")),
        })
    }

    /// Where the query's working stores live.
    pub fn work_root(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Removes working stores left from an earlier run (the query starts
    /// from a checkpoint, never from them). Call before the query starts.
    pub fn clear_work(&self) -> ExecResult<()> {
        let work = self.work_root();
        match std::fs::remove_dir_all(&work) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ioerr(format!("remove {}", work.display()))(e)),
        }
    }

    pub fn query_id(&self) -> u64 {
        self.query_id
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Where a new checkpoint `epoch` writes its files.
    pub fn chk_dir(&self, epoch: u64) -> PathBuf {
        self.root.join(format!("chk-{epoch}"))
    }

    /// The directory holding a recorded checkpoint's files.
    pub fn dir_of(&self, rec: &CheckpointRecord) -> PathBuf {
        self.root.join(dir_name(rec))
    }

    /// A directory for a checkpoint imported at `epoch` that no record
    /// names: `chk-<epoch>-r<n>`.
    pub fn import_dir(&self, epoch: u64) -> (String, PathBuf) {
        let mut n = 1;
        loop {
            let name = format!("chk-{epoch}-r{n}");
            let path = self.root.join(&name);
            if !path.exists() && !path.with_extension("importing").exists() {
                return (name, path);
            }
            n += 1;
        }
    }

    fn prefix(&self) -> String {
        format!("q/{:020}/", self.query_id)
    }

    pub fn record_key(&self, epoch: u64) -> String {
        format!("{}{epoch:020}", self.prefix())
    }

    /// Completed checkpoints, oldest first.
    pub fn records(&self) -> ExecResult<Vec<CheckpointRecord>> {
        let mut out = Vec::new();
        for (key, value) in self.store.list_checkpoint_records(&self.prefix())? {
            match serde_json::from_slice::<CheckpointRecord>(&value) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(%key, error = %e, "unreadable checkpoint record skipped"),
            }
        }
        Ok(out)
    }

    /// Writes the state files of checkpoint `epoch`: the memory backend's
    /// entries, or a cut of every store. Blocking: run it off the
    /// processing path.
    pub fn write_state(
        &self,
        epoch: u64,
        backend: StateBackendKind,
        previous: Option<u64>,
        snaps: &[SubtaskSnapshot],
    ) -> ExecResult<WrittenSizes> {
        let dir = self.chk_dir(epoch);
        if dir.exists() {
            // Left over from a checkpoint that failed before its record.
            std::fs::remove_dir_all(&dir).map_err(ioerr(format!("remove {}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(ioerr(format!("create {}", dir.display())))?;
        let mut sizes = WrittenSizes::default();
        match backend {
            StateBackendKind::Memory => {
                let mut buf = Vec::new();
                for s in snaps {
                    for e in &s.entries {
                        let Some(v) = &e.value else { continue };
                        put_u32(&mut buf, s.node);
                        buf.extend_from_slice(&e.key_group.to_le_bytes());
                        put_u32(&mut buf, e.key.len());
                        buf.extend_from_slice(&e.key);
                        put_u32(&mut buf, v.len());
                        buf.extend_from_slice(v);
                    }
                }
                state_file::write(&dir.join("state.bin"), &buf)?;
                sizes.state_bytes = buf.len() as u64;
                sizes.incremental_bytes = buf.len() as u64;
            }
            StateBackendKind::Rocksdb => {
                let state = dir.join("state");
                for snap in snaps {
                    if let Some(store) = &snap.store {
                        std::fs::create_dir_all(&state)
                            .map_err(ioerr(format!("create {}", state.display())))?;
                        store.cut(&state.join(subtask_dir_name(snap.node, snap.subtask)))?;
                    }
                }
                let before = previous
                    .map(|p| store_files(&self.chk_dir(p)))
                    .unwrap_or_default();
                sizes.state_bytes = dir_size(&state);
                let shared: u64 = store_files(&dir)
                    .iter()
                    .filter(|f| before.contains(f))
                    .map(|(_, size)| *size)
                    .sum();
                sizes.incremental_bytes = sizes.state_bytes - shared.min(sizes.state_bytes);
            }
        }
        let mut chan = Vec::new();
        for s in snaps {
            for c in &s.channel_state {
                let bytes = encode_batch(&c.chunk.to_stored_batch()?)?;
                put_u32(&mut chan, c.node);
                put_u32(&mut chan, c.subtask);
                put_u32(&mut chan, c.input);
                put_u32(&mut chan, c.from_sender as usize);
                put_u32(&mut chan, bytes.len());
                chan.extend_from_slice(&bytes);
            }
        }
        if !chan.is_empty() {
            state_file::write(&dir.join("channels.bin"), &chan)?;
            sizes.in_flight_bytes = chan.len() as u64;
            sizes.state_bytes += chan.len() as u64;
            sizes.incremental_bytes += chan.len() as u64;
        }
        Ok(sizes)
    }

    /// Reads a checkpoint's state. `input_schema(node, input)` gives the
    /// schema of a channel, to decode captured in-flight chunks.
    pub fn load(
        &self,
        rec: &CheckpointRecord,
        input_schema: &dyn Fn(usize, usize) -> Option<SchemaRef>,
    ) -> ExecResult<LoadedState> {
        let dir = self.dir_of(rec);
        let mut state = LoadedState::default();
        match rec.backend {
            StateBackendKind::Memory => {
                let bytes = state_file::read(&dir.join("state.bin"))?;
                let mut r = Reader {
                    bytes: &bytes,
                    pos: 0,
                };
                while !r.done() {
                    let node = r.u32()?;
                    let key_group = r.u16()?;
                    let klen = r.u32()?;
                    let key = r.take(klen)?.to_vec();
                    let vlen = r.u32()?;
                    let value = r.take(vlen)?.to_vec();
                    state.entries.entry(node).or_default().push(StateEntry {
                        key_group,
                        key,
                        value: Some(value),
                    });
                }
            }
            StateBackendKind::Rocksdb => {
                // The stores stay where they are (subtasks link them when
                // they start); only check that they are there.
                for (node, subtask) in &rec.stores {
                    StateDb::check_checkpoint(
                        &dir.join("state").join(subtask_dir_name(*node, *subtask)),
                    )?;
                }
            }
        }
        let chan_path = dir.join("channels.bin");
        if rec.in_flight_bytes > 0 {
            let bytes = state_file::read(&chan_path)?;
            let mut captured = Vec::new();
            let mut r = Reader {
                bytes: &bytes,
                pos: 0,
            };
            while !r.done() {
                let node = r.u32()?;
                let subtask = r.u32()?;
                let input = r.u32()?;
                let from_sender = r.u32()? != 0;
                let len = r.u32()?;
                let batch = decode_batch(r.take(len)?)?;
                let schema = input_schema(node, input).ok_or_else(|| {
                    ExecError::internal(format!("channel state for unknown input {node}/{input}"))
                })?;
                let chunk = Chunk::from_stored_batch(batch, &schema)?;
                captured.push((from_sender, node, subtask, input, chunk));
            }
            // Per channel: what the receiver captured, then what the sender
            // still held.
            captured.sort_by_key(|c| c.0);
            for (_, node, subtask, input, chunk) in captured {
                state
                    .channels
                    .entry((node, subtask))
                    .or_default()
                    .push((input, chunk));
            }
        }
        Ok(state)
    }

    fn delete_dir(&self, dir: &Path) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not delete old checkpoint");
            }
        }
    }

    /// Removes every checkpoint of the query (DROP).
    /// Key of a dead letter committed with checkpoint `epoch`.
    pub fn dead_letter_key(&self, epoch: u64, seq: usize) -> String {
        format!("{}{epoch:020}/{seq:06}", self.dead_letter_prefix())
    }

    fn dead_letter_prefix(&self) -> String {
        format!("dl/{:020}/", self.query_id)
    }

    /// The query's dead letters, oldest first.
    pub fn dead_letters(&self) -> ExecResult<Vec<crate::runtime::DeadLetter>> {
        let mut out = Vec::new();
        for (key, value) in self
            .store
            .list_checkpoint_records(&self.dead_letter_prefix())?
        {
            match serde_json::from_slice(&value) {
                Ok(l) => out.push(l),
                Err(e) => tracing::warn!(%key, error = %e, "unreadable dead letter skipped"),
            }
        }
        Ok(out)
    }

    /// Keys of the dead letters committed with checkpoints after `epoch`.
    pub fn dead_letter_keys_after(&self, epoch: u64) -> ExecResult<Vec<String>> {
        let prefix = self.dead_letter_prefix();
        Ok(self
            .store
            .list_checkpoint_records(&prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k[prefix.len()..]
                    .split('/')
                    .next()
                    .and_then(|e| e.parse::<u64>().ok())
                    .is_some_and(|e| e > epoch)
            })
            .collect())
    }

    pub fn drop_all(&self) -> ExecResult<()> {
        let mut keys: Vec<String> = Vec::new();
        for prefix in [self.prefix(), self.dead_letter_prefix()] {
            keys.extend(
                self.store
                    .list_checkpoint_records(&prefix)?
                    .into_iter()
                    .map(|(k, _)| k),
            );
        }
        self.store.commit(weir_storage::Commit {
            checkpoint_deletes: keys,
            ..Default::default()
        })?;
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root)
                .map_err(ioerr(format!("remove {}", self.root.display())))?;
        }
        Ok(())
    }

    /// Every checkpoint directory but those of the `keep` records (the
    /// retained ones, once a newer record is durable): older checkpoints,
    /// and leftovers of writes and imports a crash cut short.
    pub fn prune_dirs(&self, keep: &[&CheckpointRecord]) {
        let keep: HashSet<String> = keep.iter().map(|r| dir_name(r)).collect();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("chk-") && !keep.contains(&name) {
                self.delete_dir(&e.path());
            }
        }
    }
}

/// The name of a recorded checkpoint's directory.
pub fn dir_name(rec: &CheckpointRecord) -> String {
    rec.dir
        .clone()
        .unwrap_or_else(|| format!("chk-{}", rec.epoch))
}
