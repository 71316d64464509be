//! Debug builds only: every operator a subtask runs is wrapped in a
//! [`CheckedOperator`] (`spawn.rs`), which delegates each call and checks
//! the operator's contract on the way, so that every end-to-end test also
//! verifies it (as RisingWave's debug executor wrappers do):
//!
//! 1. the epochs `snapshot` receives ([`StateWriter::epoch`]) increase
//!    strictly, and start above the checkpoint the subtask resumed from;
//!    the final snapshot (no epoch) is the last one;
//! 2. every chunk the operator emits fits the node's planned output
//!    schema ([`crate::graph::Node::schema`]) as the runtime needs it to:
//!    as many columns, equal data types (nested field names aside, as
//!    `RecordBatch` and the row format compare them), and no NULL in a
//!    column planned NOT NULL — the conditions under which channel state
//!    decodes with the planned schema and `Chunk::with_schema` relabels;
//!    column names may differ;
//! 3. a delete the operator emits retracts a row it emitted before and has
//!    not retracted yet: the checker keeps the multiset of the subtask's
//!    live output rows (arrow row format). Only when the subtask started
//!    without restored state: after a restore the rows emitted before the
//!    checkpoint are unknown. The result sink's node is not checked (its
//!    input is staged for the result table, not passed to its operator;
//!    the retraction of stale results a recompute commits first goes to
//!    the staging directly).
//!
//! A broken invariant is logged (`tracing::error!`) and fails the call with
//! an internal error naming the node, the operator, the subtask and the
//! invariant. Costs: one row encoding per output row, and memory for the
//! live output rows of every subtask (fine for tests). Release builds do
//! not wrap operators at all.

#![cfg(debug_assertions)]

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::HashMap;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::graph::{Node, NodeKind};
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};

/// The live output rows of one subtask: row bytes → multiplicity.
struct LiveRows {
    converter: RowConverter,
    rows: HashMap<Box<[u8]>, u64>,
}

/// An operator whose calls are checked against the operator contract (see
/// the module documentation).
pub(crate) struct CheckedOperator {
    inner: Box<dyn Operator>,
    node: usize,
    operator: Arc<str>,
    subtask: usize,
    schema: SchemaRef,
    /// Deletes are checked against this; `None`: not checked (a restored
    /// subtask, the result sink, or a schema the row format cannot encode).
    live: Option<LiveRows>,
    /// The epoch of the last snapshot, or the one restored from.
    last_epoch: Option<u64>,
    /// The final snapshot (no epoch) was taken.
    final_taken: bool,
}

impl CheckedOperator {
    /// Wraps the operator of `node`'s subtask `subtask`.
    pub(crate) fn wrap(inner: Box<dyn Operator>, node: &Node, subtask: usize) -> Box<dyn Operator> {
        let check_deletes = !matches!(node.kind, NodeKind::ResultSink(_));
        Box::new(CheckedOperator::new(
            inner,
            node.id,
            Arc::from(node.name.as_str()),
            subtask,
            node.schema.clone(),
            check_deletes,
        ))
    }

    pub(crate) fn new(
        inner: Box<dyn Operator>,
        node: usize,
        operator: Arc<str>,
        subtask: usize,
        schema: SchemaRef,
        check_deletes: bool,
    ) -> Self {
        let live = if check_deletes {
            let fields = schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            match RowConverter::new(fields) {
                Ok(converter) => Some(LiveRows {
                    converter,
                    rows: HashMap::new(),
                }),
                Err(e) => {
                    tracing::debug!(
                        node, operator = %operator, error = %e,
                        "operator check: deletes not checked (schema not row-encodable)"
                    );
                    None
                }
            }
        } else {
            None
        };
        CheckedOperator {
            inner,
            node,
            operator,
            subtask,
            schema,
            live,
            last_epoch: None,
            final_taken: false,
        }
    }

    /// A broken invariant: logged, and the error that fails the call.
    fn violation(&self, invariant: &str, detail: String) -> ExecError {
        tracing::error!(
            node = self.node, operator = %self.operator, subtask = self.subtask,
            invariant, %detail, "operator invariant violated"
        );
        ExecError::internal(format!(
            "operator invariant violated at node {} ({}) subtask {}: {invariant}: {detail}",
            self.node, self.operator, self.subtask
        ))
    }

