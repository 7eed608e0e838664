#!/usr/bin/env python3
"""Trains the CyberMesh LightGBM model and writes everything the Rust
detector and its tests load.

    data/mesh/venv/bin/python scripts/mesh/train.py [--data data/mesh] [--test-rounds 2] [--config aug]

Input: DATA/round-N.csv, flow records from `ben flows` labelled with
DATA/labels.csv (scripts/mesh/extract.sh makes them). The split is
temporal: the last --test-rounds rounds are the test set, the round before
them is the validation set for early stopping, the rest is training.
labels.csv (`round,src_ip,class,family,start,end`) also gives each flow its
attack family (the rule that labelled it, matched as `ben flows` matches:
initiator first, then responder); scripts/mesh/lofo.py imports this module
to train without one family at a time.

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
    "bwd_bytes", "max_flow_fwd_bytes", "upload_ratio", "unanswered_ratio",
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
                                 "dur": 0.0, "fwd": 0.0, "bwd": 0.0, "max_fwd": 0.0,
                                 "unanswered": 0.0})
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
        if num(row, "total_backward_packets") <= 0:
            a["unanswered"] += 1
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
            "unanswered_ratio": a["unanswered"] / n,
        }
    return [stats[k] for k in keys], stats


# Window metrics the model sees next to the flow's own features.
MODEL_SOURCE_METRICS = [
    "flows", "distinct_dst_ports", "distinct_dst_ips", "empty_ratio", "syn_only_ratio",
    "fwd_packets_per_sec", "mean_fwd_payload", "max_flows_to_one_port",
    "max_auth_flows_to_one_port", "mean_duration_secs", "max_flow_fwd_bytes", "upload_ratio",
    "unanswered_ratio",
]



def read_label_rules(path):
    """labels.csv -> {host: [(start, end, class, family)]} in file order.
    Files without a family column (older generator) use the class."""
    rules = {}
    with open(path, newline="") as f:
        rd = csv.DictReader(f)
        for row in rd:
            fam = (row.get("family") or row["class"]).strip()
            rules.setdefault(row["src_ip"].strip(), []).append(
                (float(row["start"]), float(row["end"]), row["class"].strip(), fam))
    return rules


def family_of(rules, src, dst, t):
    """(family, by_initiator) of a flow starting at t, as `ben flows` picks
    the label: the first rule of the initiator, else of the responder."""
    for host, init in ((src, True), (dst, False)):
        for start, end, _cls, fam in rules.get(host, ()):
            if start <= t <= end:
                return fam, init
    return "", False


DEFAULT_PARAMS = dict(
    objective="multiclass", num_class=len(CLASSES), learning_rate=0.1,
    num_leaves=15, min_data_in_leaf=5, feature_fraction=0.9, bagging_fraction=0.9,
    bagging_freq=1, lambda_l2=1.0, deterministic=True, num_threads=1, verbose=-1,
)


class Dataset:
    """All rounds of a data directory, with per-row features computed once
    (per window offset) and each labelled row's class, family, round."""

    def __init__(self, data_dir, root):
        self.data_dir = data_dir
        self.rounds = sorted(
            (int(m.group(1)), os.path.join(data_dir, n))
            for n in os.listdir(data_dir)
            if (m := re.fullmatch(r"round-(\d+)\.csv", n))
        )
        with open(os.path.join(root, "models", "rules.toml"), "rb") as f:
            self.auth_ports = set(tomllib.load(f).get("auth_ports", []))
        self.header, self.raw_header, self.data = None, None, {}
        for r, path in self.rounds:
            h, rows = read_round(path)
            if self.header is None:
                self.header = h
                with open(path, newline="") as f:
                    self.raw_header = next(csv.reader(f))
            elif h != self.header:
                sys.exit(f"{path}: header differs from the first round's")
            self.data[r] = rows
        header = self.header
        self.label_col = header.index("label")
        self.feat_idx = [i for i, h in enumerate(header) if h not in KEY_COLUMNS]
        self.col = {h: i for i, h in enumerate(header)}
        self.feat_names = [header[i] for i in self.feat_idx] + ["src_" + m for m in MODEL_SOURCE_METRICS]
        self.rules = read_label_rules(os.path.join(data_dir, "labels.csv"))
        self._cache = {}

    def round_matrix(self, r, off=0):
        """One round at one window offset -> dict of arrays over its labelled
        rows (X, y, family, initiator flag, row index) and the window stats.
        Window stats are computed over all the round's flows (labelled or
        not), as the detector sees them."""
        key = (r, off)
        if key in self._cache:
            return self._cache[key]
        rows, col = self.data[r], self.col
        per_row, stats = source_stats(rows, col, self.auth_ports, off)
        X, y, fam, init, idx = [], [], [], [], []
        for i, (row, st) in enumerate(zip(rows, per_row)):
            lab = row[self.label_col].strip().lower()
            if lab not in CLASSES:
                continue  # unlabeled traffic (e.g. server-initiated) is left out
            X.append([float(row[j]) if row[j] != "" else math.nan for j in self.feat_idx]
                     + [st[m] for m in MODEL_SOURCE_METRICS])
            y.append(CLASSES.index(lab))
            f, by_init = family_of(self.rules, row[col["source_ip"]], row[col["destination_ip"]],
                                   float(row[col["timestamp"]]))
            fam.append(f or lab)
            init.append(by_init)
            idx.append(i)
        out = dict(X=np.array(X, dtype=np.float64).reshape(-1, len(self.feat_names)),
                   y=np.array(y, dtype=np.int64), family=np.array(fam, dtype=object),
                   init=np.array(init, dtype=bool), idx=np.array(idx, dtype=np.int64),
                   round=np.full(len(y), r), stats=stats)
        self._cache[key] = out
        return out

    def matrix(self, rounds, offsets=(0,), drop_families=(), cap=None, seed=7):
        """Stacks rounds (and window offsets: several views of the same
        traffic, attacks cut at different points by window edges), leaving
        out rows of `drop_families`. With `cap`, an attack family keeps at
        most `cap` random rows per round and offset (floods are thousands
        of near-identical flows; class weights rebalance anyway)."""
        parts = [self.round_matrix(r, off) for r in rounds for off in offsets]
        X = np.vstack([p["X"] for p in parts])
        cat = lambda k: np.concatenate([p[k] for p in parts])
        y, fam, init, idx, rnd = cat("y"), cat("family"), cat("init"), cat("idx"), cat("round")
        keep = ~np.isin(fam, list(drop_families)) if drop_families else np.ones(len(y), bool)
        if cap is not None:
            rng = np.random.default_rng(seed)
            part = np.concatenate([np.full(len(p["y"]), k) for k, p in enumerate(parts)])
            groups = {}
            for i in np.flatnonzero(keep & (y != 0)):
                groups.setdefault((part[i], fam[i]), []).append(i)
            for rows in groups.values():
                if len(rows) > cap:
                    keep[rng.choice(rows, size=len(rows) - cap, replace=False)] = False
        windows = [self.round_matrix(r, 0)["stats"] for r in rounds]
        return dict(X=X[keep], y=y[keep], family=fam[keep], init=init[keep], idx=idx[keep],
                    round=rnd[keep], windows=windows)

    def families(self):
        return sorted({fam for hosts in self.rules.values() for (_, _, cls, fam) in hosts
                       if cls.lower() != "benign"})


