#!/usr/bin/env python3
"""Combines one bench/nexmark.sh run: RUN/weir.csv and RUN/flink.csv
(run_flink.sh's CSV), RUN/duckdb.out (duckdb_nexmark.py's timings),
RUN/results/compare_<q>.txt (compare.py) and the peak memory figures of the
runs at N2 in RUN/{weir,flink}.logs into a Markdown table on stdout and the
CSV OUT (query, weir_eps, flink_eps, ratio, duckdb_s, result_ok,
weir_peak_mb, flink_peak_mb).

Peak memory: Weir's is `peak_rss_mb` (the server process's VmHWM), Flink's
`peak_tree_rss_mb` (its java processes' summed RSS, sampled by peak_mem.py);
with several runs per size (--repeat) the largest. Empty when missing (e.g.
Flink logs from before peak_mem.py).

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


def peak_mb(logs, query, events, key):
    """The largest `key=` figure (MB) of the engine= lines of query's runs
    over `events` events in the log directory (run_flink.sh's
    <query>_<data>_<rep>.log); None when there is none."""
    best = None
    if not os.path.isdir(logs):
        return None
    for name in os.listdir(logs):
        if not name.startswith(query + "_"):
            continue
        lines = [l for l in open(os.path.join(logs, name)) if l.startswith("engine=")]
        if not lines:
            continue
        fields = dict(kv.split("=", 1) for kv in lines[-1].split() if "=" in kv)
        if fields.get("query") != query or fields.get("events") != events:
            continue
        try:
            mb = float(fields[key])
        except (KeyError, ValueError):
            continue
        if not math.isnan(mb) and (best is None or mb > best):
            best = mb
    return best


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
        n2 = weir.get(q, (None, {}))[1].get("n2") or flink.get(q, (None, {}))[1].get("n2", "")
        weir_peak = peak_mb(os.path.join(run, "weir.logs"), q, n2, "peak_rss_mb")
        flink_peak = peak_mb(os.path.join(run, "flink.logs"), q, n2, "peak_tree_rss_mb")
        rows.append({
            "query": q,
            "weir_eps": f"{w:.0f}" if w else weir.get(q, (None, {}))[1].get("status", "missing"),
            "flink_eps": f"{fl:.0f}" if fl else flink.get(q, (None, {}))[1].get("status", "missing"),
            "ratio": f"{ratio:.2f}" if ratio else "",
            "duckdb_s": f"{duck[q]:.3f}" if q in duck else "",
            "result_ok": "yes" if ok else f"no ({first})",
            "weir_n1_s": weir_n1,
            "weir_peak_mb": f"{weir_peak:.0f}" if weir_peak is not None else "",
            "flink_peak_mb": f"{flink_peak:.0f}" if flink_peak is not None else "",
        })
    columns = ("query", "weir_eps", "flink_eps", "ratio", "duckdb_s", "result_ok",
               "weir_peak_mb", "flink_peak_mb")
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r[k] for k in columns])
    print("| query | Weir events/s | Flink events/s | Weir/Flink | at N1: Weir s / DuckDB s (load + query) "
          "| result vs DuckDB | at N2: Weir peak MB | Flink peak MB |")
    print("|---|---:|---:|---:|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['query']} | {r['weir_eps']} | {r['flink_eps']} | {r['ratio']} | "
              f"{r['weir_n1_s']} / {r['duckdb_s']} | {r['result_ok']} | "
              f"{r['weir_peak_mb']} | {r['flink_peak_mb']} |")
    ratios = [float(r["ratio"]) for r in rows if r["ratio"]]
    if ratios:
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        print(f"\ngeometric mean Weir/Flink over {len(ratios)} queries: {geo:.2f}")
    both = [r for r in rows if r["weir_peak_mb"] and r["flink_peak_mb"]]
    above = [r["query"] for r in both if float(r["weir_peak_mb"]) >= float(r["flink_peak_mb"])]
    print(f"\npeak memory at N2: Weir below Flink in {len(both) - len(above)} of {len(both)} queries "
          f"with both figures ({len(rows)} queries)" + (f"; not in {', '.join(above)}" if above else ""))
    print(f"\nCSV: {out_csv}")


if __name__ == "__main__":
    main()
