//! DataFusion views of Weir's relations, for ad hoc queries and planning.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;
use weir_executor::table::Table;
use weir_planner::TableResolver;

/// Every relation by name: tables and the results of streaming queries.
pub type Relations = Arc<RwLock<BTreeMap<String, Arc<Table>>>>;

/// Reads a live table: a consistent snapshot of its current contents.
pub struct LiveTableProvider {
    table: Arc<Table>,
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
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
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
