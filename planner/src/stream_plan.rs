//! Logical plan → stream graph.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef, NullEquality, TableReference};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use datafusion::physical_plan::expressions::Column;
use weir_executor::graph::{NodeKind, Partitioning, StreamGraph};
use weir_executor::operator::{FnFactory, Operator};
use weir_executor::operators::file_sink::{FileSinkFactory, FileSinkSpec};
use weir_executor::operators::filter::FilterOperator;
use weir_executor::operators::hash_agg::{AggSpec, HashAggOperator, WindowSpec};
use weir_executor::operators::hash_join::{HashJoinOperator, IntervalCleanup, JoinKind};
use weir_executor::operators::project::ProjectOperator;
use weir_executor::operators::session_window::SessionWindowOperator;
use weir_executor::operators::top_n::{OrderTerm, TopNOperator};
use weir_executor::operators::union::UnionOperator;
use weir_executor::operators::unnest::UnnestOperator;
use weir_executor::operators::values::ValuesOperator;
use weir_executor::table::Table;
use weir_executor::{ExecError, ExecResult};

use crate::error::{unsupported, PlanResult};
use crate::session_window::SessionWindowTable;
use crate::PlanError;

/// Finds the live table behind a table reference of the logical plan.
pub trait TableResolver {
    fn resolve(&self, name: &TableReference) -> Option<Arc<Table>>;
}

/// A planned sub-stream: the node producing it and its schema.
#[derive(Clone)]
struct Stream {
    node: usize,
    parallelism: usize,
    schema: DFSchemaRef,
    /// Columns that identify a row for rebalancing (a table's primary key);
    /// `None` means the whole row.
    row_key: Option<Vec<Arc<dyn PhysicalExpr>>>,
    /// Only inserts, never updates or deletes (rows of a source, final
    /// window results, their inner joins).
    append_only: bool,
    /// Columns of event time: rows still to come have values at or after
    /// the watermark (a table's WATERMARK column, a final window's end).
    event_time: Vec<usize>,
}

pub struct StreamPlanner<'a> {
    graph: StreamGraph,
    resolver: &'a dyn TableResolver,
    parallelism: usize,
    props: ExecutionProps,
    /// `EMIT ON WINDOW CLOSE`: window aggregations emit each group once.
    emit_on_window_close: bool,
    /// Window aggregations planned so far.
    window_aggregations: usize,
    /// `connector = 'blackhole'`: the output is dropped, not materialized.
    blackhole: bool,
    /// `connector = 'file'`: the output goes to part files, not the table.
    file_sink: Option<FileSinkSpec>,
    /// `late_records = 'keep'`: window aggregations count late rows.
    keep_late_records: bool,
    /// Window nodes (by address) that a filter above limits to their first
    /// rows (`ROW_NUMBER() ... <= n`), with n: planned as top-N.
    top_n_limits: std::collections::HashMap<usize, usize>,
    /// Sub-plans planned so far, so that one that appears twice in a query
    /// (q5's two window counts) is computed once and feeds both consumers;
    /// by [`crate::plan_key::plan_key`].
    planned: Vec<(LogicalPlan, Stream)>,
    /// The source node of each table read so far: a query reading a table
    /// twice (a self-join, q7) reads it once, each use projecting its own
    /// columns from the shared stream.
    sources: std::collections::HashMap<String, Stream>,
    /// Per source node, the columns its scans read (`None`: all): the
    /// source may leave the others NULL (a CSV file source skips them).
    read_columns: std::collections::HashMap<usize, Option<std::collections::BTreeSet<usize>>>,
}

/// Whether column `name` of `plan`'s output is the end of a window: the
/// `window_end` column a window table function adds, under that name or
/// renamed since (`window_end AS endtime`), also through an aggregation
/// grouped by it.
fn is_window_end(plan: &LogicalPlan, name: &str) -> bool {
    if name == "window_end" {
        return true;
    }
    let through = |e: &Expr, input: &LogicalPlan| match e {
        Expr::Alias(a) => {
            matches!(a.expr.as_ref(), Expr::Column(c) if is_window_end(input, &c.name))
        }
        Expr::Column(c) => is_window_end(input, &c.name),
        _ => false,
    };
    match plan {
        LogicalPlan::Projection(p) => p
            .expr
            .iter()
            .zip(p.schema.fields())
            .any(|(e, f)| f.name() == name && through(e, &p.input)),
        LogicalPlan::Aggregate(a) => a
            .group_expr
            .iter()
            .zip(a.schema.fields())
            .any(|(e, f)| f.name() == name && through(e, &a.input)),
        LogicalPlan::SubqueryAlias(s) => is_window_end(&s.input, name),
        LogicalPlan::Filter(f) => is_window_end(&f.input, name),
        _ => false,
    }
}

