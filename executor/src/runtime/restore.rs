//! Choosing where a query resumes: the newest completed checkpoint whose
//! files are readable and whose plan matches. A damaged newer checkpoint is
//! reported and skipped; the query then catches up to it (its results are
//! already committed) instead of committing them twice.

use crate::checkpoint::CheckpointStorage;
use crate::error::ExecResult;
use crate::graph::StreamGraph;

use super::{node_names, Restore};
use crate::checkpoint::CheckpointRecord;

pub struct RestorePlan {
    pub restore: Option<Restore>,
    /// Above every recorded epoch.
    pub next_epoch: u64,
    /// Checkpoints exist but none could be used: results committed so far
    /// are stale and must be retracted before recomputing from scratch.
    pub recompute: bool,
    /// (checkpoint id, why it could not be used)
    pub skipped: Vec<(u64, String)>,
}

/// How a checkpoint's plan differs from `graph`'s (node names, and node
/// fingerprints where the record has them); `None` when it is the same.
pub fn plan_difference(rec: &CheckpointRecord, graph: &StreamGraph) -> Option<String> {
    let names = node_names(graph);
    if rec.nodes != names {
        let at = rec
            .nodes
            .iter()
            .zip(&names)
            .position(|(a, b)| a != b)
            .unwrap_or(rec.nodes.len().min(names.len()));
        return Some(format!(
            "operator {at} is {} there and {} here",
            rec.nodes.get(at).map_or("missing", |s| s.as_str()),
            names.get(at).map_or("missing", |s| s.as_str()),
        ));
    }
    if rec.fingerprints.is_empty() {
        return None;
    }
    let at = rec
        .fingerprints
        .iter()
        .zip(graph.fingerprints())
        .position(|(a, b)| *a != b)?;
    Some(format!(
        "operator {at} ({}) differs in its definition or input",
        names[at]
    ))
}

pub fn plan_restore(storage: &CheckpointStorage, graph: &StreamGraph) -> ExecResult<RestorePlan> {
    let records = storage.records()?;
    let Some(latest) = records.last().cloned() else {
        return Ok(RestorePlan {
            restore: None,
            next_epoch: 1,
            recompute: false,
            skipped: Vec::new(),
        });
    };
    let input_schema = |node: usize, input: usize| graph.input_schema(node, input);
    let mut skipped = Vec::new();
    for rec in records.iter().rev() {
        if plan_difference(rec, graph).is_some() {
            skipped.push((
                rec.epoch,
                "the query's plan differs from the checkpoint's".to_string(),
            ));
            // Catching up needs the newer checkpoint's plan too.
            break;
        }
        let parallelism: Vec<usize> = graph.nodes.iter().map(|n| n.parallelism).collect();
        if rec.in_flight_bytes > 0 && rec.parallelism != parallelism {
            // Channel state is addressed to subtasks of the old layout.
            skipped.push((
                rec.epoch,
                "an unaligned checkpoint with in-flight data cannot be restored at another parallelism"
                    .to_string(),
            ));
            continue;
        }
        match storage.load(rec, &input_schema) {
            Ok(state) => {
                return Ok(RestorePlan {
                    restore: Some(Restore {
                        record: rec.clone(),
                        state,
                        catch_up: (rec.epoch != latest.epoch).then(|| latest.clone()),
                    }),
                    next_epoch: latest.epoch + 1,
                    recompute: false,
                    skipped,
                })
            }
            Err(e) => skipped.push((rec.epoch, e.message())),
        }
    }
    Ok(RestorePlan {
        restore: None,
        next_epoch: latest.epoch + 1,
        recompute: true,
        skipped,
    })
}
