//! `pg_catalog` as clients read it. datafusion-pg-catalog provides the
//! schema: PostgreSQL's static tables (`pg_type`, `pg_proc`, ...), its
//! functions and its query rewrites. The tables that describe relations —
//! `pg_namespace`, `pg_class`, `pg_attribute`, `pg_constraint`, `pg_index` —
//! are computed here from Weir's own catalog instead, so that
//!
//! - materialized views and streaming query results are relkind `m`, tables
//!   `r` (DataFusion's `TableType` has no materialized view, and the crate
//!   shows every view as `v`);
//! - a table's primary key is a `p` constraint with its index (the crate's
//!   rows are a copy of PostgreSQL's own system constraints);
//! - `numeric(p,s)` columns carry their type modifier, and column types
//!   are the ones the wire protocol reports;
//! - oids are stable: a Weir relation's derives from its catalog id.
//!
//! [`register_functions`] replaces `pg_table_is_visible` by one that
//! follows PostgreSQL's search path (`pg_catalog`, then `public`) and adds
//! functions that client catalog queries call; [`rewrite`] adapts
//! constructs of those queries that DataFusion lacks.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Weak};
use weir_executor::SqlState;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self as sql, visit_expressions_mut, FunctionArg, FunctionArgExpr, FunctionArguments, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use weir_executor::table::Table;

use super::Relations;

/// Oids below this are PostgreSQL's own objects (`FirstNormalObjectId`).
const FIRST_USER_OID: u64 = 16384;
/// `pg_catalog`'s oid in every PostgreSQL cluster; the static rows
/// (`pg_type.typnamespace`, ...) refer to it.
const PG_CATALOG_NAMESPACE_OID: i32 = 11;
/// `public`'s oid in every PostgreSQL cluster.
const PUBLIC_NAMESPACE_OID: i32 = 2200;
/// The other schemas (`information_schema`, `system`) and then their
/// relations and those of `pg_catalog` are numbered from here, in name
/// order. There are a few hundred; they stay below [`FIRST_USER_OID`].
const BUILTIN_OID_BASE: i32 = 12000;

/// The oids of a Weir relation (catalog id `id`): the relation itself, and
/// for a table with a primary key its index and its constraint.
fn relation_oid(id: u64, offset: u64) -> i32 {
    // Oids are unsigned 32-bit in PostgreSQL and shown as int4 here; ids
    // beyond 2^30 would wrap.
    (FIRST_USER_OID + 4 * id + offset) as u32 as i32
}
const INDEX_OFFSET: u64 = 1;
const CONSTRAINT_OFFSET: u64 = 2;

/// A relation as `pg_class` lists it.
struct Relation {
    oid: i32,
    namespace: i32,
    schema: String,
    name: String,
    /// The Weir table behind a relation of `public`.
    table: Option<Arc<Table>>,
}

/// Every schema and relation of the catalog, with its oid.
struct Listing {
    namespaces: Vec<(i32, String)>,
    relations: Vec<Relation>,
}

fn listing(catalog: &dyn CatalogProvider, relations: &Relations) -> Listing {
    let mut names = catalog.schema_names();
    names.sort();
    let mut namespaces = Vec::new();
    let mut builtin = BUILTIN_OID_BASE;
    for name in &names {
        let oid = match name.as_str() {
            "pg_catalog" => PG_CATALOG_NAMESPACE_OID,
            "public" => PUBLIC_NAMESPACE_OID,
            _ => {
                builtin += 1;
                builtin
            }
        };
        namespaces.push((oid, name.clone()));
    }
    let mut out = Vec::new();
    for (namespace, schema) in &namespaces {
        if schema == "public" {
            for (name, table) in relations.read().iter() {
                out.push(Relation {
                    oid: relation_oid(table.desc.id, 0),
                    namespace: *namespace,
                    schema: schema.clone(),
                    name: name.clone(),
                    table: Some(table.clone()),
                });
            }
            continue;
        }
        let Some(provider) = catalog.schema(schema) else {
            continue;
        };
        let mut tables = provider.table_names();
        tables.sort();
        for name in tables {
            builtin += 1;
            out.push(Relation {
                oid: builtin,
                namespace: *namespace,
                schema: schema.clone(),
                name,
                table: None,
            });
        }
    }
    debug_assert!((builtin as u64) < FIRST_USER_OID);
    Listing {
        namespaces,
        relations: out,
    }
}

fn is_catalog_relation(name: &str) -> bool {
    PG_CATALOG_TABLES.contains(&name)
}

