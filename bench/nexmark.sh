#!/usr/bin/env bash
# bench/nexmark.sh — Nexmark on Weir and Flink over the same CSV files, with
# Weir's final results checked against DuckDB's.
#
#   bench/nexmark.sh [--events N1,N2] [--queries q0,q5,...] [--repeat R]
#
# Uses the shared harness (../shared/bench, or WEIR_SHARED_BENCH): its
# setup.sh (Flink, DuckDB, the nexmark generator; run when missing), gen.sh
# (SPLIT=2 part files, one per source subtask), run_flink.sh (through its
# RUNNER: Weir runs bench/nexmark/weir_nexmark.py, Flink the harness's
# flink_nexmark.py wrapped in bench/nexmark/peak_mem.py) and
# duckdb_nexmark.py + compare.py (result check at N1). Weir runs the release
# build (built here when missing), parallelism 2 like Flink, file sources and
# a blackhole sink; the end of the files ends the stream.
# The query texts are the harness's queries/{flink,duckdb}, plus this
# project's bench/nexmark/queries/{flink,duckdb} (q9, q14-q22), merged into
# RUN/queries; Flink loads q14's count_char UDF from a jar built here from
# bench/nexmark/udf/CountChar.java (javac, against PyFlink's jars).
#
# Peak memory at N2: Weir's server process (VmHWM, weir_nexmark.py's
# peak_rss_mb); Flink's java processes, their summed RSS sampled every 100 ms
# (bench/nexmark/peak_mem.py wraps each Flink run, peak_tree_rss_mb).
#
# Output: a Markdown table on stdout and bench/results/nexmark.csv
# (query, weir_eps, flink_eps, ratio, duckdb_s, result_ok, weir_peak_mb,
# flink_peak_mb); per-engine run tables and logs under
# bench/results/nexmark-<time>/.
# Environment: WEIR_BENCH_HOME, WEIR_SHARED_BENCH, NEXMARK_DATA (default
# /tmp/nexmark), SKIP_FLINK=1 (reuse FLINK_CSV, and the logs next to it,
# instead of running Flink), FLINK_PYTHON.
#
#   bench/nexmark.sh --generator [--events N1,N2] [--queries ...] [--repeat R]
#
# runs the queries on Weir alone, its sources the built-in nexmark generator
# (`connector = 'nexmark'`, no files; bench/nexmark/generator_bench.py), and
# reports marginal events/s and events/s per core (÷ 2, parallelism 2) in a
# Markdown table and bench/results/nexmark-generator.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED="${WEIR_SHARED_BENCH:-$ROOT/../shared/bench}"
B="${WEIR_BENCH_HOME:-$HOME/.cache/weir-bench}"
EVENTS="1000000,4000000"
QUERIES="q0,q1,q2,q3,q4,q5,q7,q8,q9,q11,q12,q14,q15,q16,q17,q18,q19,q20,q21,q22"
REPEAT=1
GENERATOR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2;;
    --queries) QUERIES="$2"; shift 2;;
    --repeat) REPEAT="$2"; shift 2;;
    --generator) GENERATOR=1; shift;;
    *) echo "usage: $0 [--generator] [--events N1,N2] [--queries q0,q5,...] [--repeat R]" >&2; exit 2;;
  esac
done
N1="${EVENTS%,*}"; N2="${EVENTS#*,}"
QLIST="${QUERIES//,/ }"
[ -d "$SHARED" ] || { echo "no shared harness at $SHARED (set WEIR_SHARED_BENCH)" >&2; exit 1; }
# A free metrics port: another weir on the machine may hold the default.
export WEIR_METRICS_LISTEN="${WEIR_METRICS_LISTEN:-127.0.0.1:0}"
# What the figures were measured on: they differ 2x between machines of
# the same kind, so compare runs of one machine only.
machine() {
  mkdir -p "$1"
  { echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores: $(nproc)"
    lscpu 2>/dev/null | grep -E '^(Model|Stepping|BogoMIPS|L2 cache|L3 cache):' || true
    echo "memory: $(grep MemTotal /proc/meminfo | awk '{print $2}') kB"
    echo "weir: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo ' (uncommitted changes)')"
  } > "$1/machine.txt"
}
if [ -n "$GENERATOR" ]; then
  GEN_RUN="$ROOT/bench/results/nexmark-generator-$(date -u +%Y%m%dT%H%M%SZ)"
  machine "$GEN_RUN"
  export WEIR_BIN="${WEIR_BIN:-$HOME/.cache/weir-target-release/release/weir}"
  if [ ! -x "$WEIR_BIN" ]; then
    CARGO_TARGET_DIR="$HOME/.cache/weir-target-release" cargo build --release --bin weir
  fi
  exec python3 "$ROOT/bench/nexmark/generator_bench.py" --events "$EVENTS" --queries "$QUERIES" \
    --par 2 --repeat "$REPEAT" --out "$ROOT/bench/results/nexmark-generator.csv" \
    --run-dir "$GEN_RUN"
