#!/usr/bin/env bash
# Times `lossc bench` (plain `cargo build --release`) against the hand-written single-purpose
# kernels of bench/handwritten (built with -C target-cpu=native), alternating the two programs
# ROUNDS times per (loss, N) and keeping each side's best median, so both see the same machine
# state. Prints a markdown table with the ratio engine / hand-written (issue 3's yardstick).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
cargo build --release -q
(cd bench/handwritten && cargo build --release -q)
median() { grep -o '"median_ms":[0-9.e-]*' | cut -d: -f2; }
echo "| N | loss | hand-written ms | lossc ms | ratio |"
echo "| --- | --- | --- | --- | --- |"
for shape in 4,1,512,512 16,1,1024,1024; do
    for loss in bce focal dice tversky combo; do
        h=999999; e=999999
        for _ in $(seq "$ROUNDS"); do
            a=$(bench/handwritten/target/release/handwritten --loss "$loss" --shape "$shape" --threads 2 --iters 20 | median)
            b=$(target/release/lossc bench "$loss" --shape "$shape" --dtype f32 --threads 2 --iters 20 | median)
            h=$(python3 -c "print(min($h, $a))"); e=$(python3 -c "print(min($e, $b))")
        done
        python3 -c "
import math
n = math.prod(int(v) for v in '$shape'.split(','))
print('| 2^%d | %s | %.2f | %.2f | %.2f |' % (n.bit_length() - 1, '$loss', $h, $e, $e / $h))"
    done
done
