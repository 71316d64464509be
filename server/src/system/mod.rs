//! The `system` schema: Weir's own state as tables (one table per file).
//! Each table is computed when a query reads it.

mod checkpoints;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::RwLock;
use weir_executor::runtime::QueryRuntime;

/// Running queries by name, for the system tables.
pub type Runtimes = Arc<RwLock<BTreeMap<String, Arc<QueryRuntime>>>>;

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
    pub fn new(runtimes: Runtimes) -> Self {
        SystemSchema {
            tables: vec![Arc::new(checkpoints::Checkpoints::new(runtimes))],
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
