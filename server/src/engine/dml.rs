//! Ad hoc queries and writes: SELECT, INSERT, UPDATE, DELETE and COPY,
//! and the casts of their rows to a table's types.

use super::*;

impl Engine {
    pub(super) async fn plan_df(
        &self,
        stmt: DfStatement,
        params: Option<ParamValues>,
    ) -> SqlResult<LogicalPlan> {
        let state = self.ctx.state();
        let plan = state.statement_to_plan(stmt).await?;
        match params {
            Some(p) => Ok(plan.with_param_values(p)?),
            None => Ok(plan),
        }
    }

    pub(super) async fn collect(&self, plan: LogicalPlan) -> SqlResult<RecordBatch> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let batch = concat_batches(&schema, &batches).map_err(weir_executor::ExecError::from)?;
        let shown = display_schema(&schema);
        Ok(RecordBatch::try_new_with_options(
            shown,
            batch.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )
        .map_err(weir_executor::ExecError::from)?)
    }

    pub(super) async fn query(
        &self,
        stmt: DfStatement,
        params: Option<ParamValues>,
    ) -> SqlResult<Output> {
        let plan = self.plan_df(stmt, params).await?;
        if let LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) = &plan {
            return Err(SqlError::unsupported("statement not supported"));
        }
        Ok(Output::Rows(self.collect(plan).await?))
    }

    pub(super) async fn dml(
        &self,
        stmt: DfStatement,
        params: Option<ParamValues>,
    ) -> SqlResult<Output> {
        let plan = self.plan_df(stmt, params).await?;
        let LogicalPlan::Dml(DmlStatement {
            table_name,
            op,
            input,
            ..
        }) = plan
        else {
            return Err(SqlError::internal("expected a DML plan"));
        };
        let table = self.base_table(table_name.table())?;
        // Before the input is read: DELETE FROM a source would read it.
        table.check_writable()?;
        let schema = table.schema();
        match op {
            WriteOp::Insert(_) => {
                let batch = self.collect(without_final_casts(input.as_ref())?).await?;
                let batch = cast_to(&batch, &schema, &table.desc.name)?;
                let n = table.write(Chunk::inserts(batch), WriteCheck::Constraints)?;
                Ok(Output::Insert(n as usize))
            }
            WriteOp::Delete => {
                let batch = self.collect(input.as_ref().clone()).await?;
                let batch = cast_to(&batch, &schema, &table.desc.name)?;
                let n = batch.num_rows();
                table.write(Chunk::deletes(batch), WriteCheck::Constraints)?;
                Ok(Output::Command {
                    tag: "DELETE",
                    rows: Some(n),
                })
            }
            WriteOp::Update => {
                if table.desc.primary_key.is_empty() {
                    return Err(SqlError::unsupported(format!(
                        "UPDATE needs a primary key: table \"{}\" has none",
                        table.desc.name
                    )));
                }
                // Old and new rows side by side: old columns, then the new values.
                let LogicalPlan::Projection(p) = input.as_ref() else {
                    return Err(SqlError::internal("unexpected UPDATE plan"));
                };
                let inner = p.input.clone();
                let mut exprs: Vec<Expr> = inner
                    .schema()
                    .iter()
                    .enumerate()
                    .map(|(i, (q, f))| {
                        Expr::Column(Column::new(q.cloned(), f.name())).alias(format!("__old_{i}"))
                    })
                    .collect();
                let width = exprs.len();
                for (i, e) in p.expr.iter().enumerate() {
                    exprs.push(e.clone().alias(format!("__new_{i}")));
                }
                let plan = LogicalPlanBuilder::from(inner).project(exprs)?.build()?;
                let both = self.collect(plan).await?;
                let n = both.num_rows();
                if n == 0 {
                    return Ok(Output::Command {
                        tag: "UPDATE",
                        rows: Some(0),
                    });
                }
                let old = RecordBatch::try_new(schema.clone(), both.columns()[..width].to_vec())
                    .map_err(weir_executor::ExecError::from)?;
                let new_cols = both.columns()[width..].to_vec();
                let new = cast_to(
                    &RecordBatch::try_new(
                        Arc::new(Schema::new(
                            schema
                                .fields()
                                .iter()
                                .zip(&new_cols)
                                .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
                                .collect::<Vec<_>>(),
                        )),
                        new_cols,
                    )
                    .map_err(weir_executor::ExecError::from)?,
                    &schema,
                    &table.desc.name,
                )?;
                let both_rows =
                    Chunk::concat(&schema, &[Chunk::deletes(old), Chunk::inserts(new)])?;
                table.write(both_rows, WriteCheck::Constraints)?;
                Ok(Output::Command {
                    tag: "UPDATE",
                    rows: Some(n),
                })
            }
            other => Err(SqlError::unsupported(format!("{other} is not supported"))),
        }
    }

    pub(super) fn copy_in(
        &self,
        session: &Mutex<Session>,
        table_name: &ast::ObjectName,
        columns: &[ast::Ident],
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
    ) -> SqlResult<Output> {
        let name = object_name(table_name)?;
        let table = self.base_table(&name)?;
        let schema = table.schema();
        let cols: Vec<usize> = if columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let n = ident_name(c);
                    schema.index_of(&n).map_err(|_| {
                        SqlError::new(
                            SqlState::UNDEFINED_COLUMN,
                            format!("column \"{n}\" of relation \"{name}\" does not exist"),
                        )
                    })
                })
                .collect::<SqlResult<_>>()?
        };
        let mut csv = false;
        let mut delimiter: Option<u8> = None;
        let mut null: Option<String> = None;
        let mut header = false;
        let mut quote = b'"';
        for o in options {
            match o {
                ast::CopyOption::Format(f) => csv = f.value.eq_ignore_ascii_case("csv"),
                ast::CopyOption::Delimiter(c) => delimiter = Some(*c as u8),
                ast::CopyOption::Null(s) => null = Some(s.clone()),
                ast::CopyOption::Header(h) => header = *h,
                ast::CopyOption::Quote(c) => quote = *c as u8,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY option {other} is not supported"
                    )))
                }
            }
        }
        for o in legacy {
            match o {
                ast::CopyLegacyOption::Delimiter(c) => delimiter = Some(*c as u8),
                ast::CopyLegacyOption::Null(s) => null = Some(s.clone()),
                ast::CopyLegacyOption::Csv(_) => csv = true,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY option {other} is not supported"
                    )))
                }
            }
        }
        let format = if csv {
            CopyFormat::Csv {
                delimiter: delimiter.unwrap_or(b','),
                null: null.unwrap_or_default(),
                header,
                quote,
            }
        } else {
            CopyFormat::Text {
                delimiter: delimiter.unwrap_or(b'\t'),
                null: null.unwrap_or_else(|| "\\N".to_string()),
            }
        };
        let ncols = cols.len();
        session.lock().copy = Some(PendingCopy::new(table, cols, format));
        Ok(Output::CopyIn { columns: ncols })
    }

    /// Writes the data of the session's finished COPY; returns the row
    /// count.
    pub async fn finish_copy(&self, session: &Mutex<Session>) -> SqlResult<usize> {
        let copy = session.lock().copy.take();
        let Some(copy) = copy else {
            return Err(SqlError::new(
                SqlState::PROTOCOL_VIOLATION,
                "unexpected COPY data",
            ));
        };
        let batch = copy.input.finish()?;
        let n = copy
            .table
            .write(Chunk::inserts(batch), WriteCheck::Constraints)?;
        self.implicit_flush(session).await;
        Ok(n as usize)
    }

    /// With `implicit_flush` on, a write returns once every streaming
    /// query reflects it. The write itself has succeeded: a query that
    /// fails meanwhile is reported as a warning, not as the write's error.
    pub(super) async fn implicit_flush(&self, session: &Mutex<Session>) {
        if !session.lock().flag(crate::session::IMPLICIT_FLUSH) {
            return;
        }
        if let Err(e) = self.flush().await {
            session.lock().notices.push(e);
        }
    }
}

