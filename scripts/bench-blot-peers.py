#!/usr/bin/env python3
"""Runs a peer PII detector and Blot on the same labeled sentences, in the
same run, and prints both, kind by kind; plus the peer's throughput.

Peer: Microsoft Presidio (presidio-analyzer), its predefined recognizers
called directly (no NLP engine, so no spaCy model is needed): email, credit
card, IBAN, US SSN, IP address, and PhoneRecognizer (python-phonenumbers,
i.e. libphonenumber's metadata). With no NLP engine Presidio's context words
only change scores, not what is found, so at the default score threshold of
0 this finds what the full analyzer finds for these kinds. Presidio has no
recognizer for JWTs, bearer tokens, AWS keys or PEM private keys, so both are
scored on the seven kinds it covers; spans of other kinds are ignored on
both sides.

Blot's answers come from `examples/scan_jsonl.rs` (built in release mode by
the shell wrapper) over the same files.

Scoring (the same as `crates/blot/tests/generated.rs`): an expected value is
*recalled* when one found span of its kind covers all of it (nothing of it
leaks), *exact* when a found span has its very bounds; a found span is a
true positive when it overlaps an expected value of its kind.

Usage: scripts/bench-blot-peers.sh [FILE.jsonl ...]
"""

import json
import os
import subprocess
import sys
import time
from collections import defaultdict

# Offline: tldextract (used by Presidio's email validation) must use its
# bundled public-suffix snapshot instead of fetching the list.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

ENTITY_KIND = {
    "EMAIL_ADDRESS": "email",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "US_SSN": "us_ssn",
    "PHONE_NUMBER": "phone",
    "IP_ADDRESS": "ip",  # split into ipv4/ipv6 by the matched text
}
COVERED = ["card", "email", "iban", "ipv4", "ipv6", "phone", "us_ssn"]


def load(path):
    cases = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            b = c["text"].encode("utf-8")
            cases.append((c["text"], b, [(s["start"], s["end"], s["kind"]) for s in c["spans"]]))
    return cases


def recognizers():
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    return [
        EmailRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        PhoneRecognizer(),
    ]


def analyze(recs, text, threshold):
    out = []
    for r in recs:
        for res in r.analyze(text=text, entities=r.supported_entities, nlp_artifacts=None) or []:
            if res.score >= threshold:
                out.append(res)
    return out


def char_to_byte(text):
    """Presidio reports character offsets; the corpus uses UTF-8 bytes."""
    offs = [0]
    for ch in text:
        offs.append(offs[-1] + len(ch.encode("utf-8")))
    return offs


def presidio_spans(text, found):
    offs = char_to_byte(text)
    got = set()
    for res in found:
        kind = ENTITY_KIND.get(res.entity_type)
        if kind is None:
            continue
        if kind == "ip":
            kind = "ipv6" if ":" in text[res.start:res.end] else "ipv4"
        got.add((offs[res.start], offs[res.end], kind))
    return got


def blot_spans(blot, path):
    with open(path, "rb") as f:
        out = subprocess.run([blot], stdin=f, check=True, capture_output=True).stdout
    return [{(s, e, k) for s, e, k in json.loads(line)} for line in out.decode().splitlines()]


def score(cases, answers):
    """kind -> [values, recalled, exact, tp, fp]; plus false positives on
    cases with no expected value (the decoys and hard negatives)."""
    t = defaultdict(lambda: [0, 0, 0, 0, 0])
    neg_fp = 0
    for (_, _, expected), got in zip(cases, answers):
        got = {g for g in got if g[2] in COVERED}
        exp = [e for e in expected if e[2] in COVERED]
        for e in exp:
            row = t[e[2]]
            row[0] += 1
            if any(g[2] == e[2] and g[0] <= e[0] and g[1] >= e[1] for g in got):
                row[1] += 1
            if e in got:
                row[2] += 1
        for g in got:
            if any(e[2] == g[2] and g[0] < e[1] and e[0] < g[1] for e in exp):
                t[g[2]][3] += 1
            else:
                t[g[2]][4] += 1
                if not expected:
                    neg_fp += 1
    return t, neg_fp


def ratio(a, b):
    return a / b if b else 1.0


def report(path, cases, peer, blot):
    tp_, np_ = score(cases, peer)
    tb, nb = score(cases, blot)
    negatives = sum(1 for c in cases if not c[2])
    print("\n== %s (%d cases, %d with no PII)" % (path, len(cases), negatives))
    print("%-7s %6s | %-27s | %-27s" % ("", "", "Presidio", "Blot"))
    print("%-7s %6s | %8s %8s %9s | %8s %8s %9s" % (
        "kind", "values", "recall", "exact-r", "precision", "recall", "exact-r", "precision"))
    for kind in COVERED:
        a, b = tp_[kind], tb[kind]
        if a[0] == 0 and a[3] + a[4] == 0 and b[3] + b[4] == 0:
            continue
        print("%-7s %6d | %8.4f %8.4f %9.4f | %8.4f %8.4f %9.4f" % (
            kind, b[0],
            ratio(a[1], a[0]), ratio(a[2], a[0]), ratio(a[3], a[3] + a[4]),
            ratio(b[1], b[0]), ratio(b[2], b[0]), ratio(b[3], b[3] + b[4])))
    tot = lambda t: [sum(r[k] for r in t.values()) for k in range(5)]
    a, b = tot(tp_), tot(tb)
    print("%-7s %6d | %8.4f %8.4f %9.4f | %8.4f %8.4f %9.4f" % (
        "all", b[0],
        ratio(a[1], a[0]), ratio(a[2], a[0]), ratio(a[3], a[3] + a[4]),
        ratio(b[1], b[0]), ratio(b[2], b[0]), ratio(b[3], b[3] + b[4])))
    print("false positives on the no-PII cases: Presidio %d, Blot %d" % (np_, nb))


def main():
    blot = sys.argv[1]
    threshold = float(os.environ.get("PRESIDIO_THRESHOLD", "0"))
    paths = sys.argv[2:]
    recs = recognizers()
    print("peer: presidio-analyzer (pattern recognizers + PhoneRecognizer/phonenumbers, no NLP engine),"
          " score >= %.2f; Blot: examples/scan_jsonl (release)" % threshold)
    for n, path in enumerate(paths):
        cases = load(path)
        if n == 0:
            # Throughput on the first file: warm up, then time a full pass.
            total = sum(len(b) for _, b, _ in cases)
            for text, _, _ in cases[:50]:
                analyze(recs, text, threshold)
            t0 = time.perf_counter()
            results = [analyze(recs, text, threshold) for text, _, _ in cases]
            dt = time.perf_counter() - t0
            print("Presidio throughput on %s: %d bytes in %.3f s -> %.3f MB/s"
                  % (path, total, dt, total / dt / 1e6))
        else:
            results = [analyze(recs, text, threshold) for text, _, _ in cases]
        peer = [presidio_spans(text, found) for (text, _, _), found in zip(cases, results)]
        report(path, cases, peer, blot_spans(blot, path))


if __name__ == "__main__":
    main()
