//! Prepared point lookups by primary key, the statement OLTP drivers and
//! `pgbench -M prepared` send most: `SELECT cols FROM t WHERE pk = $1`.
//!
//! The first execution of a statement's text plans it with DataFusion and
//! remembers whether it has that shape (a projection of plain columns over
//! a filter `pk = $n` on a stored table whose primary key is that one
//! column). Later executions read the one key from RocksDB and project
//! it, without planning again. Anything else — another shape, a parameter
//! of another type than the key, a table dropped or created again since —
//! takes the general path, which gives the same rows.

use std::collections::HashMap;

use datafusion::common::ParamValues;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{BinaryExpr, Operator};

use super::*;
use crate::providers::LiveTableProvider;

/// At most this many statement texts are remembered.
const CACHE_ENTRIES: usize = 1024;

pub(super) struct PointLookup {
    table: Arc<Table>,
    /// Index of the parameter holding the key.
    param: usize,
    /// Table columns, in output order.
    columns: Vec<usize>,
    schema: SchemaRef,
}

/// Statement text → its lookup (`None`: not one).
#[derive(Default)]
pub(super) struct PointLookups(Mutex<HashMap<String, Option<Arc<PointLookup>>>>);

fn placeholder_index(e: &Expr) -> Option<usize> {
    match e {
        Expr::Placeholder(p) => {
            p.id.strip_prefix('$')?
                .parse::<usize>()
                .ok()?
                .checked_sub(1)
        }
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

impl Engine {
    /// The rows of a prepared point lookup (`None`: the statement is not
    /// one, or these parameters need the general path).
    pub(super) async fn point_lookup(
        &self,
        sql: &str,
        params: &ParamValues,
    ) -> SqlResult<Option<Output>> {
        let cached = self.point_lookups.0.lock().get(sql).cloned();
        let lookup = match cached {
            Some(l) => l,
            None => {
                let l = self.recognize_point_lookup(sql).await.map(Arc::new);
                let mut cache = self.point_lookups.0.lock();
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(sql.to_string(), l.clone());
                l
            }
        };
        let Some(l) = lookup else {
            return Ok(None);
        };
        let current = self
            .relations
            .read()
            .get(&l.table.desc.name)
            .is_some_and(|t| Arc::ptr_eq(t, &l.table));
        if !current {
            self.point_lookups.0.lock().remove(sql);
            return Ok(None);
        }
        let ParamValues::List(list) = params else {
            return Ok(None);
        };
        let Some(value) = list.get(l.param).map(|p| &p.value) else {
            return Ok(None);
        };
        let key_type = l
            .table
            .desc
            .schema
            .field(l.table.primary_key()[0])
            .data_type();
        if value.data_type() != *key_type {
            return Ok(None);
        }
        let rows = if value.is_null() {
            RecordBatch::new_empty(l.table.schema())
        } else {
            let key = l.table.leading_key_prefix(&value.to_array()?)?;
            l.table.lookup(&[key])?
        };
        let columns = l.columns.iter().map(|i| rows.column(*i).clone()).collect();
        let batch = RecordBatch::try_new_with_options(
            l.schema.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(rows.num_rows())),
        )
        .map_err(weir_executor::ExecError::from)?;
        Ok(Some(Output::Rows(batch)))
    }

    async fn recognize_point_lookup(&self, sql: &str) -> Option<PointLookup> {
        let stmt = self.parse_rewritten(sql).ok()?;
        match &stmt {
            DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)) => {}
            _ => return None,
        }
        let plan = self.ctx.state().statement_to_plan(stmt).await.ok()?;
        let LogicalPlan::Projection(projection) = &plan else {
            return None;
        };
        let LogicalPlan::Filter(filter) = projection.input.as_ref() else {
            return None;
        };
        let LogicalPlan::TableScan(scan) = filter.input.as_ref() else {
            return None;
        };
        if !scan.filters.is_empty() || scan.fetch.is_some() {
            return None;
        }
        let provider = source_as_provider(&scan.source).ok()?;
        let table = provider
            .as_ref()
            .downcast_ref::<LiveTableProvider>()?
            .table()
            .clone();
        if table.connector().is_some() || table.primary_key().len() != 1 {
            return None;
        }
        crate::providers::key_ranges::key_type(&table)?;
        let pk_name = table
            .desc
            .schema
            .field(table.primary_key()[0])
            .name()
            .clone();
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = &filter.predicate
        else {
            return None;
        };
        let param = match (column_name(left), column_name(right)) {
            (Some(c), None) if c == pk_name => placeholder_index(right)?,
            (None, Some(c)) if c == pk_name => placeholder_index(left)?,
            _ => return None,
        };
        let columns = projection
            .expr
            .iter()
            .map(|e| table.desc.schema.index_of(column_name(e)?).ok())
            .collect::<Option<Vec<_>>>()?;
        let schema = dml::display_schema(&Arc::new(plan.schema().as_arrow().clone()));
        let types_match = columns
            .iter()
            .zip(schema.fields())
            .all(|(i, f)| table.desc.schema.field(*i).data_type() == f.data_type());
        types_match.then_some(PointLookup {
            table,
            param,
            columns,
            schema,
        })
    }
}
