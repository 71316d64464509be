//! Runtime-level tests of barrier alignment and of channel-state capture
//! and replay.
//!
//! Two levels:
//! - one subtask's task loop driven through channels built by hand (exact
//!   control of what is queued where when a barrier arrives);
//! - small stream graphs started with [`QueryRuntime::start`] over durable
//!   tables and a checkpoint storage in a temp dir.
//!
//! Backpressure comes from a test operator that lets chunks through only
//! when the test hands it a permit (a [`Gate`]); the tests hand permits out
//! only while the gated subtask still owes the snapshot of the checkpoint in
//! progress, so the amount of queued data does not depend on timing. Every
//! assertion is on outcomes (what was processed before which snapshot, what
//! a checkpoint captured, the final results), never on durations; waits
//! are generous caps or only give a misbehaving task the chance to misbehave.

use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;
use weir_storage::Store;

use super::channel::{self, Received, Receiver, Sender};
use super::coordinator::Coordinator;
use super::router::{EdgeOut, OutputRouter};
use super::task::{self, TaskIds, TaskRestore};
use super::{plan_restore, QueryRuntime, QueryStatus, StartOptions};
use crate::checkpoint::{
    CheckpointConfig, CheckpointRecord, CheckpointStats, CheckpointStatus, CheckpointStorage,
    LoadedState, StateBackendKind, SubtaskSnapshot,
};
use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::graph::{NodeKind, Partitioning, StreamGraph};
use crate::message::{Barrier, BarrierKind, CheckpointMode, Message};
use crate::operator::{FnFactory, Operator, OperatorContext, OperatorFactory, Output, StateWriter};
use crate::operators::hash_agg::{AggSpec, HashAggOperator};
use crate::table::{Table, TableDesc, WriteCheck};

// ---------------------------------------------------------------------------
// Test operators

/// Lets chunks through one permit at a time, or freely once opened.
#[derive(Default)]
struct Gate {
    st: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    permits: usize,
    /// A subtask is blocked in `pass`.
    waiting: bool,
}

impl Gate {
    fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Blocks the calling (operator) thread until a permit or the opening.
    /// In `block_in_place`: a task this one just woke (the next subtask,
    /// which it handed a barrier) may sit in this worker's LIFO slot, where
    /// no other worker would steal it while the thread is blocked.
    fn pass(&self) {
        tokio::task::block_in_place(|| {
            let mut st = self.st.lock();
            st.waiting = true;
            while !st.open && st.permits == 0 {
                self.cv.wait(&mut st);
            }
            if !st.open {
                st.permits -= 1;
            }
            st.waiting = false;
        })
    }

    fn permit(&self) {
        self.st.lock().permits += 1;
        self.cv.notify_all();
    }

    fn open(&self) {
        self.st.lock().open = true;
        self.cv.notify_all();
    }

    /// Blocked with no permit left to take.
    fn blocked(&self) -> bool {
        let st = self.st.lock();
        st.waiting && st.permits == 0 && !st.open
    }

    fn idle_permits(&self) -> usize {
        self.st.lock().permits
    }
}

/// Opens the gates when a test ends, also by a failed assertion: a subtask
/// blocked in [`Gate::pass`] holds a worker thread, and the test's tokio
/// runtime would wait for it forever.
struct OpenOnDrop(Vec<Arc<Gate>>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        for g in &self.0 {
            g.open();
        }
    }
}

/// What a probe saw, in order: data (input, values of the last column) and
/// the points where it was snapshotted.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Data(usize, Vec<i64>),
    Snapshot,
}

type Log = Arc<Mutex<Vec<Ev>>>;

/// A pass-through operator that records what it processes and when it is
/// snapshotted, optionally behind a gate.
struct Probe {
    log: Log,
    gate: Option<Arc<Gate>>,
}

impl Operator for Probe {
    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        if let Some(g) = &self.gate {
            g.pass();
        }
        self.log
            .lock()
            .push(Ev::Data(input, last_column(&chunk.batch)));
        out.push(chunk);
        Ok(())
    }

    fn snapshot(&mut self, _state: &mut StateWriter) -> ExecResult<()> {
        self.log.lock().push(Ev::Snapshot);
        Ok(())
    }
}

/// Probes of one node: a log (and a gate, if gated) per subtask.
struct Probes {
    schema: SchemaRef,
    logs: Vec<Log>,
    gates: Option<Vec<Arc<Gate>>>,
}

impl Probes {
    fn new(schema: SchemaRef, parallelism: usize, gated: bool) -> Arc<Probes> {
        Arc::new(Probes {
            schema,
            logs: (0..parallelism).map(|_| Log::default()).collect(),
            gates: gated.then(|| (0..parallelism).map(|_| Gate::closed()).collect()),
        })
    }

    fn gates(&self) -> Vec<Arc<Gate>> {
        self.gates.clone().unwrap_or_default()
    }

    fn log(&self, subtask: usize) -> Vec<Ev> {
        self.logs[subtask].lock().clone()
    }

    fn snapshots(&self, subtask: usize) -> usize {
        self.log(subtask)
            .iter()
            .filter(|e| **e == Ev::Snapshot)
            .count()
    }
}