/// Casts a batch to a table's schema (same column count and order).
pub(super) fn cast_to(
    batch: &RecordBatch,
    schema: &SchemaRef,
    table: &str,
) -> SqlResult<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(SqlError::internal("column count mismatch"));
    }
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else if matches!(
                f.data_type(),
                DataType::Binary
                    | DataType::Timestamp(..)
                    | DataType::Date32
                    | DataType::Decimal128(..)
            ) && matches!(
                c.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) {
                let strings = datafusion::arrow::compute::cast(c, &DataType::Utf8)
                    .map_err(|e| SqlError::internal(e.to_string()))?;
                let strings = strings
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| SqlError::internal("expected text"))?;
                crate::copy::cast_strings(
                    strings.iter().map(|v| v.map(str::to_string)).collect(),
                    f.data_type(),
                    f.name(),
                )
            } else if let (DataType::Decimal128(_, from_s), DataType::Decimal128(p, s)) =
                (c.data_type(), f.data_type())
            {
                rescale_decimal(c, *from_s, *p, *s, f.name())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| {
                    SqlError::new(
                        SqlState::DATATYPE_MISMATCH,
                        format!(
                            "column \"{}\" is of type {} but expression is of type {}: {e}",
                            f.name(),
                            crate::types::sql_type_name(f.data_type()),
                            crate::types::sql_type_name(c.data_type())
                        ),
                    )
                })
            }
        })
        .collect::<SqlResult<Vec<_>>>()?;
    for (c, f) in cols.iter().zip(schema.fields()) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(SqlError::new(
                SqlState::NOT_NULL_VIOLATION,
                format!("null value in column \"{}\" of relation \"{table}\" violates not-null constraint", f.name()),
            ));
        }
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| {
        if e.to_string().contains("non-nullable") {
            SqlError::new(
                SqlState::NOT_NULL_VIOLATION,
                "null value violates not-null constraint",
            )
        } else {
            SqlError::internal(e.to_string())
        }
    })
}

