#!/usr/bin/env bash
# Runs the whole test suite on the debug build: unit tests, plan snapshots
# and the end-to-end SQL tests against a real server over the wire.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
cargo build -p weir-server --bin weir
cargo test --workspace -- "$@"