impl OperatorFactory for Probes {
    fn create(&self, subtask: usize, _parallelism: usize) -> ExecResult<Box<dyn Operator>> {
        Ok(Box::new(Probe {
            log: self.logs[subtask].clone(),
            gate: self.gates.as_ref().map(|g| g[subtask].clone()),
        }))
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// (input, value) of every row processed before the `n`-th snapshot
/// (1-based), in order.
fn before_snapshot(log: &[Ev], n: usize) -> Vec<(usize, i64)> {
    let mut seen = 0;
    let mut out = Vec::new();
    for e in log {
        match e {
            Ev::Snapshot => {
                seen += 1;
                if seen == n {
                    return out;
                }
            }
            Ev::Data(i, vals) => out.extend(vals.iter().map(|v| (*i, *v))),
        }
    }
    panic!("no snapshot {n} in {log:?}");
}

fn data_values(log: &[Ev], input: usize) -> Vec<i64> {
    log.iter()
        .flat_map(|e| match e {
            Ev::Data(i, vals) if *i == input => vals.clone(),
            _ => Vec::new(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Data helpers

fn v_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]))
}

/// Base tables of the graph tests: a group key and a unique value.
fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn int_columns(batch: &RecordBatch) -> Vec<Vec<Option<i64>>> {
    batch
        .columns()
        .iter()
        .map(|c| {
            let c = cast(c, &DataType::Int64).unwrap();
            let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
            c.iter().collect()
        })
        .collect()
}

fn last_column(batch: &RecordBatch) -> Vec<i64> {
    int_columns(batch)
        .pop()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.expect("probed values are not null"))
        .collect()
}

/// Rows of a one-column chunk.
fn vchunk(vals: &[i64]) -> Chunk {
    Chunk::inserts(
        RecordBatch::try_new(v_schema(), vec![Arc::new(Int64Array::from(vals.to_vec()))]).unwrap(),
    )
}

fn kv_batch(rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        kv_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

/// Every row of a table, sorted (a multiset: duplicates stay).
fn table_rows(t: &Table) -> Vec<Vec<Option<i64>>> {
    let batch = t.snapshot().unwrap();
    let cols = int_columns(&batch);
    let mut rows: Vec<Vec<Option<i64>>> = (0..batch.num_rows())
        .map(|i| cols.iter().map(|c| c[i]).collect())
        .collect();
    rows.sort();
    rows
}

fn chunk_values(chunks: &[Chunk]) -> Vec<i64> {
    chunks.iter().flat_map(|c| last_column(&c.batch)).collect()
}

fn barrier(epoch: u64, mode: CheckpointMode) -> Barrier {
    Barrier {
        epoch,
        kind: BarrierKind::Checkpoint,
        mode,
        full: true,
        aligned_timeout: None,
        triggered_at: None,
    }
}

// ---------------------------------------------------------------------------
// Environment of the graph tests

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "weir-runtime-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const QUERY_ID: u64 = 7;

/// A data dir with its store. Declared fields drop in order: the store
/// before its directory.
struct Env {
    store: Arc<Store>,
    dir: TempDir,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = TempDir::new(tag);
        let store = Arc::new(Store::open(&dir.0.join("db")).unwrap());
        Env { store, dir }
    }

    fn desc(id: u64, name: &str, schema: SchemaRef) -> TableDesc {
        TableDesc {
            id,
            name: name.into(),
            schema,
            primary_key: vec![],
            watermark: None,
        }
    }

    fn base_table(&self, id: u64, name: &str) -> Arc<Table> {
        Table::open_durable(Env::desc(id, name, kv_schema()), self.store.clone()).unwrap()
    }

    fn result_table(&self, id: u64, schema: SchemaRef) -> Arc<Table> {
        Table::open_result(Env::desc(id, "result", schema), self.store.clone()).unwrap()
    }

    fn storage(&self) -> Arc<CheckpointStorage> {
        CheckpointStorage::new(self.store.clone(), &self.dir.0, QUERY_ID)
    }
}

fn config(mode: CheckpointMode, interval: Duration) -> CheckpointConfig {
    CheckpointConfig {
        interval,
        mode,
        // Keep every checkpoint, to look at any of them afterwards.
        retained: 1000,
        ..CheckpointConfig::default()
    }
}

fn fresh(storage: Arc<CheckpointStorage>, cfg: CheckpointConfig) -> StartOptions {
    StartOptions {
        config: Arc::new(Mutex::new(cfg)),
        storage,
        restore: None,
        next_epoch: 1,
        first_commit: None,
        skipped: Vec::new(),
        history: None,
        bad_records: None,
        counts: Default::default(),
    }
}

/// Options resuming where `plan` (from `plan_restore`) says.
fn resumed(
    storage: Arc<CheckpointStorage>,
    cfg: CheckpointConfig,
    plan: super::RestorePlan,
) -> StartOptions {
    StartOptions {
        restore: plan.restore,
        next_epoch: plan.next_epoch,
        skipped: plan.skipped,
        ..fresh(storage, cfg)
    }
}

fn insert(t: &Table, rows: &[(i64, i64)]) {
    t.write(Chunk::inserts(kv_batch(rows)), WriteCheck::Constraints)
        .unwrap();
}

fn delete(t: &Table, rows: &[(i64, i64)]) {
    t.write(Chunk::deletes(kv_batch(rows)), WriteCheck::Constraints)
        .unwrap();
}

/// Polls `cond` every 10ms; fails after 30s or when the query failed.
async fn eventually(what: &str, rt: Option<&QueryRuntime>, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if let Some(rt) = rt {
            assert_eq!(rt.status(), QueryStatus::Running, "{:?}", rt.failure());
        }
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

/// Drives a query whose `gated` node blocks on every chunk: a gated
/// subtask gets a permit (one chunk) only while it owes the snapshot of the
/// checkpoint in progress and has no unused permit, so between checkpoints
/// nothing drains and data stays queued. Stops when `done` returns a value.
async fn drive<T>(
    rt: &QueryRuntime,
    gated: &Probes,
    mut done: impl FnMut(&[CheckpointStats]) -> Option<T>,
) -> T {
    let gates = gated.gates();
    for _ in 0..3000 {
        assert_eq!(rt.status(), QueryStatus::Running, "{:?}", rt.failure());
        let history = rt.checkpoint_history();
        if let Some(t) = done(&history) {
            return t;
        }
        if let Some(row) = history
            .last()
            .filter(|r| r.status == CheckpointStatus::InProgress)
        {
            // Fresh start: epochs count from 1, one snapshot each.
            for (s, g) in gates.iter().enumerate() {
                if (gated.snapshots(s) as u64) < row.checkpoint_id && g.idle_permits() == 0 {
                    g.permit();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "gave up driving the query: history {:#?}, snapshots {:?}, blocked {:?}",
        rt.checkpoint_history(),
        (0..gates.len())
            .map(|s| gated.snapshots(s))
            .collect::<Vec<_>>(),
        gates.iter().map(|g| g.blocked()).collect::<Vec<_>>()
    );
}

fn last_id(history: &[CheckpointStats]) -> u64 {
    history.iter().map(|r| r.checkpoint_id).max().unwrap_or(0)
}

fn record(storage: &CheckpointStorage, epoch: u64) -> CheckpointRecord {
    storage
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.epoch == epoch)
        .unwrap_or_else(|| panic!("no record of checkpoint {epoch}"))
}

fn source_offset(rec: &CheckpointRecord, node: usize) -> u64 {
    rec.sources
        .iter()
        .find(|s| s.node == node)
        .unwrap_or_else(|| panic!("no offset for source {node}"))
        .offset
}

/// Values of the captured channel state of one subtask.
fn captured(state: &LoadedState, node: usize, subtask: usize) -> Vec<i64> {
    state
        .channels
        .get(&(node, subtask))
        .map(|chunks| {
            chunks
                .iter()
                .flat_map(|(_, c)| last_column(&c.batch))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------------------
// Task level: one subtask, channels by hand

async fn recv(rx: &mut Receiver) -> Option<Received> {
    poll_fn(|cx| rx.poll_recv(cx)).await
}

/// One probe subtask (node 0) with two inputs and one output channel of
/// `out_capacity` (addressed to node 9).
struct OneTask {
    coord: Arc<Coordinator>,
    inputs: Vec<Sender>,
    out: Receiver,
    log: Log,
    handle: tokio::task::JoinHandle<ExecResult<()>>,
}

fn one_task(out_capacity: usize, restore: Option<TaskRestore>) -> OneTask {
    let coord = Arc::new(Coordinator::new("t".into(), vec![vec![0]], None));
    let (tx0, rx0) = channel::channel(super::CHANNEL_CAPACITY_MESSAGES);
    let (tx1, rx1) = channel::channel(super::CHANNEL_CAPACITY_MESSAGES);
    let (otx, orx) = channel::channel(out_capacity);
    let edge = EdgeOut::new(
        Partitioning::Forward,
        vec![(otx, (9, 0, 0))],
        &v_schema(),
        1,
    )
    .unwrap();
    let log = Log::default();
    let op = Box::new(Probe {
        log: log.clone(),
        gate: None,
    });
    let ctx = OperatorContext {
        query: "t".into(),
        operator: "probe".into(),
        subtask: 0,
        parallelism: 1,
        state: None,
        restored_epoch: None,
        reemit: false,
    };
    let handle = tokio::spawn(task::run(
        ctx,
        TaskIds {
            node: 0,
            subtask: 0,
        },
        op,
        vec![(0, rx0), (1, rx1)],
        OutputRouter::new(vec![edge]),
        None,
        restore,
        None,
        coord.clone(),
    ));
    OneTask {
        coord,
        inputs: vec![tx0, tx1],
        out: orx,
        log,
        handle,
    }
}

impl OneTask {
    fn begin(&self, epoch: u64) -> oneshot::Receiver<Vec<SubtaskSnapshot>> {
        let (tx, rx) = oneshot::channel();
        self.coord.begin(epoch, tx);
        rx
    }

    async fn send(&self, input: usize, msg: Message) {
        self.inputs[input].send(msg).await.unwrap();
    }

    fn log(&self) -> Vec<Ev> {
        self.log.lock().clone()
    }

    fn processed(&self) -> BTreeSet<i64> {
        before_all(&self.log())
    }

    async fn stop(self) {
        self.coord.cancel_all();
        self.handle.await.unwrap().unwrap();
    }
}

fn before_all(log: &[Ev]) -> BTreeSet<i64> {
    log.iter()
        .flat_map(|e| match e {
            Ev::Data(_, v) => v.clone(),
            Ev::Snapshot => Vec::new(),
        })
        .collect()
}

/// What the output channel holds, drained: data values, and `-epoch` for a
/// barrier (with `Some(overtaken values)` if it jumped the queue).
async fn drain_output(rx: &mut Receiver, n: usize) -> Vec<(i64, Option<Vec<i64>>)> {
    let mut out = Vec::new();
    while out.len() < n {
        match recv(rx).await.expect("output channel open") {
            Received::Msg(Message::Data(c)) => {
                out.extend(last_column(&c.batch).into_iter().map(|v| (v, None)))
            }
            Received::Msg(Message::Barrier(b)) => out.push((-(b.epoch as i64), None)),
            Received::Priority { barrier, overtaken } => {
                out.push((-(barrier.epoch as i64), Some(chunk_values(&overtaken))))
            }
            Received::Msg(m) => panic!("unexpected {m:?}"),
        }
    }
    out
}

/// Aligned: after the barrier of input 0, nothing behind it on input 0 is
/// processed until input 1's barrier came; the snapshot is taken exactly
/// between the two, and the barrier goes downstream at that same point.
#[tokio::test]
async fn aligned_barrier_blocks_its_input_until_the_other_input_delivers_it() {
    let t = one_task(64, None);
    let done = t.begin(1);
    let aligned = barrier(1, CheckpointMode::Aligned);
    for v in [1, 2] {
        t.send(0, Message::Data(vchunk(&[v]))).await;
    }
    t.send(0, Message::Barrier(aligned)).await;
    for v in [3, 4] {
        t.send(0, Message::Data(vchunk(&[v]))).await;
    }
    t.send(1, Message::Data(vchunk(&[10]))).await;
    eventually("1, 2 and 10 processed", None, || {
        t.processed().is_superset(&BTreeSet::from([1, 2, 10]))
    })
    .await;
    // Give a task that ignores the block every chance to go on with 3, 4.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.processed(), BTreeSet::from([1, 2, 10]), "{:?}", t.log());
    assert!(!t.log().contains(&Ev::Snapshot));

    t.send(1, Message::Barrier(aligned)).await;
    t.send(1, Message::Data(vchunk(&[11]))).await;
    eventually("everything processed", None, || {
        t.processed() == BTreeSet::from([1, 2, 3, 4, 10, 11])
    })
    .await;
    let log = t.log();
    let before: BTreeSet<i64> = before_snapshot(&log, 1).iter().map(|r| r.1).collect();
    assert_eq!(before, BTreeSet::from([1, 2, 10]), "{log:?}");

    let snaps = done.await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(!snaps[0].unaligned);
    assert!(!snaps[0].timed_out_to_unaligned);
    assert!(snaps[0].channel_state.is_empty());

    // Downstream: the barrier between the pre- and post-barrier output.
    let mut t = t;
    let seen = drain_output(&mut t.out, 7).await;
    let at = seen.iter().position(|(v, _)| *v == -1).unwrap();
    let pre: BTreeSet<i64> = seen[..at].iter().map(|r| r.0).collect();
    let post: BTreeSet<i64> = seen[at + 1..].iter().map(|r| r.0).collect();
    assert_eq!(pre, BTreeSet::from([1, 2, 10]));
    assert_eq!(post, BTreeSet::from([3, 4, 11]));
    assert_eq!(seen[at].1, None, "aligned barrier travels in order");
    t.stop().await;
}

/// Unaligned: the barrier that jumped input 0's queue is taken at once,
/// even though the subtask's output is blocked by backpressure. The
/// snapshot then holds exactly what was processed; the checkpoint's channel
/// state is the input it overtook, the input that arrived on input 1 before
/// that input's barrier, and the output not yet sent. Restored from it, a
/// subtask replays the captured input before anything else.
#[tokio::test]
async fn unaligned_barrier_captures_overtaken_input_and_unsent_output_and_restore_replays_it() {
    // Room for one message downstream, which nobody reads for now.
    let t = one_task(1, None);
    let done = t.begin(1);
    for v in [1, 2, 3] {
        t.send(0, Message::Data(vchunk(&[v]))).await;
    }
    // 1 goes out, 2 is processed but its output waits in the router, and
    // with output pending the task reads no more input: 3 stays queued.
    eventually("1 and 2 processed", None, || {
        t.processed().is_superset(&BTreeSet::from([1, 2]))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(t.processed(), BTreeSet::from([1, 2]));
    t.send(1, Message::Data(vchunk(&[10]))).await;

    let unaligned = barrier(1, CheckpointMode::Unaligned);
    t.inputs[0].send_priority(unaligned).unwrap();
    eventually("the snapshot", None, || t.log().contains(&Ev::Snapshot)).await;
    t.inputs[1].send_priority(unaligned).unwrap();
    let snaps = done.await.unwrap();
    assert_eq!(snaps.len(), 1);
    let snap = &snaps[0];
    assert!(snap.unaligned);
    assert!(!snap.timed_out_to_unaligned);
    assert_eq!(
        before_snapshot(&t.log(), 1),
        vec![(0, 1), (0, 2)],
        "snapshot at the first barrier, before the overtaken 3"
    );
    let mut state: Vec<(usize, usize, bool, Vec<i64>)> = snap
        .channel_state
        .iter()
        .map(|c| (c.node, c.input, c.from_sender, last_column(&c.chunk.batch)))
        .collect();
    state.sort();
    assert_eq!(
        state,
        vec![
            // Overtaken on input 0, arrived on input 1 before its barrier.
            (0, 0, false, vec![3]),
            (0, 1, false, vec![10]),
            // Processed, not yet sent: for node 9's input.
            (9, 0, true, vec![2]),
        ]
    );
    // Downstream, the barrier overtook the one message in the channel;
    // then processing goes on, every row once.
    let mut t = t;
    let seen = drain_output(&mut t.out, 5).await;
    assert_eq!(seen[0], (-1, Some(vec![1])));
    let rest = sorted(seen[1..].iter().map(|r| r.0).collect());
    assert_eq!(rest, vec![1, 2, 3, 10]);
    assert_eq!(t.processed(), BTreeSet::from([1, 2, 3, 10]));
    t.stop().await;

    // Restore from that checkpoint: the subtask's own captured input first.
    let channels: Vec<(usize, Chunk)> = snap
        .channel_state
        .iter()
        .filter(|c| c.node == 0)
        .map(|c| (c.input, c.chunk.clone()))
        .collect();
    let r = one_task(64, Some(TaskRestore { channels }));
    r.send(0, Message::Data(vchunk(&[4]))).await;
    r.send(1, Message::Data(vchunk(&[11]))).await;
    eventually("the new input", None, || {
        r.processed().is_superset(&BTreeSet::from([4, 11]))
    })
    .await;
    let log = r.log();
    assert_eq!(
        log[..2],
        [Ev::Data(0, vec![3]), Ev::Data(1, vec![10])],
        "replayed first: {log:?}"
    );
    assert_eq!(r.processed(), BTreeSet::from([3, 4, 10, 11]));
    r.stop().await;
}

// ---------------------------------------------------------------------------
// Graph level: two inputs, one of them behind a gate
//
//   a (source 0) ────────────────────────────┐ input 0
//                                            J (probe, node 3) ── sink (node 4)
//   b (source 1) ── gated probe (node 2) ────┘ input 1

struct TwoInputs {
    env: Env,
    a: Arc<Table>,
    b: Arc<Table>,
    result: Arc<Table>,
    slow_b: Arc<Probes>,
    j: Arc<Probes>,
}

const NODE_A: usize = 0;
const NODE_B: usize = 1;
const NODE_J: usize = 3;

impl TwoInputs {
    fn new(tag: &str) -> TwoInputs {
        let env = Env::new(tag);
        let a = env.base_table(1, "a");
        let b = env.base_table(2, "b");
        let result = env.result_table(100, kv_schema());
        TwoInputs {
            env,
            a,
            b,
            result,
            slow_b: Probes::new(kv_schema(), 1, true),
            j: Probes::new(kv_schema(), 1, false),
        }
    }

    fn graph(&self) -> StreamGraph {
        let mut g = StreamGraph::default();
        let s = kv_schema();
        let a = g.add_node("a", "", 1, s.clone(), NodeKind::TableSource(self.a.clone()));
        let b = g.add_node("b", "", 1, s.clone(), NodeKind::TableSource(self.b.clone()));
        let slow = g.add_node(
            "slow",
            "",
            1,
            s.clone(),
            NodeKind::Operator(self.slow_b.clone()),
        );
        let j = g.add_node("j", "", 1, s.clone(), NodeKind::Operator(self.j.clone()));
        let sink = g.add_node("sink", "", 1, s, NodeKind::ResultSink(self.result.clone()));
        assert_eq!((a, b, j), (NODE_A, NODE_B, NODE_J));
        g.connect(a, j, 0, Partitioning::Forward);
        g.connect(b, slow, 0, Partitioning::Forward);
        g.connect(slow, j, 1, Partitioning::Forward);
        g.connect(j, sink, 0, Partitioning::Forward);
        g
    }

    fn gate_b(&self) -> Arc<Gate> {
        self.slow_b.gates()[0].clone()
    }
}

/// Aligned, through the whole runtime: while input 1's barrier is held up
/// (behind a chunk its upstream cannot finish), rows written to `a` after
/// `a`'s barrier reach J but are not processed. J's snapshot holds exactly
/// the rows up to each source's checkpointed offset, nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aligned_checkpoint_snapshot_is_exactly_the_input_before_the_barriers() {
    let g = TwoInputs::new("aligned");
    let _open = OpenOnDrop(g.slow_b.gates());
    // Row i of `a` is at log offset i; `b`'s one row is 1001.
    for v in 1..=5 {
        insert(&g.a, &[(0, v)]);
    }
    insert(&g.b, &[(0, 1001)]);
    let storage = g.env.storage();
    let rt = QueryRuntime::start(
        "aligned",
        Arc::new(g.graph()),
        fresh(
            storage.clone(),
            // Only FLUSH checkpoints (always aligned).
            config(CheckpointMode::Aligned, Duration::from_secs(3600)),
        ),
    )
    .unwrap();
    eventually("b's row stuck in the gate", Some(&rt), || {
        g.gate_b().blocked()
    })
    .await;
    let flush = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.flush().await })
    };
    // Some of these land after a's barrier.
    for v in 6..=30 {
        insert(&g.a, &[(0, v)]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Give J every chance to go on with the rows behind a's barrier.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(g.j.snapshots(0), 0, "J cannot snapshot before b's barrier");
    assert!(!flush.is_finished());
    g.gate_b().open();
    flush.await.unwrap().unwrap();

    let rec = storage.records().unwrap().pop().expect("a checkpoint");
    assert_eq!(rec.mode, CheckpointMode::Aligned);
    assert!(!rec.timed_out_to_unaligned);
    assert_eq!(rec.in_flight_bytes, 0);
    let off_a = source_offset(&rec, NODE_A) as i64;
    let off_b = source_offset(&rec, NODE_B);
    assert_eq!(off_b, 1);
    assert!(
        off_a < 30,
        "no row of a came after its barrier: the test proves nothing"
    );
    let log = g.j.log(0);
    let before = before_snapshot(&log, 1);
    let on = |input: usize| -> Vec<i64> {
        sorted(
            before
                .iter()
                .filter(|r| r.0 == input)
                .map(|r| r.1)
                .collect(),
        )
    };
    assert_eq!(on(0), (1..=off_a).collect::<Vec<_>>(), "{log:?}");
    assert_eq!(on(1), vec![1001]);
    // And the rows behind a's barrier were processed after the snapshot,
    // once each.
    eventually("all of a processed", Some(&rt), || {
        data_values(&g.j.log(0), 0).len() == 30
    })
    .await;
    assert_eq!(
        sorted(data_values(&g.j.log(0), 0)),
        (1..=30).collect::<Vec<_>>()
    );
    rt.cancel();
    rt.stopped().await;
}

/// `aligned_checkpoint_timeout`: J waits for input 1's barrier longer than
/// the timeout (it is stuck behind the gate), so it snapshots without it
/// and the checkpoint completes as unaligned, with what arrived on input 1
/// meanwhile as channel state; the results stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aligned_checkpoint_timeout_switches_to_unaligned() {
    let g = TwoInputs::new("timeout");
    let _open = OpenOnDrop(g.slow_b.gates());
    for v in 1..=5 {
        insert(&g.a, &[(0, v)]);
    }
    insert(&g.b, &[(0, 1001)]);
    let storage = g.env.storage();
    let mut cfg = config(CheckpointMode::Aligned, Duration::from_millis(50));
    cfg.aligned_timeout = Some(Duration::from_millis(20));
    let rt =
        QueryRuntime::start("timeout", Arc::new(g.graph()), fresh(storage.clone(), cfg)).unwrap();
    // b's barrier cannot pass the gate: J only snapshots by timing out.
    eventually("J's snapshot", Some(&rt), || g.j.snapshots(0) == 1).await;
    assert!(rt
        .checkpoint_history()
        .iter()
        .all(|r| r.status != CheckpointStatus::Completed));
    assert!(
        before_snapshot(&g.j.log(0), 1).iter().all(|r| r.0 == 0),
        "nothing of b before the snapshot"
    );
    g.gate_b().open();
    eventually("checkpoint 1 completed", Some(&rt), || {
        rt.checkpoint_history()
            .iter()
            .any(|r| r.checkpoint_id == 1 && r.status == CheckpointStatus::Completed)
    })
    .await;
    let row = rt
        .checkpoint_history()
        .into_iter()
        .find(|r| r.checkpoint_id == 1)
        .unwrap();
    assert!(row.timed_out_to_unaligned, "{row:?}");
    assert_eq!(row.mode, CheckpointMode::Unaligned);
    assert!(row.persisted_in_flight_bytes > 0, "{row:?}");
    let rec = record(&storage, 1);
    assert!(rec.timed_out_to_unaligned);
    assert_eq!(rec.mode, CheckpointMode::Unaligned);
    // b's row came to J after J's snapshot and before b's barrier.
    let state = storage.load(&rec, &|_, _| Some(kv_schema())).unwrap();
    assert_eq!(captured(&state, NODE_J, 0), vec![1001]);

    rt.flush().await.unwrap();
    let mut want: Vec<Vec<Option<i64>>> = (1..=5)
        .chain([1001])
        .map(|v| vec![Some(0), Some(v)])
        .collect();
    want.sort();
    assert_eq!(table_rows(&g.result), want);
    rt.cancel();
    rt.stopped().await;
}

// ---------------------------------------------------------------------------
// Graph level: backpressure
//
//   t (source 0) ── gated probe (node 1) ── sink (node 2)

const ROWS: i64 = 60;

struct Backpressured {
    /// The first checkpoint triggered after all rows were written.
    row: CheckpointStats,
    rec: CheckpointRecord,
    state: LoadedState,
    /// Rows the probe processed before its snapshot of `rec`.
    processed: Vec<i64>,
    /// The same for the last completed checkpoint, whose results the
    /// result table holds.
    last_processed: Vec<i64>,
    last_rec: CheckpointRecord,
    last_state: LoadedState,
    result: Vec<i64>,
}

/// Writes ROWS rows one by one (a chunk each) while the probe is blocked,
/// so they queue up in front of it, then drives it until the first
/// checkpoint triggered after the writes completed.
async fn backpressured(mode: CheckpointMode) -> Backpressured {
    let env = Env::new(mode.name());
    let t = env.base_table(1, "t");
    let result = env.result_table(100, kv_schema());
    let slow = Probes::new(kv_schema(), 1, true);
    let _open = OpenOnDrop(slow.gates());
    let mut graph = StreamGraph::default();
    let s = kv_schema();
    let src = graph.add_node("t", "", 1, s.clone(), NodeKind::TableSource(t.clone()));
    let p = graph.add_node("slow", "", 1, s.clone(), NodeKind::Operator(slow.clone()));
    let sink = graph.add_node("sink", "", 1, s, NodeKind::ResultSink(result.clone()));
    graph.connect(src, p, 0, Partitioning::Forward);
    graph.connect(p, sink, 0, Partitioning::Forward);
    let storage = env.storage();
    let rt = QueryRuntime::start(
        "bp",
        Arc::new(graph),
        fresh(storage.clone(), config(mode, Duration::from_millis(50))),
    )
    .unwrap();
    for v in 1..=ROWS {
        insert(&t, &[(0, v)]);
    }
    let after = last_id(&rt.checkpoint_history());
    let row = drive(&rt, &slow, |h| {
        h.iter()
            .find(|r| r.checkpoint_id > after && r.status == CheckpointStatus::Completed)
            .cloned()
    })
    .await;
    rt.cancel();
    slow.gates()[0].open();
    rt.stopped().await;

    let schema = |_: usize, _: usize| Some(kv_schema());
    let rec = record(&storage, row.checkpoint_id);
    let state = storage.load(&rec, &schema).unwrap();
    let last_rec = storage.records().unwrap().pop().unwrap();
    let last_state = storage.load(&last_rec, &schema).unwrap();
    let log = slow.log(0);
    let vals = |n: u64| {
        before_snapshot(&log, n as usize)
            .iter()
            .map(|r| r.1)
            .collect()
    };
    Backpressured {
        processed: vals(rec.epoch),
        last_processed: vals(last_rec.epoch),
        row,
        rec,
        state,
        last_rec,
        last_state,
        result: table_rows(&result)
            .into_iter()
            .map(|r| r[1].unwrap())
            .collect(),
    }
}

/// Nothing lost or doubled at the cut of checkpoint `rec`: what the probe
/// processed before its snapshot plus what was captured in front of it is
/// exactly the input up to the source's offset; what the sink committed
/// plus what was captured in front of it is exactly what the probe emitted
/// before its snapshot.
fn check_cut(
    rec: &CheckpointRecord,
    state: &LoadedState,
    processed: &[i64],
    result: Option<&[i64]>,
) {
    let off = source_offset(rec, 0) as i64;
    let mut at_probe = processed.to_vec();
    at_probe.extend(captured(state, 1, 0));
    assert_eq!(sorted(at_probe), (1..=off).collect::<Vec<_>>());
    if let Some(result) = result {
        let mut at_sink = result.to_vec();
        at_sink.extend(captured(state, 2, 0));
        assert_eq!(sorted(at_sink), sorted(processed.to_vec()));
    }
}

/// Unaligned under backpressure: the checkpoint completes although most of
/// the rows are still queued (the probe went on by one chunk at most per
/// checkpoint), and they are its channel state (in_flight_bytes > 0). The
/// same setup with aligned checkpoints: the checkpoint completes only once
/// everything before the barrier is processed, with no in-flight data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unaligned_checkpoint_completes_under_backpressure_with_channel_state() {
    let u = backpressured(CheckpointMode::Unaligned).await;
    assert_eq!(u.row.mode, CheckpointMode::Unaligned, "{:?}", u.row);
    assert!(u.row.persisted_in_flight_bytes > 0, "{:?}", u.row);
    assert_eq!(u.rec.mode, CheckpointMode::Unaligned);
    assert!(u.rec.in_flight_bytes > 0);
    let queued = captured(&u.state, 1, 0).len() + captured(&u.state, 2, 0).len();
    assert!(
        (u.processed.len() as i64) < ROWS - super::CHANNEL_CAPACITY_MESSAGES as i64 && queued > 0,
        "processed {} rows before the snapshot, {queued} captured",
        u.processed.len()
    );
    check_cut(&u.rec, &u.state, &u.processed, None);
    check_cut(
        &u.last_rec,
        &u.last_state,
        &u.last_processed,
        Some(&u.result),
    );

    let a = backpressured(CheckpointMode::Aligned).await;
    assert_eq!(a.row.mode, CheckpointMode::Aligned, "{:?}", a.row);
    assert!(!a.row.timed_out_to_unaligned);
    assert_eq!(a.row.persisted_in_flight_bytes, 0);
    assert_eq!(a.rec.in_flight_bytes, 0);
    assert!(a.state.channels.is_empty());
    // The barrier went at the source's read position, behind the queued
    // rows: all of them were processed before the snapshot, none captured.
    let off = source_offset(&a.rec, 0) as i64;
    assert!(off > 0, "{:?}", a.rec);
    assert_eq!(sorted(a.processed.clone()), (1..=off).collect::<Vec<_>>());
    check_cut(&a.rec, &a.state, &a.processed, None);
    check_cut(
        &a.last_rec,
        &a.last_state,
        &a.last_processed,
        Some(&a.result),
    );
}

// ---------------------------------------------------------------------------
// Graph level: replay of channel state into a keyed aggregation
//
//   t (source 0) ─hash(k)─ agg (node 1, p=2) ─ gated probe (node 2, p=2) ─ sink (node 3, p=2)

fn agg_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("cnt", DataType::Int64, true),
        Field::new("total", DataType::Int64, true),
    ]))
}

/// `SELECT k, count(v) AS cnt, sum(v) AS total FROM t GROUP BY k`.
fn agg_factory() -> Arc<dyn OperatorFactory> {
    let out = agg_schema();
    FnFactory::new(out.clone(), move || {
        let input = kv_schema();
        let k: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let count = AggregateExprBuilder::new(count_udaf(), vec![v.clone()])
            .schema(input.clone())
            .alias("cnt")
            .build()?;
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![v])
            .schema(input.clone())
            .alias("total")
            .build()?;
        let aggs = vec![
            AggSpec::new(Arc::new(count), None, &input)?,
            AggSpec::new(Arc::new(sum), None, &input)?,
        ];
        // Emits after every chunk, as it would under a light load: held
        // back, its few output rows would never fill the channel to the
        // gated probe, and nothing would queue at its own input.
        Ok(Box::new(
            HashAggOperator::new(vec![k], vec![DataType::Int64], aggs, out.clone())?
                .with_max_unflushed_rows(1),
        ))
    })
}

