//! One failure as the user sees it: [`FailureContext`] is what is known
//! before enrichment (the columns an enricher rule may test);
//! [`ExceptionRow`] adds the labels and the action taken, as stored in
//! `system.exceptions`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::ExecError;

/// A failure before enrichment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FailureContext {
    pub query: String,
    pub occurred_at: SystemTime,
    /// The operator whose subtask failed; `None` for query-level failures
    /// (checkpointing, restarting).
    pub operator: Option<String>,
    pub subtask: Option<usize>,
    pub region: Option<usize>,
    pub error_class: String,
    pub message: String,
    pub root_cause: String,
    pub domain: String,
    pub sqlstate: String,
    pub retryable: bool,
}

impl FailureContext {
    pub fn new(
        query: &str,
        error: &ExecError,
        operator: Option<String>,
        subtask: Option<usize>,
        region: Option<usize>,
        occurred_at: SystemTime,
    ) -> FailureContext {
        FailureContext {
            query: query.to_string(),
            occurred_at,
            operator,
            subtask,
            region,
            error_class: error.error_class().to_string(),
            message: error.message(),
            root_cause: error.root_cause(),
            domain: error.domain().as_str().to_string(),
            sqlstate: error.sqlstate().code().to_string(),
            retryable: error.retryable(),
        }
    }

    /// The columns an enricher rule's `WHEN` predicate sees.
    pub fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("query", DataType::Utf8, false),
            Field::new("operator", DataType::Utf8, true),
            Field::new("subtask", DataType::Int64, true),
            Field::new("region", DataType::Int64, true),
            Field::new("error_class", DataType::Utf8, false),
            Field::new("message", DataType::Utf8, false),
            Field::new("root_cause", DataType::Utf8, false),
            Field::new("domain", DataType::Utf8, false),
            Field::new("sqlstate", DataType::Utf8, false),
            Field::new("retryable", DataType::Boolean, false),
        ]))
    }

    /// This failure as one row of [`FailureContext::schema`].
    pub fn to_batch(&self) -> RecordBatch {
        let text = |s: &str| Arc::new(StringArray::from(vec![s])) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            text(&self.query),
            Arc::new(StringArray::from(vec![self.operator.clone()])),
            Arc::new(Int64Array::from(vec![self.subtask.map(|s| s as i64)])),
            Arc::new(Int64Array::from(vec![self.region.map(|s| s as i64)])),
            text(&self.error_class),
            text(&self.message),
            text(&self.root_cause),
            text(&self.domain),
            text(&self.sqlstate),
            Arc::new(BooleanArray::from(vec![self.retryable])),
        ];
        RecordBatch::try_new(Self::schema(), columns).expect("failure context batch")
    }
}

/// A row of `system.exceptions`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExceptionRow {
    pub failure: FailureContext,
    pub labels: BTreeMap<String, String>,
    /// The restart this failure led to (1 = first), or the attempt it
    /// ended when nothing was restarted.
    pub restart_attempt: u32,
    /// `region restart`, `full restart`, `query failed`, `skipped record`,
    /// `dead-lettered`, `none`.
    pub action: String,
    /// The delay before the restart, when one followed.
    pub restart_delay_ms: Option<u64>,
}

impl ExceptionRow {
    /// The labels as a JSON object (keys sorted).
    pub fn labels_json(&self) -> String {
        serde_json::to_string(&self.labels).expect("labels are strings")
    }
}
