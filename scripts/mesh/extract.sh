#!/usr/bin/env bash
# Turns the generator's captures into labelled flow CSVs for train.py:
#   DATA/round-N.pcap + DATA/labels.csv  ->  DATA/round-N.csv
#
#   scripts/mesh/extract.sh [DATA]        (default: data/mesh)
#   BEN=/path/to/ben scripts/mesh/extract.sh [DATA]   (use that binary, no build)
#
# Rounds whose CSV is newer than their pcap are skipped (MESH_FORCE=1 redoes
# them), so it can run again while gen-data.sh appends rounds; a round still
# being captured (its pcap written in the last 10 s) is left for later.
#
# Uses `ben flows` (crates/mesh-flows), the same extractor `ben detect
# --pcap` uses, so training and detection see identical features.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
data="${1:-$root/data/mesh}"
if [ -n "${BEN:-}" ]; then
  ben="$BEN"
else
  cargo build --release -q -p ben-cli --bin ben --manifest-path "$root/Cargo.toml"
  ben="${CARGO_TARGET_DIR:-$root/target}/release/ben"
fi
for pcap in "$data"/round-*.pcap; do
  out="${pcap%.pcap}.csv"
  if [ "${MESH_FORCE:-0}" != 1 ] && [ "$out" -nt "$pcap" ]; then continue; fi
  if [ $(( $(date +%s) - $(stat -c %Y "$pcap") )) -lt 10 ]; then
    echo "$pcap: still being written, skipped" >&2; continue
  fi
  "$ben" flows "$pcap" --format csv --labels "$data/labels.csv" --label unlabeled > "$out"
  echo "$out: $(($(wc -l < "$out") - 1)) flows" >&2
done
