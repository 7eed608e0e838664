#!/usr/bin/env python3
"""A second, independent source of labeled Blot cases: values from Faker
(its phone, card, SSN, IBAN, e-mail and IP providers, several locales) put
into sentence templates written here, plus decoy sentences full of numbers
that are not PII (order numbers, timestamps, build numbers, versions,
amounts, ids, hashes).

Two sets, kept apart:

* ``dev``: seed 20, locales DEV_LOCALES, templates DEV_*. Looked at while
  the recognizers were tuned.
* ``heldout``: seed 77, locales HELD_LOCALES (no locale in common with dev),
  templates HELD_* (different wording). Scored only at the end.

Writes JSON lines in the format of ``corpus/pii.jsonl`` (UTF-8 byte offsets):

    python3 generate.py dev > dev.jsonl
    python3 generate.py heldout > heldout.jsonl

Needs ``faker`` (pip install faker; the committed files were made with
Faker 40.63.0). Labels come from where the value was placed, never from Blot.
"""

import json
import random
import sys

from faker import Faker

DEV_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "ja_JP", "ru_RU", "de_CH", "cs_CZ",
               "sv_SE", "es_MX", "ko_KR"]
HELD_LOCALES = ["en_CA", "en_IE", "en_AU", "it_IT", "es_ES", "nl_NL", "pt_BR", "en_IN",
                "pl_PL", "da_DK"]

CARD_TYPES = ["visa13", "visa16", "visa19", "mastercard", "amex", "discover", "diners",
              "jcb15", "jcb16", "maestro"]

# ---------------------------------------------------------------- templates

DEV_PHONE = [
    "Please call me on {v} after six.",
    "My phone number is {v}.",
    "You can reach me at {v} any time.",
    "Customer asked for a call back, phone: {v}",
    "mobile {v} / email on file",
    "Tel. {v} (office)",
    "Text me at {v} when you arrive",
    "Contact number {v} was updated by the agent.",
    "phone={v}",
    "{{\"name\": \"A. Smith\", \"phone\": \"{v}\"}}",
    "Fax: {v}",
    "Cell: {v}, prefers evenings",
    "{v} is my mobile, please use it",
    "ring {v} for the front desk",
    "New landline {v} added to the account.",
]
HELD_PHONE = [
    "If the parcel is late, phone {v} and ask for Dana.",
    "Whatsapp me on {v} please",
    "emergency contact: {v}",
    "He left a voicemail from {v} yesterday.",
    "Could you call {v} before noon?",
    "the telephone number on the invoice, {v}, is wrong",
    "Mob {v}",
    "<td>Phone</td><td>{v}</td>",
    "updated profile: tel={v} lang=en",
    "Dial {v} to reach the hotline.",
    "She gave {v} as her cell number.",
    "SMS sent to {v} (delivered)",
    "Questions? Call us at {v}.",
]
DEV_CARD = [
    "Charge card {v} for the balance.",
    "card number: {v}",
    "Payment declined for {v}, asked customer to retry",
    "{{\"pan\": \"{v}\", \"exp\": \"04/27\"}}",
    "I paid with {v} yesterday.",
    "CC {v} on file",
    "Please refund to the card ending in ... actually the full number is {v}",
]
HELD_CARD = [
    "use my credit card {v} for the order",
    "The customer read out {v} over the phone.",
    "billing: card={v} cvv=***",
    "Visa/MC/Amex accepted; his was {v}.",
    "stored payment method {v} expired",
]
DEV_OTHER = {
    "us_ssn": ["My SSN is {v}.", "social security number {v} on the form",
               "ssn: {v}"],
    "iban": ["Wire it to IBAN {v} please.", "account {v} (IBAN)", "iban={v}"],
    "email": ["Write to {v} for details.", "email: {v}", "from {v} at 10:02"],
    "ipv4": ["Login from {v} blocked.", "client ip {v}", "src={v} dst=internal"],
    "ipv6": ["Request came from {v}.", "addr {v} on eth0"],
}
HELD_OTHER = {
    "us_ssn": ["Applicant SSN {v}, verified.", "her social security no. is {v}"],
    "iban": ["Please transfer the deposit to {v}.", "bank account: {v}"],
    "email": ["cc {v} on the thread", "Reply-To: {v}"],
    "ipv4": ["the request from {v} timed out", "allowlisted {v} today"],
    "ipv6": ["peer {v} disconnected", "ping {v} failed"],
}

# Decoys: numbers that are not PII, some next to words a phone context uses.
DEV_DECOYS = [
    "Order {order} shipped on {date}.",
    "order number {order10} confirmed, total {amount}",
    "build {build} passed in {ms} ms",
    "version {version} released at {iso}",
    "ts={unix} level=info msg=\"call finished\" took={ms}ms",
    "commit {sha} by ci-bot",
    "Invoice #{order10} for {amount} is due",
    "user id {id10} logged in",
    "tracking number {track}",
    "request {uuid} took {ms} ms",
    "ISBN {isbn}",
    "Please call about ticket {order10} tomorrow.",
    "phone case SKU {ean} in stock: {qty}",
    "At {time} the counter was {big}.",
    "Amount: {amount2}",
    "{date} {time} job {order} processed {big} rows",
    "md5 {md5}",
    "api call 12 of 40 returned {big}",
]
HELD_DECOYS = [
    "Ticket {order10} was closed on {date}.",
    "the nightly build {build} is green",
    "Deployed {version} ({sha}) to prod",
    "epoch {unix} -> {iso}",
    "Refund of {amount} issued for order #{order}",
    "account id {id10}, plan pro",
    "Parcel {track} left the depot",
    "trace {uuid} span {ms}",
    "EAN {ean}",
    "we called the API {big} times in {ms} ms",
    "Total due: {amount2}",
    "Call ref {order10} closed",
]