/// Decimal to decimal with PostgreSQL's rounding (half away from zero) and
/// precision check, where Arrow's cast would truncate.
pub(super) fn rescale_decimal(
    c: &ArrayRef,
    from_s: i8,
    p: u8,
    s: i8,
    column: &str,
) -> SqlResult<ArrayRef> {
    use datafusion::arrow::array::{Array, Decimal128Array};
    let arr = c
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .ok_or_else(|| SqlError::internal("expected decimal"))?;
    let limit = 10i128.pow(p as u32);
    let out: Vec<Option<i128>> = arr
        .iter()
        .map(|v| {
            v.map(|v| {
                let diff = s as i32 - from_s as i32;
                let r = if diff >= 0 {
                    v.checked_mul(10i128.pow(diff as u32))
                } else {
                    let d = 10i128.pow((-diff) as u32);
                    let q = v / d;
                    let rem = v % d;
                    Some(if rem.abs() * 2 >= d { q + v.signum() } else { q })
                };
                r.filter(|x| x.abs() < limit).ok_or(())
            })
            .transpose()
        })
        .collect::<Result<_, ()>>()
        .map_err(|_| {
            SqlError::new(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, "numeric field overflow").with_detail(format!(
                "A field with precision {p}, scale {s} must round to an absolute value less than 10^{} (column \"{column}\").",
                p as i32 - s as i32
            ))
        })?;
    let arr = Decimal128Array::from(out)
        .with_precision_and_scale(p, s)
        .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(Arc::new(arr))
}

/// DataFusion's INSERT plan ends with casts to the table's types. Casts to
/// numeric and bytea, and of text to dates and timestamps, are left to
/// [`cast_to`], which rounds decimals, decodes `\x` hex text and reads
/// date-times the way PostgreSQL does.
pub(super) fn without_final_casts(plan: &LogicalPlan) -> SqlResult<LogicalPlan> {
    let LogicalPlan::Projection(p) = plan else {
        return Ok(plan.clone());
    };
    let exprs = p
        .expr
        .iter()
        .map(|e| match e {
            Expr::Alias(a) => match a.expr.as_ref() {
                Expr::Cast(c)
                    if matches!(
                        c.field.data_type(),
                        DataType::Decimal128(..) | DataType::Binary
                    ) || (matches!(
                        c.field.data_type(),
                        DataType::Timestamp(..) | DataType::Date32
                    ) && datafusion::logical_expr::ExprSchemable::get_type(
                        c.expr.as_ref(),
                        p.input.schema(),
                    )
                    .is_ok_and(|t| {
                        matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
                    })) =>
                {
                    Expr::Alias(datafusion::logical_expr::expr::Alias {
                        expr: c.expr.clone(),
                        relation: a.relation.clone(),
                        name: a.name.clone(),
                        metadata: a.metadata.clone(),
                    })
                }
                _ => e.clone(),
            },
            _ => e.clone(),
        })
        .collect();
    Ok(LogicalPlan::Projection(
        datafusion::logical_expr::Projection::try_new(exprs, p.input.clone())?,
    ))
}

/// The schema with the names clients see (repeated names unmarked).
pub(super) fn display_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| f.name().contains(crate::naming::REPEAT_MARK))
    {
        return schema.clone();
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_name(crate::naming::display_name(f.name()))
            })
            .collect::<Vec<_>>(),
    ))
}
