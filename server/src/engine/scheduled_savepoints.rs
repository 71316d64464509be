//! Scheduled savepoints (managed Flink's scheduled snapshots): with the
//! query option `savepoint_interval`, a task takes a savepoint (trigger
//! `scheduled`) of the running query at that interval and keeps the newest
//! `savepoints_retained` (default 3) scheduled ones, deleting older ones
//! with their directories. Savepoints taken for other reasons are kept.

use std::time::Duration;

use super::*;
use crate::lifecycle::operations as ops;
use crate::lifecycle::savepoints::{self as sps, SavepointMeta};

/// The schedule a query's options ask for (`None`: no scheduled
/// savepoints).
pub(super) fn schedule(
    options: &BTreeMap<String, String>,
) -> Result<Option<(Duration, usize)>, String> {
    let retained = match options.get("savepoints_retained") {
        None => 3,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!("invalid value for savepoints_retained: \"{v}\" (a positive integer)")
            })?,
    };
    let Some(v) = options.get("savepoint_interval") else {
        return Ok(None);
    };
    let interval = weir_executor::checkpoint::config::duration("savepoint_interval", v)?;
    if interval < Duration::from_millis(100) {
        return Err(format!(
            "invalid value for savepoint_interval: \"{v}\" (at least 100ms)"
        ));
    }
    Ok(Some((interval, retained)))
}

impl Engine {
    /// Starts the scheduled savepoints of a query that was just registered;
    /// the task ends when that run of the query is replaced or dropped.
    pub(super) fn schedule_savepoints(&self, meta: &QueryMeta, runtime: &Arc<StreamingQuery>) {
        let Ok(Some((first, _))) = schedule(&meta.options) else {
            return;
        };
        let engine = self.me.clone();
        let name = meta.name.clone();
        let this_run = Arc::downgrade(runtime);
        tokio::spawn(async move {
            let mut interval = first;
            loop {
                tokio::time::sleep(interval).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let _ddl = engine.ddl.lock().await;
                let Some((meta, rt)) = engine.query_entry(&name) else {
                    return;
                };
                if !std::ptr::eq(Arc::as_ptr(&rt), this_run.as_ptr()) {
                    return;
                }
                // The options as they are now (ALTER ... SET changes them).
                let Ok(Some((next, retained))) = schedule(&meta.options) else {
                    return;
                };
                interval = next;
                if rt.state() != QueryState::Running {
                    continue;
                }
                let op = match engine.begin_op(&name, ops::SAVEPOINT, "scheduled".into()) {
                    Ok(op) => op,
                    Err(e) => {
                        tracing::warn!(query = %name, error = %e, "scheduled savepoint not recorded");
                        continue;
                    }
                };
                let r = engine
                    .take_savepoint(&meta, &rt, None, sps::SCHEDULED)
                    .await;
                op.finish(
                    &r,
                    r.as_ref()
                        .ok()
                        .map(|s| format!("scheduled savepoint '{}'", s.name)),
                );
                match r {
                    Ok(_) => engine.prune_scheduled_savepoints(&name, retained),
                    Err(e) => {
                        tracing::warn!(query = %name, error = %e, "scheduled savepoint failed")
                    }
                }
            }
        });
    }

    /// Deletes the query's scheduled savepoints beyond the newest
    /// `retained`.
    fn prune_scheduled_savepoints(&self, query: &str, retained: usize) {
        let mut scheduled: Vec<SavepointMeta> =
            match crate::lifecycle::list(&self.store, sps::PREFIX) {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!(query, error = %e, "could not list savepoints");
                    return;
                }
            };
        scheduled.retain(|s| s.query == query && s.trigger == sps::SCHEDULED);
        scheduled.sort_by_key(|s| std::cmp::Reverse((s.created_at_ms, s.checkpoint_id)));
        for old in scheduled.into_iter().skip(retained) {
            if let Err(e) = self.forget_savepoint(&old) {
                tracing::warn!(savepoint = %old.name, error = %e, "could not forget a savepoint");
            }
        }
    }
}