def class_weights(y, attack_boost=1.0):
    """Weight ∝ 1/frequency, normalised so benign has weight 1, clipped;
    `attack_boost` multiplies every attack class."""
    freq = np.bincount(y, minlength=len(CLASSES)).astype(float)
    cw = np.where(freq > 0, freq[0] / np.maximum(freq, 1), 1.0)
    cw = np.clip(cw, 0.02, 50.0)
    cw[1:] *= attack_boost
    return cw


def fit(ds, tr, va, params, seed, cw=None, num_boost_round=150, extra=None):
    """Trains with early stopping on `va`; `extra` = optional (X, y) rows
    added to training only (augmentation)."""
    Xtr, ytr = tr["X"], tr["y"]
    if extra is not None:
        Xtr, ytr = np.vstack([Xtr, extra[0]]), np.concatenate([ytr, extra[1]])
    if cw is None:
        cw = class_weights(tr["y"])
    p = dict(params, seed=seed)
    dtr = lgb.Dataset(Xtr, ytr, weight=cw[ytr], feature_name=ds.feat_names, free_raw_data=False)
    dva = lgb.Dataset(va["X"], va["y"], weight=cw[va["y"]], reference=dtr)
    booster = lgb.train(p, dtr, num_boost_round=num_boost_round, valid_sets=[dva],
                        callbacks=[lgb.early_stopping(30, verbose=False)])
    return booster, booster.best_iteration or booster.current_iteration()


