#!/usr/bin/env python3
"""Leave-one-family-out (LOFO) training for the CyberMesh model.

    data/mesh/venv/bin/python scripts/mesh/lofo.py [--data data/mesh] [--config NAME] [--families F,G]

For every attack family F of DATA/labels.csv (scan-syn, flood-udp, ...):
train on the training rounds without F's flows (removed from training and
validation; F's attacker addresses send nothing else), then test on F's
flows of ALL rounds (the model never saw F, so every round is unseen for
it) mixed with the benign flows of the test rounds. The split of rounds is
train.py's (the last --test-rounds rounds test, the one before validates).

Writes, per family, DATA/lofo/<config>/F/:
  mesh-lgbm.txt, mesh-baseline.json   the model without F, its baseline
  eval.csv                            `ben flows` rows: F's flows (label = class)
                                      + the test rounds' benign flows
  eval-test.csv                       the same, F's flows of the test rounds only
for the Rust evaluator (crates/mesh-detect/examples/lofo.rs), and prints
the ML engine's own figures: P(attack) = 1 - P(benign) > 0.5 on F's flows
and on benign flows.

Configurations (--config, defined in train.py: `recipe`, `augment`):
  old      train.py's parameters and data as committed before the LOFO work
  fast     the same parameters on capped data (attack families at most 400
           rows per round and window offset, 2 offsets) with learning rate 0.2
  reg      fast + shallower, more regularised trees
  aug      fast + benign-envelope augmentation: copies of benign training
           rows whose source-window metrics are pushed beyond anything
           benign sources showed, labelled with the class of that behaviour
  augreg   aug + reg
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train as T  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "mesh"))
    ap.add_argument("--test-rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--config", default="fast", choices=T.CONFIGS)
    ap.add_argument("--families", default="", help="comma-separated (default: every attack family)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    ds = T.Dataset(args.data, ROOT)
    train_r, valid_r, test_r = T.split_rounds(ds, args.test_rounds)
    fams = [f for f in args.families.split(",") if f] or ds.families()
    out_root = os.path.join(args.data, "lofo", args.config)
    print(f"config {args.config}: train rounds {train_r}, validation {valid_r}, benign test rounds {test_r}")
    every = ds.matrix([r for r, _ in ds.rounds])
    test = ds.matrix(test_r)
    benign_te = test["y"] == 0
    print("| family | class | flows (all rounds) | trees | ML P(attack)>0.5 | >0.8 | ML class right | benign ML>0.5 | >0.8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    baseline = None
    for fam in fams:
        t0 = time.time()
        booster, best, tr = T.train_config(ds, args.config, train_r, valid_r, args.seed,
                                           drop=[fam], num_threads=args.threads)
        d = os.path.join(out_root, fam)
        os.makedirs(d, exist_ok=True)
        booster.save_model(os.path.join(d, "mesh-lgbm.txt"), num_iteration=best)
        if baseline is None:  # attack families do not enter the benign baseline
            baseline = T.benign_baseline(ds, tr)
        T.write_baseline(os.path.join(d, "mesh-baseline.json"), baseline)
        held = (every["family"] == fam) & every["init"]
        picks = sorted(list(zip(every["round"][held], every["idx"][held]))
                       + list(zip(test["round"][benign_te], test["idx"][benign_te])))
        T.write_flows(os.path.join(d, "eval.csv"), ds, picks)
        # the same restricted to the test rounds (the generator's latest settings)
        T.write_flows(os.path.join(d, "eval-test.csv"), ds, [(r, i) for r, i in picks if r in test_r])
        model = T.lgb.Booster(model_file=os.path.join(d, "mesh-lgbm.txt"))
        pf = model.predict(every["X"][held])
        pb = model.predict(test["X"][benign_te])
        cls = int(np.bincount(every["y"][held]).argmax()) if held.any() else 0
        share = lambda m: float(m.mean()) if len(m) else float("nan")
        print(f"| {fam} | {T.CLASSES[cls]} | {int(held.sum())} | {best} | "
              f"{share(pf[:, 0] < 0.5):.4f} | {share(pf[:, 0] < 0.2):.4f} | "
              f"{share(pf.argmax(axis=1) == every['y'][held]):.4f} | "
              f"{int((pb[:, 0] < 0.5).sum())}/{int(benign_te.sum())} | {int((pb[:, 0] < 0.2).sum())} | "
              f"({time.time() - t0:.0f} s)", flush=True)

if __name__ == "__main__":
    main()
