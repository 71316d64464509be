//! The `system` schema: Weir's own state as tables (one table per file).
//! Each table is computed when a query reads it.

mod backfills;
mod checkpoints;
mod dead_letters;
mod exceptions;
mod failure_enrichers;
mod metrics;
mod operations;
mod query_versions;
mod savepoints;
mod streaming_queries;
mod tables;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::TimestampMicrosecondArray;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;
use weir_executor::failure::Enrichers;
use weir_executor::runtime::StreamingQuery;

/// A streaming query as the system tables see it.
#[derive(Clone)]
pub struct RegisteredQuery {
    pub handle: Arc<StreamingQuery>,
    /// `streaming_query` or `materialized_view`.
    pub kind: String,
    pub sql: String,
    pub options: BTreeMap<String, String>,
    /// Its first catch-up, when created since the server started.
    pub backfill: Option<Arc<crate::backfill::Backfill>>,
}

/// Streaming queries by name, for the system tables.
pub type Runtimes = Arc<RwLock<BTreeMap<String, RegisteredQuery>>>;

/// Builds a system table's batch column by column, so that its schema
/// and its values are declared in one place.
pub(crate) struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    pub(crate) fn new() -> Self {
        Columns {
            fields: Vec::new(),
            arrays: Vec::new(),
        }
    }

    pub(crate) fn text(
        mut self,
        name: &str,
        values: impl IntoIterator<Item = Option<String>>,
    ) -> Self {
        self.fields.push(Field::new(name, DataType::Utf8, true));
        self.arrays
            .push(Arc::new(StringArray::from_iter(values)) as ArrayRef);
        self
    }

    pub(crate) fn int(mut self, name: &str, values: impl IntoIterator<Item = Option<i64>>) -> Self {
        self.fields.push(Field::new(name, DataType::Int64, true));
        self.arrays
            .push(Arc::new(Int64Array::from_iter(values)) as ArrayRef);
        self
    }

    pub(crate) fn float(
        mut self,
        name: &str,
        values: impl IntoIterator<Item = Option<f64>>,
    ) -> Self {
        self.fields.push(Field::new(name, DataType::Float64, true));
        self.arrays
            .push(Arc::new(datafusion::arrow::array::Float64Array::from_iter(values)) as ArrayRef);
        self
    }

    pub(crate) fn boolean(
        mut self,
        name: &str,
        values: impl IntoIterator<Item = Option<bool>>,
    ) -> Self {
        self.fields.push(Field::new(name, DataType::Boolean, true));
        self.arrays
            .push(Arc::new(BooleanArray::from_iter(values)) as ArrayRef);
        self
    }

    pub(crate) fn timestamp(
        mut self,
        name: &str,
        values: impl IntoIterator<Item = Option<std::time::SystemTime>>,
    ) -> Self {
        self.fields.push(Field::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("+00:00"))),
            true,
        ));
        let micros = values.into_iter().map(|t| {
            t.map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64)
            })
        });
        self.arrays.push(Arc::new(
            TimestampMicrosecondArray::from_iter(micros).with_timezone("+00:00"),
        ) as ArrayRef);
        self
    }

    pub(crate) fn finish(self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(self.fields)),
            self.arrays,
        )?)
    }
}

/// A system table: a schema and a function computing its rows.
pub trait SystemTable: Send + Sync {
    fn name(&self) -> &'static str;
    fn schema(&self) -> SchemaRef;
    fn rows(&self) -> Result<RecordBatch>;
}

pub struct SystemSchema {
    tables: Vec<Arc<dyn SystemTable>>,
}

impl std::fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SystemSchema")
    }
}

impl SystemSchema {
    pub fn new(
        runtimes: Runtimes,
        enrichers: Arc<Enrichers>,
        server_metrics: Arc<crate::metrics::ServerMetrics>,
        store: Arc<weir_storage::Store>,
        relations: crate::providers::Relations,
    ) -> Self {
        SystemSchema {
            tables: vec![
                Arc::new(metrics::Metrics::new(
                    runtimes.clone(),
                    server_metrics,
                    store.clone(),
                )),
                Arc::new(savepoints::Savepoints::new(store.clone())),
                Arc::new(query_versions::QueryVersions::new(store.clone())),
                Arc::new(operations::Operations::new(store)),
                Arc::new(checkpoints::Checkpoints::new(runtimes.clone())),
                Arc::new(backfills::Backfills::new(runtimes.clone())),
                Arc::new(tables::Tables::new(relations)),
                Arc::new(streaming_queries::StreamingQueries::new(runtimes.clone())),
                Arc::new(tasks::Tasks::new(runtimes.clone())),
                Arc::new(exceptions::Exceptions::new(runtimes.clone())),
                Arc::new(dead_letters::DeadLetters::new(runtimes)),
                Arc::new(failure_enrichers::FailureEnrichers::new(enrichers)),
            ],
        }
    }

    fn find(&self, name: &str) -> Option<&Arc<dyn SystemTable>> {
        self.tables.iter().find(|t| t.name() == name)
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name().to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .find(name)
            .map(|t| Arc::new(SystemTableProvider { table: t.clone() }) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

struct SystemTableProvider {
    table: Arc<dyn SystemTable>,
}

impl std::fmt::Debug for SystemTableProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "system.{}", self.table.name())
    }
}

#[async_trait]
impl TableProvider for SystemTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
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
        let batch = self.table.rows()?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