fn agg_graph(t: &Arc<Table>, result: &Arc<Table>, slow: &Arc<Probes>) -> StreamGraph {
    let mut g = StreamGraph::default();
    let src = g.add_node("t", "", 1, kv_schema(), NodeKind::TableSource(t.clone()));
    let agg = g.add_node(
        "agg",
        "",
        2,
        agg_schema(),
        NodeKind::Operator(agg_factory()),
    );
    let p = g.add_node(
        "slow",
        "",
        2,
        agg_schema(),
        NodeKind::Operator(slow.clone()),
    );
    let sink = g.add_node(
        "sink",
        "",
        2,
        agg_schema(),
        NodeKind::ResultSink(result.clone()),
    );
    let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
    g.connect(src, agg, 0, Partitioning::Hash(vec![key]));
    g.connect(agg, p, 0, Partitioning::Forward);
    g.connect(p, sink, 0, Partitioning::Forward);
    g
}

/// The input, in writes: inserts of (v % 7, v), and now and then a delete
/// of rows inserted earlier.
fn agg_writes(from: i64, to: i64) -> Vec<(bool, Vec<(i64, i64)>)> {
    let mut out = Vec::new();
    for w in from..to {
        let rows: Vec<(i64, i64)> = (0..3).map(|i| w * 3 + i).map(|v| (v % 7, v)).collect();
        out.push((true, rows));
        if w % 5 == 4 {
            // Two rows of an earlier write.
            let v = (w - 3) * 3;
            out.push((false, vec![(v % 7, v), ((v + 2) % 7, v + 2)]));
        }
    }
    out
}

