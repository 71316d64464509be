#!/usr/bin/env bash
# Builds Weir (debug) and starts the server with the embedded defaults:
# data in ./weir-data, PostgreSQL protocol on 127.0.0.1:4566.
# Extra arguments go to `weir` (e.g. --listen 127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
# The same cargo invocation as the test suite, so that both share one build
# (RocksDB and DataFusion are compiled once).
cargo test --workspace --no-run
exec "$CARGO_TARGET_DIR/debug/weir" "$@"
