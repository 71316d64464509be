//! Bad records (`on_error = 'skip' | 'dead_letter'`): a record that makes
//! an expression fail is taken out of the stream instead of failing the
//! subtask. Like result changes, the bad records of each subtask are
//! staged per epoch and committed with the checkpoint that covers them, so
//! that after a restart, replayed records are not counted twice:
//! `system.dead_letters` and the skip counts are exactly-once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chunk::{Chunk, Op};
use crate::error::ExecError;
use crate::failure::{FailureConfig, FailureContext, OnError};

/// One bad record, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub query: String,
    pub operator: String,
    pub subtask: usize,
    pub occurred_at_ms: u64,
    /// `skip` (only counted) or `dead_letter` (kept).
    pub action: String,
    /// The record as JSON text; `None` for skipped records.
    pub record: Option<String>,
    /// `insert` or `delete`.
    pub change: String,
    pub error_class: String,
    pub message: String,
    pub sqlstate: String,
}

/// A bad record as a failure, for the exception history: what it was
/// and what was done (`skipped record` or `dead-lettered`).
pub type BadRecordEvent = (FailureContext, &'static str);

type Sealed = (u64, (usize, usize), DeadLetter);

/// A query's bad records, by subtask, until committed.
pub struct BadRecords {
    config: Arc<Mutex<FailureConfig>>,
    open: Mutex<HashMap<(usize, usize), Vec<DeadLetter>>>,
    /// (epoch, subtask, letter) sealed at barriers.
    sealed: Mutex<Vec<Sealed>>,
    events: Option<mpsc::UnboundedSender<BadRecordEvent>>,
}

impl BadRecords {
    pub fn new(
        config: Arc<Mutex<FailureConfig>>,
        events: Option<mpsc::UnboundedSender<BadRecordEvent>>,
    ) -> Arc<BadRecords> {
        Arc::new(BadRecords {
            config,
            open: Mutex::new(HashMap::new()),
            sealed: Mutex::new(Vec::new()),
            events,
        })
    }

    /// Forgets what is not committed (a new run replays it).
    pub fn reset(&self) {
        self.open.lock().clear();
        self.sealed.lock().clear();
    }

    pub fn on_error(&self) -> OnError {
        self.config.lock().on_error
    }

    /// Takes a one-row chunk out of the stream.
    pub(crate) fn take(
        &self,
        query: &str,
        operator: &str,
        id: (usize, usize),
        chunk: &Chunk,
        error: &ExecError,
        action: OnError,
    ) {
        let keep = action == OnError::DeadLetter;
        let letter = DeadLetter {
            query: query.to_string(),
            operator: operator.to_string(),
            subtask: id.1,
            occurred_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            action: action.name().to_string(),
            record: keep.then(|| record_text(chunk)),
            change: match chunk.op(0) {
                Op::Insert => "insert".into(),
                Op::Delete => "delete".into(),
            },
            error_class: error.error_class().to_string(),
            message: error.message(),
            sqlstate: error.sqlstate().code().to_string(),
        };
        tracing::debug!(query, operator, action = action.name(), error = %letter.message, "bad record taken out of the stream");
        if let Some(tx) = &self.events {
            let ctx = FailureContext::new(
                query,
                error,
                Some(operator.to_string()),
                Some(id.1),
                None,
                SystemTime::now(),
            );
            let what = if keep {
                "dead-lettered"
            } else {
                "skipped record"
            };
            let _ = tx.send((ctx, what));
        }
        self.open.lock().entry(id).or_default().push(letter);
    }

    /// The subtask passed the barrier of `epoch`.
    pub(crate) fn seal(&self, id: (usize, usize), epoch: u64) {
        let letters = self.open.lock().remove(&id).unwrap_or_default();
        if !letters.is_empty() {
            self.sealed
                .lock()
                .extend(letters.into_iter().map(|l| (epoch, id, l)));
        }
    }

    /// Bad records of every epoch up to `epoch`, oldest first.
    pub(crate) fn take_through(&self, epoch: u64) -> Vec<DeadLetter> {
        let mut sealed = self.sealed.lock();
        let (take, keep): (Vec<_>, Vec<_>) = sealed.drain(..).partition(|(e, _, _)| *e <= epoch);
        *sealed = keep;
        take.into_iter().map(|(_, _, l)| l).collect()
    }

    /// Forgets what a restarted subtask staged and nothing committed yet.
    pub(crate) fn discard(&self, id: (usize, usize)) {
        self.open.lock().remove(&id);
        self.sealed.lock().retain(|(_, s, _)| *s != id);
    }
}

/// The only row of a chunk as a JSON object of its columns.
fn record_text(chunk: &Chunk) -> String {
    let batch = &chunk.batch;
    let opts = FormatOptions::default().with_null("null");
    let mut map = serde_json::Map::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let value = if col.is_null(0) {
            serde_json::Value::Null
        } else {
            let text = ArrayFormatter::try_new(col.as_ref(), &opts)
                .map(|f| f.value(0).to_string())
                .unwrap_or_else(|_| "?".into());
            match field.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float32
                | DataType::Float64
                | DataType::Boolean => serde_json::from_str(&text).unwrap_or(text.into()),
                _ => serde_json::Value::String(text),
            }
        };
        map.insert(field.name().clone(), value);
    }
    serde_json::Value::Object(map).to_string()
}