fn apply_writes(t: &Table, writes: &[(bool, Vec<(i64, i64)>)]) {
    for (ins, rows) in writes {
        if *ins {
            insert(t, rows);
        } else {
            delete(t, rows);
        }
    }
}

fn expected_agg(writes: &[(bool, Vec<(i64, i64)>)]) -> Vec<Vec<Option<i64>>> {
    let mut groups: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (ins, rows) in writes {
        let sign = if *ins { 1 } else { -1 };
        for (k, v) in rows {
            let g = groups.entry(*k).or_default();
            g.0 += sign;
            g.1 += sign * v;
        }
    }
    groups
        .into_iter()
        .filter(|(_, (n, _))| *n > 0)
        .map(|(k, (n, s))| vec![Some(k), Some(n), Some(s)])
        .collect()
}

fn first_batch() -> Vec<(bool, Vec<(i64, i64)>)> {
    agg_writes(0, 40)
}

fn second_batch() -> Vec<(bool, Vec<(i64, i64)>)> {
    agg_writes(40, 55)
}

/// The same query and input without interruption.
async fn uninterrupted_agg() -> Vec<Vec<Option<i64>>> {
    let env = Env::new("agg-ref");
    let t = env.base_table(1, "t");
    let result = env.result_table(100, agg_schema());
    let slow = Probes::new(agg_schema(), 2, false);
    let rt = QueryRuntime::start(
        "agg",
        Arc::new(agg_graph(&t, &result, &slow)),
        fresh(
            env.storage(),
            config(CheckpointMode::Unaligned, Duration::from_millis(50)),
        ),
    )
    .unwrap();
    apply_writes(&t, &first_batch());
    apply_writes(&t, &second_batch());
    rt.flush().await.unwrap();
    let rows = table_rows(&result);
    rt.cancel();
    rt.stopped().await;
    rows
}

