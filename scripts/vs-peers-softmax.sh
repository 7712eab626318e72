#!/usr/bin/env bash
# Issue 11's peer timings, alternating in one run (value and gradient, f32, 2 threads):
# softmax_ce and softmax_dice at SHAPE (default [8,19,512,512]) in lossc, PyTorch eager,
# torch.compile and JAX jit (bench/peers/softmax_peers.py, checked equal to the golden values
# with `--check`). Needs python3 with numpy, torch and jax. Best of ROUNDS medians each.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
SHAPE=${SHAPE:-8,19,512,512}
cargo build --release -q
best() { python3 -c "import sys; print(min(float(v) for v in sys.argv[1:]))" "$@"; }
lossc_ms() { target/release/lossc bench "losses/$1.loss" --shape "$SHAPE" --dtype f32 --threads 2 --iters 10 | grep -o '"median_ms":[0-9.e-]*' | cut -d: -f2; }
peer_ms() { python3 bench/peers/softmax_peers.py "$1" "$2" ${SHAPE//,/ } 2>/dev/null | grep -o '"median_ms": [0-9.e-]*' | cut -d' ' -f2; }
for loss in softmax_ce softmax_dice; do
    l=(); e=(); c=(); j=()
    for _ in $(seq "$ROUNDS"); do
        l+=("$(lossc_ms $loss)"); e+=("$(peer_ms $loss eager)"); c+=("$(peer_ms $loss compile)"); j+=("$(peer_ms $loss jax)")
    done
    L=$(best "${l[@]}"); E=$(best "${e[@]}"); C=$(best "${c[@]}"); J=$(best "${j[@]}")
    python3 -c "print('%-13s %s  lossc %7.1f ms   torch eager %7.1f (%.1fx)   torch.compile %7.1f (%.1fx)   jax %7.1f (%.1fx)' % ('$loss', '$SHAPE', $L, $E, $E / $L, $C, $C / $L, $J, $J / $L))"
done