/// Whether an unqualified `name` finds the relation: PostgreSQL searches
/// `pg_catalog` first, then `public`.
fn is_visible(relation: &Relation) -> bool {
    match relation.schema.as_str() {
        "pg_catalog" => true,
        "public" => !is_catalog_relation(&relation.name),
        _ => false,
    }
}

/// Whether `sql` names a `pg_catalog` relation (such a statement goes
/// through datafusion-pg-catalog's parser, which qualifies it). Only
/// statements that contain `pg_` are tokenized.
pub fn names_catalog_relation(sql: &str) -> bool {
    if !sql.to_ascii_lowercase().contains("pg_") {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    tokens.iter().any(|t| match t {
        Token::Word(w) if w.quote_style.is_none() => {
            is_catalog_relation(&w.value.to_ascii_lowercase())
        }
        Token::Word(w) => is_catalog_relation(&w.value),
        _ => false,
    })
}

/// Replaces the crate's `pg_catalog` schema in `ctx`'s catalog `weir` by
/// one with Weir's relation tables, and registers the functions of
/// [`register_functions`]. Call after `setup_pg_catalog`.
pub fn install(ctx: &SessionContext, relations: Relations) -> Result<()> {
    let catalog = ctx
        .catalog("weir")
        .ok_or_else(|| DataFusionError::Internal("catalog weir missing".into()))?;
    let inner = catalog
        .schema("pg_catalog")
        .ok_or_else(|| DataFusionError::Internal("pg_catalog not set up".into()))?;
    let source = Arc::new(Source {
        catalog: Arc::downgrade(&catalog),
        relations,
    });
    catalog.register_schema(
        "pg_catalog",
        Arc::new(PgCatalogSchema {
            inner,
            source: source.clone(),
        }),
    )?;
    register_functions(ctx, source);
    Ok(())
}

/// What the relation tables are computed from.
struct Source {
    /// Weak: the catalog holds this schema.
    catalog: Weak<dyn CatalogProvider>,
    relations: Relations,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pg_catalog source")
    }
}

impl Source {
    fn catalog(&self) -> Result<Arc<dyn CatalogProvider>> {
        self.catalog
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("catalog weir dropped".into()))
    }

    fn listing(&self) -> Result<Listing> {
        Ok(listing(self.catalog()?.as_ref(), &self.relations))
    }

    /// A relation's columns and relkind.
    async fn describe(&self, relation: &Relation) -> Result<Option<(SchemaRef, &'static str)>> {
        if let Some(table) = &relation.table {
            let kind = if table.is_result() { "m" } else { "r" };
            return Ok(Some((table.schema(), kind)));
        }
        let Some(schema) = self.catalog()?.schema(&relation.schema) else {
            return Ok(None);
        };
        Ok(schema.table(&relation.name).await?.map(|t| {
            let kind = match t.table_type() {
                TableType::View => "v",
                TableType::Base | TableType::Temporary => "r",
            };
            (t.schema(), kind)
        }))
    }
}