/// Replay: an unaligned checkpoint taken while input and output of the
/// aggregation (parallelism 2) are queued captures them as channel state;
/// the query is stopped and a new runtime resumes from that checkpoint
/// (plan_restore), replaying the channel state first. After FLUSH the
/// result equals the uninterrupted run's: no row lost, none counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn unaligned_channel_state_is_replayed_on_restore() {
    let reference = uninterrupted_agg().await;
    let all: Vec<_> = first_batch().into_iter().chain(second_batch()).collect();
    assert_eq!(reference, expected_agg(&all));

    for backend in [StateBackendKind::Rocksdb, StateBackendKind::Memory] {
        let env = Env::new(backend.name());
        let t = env.base_table(1, "t");
        let result = env.result_table(100, agg_schema());
        let mut cfg = config(CheckpointMode::Unaligned, Duration::from_millis(50));
        cfg.backend = backend;

        let slow = Probes::new(agg_schema(), 2, true);
        let _open = OpenOnDrop(slow.gates());
        let storage = env.storage();
        let rt = QueryRuntime::start(
            "agg",
            Arc::new(agg_graph(&t, &result, &slow)),
            fresh(storage.clone(), cfg.clone()),
        )
        .unwrap();
        apply_writes(&t, &first_batch());
        let after = last_id(&rt.checkpoint_history());
        let row = drive(&rt, &slow, |h| {
            h.iter()
                .find(|r| r.checkpoint_id > after && r.status == CheckpointStatus::Completed)
                .cloned()
        })
        .await;
        assert_eq!(row.mode, CheckpointMode::Unaligned);
        assert!(row.persisted_in_flight_bytes > 0, "{row:?}");
        // Stop (the gated subtasks are blocked: no later checkpoint can
        // complete), then let the blocked threads go.
        rt.cancel();
        for g in slow.gates() {
            g.open();
        }
        rt.stopped().await;
        drop(rt);
        drop(storage);

        // Restart from the last checkpoint, as the server does.
        let slow2 = Probes::new(agg_schema(), 2, false);
        let graph = agg_graph(&t, &result, &slow2);
        let storage = env.storage();
        let plan = plan_restore(&storage, &graph).unwrap();
        let restore = plan.restore.as_ref().expect("a checkpoint to restore");
        assert_eq!(restore.record.epoch, row.checkpoint_id);
        assert!(restore.record.in_flight_bytes > 0);
        let replayed: usize = restore.state.channels.values().map(|c| c.len()).sum();
        assert!(replayed > 0);
        assert!(
            restore.state.channels.keys().any(|(node, _)| *node == 1),
            "input of the aggregation captured"
        );
        assert!(!plan.recompute && plan.skipped.is_empty());
        let rt = QueryRuntime::start("agg", Arc::new(graph), resumed(storage.clone(), cfg, plan))
            .unwrap();
        apply_writes(&t, &second_batch());
        rt.flush().await.unwrap();
        assert_eq!(table_rows(&result), reference, "backend {}", backend.name());
        rt.cancel();
        rt.stopped().await;
    }
}

