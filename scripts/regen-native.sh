#!/usr/bin/env bash
# Regenerates src/exec/vm/native/generated.rs, the native kernels of the standard library's
# fused passes. Run it after changing a loss in losses/, the optimiser, code generation or the
# emitter (the test `native_kernels_are_fresh` says when). The file is first replaced by an empty
# table, so a generated file that no longer compiles (say, after a change to `Io`) is no obstacle.
set -euo pipefail
cd "$(dirname "$0")/.."
f=src/exec/vm/native/generated.rs
cat > "$f" <<'STUB'
//! Empty table while the kernels are regenerated (scripts/regen-native.sh).

use super::*;

/// The kernel for a pass key: none yet.
pub(super) fn lookup<T: Real>(_key: &str) -> Option<Variants<T>> {
    None
}
STUB
LOSSLANG_BLESS=1 cargo test --release --lib -q native_kernels_are_fresh
echo "wrote $f ($(grep -c '^variants!' "$f") kernels)"
