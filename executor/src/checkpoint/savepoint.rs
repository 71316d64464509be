//! Savepoints and restore points.
//!
//! A savepoint is a completed, aligned checkpoint copied into a directory of
//! its own, together with the query's result rows at that checkpoint, so it
//! is self-contained (deleting checkpoints never breaks it: RocksDB's SST
//! files are hard links, every other file is a copy) and portable (the
//! directory, copied to another server's data directory, starts the query
//! there):
//!
//! ```text
//! <dir>/savepoint.json   manifest: the checkpoint record and what the
//!                        server stored with it (definition, options, ...)
//! <dir>/result.bin       result rows at the checkpoint (checksummed IPC)
//! <dir>/state.bin        memory backend's state, or
//! <dir>/state/n<node>-s<subtask>/   RocksDB backend's stores
//! ```
//!
//! A directory is written under a temporary name and renamed when
//! complete, so a crash never leaves a half-written savepoint under the
//! final name.
//!
//! Restoring a point in time ([`RestorePoint`], [`import`]) makes it the
//! query's only checkpoint: its state files go to a new directory no record
//! names (`chk-<epoch>-r<n>`, named in its record), and one
//! atomic commit writes its record, deletes every other record of the
//! query (their timeline is abandoned) and dead letters committed after
//! it, and changes the result table to the point's rows. The query then
//! starts from it as after any restart: sources replay the input after the
//! point's offsets, so nothing is lost or counted twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use weir_storage::{decode_batch, encode_batch, state_file, Commit};

use super::storage::{CheckpointRecord, CheckpointStorage, SourceOffset};
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::state::subtask_dir_name;
use crate::table::Table;

pub const MANIFEST_FILE: &str = "savepoint.json";
const RESULT_FILE: &str = "result.bin";
/// Version of the directory layout.
pub const SAVEPOINT_FORMAT: u32 = 1;

/// What `savepoint.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavepointManifest {
    pub format: u32,
    pub record: CheckpointRecord,
    /// Rows of the result table at the checkpoint (`None`: the query ends
    /// in a sink outside Weir).
    pub result_rows: Option<u64>,
    /// What the server keeps with it (query name, definition, options,
    /// version, trigger), opaque here.
    pub server: serde_json::Value,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ExecError {
    move |e| ExecError::Storage(weir_storage::StorageError::io(what, e))
}

/// Copies a directory tree: SST files are hard-linked when possible
/// (immutable, and a link keeps them alive when the original goes),
/// everything else copied.
pub fn copy_tree(from: &Path, to: &Path) -> ExecResult<u64> {
    std::fs::create_dir_all(to).map_err(io(format!("create {}", to.display())))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from).map_err(io(format!("read {}", from.display())))? {
        let entry = entry.map_err(io(format!("read {}", from.display())))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        let meta = entry
            .metadata()
            .map_err(io(format!("stat {}", path.display())))?;
        if meta.is_dir() {
            bytes += copy_tree(&path, &target)?;
            continue;
        }
        bytes += meta.len();
        let sst = path.extension().is_some_and(|e| e == "sst");
        if sst && std::fs::hard_link(&path, &target).is_ok() {
            continue;
        }
        std::fs::copy(&path, &target).map_err(io(format!("copy {}", path.display())))?;
    }
    Ok(bytes)
}

fn remove_if_exists(dir: &Path) -> ExecResult<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("remove {}", dir.display()))(e)),
    }
}