fi
[ -x "$B/nexmark/bin/nexmark" ] && [ -x "$B/duckdb-venv/bin/python" ] && [ -x "$B/flink-venv/bin/python" ] \
  || "$SHARED/setup.sh"
export WEIR_BIN="${WEIR_BIN:-$HOME/.cache/weir-target-release/release/weir}"
if [ ! -x "$WEIR_BIN" ]; then
  CARGO_TARGET_DIR="$HOME/.cache/weir-target-release" cargo build --release --bin weir
fi
DATA="${NEXMARK_DATA:-/tmp/nexmark}"
D1="$DATA/$N1-s2"; D2="$DATA/$N2-s2"
for n in "$N1" "$N2"; do
  d="$DATA/$n-s2"
  [ -f "$d/manifest.txt" ] || SPLIT=2 "$SHARED/gen.sh" "$n" "$d"
done
RUN="$ROOT/bench/results/nexmark-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
machine "$RUN"

# The queries: the harness's, then the project's (which win).
for k in flink duckdb; do
  mkdir -p "$RUN/queries/$k"
  ln -sf "$SHARED/queries/$k/"*.sql "$RUN/queries/$k/"
  ln -sf "$ROOT/bench/nexmark/queries/$k/"*.sql "$RUN/queries/$k/"
done
# q14's user-defined function for Flink.
UDF_JAR="$B/weir-nexmark-udf.jar"
UDF_SRC="$ROOT/bench/nexmark/udf/CountChar.java"
if [ ! -f "$UDF_JAR" ] || [ "$UDF_SRC" -nt "$UDF_JAR" ]; then
  FLINK_LIB=$(ls -d "$B"/flink-venv/lib/python*/site-packages/pyflink/lib | head -n1)
  UDF_BUILD=$(mktemp -d)
  javac --release 11 -cp "$FLINK_LIB/*" -d "$UDF_BUILD" "$UDF_SRC"
  (cd "$UDF_BUILD" && jar cf "$UDF_JAR" weir)
  rm -rf "$UDF_BUILD"
fi
FLINK_ARGS="--queries-dir $RUN/queries/flink --conf pipeline.jars=file://$UDF_JAR"

echo "== Weir ($WEIR_BIN)" >&2
DATA1="$D1" DATA2="$D2" QUERIES="$QLIST" PAR=2 REPEAT="$REPEAT" OUT="$RUN/weir.csv" \
  RUNNER="python3 $ROOT/bench/nexmark/weir_nexmark.py --data {data} --query {query} --par {par}" \
  "$SHARED/run_flink.sh" >&2
if [ -n "${SKIP_FLINK:-}" ]; then
  cp "${FLINK_CSV:?SKIP_FLINK needs FLINK_CSV}" "$RUN/flink.csv"
  # Its per-run logs hold the peak memory figures (runs since peak_mem.py).
  if [ -d "${FLINK_CSV%.csv}.logs" ]; then cp -r "${FLINK_CSV%.csv}.logs" "$RUN/flink.logs"; fi
else
  # Flink through RUNNER too, wrapped in peak_mem.py: the summed RSS of the
  # run's java processes (PyFlink's gateway JVM, which runs the whole job),
  # appended to the engine= line as peak_tree_rss_mb.
  FLINK_PY="${FLINK_PYTHON:-$B/flink-venv/bin/python}"
  echo "== Flink $("$FLINK_PY" -c 'import importlib.metadata as m; print(m.version("apache-flink"))')" >&2
  DATA1="$D1" DATA2="$D2" QUERIES="$QLIST" PAR=2 REPEAT="$REPEAT" OUT="$RUN/flink.csv" \
    RUNNER="python3 $ROOT/bench/nexmark/peak_mem.py --match java -- $FLINK_PY $SHARED/flink_nexmark.py --data {data} --query {query} --par {par} $FLINK_ARGS" \
    "$SHARED/run_flink.sh" >&2
fi

echo "== results at $N1 events: Weir vs DuckDB" >&2
"$B/duckdb-venv/bin/python" "$SHARED/duckdb_nexmark.py" --data "$D1" \
  --queries-dir "$RUN/queries/duckdb" --queries "$QUERIES" --out-dir "$RUN/results" \
  >"$RUN/duckdb.out" 2>&1 || true
for q in $QLIST; do
  python3 "$ROOT/bench/nexmark/weir_nexmark.py" --data "$D1" --query "$q" --par 2 \
    --result "$RUN/results/weir_$q.csv" >"$RUN/results/weir_$q.log" 2>&1 || true
  if [ -f "$RUN/results/weir_$q.csv" ] && [ -f "$RUN/results/duckdb_$q.csv" ]; then
    python3 "$SHARED/compare.py" "$RUN/results/weir_$q.csv" "$RUN/results/duckdb_$q.csv" \
      >"$RUN/results/compare_$q.txt" 2>&1 || true
  else
    echo "MISSING result file(s)" >"$RUN/results/compare_$q.txt"
  fi
done
python3 "$ROOT/bench/nexmark/report.py" "$RUN" "$ROOT/bench/results/nexmark.csv" | tee "$RUN/nexmark.md"
