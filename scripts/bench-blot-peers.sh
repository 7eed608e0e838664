#!/usr/bin/env bash
# Installs the Blot peer (Microsoft Presidio's analyzer, pattern recognizers
# only: no spaCy model is downloaded) into a venv under .ben/ and runs
# scripts/bench-blot-peers.py on Blot's labeled corpus.
#
#   bash scripts/bench-blot-peers.sh            # uses .ben/blot-peer-venv
#   BLOT_PEER_VENV=/tmp/v bash scripts/bench-blot-peers.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${BLOT_PEER_VENV:-$root/.ben/blot-peer-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet presidio-analyzer
fi
exec "$venv/bin/python" "$root/scripts/bench-blot-peers.py" "$root/crates/blot/corpus/pii.jsonl" "$@"