/// Writes a savepoint of the completed checkpoint `rec` into `dest`,
/// returning its size in bytes. Blocking; call it right after the
/// checkpoint committed and before the next one can (the result table
/// then holds exactly the checkpoint's rows).
pub fn write_savepoint(
    storage: &CheckpointStorage,
    rec: &CheckpointRecord,
    result: Option<&Table>,
    dest: &Path,
    server: serde_json::Value,
) -> ExecResult<u64> {
    if dest.exists() {
        return Err(ExecError::user(
            crate::SqlState::DUPLICATE_OBJECT,
            format!("savepoint directory {} already exists", dest.display()),
        ));
    }
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    remove_if_exists(&tmp)?;
    let mut bytes = copy_tree(&storage.dir_of(rec), &tmp)?;
    let result_rows = match result {
        Some(table) => {
            let batch = table.snapshot()?;
            let payload = encode_batch(&batch)?;
            state_file::write(&tmp.join(RESULT_FILE), &payload)?;
            bytes += payload.len() as u64;
            Some(batch.num_rows() as u64)
        }
        None => None,
    };
    let manifest = SavepointManifest {
        format: SAVEPOINT_FORMAT,
        record: rec.clone(),
        result_rows,
        server,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("json");
    bytes += json.len() as u64;
    state_file::write(&tmp.join(MANIFEST_FILE), &json)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    std::fs::rename(&tmp, dest).map_err(io(format!("rename {}", tmp.display())))?;
    Ok(bytes)
}

/// Reads a savepoint's manifest.
pub fn read_manifest(dir: &Path) -> ExecResult<SavepointManifest> {
    let bytes = state_file::read(&dir.join(MANIFEST_FILE))?;
    let m: SavepointManifest = serde_json::from_slice(&bytes).map_err(|e| {
        ExecError::user(
            crate::SqlState::DATA_CORRUPTED,
            format!("savepoint {} is unreadable: {e}", dir.display()),
        )
    })?;
    if m.format != SAVEPOINT_FORMAT {
        return Err(ExecError::user(
            crate::SqlState::FEATURE_NOT_SUPPORTED,
            format!(
                "savepoint {} has format {} (this server reads format {SAVEPOINT_FORMAT})",
                dir.display(),
                m.format
            ),
        ));
    }
    Ok(m)
}

/// How the state of one plan maps onto another's (an upgrade that keeps
/// the state of the operators it did not change).
#[derive(Debug, Clone, Default)]
pub struct Remap {
    /// Old node → new node, for the operators whose state is kept.
    pub nodes: std::collections::HashMap<usize, usize>,
    /// The new plan's node names, fingerprints and parallelism.
    pub names: Vec<String>,
    pub fingerprints: Vec<String>,
    pub parallelism: Vec<usize>,
    /// The new plan's source nodes that read their input from the start
    /// (new, or kept under new operators only), and whether each is a
    /// connector source.
    pub fresh_sources: Vec<(usize, bool)>,
    /// Kept operators that emit their results again (their consumers are
    /// new).
    pub reemit: Vec<usize>,
}

impl Remap {
    /// The old plan's record as the new plan's: state, offsets and stores
    /// renamed to the new nodes, the rest dropped.
    fn record(&self, old: &CheckpointRecord) -> ExecResult<CheckpointRecord> {
        if old.in_flight_bytes > 0 {
            return Err(ExecError::internal(
                "an unaligned checkpoint cannot be mapped onto another plan",
            ));
        }
        let mut rec = old.clone();
        rec.nodes = self.names.clone();
        rec.fingerprints = self.fingerprints.clone();
        rec.parallelism = self.parallelism.clone();
        for (o, n) in &self.nodes {
            if let (Some(p), Some(slot)) = (old.parallelism.get(*o), rec.parallelism.get_mut(*n)) {
                *slot = *p;
            }
        }
        let fresh: Vec<usize> = self.fresh_sources.iter().map(|(n, _)| *n).collect();
        rec.sources = old
            .sources
            .iter()
            .filter_map(|s| {
                let n = *self.nodes.get(&s.node)?;
                (!fresh.contains(&n)).then(|| SourceOffset {
                    node: n,
                    ..s.clone()
                })
            })
            .collect();
        for (node, connector) in &self.fresh_sources {
            for subtask in 0..self.parallelism[*node] {
                rec.sources.push(SourceOffset {
                    node: *node,
                    subtask,
                    offset: 0,
                    splits: connector.then(Vec::new),
                });
            }
        }
        rec.sources.sort_by_key(|s| (s.node, s.subtask));
        rec.stores = old
            .stores
            .iter()
            .filter_map(|(node, subtask)| Some((*self.nodes.get(node)?, *subtask)))
            .collect();
        rec.stores.sort();
        rec.reemit = self.reemit.clone();
        rec.retract_results = true;
        Ok(rec)
    }
}

/// Copies a memory-backend state file keeping the entries of the mapped
/// nodes, renamed (`storage.rs` writes: node u32, key group u16, key
/// length u32, key, value length u32, value).
fn remap_state_file(
    from: &Path,
    to: &Path,
    nodes: &std::collections::HashMap<usize, usize>,
) -> ExecResult<()> {
    let bytes = state_file::read(from)?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    let take = |pos: &mut usize, n: usize| -> ExecResult<std::ops::Range<usize>> {
        if *pos + n > bytes.len() {
            return Err(ExecError::internal("checkpoint state ends early"));
        }
        *pos += n;
        Ok(*pos - n..*pos)
    };
    let u32_at = |r: std::ops::Range<usize>| {
        u32::from_le_bytes(bytes[r].try_into().expect("4 bytes")) as usize
    };
    while pos < bytes.len() {
        let node = u32_at(take(&mut pos, 4)?);
        let start = pos;
        take(&mut pos, 2)?;
        let klen = u32_at(take(&mut pos, 4)?);
        take(&mut pos, klen)?;
        let vlen = u32_at(take(&mut pos, 4)?);
        take(&mut pos, vlen)?;
        if let Some(n) = nodes.get(&node) {
            out.extend_from_slice(&(*n as u32).to_le_bytes());
            out.extend_from_slice(&bytes[start..pos]);
        }
    }
    Ok(state_file::write(to, &out)?)
}

/// Where a query restarts from.
pub struct RestorePoint {
    /// The checkpoint to restore (its epoch is kept).
    pub record: CheckpointRecord,
    /// Directory holding its state files (a savepoint); `None` when they
    /// are the query's own checkpoint directory.
    pub files: Option<PathBuf>,
    /// The result rows at the point (`None`: no result table).
    pub result: Option<RecordBatch>,
    /// The point is of another plan, whose state maps onto this one.
    pub remap: Option<Remap>,
}

impl RestorePoint {
    /// The point a savepoint directory holds.
    pub fn from_savepoint(dir: &Path, result_schema: Option<&SchemaRef>) -> ExecResult<Self> {
        let m = read_manifest(dir)?;
        let result = match (m.result_rows, result_schema) {
            (Some(_), Some(schema)) => {
                let batch = decode_batch(&state_file::read(&dir.join(RESULT_FILE))?)?;
                if batch.schema().fields().len() != schema.fields().len()
                    || batch
                        .schema()
                        .fields()
                        .iter()
                        .zip(schema.fields())
                        .any(|(a, b)| a.data_type() != b.data_type())
                {
                    return Err(ExecError::user(
                        crate::SqlState::DATATYPE_MISMATCH,
                        format!(
                            "the savepoint's result columns differ from the query's (savepoint: {}; query: {})",
                            describe(&batch.schema()),
                            describe(schema)
                        ),
                    ));
                }
                Some(RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?)
            }
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(ExecError::user(
                    crate::SqlState::FEATURE_NOT_SUPPORTED,
                    "the savepoint and the query differ in where their results go (a result table or a sink)",
                ))
            }
        };
        Ok(RestorePoint {
            record: m.record,
            files: Some(dir.to_path_buf()),
            result,
            remap: None,
        })
    }

    /// The point a retained checkpoint of the query holds; its result rows
    /// are the result table's log replayed up to the checkpoint.
    pub fn from_checkpoint(
        storage: &CheckpointStorage,
        epoch: u64,
        result: Option<&Table>,
    ) -> ExecResult<Self> {
        let records = storage.records()?;
        let Some(rec) = records.iter().find(|r| r.epoch == epoch) else {
            let kept: Vec<String> = records.iter().map(|r| r.epoch.to_string()).collect();
            return Err(ExecError::user(
                crate::SqlState::UNDEFINED_OBJECT,
                format!(
                    "checkpoint {epoch} is not retained (retained: {})",
                    if kept.is_empty() {
                        "none".to_string()
                    } else {
                        kept.join(", ")
                    }
                ),
            ));
        };
        let result = match result {
            Some(table) => {
                let Some(version) = rec.result_version else {
                    return Err(ExecError::user(
                        crate::SqlState::FEATURE_NOT_SUPPORTED,
                        format!("checkpoint {epoch} was written by an older version of Weir and does not say which results it holds"),
                    ));
                };
                Some(table.contents_at(version)?)
            }
            None => None,
        };
        Ok(RestorePoint {
            record: rec.clone(),
            files: None,
            result,
            remap: None,
        })
    }
}

