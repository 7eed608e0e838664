#!/usr/bin/env python3
"""Trains the CyberMesh LightGBM model and writes everything the Rust
detector and its tests load.

    data/mesh/venv/bin/python scripts/mesh/train.py [--data data/mesh] [--test-rounds 2]

Input: DATA/round-N.csv, flow records from `ben flows` labelled with
DATA/labels.csv (scripts/mesh/extract.sh makes them). The split is
temporal: the last --test-rounds rounds are the test set, the round before
them is the validation set for early stopping, the rest is training.

Output:
  models/mesh-lgbm.txt                 LightGBM text model (multiclass softmax)
  models/mesh-baseline.json            class names + benign medians/MADs (math engine)
  crates/mesh-detect/tests/data/parity.csv   held-out rows with Python's raw scores
                                       and probabilities (repr floats)
  crates/mesh-detect/tests/data/test-flows.csv.gz   the test split, for the quality test
"""
import argparse
import csv
import gzip
import json
import math
import os
import re
import sys
import tomllib

import lightgbm as lgb
import numpy as np

CLASSES = ["benign", "portscan", "flood", "bruteforce", "exfiltration"]
# Column names the Rust reader treats as flow identity, not features
# (crates/mesh-detect/src/flow.rs, `classify`).
KEY_COLUMNS = {
    "flow_id", "id", "src_ip", "source_ip", "saddr", "src_addr", "src", "src_port",
    "source_port", "sport", "dst_ip", "destination_ip", "daddr", "dst_addr", "dst",
    "dst_port", "destination_port", "dport", "protocol", "proto", "ip_proto",
    "timestamp", "ts", "start", "start_time", "first_seen", "start_us", "timestamp_us",
    "start_ts", "label", "class", "end_time", "last_seen", "end_us", "end_ts",
    "direction", "flow_key", "schema", "end_reason", "start_ns", "end_ns",
}
WINDOW_SECS = 10.0
SCALE_FLOOR = 0.25  # in signed-log units: a factor of e^0.25 ≈ 1.28


def normalize(name):
    """Same as flow::normalize_name in Rust."""
    return "_".join(t for t in re.split(r"[^0-9A-Za-z]+", name) if t).lower()


