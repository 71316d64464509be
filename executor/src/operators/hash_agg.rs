//! Incremental GROUP BY aggregation over a changelog.
//!
//! Each group keeps a row count and one state per aggregate:
//! - retractable aggregates (count, sum, avg) keep a DataFusion accumulator
//!   fed with inserts (`update_batch`) and deletes (`retract_batch`);
//! - min and max keep an ordered multiset of argument values, so a delete of
//!   the current extreme finds the next one;
//! - every other aggregate (count(distinct), string_agg, FILTER'ed or ordered
//!   aggregates, ...) keeps the multiset of its argument rows and recomputes
//!   the value with a fresh DataFusion accumulator when the group changes.
//!
//! After each input chunk, a group whose output row changed emits a delete of
//! the old row and an insert of the new one; a group that became empty emits
//! only the delete. Without GROUP BY there is exactly one group, present even
//! when empty, as in a batch `SELECT count(*) FROM t`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::OwnedRow;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;
use crate::operator::{Operator, OperatorContext, Output};

/// How an aggregate keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Retractable,
    Min,
    Max,
    Recompute,
}

pub struct AggSpec {
    pub func: Arc<AggregateFunctionExpr>,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub kind: AggKind,
    pub arg_types: Vec<DataType>,
}

impl AggSpec {
    /// Picks the state kind for an aggregate from its DataFusion description.
    pub fn new(
        func: Arc<AggregateFunctionExpr>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        input_schema: &SchemaRef,
    ) -> ExecResult<AggSpec> {
        let args = func.expressions();
        let arg_types = args
            .iter()
            .map(|a| a.data_type(input_schema))
            .collect::<Result<Vec<_>, _>>()?;
        let name = func.fun().name().to_ascii_lowercase();
        let plain = !func.is_distinct() && func.order_bys().is_empty();
        let kind = match name.as_str() {
            "count" | "sum" | "avg" | "mean" if plain => {
                let probe = func.create_sliding_accumulator()?;
                if probe.supports_retract_batch() {
                    AggKind::Retractable
                } else {
                    AggKind::Recompute
                }
            }
            "min" if args.len() == 1 => AggKind::Min,
            "max" if args.len() == 1 => AggKind::Max,
            _ => AggKind::Recompute,
        };
        Ok(AggSpec {
            func,
            args,
            filter,
            kind,
            arg_types,
        })
    }
}

enum AccState {
    Retractable(Box<dyn Accumulator>),
    Multiset(BTreeMap<OwnedRow, i64>),
}

struct GroupState {
    key: Vec<ScalarValue>,
    rows: i64,
    accs: Vec<AccState>,
    last: Option<Vec<ScalarValue>>,
}

pub struct HashAggOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_enc: KeyEncoder,
    aggs: Vec<AggSpec>,
    arg_encs: Vec<Option<KeyEncoder>>,
    groups: HashMap<OwnedRow, GroupState>,
    schema: SchemaRef,
    global_key: OwnedRow,
}

