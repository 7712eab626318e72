#!/usr/bin/env bash
# Times `lossc bench` (plain `cargo build --release`) against the hand-written yardstick
# bench/peers/limit.rs (built by bench/peers/build-limit.sh for this machine's CPU), alternating
# the two programs ROUNDS times per (loss, N) and keeping each side's best median, so both see
# the same machine state. Prints a markdown table with the ratio lossc / limit.rs (issue 12's
# goal: <= 1.3 at 2^20 and 2^24, every loss), for lossc as it runs (native kernels for the
# standard library's passes) and with every pass as bytecode (LOSSLANG_NATIVE=0).
# LOSSLANG_ISA=avx2|base caps lossc's instruction set (build limit.rs for the same level with
# RUSTFLAGS, see build-limit.sh, to compare paths).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
cargo build --release -q
limit=$(bench/peers/build-limit.sh)
median() { grep -o '"median_ms":[0-9.e-]*' | cut -d: -f2; }
isa=$(target/release/lossc bench bce --shape 1,1,64,64 --iters 1 | grep -o '"instruction_set":"[a-z0-9]*"' | cut -d'"' -f4)
echo "lossc instruction set: $isa; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
echo "| N | loss | limit.rs ms | lossc ms | ratio | bytecode ms | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for spec in 20:4,1,512,512 24:16,1,1024,1024; do
    logn=${spec%%:*}; shape=${spec#*:}
    for loss in bce focal dice tversky combo; do
        h=999999; e=999999; v=999999
        for _ in $(seq "$ROUNDS"); do
            a=$("$limit" --logn "$logn" --threads "$THREADS" --losses "$loss" | median)
            b=$(target/release/lossc bench "$loss" --shape "$shape" --dtype f32 --threads "$THREADS" --iters 30 | median)
            c=$(LOSSLANG_NATIVE=0 target/release/lossc bench "$loss" --shape "$shape" --dtype f32 --threads "$THREADS" --iters 30 | median)
            h=$(python3 -c "print(min($h, $a))"); e=$(python3 -c "print(min($e, $b))"); v=$(python3 -c "print(min($v, $c))")
        done
        python3 -c "print('| 2^$logn | $loss | %.2f | %.2f | %.2f | %.2f | %.2f |' % ($h, $e, $e / $h, $v, $v / $h))"
    done
done
