#!/usr/bin/env bash
# A/B of two lossc builds on this noisy machine: runs `lossc bench` of each build alternately
# ROUNDS times per loss and prints each side's best `min_ms` and the ratio B/A.
#   scripts/ab.sh A B [SHAPE] [THREADS] [ITERS] [ROUNDS] [LOSS...]
# e.g. cp target/release/lossc /tmp/lossc.a; (change, cargo build --release);
#      scripts/ab.sh /tmp/lossc.a target/release/lossc 16,1,1024,1024 2 10 4 focal dice
set -euo pipefail
A=$1; B=$2; SHAPE=${3:-1,1,256,256}; THREADS=${4:-1}; ITERS=${5:-300}; ROUNDS=${6:-6}
shift $(( $# < 6 ? $# : 6 ))
LOSSES=("$@"); [ ${#LOSSES[@]} -gt 0 ] || LOSSES=(bce focal dice tversky combo)
best() { "$1" bench "$2" --shape "$SHAPE" --threads "$THREADS" --iters "$ITERS" | grep -o '"min_ms":[0-9.e-]*' | cut -d: -f2; }
for loss in "${LOSSES[@]}"; do
    a=inf; b=inf
    for _ in $(seq "$ROUNDS"); do
        a=$(python3 -c "print(min(float('$a'), $(best "$A" "$loss")))")
        b=$(python3 -c "print(min(float('$b'), $(best "$B" "$loss")))")
    done
    python3 -c "print('%-8s A %.4f  B %.4f  B/A %.3f' % ('$loss', $a, $b, $b / $a))"
done
