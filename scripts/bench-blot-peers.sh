#!/usr/bin/env bash
# Installs the Blot peer (Microsoft Presidio's analyzer, pattern recognizers
# and its libphonenumber-based PhoneRecognizer; no spaCy model is downloaded)
# into a venv under .ben/, builds Blot's scan_jsonl example, and runs
# scripts/bench-blot-peers.py: both on the same sentences, kind by kind.
#
#   bash scripts/bench-blot-peers.sh            # the three corpora below
#   bash scripts/bench-blot-peers.sh my.jsonl   # any files in the corpus format
#   BLOT_PEER_VENV=/tmp/v bash scripts/bench-blot-peers.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${BLOT_PEER_VENV:-$root/.ben/blot-peer-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet presidio-analyzer
fi
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build --quiet --release -p ben-blot --example scan_jsonl)
blot="$target/release/examples/scan_jsonl"
if [ "$#" -eq 0 ]; then
  c="$root/crates/blot/corpus"
  set -- "$c/pii.jsonl" "$c/faker/dev.jsonl" "$c/faker/heldout.jsonl"
fi
exec "$venv/bin/python" "$root/scripts/bench-blot-peers.py" "$blot" "$@"
