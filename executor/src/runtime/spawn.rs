//! Starting subtasks: wires the channels between them and spawns one task
//! per subtask, restoring state and source offsets from a checkpoint. Used
//! for a whole query, and for one failover region when only that region
//! restarts (a region's subtasks only talk to each other, so its channels
//! can be rebuilt without touching the rest).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::channel;
use super::checkpointer::SourceCommand;
use super::connector_source_task::SourceResume;
use super::coordinator::{Coordinator, FailureSite, SubtaskId};
use super::router::{EdgeOut, OutputRouter};
use super::sink::SinkStaging;
use super::source_split::{rescaled_offsets, SourceSplit};
use super::{
    connector_source_task, source_task, spawn_guarded, task, InputChannel, NoOp,
    CHANNEL_CAPACITY_MESSAGES,
};
use crate::checkpoint::{CheckpointRecord, CheckpointStorage, LoadedState, StateBackendKind};
use crate::connectors::SplitPositions;
use crate::error::{ExecError, ExecResult};
use crate::graph::{Node, NodeKind, StreamGraph};
use crate::keys::subtask_for_key_group;
use crate::operator::OperatorContext;
use crate::state::{RestoreFrom, StatePlan};
use crate::table::Table;

/// What to start.
pub(crate) struct SpawnPlan<'a> {
    pub name: &'a Arc<str>,
    pub graph: &'a StreamGraph,
    pub coordinator: &'a Arc<Coordinator>,
    /// Staging of each sink node.
    pub staging: &'a HashMap<usize, Arc<SinkStaging>>,
    /// Which subtasks to start.
    pub members: &'a dyn Fn(SubtaskId) -> bool,
    /// The checkpoint to resume from, and its state.
    pub restore: Option<(&'a CheckpointRecord, LoadedState)>,
    /// After a fallback: sources replay up to this newer checkpoint first.
    pub catch_up: Option<&'a CheckpointRecord>,
    /// How stateful subtasks keep their state.
    pub state: &'a StateSettings,
}

/// The state backend of a run.
pub(crate) struct StateSettings {
    pub backend: StateBackendKind,
    pub cache_keys: usize,
    pub storage: Arc<CheckpointStorage>,
    /// Table sources: idle after this long without new rows.
    pub source_idle_timeout: Option<std::time::Duration>,
}

/// What was started.
#[derive(Default)]
pub(crate) struct Spawned {
    pub handles: Vec<(SubtaskId, JoinHandle<()>)>,
    /// (node, subtask, command channel) of each source subtask.
    pub sources: Vec<(usize, usize, mpsc::Sender<SourceCommand>)>,
    pub source_tables: Vec<(usize, usize, Arc<Table>)>,
}

/// Where subtask `subtask` of connector source `node` resumes from
/// `record`: after the positions of the splits, merged over the subtasks
/// that reported them, at any parallelism; from a record written before
/// positions were kept per split, after the rows the subtask had emitted,
/// at the same parallelism only (0A000 otherwise).
fn connector_resume(
    node: &Node,
    table: &Table,
    record: &CheckpointRecord,
    subtask: usize,
) -> ExecResult<SourceResume> {
    let offsets: Vec<_> = record
        .sources
        .iter()
        .filter(|s| s.node == node.id)
        .collect();
    let old = record.parallelism.get(node.id).copied();
    let rescaled = old.is_some_and(|p| p != node.parallelism);
    let connector = table.connector();
    let refused = || {
        crate::graph::connector_rescale_error(
            connector.map_or("connector", |c| c.name()),
            &node.name,
        )
    };
    if !offsets.is_empty() && offsets.iter().all(|s| s.splits.is_some()) {
        if rescaled && !connector.is_some_and(|c| c.can_rescale()) {
            return Err(refused());
        }
        let mut merged = SplitPositions::new();
        for (id, position) in offsets.iter().flat_map(|s| s.splits.iter().flatten()) {
            let p = merged.entry(*id).or_insert(0);
            *p = (*p).max(*position);
        }
        return Ok(SourceResume::Splits(Arc::new(merged)));
    }
    if rescaled {
        return Err(refused());
    }
    Ok(
        match offsets
            .iter()
            .find(|s| s.subtask == subtask)
            .map(|s| s.offset)
        {
            Some(rows) if rows > 0 => SourceResume::Legacy(rows),
            _ => SourceResume::Start,
        },
    )
}

