#!/usr/bin/env bash
# Issue 10's peer timings, alternating in one run (value and gradient, f32, 2 threads):
#   hausdorff_dt [8,1,512,512] against MONAI's HausdorffDTLoss(sigmoid=True);
#   ssim [8,1,512,512] and [2,1,64,64,64] against a separable-Gaussian SSIM in PyTorch with
#   autograd, eager and torch.compile (bench/peers/spatial_torch.py, checked equal to the golden
#   values in float64). Needs python3 with numpy, torch and monai. Best of ROUNDS medians each.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
cargo build --release -q
best() { python3 -c "import sys; print(min(float(v) for v in sys.argv[1:]))" "$@"; }
lossc_ms() { target/release/lossc bench "losses/$1.loss" --shape "$2" --dtype f32 --threads 2 --iters 10 | grep -o '"median_ms":[0-9.e-]*' | cut -d: -f2; }
torch_ms() { python3 bench/peers/spatial_torch.py "$1" "$2" ${3//,/ } | grep -o '"median_ms": [0-9.e-]*' | cut -d' ' -f2; }
row() { # loss shape peer impl
    local a=() b=()
    for _ in $(seq "$ROUNDS"); do a+=("$(lossc_ms "$1" "$2")"); b+=("$(torch_ms "$3" "$4" "$2")"); done
    local l t; l=$(best "${a[@]}"); t=$(best "${b[@]}")
    python3 -c "print('%-13s %-14s lossc %8.1f ms   %-22s %8.1f ms   ratio %5.1fx' % ('$1', '$2', $l, '$3 $4', $t, $t / $l))"
}
row hausdorff_dt 8,1,512,512 monai_hausdorff eager
row ssim 8,1,512,512 ssim eager
row ssim 8,1,512,512 ssim compile
row ssim 2,1,64,64,64 ssim eager
row ssim 2,1,64,64,64 ssim compile
