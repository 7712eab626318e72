#!/usr/bin/env bash
# Re-copies reference values into tests/golden/ from a directory of golden files computed by the
# independent implementations (never edit them by hand). Usage: scripts/sync-golden.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src="${1:?usage: scripts/sync-golden.sh DIR (a directory of golden *.json files and their README.md)}"
[ -d "$src" ] || { echo "no golden directory at $src" >&2; exit 1; }
cp "$src"/README.md "$src"/*.json "$here/tests/golden/"
echo "synced $(ls "$src"/*.json | wc -l) files from $src"
