#!/usr/bin/env bash
# Two (or more) lossc builds against the hand-written yardstick limit.rs, alternating: ROUNDS
# rounds of each binary then limit.rs, keeping each side's best `min_ms`, and the ratio to limit.rs.
#   scripts/ab-limit.sh LOSS SHAPE THREADS LOGN ROUNDS BIN...
# e.g. cp target/release/lossc /tmp/lossc.a; (change, cargo build --release);
#      scripts/ab-limit.sh combo 4,1,512,512 2 20 3 /tmp/lossc.a target/release/lossc
set -euo pipefail
cd "$(dirname "$0")/.."
loss=$1; shape=$2; threads=$3; logn=$4; rounds=$5; shift 5
limit=$(bench/peers/build-limit.sh)
min_ms() { grep -o '"min_ms":[0-9.e-]*' | cut -d: -f2; }
declare -A best
for _ in $(seq "$rounds"); do
    for b in "$@" limit; do
        if [ "$b" = limit ]; then
            v=$("$limit" --logn "$logn" --threads "$threads" --losses "$loss" --reps 40 | min_ms)
        else
            v=$("$b" bench "$loss" --shape "$shape" --threads "$threads" --iters 40 | min_ms)
        fi
        best[$b]=$(python3 -c "print(min(float('${best[$b]:-inf}'), $v))")
    done
done
for b in "$@" limit; do
    python3 -c "print('%-24s %.3f ms  ratio %.3f' % ('$b', ${best[$b]}, ${best[$b]} / ${best[limit]}))"
done