impl HashAggOperator {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        aggs: Vec<AggSpec>,
        schema: SchemaRef,
    ) -> ExecResult<Self> {
        let arg_encs = aggs
            .iter()
            .map(|a| match a.kind {
                AggKind::Retractable => Ok(None),
                _ => KeyEncoder::new(&a.arg_types).map(Some),
            })
            .collect::<ExecResult<Vec<_>>>()?;
        Ok(HashAggOperator {
            group_exprs,
            group_enc: KeyEncoder::new(&group_types)?,
            aggs,
            arg_encs,
            groups: HashMap::new(),
            schema,
            global_key: make_global_key()?,
        })
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    fn new_group(&self, key: Vec<ScalarValue>) -> ExecResult<GroupState> {
        let accs = self
            .aggs
            .iter()
            .map(|a| match a.kind {
                AggKind::Retractable => {
                    Ok(AccState::Retractable(a.func.create_sliding_accumulator()?))
                }
                _ => Ok(AccState::Multiset(BTreeMap::new())),
            })
            .collect::<ExecResult<Vec<_>>>()?;
        Ok(GroupState {
            key,
            rows: 0,
            accs,
            last: None,
        })
    }

    fn evaluate(&self, group: &mut GroupState) -> ExecResult<Vec<ScalarValue>> {
        let mut values = group.key.clone();
        for (i, acc) in group.accs.iter_mut().enumerate() {
            let spec = &self.aggs[i];
            let v = match acc {
                AccState::Retractable(acc) => acc.evaluate()?,
                AccState::Multiset(set) => {
                    let enc = self.arg_encs[i]
                        .as_ref()
                        .expect("multiset aggregate has an encoder");
                    match spec.kind {
                        AggKind::Min | AggKind::Max => {
                            let entry = if spec.kind == AggKind::Min {
                                set.iter().next()
                            } else {
                                set.iter().next_back()
                            };
                            match entry {
                                Some((row, _)) => {
                                    let cols = enc.decode_owned([row])?;
                                    ScalarValue::try_from_array(&cols[0], 0)?
                                }
                                None => ScalarValue::try_from(spec.func.field().data_type())?,
                            }
                        }
                        _ => {
                            let mut acc = spec.func.create_accumulator()?;
                            if !set.is_empty() {
                                let rows = set.iter().flat_map(|(r, c)| {
                                    std::iter::repeat_n(r, (*c).max(0) as usize)
                                });
                                let cols = enc.decode_owned(rows)?;
                                acc.update_batch(&cols)?;
                            }
                            acc.evaluate()?
                        }
                    }
                }
            };
            values.push(v);
        }
        Ok(values)
    }

    fn build_chunk(&self, rows: Vec<(Op, Vec<ScalarValue>)>) -> ExecResult<Option<Chunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let ncols = self.schema.fields().len();
        let mut columns = Vec::with_capacity(ncols);
        for c in 0..ncols {
            let arr = ScalarValue::iter_to_array(rows.iter().map(|(_, r)| r[c].clone()))?;
            let want = self.schema.field(c).data_type();
            let arr = if arr.data_type() != want {
                cast(&arr, want)?
            } else {
                arr
            };
            columns.push(arr);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Some(Chunk::new(
            batch,
            rows.into_iter().map(|(o, _)| o).collect(),
        )))
    }
}

fn take_rows(columns: &[ArrayRef], idx: &[u32]) -> ExecResult<Vec<ArrayRef>> {
    let idx = UInt32Array::from(idx.to_vec());
    columns
        .iter()
        .map(|c| take(c.as_ref(), &idx, None).map_err(ExecError::from))
        .collect()
}

impl Operator for HashAggOperator {
    fn open(
        &mut self,
        ctx: &OperatorContext,
        _restored: bool,
        out: &mut Output,
    ) -> ExecResult<()> {
        if self.is_global() && ctx.subtask == 0 {
            let mut group = self.new_group(Vec::new())?;
            let values = self.evaluate(&mut group)?;
            group.last = Some(values.clone());
            self.groups.insert(self.global_key.clone(), group);
            if let Some(chunk) = self.build_chunk(vec![(Op::Insert, values)])? {
                out.push(chunk);
            }
        }
        Ok(())
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        let group_cols = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = if self.is_global() {
            None
        } else {
            Some(self.group_enc.encode(&group_cols)?)
        };
        // Per aggregate: argument columns, filter mask, encoded rows.
        let mut agg_args: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.aggs.len());
        let mut agg_masks: Vec<Option<BooleanArray>> = Vec::with_capacity(self.aggs.len());
        let mut agg_rows = Vec::with_capacity(self.aggs.len());
        for (i, spec) in self.aggs.iter().enumerate() {
            let args = spec
                .args
                .iter()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                .collect::<Result<Vec<_>, _>>()?;
            let mask = match &spec.filter {
                Some(f) => {
                    let m = f.evaluate(batch)?.into_array(n)?;
                    Some(
                        m.as_any()
                            .downcast_ref::<BooleanArray>()
                            .ok_or_else(|| ExecError::internal("aggregate filter is not boolean"))?
                            .clone(),
                    )
                }
                None => None,
            };
            agg_rows.push(match &self.arg_encs[i] {
                Some(enc) => Some(enc.encode(&args)?),
                None => None,
            });
            agg_args.push(args);
            agg_masks.push(mask);
        }

