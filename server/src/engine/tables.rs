//! Tables and sources: CREATE TABLE / SOURCE (columns, keys, watermark,
//! connector options) and DROP TABLE.

use super::*;

impl Engine {
    pub(super) async fn create_table(
        &self,
        ct: &ast::CreateTable,
        watermark: Option<crate::event_time::WatermarkSpec>,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let name = object_name(&ct.name)?;
        if self.exists(&name) {
            if ct.if_not_exists {
                return Ok(Output::Command {
                    tag: "CREATE TABLE",
                    rows: None,
                });
            }
            return Err(SqlError::new(
                SqlState::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        if ct.query.is_some() {
            return Err(SqlError::unsupported(
                "CREATE TABLE ... AS is not supported",
            ));
        }
        let mut columns: Vec<ColumnMeta> = Vec::new();
        let mut primary_key: Vec<usize> = Vec::new();
        for (i, col) in ct.columns.iter().enumerate() {
            let cname = ident_name(&col.name);
            if columns.iter().any(|c| c.name == cname) {
                return Err(SqlError::new(
                    SqlState::DUPLICATE_COLUMN,
                    format!("column \"{cname}\" specified more than once"),
                ));
            }
            let sql_type = col.data_type.to_string();
            let t = arrow_type(&sql_type)?;
            let mut nullable = true;
            for opt in &col.options {
                match &opt.option {
                    ColumnOption::NotNull => nullable = false,
                    ColumnOption::Null => {}
                    ColumnOption::PrimaryKey(_) => {
                        nullable = false;
                        primary_key.push(i);
                    }
                    ColumnOption::Unique(_) => {
                        return Err(SqlError::unsupported(
                            "UNIQUE constraints are not supported; use PRIMARY KEY",
                        ))
                    }
                    other => {
                        return Err(SqlError::unsupported(format!(
                            "column option {other} is not supported"
                        )))
                    }
                }
            }
            columns.push(ColumnMeta {
                name: cname,
                sql_type: crate::types::sql_type_name(&t),
                nullable,
            });
        }
        if columns.is_empty() {
            return Err(SqlError::unsupported(
                "tables without columns are not supported",
            ));
        }
        for c in &ct.constraints {
            match c {
                TableConstraint::PrimaryKey(pk) => {
                    if !primary_key.is_empty() {
                        return Err(SqlError::new(
                            SqlState::INVALID_TABLE_DEFINITION,
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    for col in &pk.columns {
                        let cname = col.column.expr.to_string();
                        let cname = cname.trim_matches('"').to_lowercase();
                        let Some(idx) = columns.iter().position(|c| c.name == cname) else {
                            return Err(SqlError::new(
                                SqlState::UNDEFINED_COLUMN,
                                format!("column \"{cname}\" named in key does not exist"),
                            ));
                        };
                        columns[idx].nullable = false;
                        primary_key.push(idx);
                    }
                }
                other => {
                    return Err(SqlError::unsupported(format!(
                        "table constraint {other} is not supported"
                    )))
                }
            }
        }
        if primary_key.len() > 1
            && ct
                .columns
                .iter()
                .filter(|c| {
                    c.options
                        .iter()
                        .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
                })
                .count()
                > 1
        {
            return Err(SqlError::new(
                SqlState::INVALID_TABLE_DEFINITION,
                format!("multiple primary keys for table \"{name}\" are not allowed"),
            ));
        }
        if let Some(w) = &watermark {
            let Some(col) = columns.iter().find(|c| c.name == w.column) else {
                return Err(SqlError::new(
                    SqlState::UNDEFINED_COLUMN,
                    format!(
                        "column \"{}\" named in WATERMARK FOR does not exist",
                        w.column
                    ),
                ));
            };
            if !matches!(arrow_type(&col.sql_type)?, DataType::Timestamp(..)) {
                return Err(SqlError::new(
                    SqlState::DATATYPE_MISMATCH,
                    format!(
                        "WATERMARK FOR column \"{}\" must be a timestamp, not {}",
                        w.column, col.sql_type
                    ),
                ));
            }
        }
        let connector = connector_options(&ct.table_options)?;
        if connector.is_some() && !primary_key.is_empty() {
            return Err(SqlError::unsupported(
                "a source (a table with a connector) cannot have a primary key",
            ));
        }
        let meta = TableMeta {
            id: 0,
            name: name.clone(),
            columns,
            primary_key,
            watermark,
            connector,
        };
        let schema = meta.schema()?;
        let watermark_expr = self.watermark_expr(&meta)?;
        let connector = meta
            .connector
            .as_ref()
            .map(|o| source_connector(o, &schema))
            .transpose()?;
        let id = self.allocate_id()?;
        let meta = TableMeta { id, ..meta };
        let desc = TableDesc {
            id,
            name: name.clone(),
            schema,
            primary_key: meta.primary_key.clone(),
            watermark: watermark_expr,
        };
        let table = match connector {
            Some(connector) => Table::new_source(desc, connector)?,
            None => Table::open_durable(desc, self.store.clone())?,
        };
        self.store.put_catalog(
            &table_key(&name),
            serde_json::to_string(&meta).expect("json").as_bytes(),
        )?;
        self.relations.write().insert(name.clone(), table.clone());
        self.state.lock().tables.insert(name, (meta, table));
        Ok(Output::Command {
            tag: "CREATE TABLE",
            rows: None,
        })
    }

    pub(super) fn base_table(&self, name: &str) -> SqlResult<Arc<Table>> {
        let st = self.state.lock();
        if let Some((_, t)) = st.tables.get(name) {
            return Ok(t.clone());
        }
        if st.queries.contains_key(name) {
            return Err(SqlError::new(
                SqlState::WRONG_OBJECT_TYPE,
                format!("cannot change \"{name}\": it is the result of a streaming query"),
            )
            .with_hint("Results are maintained by their query; change its input tables instead."));
        }
        Err(SqlError::undefined_table(name))
    }

    /// `DROP TABLE a, b, ...`: every name is checked before any is dropped.
    pub(super) async fn drop_table(&self, names: &[String], if_exists: bool) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let mut dropping = Vec::new();
        for name in names {
            let entry = self.state.lock().tables.get(name).map(|(m, _)| m.clone());
            let Some(meta) = entry else {
                if self.state.lock().queries.contains_key(name) {
                    return Err(SqlError::new(
                        SqlState::WRONG_OBJECT_TYPE,
                        format!("\"{name}\" is not a table"),
                    )
                    .with_hint("Use DROP MATERIALIZED VIEW or DROP STREAMING QUERY."));
                }
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(
                    SqlState::UNDEFINED_TABLE,
                    format!("table \"{name}\" does not exist"),
                ));
            };
            self.refuse_if_depended(name, "table", &[])?;
            if !dropping.iter().any(|m: &TableMeta| &m.name == name) {
                dropping.push(meta);
            }
        }
        for meta in dropping {
            let name = &meta.name;
            self.store.delete_catalog(&table_key(name))?;
            self.store.drop_log(meta.id)?;
            self.relations.write().remove(name);
            self.state.lock().tables.remove(name);
        }
        Ok(Output::Command {
            tag: "DROP TABLE",
            rows: None,
        })
    }
}

/// `WITH (connector = ..., ...)` of a CREATE TABLE / SOURCE, lower-case keys.
pub(super) fn connector_options(
    options: &ast::CreateTableOptions,
) -> SqlResult<Option<BTreeMap<String, String>>> {
    let ast::CreateTableOptions::With(list) = options else {
        return match options {
            ast::CreateTableOptions::None => Ok(None),
            other => Err(SqlError::unsupported(format!("table options {other}"))),
        };
    };
    let mut out = BTreeMap::new();
    for o in list {
        let ast::SqlOption::KeyValue { key, value } = o else {
            return Err(SqlError::syntax(format!(
                "syntax error: expected key = 'value' in WITH, got {o}"
            )));
        };
        let v = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        out.insert(key.value.to_lowercase(), v);
    }
    if !out.contains_key("connector") {
        return Err(SqlError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            "a table's WITH options need a connector (connector = 'file', 'nexmark' or 'datagen')",
        ));
    }
    Ok(Some(out))
}

/// The connector of a source from its `WITH` options (checked against the
/// source's columns).
pub(super) fn source_connector(
    options: &BTreeMap<String, String>,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> SqlResult<Arc<dyn weir_executor::connectors::SourceConnector>> {
    use weir_executor::connectors::{DatagenSource, NexmarkSource};
    let name = options
        .get("connector")
        .map(|v| v.trim().to_ascii_lowercase());
    Ok(match name.as_deref() {
        Some("file") | Some("filesystem") => file_source(options)?,
        Some("nexmark") => NexmarkSource::from_options(options, schema)?,
        Some("datagen") => DatagenSource::from_options(options, schema)?,
        other => {
            return Err(SqlError::new(
                SqlState::INVALID_PARAMETER_VALUE,
                format!(
                    "unknown source connector {other:?} (expected 'file', 'nexmark' or 'datagen')"
                ),
            ))
        }
    })
}

/// The files of a `connector = 'file'` source.
pub(super) fn file_source(
    options: &BTreeMap<String, String>,
) -> SqlResult<Arc<weir_executor::connectors::FileSource>> {
    use weir_executor::connectors::{FileFormat, FileSource};
    let get = |k: &str| options.get(k).map(|v| v.trim().to_string());
    let bad = |m: String| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, m);
    let known = [
        "connector",
        "path",
        "format",
        "header",
        "delimiter",
        "rows-per-second",
    ];
    if let Some(k) = options.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!(
            "unrecognized file source option \"{k}\" (valid: {})",
            known.join(", ")
        )));
    }
    let path = get("path").ok_or_else(|| bad("a file source needs a path".into()))?;
    let path = path.strip_prefix("file://").unwrap_or(&path).to_string();
    let header = match get("header")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad(format!("header must be true or false, got '{other}'"))),
    };
    let format = match get("format")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("csv") => {
            let delimiter = match get("delimiter") {
                None => b',',
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some(d) => return Err(bad(format!("delimiter must be one character, got '{d}'"))),
            };
            FileFormat::Csv { header, delimiter }
        }
        Some("json") => FileFormat::JsonLines,
        Some(other) => {
            return Err(bad(format!(
                "unknown format '{other}' (expected 'csv' or 'json')"
            )))
        }
    };
    let rows_per_second = match get("rows-per-second") {
        None => None,
        Some(r) => Some(r.parse::<u64>().map_err(|_| {
            bad(format!(
                "rows-per-second must be a non-negative integer, got '{r}'"
            ))
        })?),
    };
    FileSource::open_paced(std::path::Path::new(&path), format, rows_per_second).map_err(|e| {
        SqlError::new(
            SqlState::UNDEFINED_FILE,
            format!("file source {path}: {}", e.message()),
        )
    })
}
