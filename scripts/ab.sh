#!/usr/bin/env bash
# A/B of two lossc builds on this noisy machine: runs `lossc bench` of each build alternately
# ROUNDS times per loss and prints each side's best `min_ms` and the ratio B/A. With LIMIT=1,
# each round also runs the hand-written yardstick limit.rs (bench/peers/build-limit.sh) at the
# same element count and both builds are also given as a ratio to it.
#   scripts/ab.sh A B [SHAPE] [THREADS] [ITERS] [ROUNDS] [LOSS...]
# e.g. cp target/release/lossc /tmp/lossc.a; (change, cargo build --release);
#      scripts/ab.sh /tmp/lossc.a target/release/lossc 16,1,1024,1024 2 10 4 focal dice
#      LIMIT=1 scripts/ab.sh /tmp/lossc.a target/release/lossc 4,1,512,512 2 40 3 combo
set -euo pipefail
A=$1; B=$2; SHAPE=${3:-1,1,256,256}; THREADS=${4:-1}; ITERS=${5:-300}; ROUNDS=${6:-6}
shift $(( $# < 6 ? $# : 6 ))
LOSSES=("$@"); [ ${#LOSSES[@]} -gt 0 ] || LOSSES=(bce focal dice tversky combo)
min_ms() { grep -o '"min_ms":[0-9.e-]*' | cut -d: -f2; }
best() { "$1" bench "$2" --shape "$SHAPE" --threads "$THREADS" --iters "$ITERS" | min_ms; }
if [ "${LIMIT:-0}" = 1 ]; then
    limit=$("$(dirname "$0")"/../bench/peers/build-limit.sh)
    logn=$(python3 -c "import math; print(round(math.log2(math.prod([$SHAPE]))))")
fi
for loss in "${LOSSES[@]}"; do
    a=inf; b=inf; h=inf
    for _ in $(seq "$ROUNDS"); do
        a=$(python3 -c "print(min(float('$a'), $(best "$A" "$loss")))")
        b=$(python3 -c "print(min(float('$b'), $(best "$B" "$loss")))")
        if [ -n "${limit:-}" ]; then
            v=$("$limit" --logn "$logn" --threads "$THREADS" --losses "$loss" --reps "$ITERS" | min_ms)
            h=$(python3 -c "print(min(float('$h'), $v))")
        fi
    done
    python3 -c "
a, b, h = $a, $b, float('$h')
line = '%-8s A %.4f  B %.4f  B/A %.3f' % ('$loss', a, b, b / a)
if h != float('inf'):
    line += '  limit.rs %.4f  A/limit %.3f  B/limit %.3f' % (h, a / h, b / h)
print(line)"
done