def benign_baseline(ds, tr):
    """Benign baseline for the math engine from training rows and windows."""
    Xtr, ytr = tr["X"], tr["y"]
    benign = Xtr[ytr == 0]
    baseline = {"version": 1, "classes": CLASSES, "features": {}, "source": {}}
    for j, name in enumerate(ds.feat_names):
        if not name.startswith("src_"):
            baseline["features"][name] = robust(benign[:, j])
    # Per-source window metrics of benign sources (their (source, window) pairs).
    benign_sources = set()
    for r, i, yy in zip(tr["round"], tr["idx"], ytr):
        if yy == 0:
            benign_sources.add(ds.data[r][i][ds.col["source_ip"]])
    for m in SOURCE_METRICS:
        values = [st[m] for stats in tr["windows"] for (src, _), st in stats.items() if src in benign_sources]
        baseline["source"][m] = robust(values, tail=True)
    return baseline


def write_baseline(path, baseline):
    with open(path, "w") as f:
        json.dump(baseline, f, indent=1, sort_keys=True)
        f.write("\n")


def write_flows(path, ds, picks, gz=False):
    """Writes original `ben flows` rows, picked as (round, row index) pairs,
    in the raw header's format; optionally gzipped (mtime 0)."""
    import io
    raw = gzip.GzipFile(path, "wb", mtime=0) if gz else open(path, "wb")
    with raw:
        text = io.TextIOWrapper(raw, newline="")
        w = csv.writer(text, lineterminator="\n")
        w.writerow(ds.raw_header)
        for r, i in picks:
            w.writerow(ds.data[r][i])
        text.flush()
        text.detach()


def split_rounds(ds, test_rounds):
    order = [r for r, _ in ds.rounds]
    if len(order) < test_rounds + 2:
        sys.exit(f"need at least {test_rounds + 2} rounds in {ds.data_dir}, found {len(order)}")
    return order[: -test_rounds - 1], [order[-test_rounds - 1]], order[-test_rounds:]


AUGMENT = tuple(int(k * WINDOW_SECS * 1e6 / 4) for k in range(4))

# Training configurations (scripts/mesh/lofo.py compares them family by
# family; --config picks one here):
#   old     the parameters and data of the model committed before the LOFO
#           work: every training row, four window offsets
#   fast    the same parameters on less data: attack families capped at
#           CAP rows per round and offset, two window offsets (0 and 5 s),
#           learning rate 0.2 (LOFO trains 18 models; "old" takes ~3 min each)
#   reg     fast + shallower, more regularised trees
#   aug     fast + benign-envelope augmentation (see `augment`)
#   augreg  aug + reg
CONFIGS = ("old", "fast", "reg", "aug", "augreg")
CAP = 400
REG = dict(num_leaves=7, min_data_in_leaf=50, feature_fraction=0.6, lambda_l2=10.0)


