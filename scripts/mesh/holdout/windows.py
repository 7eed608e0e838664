#!/usr/bin/env python3
"""Per-10-s-window summary of one source's flows in a `ben flows` CSV.

  windows.py FLOWS.csv SRC_IP [SRC_IP...]

Prints, per source and 10 s window (epoch multiples of 10): flows, distinct
destination ports, distinct destination addresses, packets and bytes each way.
"""
import csv
import sys
from collections import defaultdict

path, ips = sys.argv[1], set(sys.argv[2:])
win = defaultdict(lambda: {"n": 0, "ports": set(), "dsts": set(), "fp": 0, "bp": 0, "fb": 0, "bb": 0})
for row in csv.DictReader(open(path, newline="")):
    if row["Source IP"] not in ips:
        continue
    w = win[(row["Source IP"], int(float(row["Timestamp"]) // 10 * 10))]
    w["n"] += 1
    w["ports"].add(row["Destination Port"])
    w["dsts"].add(row["Destination IP"])
    w["fp"] += int(float(row["Total Fwd Packets"]))
    w["bp"] += int(float(row["Total Backward Packets"]))
    w["fb"] += int(float(row["Total Length of Fwd Packets"]))
    w["bb"] += int(float(row["Total Length of Bwd Packets"]))
print("src,window,flows,dst_ports,dst_addrs,fwd_pkts,bwd_pkts,fwd_bytes,bwd_bytes")
for (ip, t), w in sorted(win.items()):
    print(f"{ip},{t},{w['n']},{len(w['ports'])},{len(w['dsts'])},{w['fp']},{w['bp']},{w['fb']},{w['bb']}")