// ---------------------------------------------------------------------------
// File sink: its two-phase commit (`EpochCommitter`) driven by the runtime

/// Files a reader of `dir` sees (not hidden), and the (k, v) rows in them.
fn finished_rows(dir: &std::path::Path) -> (usize, Vec<(i64, i64)>) {
    let mut files = 0;
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        files += 1;
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let (k, v) = line.split_once(',').unwrap();
            rows.push((k.parse().unwrap(), v.parse().unwrap()));
        }
    }
    rows.sort();
    (files, rows)
}

fn sorted_pairs(mut rows: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    rows.sort();
    rows
}

/// Rows in the in-progress files of `dir`.
fn in_progress_rows(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum()
}

fn file_sink_graph(source: &Arc<Table>, out: &std::path::Path, parallelism: usize) -> StreamGraph {
    use crate::operators::file_sink::{FileSinkFactory, FileSinkFormat, FileSinkSpec};
    let spec = FileSinkSpec::new(out, FileSinkFormat::Csv, "fs", QUERY_ID);
    let mut g = StreamGraph::default();
    let src = g.add_node(
        "t",
        "",
        1,
        kv_schema(),
        NodeKind::TableSource(source.clone()),
    );
    let factory = FileSinkFactory::new(spec, kv_schema());
    let sink = g.add_node(
        "StreamFileSink",
        "",
        parallelism,
        kv_schema(),
        NodeKind::Operator(factory),
    );
    let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
    g.connect(src, sink, 0, Partitioning::Hash(vec![key]));
    g
}