/// The window node of `plan` computing `ROW_NUMBER()` as column `name`,
/// followed through projections, aliases and filters.
fn row_number_window(plan: &LogicalPlan, name: &str) -> Option<usize> {
    let through = |e: &Expr, input: &LogicalPlan| match e {
        Expr::Alias(a) => match a.expr.as_ref() {
            Expr::Column(c) => row_number_window(input, &c.name),
            _ => None,
        },
        Expr::Column(c) => row_number_window(input, &c.name),
        _ => None,
    };
    match plan {
        LogicalPlan::Projection(p) => p
            .expr
            .iter()
            .zip(p.schema.fields())
            .find(|(_, f)| f.name() == name)
            .and_then(|(e, _)| through(e, &p.input)),
        LogicalPlan::SubqueryAlias(s) => row_number_window(&s.input, name),
        LogicalPlan::Filter(f) => row_number_window(&f.input, name),
        LogicalPlan::Window(w) => {
            let first = w.input.schema().fields().len();
            let i = w.schema.fields().iter().position(|f| f.name() == name)?;
            let e = w.window_expr.get(i.checked_sub(first)?)?;
            match e.clone().unalias() {
                Expr::WindowFunction(wf) if wf.fun.name() == "row_number" => {
                    Some(plan as *const LogicalPlan as usize)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// If a conjunct of `predicate` bounds a `ROW_NUMBER()` column of `input`
/// from above (`rn <= n`, `rn < n`, `rn = 1`, or reversed), the window
/// node computing it and the number of rows it keeps.
fn row_number_limit(predicate: &Expr, input: &LogicalPlan) -> Option<(usize, usize)> {
    use datafusion::logical_expr::{BinaryExpr, Operator as BinOp};
    let mut best: Option<(usize, usize)> = None;
    for conjunct in datafusion::logical_expr::utils::split_conjunction(predicate) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
            continue;
        };
        let (column, op, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                Some(op) => (c, op, v),
                None => continue,
            },
            _ => continue,
        };
        let Ok(datafusion::common::ScalarValue::Int64(Some(n))) = value.cast_to(&DataType::Int64)
        else {
            continue;
        };
        let limit = match op {
            BinOp::LtEq => n,
            BinOp::Lt => n - 1,
            BinOp::Eq if n == 1 => 1,
            _ => continue,
        };
        if limit < 1 {
            continue;
        }
        if let Some(window) = row_number_window(input, &column.name) {
            let limit = limit as usize;
            best = Some(match best {
                Some((_, l)) if l <= limit => (window, l),
                _ => (window, limit),
            });
        }
    }
    best
}

/// The event-time column of a table: the one column its WATERMARK
/// expression reads.
fn event_time_columns(table: &Table) -> Vec<usize> {
    let Some(wm) = &table.desc.watermark else {
        return Vec::new();
    };
    let cols = datafusion::physical_expr::utils::collect_columns(wm);
    match cols.iter().collect::<Vec<_>>().as_slice() {
        [c] => vec![c.index()],
        _ => Vec::new(),
    }
}

/// Arrow schema of a plan node, every field nullable (results of outer
/// joins and aggregates over empty input hold NULLs whatever the plan says).
pub fn arrow_schema(schema: &DFSchema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn physical(
    props: &ExecutionProps,
    expr: &Expr,
    schema: &DFSchema,
) -> PlanResult<Arc<dyn PhysicalExpr>> {
    let e = create_physical_expr(
        expr,
        schema,
        props,
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?;
    Ok(weir_executor::expr::simplify(e, schema.as_arrow()))
}

fn all_columns(schema: &SchemaRef) -> Vec<Arc<dyn PhysicalExpr>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
        .collect()
}

impl<'a> StreamPlanner<'a> {
    pub fn new(resolver: &'a dyn TableResolver, parallelism: usize) -> Self {
        StreamPlanner {
            graph: StreamGraph::default(),
            resolver,
            parallelism: parallelism.max(1),
            props: ExecutionProps::new(),
            emit_on_window_close: false,
            window_aggregations: 0,
            blackhole: false,
            file_sink: None,
            keep_late_records: false,
            top_n_limits: Default::default(),
            planned: Vec::new(),
            sources: Default::default(),
            read_columns: Default::default(),
        }
    }

    /// Window aggregations count late rows instead of dropping them (and
    /// so keep every window's state).
    pub fn keep_late_records(mut self, on: bool) -> Self {
        self.keep_late_records = on;
        self
    }

    /// Drops the query's output instead of writing its result table.
    pub fn blackhole(mut self, on: bool) -> Self {
        self.blackhole = on;
        self
    }

    /// Writes the query's output to files instead of its result table.
    /// Only an append-only output can go there (planning fails otherwise).
    pub fn file_sink(mut self, spec: Option<FileSinkSpec>) -> Self {
        self.file_sink = spec;
        self
    }

    /// Window aggregations emit each window's rows once, when the
    /// watermark passes the window's end (`EMIT ON WINDOW CLOSE`).
    pub fn emit_on_window_close(mut self, on: bool) -> Self {
        self.emit_on_window_close = on;
        self
    }

    /// Plans `plan` and a sink writing into `result`.
    pub fn plan(mut self, plan: &LogicalPlan, result: Arc<Table>) -> PlanResult<StreamGraph> {
        let stream = self.build(plan)?;
        for (node, cols) in std::mem::take(&mut self.read_columns) {
            self.graph.nodes[node].read_columns = cols.map(|c| c.into_iter().collect());
        }
        if self.emit_on_window_close && self.window_aggregations == 0 {
            return Err(PlanError::Unsupported(
                "EMIT ON WINDOW CLOSE needs an aggregation grouped by window_end (from TUMBLE or HOP)"
                    .into(),
            ));
        }
        let sink_par = stream.parallelism;
        let schema = result.schema();
        if self.blackhole {
            let sink = self.operator(
                "StreamBlackholeSink",
                result.desc.name.clone(),
                sink_par,
                schema,
                || Ok(Box::new(weir_executor::operators::blackhole::BlackholeSink)),
            );
            self.graph
                .connect(stream.node, sink, 0, Partitioning::Forward);
            return Ok(self.graph);
        }
        if let Some(spec) = self.file_sink.take() {
            if !stream.append_only {
                // Flink: "doesn't support consuming update changes".
                return Err(PlanError::Exec(ExecError::User {
                    sqlstate: weir_executor::SqlState::FEATURE_NOT_SUPPORTED,
                    message: "the file sink does not support consuming update changes: \
                              this query's output updates or deletes rows it emitted, \
                              and files only take appended rows"
                        .into(),
                    hint: Some(
                        "Write it to a table (the default connector), or make the output \
                         append-only: aggregate over TUMBLE or HOP windows with EMIT ON \
                         WINDOW CLOSE instead of a plain GROUP BY, or select from sources \
                         without aggregating."
                            .into(),
                    ),
                }));
            }
            spec.check_schema(&schema)?;
            let sink = self.graph.add_node(
                "StreamFileSink",
                spec.explain(),
                sink_par,
                schema.clone(),
                NodeKind::Operator(FileSinkFactory::new(spec, schema)),
            );
            self.graph
                .connect(stream.node, sink, 0, Partitioning::Forward);
            return Ok(self.graph);
        }
        let sink = self.graph.add_node(
            "StreamMaterialize",
            result.desc.name.clone(),
            sink_par,
            schema,
            NodeKind::ResultSink(result),
        );
        self.graph
            .connect(stream.node, sink, 0, Partitioning::Forward);
        Ok(self.graph)
    }

    fn node_schema(&self, s: &Stream) -> SchemaRef {
        self.graph.nodes[s.node].schema.clone()
    }

    /// Connects `from` to a new consumer with `parallelism`, keeping the
    /// order of changes to any one row: forward when the parallelism matches,
    /// else by hash of the whole row.
    fn connect_default(&mut self, from: &Stream, to: usize, input: usize, parallelism: usize) {
        let partitioning = if from.parallelism == parallelism {
            Partitioning::Forward
        } else if parallelism == 1 || self.node_schema(from).fields().is_empty() {
            Partitioning::Single
        } else {
            Partitioning::Hash(
                from.row_key
                    .clone()
                    .unwrap_or_else(|| all_columns(&self.node_schema(from))),
            )
        };
        self.graph.connect(from.node, to, input, partitioning);
    }

    /// Connects `from` to input 0 of a keyed operator: by hash of `keys`,
    /// or everything to its one subtask when there are none.
    fn connect_by_key(&mut self, from: usize, to: usize, keys: Vec<Arc<dyn PhysicalExpr>>) {
        let partitioning = if keys.is_empty() {
            Partitioning::Single
        } else {
            Partitioning::Hash(keys)
        };
        self.graph.connect(from, to, 0, partitioning);
    }

    fn operator(
        &mut self,
        name: &str,
        detail: String,
        parallelism: usize,
        schema: SchemaRef,
        make: impl Fn() -> ExecResult<Box<dyn Operator>> + Send + Sync + 'static,
    ) -> usize {
        let factory = FnFactory::new(schema.clone(), make);
        self.graph.add_node(
            name,
            detail,
            parallelism,
            schema,
            NodeKind::Operator(factory),
        )
    }

    /// Plans `plan`, or returns the stream of an equal sub-plan planned
    /// before. A sub-plan with a window node is always planned anew: its
    /// top-N limit comes from the filter above it.
    fn build(&mut self, plan: &LogicalPlan) -> PlanResult<Stream> {
        use datafusion::common::tree_node::TreeNode;
        let key = crate::plan_key::plan_key(plan)?;
        if let Some((_, stream)) = self.planned.iter().find(|(p, _)| *p == key) {
            return Ok(stream.clone());
        }
        let stream = self.build_new(plan)?;
        let has_window = plan
            .exists(|p| Ok(matches!(p, LogicalPlan::Window(_))))
            .unwrap_or(true);
        if !has_window {
            self.planned.push((key, stream.clone()));
        }
        Ok(stream)
    }

    fn build_new(&mut self, plan: &LogicalPlan) -> PlanResult<Stream> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.fetch.is_some() {
                    return unsupported("LIMIT");
                }
                let session = datafusion::datasource::source_as_provider(&scan.source)
                    .ok()
                    .filter(|p| p.is::<SessionWindowTable>());
                let stream = match session {
                    Some(provider) => {
                        let sw = provider
                            .downcast_ref::<SessionWindowTable>()
                            .expect("checked");
                        self.session_window(sw, scan)?
                    }
                    None => {
                        let Some(table) = self.resolver.resolve(&scan.table_name) else {
                            return unsupported(format!("reading \"{}\"", scan.table_name));
                        };
                        let stream = self.table_scan(&table, &scan.table_name)?;
                        self.note_read_columns(stream.node, &table, scan);
                        stream
                    }
                };
                self.scan_filters_and_projection(stream, scan)
            }
            LogicalPlan::Projection(p) => {
                let input = self.build(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(&self.props, e, &input.schema))
                    .collect::<PlanResult<Vec<_>>>()?;
                let detail = p
                    .expr
                    .iter()
                    .map(|e| e.human_display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let schema = arrow_schema(&p.schema);
                self.project(input, exprs, schema, detail, p.schema.clone())
            }
            LogicalPlan::Filter(f) => {
                if let Some((window, limit)) = row_number_limit(&f.predicate, &f.input) {
                    self.top_n_limits.insert(window, limit);
                }
                // The filter stays: it is true for every row a top-N emits.
                let input = self.build(&f.input)?;
                self.filter(input, &f.predicate)
            }
            LogicalPlan::SubqueryAlias(a) => {
                let mut input = self.build(&a.input)?;
                input.schema = a.schema.clone();
                Ok(input)
            }
            LogicalPlan::Aggregate(agg) => self.aggregate(agg),
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.build(i))
                    .collect::<PlanResult<Vec<_>>>()?;
                let schema = arrow_schema(&u.schema);
                let par = self.parallelism;
                let s2 = schema.clone();
                let node = self.operator("StreamUnion", "all".into(), par, schema, move || {
                    Ok(Box::new(UnionOperator::new(s2.clone())))
                });
                for (i, input) in inputs.iter().enumerate() {
                    self.connect_default(input, node, i, par);
                }
                Ok(Stream {
                    node,
                    parallelism: par,
                    schema: u.schema.clone(),
                    row_key: None,
                    append_only: inputs.iter().all(|i| i.append_only),
                    event_time: Vec::new(),
                })
            }
            LogicalPlan::Sort(sort) => match sort.fetch {
                Some(n) => self.top_n(
                    &sort.input,
                    &[],
                    &sort.expr,
                    n,
                    &sort.input.schema().clone(),
                ),
                // A result table is a set of rows: ordering does not change it.
                None => self.build(&sort.input),
            },
            LogicalPlan::Limit(limit) => {
                use datafusion::logical_expr::{FetchType, SkipType};
                match (
                    limit.get_skip_type()?,
                    limit.get_fetch_type()?,
                    limit.input.as_ref(),
                ) {
                    (
                        SkipType::Literal(0),
                        FetchType::Literal(Some(n)),
                        LogicalPlan::Sort(sort),
                    ) => {
                        let n = sort.fetch.map_or(n, |f| f.min(n));
                        self.top_n(
                            &sort.input,
                            &[],
                            &sort.expr,
                            n,
                            &sort.input.schema().clone(),
                        )
                    }
                    _ => unsupported("LIMIT without ORDER BY, or with OFFSET"),
                }
            }
            LogicalPlan::Window(w) => {
                match self
                    .top_n_limits
                    .get(&(plan as *const LogicalPlan as usize))
                {
                    Some(&limit) => self.window_top_n(w, limit),
                    None => unsupported(
                        "window functions (OVER) other than ROW_NUMBER() limited by a filter \
                         (WHERE rn <= n: top-N)",
                    ),
                }
            }
            LogicalPlan::Distinct(_) => unsupported("DISTINCT ON"),
            LogicalPlan::Values(v) => {
                let schema = arrow_schema(&v.schema);
                let empty = DFSchema::empty();
                let one = RecordBatch::try_new_with_options(
                    Arc::new(Schema::empty()),
                    vec![],
                    &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
                )?;
                let mut columns = Vec::new();
                for c in 0..schema.fields().len() {
                    let mut values = Vec::new();
                    for row in &v.values {
                        let e = physical(&self.props, &row[c], &empty)?;
                        let arr = e.evaluate(&one)?.into_array(1)?;
                        values.push(arr);
                    }
                    let refs: Vec<&dyn datafusion::arrow::array::Array> =
                        values.iter().map(|a| a.as_ref()).collect();
                    let arr = datafusion::arrow::compute::concat(&refs)?;
                    let want = schema.field(c).data_type();
                    columns.push(if arr.data_type() != want {
                        datafusion::arrow::compute::cast(&arr, want)?
                    } else {
                        arr
                    });
                }
                let batch = RecordBatch::try_new_with_options(
                    schema.clone(),
                    columns,
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(v.values.len())),
                )?;
                self.values(batch, v.schema.clone())
            }
            LogicalPlan::Unnest(u) => {
                if !u.struct_type_columns.is_empty()
                    || u.list_type_columns.len() != 1
                    || u.list_type_columns[0].1.depth != 1
                {
                    return unsupported(
                        "unnest of several list columns, of structs or of nested lists",
                    );
                }
                let input = self.build(&u.input)?;
                let list = u.list_type_columns[0].0;
                let schema = arrow_schema(&u.schema);
                let sources = u.dependency_indices.clone();
                let event_time: Vec<usize> = sources
                    .iter()
                    .enumerate()
                    .filter(|(_, src)| **src != list && input.event_time.contains(src))
                    .map(|(k, _)| k)
                    .collect();
                let preserve_nulls = u.options.preserve_nulls();
                let par = input.parallelism;
                let s2 = schema.clone();
                let node = self.operator(
                    "StreamUnnest",
                    format!("list=#{list}"),
                    par,
                    schema,
                    move || {
                        Ok(Box::new(UnnestOperator::new(
                            list,
                            sources.clone(),
                            preserve_nulls,
                            s2.clone(),
                        )))
                    },
                );
                self.connect_default(&input, node, 0, par);
                Ok(Stream {
                    node,
                    parallelism: par,
                    schema: u.schema.clone(),
                    row_key: None,
                    append_only: input.append_only,
                    event_time,
                })
            }
            LogicalPlan::EmptyRelation(e) => {
                let schema = arrow_schema(&e.schema);
                let rows = usize::from(e.produce_one_row);
                let batch = RecordBatch::try_new_with_options(
                    schema,
                    vec![],
                    &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
                )?;
                self.values(batch, e.schema.clone())
            }
            other => unsupported(format!(
                "the {} operator",
                other
                    .display()
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or("plan")
            )),
        }
    }

    /// Every row of `table`, as a stream with the table's full schema
    /// qualified by `name`.
    fn table_scan(&mut self, table: &Arc<Table>, name: &TableReference) -> PlanResult<Stream> {
        let table_schema = table.schema();
        if let Some(shared) = self.sources.get(&table.desc.name) {
            let mut stream = shared.clone();
            stream.schema = Arc::new(DFSchema::try_from_qualified_schema(
                name.clone(),
                &table_schema,
            )?);
            return Ok(stream);
        }
        // Every subtask of the source reads its share of the table's key
        // groups (see the executor's source_split).
        let src = self.graph.add_node(
            "StreamTableScan",
            table.desc.name.clone(),
            self.parallelism,
            table_schema.clone(),
            NodeKind::TableSource(table.clone()),
        );
        let row_key = (!table.desc.primary_key.is_empty()).then(|| {
            table
                .desc
                .primary_key
                .iter()
                .map(|i| {
                    Arc::new(Column::new(table_schema.field(*i).name(), *i))
                        as Arc<dyn PhysicalExpr>
                })
                .collect()
        });
        let stream = Stream {
            node: src,
            parallelism: self.parallelism,
            schema: Arc::new(DFSchema::try_from_qualified_schema(
                name.clone(),
                &table_schema,
            )?),
            row_key,
            append_only: table.is_append_only(),
            event_time: event_time_columns(table),
        };
        self.sources.insert(table.desc.name.clone(), stream.clone());
        Ok(stream)
    }

    /// Adds the columns `scan` reads from `table` (its projection, its
    /// filters' columns and the table's watermark columns) to those of
    /// source node `node`.
    fn note_read_columns(
        &mut self,
        node: usize,
        table: &Table,
        scan: &datafusion::logical_expr::TableScan,
    ) {
        if table.connector().is_none() {
            // A table's rows come whole from memory: nothing to skip.
            return;
        }
        let entry = self
            .read_columns
            .entry(node)
            .or_insert_with(|| Some(Default::default()));
        let (Some(cols), Some(proj)) = (entry.as_mut(), &scan.projection) else {
            *entry = None;
            return;
        };
        cols.extend(proj.iter().copied());
        let schema = table.schema();
        for f in &scan.filters {
            for c in f.column_refs() {
                match schema.index_of(&c.name) {
                    Ok(i) => {
                        cols.insert(i);
                    }
                    Err(_) => {
                        *entry = None;
                        return;
                    }
                }
            }
        }
        if let Some(wm) = &table.desc.watermark {
            cols.extend(
                datafusion::physical_expr::utils::collect_columns(wm)
                    .iter()
                    .map(|c| c.index()),
            );
        }
    }

    /// The filters and the projection pushed into a scan, over the stream
    /// of all its columns.
    fn scan_filters_and_projection(
        &mut self,
        mut stream: Stream,
        scan: &datafusion::logical_expr::TableScan,
    ) -> PlanResult<Stream> {
        for f in &scan.filters {
            stream = self.filter(stream, f)?;
        }
        if let Some(proj) = &scan.projection {
            let full = self.node_schema(&stream);
            let exprs: Vec<Arc<dyn PhysicalExpr>> = proj
                .iter()
                .map(|i| Arc::new(Column::new(full.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
                .collect();
            let schema = arrow_schema(&scan.projected_schema);
            let names: Vec<String> = proj.iter().map(|i| full.field(*i).name().clone()).collect();
            stream = self.project(
                stream,
                exprs,
                schema,
                names.join(", "),
                scan.projected_schema.clone(),
            )?;
        }
        Ok(stream)
    }

    /// `session_window(t, ts, gap, keys...)`: the table's rows through a
    /// session-assigning operator, partitioned by the keys.
    fn session_window(
        &mut self,
        sw: &SessionWindowTable,
        scan: &datafusion::logical_expr::TableScan,
    ) -> PlanResult<Stream> {
        let name = TableReference::bare(sw.input.clone());
        let Some(table) = self.resolver.resolve(&name) else {
            return unsupported(format!("reading \"{}\"", sw.input));
        };
        if table.desc.watermark.is_none() {
            return Err(PlanError::Unsupported(format!(
                "SESSION windows on \"{}\", which has no WATERMARK: sessions close when the \
                 watermark passes them",
                sw.input
            )));
        }
        let input = self.table_scan(&table, &name)?;
        // The session operator passes every column on.
        self.read_columns.insert(input.node, None);
        let in_schema = self.node_schema(&input);
        let partition: Vec<Arc<dyn PhysicalExpr>> = sw
            .partition
            .iter()
            .map(|i| Arc::new(Column::new(in_schema.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let full = Arc::new(DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &scan.source.schema(),
        )?);
        let schema = arrow_schema(&full);
        let global = partition.is_empty();
        let par = if global { 1 } else { self.parallelism };
        let detail = format!(
            "partition=[{}] time={} gap={}ms",
            partition
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            in_schema.field(sw.ts_col).name(),
            sw.gap_ms
        );
        let (p2, s2, is2, ts_col, gap) = (
            partition.clone(),
            schema.clone(),
            in_schema.clone(),
            sw.ts_col,
            sw.gap_ms,
        );
        let node = self.operator("StreamSessionWindow", detail, par, schema, move || {
            Ok(Box::new(SessionWindowOperator::new(
                p2.clone(),
                ts_col,
                gap,
                &is2,
                s2.clone(),
            )?))
        });
        self.connect_by_key(input.node, node, partition);
        Ok(Stream {
            node,
            parallelism: par,
            schema: full,
            row_key: None,
            append_only: true,
            event_time: Vec::new(),
        })
    }

    fn values(&mut self, batch: RecordBatch, schema: DFSchemaRef) -> PlanResult<Stream> {
        let arrow = batch.schema();
        let rows = batch.num_rows();
        let node = self.operator(
            "StreamValues",
            format!("rows={rows}"),
            1,
            arrow,
            move || Ok(Box::new(ValuesOperator::new(batch.clone()))),
        );
        Ok(Stream {
            node,
            parallelism: 1,
            schema,
            row_key: None,
            append_only: true,
            event_time: Vec::new(),
        })
    }

    fn project(
        &mut self,
        input: Stream,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        detail: String,
        df_schema: DFSchemaRef,
    ) -> PlanResult<Stream> {
        let par = self.parallelism;
        let s2 = schema.clone();
        // Event time passes through a plain column reference.
        let event_time: Vec<usize> = exprs
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.downcast_ref::<Column>()
                    .is_some_and(|c| input.event_time.contains(&c.index()))
            })
            .map(|(i, _)| i)
            .collect();
        let node = self.operator("StreamProject", detail, par, schema, move || {
            Ok(Box::new(ProjectOperator::new(exprs.clone(), s2.clone())))
        });
        self.connect_default(&input, node, 0, par);
        Ok(Stream {
            node,
            parallelism: par,
            schema: df_schema,
            row_key: None,
            append_only: input.append_only,
            event_time,
        })
    }

    fn filter(&mut self, input: Stream, predicate: &Expr) -> PlanResult<Stream> {
        let pred = physical(&self.props, predicate, &input.schema)?;
        let par = self.parallelism;
        let schema = self.node_schema(&input);
        let node = self.operator(
            "StreamFilter",
            predicate.human_display().to_string(),
            par,
            schema,
            move || Ok(Box::new(FilterOperator::new(pred.clone()))),
        );
        self.connect_default(&input, node, 0, par);
        Ok(Stream {
            node,
            parallelism: par,
            schema: input.schema,
            row_key: input.row_key,
            append_only: input.append_only,
            event_time: input.event_time,
        })
    }

    #[allow(deprecated)]
    fn aggregate(&mut self, agg: &datafusion::logical_expr::Aggregate) -> PlanResult<Stream> {
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return unsupported("GROUPING SETS, ROLLUP and CUBE");
        }
        let input = self.build(&agg.input)?;
        let in_schema = self.node_schema(&input);
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| physical(&self.props, e, &input.schema))
            .collect::<PlanResult<Vec<_>>>()?;
        let group_types = group_exprs
            .iter()
            .map(|e| e.data_type(&in_schema))
            .collect::<Result<Vec<DataType>, _>>()?;
        let mut specs = Vec::new();
        for e in &agg.aggr_expr {
            let (func, filter, _order) =
                datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                    e,
                    &input.schema,
                    &in_schema,
                    &self.props,
                )?;
            specs.push((Arc::new(func.as_ref().clone()), filter));
        }
        // Validate now, so that errors surface at CREATE time.
        for (f, filter) in &specs {
            AggSpec::new(f.clone(), filter.clone(), &in_schema)?;
        }
        let schema = arrow_schema(&agg.schema);
        let global = group_exprs.is_empty();
        let par = if global { 1 } else { self.parallelism };
        // Grouped by a window's end: state is freed as the watermark passes.
        let window = agg
            .group_expr
            .iter()
            .position(|e| matches!(e, Expr::Column(c) if is_window_end(&agg.input, &c.name)))
            .filter(|i| matches!(group_types[*i], DataType::Timestamp(..)))
            .map(|end_key| WindowSpec {
                end_key,
                emit_on_close: self.emit_on_window_close,
                keep_late: self.keep_late_records,
            });
        if window.is_some() {
            self.window_aggregations += 1;
        }
        let window_detail = match window {
            Some(w) if w.emit_on_close => " window_end=key#{} emit=on_window_close",
            Some(_) => " window_end=key#{}",
            None => "",
        }
        .replace(
            "{}",
            &window.map(|w| w.end_key.to_string()).unwrap_or_default(),
        );
        let detail = format!(
            "group=[{}] aggs=[{}]{window_detail}",
            agg.group_expr
                .iter()
                .map(|e| e.human_display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            agg.aggr_expr
                .iter()
                .map(|e| e.human_display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Over an input that only inserts, min/max keep just the extreme.
        let append_only_input = input.append_only;
        let detail = if append_only_input {
            format!("{detail} input=append_only")
        } else {
            detail
        };
        let s2 = schema.clone();
        let ge = group_exprs.clone();
        let node = self.operator("StreamHashAgg", detail, par, schema, move || {
            let aggs = specs
                .iter()
                .map(|(f, filter)| {
                    AggSpec::new(f.clone(), filter.clone(), &in_schema)
                        .map(|a| a.with_append_only_input(append_only_input))
                })
                .collect::<ExecResult<Vec<_>>>()?;
            let op = HashAggOperator::new(ge.clone(), group_types.clone(), aggs, s2.clone())?;
            Ok(Box::new(match window {
                Some(w) => op.with_window(w),
                None => op,
            }))
        });
        self.connect_by_key(input.node, node, group_exprs);
        Ok(Stream {
            node,
            parallelism: par,
            schema: agg.schema.clone(),
            row_key: None,
            append_only: window.is_some_and(|w| w.emit_on_close && !w.keep_late),
            event_time: window
                .filter(|w| w.emit_on_close && !w.keep_late)
                .map(|w| vec![w.end_key])
                .unwrap_or_default(),
        })
    }

    /// `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` of a window node
    /// whose rows a filter limits to the first `limit`.
    fn window_top_n(
        &mut self,
        w: &datafusion::logical_expr::Window,
        limit: usize,
    ) -> PlanResult<Stream> {
        let [expr] = w.window_expr.as_slice() else {
            return unsupported("several window functions in one OVER clause with a top-N");
        };
        let Expr::WindowFunction(wf) = expr.clone().unalias() else {
            return unsupported("this window expression");
        };
        self.top_n(
            &w.input,
            &wf.params.partition_by,
            &wf.params.order_by,
            limit,
            &w.schema,
        )
    }

    /// The first `limit` rows of `input` per partition in `order_by`;
    /// `schema` is the input's plus, for `ROW_NUMBER()`, the row number.
    fn top_n(
        &mut self,
        input: &LogicalPlan,
        partition_by: &[Expr],
        order_by: &[datafusion::logical_expr::SortExpr],
        limit: usize,
        out_schema: &DFSchemaRef,
    ) -> PlanResult<Stream> {
        let input = self.build(input)?;
        let in_schema = self.node_schema(&input);
        let partition = partition_by
            .iter()
            .map(|e| physical(&self.props, e, &input.schema))
            .collect::<PlanResult<Vec<_>>>()?;
        let order = order_by
            .iter()
            .map(|s| {
                Ok((
                    physical(&self.props, &s.expr, &input.schema)?,
                    !s.asc,
                    s.nulls_first,
                ))
            })
            .collect::<PlanResult<Vec<_>>>()?;
        let schema = arrow_schema(out_schema);
        let global = partition.is_empty();
        let par = if global { 1 } else { self.parallelism };
        let append_only = input.append_only;
        let detail = format!(
            "partition=[{}] order=[{}] limit={limit}{}",
            partition_by
                .iter()
                .map(|e| e.human_display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            order_by
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if append_only { " append_only" } else { "" }
        );
        let (p2, s2, is2) = (partition.clone(), schema.clone(), in_schema.clone());
        let node = self.operator("StreamTopN", detail, par, schema, move || {
            let order = order
                .iter()
                .map(|(expr, descending, nulls_first)| OrderTerm {
                    expr: expr.clone(),
                    descending: *descending,
                    nulls_first: *nulls_first,
                })
                .collect();
            Ok(Box::new(TopNOperator::new(
                p2.clone(),
                order,
                limit,
                append_only,
                &is2,
                s2.clone(),
            )?))
        });
        self.connect_by_key(input.node, node, partition);
        Ok(Stream {
            node,
            parallelism: par,
            schema: out_schema.clone(),
            row_key: None,
            append_only: false,
            event_time: Vec::new(),
        })
    }

    /// An inner join of append-only inputs whose condition bounds one
    /// side's event time from above by an expression of the other side's
    /// row (`x.t <= e(y)`, also inside BETWEEN or as an equality of join
    /// keys): the rows of that other side expire when `e(y)` falls behind
    /// the watermark.
    fn interval_cleanup(
        &self,
        filter: Option<&Expr>,
        on: &[(Expr, Expr)],
        left: &Stream,
        right: &Stream,
    ) -> PlanResult<Option<IntervalCleanup>> {
        use datafusion::logical_expr::{Between, BinaryExpr, Operator as BinOp};
        // Every comparison as (a, b) meaning a <= b (or a < b); an equality
        // (of join keys, e.g. two windows' ends) is both.
        let mut pairs: Vec<(Expr, Expr)> = Vec::new();
        for (l, r) in on {
            pairs.push((l.clone(), r.clone()));
            pairs.push((r.clone(), l.clone()));
        }
        for c in filter
            .map(datafusion::logical_expr::utils::split_conjunction)
            .unwrap_or_default()
        {
            match c {
                Expr::BinaryExpr(BinaryExpr {
                    left: l,
                    op,
                    right: r,
                }) => match op {
                    BinOp::Lt | BinOp::LtEq => pairs.push((*l.clone(), *r.clone())),
                    BinOp::Gt | BinOp::GtEq => pairs.push((*r.clone(), *l.clone())),
                    _ => {}
                },
                Expr::Between(Between {
                    expr,
                    negated: false,
                    low,
                    high,
                }) => {
                    pairs.push((*low.clone(), *expr.clone()));
                    pairs.push((*expr.clone(), *high.clone()));
                }
                _ => {}
            }
        }
        let sides = [left, right];
        let side_of = |col: &datafusion::common::Column| {
            (0..2).find(|s| sides[*s].schema.index_of_column(col).is_ok())
        };
        let mut cleanup = IntervalCleanup::default();
        for (a, b) in pairs {
            // `t - c <= b` is `t <= b + c` (and `t + c <= b`, `t <= b - c`)
            // for a constant c.
            let (a, b) = match a {
                Expr::BinaryExpr(BinaryExpr {
                    left: l,
                    op,
                    right: r,
                }) if matches!(*l, Expr::Column(_))
                    && matches!(*r, Expr::Literal(..))
                    && matches!(op, BinOp::Minus | BinOp::Plus) =>
                {
                    let inverse = if op == BinOp::Minus {
                        BinOp::Plus
                    } else {
                        BinOp::Minus
                    };
                    (
                        *l,
                        Expr::BinaryExpr(BinaryExpr::new(Box::new(b), inverse, r)),
                    )
                }
                a => (a, b),
            };
            let Expr::Column(t) = &a else { continue };
            let Some(x) = side_of(t) else { continue };
            let t_index = sides[x].schema.index_of_column(t)?;
            if !sides[x].event_time.contains(&t_index) {
                continue;
            }
            let y = 1 - x;
            let refs = b.column_refs();
            if refs.is_empty() || refs.iter().any(|c| side_of(c) != Some(y)) {
                continue;
            }
            let e = physical(&self.props, &b, &sides[y].schema)?;
            if !matches!(
                e.data_type(&self.node_schema(sides[y]))?,
                DataType::Timestamp(..)
            ) {
                continue;
            }
            cleanup.expiry[y].push(e);
            if !cleanup.event_time[x].contains(&t_index) {
                cleanup.event_time[x].push(t_index);
            }
        }
        Ok((!cleanup.expiry[0].is_empty() || !cleanup.expiry[1].is_empty()).then_some(cleanup))
    }

    fn join(&mut self, join: &datafusion::logical_expr::Join) -> PlanResult<Stream> {
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::LeftSemi,
            JoinType::LeftAnti => JoinKind::LeftAnti,
            JoinType::RightSemi => JoinKind::RightSemi,
            JoinType::RightAnti => JoinKind::RightAnti,
            other => return unsupported(format!("{other} join")),
        };
        let left = self.build(&join.left)?;
        let right = self.build(&join.right)?;
        let left_schema = self.node_schema(&left);
        let right_schema = self.node_schema(&right);
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        let mut key_types = Vec::new();
        for (l, r) in &join.on {
            let lk = physical(&self.props, l, &left.schema)?;
            let mut rk = physical(&self.props, r, &right.schema)?;
            let lt = lk.data_type(&left_schema)?;
            let rt = rk.data_type(&right_schema)?;
            if lt != rt {
                let cast = Expr::Cast(datafusion::logical_expr::Cast::new(
                    Box::new(r.clone()),
                    lt.clone(),
                ));
                rk = physical(&self.props, &cast, &right.schema)?;
            }
            left_keys.push(lk);
            right_keys.push(rk);
            key_types.push(lt);
        }
        let joined_df = left.schema.join(&right.schema)?;
        let filter = match &join.filter {
            Some(f) => Some(physical(&self.props, f, &joined_df)?),
            None => None,
        };
        let joined_schema = arrow_schema(&joined_df);
        let schema = arrow_schema(&join.schema);
        // Over append-only inputs, inner and semi joins only ever add rows
        // (a semi join's row goes out at its first match): the output is
        // append-only, and rows may leave the state by the watermark.
        let append_only = matches!(
            kind,
            JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
        ) && left.append_only
            && right.append_only;
        let interval = if append_only {
            self.interval_cleanup(join.filter.as_ref(), &join.on, &left, &right)?
        } else {
            None
        };
        let null_equals_null = join.null_equality == NullEquality::NullEqualsNull;
        let cross = join.on.is_empty();
        let par = if cross { 1 } else { self.parallelism };
        let detail = format!(
            "{} on=[{}]{}",
            join.join_type,
            join.on
                .iter()
                .map(|(l, r)| format!("{} = {}", l.human_display(), r.human_display()))
                .collect::<Vec<_>>()
                .join(", "),
            join.filter
                .as_ref()
                .map(|f| format!(" filter={}", f.human_display()))
                .unwrap_or_default()
        ) + if interval.is_some() {
            " interval (state cleaned by watermark)"
        } else {
            ""
        };
        let (lk, rk, s2) = (left_keys.clone(), right_keys.clone(), schema.clone());
        let (ls, rs) = (left_schema.clone(), right_schema.clone());
        let node = self.operator("StreamHashJoin", detail, par, schema, move || {
            let op = HashJoinOperator::new(
                kind,
                lk.clone(),
                rk.clone(),
                key_types.clone(),
                &ls,
                &rs,
                filter.clone(),
                joined_schema.clone(),
                s2.clone(),
                null_equals_null,
            )?;
            Ok(Box::new(match &interval {
                Some(cleanup) => op.with_interval_cleanup(cleanup.clone()),
                None => op,
            }))
        });
        if cross {
            self.graph.connect(left.node, node, 0, Partitioning::Single);
            self.graph
                .connect(right.node, node, 1, Partitioning::Single);
        } else {
            self.graph
                .connect(left.node, node, 0, Partitioning::Hash(left_keys));
            self.graph
                .connect(right.node, node, 1, Partitioning::Hash(right_keys));
        }
        Ok(Stream {
            node,
            parallelism: par,
            schema: join.schema.clone(),
            row_key: None,
            append_only,
            event_time: match kind {
                JoinKind::Inner => {
                    let width = left_schema.fields().len();
                    left.event_time
                        .iter()
                        .copied()
                        .chain(right.event_time.iter().map(|i| i + width))
                        .collect()
                }
                JoinKind::LeftSemi => left.event_time.clone(),
                JoinKind::RightSemi => right.event_time.clone(),
                _ => Vec::new(),
            },
        })
    }
}
