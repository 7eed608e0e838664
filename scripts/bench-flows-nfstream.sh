#!/usr/bin/env bash
# Flow extraction: Ben's sensor (`ben flows`) against nfstream, timed on the
# same synthetic capture in the same run (DESIGN §7: >= 1M packets/s; peer
# anchor nfstream ~70k packets/s).
#
# Both tools read the pcap from disk and produce every flow with its
# statistical features: `ben flows` writes the CIC-78 CSV to /dev/null;
# nfstream runs with statistical_analysis=True, no DPI (n_dissections=0),
# one meter process (single core, like ben), 120 s idle/active timeouts.
#
#   scripts/bench-flows-nfstream.sh            # 200k packets (the criterion bench capture)
#   PACKETS=1000000 scripts/bench-flows-nfstream.sh
#
# Needs python3 with venv and network access to PyPI (pip install nfstream).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
packets="${PACKETS:-200000}"
seed="${SEED:-1}"
work="${BENCH_DIR:-$root/target/bench-flows}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$work"

venv="$work/nfstream-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import nfstream' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet nfstream
fi

cargo build --quiet --release -p ben-cli -p ben-mesh-flows --example dump-bench-capture
pcap="$work/bench-$packets-$seed.pcap"
[ -f "$pcap" ] || "$CARGO_TARGET_DIR/release/examples/dump-bench-capture" "$pcap" "$packets" "$seed"

# Warm the page cache so neither tool pays for the first read.
cat "$pcap" > /dev/null

"$venv/bin/python" - "$pcap" "$packets" "$CARGO_TARGET_DIR/release/ben" <<'PY'
import re, subprocess, sys, time
from nfstream import NFStreamer
pcap, packets, ben = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def best_of(n, f):
    best, out = None, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = f()
        t = time.perf_counter() - t0
        best = t if best is None or t < best else best
    return best, out

def run_ben():
    r = subprocess.run([ben, "flows", pcap], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, check=True)
    return int(re.search(r" in (\d+) flows", r.stderr).group(1))

def run_nfstream():
    s = NFStreamer(source=pcap, statistical_analysis=True, n_dissections=0,
                   splt_analysis=0, n_meters=1, idle_timeout=120, active_timeout=120)
    return sum(1 for _ in s)

tb, fb = best_of(3, run_ben)
tn, fn = best_of(2, run_nfstream)
print(f"capture: {packets} packets ({pcap})")
print(f"ben flows: {tb:8.3f} s {packets / tb:12.0f} packets/s {fb} flows")
print(f"nfstream:  {tn:8.3f} s {packets / tn:12.0f} packets/s {fn} flows")
print(f"ratio ben/nfstream: {tn / tb:.1f}x")

# Agreement: per flow, packets in each direction, duration and SYN/FIN/RST
# counts must match between the two tools.
import json
out = subprocess.run([ben, "flows", pcap, "--format", "jsonl"], capture_output=True,
                     text=True, check=True).stdout
ours = {}
for line in out.splitlines():
    r = json.loads(line)
    ours[(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["protocol"],
          r["start_ns"] // 1_000_000)] = r["features"]
agree = 0
theirs = NFStreamer(source=pcap, statistical_analysis=True, n_dissections=0,
                    splt_analysis=0, n_meters=1, idle_timeout=120, active_timeout=120)
for f in theirs:
    F = ours.get((f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.protocol,
                  f.bidirectional_first_seen_ms))
    if F is not None and (F["Total Fwd Packets"], F["Total Backward Packets"],
                          F["SYN Flag Count"], F["FIN Flag Count"], F["RST Flag Count"]) == (
            f.src2dst_packets, f.dst2src_packets, f.bidirectional_syn_packets,
            f.bidirectional_fin_packets, f.bidirectional_rst_packets) \
            and abs(F["Flow Duration"] / 1000 - f.bidirectional_duration_ms) <= 1:
        agree += 1
print(f"agreement: {agree} of {fn} nfstream flows match ben's packets, duration and flags")
PY
