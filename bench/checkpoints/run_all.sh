#!/usr/bin/env bash
# Runs the five checkpoint benchmarks one after the other with their
# defaults (or whatever the environment sets) and keeps the output in
# bench/checkpoints/results-<date>.txt. Pass names to run only some:
#   bench/checkpoints/run_all.sh throughput recovery
set -euo pipefail
cd "$(dirname "$0")/../.."
out="bench/checkpoints/results-$(date +%Y%m%d-%H%M%S).txt"
benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
    benches=(throughput checkpoint_size recovery backpressure backends)
fi
for b in "${benches[@]}"; do
    python3 "bench/checkpoints/$b.py" 2>&1 | tee -a "$out"
    echo | tee -a "$out"
done
echo "results in $out"
