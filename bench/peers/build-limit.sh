#!/usr/bin/env bash
# Builds the hand-written speed yardstick (limit.rs beside this script) for this machine's CPU
# (-C target-cpu=native) into ${LIMIT_DIR:-target/limit-yardstick} (relative to where it is run) and prints the binary's path.
# Usage: $(bench/peers/build-limit.sh) --logn 20,24 --threads 2 [--losses bce,dice] [--stream]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "${LIMIT_DIR:-target/limit-yardstick}"
d=$(cd "${LIMIT_DIR:-target/limit-yardstick}" && pwd)
mkdir -p "$d"
cat >"$d/Cargo.toml" <<TOML
[package]
name = "limit"
version = "0.1.0"
edition = "2021"
[[bin]]
name = "limit"
path = "$here/limit.rs"
[dependencies]
rayon = "1.10"
[profile.release]
opt-level = 3
codegen-units = 1
lto = "fat"
panic = "abort"
TOML
(cd "$d" && RUSTFLAGS="-C target-cpu=native" cargo build --release -q) >&2
echo "$d/target/release/limit"
