#!/usr/bin/env bash
# Installs what building and testing Weir needs, when missing:
#   libclang-dev  (bindgen, for the rocksdb crate)
#   psql          (client tests), python3 with pip, and through
#                 sql-tests/clients/setup.sh psycopg 3, SQLAlchemy 2
#                 and pandas (driver tests)                        [--test]
#   promtool      (Debian's prometheus package: checks the /metrics output
#                 and the alert rules in monitoring/)              [--test]
#   postgresql    (the server: sql-tests start a real PostgreSQL to prove
#                 the results of slt/postgres/*.slt)               [--test]
# Idempotent; uses apt-get and pip from the machine's registries.
set -euo pipefail

need_apt=()
# libclang.so itself (clang-sys loads it), not libclang-cpp.so, which some
# machines have without it.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
  /usr/lib/x86_64-linux-gnu/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1; then
  need_apt+=(libclang-dev)
fi
if ! command -v g++ >/dev/null 2>&1; then
  need_apt+=(g++)
fi
if [ "${1:-}" = "--test" ] && ! command -v psql >/dev/null 2>&1; then
  need_apt+=(postgresql-client)
fi
if [ "${1:-}" = "--test" ] && ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3 python3-pip)
fi
if [ "${1:-}" = "--test" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if [ "${1:-}" = "--test" ] && ! command -v promtool >/dev/null 2>&1; then
  need_apt+=(prometheus)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
  sh "$(dirname "$0")/../sql-tests/clients/setup.sh"
fi
