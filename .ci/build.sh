#!/usr/bin/env bash
# Build mqlite into DIR (default: build), installing missing Debian packages first.
#   bash .ci/build.sh [DIR] [meson options...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
bash .ci/deps.sh build
if [ -f "$dir/build.ninja" ]; then
  meson configure "$dir" "$@"
else
  meson setup "$dir" "$@"
fi
ninja -C "$dir"
echo "built $dir/mqlite"
