#!/usr/bin/env bash
# Times the five peer losses with `lossc bench` (f32, 2 threads) at N = 2^20 and 2^24 and prints a
# markdown table of median milliseconds, passes and effective GB/s. Run the peers
# (bench/peers/README.md) in the same session to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
for shape in 4,1,512,512 16,1,1024,1024; do
    for loss in bce focal dice tversky combo; do
        target/release/lossc bench "$loss" --shape "$shape" --dtype f32 --threads 2 --iters 20
    done
done | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
print("| loss | N | median ms | passes | effective GB/s | compile ms |")
print("| --- | --- | --- | --- | --- | --- |")
for d in rows:
    n = d["elements"].bit_length() - 1
    print("| %s | 2^%d | %.2f | %d | %.1f | %.2f |" % (d["loss"], n, d["median_ms"], d["passes"], d["effective_gb_per_s"], d["compile_ms"]))
'
