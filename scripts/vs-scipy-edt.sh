#!/usr/bin/env bash
# Times `lossc bench losses/hausdorff_dt.loss` (value and gradient, f32, 2 threads) against the
# distance transforms alone that MONAI's HausdorffDTLoss runs (scipy, bench/peers/scipy_edt.py),
# alternating ROUNDS times in one run, and prints both and the ratio (issue 10's goal: MONAI's
# whole loss at least 20x slower). Needs python3 with numpy and scipy (pip install scipy).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SHAPE=${SHAPE:-8,1,512,512}
cargo build --release -q
l=999999; s=999999
for _ in $(seq "$ROUNDS"); do
    a=$(target/release/lossc bench losses/hausdorff_dt.loss --shape "$SHAPE" --dtype f32 --threads 2 --iters 10 | grep -o '"median_ms":[0-9.e-]*' | cut -d: -f2)
    b=$(python3 bench/peers/scipy_edt.py ${SHAPE//,/ } | grep -o '"best_ms": [0-9.e-]*' | cut -d' ' -f2)
    l=$(python3 -c "print(min($l, $a))"); s=$(python3 -c "print(min($s, $b))")
done
python3 -c "print('hausdorff_dt $SHAPE: lossc %.1f ms (value and gradient), scipy EDTs alone %.1f ms, ratio %.1fx' % ($l, $s, $s / $l))"
