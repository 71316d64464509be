#!/usr/bin/env bash
# Deletes test and binary executables in the shared target dir that a newer
# build of the same name replaced (cargo leaves every old <name>-<hash>
# behind; each is tens to hundreds of MB here), and incremental caches of
# crates not built for a week. Keeps the newest of each name, so the next
# build and test run are unaffected.
set -euo pipefail
target="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
deps="$target/debug/deps"
[ -d "$deps" ] || exit 0
cd "$deps"
# Executables without an extension: <name>-<16 hex digits>.
find . -maxdepth 1 -type f -perm -u+x ! -name '*.*' -printf '%T@ %f\n' \
  | sed -E 's/^([0-9.]+) (.*)-([0-9a-f]{16})$/\2 \1 \2-\3/' \
  | sort -k1,1 -k2,2nr \
  | awk 'seen[$1]++ { print $3 }' \
  | while read -r old; do rm -f -- "$old" "$old.d"; done
if [ -d "$target/debug/incremental" ]; then
  find "$target/debug/incremental" -mindepth 1 -maxdepth 1 -type d -mtime +7 -exec rm -rf {} +
fi