/// Rows reach the part files at once but become visible only when a
/// checkpoint completes (here only FLUSH takes one); a run stopped with
/// rows in progress and restarted from its checkpoint leaves each row in
/// the finished files exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_sink_commits_with_checkpoints_and_restores_exactly_once() {
    let env = Env::new("file-sink");
    let out = env.dir.0.join("out");
    let t = env.base_table(1, "t");
    let cfg = config(CheckpointMode::Aligned, Duration::from_secs(3600));
    let rt = QueryRuntime::start(
        "fs",
        Arc::new(file_sink_graph(&t, &out, 2)),
        fresh(env.storage(), cfg.clone()),
    )
    .unwrap();
    let first: Vec<(i64, i64)> = (0..50).map(|v| (v % 5, v)).collect();
    insert(&t, &first);
    let first = sorted_pairs(first);
    eventually("the sink to write the rows", Some(&rt), || {
        out.exists() && in_progress_rows(&out) == first.len()
    })
    .await;
    assert_eq!(
        finished_rows(&out),
        (0, vec![]),
        "visible before a checkpoint"
    );
    rt.flush().await.unwrap();
    let (files, rows) = finished_rows(&out);
    assert_eq!(rows, first);
    assert_eq!(files, 2, "one part per subtask");

    // Rows after the checkpoint are in progress when the run stops.
    let second: Vec<(i64, i64)> = (50..80).map(|v| (v % 5, v)).collect();
    insert(&t, &second);
    eventually("the sink to write the new rows", Some(&rt), || {
        in_progress_rows(&out) == second.len()
    })
    .await;
    rt.cancel();
    rt.stopped().await;
    drop(rt);

    let graph = file_sink_graph(&t, &out, 2);
    let storage = env.storage();
    let plan = plan_restore(&storage, &graph).unwrap();
    assert!(plan.restore.is_some());
    let rt = QueryRuntime::start("fs", Arc::new(graph), resumed(storage, cfg, plan)).unwrap();
    rt.flush().await.unwrap();
    let mut all = first.clone();
    all.extend(&second);
    all.sort();
    assert_eq!(finished_rows(&out).1, all, "each row exactly once");
    rt.cancel();
    rt.stopped().await;
}

