//! Plan snapshots: the stream graph (operators, parallelism, exchanges) that
//! representative queries become. Review changes with `cargo insta review`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use weir_executor::table::{Table, TableDesc};
use weir_planner::stream_plan::arrow_schema;
use weir_planner::{PlanError, StreamPlanner, TableResolver};

struct Tables(HashMap<String, Arc<Table>>);

impl TableResolver for Tables {
    fn resolve(&self, name: &TableReference) -> Option<Arc<Table>> {
        self.0.get(name.table()).cloned()
    }
}

fn setup() -> (SessionContext, Tables) {
    let ctx = SessionContext::new();
    let mut tables = HashMap::new();
    let defs: [(&str, SchemaRef, Vec<usize>); 2] = [
        (
            "a",
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("k", DataType::Int32, true),
                Field::new("v", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![0],
        ),
        (
            "b",
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("k", DataType::Int32, true),
                Field::new("w", DataType::Float64, true),
            ])),
            vec![0],
        ),
    ];
    for (i, (name, schema, pk)) in defs.into_iter().enumerate() {
        ctx.register_table(
            name,
            Arc::new(MemTable::try_new(schema.clone(), vec![vec![]]).unwrap()),
        )
        .unwrap();
        let t = Table::new_in_memory(TableDesc {
            id: i as u64 + 1,
            name: name.into(),
            schema,
            primary_key: pk,
            watermark: None,
        })
        .unwrap();
        tables.insert(name.to_string(), t);
    }
    (ctx, Tables(tables))
}

/// The optimized plan of `sql` and an in-memory result table `q` of its
/// schema.
async fn plan_and_result(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(datafusion::logical_expr::LogicalPlan, Arc<Table>), PlanError> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    let plan = ctx.state().optimize(&plan)?;
    let result = Table::new_in_memory(TableDesc {
        id: 99,
        name: "q".into(),
        schema: arrow_schema(plan.schema()),
        primary_key: vec![],
        watermark: None,
    })?;
    Ok((plan, result))
}

async fn explain(sql: &str) -> Result<String, PlanError> {
    let (ctx, tables) = setup();
    let (plan, result) = plan_and_result(&ctx, sql).await?;
    let graph = StreamPlanner::new(&tables, 2).plan(&plan, result)?;
    Ok(graph.explain())
}

#[tokio::test]
async fn filter_project() {
    insta::assert_snapshot!(explain("SELECT id, v * 2 AS v2 FROM a WHERE k > 3")
        .await
        .unwrap());
}

#[tokio::test]
async fn group_by_aggregates() {
    insta::assert_snapshot!(explain(
        "SELECT k, count(*) AS n, sum(v) AS total, min(s) AS lo, count(DISTINCT v) AS d FROM a GROUP BY k HAVING count(*) > 1"
    )
    .await
    .unwrap());
}

#[tokio::test]
async fn global_aggregate() {
    insta::assert_snapshot!(explain("SELECT count(*) AS n, avg(v) AS a FROM a")
        .await
        .unwrap());
}

