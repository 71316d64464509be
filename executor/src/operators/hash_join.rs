//! Incremental equi-join over two changelogs (inner, left/right/full outer,
//! semi and anti).
//!
//! Each side keeps its rows by join key, with a multiplicity and the number
//! of matching rows on the other side. A change on one side is matched
//! against the other side's state; outer, semi and anti joins use the match
//! counts to emit or retract the null-padded (or the semi/anti) rows exactly
//! when a row's matches go from zero to non-zero or back.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::OwnedRow;
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;
use crate::operator::{Operator, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    LeftSemi,
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    /// Whether unmatched rows of `side` (0 left, 1 right) appear null-padded.
    fn preserves(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinKind::Left, 0) | (JoinKind::Right, 1) | (JoinKind::Full, _)
        )
    }

    /// For semi/anti joins: the side whose rows are output, and whether anti.
    fn semi_side(self) -> Option<(usize, bool)> {
        match self {
            JoinKind::LeftSemi => Some((0, false)),
            JoinKind::LeftAnti => Some((0, true)),
            JoinKind::RightSemi => Some((1, false)),
            JoinKind::RightAnti => Some((1, true)),
            _ => None,
        }
    }
}

struct Entry {
    row: OwnedRow,
    count: i64,
    matches: i64,
}

struct Side {
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    key_enc: KeyEncoder,
    row_enc: KeyEncoder,
    null_row: OwnedRow,
    rows: HashMap<OwnedRow, Vec<Entry>>,
}

impl Side {
    fn new(
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        schema: &SchemaRef,
    ) -> ExecResult<Side> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let row_enc = KeyEncoder::new(&types)?;
        let nulls: Vec<ArrayRef> = types.iter().map(|t| new_null_array(t, 1)).collect();
        let null_row = row_enc.encode(&nulls)?.row(0).owned();
        Ok(Side {
            key_exprs,
            key_enc: KeyEncoder::new(&key_types)?,
            row_enc,
            null_row,
            rows: HashMap::new(),
        })
    }
}

/// One output row: (op, left part, right part); `None` parts are absent
/// (semi/anti output) — null padding uses the side's null row.
type OutRow = (Op, Option<OwnedRow>, Option<OwnedRow>);

pub struct HashJoinOperator {
    kind: JoinKind,
    sides: [Side; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left ++ right schema, which the filter is evaluated against.
    joined_schema: SchemaRef,
    output_schema: SchemaRef,
    null_equals_null: bool,
}

impl HashJoinOperator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        left_schema: &SchemaRef,
        right_schema: &SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        joined_schema: SchemaRef,
        output_schema: SchemaRef,
        null_equals_null: bool,
    ) -> ExecResult<Self> {
        Ok(HashJoinOperator {
            kind,
            sides: [
                Side::new(left_keys, key_types.clone(), left_schema)?,
                Side::new(right_keys, key_types, right_schema)?,
            ],
            filter,
            joined_schema,
            output_schema,
            null_equals_null,
        })
    }

    fn joined_batch(&self, pairs: &[(OwnedRow, OwnedRow)]) -> ExecResult<RecordBatch> {
        let mut cols = self.sides[0]
            .row_enc
            .decode_owned(pairs.iter().map(|p| &p.0))?;
        cols.extend(
            self.sides[1]
                .row_enc
                .decode_owned(pairs.iter().map(|p| &p.1))?,
        );
        Ok(RecordBatch::try_new_with_options(
            self.joined_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(pairs.len())),
        )?)
    }

    fn build_output(&self, rows: Vec<OutRow>) -> ExecResult<Option<Chunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for side in 0..2 {
            let present = rows.iter().any(|r| {
                if side == 0 {
                    r.1.is_some()
                } else {
                    r.2.is_some()
                }
            });
            if !present {
                continue;
            }
            let s = &self.sides[side];
            cols.extend(s.row_enc.decode_owned(rows.iter().map(|r| {
                let part = if side == 0 { &r.1 } else { &r.2 };
                part.as_ref().unwrap_or(&s.null_row)
            }))?);
        }
        let batch = RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(Some(Chunk::new(
            batch,
            rows.into_iter().map(|r| r.0).collect(),
        )))
    }
}

fn repeat_push(out: &mut Vec<OutRow>, times: i64, row: OutRow) {
    for _ in 1..times.max(0) {
        out.push(row.clone());
    }
    if times > 0 {
        out.push(row);
    }
}

impl Operator for HashJoinOperator {
    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let s = input;
        let o = 1 - input;
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        let key_cols = self.sides[s]
            .key_exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = self.sides[s].key_enc.encode(&key_cols)?;
        let rows = self.sides[s].row_enc.encode(batch.columns())?;
        let key_has_null: Vec<bool> = (0..n)
            .map(|i| key_cols.iter().any(|c| c.is_null(i)))
            .collect();

