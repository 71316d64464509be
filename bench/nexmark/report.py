#!/usr/bin/env python3
"""Combines one bench/nexmark.sh run: RUN/weir.csv and RUN/flink.csv
(run_flink.sh's CSV), RUN/duckdb.out (duckdb_nexmark.py's timings) and
RUN/results/compare_<q>.txt (compare.py) into a Markdown table on stdout and
the CSV OUT (query, weir_eps, flink_eps, ratio, duckdb_s, result_ok).

usage: report.py RUN OUT
"""

import csv
import math
import os
import re
import sys


def marginal(path):
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for row in csv.DictReader(f):
            try:
                out[row["query"]] = (float(row["marginal_events_per_s"]), row)
            except ValueError:
                out[row["query"]] = (None, row)
    return out


def duckdb_times(path):
    """query -> total_s (load + query) from duckdb_nexmark.py's lines."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        m = re.search(r"^engine=duckdb query=(q\d+) .*total_s=([0-9.]+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def main():
    run, out_csv = sys.argv[1], sys.argv[2]
    weir = marginal(os.path.join(run, "weir.csv"))
    flink = marginal(os.path.join(run, "flink.csv"))
    duck = duckdb_times(os.path.join(run, "duckdb.out"))
    queries = list(weir) or list(flink)
    rows = []
    for q in queries:
        w = weir.get(q, (None, {}))[0]
        fl = flink.get(q, (None, {}))[0]
        ratio = w / fl if w and fl else None
        cmp_path = os.path.join(run, "results", f"compare_{q}.txt")
        first = open(cmp_path).readline().strip() if os.path.exists(cmp_path) else "not checked"
        ok = first.startswith("MATCH")
        weir_n1 = weir.get(q, (None, {}))[1].get("exec1_s", "")
        rows.append({
            "query": q,
            "weir_eps": f"{w:.0f}" if w else weir.get(q, (None, {}))[1].get("status", "missing"),
            "flink_eps": f"{fl:.0f}" if fl else flink.get(q, (None, {}))[1].get("status", "missing"),
            "ratio": f"{ratio:.2f}" if ratio else "",
            "duckdb_s": f"{duck[q]:.3f}" if q in duck else "",
            "result_ok": "yes" if ok else f"no ({first})",
            "weir_n1_s": weir_n1,
        })
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "weir_eps", "flink_eps", "ratio", "duckdb_s", "result_ok"])
        for r in rows:
            w.writerow([r[k] for k in ("query", "weir_eps", "flink_eps", "ratio", "duckdb_s", "result_ok")])
    print("| query | Weir events/s | Flink events/s | Weir/Flink | at N1: Weir s / DuckDB s (load + query) | result vs DuckDB |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['query']} | {r['weir_eps']} | {r['flink_eps']} | {r['ratio']} | "
              f"{r['weir_n1_s']} / {r['duckdb_s']} | {r['result_ok']} |")
    ratios = [float(r["ratio"]) for r in rows if r["ratio"]]
    if ratios:
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        print(f"\ngeometric mean Weir/Flink over {len(ratios)} queries: {geo:.2f}")
    print(f"\nCSV: {out_csv}")


if __name__ == "__main__":
    main()
