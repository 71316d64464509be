//! Session windows as a table function: `session_window('t', 'ts', gap_ms,
//! 'k1', ...)` is the rows of table `t` with the bounds of their session
//! per partition (`k1, ...`), as `window_start` and `window_end`. The server
//! rewrites Flink's `TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts),
//! gap))` into it.
//!
//! An ad hoc query computes the sessions in one pass over a snapshot of the
//! table (rows sorted by partition and time, split where the gap to the
//! previous row exceeds `gap`). A streaming query plans the provider as the
//! table's scan followed by `StreamSessionWindow`, which assigns sessions as
//! the watermark closes them (see the executor's `session_window.rs`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use weir_executor::table::Table;

/// Looks a relation up by name.
pub type Lookup = Arc<dyn Fn(&str) -> Option<Arc<Table>> + Send + Sync>;

/// The `session_window` table function.
pub struct SessionWindowFunction {
    lookup: Lookup,
}

impl SessionWindowFunction {
    pub fn new(lookup: Lookup) -> Self {
        SessionWindowFunction { lookup }
    }
}

impl std::fmt::Debug for SessionWindowFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionWindowFunction")
    }
}

fn string_arg(e: &Expr, what: &str) -> Result<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Ok(s.clone()),
        _ => plan_err!("session_window: {what} must be a string literal"),
    }
}

impl TableFunctionImpl for SessionWindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() < 3 {
            return plan_err!(
                "session_window takes (table, time column, gap in milliseconds, partition columns...)"
            );
        }
        let input = string_arg(&exprs[0], "the table")?;
        let ts = string_arg(&exprs[1], "the time column")?;
        let gap_ms = match &exprs[2] {
            Expr::Literal(v, _) => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(n)) if n > 0 => n,
                _ => return plan_err!("session_window: the gap must be positive"),
            },
            _ => return plan_err!("session_window: the gap must be a constant"),
        };
        let Some(table) = (self.lookup)(&input) else {
            return plan_err!("relation \"{input}\" does not exist");
        };
        let schema = table.schema();
        let index = |name: &str| {
            schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!("column \"{name}\" of \"{input}\" does not exist"))
            })
        };
        let ts_col = index(&ts)?;
        if !matches!(schema.field(ts_col).data_type(), DataType::Timestamp(..)) {
            return plan_err!("session_window: \"{ts}\" is not a timestamp column");
        }
        let partition = exprs[3..]
            .iter()
            .map(|e| index(&string_arg(e, "a partition column")?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(SessionWindowTable::new(
            input, table, ts_col, gap_ms, partition,
        )))
    }
}

/// Table `input` with the session bounds of each row.
pub struct SessionWindowTable {
    pub input: String,
    table: Arc<Table>,
    pub ts_col: usize,
    pub gap_ms: i64,
    pub partition: Vec<usize>,
    schema: SchemaRef,
}

impl std::fmt::Debug for SessionWindowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionWindowTable({})", self.input)
    }
}

impl SessionWindowTable {
    fn new(
        input: String,
        table: Arc<Table>,
        ts_col: usize,
        gap_ms: i64,
        partition: Vec<usize>,
    ) -> Self {
        let base = table.schema();
        let ts_type = base.field(ts_col).data_type().clone();
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("window_start", ts_type.clone(), true));
        fields.push(Field::new("window_end", ts_type, true));
        SessionWindowTable {
            input,
            table,
            ts_col,
            gap_ms,
            partition,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The gap in the time column's unit.
    fn gap_units(&self) -> i64 {
        use datafusion::arrow::datatypes::TimeUnit;
        match self.schema.field(self.ts_col).data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => self.gap_ms / 1000,
            DataType::Timestamp(TimeUnit::Millisecond, _) => self.gap_ms,
            DataType::Timestamp(TimeUnit::Microsecond, _) => self.gap_ms * 1_000,
            _ => self.gap_ms * 1_000_000,
        }
    }

    /// The rows of `batch` (NULL times left out) with their sessions.
    fn sessions(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let ts = cast(batch.column(self.ts_col), &DataType::Int64)?;
        let ts = ts
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64");
        let keys: Vec<ArrayRef> = self
            .partition
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let converter = RowConverter::new(
            keys.iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let rows = if keys.is_empty() {
            None
        } else {
            Some(converter.convert_columns(&keys)?)
        };
        let mut order: Vec<usize> = (0..batch.num_rows()).filter(|i| !ts.is_null(*i)).collect();
        let key = |i: usize| rows.as_ref().map(|r| r.row(i));
        order.sort_by(|a, b| key(*a).cmp(&key(*b)).then(ts.value(*a).cmp(&ts.value(*b))));
        let gap = self.gap_units();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < order.len() {
            let mut j = i + 1;
            while j < order.len()
                && key(order[j]) == key(order[i])
                && ts.value(order[j]) - ts.value(order[j - 1]) <= gap
            {
                j += 1;
            }
            let (start, end) = (ts.value(order[i]), ts.value(order[j - 1]) + gap);
            starts.extend(std::iter::repeat_n(start, j - i));
            ends.extend(std::iter::repeat_n(end, j - i));
            i = j;
        }
        let indices = UInt32Array::from_iter_values(order.iter().map(|i| *i as u32));
        let mut cols = batch
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ts_type = self.schema.field(self.ts_col).data_type();
        cols.push(cast(&Int64Array::from(starts), ts_type)?);
        cols.push(cast(&Int64Array::from(ends), ts_type)?);
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

#[async_trait::async_trait]
impl TableProvider for SessionWindowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self
            .table
            .snapshot()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let out = self.sessions(&batch)?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![out]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