def slog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def read_round(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [normalize(h) for h in rows[0]]
    return header, rows[1:]


def robust(values, tail=False):
    """Median and scale of slog(values). The scale is 1.4826·MAD; with
    `tail`, it is capped so that the benign 99th percentile sits at z = 2.326
    (as for a normal law): multimodal quantities (a window's bytes are 0 for
    a DNS client and megabytes for a download) have a MAD so wide that real
    outliers would hide inside it."""
    v = slog(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"median": 0.0, "scale": 1.0}
    med = float(np.median(v))
    scale = 1.4826 * float(np.median(np.abs(v - med)))
    if tail:
        q99 = float(np.percentile(v, 99))
        if q99 > med:
            scale = min(scale, (q99 - med) / 2.326)
    return {"median": med, "scale": max(scale, SCALE_FLOOR)}


SOURCE_METRICS = [
    "flows", "flows_per_sec", "distinct_dst_ports", "distinct_dst_ips", "empty_ratio",
    "syn_only_ratio", "fwd_packets_per_sec", "mean_fwd_payload", "max_flows_to_one_port",
    "auth_flows", "max_auth_flows_to_one_port", "mean_duration_secs", "fwd_bytes",
    "bwd_bytes", "max_flow_fwd_bytes", "upload_ratio",
]


def epoch_us(text):
    """`seconds.micros` -> integer µs, exactly as the Rust reader rounds."""
    return int(round(float(text) * 1e6)) if "e" in text.lower() else (
        int(text.split(".")[0]) * 1_000_000 + int((text.split(".") + ["0"])[1].ljust(6, "0")[:6]))


def source_stats(rows, col, auth_ports, offset_us=0):
    """Per (source, window) metrics, mirroring window::SourceStats in Rust.
    Returns one dict of metrics per row (the row's source in its window).
    `offset_us` shifts the window grid (training augmentation only: the
    detector's windows start at multiples of the window length)."""
    def num(row, name):
        v = float(row[col[name]]) if row[col[name]] != "" else 0.0
        return v if math.isfinite(v) else 0.0
    win_us = int(WINDOW_SECS * 1e6)
    keys = []
    acc = {}
    for row in rows:
        key = (row[col["source_ip"]], (epoch_us(row[col["timestamp"]]) - offset_us) // win_us)
        keys.append(key)
        a = acc.setdefault(key, {"flows": 0.0, "ports": set(), "ips": set(), "empty": 0.0,
                                 "syn_only": 0.0, "fwd_pkts": 0.0, "per_port": {}, "auth": 0.0,
                                 "dur": 0.0, "fwd": 0.0, "bwd": 0.0, "max_fwd": 0.0})
        port = int(float(row[col["destination_port"]]))
        dst = row[col["destination_ip"]]
        fwd, bwd = num(row, "total_length_of_fwd_packets"), num(row, "total_length_of_bwd_packets")
        a["flows"] += 1
        a["ports"].add(port)
        a["ips"].add(dst)
        if fwd + bwd <= 0:
            a["empty"] += 1
            if num(row, "syn_flag_count") > 0 or int(float(row[col["protocol"]])) != 6:
                a["syn_only"] += 1
        a["fwd_pkts"] += num(row, "total_fwd_packets")
        a["per_port"][(dst, port)] = a["per_port"].get((dst, port), 0.0) + 1
        if port in auth_ports:
            a["auth"] += 1
        a["dur"] += num(row, "flow_duration")
        a["fwd"] += fwd
        a["bwd"] += bwd
        a["max_fwd"] = max(a["max_fwd"], fwd)
    stats = {}
    for key, a in acc.items():
        n = max(a["flows"], 1.0)
        total = a["fwd"] + a["bwd"]
        auth = [c for (ip, p), c in a["per_port"].items() if p in auth_ports]
        stats[key] = {
            "flows": a["flows"], "flows_per_sec": a["flows"] / WINDOW_SECS,
            "distinct_dst_ports": float(len(a["ports"])), "distinct_dst_ips": float(len(a["ips"])),
            "empty_ratio": a["empty"] / n, "syn_only_ratio": a["syn_only"] / n,
            "fwd_packets_per_sec": a["fwd_pkts"] / WINDOW_SECS,
            "mean_fwd_payload": a["fwd"] / a["fwd_pkts"] if a["fwd_pkts"] > 0 else 0.0,
            "max_flows_to_one_port": max(a["per_port"].values()),
            "auth_flows": a["auth"], "max_auth_flows_to_one_port": max(auth) if auth else 0.0,
            "mean_duration_secs": a["dur"] / n / 1e6, "fwd_bytes": a["fwd"], "bwd_bytes": a["bwd"],
            "max_flow_fwd_bytes": a["max_fwd"], "upload_ratio": a["fwd"] / total if total > 0 else 0.0,
        }
    return [stats[k] for k in keys], stats


# Window metrics the model sees next to the flow's own features.
MODEL_SOURCE_METRICS = [
    "flows", "distinct_dst_ports", "distinct_dst_ips", "empty_ratio", "syn_only_ratio",
    "fwd_packets_per_sec", "mean_fwd_payload", "max_flows_to_one_port",
    "max_auth_flows_to_one_port", "mean_duration_secs", "max_flow_fwd_bytes", "upload_ratio",
]


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--data", default=os.path.join(root, "data", "mesh"))
    ap.add_argument("--test-rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--parity-rows", type=int, default=400)
    args = ap.parse_args()

    rounds = sorted(
        (int(m.group(1)), os.path.join(args.data, n))
        for n in os.listdir(args.data)
        if (m := re.fullmatch(r"round-(\d+)\.csv", n))
    )
    if len(rounds) < args.test_rounds + 2:
        sys.exit(f"need at least {args.test_rounds + 2} rounds in {args.data}, found {len(rounds)}")
    with open(os.path.join(root, "models", "rules.toml"), "rb") as f:
        auth_ports = set(tomllib.load(f).get("auth_ports", []))

    header = None
    data = {}  # round -> (X rows, y, raw rows)
    for r, path in rounds:
        h, rows = read_round(path)
        if header is None:
            header = h
        elif h != header:
            sys.exit(f"{path}: header differs from the first round's")
        data[r] = rows
    label_col = header.index("label")
    feat_idx = [i for i, h in enumerate(header) if h not in KEY_COLUMNS]
    col = {h: i for i, h in enumerate(header)}
    feat_names = [header[i] for i in feat_idx] + ["src_" + m for m in MODEL_SOURCE_METRICS]

    def matrix(rounds_rows, offsets=(0,)):
        """Rows of several rounds -> X, y, kept rows, per-window source stats.
        Window stats are computed per round over all its flows (labelled or
        not), as the detector sees them. Several window offsets give the
        model several views of the same traffic (attacks cut at different
        points by window edges)."""
        X, y, keep, windows = [], [], [], []
        for rows in rounds_rows:
            for off in offsets:
                per_row, stats = source_stats(rows, col, auth_ports, off)
                if off == 0:
                    windows.append(stats)
                for row, st in zip(rows, per_row):
                    lab = row[label_col].strip().lower()
                    if lab not in CLASSES:
                        continue  # unlabeled traffic (e.g. server-initiated) is left out
                    X.append([float(row[i]) if row[i] != "" else math.nan for i in feat_idx]
                             + [st[m] for m in MODEL_SOURCE_METRICS])
                    y.append(CLASSES.index(lab))
                    keep.append(row)
        return np.array(X, dtype=np.float64), np.array(y), keep, windows

    order = [r for r, _ in rounds]
    test_r = order[-args.test_rounds:]
    valid_r = [order[-args.test_rounds - 1]]
    train_r = order[: -args.test_rounds - 1]
    augment = tuple(int(k * WINDOW_SECS * 1e6 / 4) for k in range(4))
    split = {name: matrix([data[r] for r in rs], augment if name == "train" else (0,))
             for name, rs in (("train", train_r), ("valid", valid_r), ("test", test_r))}
    for name, (X, y, _, _) in split.items():
        counts = {CLASSES[c]: int((y == c).sum()) for c in range(len(CLASSES))}
        print(f"{name}: rounds {dict(train=train_r, valid=valid_r, test=test_r)[name]} {len(y)} flows {counts}")

    Xtr, ytr, _, train_windows = split["train"]
    Xva, yva, _, _ = split["valid"]
    # Balance classes: weight ∝ 1/frequency, normalised so benign has weight 1.
    freq = np.bincount(ytr, minlength=len(CLASSES)).astype(float)
    cw = np.where(freq > 0, freq[0] / np.maximum(freq, 1), 1.0)
    cw = np.clip(cw, 0.02, 50.0)
    params = dict(
        objective="multiclass", num_class=len(CLASSES), learning_rate=0.1,
        num_leaves=15, min_data_in_leaf=5, feature_fraction=0.9, bagging_fraction=0.9,
        bagging_freq=1, lambda_l2=1.0, seed=args.seed, deterministic=True,
        num_threads=1, verbose=-1,
    )
    dtr = lgb.Dataset(Xtr, ytr, weight=cw[ytr], feature_name=feat_names, free_raw_data=False)
    dva = lgb.Dataset(Xva, yva, weight=cw[yva], reference=dtr)
    booster = lgb.train(params, dtr, num_boost_round=150, valid_sets=[dva],
                        callbacks=[lgb.early_stopping(30, verbose=False)])
    best = booster.best_iteration or booster.current_iteration()
    print(f"trees: {best} iterations x {len(CLASSES)} classes")
    model_path = os.path.join(root, "models", "mesh-lgbm.txt")
    booster.save_model(model_path, num_iteration=best)
    # Reload from text so predictions come from exactly what Rust will read.
    model = lgb.Booster(model_file=model_path)

    # Benign baseline for the math engine (training rounds only).
    benign = Xtr[ytr == 0]
    baseline = {"version": 1, "classes": CLASSES, "features": {}, "source": {}}
    for j, name in enumerate(feat_names):
        if not name.startswith("src_"):
            baseline["features"][name] = robust(benign[:, j])
    # Per-source window metrics of benign sources (their (source, window) pairs).
    benign_sources = set()
    for row, yy in zip(split["train"][2], ytr):
        if yy == 0:
            benign_sources.add(row[col["source_ip"]])
    for m in SOURCE_METRICS:
        values = [st[m] for stats in train_windows for (src, _), st in stats.items() if src in benign_sources]
        baseline["source"][m] = robust(values, tail=True)
    with open(os.path.join(root, "models", "mesh-baseline.json"), "w") as f:
        json.dump(baseline, f, indent=1, sort_keys=True)
        f.write("\n")

    # Parity fixture: held-out rows (stratified), plus edge rows with NaN and 0.
    Xte, yte, kept_te, _ = split["test"]
    rng = np.random.default_rng(args.seed)
    pick = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(yte == c)
        pick.extend(rng.choice(idx, size=min(len(idx), args.parity_rows // len(CLASSES)), replace=False))
    P = Xte[sorted(pick)].copy()
    edge = P[: min(20, len(P))].copy()
    mask = rng.random(edge.shape) < 0.3
    edge[mask] = np.nan
    zeros = P[: min(20, len(P))].copy()
    zeros[rng.random(zeros.shape) < 0.3] = 0.0
    P = np.vstack([P, edge, zeros])
    raw = model.predict(P, raw_score=True)
    prob = model.predict(P)
    fixture = os.path.join(root, "crates", "mesh-detect", "tests", "data", "parity.csv")
    with open(fixture, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(feat_names + [f"raw_{c}" for c in CLASSES] + [f"prob_{c}" for c in CLASSES])
        for x, rs, ps in zip(P, raw, prob):
            w.writerow([repr(float(v)) for v in x] + [repr(float(v)) for v in rs] + [repr(float(v)) for v in ps])

    # Test split for the Rust quality test: the original rows, labelled flows only.
    test_path = os.path.join(root, "crates", "mesh-detect", "tests", "data", "test-flows.csv.gz")
    with open(rounds[0][1], newline="") as f:
        raw_header = next(csv.reader(f))
    with gzip.GzipFile(test_path, "wb", mtime=0) as gz:
        import io
        text = io.TextIOWrapper(gz, newline="")
        w = csv.writer(text, lineterminator="\n")
        w.writerow(raw_header)
        for row in kept_te:
            w.writerow(row)
        text.flush()
        text.detach()

    # Python-side figures for the report (the Rust test computes its own).
    pt = model.predict(Xte).argmax(axis=1)
    f1s = []
    for c in range(len(CLASSES)):
        tp = int(((pt == c) & (yte == c)).sum())
        fp = int(((pt == c) & (yte != c)).sum())
        fn = int(((pt != c) & (yte == c)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        rcl = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * rcl / (p + rcl) if p + rcl else 0.0
        f1s.append(f1)
        print(f"  ML alone {CLASSES[c]:>13}: precision {p:.4f} recall {rcl:.4f} f1 {f1:.4f} (n={int((yte == c).sum())})")
    far = float(((pt != 0) & (yte == 0)).sum()) / max(int((yte == 0).sum()), 1)
    print(f"ML alone: macro-F1 {np.mean(f1s):.4f}, false alarms {far:.5f}")
    print(f"wrote {model_path}, models/mesh-baseline.json, {fixture}, {test_path}")


if __name__ == "__main__":
    main()
