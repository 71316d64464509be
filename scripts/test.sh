#!/usr/bin/env bash
# Runs the whole test suite on the debug build: unit tests, plan snapshots
# and the end-to-end SQL tests against a real server over the wire.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
# One cargo invocation builds everything (the weir binary too, through
# server/tests), so the build is shared with CI and between runs.
cargo test --workspace --no-run
# Old builds of the same test binaries would otherwise pile up here.
./scripts/prune-target.sh
cargo test --workspace --no-fail-fast -- "$@"
