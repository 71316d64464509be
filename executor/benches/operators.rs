//! Micro-benchmarks of the hot operators, on in-memory chunks (no runtime,
//! no channels): `cargo bench -p weir-executor --bench operators` (into a
//! release target dir, e.g. CARGO_TARGET_DIR=~/.cache/weir-target-release).
//!
//! - `hash_agg/count_sum`: `count(*), sum(v) GROUP BY k`, 10,000 keys;
//! - `hash_join/inner`: an equi-join, build side then probe side;
//! - `unnest/hop5`: five window starts per row (a HOP of 5 windows).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{lit, Column};
use datafusion::physical_expr::PhysicalExpr;
use weir_executor::chunk::Chunk;
use weir_executor::operator::{Operator, Output};
use weir_executor::operators::hash_agg::{AggSpec, HashAggOperator};
use weir_executor::operators::hash_join::{HashJoinOperator, JoinKind};
use weir_executor::operators::unnest::UnnestOperator;

const ROWS: usize = 8192;

fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn kv_chunk(offset: i64, keys: i64) -> Chunk {
    let k: Int64Array = (0..ROWS as i64)
        .map(|i| Some((offset + i) % keys))
        .collect();
    let v: Int64Array = (0..ROWS as i64).map(|i| Some(offset + i)).collect();
    Chunk::inserts(
        RecordBatch::try_new(kv_schema(), vec![Arc::new(k) as ArrayRef, Arc::new(v)]).unwrap(),
    )
}

fn col(name: &str, i: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(name, i))
}

fn hash_agg(c: &mut Criterion) {
    let input = kv_schema();
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(input.clone())
        .alias("c")
        .build()
        .unwrap();
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", 1)])
        .schema(input.clone())
        .alias("s")
        .build()
        .unwrap();
    let out = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("c", DataType::Int64, true),
        Field::new("s", DataType::Int64, true),
    ]));
    let chunks: Vec<Chunk> = (0..16).map(|n| kv_chunk(n * ROWS as i64, 10_000)).collect();
    let mut g = c.benchmark_group("hash_agg");
    g.throughput(Throughput::Elements((chunks.len() * ROWS) as u64));
    g.bench_function("count_sum", |b| {
        b.iter(|| {
            let aggs = vec![
                AggSpec::new(Arc::new(count.clone()), None, &input).unwrap(),
                AggSpec::new(Arc::new(sum.clone()), None, &input).unwrap(),
            ];
            let mut op =
                HashAggOperator::new(vec![col("k", 0)], vec![DataType::Int64], aggs, out.clone())
                    .unwrap();
            let mut o = Output::default();
            for chunk in &chunks {
                op.on_chunk(0, chunk.clone(), &mut o).unwrap();
                o.take_chunks();
            }
        })
    });
    g.finish();
}

fn hash_join(c: &mut Criterion) {
    let left = kv_schema();
    let right = kv_schema();
    let joined = Arc::new(Schema::new(
        left.fields()
            .iter()
            .chain(right.fields().iter())
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    let builds: Vec<Chunk> = (0..4).map(|n| kv_chunk(n * ROWS as i64, 20_000)).collect();
    let probes: Vec<Chunk> = (0..8).map(|n| kv_chunk(n * ROWS as i64, 20_000)).collect();
    let mut g = c.benchmark_group("hash_join");
    g.throughput(Throughput::Elements(
        ((builds.len() + probes.len()) * ROWS) as u64,
    ));
    g.bench_function("inner", |b| {
        b.iter(|| {
            let mut op = HashJoinOperator::new(
                JoinKind::Inner,
                vec![col("k", 0)],
                vec![col("k", 0)],
                vec![DataType::Int64],
                &left,
                &right,
                None,
                joined.clone(),
                joined.clone(),
                false,
            )
            .unwrap();
            let mut o = Output::default();
            for chunk in &builds {
                op.on_chunk(1, chunk.clone(), &mut o).unwrap();
            }
            for chunk in &probes {
                op.on_chunk(0, chunk.clone(), &mut o).unwrap();
                o.take_chunks();
            }
        })
    });
    g.finish();
}

fn unnest(c: &mut Criterion) {
    let list_field = Arc::new(Field::new_list_field(DataType::Int64, true));
    let input = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("starts", DataType::List(list_field), true),
    ]));
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("window_start", DataType::Int64, true),
    ]));
    let k: Int64Array = (0..ROWS as i64).map(Some).collect();
    let starts = ListArray::from_iter_primitive::<Int64Type, _, _>(
        (0..ROWS as i64).map(|i| Some((0..5).map(move |w| Some(i - w * 2000)))),
    );
    let chunk = Chunk::inserts(
        RecordBatch::try_new(input, vec![Arc::new(k) as ArrayRef, Arc::new(starts)]).unwrap(),
    );
    let mut g = c.benchmark_group("unnest");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("hop5", |b| {
        let mut op = UnnestOperator::new(1, vec![0, 1], true, output.clone());
        b.iter(|| {
            let mut o = Output::default();
            op.on_chunk(0, chunk.clone(), &mut o).unwrap();
            o.take_chunks()
        })
    });
    g.finish();
}

criterion_group!(benches, hash_agg, hash_join, unnest);
criterion_main!(benches);