        // Rows by group, in first-touch order.
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut by_group: HashMap<OwnedRow, (Vec<u32>, Vec<u32>)> = HashMap::new();
        for i in 0..n {
            let key = match &keys {
                Some(k) => k.row(i).owned(),
                None => self.global_key.clone(),
            };
            let entry = by_group.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (Vec::new(), Vec::new())
            });
            match chunk.op(i) {
                Op::Insert => entry.0.push(i as u32),
                Op::Delete => entry.1.push(i as u32),
            }
        }

        let mut emitted = Vec::new();
        for key in order {
            let (ins, del) = by_group.remove(&key).expect("touched group");
            if !self.groups.contains_key(&key) {
                let first = ins.first().or(del.first()).copied().unwrap_or(0) as usize;
                let key_values = group_cols
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, first))
                    .collect::<Result<Vec<_>, _>>()?;
                let g = self.new_group(key_values)?;
                self.groups.insert(key.clone(), g);
            }
            let mut group = self.groups.remove(&key).expect("group present");
            group.rows += ins.len() as i64 - del.len() as i64;
            for (a, acc) in group.accs.iter_mut().enumerate() {
                let keep = |idx: &Vec<u32>| -> Vec<u32> {
                    match &agg_masks[a] {
                        None => idx.clone(),
                        Some(m) => idx
                            .iter()
                            .copied()
                            .filter(|i| m.is_valid(*i as usize) && m.value(*i as usize))
                            .collect(),
                    }
                };
                let ins_a = keep(&ins);
                let del_a = keep(&del);
                match acc {
                    AccState::Retractable(acc) => {
                        if !ins_a.is_empty() {
                            acc.update_batch(&take_rows(&agg_args[a], &ins_a)?)?;
                        }
                        if !del_a.is_empty() {
                            acc.retract_batch(&take_rows(&agg_args[a], &del_a)?)?;
                        }
                    }
                    AccState::Multiset(set) => {
                        let rows = agg_rows[a].as_ref().expect("encoded args");
                        let skip_nulls = matches!(self.aggs[a].kind, AggKind::Min | AggKind::Max);
                        let arg0 = &agg_args[a][0];
                        for (idx, sign) in ins_a
                            .iter()
                            .map(|i| (i, 1i64))
                            .chain(del_a.iter().map(|i| (i, -1i64)))
                        {
                            if skip_nulls && arg0.is_null(*idx as usize) {
                                continue;
                            }
                            let r = rows.row(*idx as usize).owned();
                            let c = set.entry(r.clone()).or_insert(0);
                            *c += sign;
                            if *c == 0 {
                                set.remove(&r);
                            }
                        }
                    }
                }
            }
            let alive = group.rows > 0 || self.is_global();
            if alive {
                let values = self.evaluate(&mut group)?;
                if group.last.as_ref() != Some(&values) {
                    if let Some(old) = group.last.take() {
                        emitted.push((Op::Delete, old));
                    }
                    emitted.push((Op::Insert, values.clone()));
                    group.last = Some(values);
                }
                self.groups.insert(key, group);
            } else if let Some(old) = group.last.take() {
                emitted.push((Op::Delete, old));
            }
        }
        if let Some(c) = self.build_chunk(emitted)? {
            out.push(c);
        }
        Ok(())
    }
}

/// The one key of an aggregate without GROUP BY.
fn make_global_key() -> ExecResult<OwnedRow> {
    let enc = KeyEncoder::new(&[DataType::Boolean])?;
    let arr: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
    Ok(enc.encode(&[arr])?.row(0).owned())
}