/// `pg_catalog`: the crate's tables, with the relation tables replaced.
#[derive(Debug)]
struct PgCatalogSchema {
    inner: Arc<dyn SchemaProvider>,
    source: Arc<Source>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Namespace,
    Class,
    Attribute,
    Constraint,
    Index,
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(inner) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "pg_namespace" => Kind::Namespace,
            "pg_class" => Kind::Class,
            "pg_attribute" => Kind::Attribute,
            "pg_constraint" => Kind::Constraint,
            "pg_index" => Kind::Index,
            _ => return Ok(Some(inner)),
        };
        Ok(Some(Arc::new(RelationTable {
            kind,
            schema: weir_schema(kind, inner.schema()),
            table_type: inner.table_type(),
            source: self.source.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// One of the relation tables, computed when a query reads it.
#[derive(Debug)]
struct RelationTable {
    kind: Kind,
    /// The crate's schema of the table (column names, types and the oid
    /// metadata its rewrites use).
    schema: SchemaRef,
    table_type: TableType,
    source: Arc<Source>,
}

#[async_trait]
impl TableProvider for RelationTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.table_type
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut rows = Rows::new(self.schema.clone());
        let listing = self.source.listing()?;
        match self.kind {
            Kind::Namespace => {
                for (oid, name) in &listing.namespaces {
                    rows.push(&[
                        ("oid", V::Int(*oid as i64)),
                        ("nspname", V::text(name)),
                        ("nspowner", V::Int(10)),
                    ]);
                }
            }
            Kind::Class => {
                for rel in &listing.relations {
                    let Some((schema, kind)) = self.source.describe(rel).await? else {
                        continue;
                    };
                    rows.push(&[
                        ("oid", V::Int(rel.oid as i64)),
                        ("relname", V::text(&rel.name)),
                        ("relnamespace", V::Int(rel.namespace as i64)),
                        ("relowner", V::Int(10)),
                        ("relfilenode", V::Int(rel.oid as i64)),
                        ("relpages", V::Int(1)),
                        ("relhasindex", V::Bool(has_primary_key(rel))),
                        ("relpersistence", V::text("p")),
                        ("relkind", V::text(kind)),
                        ("relnatts", V::Int(schema.fields().len() as i64)),
                        ("relispopulated", V::Bool(true)),
                        ("relreplident", V::text("d")),
                    ]);
                }
            }
            Kind::Attribute => {
                for rel in &listing.relations {
                    let Some((schema, _)) = self.source.describe(rel).await? else {
                        continue;
                    };
                    for (i, field) in schema.fields().iter().enumerate() {
                        let t = ColumnType::of(field.data_type());
                        rows.push(&[
                            ("attrelid", V::Int(rel.oid as i64)),
                            ("attname", V::text(field.name())),
                            ("atttypid", V::Int(t.oid as i64)),
                            ("attstattarget", V::Int(-1)),
                            ("attlen", V::Int(t.len as i64)),
                            ("attnum", V::Int(i as i64 + 1)),
                            ("attcacheoff", V::Int(-1)),
                            ("atttypmod", V::Int(t.typmod as i64)),
                            ("attbyval", V::Bool(t.len > 0)),
                            ("attalign", V::text(t.align)),
                            ("attstorage", V::text(if t.len > 0 { "p" } else { "x" })),
                            ("attnotnull", V::Bool(!field.is_nullable())),
                            ("attislocal", V::Bool(true)),
                        ]);
                    }
                }
            }
            Kind::Constraint => {
                for rel in &listing.relations {
                    let Some(table) = rel.table.as_ref().filter(|_| has_primary_key(rel)) else {
                        continue;
                    };
                    rows.push(&[
                        (
                            "oid",
                            V::Int(relation_oid(table.desc.id, CONSTRAINT_OFFSET) as i64),
                        ),
                        ("conname", V::Text(format!("{}_pkey", rel.name))),
                        ("connamespace", V::Int(rel.namespace as i64)),
                        ("contype", V::text("p")),
                        ("convalidated", V::Bool(true)),
                        ("conrelid", V::Int(rel.oid as i64)),
                        (
                            "conindid",
                            V::Int(relation_oid(table.desc.id, INDEX_OFFSET) as i64),
                        ),
                        ("confupdtype", V::text(" ")),
                        ("confdeltype", V::text(" ")),
                        ("confmatchtype", V::text(" ")),
                        ("conislocal", V::Bool(true)),
                        ("connoinherit", V::Bool(true)),
                        ("conkey", V::Ints(key_attnums(table))),
                    ]);
                }
            }
            Kind::Index => {
                for rel in &listing.relations {
                    let Some(table) = rel.table.as_ref().filter(|_| has_primary_key(rel)) else {
                        continue;
                    };
                    let key = key_attnums(table);
                    let n = key.len() as i64;
                    rows.push(&[
                        (
                            "indexrelid",
                            V::Int(relation_oid(table.desc.id, INDEX_OFFSET) as i64),
                        ),
                        ("indrelid", V::Int(rel.oid as i64)),
                        ("indnatts", V::Int(n)),
                        ("indnkeyatts", V::Int(n)),
                        ("indisunique", V::Bool(true)),
                        ("indisprimary", V::Bool(true)),
                        ("indimmediate", V::Bool(true)),
                        ("indisvalid", V::Bool(true)),
                        ("indisready", V::Bool(true)),
                        ("indislive", V::Bool(true)),
                        ("indkey", V::Ints(key.clone())),
                        ("indcollation", V::Ints(vec![0; key.len()])),
                        ("indclass", V::Ints(vec![0; key.len()])),
                        ("indoption", V::Ints(vec![0; key.len()])),
                    ]);
                }
            }
        }
        let batch = rows.finish()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// The crate's schema of a relation table, amended: `pg_index` and
/// `pg_constraint` hold their `int2vector`, `oidvector` and array columns
/// as text there, arrays here, which clients unnest (SQLAlchemy reads key
/// columns so); `pg_class` gains PostgreSQL's `relacl` and `reloptions`
/// (always NULL), which SQLAlchemy's table options read.
fn weir_schema(kind: Kind, schema: SchemaRef) -> SchemaRef {
    let array = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
    let array_type = |name: &str| match name {
        "indkey" | "indoption" | "conkey" | "confkey" | "confdelsetcols" => {
            Some(array(DataType::Int16))
        }
        "indcollation" | "indclass" | "conpfeqop" | "conppeqop" | "conffeqop" | "conexclop" => {
            Some(array(DataType::Int32))
        }
        _ => None,
    };
    let added: Vec<Field> = match kind {
        Kind::Class => ["relacl", "reloptions"]
            .into_iter()
            .filter(|name| schema.field_with_name(name).is_err())
            .map(|name| Field::new(name, array(DataType::Utf8), true))
            .collect(),
        _ => Vec::new(),
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match array_type(f.name()) {
            Some(t) => Field::new(f.name(), t, f.is_nullable()),
            None => f.as_ref().clone(),
        })
        .chain(added)
        .collect();
    Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

fn has_primary_key(rel: &Relation) -> bool {
    rel.table
        .as_ref()
        .is_some_and(|t| !t.desc.primary_key.is_empty())
}

/// A table's primary key columns as attribute numbers (from 1).
fn key_attnums(table: &Table) -> Vec<i64> {
    table
        .desc
        .primary_key
        .iter()
        .map(|&i| i as i64 + 1)
        .collect()
}

/// A column's type as `pg_attribute` shows it: the type the wire
/// protocol reports for it, and `numeric`'s precision and scale.
struct ColumnType {
    oid: u32,
    len: i16,
    align: &'static str,
    typmod: i32,
}

impl ColumnType {
    fn of(data_type: &DataType) -> ColumnType {
        let t = crate::pg::encode::pg_type(data_type);
        let (len, align) = match t.oid() {
            16 => (1, "c"),                            // bool
            21 => (2, "s"),                            // int2
            23 | 700 | 1082 => (4, "i"),               // int4, float4, date
            20 | 701 | 1083 | 1114 | 1184 => (8, "d"), // int8, float8, time, timestamp(tz)
            1186 => (16, "d"),                         // interval
            _ => (-1, "i"),
        };
        let typmod = match data_type {
            DataType::Decimal32(p, s)
            | DataType::Decimal64(p, s)
            | DataType::Decimal128(p, s)
            | DataType::Decimal256(p, s) => ((*p as i32) << 16 | (*s as i32 & 0xffff)) + 4,
            _ => -1,
        };
        ColumnType {
            oid: t.oid(),
            len,
            align,
            typmod,
        }
    }
}

/// A value for one column of a row.
enum V {
    Int(i64),
    Bool(bool),
    Text(String),
    Ints(Vec<i64>),
}

impl V {
    fn text(s: &str) -> V {
        V::Text(s.to_string())
    }

    fn to_scalar(&self, field: &Field) -> Result<ScalarValue> {
        let value = match self {
            V::Int(v) => ScalarValue::Int64(Some(*v)),
            V::Bool(v) => ScalarValue::Boolean(Some(*v)),
            V::Text(v) => ScalarValue::Utf8(Some(v.clone())),
            V::Ints(v) => {
                let values: ArrayRef = Arc::new(Int64Array::from(v.clone()));
                ScalarValue::List(Arc::new(
                    datafusion::common::utils::SingleRowListArrayBuilder::new(values)
                        .build_list_array(),
                ))
            }
        };
        value.cast_to(field.data_type())
    }
}

/// The value of a column a row does not set: NULL where allowed, else
/// zero, false, '' or an empty array.
fn default_value(field: &Field) -> Result<ScalarValue> {
    let t = field.data_type();
    if field.is_nullable() {
        return ScalarValue::try_from(t);
    }
    match t {
        DataType::Boolean => Ok(ScalarValue::Boolean(Some(false))),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => V::text("").to_scalar(field),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            V::Ints(Vec::new()).to_scalar(field)
        }
        _ => ScalarValue::new_zero(t),
    }
}

/// Rows of a table with a given schema, each set by column name.
struct Rows {
    schema: SchemaRef,
    columns: Vec<Vec<ScalarValue>>,
    error: Option<DataFusionError>,
}

impl Rows {
    fn new(schema: SchemaRef) -> Rows {
        let columns = vec![Vec::new(); schema.fields().len()];
        Rows {
            schema,
            columns,
            error: None,
        }
    }

    fn push(&mut self, values: &[(&str, V)]) {
        for (i, field) in self.schema.fields().iter().enumerate() {
            let value = match values.iter().find(|(name, _)| name == field.name()) {
                Some((_, v)) => v.to_scalar(field),
                None => default_value(field),
            };
            match value {
                Ok(v) => self.columns[i].push(v),
                Err(e) => {
                    self.error.get_or_insert(e);
                    return;
                }
            }
        }
    }

    fn finish(self) -> Result<RecordBatch> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let arrays = self
            .columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(cells, field)| {
                if cells.is_empty() {
                    Ok(datafusion::arrow::array::new_empty_array(field.data_type()))
                } else {
                    ScalarValue::iter_to_array(cells)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema, arrays)?)
    }
}

/// Functions whose answer depends on Weir's catalog.
fn register_functions(ctx: &SessionContext, source: Arc<Source>) {
    // pg_table_is_visible(oid): whether the relation is found by its
    // unqualified name (the crate's says true for every oid).
    let lookup = source.clone();
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "pg_table_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let listing = lookup.listing()?;
            let visible: BTreeMap<i32, bool> = listing
                .relations
                .iter()
                .map(|r| (r.oid, is_visible(r)))
                .collect();
            let args = ColumnarValue::values_to_arrays(args)?;
            let oids = datafusion::common::cast::as_int32_array(&args[0])?;
            let out: BooleanArray = oids
                .iter()
                .map(|o| o.map(|o| visible.get(&o).copied().unwrap_or(false)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    // Weir has no sequences, no collations but the default one.
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    ));
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "pg_collation_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    ));
    ctx.register_udf(ScalarUDF::new_from_impl(PgGetIndexdef {
        signature: Signature::variadic_any(Volatility::Stable),
        source,
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting {
        signature: Signature::variadic_any(Volatility::Stable),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Stable),
    }));
}

/// `pg_get_indexdef(index [, column, pretty])`: the CREATE INDEX of a
/// primary key's index, or with a column number (from 1) that column's
/// name; NULL for another oid. (Weir's only indexes are primary keys.)
#[derive(Debug)]
struct PgGetIndexdef {
    signature: Signature,
    source: Arc<Source>,
}

impl PartialEq for PgGetIndexdef {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for PgGetIndexdef {}
impl std::hash::Hash for PgGetIndexdef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "pg_get_indexdef".hash(state);
    }
}

impl ScalarUDFImpl for PgGetIndexdef {
    fn name(&self) -> &str {
        "pg_get_indexdef"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [a] | [a, _, _] if a.is_integer() => Ok(DataType::Utf8),
            _ => Err(DataFusionError::Plan(
                "function pg_get_indexdef takes (oid) or (oid, integer, boolean)".into(),
            )),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let int64 = |a: &ArrayRef| -> Result<Int64Array> {
            let cast = datafusion::arrow::compute::cast(a, &DataType::Int64)?;
            Ok(datafusion::common::cast::as_int64_array(&cast)?.clone())
        };
        let oids = int64(&arrays[0])?;
        let columns = arrays.get(1).map(int64).transpose()?;
        let listing = self.source.listing()?;
        let indexes: BTreeMap<i32, (&Relation, &Arc<Table>)> = listing
            .relations
            .iter()
            .filter_map(|r| Some((r, r.table.as_ref().filter(|_| has_primary_key(r))?)))
            .map(|(r, t)| (relation_oid(t.desc.id, INDEX_OFFSET), (r, t)))
            .collect();
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let found = (!oids.is_null(row))
                .then(|| indexes.get(&(oids.value(row) as i32)))
                .flatten();
            let Some((rel, table)) = found else {
                out.append_null();
                continue;
            };
            let schema = table.schema();
            let names: Vec<&str> = table
                .desc
                .primary_key
                .iter()
                .map(|&i| schema.field(i).name().as_str())
                .collect();
            let column = columns.as_ref().map(|c| c.value(row)).unwrap_or(0);
            if column == 0 {
                out.append_value(format!(
                    "CREATE UNIQUE INDEX {}_pkey ON {}.{} USING btree ({})",
                    rel.name,
                    rel.schema,
                    rel.name,
                    names.join(", ")
                ));
            } else {
                match usize::try_from(column - 1).ok().and_then(|i| names.get(i)) {
                    Some(name) => out.append_value(name),
                    None => out.append_null(),
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `current_setting(name [, missing_ok])`: a parameter's value as a new
/// session has it (a value changed with SET in this session is not seen:
/// functions do not know the session), and PostgreSQL's default for
/// `default_table_access_method`, which SQLAlchemy compares with. An
/// unknown name is an error (42704), or NULL with `missing_ok`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [_] | [_, DataType::Boolean] => Ok(DataType::Utf8),
            _ => Err(DataFusionError::Plan(
                "function current_setting takes (text) or (text, boolean)".into(),
            )),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let names = datafusion::common::cast::as_string_array(&names)?;
        let missing_ok = match arrays.get(1) {
            Some(a) => Some(datafusion::common::cast::as_boolean_array(a)?.clone()),
            None => None,
        };
        let mut vars = crate::session::Session::default().vars;
        vars.insert("default_table_access_method".into(), "heap".into());
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            if names.is_null(row) {
                out.append_null();
                continue;
            }
            let name = names.value(row).to_ascii_lowercase();
            let name = crate::session::canonical_name(&name);
            match vars.get(name) {
                Some(v) => out.append_value(v),
                None if missing_ok.as_ref().is_some_and(|m| m.value(row)) => out.append_null(),
                None => {
                    return Err(DataFusionError::External(Box::new(
                        weir_executor::ExecError::user(
                            SqlState::UNDEFINED_OBJECT,
                            format!("unrecognized configuration parameter \"{name}\""),
                        ),
                    )))
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `json_build_object(k1, v1, ...)`: a JSON object (as text) of the pairs,
/// keys as text, numbers and booleans as JSON's, NULL as null, other values
/// as their text. SQLAlchemy's column reflection calls it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !arg_types.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object: argument list must have even number of elements".into(),
            ));
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(DataFusionError::Execution(
                        "json_build_object: null value not allowed for object key".into(),
                    ));
                }
                let value = json_value(ScalarValue::try_from_array(&pair[1], row)?);
                object.insert(key.to_string(), value);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn json_value(value: ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        v if v.is_null() => J::Null,
        ScalarValue::Boolean(Some(b)) => J::Bool(b),
        ScalarValue::Int8(Some(v)) => J::from(v),
        ScalarValue::Int16(Some(v)) => J::from(v),
        ScalarValue::Int32(Some(v)) => J::from(v),
        ScalarValue::Int64(Some(v)) => J::from(v),
        ScalarValue::UInt8(Some(v)) => J::from(v),
        ScalarValue::UInt16(Some(v)) => J::from(v),
        ScalarValue::UInt32(Some(v)) => J::from(v),
        ScalarValue::UInt64(Some(v)) => J::from(v),
        ScalarValue::Float32(Some(v)) => J::from(v),
        ScalarValue::Float64(Some(v)) => J::from(v),
        other => J::String(other.to_string()),
    }
}

/// Rewrites of a statement read by datafusion-pg-catalog's parser, for
/// what DataFusion lacks:
/// - `generate_subscripts(a, 1)` (a set-returning function; SQLAlchemy
///   reads primary keys with it beside `unnest(a)`) becomes
///   `unnest(generate_series(1, array_length(a, 1)))`, which DataFusion
///   unnests in step with the other;
/// - `to_regtype(name)` (psycopg looks types up with it) becomes
///   `(SELECT oid FROM pg_catalog.pg_type WHERE typname = name)`, the
///   rewrite the crate applies to `name::regtype`.
pub fn rewrite(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let Some(new) = rewrite_call(expr) {
            *expr = new;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

fn rewrite_call(expr: &sql::Expr) -> Option<sql::Expr> {
    if let sql::Expr::Subquery(query) = expr {
        if reads_only_empty_table(query) {
            return Some(sql::Expr::Value(sql::Value::Null.into()));
        }
        return aggregate_scalar_subquery(query);
    }
    if let sql::Expr::Case { conditions, .. } = expr {
        return drop_case_condition_from_subquery(expr, conditions);
    }
    if let sql::Expr::Like {
        escape_char: Some(escape),
        ..
    }
    | sql::Expr::ILike {
        escape_char: Some(escape),
        ..
    } = expr
    {
        return backslash_escape(expr, escape);
    }
    let sql::Expr::Function(f) = expr else {
        return None;
    };
    let name = f.name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let args: Vec<&sql::Expr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match (name.as_str(), args.as_slice()) {
        ("generate_subscripts", [array, dim]) => parse_expr(&format!(
            "unnest(generate_series(1, CAST(array_length({array}, {dim}) AS BIGINT)))"
        )),
        ("to_regtype", [name]) => parse_expr(&format!(
            "(SELECT oid FROM pg_catalog.pg_type WHERE typname = {name})"
        )),
        _ => None,
    }
}

/// Whether a scalar subquery reads one catalog table that Weir never has
/// rows in (no sequences, no column defaults) and aggregates nothing: its
/// value is NULL. SQLAlchemy reads identity options so, with an outer
/// column inside an aggregate once rewritten, which DataFusion cannot plan.
fn reads_only_empty_table(query: &sql::Query) -> bool {
    const EMPTY: &[&str] = &["pg_sequence", "pg_attrdef"];
    let sql::SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let [from] = select.from.as_slice() else {
        return false;
    };
    let sql::TableFactor::Table { name, .. } = &from.relation else {
        return false;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect();
    let empty = match parts.as_slice() {
        [schema, table] => schema == "pg_catalog" && EMPTY.contains(&table.as_str()),
        _ => false,
    };
    let [item] = select.projection.as_slice() else {
        return false;
    };
    let (sql::SelectItem::UnnamedExpr(e) | sql::SelectItem::ExprWithAlias { expr: e, .. }) = item
    else {
        return false;
    };
    empty
        && from.joins.is_empty()
        && matches!(&select.group_by, sql::GroupByExpr::Expressions(g, _) if g.is_empty())
        && !has_aggregate(e)
}

/// A scalar subquery `(SELECT e FROM ...)` becomes `(SELECT max(e) FROM
/// ...)`: DataFusion plans a correlated scalar subquery only when it is
/// aggregated (SQLAlchemy's column reflection reads a column's default,
/// type and collation so). The catalog lookups these queries make find
/// at most one row, where the two agree; PostgreSQL would refuse more.
fn aggregate_scalar_subquery(query: &sql::Query) -> Option<sql::Expr> {
    let sql::SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [item] = select.projection.as_slice() else {
        return None;
    };
    let (sql::SelectItem::UnnamedExpr(e) | sql::SelectItem::ExprWithAlias { expr: e, .. }) = item
    else {
        return None;
    };
    let grouped = !matches!(&select.group_by, sql::GroupByExpr::Expressions(g, _) if g.is_empty());
    if grouped || select.having.is_some() || select.distinct.is_some() || has_aggregate(e) {
        return None;
    }
    let aggregated = parse_expr(&format!("max({e})"))?;
    let mut query = Box::new(query.clone());
    if let sql::SetExpr::Select(select) = query.body.as_mut() {
        select.projection[0] = match &select.projection[0] {
            sql::SelectItem::ExprWithAlias { alias, .. } => sql::SelectItem::ExprWithAlias {
                expr: aggregated,
                alias: alias.clone(),
            },
            _ => sql::SelectItem::UnnamedExpr(aggregated),
        };
    }
    Some(sql::Expr::Subquery(query))
}

/// `CASE WHEN c THEN (SELECT ... WHERE c AND p) ...`: within its branch
/// `c` holds, so the subquery's `c` is dropped. DataFusion cannot plan the
/// correlated subquery with it (a filter on the outer row alone, under a
/// CASE); SQLAlchemy's column reflection writes `c` in both places.
fn drop_case_condition_from_subquery(
    expr: &sql::Expr,
    conditions: &[sql::CaseWhen],
) -> Option<sql::Expr> {
    let found = conditions.iter().any(|w| {
        matches!(&w.result, sql::Expr::Subquery(q)
            if matches!(q.body.as_ref(), sql::SetExpr::Select(s)
                if s.selection.as_ref().is_some_and(|f| conjuncts(f).contains(&&w.condition))))
    });
    if !found {
        return None;
    }
    let mut expr = expr.clone();
    if let sql::Expr::Case { conditions, .. } = &mut expr {
        for w in conditions.iter_mut() {
            let sql::Expr::Subquery(q) = &mut w.result else {
                continue;
            };
            let sql::SetExpr::Select(select) = q.body.as_mut() else {
                continue;
            };
            let Some(filter) = &select.selection else {
                continue;
            };
            let rest: Vec<sql::Expr> = conjuncts(filter)
                .into_iter()
                .filter(|c| **c != w.condition)
                .cloned()
                .collect();
            select.selection = rest.into_iter().reduce(|a, b| sql::Expr::BinaryOp {
                left: Box::new(a),
                op: sql::BinaryOperator::And,
                right: Box::new(b),
            });
        }
    }
    Some(expr)
}

/// The operands of a chain of ANDs.
fn conjuncts(e: &sql::Expr) -> Vec<&sql::Expr> {
    match e {
        sql::Expr::BinaryOp {
            left,
            op: sql::BinaryOperator::And,
            right,
        } => {
            let mut out = conjuncts(left);
            out.extend(conjuncts(right));
            out
        }
        sql::Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// Whether `e` calls an aggregate function (outside subqueries too; a
/// false positive only leaves the subquery as it was).
fn has_aggregate(e: &sql::Expr) -> bool {
    const AGGREGATES: &[&str] = &[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "json_agg",
        "jsonb_agg",
    ];
    let mut found = false;
    let _ = sql::visit_expressions(e, |e| {
        if let sql::Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            let name = name.rsplit('.').next().unwrap_or_default();
            found |= AGGREGATES.contains(&name);
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// `x LIKE p ESCAPE 'c'` with another escape character than backslash
/// (DataFusion's only one; SQLAlchemy's `startswith(autoescape=True)`
/// uses `/`): the pattern is rewritten to backslash escapes — its own
/// backslashes doubled, `c` followed by a character becomes backslash
/// and that character.
fn backslash_escape(expr: &sql::Expr, escape: &sql::ValueWithSpan) -> Option<sql::Expr> {
    let sql::Value::SingleQuotedString(c) = &escape.value else {
        return None;
    };
    let mut chars = c.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return None;
    };
    if c == '\\' {
        return None;
    }
    let regex = regex::escape(&c.to_string()).replace('\'', "''");
    let mut expr = expr.clone();
    if let sql::Expr::Like {
        pattern,
        escape_char,
        ..
    }
    | sql::Expr::ILike {
        pattern,
        escape_char,
        ..
    } = &mut expr
    {
        **pattern = parse_expr(&format!(
            "regexp_replace(replace({pattern}, '\\', '\\\\'), '{regex}(.)', '\\${{1}}', 'g')"
        ))?;
        *escape_char = None;
    }
    Some(expr)
}

fn parse_expr(text: &str) -> Option<sql::Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .ok()?
        .parse_expr()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_catalog_relation_finds_words_only() {
        assert!(names_catalog_relation("SELECT typname FROM pg_type t"));
        assert!(names_catalog_relation("select * from PG_CLASS"));
        assert!(!names_catalog_relation("SELECT 'pg_type' AS s"));
        assert!(!names_catalog_relation("SELECT * FROM pg_types_of_mine"));
        assert!(!names_catalog_relation("SELECT * FROM orders"));
    }

    #[test]
    fn rewrite_generate_subscripts_and_to_regtype() {
        let parse = |s: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, s)
                .unwrap()
                .remove(0)
        };
        let got = rewrite(parse(
            "SELECT unnest(k), generate_subscripts(k, 1) FROM t WHERE o = to_regtype($1)",
        ));
        assert_eq!(
            got.to_string(),
            "SELECT unnest(k), unnest(generate_series(1, CAST(array_length(k, 1) AS BIGINT))) \
             FROM t WHERE o = (SELECT oid FROM pg_catalog.pg_type WHERE typname = $1)"
        );
    }

    #[test]
    fn rewrite_scalar_subquery() {
        let parse = |s: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, s)
                .unwrap()
                .remove(0)
        };
        let got = rewrite(parse(
            "SELECT CASE WHEN a.x THEN (SELECT d.e AS v FROM d WHERE d.k = a.k) END, \
             (SELECT count(*) FROM d) FROM a",
        ));
        assert_eq!(
            got.to_string(),
            "SELECT CASE WHEN a.x THEN (SELECT max(d.e) AS v FROM d WHERE d.k = a.k) END, \
             (SELECT count(*) FROM d) FROM a"
        );
        let got = rewrite(parse(
            "SELECT (SELECT json_build_object('a', a.x) FROM pg_catalog.pg_sequence s \
             WHERE s.seqrelid = a.k), (SELECT count(*) FROM pg_catalog.pg_sequence) FROM a",
        ));
        assert_eq!(
            got.to_string(),
            "SELECT NULL, (SELECT count(*) FROM pg_catalog.pg_sequence) FROM a"
        );
        let got = rewrite(parse(
            "SELECT CASE WHEN a.x <> '' THEN (SELECT d.e FROM d WHERE a.x <> '' AND d.k = a.k) \
             ELSE NULL END FROM a",
        ));
        assert_eq!(
            got.to_string(),
            "SELECT CASE WHEN a.x <> '' THEN (SELECT max(d.e) FROM d WHERE d.k = a.k) \
             ELSE NULL END FROM a"
        );
    }

    #[test]
    fn rewrite_like_escape() {
        let parse = |s: &str| {
            Parser::parse_sql(&PostgreSqlDialect {}, s)
                .unwrap()
                .remove(0)
        };
        let got = rewrite(parse("SELECT n NOT LIKE $1 || '%' ESCAPE '/' FROM t"));
        assert_eq!(
            got.to_string(),
            "SELECT n NOT LIKE regexp_replace(replace($1 || '%', '\\', '\\\\'), '/(.)', '\\${1}', 'g') FROM t"
        );
        let unchanged = "SELECT n LIKE 'a\\_%' ESCAPE '\\' FROM t";
        assert_eq!(rewrite(parse(unchanged)).to_string(), unchanged);
    }

    #[test]
    fn numeric_typmod() {
        let t = ColumnType::of(&DataType::Decimal128(10, 2));
        assert_eq!((t.oid, t.typmod), (1700, (10 << 16 | 2) + 4));
        let t = ColumnType::of(&DataType::Int32);
        assert_eq!((t.oid, t.len, t.typmod), (23, 4, -1));
    }
}