#[tokio::test]
async fn outer_join() {
    insta::assert_snapshot!(
        explain("SELECT a.id, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn union_all_subquery() {
    insta::assert_snapshot!(explain(
        "SELECT x FROM (SELECT k AS x FROM a UNION ALL SELECT k AS x FROM b) AS u WHERE x IS NOT NULL"
    )
    .await
    .unwrap());
}

#[tokio::test]
async fn top_n_per_partition_and_order_by_limit() {
    insta::assert_snapshot!(explain(
        "SELECT * FROM (SELECT k, v, row_number() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM a) t WHERE rn <= 3"
    )
    .await
    .unwrap());
    insta::assert_snapshot!(explain("SELECT id, v FROM a ORDER BY v LIMIT 5")
        .await
        .unwrap());
}

#[tokio::test]
async fn unsupported_constructs_are_refused_by_name() {
    let err = explain("SELECT id, row_number() OVER (ORDER BY v) AS r FROM a")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("window functions"), "{err}");
    let err = explain("SELECT id FROM a LIMIT 3").await.unwrap_err();
    assert!(err.to_string().contains("LIMIT without ORDER BY"), "{err}");
    let err = explain("SELECT k, sum(v) FROM a GROUP BY ROLLUP (k)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("GROUPING SETS"), "{err}");
}

#[tokio::test]
async fn a_repeated_sub_plan_is_computed_once() {
    // The per-k counts appear twice (as in Nexmark q5): one aggregation
    // feeds both the join's input and the max over it.
    let plan = explain(
        "SELECT c.k, c.n FROM (SELECT k, count(*) AS n FROM a GROUP BY k) c \
         JOIN (SELECT max(n) AS m FROM (SELECT k, count(*) AS n FROM a GROUP BY k) c2) x \
         ON c.n = x.m",
    )
    .await
    .unwrap();
    assert_eq!(
        plan.matches("StreamHashAgg group=[a.k]").count(),
        1,
        "{plan}"
    );
    assert_eq!(plan.matches("StreamTableScan").count(), 1, "{plan}");
    insta::assert_snapshot!(plan);
}

#[tokio::test]
async fn a_repeated_sub_plan_is_computed_once_whatever_its_generated_names() {
    // DataFusion factors the repeated `v + 1` out of each half under its
    // own generated name (`__common_expr_1`, `__common_expr_2`), as it does
    // with q5's window bounds; the halves still share one aggregation.
    let counts = "SELECT k, count(*) AS n FROM a GROUP BY k, (v + 1) * 2, (v + 1) * 3";
    let plan = explain(&format!(
        "SELECT c.k, c.n FROM ({counts}) c JOIN (SELECT max(n) AS m FROM ({counts}) c2) x \
         ON c.n = x.m"
    ))
    .await
    .unwrap();
    assert!(plan.contains("__common_expr"), "{plan}");
    assert_eq!(plan.matches("aggs=[count(").count(), 1, "{plan}");
    assert!(plan.contains("(shared, shown above)"), "{plan}");
}

#[tokio::test]
async fn a_table_read_twice_is_scanned_once() {
    // A self-join with different columns on each side: one source, two
    // projections of it.
    let plan = explain("SELECT x.id, y.s FROM a x JOIN a y ON x.k = y.id")
        .await
        .unwrap();
    assert_eq!(plan.matches("StreamTableScan a").count(), 1, "{plan}");
    assert!(plan.contains("(shared, shown above)"), "{plan}");
    insta::assert_snapshot!(plan);
}

/// A query over a source (append-only: a datagen source) written to files.
async fn explain_file_sink(sql: &str) -> Result<String, PlanError> {
    use weir_executor::connectors::DatagenSource;
    use weir_executor::operators::file_sink::{FileSinkFormat, FileSinkSpec};
    let (ctx, mut tables) = setup();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, true),
        Field::new("v", DataType::Int64, true),
    ]));
    ctx.register_table(
        "src",
        Arc::new(MemTable::try_new(schema.clone(), vec![vec![]]).unwrap()),
    )
    .unwrap();
    let desc = TableDesc {
        id: 3,
        name: "src".into(),
        schema: schema.clone(),
        primary_key: vec![],
        watermark: None,
    };
    let connector = DatagenSource::from_options(&Default::default(), &schema)?;
    tables
        .0
        .insert("src".into(), Table::new_source(desc, connector)?);
    let (plan, result) = plan_and_result(&ctx, sql).await?;
    let spec = FileSinkSpec::new("/data/out", FileSinkFormat::JsonLines, "q", 99);
    let graph = StreamPlanner::new(&tables, 2)
        .file_sink(Some(spec))
        .plan(&plan, result)?;
    Ok(graph.explain())
}

#[tokio::test]
async fn file_sink_takes_append_only_output_only() {
    insta::assert_snapshot!(
        explain_file_sink("SELECT k, v * 2 AS v2 FROM src WHERE k > 3")
            .await
            .unwrap()
    );
    let err = explain_file_sink("SELECT k, count(*) AS n FROM src GROUP BY k")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support consuming update changes"),
        "{err}"
    );
}