def decoy_values(f, r):
    d = f.date_object()
    return {
        "order": str(r.randrange(10 ** 5, 10 ** 9)),
        "order10": str(r.randrange(10 ** 9, 10 ** 10)),
        "date": d.isoformat() if r.random() < 0.5 else d.strftime("%d.%m.%Y"),
        "amount": f.pricetag(),
        "amount2": "%s %s" % (r.choice(["USD", "EUR", "GBP"]),
                              format(r.randrange(10 ** 6, 10 ** 9), ",").replace(",", r.choice([",", " "]))),
        "build": r.choice(["%s.%d" % (f.date_object().strftime("%Y%m%d"), r.randrange(1, 9999)),
                           "#%d" % r.randrange(10 ** 4, 10 ** 7),
                           "%d" % r.randrange(10 ** 6, 10 ** 9)]),
        "ms": str(r.randrange(1, 100000)),
        "version": "%d.%d.%d" % (r.randrange(0, 20), r.randrange(0, 50), r.randrange(0, 300)),
        "iso": f.date_time().isoformat() + "Z",
        "unix": str(r.randrange(1000000000, 1800000000)),
        "sha": f.sha1()[: r.choice([7, 12, 40])],
        "md5": f.md5(),
        "id10": str(r.randrange(10 ** 9, 10 ** 10)),
        "track": r.choice(["1Z%s%010d" % ("".join(r.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789")
                                                  for _ in range(6)), r.randrange(10 ** 10)),
                           "%012d" % r.randrange(10 ** 12),
                           "%d" % r.randrange(10 ** 11, 10 ** 12)]),
        "uuid": f.uuid4(),
        "isbn": f.isbn13(),
        "ean": f.ean13(),
        "qty": str(r.randrange(1, 500)),
        "time": f.time(),
        "big": str(r.randrange(10 ** 6, 10 ** 10)),
    }


def card_value(f, r, card_faker):
    # Every issuer Faker knows, through the en_US provider (it has them
    # all), and now and then the locale's own provider (MIR for ru_RU, …).
    if r.random() < 0.7:
        v = card_faker.credit_card_number(r.choice(CARD_TYPES))
    else:
        v = f.credit_card_number()
    style = r.random()
    if style < 0.6:
        return v
    sep = " " if style < 0.85 else "-"
    if len(v) == 15 and v[:2] in ("34", "37") and r.random() < 0.5:
        return v[:4] + sep + v[4:10] + sep + v[10:]
    return sep.join(v[k:k + 4] for k in range(0, len(v), 4))


def value(kind, f, r, us):
    if kind == "phone":
        return f.phone_number()
    if kind == "card":
        return card_value(f, r, us)
    if kind == "us_ssn":
        return f.ssn()
    if kind == "iban":
        v = f.iban()
        if r.random() < 0.4:
            v = " ".join(v[k:k + 4] for k in range(0, len(v), 4))
        return v
    if kind == "email":
        return f.email()
    if kind == "ipv4":
        return f.ipv4_public()
    if kind == "ipv6":
        return f.ipv6()
    raise ValueError(kind)


def fill(template, v):
    """The filled text and the byte span of the value in it."""
    head, tail = template.split("{v}")
    head = head.replace("{{", "{").replace("}}", "}")
    tail = tail.replace("{{", "{").replace("}}", "}")
    text = head + v + tail
    start = len(head.encode("utf-8"))
    return text, start, start + len(v.encode("utf-8"))


def build(which):
    if which == "dev":
        seed, locales = 20, DEV_LOCALES
        phone_t, card_t, other_t, decoy_t = DEV_PHONE, DEV_CARD, DEV_OTHER, DEV_DECOYS
    elif which == "heldout":
        seed, locales = 77, HELD_LOCALES
        phone_t, card_t, other_t, decoy_t = HELD_PHONE, HELD_CARD, HELD_OTHER, HELD_DECOYS
    else:
        raise SystemExit("usage: generate.py dev|heldout")
    r = random.Random(seed)
    fakers = {}
    for k, loc in enumerate(locales):
        f = Faker(loc)
        f.seed_instance(seed * 1000 + k)
        fakers[loc] = f
    us_faker = Faker("en_US")
    us_faker.seed_instance(seed)
    cases = []

    def add(text, spans, tags):
        cases.append({"id": len(cases), "text": text, "spans": spans, "tags": tags})

    plan = [("phone", phone_t, 600), ("card", card_t, 400)]
    plan += [(k, t, 60) for k, t in other_t.items()]
    for kind, templates, n in plan:
        for _ in range(n):
            # SSNs are US-only: each set draws them from its own en_US Faker.
            loc = "en_US" if kind == "us_ssn" else r.choice(locales)
            f = us_faker if kind == "us_ssn" else fakers[loc]
            v = value(kind, f, r, us_faker)
            text, s, e = fill(r.choice(templates), v)
            add(text, [{"start": s, "end": e, "kind": kind}], ["faker", which, kind, loc])
    for _ in range(400):
        f = fakers[r.choice(locales)]
        vals = decoy_values(f, r)
        t = r.choice(decoy_t)
        add(t.format(**vals), [], ["faker", which, "decoy", "negative"])
    return cases


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    for c in build(which):
        print(json.dumps(c, ensure_ascii=False))


if __name__ == "__main__":
    main()
