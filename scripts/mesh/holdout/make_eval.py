#!/usr/bin/env python3
"""Builds the hold-out evaluation folders from holdout.sh output.

  make_eval.py DATA MODEL_DIR

DATA/round-N.csv (from `ben flows --labels DATA/labels.csv --label unlabeled`)
and DATA/labels.csv -> DATA/eval/<family>/eval.csv for every attack family
(header + the family's flows + every benign flow of every round) and
DATA/eval/benign-<kind>/eval.csv for every benign kind (only that kind's
flows), each folder with copies of MODEL_DIR/mesh-lgbm.txt and
mesh-baseline.json. Columns are kept exactly as `ben flows` wrote them.
Also prints, per family, how many flows each folder got.
"""
import csv
import glob
import os
import re
import shutil
import sys
from collections import defaultdict

data, model_dir = sys.argv[1], sys.argv[2]
labels = list(csv.DictReader(open(os.path.join(data, "labels.csv"))))
rounds = {}
for p in glob.glob(os.path.join(data, "round-*.csv")):
    r = re.search(r"round-(\d+)\.csv$", p).group(1)
    with open(p, newline="") as f:
        rd = csv.reader(f)
        header = next(rd)
        rounds[r] = list(rd)
ci = {c: i for i, c in enumerate(header)}
SRC, TS, LAB = ci["Source IP"], ci["Timestamp"], ci["Label"]

attack = defaultdict(list)   # family -> rows
benign = defaultdict(list)   # kind -> rows
fam_class = {}
outside = defaultdict(int)
for lab in labels:
    r, ip, cls, fam = lab["round"], lab["src_ip"], lab["class"], lab["family"]
    t0, t1 = float(lab["start"]), float(lab["end"])
    fam_class[fam] = cls
    for row in rounds.get(r, []):
        if row[SRC] != ip or row[LAB] != cls:
            continue
        if t0 <= float(row[TS]) <= t1:
            (benign if cls == "benign" else attack)[fam].append(row)
        else:
            outside[fam] += 1

all_benign = [row for rows in benign.values() for row in rows]
evald = os.path.join(data, "eval")
shutil.rmtree(evald, ignore_errors=True)


def write(folder, rows):
    d = os.path.join(evald, folder)
    os.makedirs(d)
    for m in ("mesh-lgbm.txt", "mesh-baseline.json"):
        shutil.copy(os.path.join(model_dir, m), d)
    rows = sorted(rows, key=lambda r: float(r[TS]))
    with open(os.path.join(d, "eval.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


for fam in sorted(attack):
    write(fam, attack[fam] + all_benign)
    print(f"{fam:18s} {fam_class[fam]:13s} {len(attack[fam]):7d} flows (+{len(all_benign)} benign)"
          f"{'' if not outside[fam] else f'  [{outside[fam]} labelled rows outside span]'}")
for fam in sorted(f for f, c in fam_class.items() if c != "benign" and f not in attack):
    print(f"{fam:18s} {fam_class[fam]:13s}       0 flows  (no folder)")
for kind in sorted(benign):
    write("benign-" + kind, benign[kind])
    print(f"benign-{kind:11s} benign        {len(benign[kind]):7d} flows")
unl = sum(1 for rows in rounds.values() for row in rows if row[LAB] == "unlabeled")
print(f"unlabeled rows (servers' own flows etc.): {unl}")
