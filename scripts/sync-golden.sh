#!/usr/bin/env bash
# Re-copies the reference values from ../shared/golden/ into tests/golden/ (never edit them by hand).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src="${1:-$here/../shared/golden}"
[ -d "$src" ] || { echo "no golden directory at $src" >&2; exit 1; }
cp "$src"/README.md "$src"/*.json "$here/tests/golden/"
echo "synced $(ls "$src"/*.json | wc -l) files from $src"
