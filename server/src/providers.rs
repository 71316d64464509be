//! DataFusion views of Weir's relations, for ad hoc queries and planning.

pub(crate) mod key_ranges;
pub mod pg_catalog;
mod stored_scan;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;
use weir_executor::connectors::SourceConnector;
use weir_executor::table::Table;
use weir_planner::TableResolver;

/// Every relation by name: tables and the results of streaming queries.
pub type Relations = Arc<RwLock<BTreeMap<String, Arc<Table>>>>;

/// Reads a live table: a consistent snapshot of its current contents.
pub struct LiveTableProvider {
    table: Arc<Table>,
}

impl LiveTableProvider {
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }
}

impl std::fmt::Debug for LiveTableProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveTableProvider({})", self.table.desc.name)
    }
}

#[async_trait]
impl TableProvider for LiveTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        if !self.table.is_result() {
            TableType::Base
        } else {
            TableType::View
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.table.connector().is_none() && key_ranges::narrows(&self.table, f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(connector) = self.table.connector() {
            return source_scan(&self.table.desc.name, connector, self.schema(), projection);
        }
        let ranges = key_ranges::key_ranges(&self.table, filters);
        stored_scan::scan(&self.table, ranges, projection, limit)
    }
}

/// An ad hoc read of a source: its connector's rows from the start (all
/// splits, as one subtask), read on a blocking thread as the query pulls
/// them. A source without an end is refused (0A000): the SELECT would
/// never finish.
fn source_scan(
    name: &str,
    connector: &Arc<dyn SourceConnector>,
    schema: SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !connector.is_bounded() {
        return Err(DataFusionError::NotImplemented(format!(
            "source \"{name}\" has no end, so an ad hoc SELECT cannot read it; \
             read it with CREATE STREAMING QUERY or CREATE MATERIALIZED VIEW, \
             or give its {} connector an end",
            connector.name()
        )));
    }
    let partition = SourcePartition {
        connector: connector.clone(),
        schema: schema.clone(),
        columns: projection.cloned().unwrap_or_default(),
    };
    Ok(Arc::new(StreamingTableExec::try_new(
        schema,
        vec![Arc::new(partition)],
        projection,
        Vec::new(),
        false,
        None,
    )?))
}

/// One pass over a bounded source (see [`source_scan`]).
struct SourcePartition {
    connector: Arc<dyn SourceConnector>,
    schema: SchemaRef,
    /// The columns the query reads (empty: all); the others may be NULL.
    columns: Vec<usize>,
}

impl std::fmt::Debug for SourcePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourcePartition({})", self.connector.name())
    }
}

impl PartitionStream for SourcePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        let connector = self.connector.clone();
        let schema = self.schema.clone();
        let columns = self.columns.clone();
        let external = |e: weir_executor::ExecError| DataFusionError::External(Box::new(e));
        builder.spawn_blocking(move || {
            let opened = connector
                .open_columns(0, 1, &schema, 0, &columns)
                .map_err(external)?;
            for mut split in opened.splits {
                while let Some(batch) = split.next_batch().map_err(external)? {
                    if tx.blocking_send(Ok(batch)).is_err() {
                        // The query stopped reading (a LIMIT, a cancel).
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// The `public` schema.
pub struct PublicSchema {
    relations: Relations,
}

impl std::fmt::Debug for PublicSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicSchema")
    }
}

impl PublicSchema {
    pub fn new(relations: Relations) -> Self {
        PublicSchema { relations }
    }
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        self.relations.read().keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .relations
            .read()
            .get(name)
            .map(|t| Arc::new(LiveTableProvider { table: t.clone() }) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.relations.read().contains_key(name)
    }
}

/// Resolves table scans of a streaming query and records what it reads.
pub struct RecordingResolver {
    relations: Relations,
    pub used: parking_lot::Mutex<Vec<String>>,
}

impl RecordingResolver {
    pub fn new(relations: Relations) -> Self {
        RecordingResolver {
            relations,
            used: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl TableResolver for RecordingResolver {
    fn resolve(&self, name: &TableReference) -> Option<Arc<Table>> {
        if let Some(schema) = name.schema() {
            if schema != "public" {
                return None;
            }
        }
        let t = self.relations.read().get(name.table()).cloned();
        if t.is_some() {
            let mut used = self.used.lock();
            if !used.iter().any(|u| u == name.table()) {
                used.push(name.table().to_string());
            }
        }
        t
    }
}