/// A bounded source ends the stream: the sink seals its last part, and
/// the next checkpoint, which its final snapshot stands in for, commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_sink_commits_its_last_part_after_the_input_ended() {
    use crate::connectors::{FileFormat, FileSource};
    let env = Env::new("file-sink-end");
    let input = env.dir.0.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let rows: Vec<(i64, i64)> = (0..40).map(|v| (v % 3, v)).collect();
    let csv: String = rows.iter().map(|(k, v)| format!("{k},{v}\n")).collect();
    std::fs::write(input.join("part-0.csv"), csv).unwrap();
    let files = FileSource::open(
        &input,
        FileFormat::Csv {
            header: false,
            delimiter: b',',
        },
    )
    .unwrap();
    let source = Table::new_source(Env::desc(1, "s", kv_schema()), files).unwrap();
    let out = env.dir.0.join("out");
    let rt = QueryRuntime::start(
        "fs",
        Arc::new(file_sink_graph(&source, &out, 1)),
        fresh(
            env.storage(),
            config(CheckpointMode::Aligned, Duration::from_secs(3600)),
        ),
    )
    .unwrap();
    eventually("the sink subtask to finish", Some(&rt), || {
        rt.task_states().get(&(1, 0)) == Some(&super::TaskState::Finished)
    })
    .await;
    let names = |out: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // No checkpoint ran (the interval is an hour): the last part waits.
    assert_eq!(names(&out), vec![".part-fs-7-0-1.pending"]);
    rt.flush().await.unwrap();
    assert_eq!(names(&out), vec!["part-fs-7-0-1.csv"]);
    assert_eq!(finished_rows(&out), (1, sorted_pairs(rows)));
    rt.cancel();
    rt.stopped().await;
}