        // Phase 1: candidate matches, with the residual filter applied.
        let mut candidates: Vec<Vec<usize>> = Vec::with_capacity(n);
        let mut pairs: Vec<(OwnedRow, OwnedRow)> = Vec::new();
        let mut pair_owner: Vec<(usize, usize)> = Vec::new();
        for (i, &null_key) in key_has_null.iter().enumerate() {
            let mut c = Vec::new();
            if self.null_equals_null || !null_key {
                if let Some(bucket) = self.sides[o].rows.get(&keys.row(i).owned()) {
                    for (j, e) in bucket.iter().enumerate() {
                        if self.filter.is_some() {
                            let me = rows.row(i).owned();
                            let pair = if s == 0 {
                                (me, e.row.clone())
                            } else {
                                (e.row.clone(), me)
                            };
                            pairs.push(pair);
                            pair_owner.push((i, j));
                        } else {
                            c.push(j);
                        }
                    }
                }
            }
            candidates.push(c);
        }
        if let Some(filter) = &self.filter {
            if !pairs.is_empty() {
                let jb = self.joined_batch(&pairs)?;
                let mask = filter.evaluate(&jb)?.into_array(jb.num_rows())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| ExecError::internal("join filter is not boolean"))?;
                for (p, (i, j)) in pair_owner.iter().enumerate() {
                    if mask.is_valid(p) && mask.value(p) {
                        candidates[*i].push(*j);
                    }
                }
            }
        }

        // Phase 2: emit and update state, row by row.
        let kind = self.kind;
        let mut emitted: Vec<OutRow> = Vec::new();
        for (i, matched) in candidates.iter().enumerate().take(n) {
            let op = chunk.op(i);
            let sign = op.sign();
            let me = rows.row(i).owned();
            let key = keys.row(i).owned();
            let mut total = 0i64;
            if let Some(bucket) = self.sides[o].rows.get_mut(&key) {
                for &j in matched {
                    let e = &mut bucket[j];
                    total += e.count;
                    let pair = |mine: Option<OwnedRow>,
                                theirs: Option<OwnedRow>|
                     -> (Option<OwnedRow>, Option<OwnedRow>) {
                        if s == 0 {
                            (mine, theirs)
                        } else {
                            (theirs, mine)
                        }
                    };
                    if kind.semi_side().is_none() {
                        let (l, r) = pair(Some(me.clone()), Some(e.row.clone()));
                        repeat_push(&mut emitted, e.count, (op, l, r));
                    }
                    let before = e.matches;
                    e.matches += sign;
                    let after = e.matches;
                    let flipped_on = before == 0 && after > 0;
                    let flipped_off = before > 0 && after == 0;
                    if kind.preserves(o) && (flipped_on || flipped_off) {
                        let (l, r) = pair(None, Some(e.row.clone()));
                        let padded_op = if flipped_on { Op::Delete } else { Op::Insert };
                        repeat_push(&mut emitted, e.count, (padded_op, l, r));
                    }
                    if let Some((side, anti)) = kind.semi_side() {
                        if side == o && (flipped_on || flipped_off) {
                            let semi_op = if flipped_on != anti {
                                Op::Insert
                            } else {
                                Op::Delete
                            };
                            let (l, r) = pair(None, Some(e.row.clone()));
                            repeat_push(&mut emitted, e.count, (semi_op, l, r));
                        }
                    }
                }
            }
            if kind.preserves(s) && total == 0 {
                let (l, r) = if s == 0 {
                    (Some(me.clone()), None)
                } else {
                    (None, Some(me.clone()))
                };
                emitted.push((op, l, r));
            }
            if let Some((side, anti)) = kind.semi_side() {
                if side == s && ((total > 0) != anti) {
                    let (l, r) = if s == 0 {
                        (Some(me.clone()), None)
                    } else {
                        (None, Some(me.clone()))
                    };
                    emitted.push((op, l, r));
                }
            }
            // Own state.
            let bucket = self.sides[s].rows.entry(key.clone()).or_default();
            match bucket.iter().position(|e| e.row == me) {
                Some(p) => {
                    bucket[p].count += sign;
                    if bucket[p].count == 0 {
                        bucket.swap_remove(p);
                    }
                }
                None if sign > 0 => bucket.push(Entry {
                    row: me,
                    count: 1,
                    matches: total,
                }),
                None => {
                    return Err(ExecError::internal(
                        "join: delete of a row that was never inserted",
                    ));
                }
            }
            if bucket.is_empty() {
                self.sides[s].rows.remove(&key);
            }
        }
        // Null padding for semi/anti output must not contain the other side.
        if kind.semi_side().is_some() {
            let keep = kind.semi_side().map(|(side, _)| side).unwrap_or(0);
            for r in emitted.iter_mut() {
                if keep == 0 {
                    r.2 = None;
                } else {
                    r.1 = None;
                }
            }
        } else {
            // Outer padding: make the absent part explicit nulls.
            for r in emitted.iter_mut() {
                if r.1.is_none() {
                    r.1 = Some(self.sides[0].null_row.clone());
                }
                if r.2.is_none() {
                    r.2 = Some(self.sides[1].null_row.clone());
                }
            }
        }
        if let Some(c) = self.build_output(emitted)? {
            out.push(c);
        }
        Ok(())
    }
}