fn describe(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes `point` the query's only checkpoint and its result rows the
/// result table's contents, in one atomic commit (see the module doc)
/// together with `with` (catalog changes of the caller). The query must
/// not be running. Returns the imported record.
pub fn import(
    storage: &CheckpointStorage,
    point: RestorePoint,
    result: Option<&Arc<Table>>,
    with: Commit,
) -> ExecResult<CheckpointRecord> {
    let mut rec = match &point.remap {
        Some(remap) => remap.record(&point.record)?,
        None => point.record.clone(),
    };
    rec.query_id = storage.query_id();
    let src = match (&point.files, &point.remap) {
        (Some(src), _) => Some(src.clone()),
        // The query's own checkpoint, its nodes renamed.
        (None, Some(_)) => Some(storage.dir_of(&point.record)),
        (None, None) => None,
    };
    if let Some(src) = &src {
        // A directory no record names: until the commit below, every
        // record still finds its own files (a crash leaves them intact).
        let (name, dir) = storage.import_dir(rec.epoch);
        rec.dir = Some(name);
        let tmp = dir.with_extension("importing");
        remove_if_exists(&tmp)?;
        std::fs::create_dir_all(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        match &point.remap {
            None => {
                for name in ["state", "state.bin", "channels.bin"] {
                    let from = src.join(name);
                    if from.is_dir() {
                        copy_tree(&from, &tmp.join(name))?;
                    } else if from.exists() {
                        std::fs::copy(&from, tmp.join(name))
                            .map_err(io(format!("copy {}", from.display())))?;
                    }
                }
            }
            Some(remap) => {
                for (old, subtask) in &point.record.stores {
                    if let Some(new) = remap.nodes.get(old) {
                        copy_tree(
                            &src.join("state").join(subtask_dir_name(*old, *subtask)),
                            &tmp.join("state").join(subtask_dir_name(*new, *subtask)),
                        )?;
                    }
                }
                if src.join("state.bin").exists() {
                    remap_state_file(&src.join("state.bin"), &tmp.join("state.bin"), &remap.nodes)?;
                }
            }
        }
        std::fs::rename(&tmp, &dir).map_err(io(format!("rename {}", tmp.display())))?;
    }
    rec.result_version = None;
    let writes = match (result, point.result) {
        (Some(table), Some(rows)) => {
            let chunks = vec![Chunk::deletes(table.snapshot()?), Chunk::inserts(rows)];
            Some((table, table.prepare_commit(&chunks)?))
        }
        _ => None,
    };
    let mut commit = wipe_commit(storage, Some(rec.epoch), with)?;
    if let Some((table, writes)) = &writes {
        commit.table_writes.extend(writes.iter().cloned());
        rec.result_version = Some(table.version() + writes.len() as u64);
    }
    commit.checkpoint_puts.push((
        storage.record_key(rec.epoch),
        serde_json::to_vec(&rec).expect("json"),
    ));
    storage.store().commit(commit)?;
    if let Some((table, writes)) = writes {
        table.apply_committed(&writes)?;
    }
    storage.prune_dirs(&[&rec]);
    Ok(rec)
}

/// Forgets every checkpoint of the query and retracts its results, so
/// that it starts without state and recomputes from its inputs
/// (`START ... WITHOUT STATE`), in one commit with `with`.
pub fn wipe(
    storage: &CheckpointStorage,
    result: Option<&Arc<Table>>,
    with: Commit,
) -> ExecResult<()> {
    let mut commit = wipe_commit(storage, None, with)?;
    let chunks = match result {
        Some(table) if table.row_count() > 0 => vec![Chunk::deletes(table.snapshot()?)],
        _ => Vec::new(),
    };
    let writes = match result {
        Some(table) => table.prepare_commit(&chunks)?,
        None => Vec::new(),
    };
    commit.table_writes.extend(writes.iter().cloned());
    storage.store().commit(commit)?;
    if let Some(table) = result {
        table.apply_committed(&writes)?;
    }
    storage.prune_dirs(&[]);
    Ok(())
}

/// Deletes every checkpoint record of the query and the dead letters
/// committed after `keep` (all of them without one).
fn wipe_commit(
    storage: &CheckpointStorage,
    keep: Option<u64>,
    mut commit: Commit,
) -> ExecResult<Commit> {
    for r in storage.records()? {
        if Some(r.epoch) != keep {
            commit.checkpoint_deletes.push(storage.record_key(r.epoch));
        }
    }
    commit
        .checkpoint_deletes
        .extend(storage.dead_letter_keys_after(keep.unwrap_or(0))?);
    Ok(commit)
}