def recipe(config):
    """-> (params, offsets, cap, augment?) of a configuration."""
    if config == "old":
        return dict(DEFAULT_PARAMS), AUGMENT, None, False
    p = dict(DEFAULT_PARAMS, learning_rate=0.2)
    if "reg" in config:
        p.update(REG)
    return p, AUGMENT[::2], CAP, "aug" in config


def augment(ds, tr, rng, share=0.5):
    """Benign-envelope augmentation: copies of benign training rows whose
    source-window metrics are moved beyond anything benign sources showed
    (the benign training rows' 99.9th percentile of the metric times a
    log-uniform factor 1.5-50): many ports, many addresses, many flows and
    packets, many packets in few flows, many logins to one auth port, large
    one-way uploads, a share of unanswered flows no benign source had; each
    labelled with the class that behaviour belongs to. It teaches the model
    that a source far outside the benign envelope is not benign, whatever
    family it is, without any family's own flows. Returns (X, y)."""
    X, y = tr["X"], tr["y"]
    j = {n: k for k, n in enumerate(ds.feat_names) if n.startswith("src_")}
    benign = X[y == 0]
    q = {n: max(float(np.nanpercentile(benign[:, k], 99.9)), 1.0) for n, k in j.items()}
    pick = rng.choice(np.flatnonzero(y == 0), size=int(share * (y == 0).sum()), replace=True)
    out = X[pick].copy()
    lab = np.zeros(len(pick), dtype=np.int64)

    def far(n, size):
        return q[n] * np.exp(rng.uniform(np.log(1.5), np.log(50.0), size))

    # ratios: the share of a source's flows with no payload, benign at most
    # q_empty; beyond it, mostly unanswered or refused probes
    q_empty = float(np.nanpercentile(benign[:, j["src_empty_ratio"]], 99.9))
    kind = rng.integers(0, 7, len(pick))
    for d, c in enumerate((1, 1, 2, 3, 4, 2, 1)):
        m = kind == d
        k = int(m.sum())
        if k == 0:
            continue
        rows = out[m]
        col = lambda n: rows[:, j[n]]
        if d == 0:  # many ports, mostly empty or mostly unanswered flows: a scan
            rows[:, j["src_distinct_dst_ports"]] = far("src_distinct_dst_ports", k)
            # half: empty probes (SYN, connect, FIN, empty UDP), answered or
            # not; half: probes that carry a payload nobody answers (UDP
            # probes with protocol payloads)
            probe = rng.uniform(0.0, 1.0, k) < 0.5
            rows[:, j["src_empty_ratio"]] = np.where(probe, rng.uniform(0.0, 1.0, k),
                                                     rng.uniform(0.6, 1.0, k))
            rows[:, j["src_unanswered_ratio"]] = np.where(probe, rng.uniform(0.8, 1.0, k),
                                                          rng.uniform(0.0, 1.0, k))
            rows[:, j["src_syn_only_ratio"]] = col("src_empty_ratio") * rng.uniform(0.0, 1.0, k)
            rows[:, j["src_flows"]] = np.maximum(col("src_flows"), col("src_distinct_dst_ports"))
        elif d == 1:  # many addresses: a sweep
            rows[:, j["src_distinct_dst_ips"]] = far("src_distinct_dst_ips", k)
            rows[:, j["src_empty_ratio"]] = rng.uniform(0.0, 1.0, k)
            rows[:, j["src_flows"]] = np.maximum(col("src_flows"), col("src_distinct_dst_ips"))
        elif d == 2:  # many flows and packets: a flood
            f = far("src_flows", k)
            rows[:, j["src_flows"]] = f
            rows[:, j["src_max_flows_to_one_port"]] = f * rng.uniform(0.3, 1.0, k)
            rows[:, j["src_fwd_packets_per_sec"]] = np.maximum(
                far("src_fwd_packets_per_sec", k), col("src_fwd_packets_per_sec"))
        elif d == 3:  # many connections to one auth port: password guessing
            a = far("src_max_auth_flows_to_one_port", k)
            rows[:, j["src_max_auth_flows_to_one_port"]] = a
            rows[:, j["src_max_flows_to_one_port"]] = np.maximum(col("src_max_flows_to_one_port"), a)
            rows[:, j["src_flows"]] = np.maximum(col("src_flows"), a)
        elif d == 4:  # a large one-way upload: exfiltration
            rows[:, j["src_max_flow_fwd_bytes"]] = far("src_max_flow_fwd_bytes", k)
            rows[:, j["src_upload_ratio"]] = rng.uniform(0.9, 1.0, k)
        elif d == 5:  # many packets in the flows there are (an ICMP flood is one flow): a flood
            rows[:, j["src_fwd_packets_per_sec"]] = far("src_fwd_packets_per_sec", k)
        else:  # few flows, mostly unanswered or refused, to a few ports: a slow scan
            lo = q_empty + 0.3 * (1.0 - q_empty)
            rows[:, j["src_empty_ratio"]] = rng.uniform(lo, 1.0, k)
            rows[:, j["src_syn_only_ratio"]] = col("src_empty_ratio") * rng.uniform(0.5, 1.0, k)
            rows[:, j["src_distinct_dst_ports"]] = np.maximum(col("src_distinct_dst_ports"),
                                                              rng.integers(2, 21, k))
            rows[:, j["src_flows"]] = np.maximum(col("src_flows"), col("src_distinct_dst_ports"))
        out[m] = rows
        lab[m] = c
    return out, lab


