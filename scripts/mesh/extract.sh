#!/usr/bin/env bash
# Turns the generator's captures into labelled flow CSVs for train.py:
#   DATA/round-N.pcap + DATA/labels.csv  ->  DATA/round-N.csv
#
#   scripts/mesh/extract.sh [DATA]        (default: data/mesh)
#
# Uses `ben flows` (crates/mesh-flows), the same extractor `ben detect
# --pcap` uses, so training and detection see identical features.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
data="${1:-$root/data/mesh}"
cargo build --release -q -p ben-cli --manifest-path "$root/Cargo.toml"
ben="${CARGO_TARGET_DIR:-$root/target}/release/ben"
for pcap in "$data"/round-*.pcap; do
  out="${pcap%.pcap}.csv"
  "$ben" flows "$pcap" --format csv --labels "$data/labels.csv" --label unlabeled > "$out"
  echo "$out: $(($(wc -l < "$out") - 1)) flows" >&2
done
