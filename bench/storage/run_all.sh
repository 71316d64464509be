#!/usr/bin/env bash
# Runs the storage benchmarks (Weir next to PostgreSQL 15 in the same run)
# one after the other and keeps the output in
# bench/storage/results-<date>.txt. Pass names to run only some:
#   bench/storage/run_all.sh key_select insert_rate
# Uses WEIR_BIN (default: the release build bench/nexmark.sh uses,
# $HOME/.cache/weir-target-release/release/weir); builds nothing.
# Installs PostgreSQL 15 (Debian's postgresql-15: server and pgbench) and
# psycopg 3 when missing, like scripts/ensure-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

export WEIR_BIN="${WEIR_BIN:-$HOME/.cache/weir-target-release/release/weir}"
if [ ! -x "$WEIR_BIN" ]; then
  echo "weir binary not found at $WEIR_BIN; build it with" >&2
  echo "  CARGO_TARGET_DIR=\$HOME/.cache/weir-target-release cargo build --release --bin weir" >&2
  exit 1
fi

need_apt=()
if [ -z "${WEIR_PG_BINDIR:-}" ] && ! [ -x /usr/lib/postgresql/15/bin/initdb ]; then
  need_apt+=(postgresql-15)
fi
if [ -z "${WEIR_PG_BINDIR:-}" ] && ! [ -x /usr/lib/postgresql/15/bin/pgbench ]; then
  need_apt+=(postgresql-15)
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3 python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi
if ! python3 -c 'import psycopg' 2>/dev/null; then
  echo "installing: psycopg 3" >&2
  PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 \
    python3 -m pip install --quiet 'psycopg[binary]>=3.1,<4'
fi

out="bench/storage/results-$(date +%Y%m%d-%H%M%S).txt"
benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
  benches=(key_select copy_load recovery_mv insert_rate)
fi
{
  echo "storage benchmarks, $(date -Is), scripts from commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "weir binary: $WEIR_BIN, modified $(date -r "$WEIR_BIN" -Is)${WEIR_BUILD_COMMIT:+, built from commit $WEIR_BUILD_COMMIT}"
  echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2 " GB RAM"}'), $(uname -r)"
  echo
} | tee -a "$out"
for b in "${benches[@]}"; do
  python3 "bench/storage/$b.py" 2>&1 | tee -a "$out"
  echo | tee -a "$out"
done
echo "results in $out"