/// Where a source subtask resumes: (offset, floors after a rescale).
type Resume = (u64, Option<Vec<u64>>);

/// Where each source subtask resumes.
fn source_offsets(
    graph: &StreamGraph,
    record: &CheckpointRecord,
) -> ExecResult<HashMap<SubtaskId, Resume>> {
    let mut out = HashMap::new();
    for node in &graph.nodes {
        // Connector sources resume at their own offsets (no key-group rescale).
        if !matches!(&node.kind, NodeKind::TableSource(t) if t.connector().is_none()) {
            continue;
        }
        let old = record
            .parallelism
            .get(node.id)
            .copied()
            .unwrap_or(node.parallelism);
        let mut old_offsets = vec![None; old];
        for s in record.sources.iter().filter(|s| s.node == node.id) {
            if let Some(slot) = old_offsets.get_mut(s.subtask) {
                *slot = Some(s.offset);
            }
        }
        let old_offsets: Vec<u64> =
            old_offsets
                .into_iter()
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ExecError::internal(format!(
                        "checkpoint {} has no offset for every subtask of source {}",
                        record.epoch, node.name
                    ))
                })?;
        for (subtask, resume) in rescaled_offsets(&old_offsets, node.parallelism)
            .into_iter()
            .enumerate()
        {
            out.insert((node.id, subtask), resume);
        }
    }
    Ok(out)
}