    /// Checks what a call added to `out` (from chunk `from` on), then
    /// returns the call's result. A violation wins over a rejected chunk
    /// (which the task would otherwise skip as a bad record); another
    /// error of the call wins over it (the violation is still logged).
    fn checked(
        &mut self,
        call: &str,
        result: ExecResult<()>,
        out: &Output,
        from: usize,
    ) -> ExecResult<()> {
        let mut violation = None;
        for chunk in out.chunks.iter().skip(from) {
            if let Err(e) = self.check_chunk(call, chunk) {
                violation = Some(e);
                break;
            }
        }
        match (result, violation) {
            (Err(e), _) if !matches!(e, ExecError::Rejected(_)) => Err(e),
            (_, Some(v)) => Err(v),
            (result, None) => result,
        }
    }

    fn check_chunk(&mut self, call: &str, chunk: &Chunk) -> ExecResult<()> {
        self.check_schema(call, chunk)?;
        self.check_retractions(call, chunk)
    }

    /// Invariant 2: the chunk fits the planned output schema.
    fn check_schema(&self, call: &str, chunk: &Chunk) -> ExecResult<()> {
        let planned = self.schema.fields();
        let columns = chunk.batch.columns();
        if columns.len() != planned.len() {
            return Err(self.violation(
                "output schema",
                format!(
                    "{call} emitted {} columns, planned {} ({})",
                    columns.len(),
                    planned.len(),
                    describe(&self.schema)
                ),
            ));
        }
        for (i, (col, field)) in columns.iter().zip(planned.iter()).enumerate() {
            if !col.data_type().equals_datatype(field.data_type()) {
                return Err(self.violation(
                    "output schema",
                    format!(
                        "{call} emitted column {i} ({}) as {}, planned {}",
                        field.name(),
                        col.data_type(),
                        field.data_type()
                    ),
                ));
            }
            if !field.is_nullable() && col.null_count() > 0 {
                return Err(self.violation(
                    "output schema",
                    format!(
                        "{call} emitted NULL in column {i} ({}), planned NOT NULL",
                        field.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Invariant 3: each delete retracts a live row emitted before.
    fn check_retractions(&mut self, call: &str, chunk: &Chunk) -> ExecResult<()> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        // A chunk without columns (a projection feeding count(*)) carries
        // only a row count: every row is the same empty row.
        let no_columns = chunk.batch.num_columns() == 0;
        let rows = live.converter.convert_columns(chunk.batch.columns())?;
        let mut missing = None;
        for i in 0..chunk.num_rows() {
            let row = (!no_columns).then(|| rows.row(i));
            let bytes: &[u8] = row.as_ref().map_or(&[], |r| r.as_ref());
            match chunk.op(i) {
                Op::Insert => match live.rows.get_mut(bytes) {
                    Some(n) => *n += 1,
                    None => {
                        live.rows.insert(bytes.into(), 1);
                    }
                },
                Op::Delete => match live.rows.get_mut(bytes) {
                    Some(1) => {
                        live.rows.remove(bytes);
                    }
                    Some(n) => *n -= 1,
                    None => {
                        missing = Some(i);
                        break;
                    }
                },
            }
        }
        match missing {
            None => Ok(()),
            Some(i) => Err(self.violation(
                "delete of a row not emitted before",
                format!(
                    "{call} emitted a delete of ({}) (row {i} of {}), which is not among the \
                     rows this subtask inserted and has not retracted",
                    format_row(chunk, i),
                    chunk.num_rows()
                ),
            )),
        }
    }
}

/// `name type [NOT NULL], ...`
fn describe(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let null = if f.is_nullable() { "" } else { " NOT NULL" };
            format!("{} {}{null}", f.name(), f.data_type())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of a chunk as text, for messages.
fn format_row(chunk: &Chunk, row: usize) -> String {
    let opts = FormatOptions::default().with_null("NULL");
    chunk
        .batch
        .columns()
        .iter()
        .map(|c| {
            ArrayFormatter::try_new(c.as_ref(), &opts)
                .map(|f| f.value(row).to_string())
                .unwrap_or_else(|_| "?".to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Operator for CheckedOperator {
    fn uses_keyed_state(&self) -> bool {
        self.inner.uses_keyed_state()
    }

    fn can_reemit(&self) -> bool {
        self.inner.can_reemit()
    }

    fn restore(&mut self, ctx: &OperatorContext, entries: Vec<StateEntry>) -> ExecResult<()> {
        // The rows emitted before the checkpoint are unknown.
        self.live = None;
        self.inner.restore(ctx, entries)
    }

    fn open(&mut self, ctx: &OperatorContext, restored: bool, out: &mut Output) -> ExecResult<()> {
        if restored {
            self.live = None;
        }
        self.last_epoch = self.last_epoch.max(ctx.restored_epoch);
        let from = out.chunks.len();
        let result = self.inner.open(ctx, restored, out);
        self.checked("open", result, out, from)
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let from = out.chunks.len();
        let result = self.inner.on_chunk(input, chunk, out);
        self.checked("on_chunk", result, out, from)
    }

    fn flush(&mut self, out: &mut Output) -> ExecResult<()> {
        let from = out.chunks.len();
        let result = self.inner.flush(out);
        self.checked("flush", result, out, from)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> ExecResult<()> {
        let from = out.chunks.len();
        let result = self.inner.on_watermark(watermark, out);
        self.checked("on_watermark", result, out, from)
    }

    /// Invariant 1: strictly increasing epochs, the final snapshot last.
    fn snapshot(&mut self, state: &mut StateWriter) -> ExecResult<()> {
        if self.final_taken {
            let what = match state.epoch() {
                Some(e) => format!("a snapshot at epoch {e}"),
                None => "a second final snapshot".to_string(),
            };
            return Err(self.violation(
                "snapshot epochs increase",
                format!("{what} after the final snapshot"),
            ));
        }
        match state.epoch() {
            Some(epoch) => {
                if let Some(last) = self.last_epoch.filter(|last| epoch <= *last) {
                    return Err(self.violation(
                        "snapshot epochs increase",
                        format!("snapshot at epoch {epoch} after epoch {last}"),
                    ));
                }
                self.last_epoch = Some(epoch);
            }
            None => self.final_taken = true,
        }
        self.inner.snapshot(state)
    }

    fn close(&mut self, out: &mut Output) -> ExecResult<()> {
        let from = out.chunks.len();
        let result = self.inner.close(out);
        self.checked("close", result, out, from)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn batch(rows: &[(i64, Option<&str>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    /// Emits the chunks it is given, in turn, one per `on_chunk`.
    struct Scripted(std::collections::VecDeque<Chunk>);

    impl Operator for Scripted {
        fn on_chunk(&mut self, _input: usize, _chunk: Chunk, out: &mut Output) -> ExecResult<()> {
            if let Some(c) = self.0.pop_front() {
                out.push(c);
            }
            Ok(())
        }
    }

    fn checked(script: Vec<Chunk>) -> CheckedOperator {
        CheckedOperator::new(
            Box::new(Scripted(script.into())),
            3,
            Arc::from("StreamTest"),
            1,
            schema(),
            true,
        )
    }

    fn ctx(restored_epoch: Option<u64>) -> OperatorContext {
        OperatorContext {
            query: Arc::from("q"),
            operator: Arc::from("StreamTest"),
            subtask: 1,
            parallelism: 2,
            state: None,
            restored_epoch,
            reemit: false,
        }
    }

    /// Runs the script; the error of the first call that fails.
    fn run(op: &mut CheckedOperator, calls: usize) -> ExecResult<()> {
        let mut out = Output::default();
        op.open(&ctx(None), false, &mut out)?;
        let input = Chunk::inserts(batch(&[(0, None)]));
        for _ in 0..calls {
            op.on_chunk(0, input.clone(), &mut out)?;
            out.take_chunks();
        }
        Ok(())
    }

    fn message(e: ExecError) -> String {
        let text = e.to_string();
        assert!(matches!(e, ExecError::Internal(_)), "{text}");
        text
    }

    #[test]
    fn retractions_of_emitted_rows_pass() {
        let mut op = checked(vec![
            Chunk::inserts(batch(&[(1, Some("a")), (1, Some("a")), (2, None)])),
            Chunk::new(
                batch(&[(1, Some("a")), (2, None), (2, Some("b"))]),
                vec![Op::Delete, Op::Delete, Op::Insert],
            ),
            Chunk::deletes(batch(&[(1, Some("a")), (2, Some("b"))])),
        ]);
        run(&mut op, 3).unwrap();
        assert!(op.live.as_ref().unwrap().rows.is_empty());
    }

    #[test]
    fn rows_without_columns_are_counted() {
        // A projection feeding count(*) emits chunks of rows without columns.
        let empty = Arc::new(Schema::empty());
        let rows = |n: usize| {
            RecordBatch::try_new_with_options(
                empty.clone(),
                vec![],
                &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .unwrap()
        };
        let script = vec![
            Chunk::inserts(rows(3)),
            Chunk::deletes(rows(2)),
            Chunk::deletes(rows(2)),
        ];
        let mut op = CheckedOperator::new(
            Box::new(Scripted(script.into())),
            3,
            Arc::from("StreamTest"),
            1,
            empty.clone(),
            true,
        );
        let text = message(run(&mut op, 3).unwrap_err());
        assert!(text.contains("(row 1 of 2)"), "{text}");
    }

    #[test]
    fn delete_of_a_row_never_inserted_fails() {
        let mut op = checked(vec![
            Chunk::inserts(batch(&[(1, Some("a"))])),
            Chunk::deletes(batch(&[(1, Some("b"))])),
        ]);
        let text = message(run(&mut op, 2).unwrap_err());
        assert!(text.contains("node 3 (StreamTest) subtask 1"), "{text}");
        assert!(
            text.contains("delete of a row not emitted before"),
            "{text}"
        );
        assert!(text.contains("(1, b)"), "{text}");
    }

    #[test]
    fn second_delete_of_a_row_inserted_once_fails() {
        let mut op = checked(vec![
            Chunk::inserts(batch(&[(1, None)])),
            Chunk::deletes(batch(&[(1, None), (1, None)])),
        ]);
        let text = message(run(&mut op, 2).unwrap_err());
        assert!(text.contains("(1, NULL) (row 1 of 2)"), "{text}");
    }

    #[test]
    fn restored_subtask_does_not_check_deletes() {
        let mut op = checked(vec![Chunk::deletes(batch(&[(1, Some("a"))]))]);
        let mut out = Output::default();
        op.restore(&ctx(Some(4)), Vec::new()).unwrap();
        op.open(&ctx(Some(4)), true, &mut out).unwrap();
        op.on_chunk(0, Chunk::inserts(batch(&[(0, None)])), &mut out)
            .unwrap();
        assert_eq!(out.take_chunks().len(), 1);
    }

    #[test]
    fn result_sink_does_not_check_deletes() {
        let script = vec![Chunk::deletes(batch(&[(1, Some("a"))]))];
        let mut op = CheckedOperator::new(
            Box::new(Scripted(script.into())),
            0,
            Arc::from("ResultSink"),
            0,
            schema(),
            false,
        );
        run(&mut op, 1).unwrap();
    }

    #[test]
    fn wrong_column_type_fails() {
        let other = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let wrong = RecordBatch::try_new(
            other,
            vec![
                Arc::new(datafusion::arrow::array::Int32Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        let mut op = checked(vec![Chunk::inserts(wrong)]);
        let text = message(run(&mut op, 1).unwrap_err());
        assert!(text.contains("output schema"), "{text}");
        assert!(
            text.contains("column 0 (k) as Int32, planned Int64"),
            "{text}"
        );
    }

    #[test]
    fn wrong_column_count_fails() {
        let one = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let wrong = RecordBatch::try_new(one, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        let mut op = checked(vec![Chunk::inserts(wrong)]);
        let text = message(run(&mut op, 1).unwrap_err());
        assert!(text.contains("emitted 1 columns, planned 2"), "{text}");
    }

    #[test]
    fn null_in_a_not_null_column_fails() {
        let nullable = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let wrong = RecordBatch::try_new(
            nullable,
            vec![
                Arc::new(Int64Array::from(vec![None])),
                Arc::new(StringArray::from(vec![Some("a")])),
            ],
        )
        .unwrap();
        let mut op = checked(vec![Chunk::inserts(wrong)]);
        let text = message(run(&mut op, 1).unwrap_err());
        assert!(
            text.contains("NULL in column 0 (k), planned NOT NULL"),
            "{text}"
        );
    }

    #[test]
    fn other_column_names_pass() {
        let renamed = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let chunk = Chunk::inserts(batch(&[(1, None)]))
            .with_schema(renamed)
            .unwrap();
        let mut op = checked(vec![chunk]);
        run(&mut op, 1).unwrap();
    }

    #[test]
    fn rejected_chunk_with_a_violation_fails_as_a_violation() {
        struct EmitsThenRejects;
        impl Operator for EmitsThenRejects {
            fn on_chunk(&mut self, _: usize, _: Chunk, out: &mut Output) -> ExecResult<()> {
                out.push(Chunk::deletes(batch(&[(7, None)])));
                Err(ExecError::rejected(ExecError::internal("bad row")))
            }
        }
        let mut op = CheckedOperator::new(
            Box::new(EmitsThenRejects),
            3,
            Arc::from("X"),
            0,
            schema(),
            true,
        );
        let mut out = Output::default();
        let e = op
            .on_chunk(0, Chunk::inserts(batch(&[(0, None)])), &mut out)
            .unwrap_err();
        assert!(message(e).contains("delete of a row not emitted before"));
    }

    #[test]
    fn snapshot_epochs_must_increase() {
        let mut op = checked(Vec::new());
        let mut out = Output::default();
        op.open(&ctx(None), false, &mut out).unwrap();
        op.snapshot(&mut StateWriter::new(true).at_epoch(Some(2)))
            .unwrap();
        op.snapshot(&mut StateWriter::new(true).at_epoch(Some(5)))
            .unwrap();
        let text = message(
            op.snapshot(&mut StateWriter::new(true).at_epoch(Some(5)))
                .unwrap_err(),
        );
        assert!(text.contains("snapshot epochs increase"), "{text}");
        assert!(text.contains("epoch 5 after epoch 5"), "{text}");
    }

    #[test]
    fn snapshot_epochs_start_above_the_restored_one() {
        let mut op = checked(Vec::new());
        let mut out = Output::default();
        op.restore(&ctx(Some(9)), Vec::new()).unwrap();
        op.open(&ctx(Some(9)), true, &mut out).unwrap();
        let e = op
            .snapshot(&mut StateWriter::new(true).at_epoch(Some(9)))
            .unwrap_err();
        assert!(message(e).contains("epoch 9 after epoch 9"));
        op.snapshot(&mut StateWriter::new(true).at_epoch(Some(10)))
            .unwrap();
    }

    #[test]
    fn nothing_after_the_final_snapshot() {
        let mut op = checked(Vec::new());
        op.snapshot(&mut StateWriter::new(true).at_epoch(Some(1)))
            .unwrap();
        op.snapshot(&mut StateWriter::new(true)).unwrap();
        let e = op
            .snapshot(&mut StateWriter::new(true).at_epoch(Some(2)))
            .unwrap_err();
        assert!(message(e).contains("epoch 2 after the final snapshot"));
    }

    /// Through the runtime: `spawn.rs` wraps the operators of a started
    /// query, and a violation fails the query naming the node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_query_fails_on_a_violation() {
        use crate::checkpoint::{CheckpointConfig, CheckpointStorage};
        use crate::graph::{Partitioning, StreamGraph};
        use crate::operator::FnFactory;
        use crate::runtime::{QueryRuntime, QueryStatus, StartOptions};
        use crate::table::{Table, TableDesc, WriteCheck};

        /// Retracts every row it receives, never having inserted it.
        struct RetractsInput;
        impl Operator for RetractsInput {
            fn on_chunk(&mut self, _: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
                out.push(Chunk::deletes(chunk.batch));
                Ok(())
            }
        }

        let dir = tempfile_dir();
        let store = Arc::new(weir_storage::Store::open(&dir.join("db")).unwrap());
        let desc = |id, name: &str| TableDesc {
            id,
            name: name.into(),
            schema: schema(),
            primary_key: vec![],
            watermark: None,
        };
        let t = Table::open_durable(desc(1, "t"), store.clone()).unwrap();
        let result = Table::open_result(desc(2, "result"), store.clone()).unwrap();
        let mut g = StreamGraph::default();
        let src = g.add_node("t", "", 1, schema(), NodeKind::TableSource(t.clone()));
        let factory = FnFactory::new(
            schema(),
            || Ok(Box::new(RetractsInput) as Box<dyn Operator>),
        );
        let op = g.add_node(
            "StreamRetracts",
            "",
            1,
            schema(),
            NodeKind::Operator(factory),
        );
        let sink = g.add_node("sink", "", 1, schema(), NodeKind::ResultSink(result));
        g.connect(src, op, 0, Partitioning::Forward);
        g.connect(op, sink, 0, Partitioning::Forward);
        let rt = QueryRuntime::start(
            "q",
            Arc::new(g),
            StartOptions {
                config: Arc::new(parking_lot::Mutex::new(CheckpointConfig::default())),
                storage: CheckpointStorage::new(store.clone(), &dir, 7),
                restore: None,
                next_epoch: 1,
                first_commit: None,
                skipped: Vec::new(),
                history: None,
                bad_records: None,
                counts: Default::default(),
            },
        )
        .unwrap();
        t.write(
            Chunk::inserts(batch(&[(1, Some("a"))])),
            WriteCheck::Constraints,
        )
        .unwrap();
        let mut failure = None;
        for _ in 0..3000 {
            failure = rt.failure();
            if failure.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let failure = failure.expect("the query failed");
        let text = failure.error.to_string();
        assert!(
            text.contains("node 1 (StreamRetracts) subtask 0: delete of a row not emitted"),
            "{text}"
        );
        rt.cancel();
        rt.stopped().await;
        assert_ne!(rt.status(), QueryStatus::Running);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("weir-checked-op-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}