def train_config(ds, config, train_r, valid_r, seed, drop=(), num_threads=1):
    """Trains one configuration without the `drop` families.
    -> (booster, best iteration, training rows)."""
    params, offsets, cap, aug = recipe(config)
    tr = ds.matrix(train_r, offsets, drop_families=drop, cap=cap, seed=seed)
    va = ds.matrix(valid_r, drop_families=drop, cap=cap, seed=seed)
    extra = augment(ds, tr, np.random.default_rng(seed)) if aug else None
    booster, best = fit(ds, tr, va, dict(params, num_threads=num_threads), seed,
                        cw=class_weights(tr["y"]), extra=extra)
    return booster, best, tr


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--data", default=os.path.join(root, "data", "mesh"))
    ap.add_argument("--test-rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--parity-rows", type=int, default=400)
    ap.add_argument("--config", default="aug", choices=CONFIGS,
                    help="training recipe (see CONFIGS); the committed model is aug")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    ds = Dataset(args.data, root)
    train_r, valid_r, test_r = split_rounds(ds, args.test_rounds)
    booster, best, tr = train_config(ds, args.config, train_r, valid_r, args.seed, num_threads=args.threads)
    split = {"train": tr, "valid": ds.matrix(valid_r), "test": ds.matrix(test_r)}
    for name, m in split.items():
        y = m["y"]
        counts = {CLASSES[c]: int((y == c).sum()) for c in range(len(CLASSES))}
        print(f"{name}: rounds {dict(train=train_r, valid=valid_r, test=test_r)[name]} {len(y)} flows {counts}")
    feat_names = ds.feat_names

    print(f"config {args.config}: trees: {best} iterations x {len(CLASSES)} classes")
    model_path = os.path.join(root, "models", "mesh-lgbm.txt")
    booster.save_model(model_path, num_iteration=best)
    # Reload from text so predictions come from exactly what Rust will read.
    model = lgb.Booster(model_file=model_path)

    # Benign baseline for the math engine (training rounds only).
    write_baseline(os.path.join(root, "models", "mesh-baseline.json"), benign_baseline(ds, split["train"]))

    # Parity fixture: held-out rows (stratified), plus edge rows with NaN and 0.
    Xte, yte = split["test"]["X"], split["test"]["y"]
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
    write_flows(test_path, ds, zip(split["test"]["round"], split["test"]["idx"]), gz=True)

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
