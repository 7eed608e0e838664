#!/usr/bin/env python3
"""Runs a peer PII detector over Blot's labeled corpus: throughput and quality.

Peer: Microsoft Presidio (presidio-analyzer), its predefined recognizers
called directly (no NLP engine, so no spaCy model is needed): email, credit
card, IBAN, US SSN, IP address, phone (python-phonenumbers). Presidio has no
recognizer for JWTs, bearer tokens, AWS keys or PEM private keys, so quality is
scored on the kinds it covers only; spans of other kinds are ignored on both
sides. Matching is exact (start, end, kind) like Blot's corpus test, and
overlap-based recall is printed as well since span conventions differ.

Usage: scripts/bench-blot-peers.sh (installs into a venv, then runs this).
"""

import json
import os
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
COVERED = {"email", "card", "iban", "us_ssn", "phone", "ipv4", "ipv6"}


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


def main():
    path = sys.argv[1]
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    cases = load(path)
    recs = recognizers()
    total_bytes = sum(len(b) for _, b, _ in cases)

    # Warm up (regex compilation, phonenumbers metadata), then time a full pass.
    for text, _, _ in cases[:50]:
        analyze(recs, text, threshold)
    t0 = time.perf_counter()
    results = [analyze(recs, text, threshold) for text, _, _ in cases]
    dt = time.perf_counter() - t0

    # Per recognizer, to show where the time goes.
    per = []
    for r in recs:
        t1 = time.perf_counter()
        for text, _, _ in cases:
            r.analyze(text=text, entities=r.supported_entities, nlp_artifacts=None)
        per.append((type(r).__name__, time.perf_counter() - t1))

    tally = defaultdict(lambda: [0, 0, 0, 0])  # tp, fp, fn, overlap-covered
    for (text, _, expected), found in zip(cases, results):
        offs = char_to_byte(text)
        got = set()
        for res in found:
            kind = ENTITY_KIND.get(res.entity_type)
            if kind is None:
                continue
            if kind == "ip":
                kind = "ipv6" if ":" in text[res.start:res.end] else "ipv4"
            got.add((offs[res.start], offs[res.end], kind))
        exp = {e for e in expected if e[2] in COVERED}
        for e in exp:
            t = tally[e[2]]
            if e in got:
                t[0] += 1
            else:
                t[2] += 1
            if any(g[0] <= e[0] and g[1] >= e[1] for g in got):
                t[3] += 1
        for g in got:
            if g not in exp:
                tally[g[2]][1] += 1

    print("peer: presidio-analyzer (pattern recognizers + phonenumbers, no NLP), score >= %.2f" % threshold)
    print("corpus: %d cases, %d bytes; one pass took %.3f s -> %.3f MB/s"
          % (len(cases), total_bytes, dt, total_bytes / dt / 1e6))
    for name, t in per:
        print("  %-22s alone: %8.3f MB/s" % (name, total_bytes / t / 1e6))
    pattern_only = sum(t for name, t in per if name != "PhoneRecognizer")
    print("  all but PhoneRecognizer (regex-only): %.3f MB/s" % (total_bytes / pattern_only / 1e6))
    print("%-8s %6s %5s %5s %9s %7s %15s" % ("kind", "tp", "fp", "fn", "precision", "recall", "covered-recall"))
    T = [0, 0, 0, 0]
    for kind in sorted(tally):
        tp, fp, fn, cov = tally[kind]
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        cr = cov / (tp + fn) if tp + fn else 1.0
        print("%-8s %6d %5d %5d %9.4f %7.4f %15.4f" % (kind, tp, fp, fn, p, r, cr))
        T = [a + b for a, b in zip(T, tally[kind])]
    tp, fp, fn, cov = T
    print("%-8s %6d %5d %5d %9.4f %7.4f %15.4f" % (
        "overall", tp, fp, fn, tp / max(1, tp + fp), tp / max(1, tp + fn), cov / max(1, tp + fn)))


if __name__ == "__main__":
    main()