// Subtask indices address the channel tables of two nodes at once.
#[allow(clippy::needless_range_loop)]
pub(crate) fn spawn_subtasks(plan: SpawnPlan<'_>) -> ExecResult<Spawned> {
    let graph = plan.graph;
    let members = plan.members;
    // Channels: one per (edge, upstream subtask, downstream subtask).
    let mut inputs: Vec<Vec<Vec<InputChannel>>> = graph
        .nodes
        .iter()
        .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
        .collect();
    let mut outputs: Vec<Vec<Vec<EdgeOut>>> = graph
        .nodes
        .iter()
        .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
        .collect();
    for edge in &graph.edges {
        let up = &graph.nodes[edge.from];
        let down = &graph.nodes[edge.to];
        if edge.partitioning.is_forward() && up.parallelism != down.parallelism {
            return Err(ExecError::internal(format!(
                "forward edge between {} (parallelism {}) and {} (parallelism {})",
                up.name, up.parallelism, down.name, down.parallelism
            )));
        }
        for u in 0..up.parallelism {
            if !members((edge.from, u)) {
                continue;
            }
            let mut senders = Vec::new();
            for d in 0..down.parallelism {
                if edge.partitioning.is_forward() && u != d {
                    continue;
                }
                if !members((edge.to, d)) {
                    return Err(ExecError::internal(format!(
                        "edge from {} #{u} leaves the subtasks being started",
                        up.name
                    )));
                }
                let (tx, rx) = channel::channel(CHANNEL_CAPACITY_MESSAGES);
                senders.push((tx, (edge.to, d, edge.input)));
                inputs[edge.to][d].push((edge.input, rx));
            }
            outputs[edge.from][u].push(EdgeOut::new(
                edge.partitioning.clone(),
                senders,
                &up.schema,
                down.parallelism,
            )?);
        }
    }

    let (record, mut state) = match plan.restore {
        Some((r, s)) => (Some(r), s),
        None => (None, LoadedState::default()),
    };
    let offsets = match record {
        Some(r) => source_offsets(graph, r)?,
        None => HashMap::new(),
    };
    let mut out = Spawned::default();
    for node in &graph.nodes {
        let node_inputs = std::mem::take(&mut inputs[node.id]);
        let node_outputs = std::mem::take(&mut outputs[node.id]);
        let node_entries = state.entries.remove(&node.id).unwrap_or_default();
        for (subtask, (ins, outs)) in node_inputs.into_iter().zip(node_outputs).enumerate() {
            if !members((node.id, subtask)) {
                continue;
            }
            let ctx = OperatorContext {
                query: plan.name.clone(),
                operator: Arc::from(node.name.as_str()),
                subtask,
                parallelism: node.parallelism,
                state: None,
                restored_epoch: record.map(|r| r.epoch),
                reemit: record.is_some_and(|r| r.reemit.contains(&node.id)),
            };
            let ids = task::TaskIds {
                node: node.id,
                subtask,
            };
            let metrics = plan.coordinator.new_metrics((node.id, subtask));
            let router = OutputRouter::new(outs).with_metrics(metrics);
            let coord = plan.coordinator.clone();
            let site = FailureSite {
                node: node.id,
                operator: ctx.operator.clone(),
                subtask,
            };
            let handle = match &node.kind {
                NodeKind::TableSource(table) if table.connector().is_some() => {
                    let (btx, brx) = mpsc::channel(16);
                    out.sources.push((node.id, subtask, btx));
                    out.source_tables.push((node.id, subtask, table.clone()));
                    let resume = match record {
                        Some(r) => connector_resume(node, table, r, subtask)?,
                        None => SourceResume::Start,
                    };
                    let catch_up = plan
                        .catch_up
                        .map(|r| connector_resume(node, table, r, subtask))
                        .transpose()?;
                    let (table, par, c2) = (table.clone(), node.parallelism, coord.clone());
                    let cols = node.read_columns.clone();
                    spawn_guarded(coord, site, async move {
                        connector_source_task::run(
                            ids, table, cols, par, resume, catch_up, router, brx, c2,
                        )
                        .await
                    })
                }
                NodeKind::TableSource(table) => {
                    let (btx, brx) = mpsc::channel(16);
                    out.sources.push((node.id, subtask, btx));
                    out.source_tables.push((node.id, subtask, table.clone()));
                    let table = table.clone();
                    let (offset, floors) = match offsets.get(&(node.id, subtask)) {
                        Some((o, f)) => (Some(*o), f.clone()),
                        None if record.is_some() => {
                            return Err(ExecError::internal(format!(
                                "checkpoint has no offset for source {}",
                                node.name
                            )))
                        }
                        None => (None, None),
                    };
                    let split = SourceSplit::new(&table, subtask, node.parallelism, floors)?;
                    let hold_at = plan.catch_up.and_then(|r| {
                        r.sources
                            .iter()
                            .find(|s| s.node == node.id && s.subtask == subtask)
                            .map(|s| s.offset)
                    });
                    let c2 = coord.clone();
                    let idle_after = plan.state.source_idle_timeout;
                    spawn_guarded(coord, site, async move {
                        source_task::run(
                            ids, table, offset, hold_at, split, router, brx, c2, idle_after,
                        )
                        .await
                    })
                }
                NodeKind::Operator(_) | NodeKind::ResultSink(_) => {
                    let op: Box<dyn crate::operator::Operator> = match &node.kind {
                        NodeKind::Operator(factory) => factory.create(subtask, node.parallelism)?,
                        _ => Box::new(NoOp),
                    };
                    // Debug builds check the operator's contract on every call.
                    #[cfg(debug_assertions)]
                    let op = super::checked_operator::CheckedOperator::wrap(op, node, subtask);
                    let restore = record.is_some().then(|| task::TaskRestore {
                        channels: state
                            .channels
                            .remove(&(node.id, subtask))
                            .unwrap_or_default(),
                    });
                    let settings = plan.state;
                    let state_plan = op.uses_keyed_state().then(|| StatePlan {
                        work_root: settings.storage.work_root(),
                        node: node.id,
                        subtask,
                        parallelism: node.parallelism,
                        backend: settings.backend,
                        cache_keys: settings.cache_keys,
                        from: record.map(|r| RestoreFrom {
                            chk_dir: settings.storage.dir_of(r),
                            backend: r.backend,
                            stores: r
                                .stores
                                .iter()
                                .filter(|(n, _)| *n == node.id)
                                .map(|(_, s)| *s)
                                .collect(),
                            old_parallelism: r
                                .parallelism
                                .get(node.id)
                                .copied()
                                .unwrap_or(node.parallelism),
                            entries: node_entries
                                .iter()
                                .filter(|e| {
                                    subtask_for_key_group(e.key_group as usize, node.parallelism)
                                        == subtask
                                })
                                .cloned()
                                .collect(),
                        }),
                    });
                    let c2 = coord.clone();
                    let sink = plan.staging.get(&node.id).cloned();
                    spawn_guarded(coord, site, async move {
                        task::run(ctx, ids, op, ins, router, sink, restore, state_plan, c2).await
                    })
                }
            };
            out.handles.push(((node.id, subtask), handle));
        }
    }
    Ok(out)
}
