//! What the catalog stores for each relation (JSON under `table/<name>` and
//! `query/<name>`), so that a restart brings everything back.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::SqlResult;
use crate::types::{arrow_type, sql_type_name};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    pub sql_type: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    pub id: u64,
    pub name: String,
    pub columns: Vec<ColumnMeta>,
    pub primary_key: Vec<usize>,
    /// `WATERMARK FOR column AS expr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<crate::event_time::WatermarkSpec>,
    /// A source's `WITH (connector = 'file', path = ..., ...)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<BTreeMap<String, String>>,
}

impl TableMeta {
    pub fn schema(&self) -> SqlResult<SchemaRef> {
        let fields = self
            .columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, arrow_type(&c.sql_type)?, c.nullable)))
            .collect::<SqlResult<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }

    pub fn columns_of(schema: &Schema) -> Vec<ColumnMeta> {
        schema
            .fields()
            .iter()
            .map(|f| ColumnMeta {
                name: f.name().clone(),
                sql_type: sql_type_name(f.data_type()),
                nullable: f.is_nullable(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryMeta {
    pub id: u64,
    pub name: String,
    /// `streaming_query` or `materialized_view`.
    pub kind: String,
    /// The defining SELECT.
    pub sql: String,
    pub options: BTreeMap<String, String>,
    pub depends_on: Vec<String>,
    pub created_at_ms: i64,
    /// Its version: 1 at CREATE, one more at each `ALTER ... AS SELECT`
    /// (see `system.query_versions`).
    #[serde(default = "first_version")]
    pub version: u64,
}

fn first_version() -> u64 {
    1
}

pub const META_NEXT_ID: &str = "meta/next_id";

pub fn table_key(name: &str) -> String {
    format!("table/{name}")
}

pub fn query_key(name: &str) -> String {
    format!("query/{name}")
}

pub fn enricher_key(name: &str) -> String {
    format!("enricher/{name}")
}

/// The FAILED state of a query (it stays FAILED across restarts).
pub fn failed_key(name: &str) -> String {
    format!("query_failed/{name}")
}
