#!/usr/bin/env python3
"""Generates Blot's labeled PII corpus (see README.md for the definitions).

Deterministic: a fixed seed and the standard library only.

    python3 crates/blot/corpus/generate.py > crates/blot/corpus/pii.jsonl
"""

import base64
import json
import random
import re
import sys

SEED = 20260501
R = random.Random(SEED)

# ---------------------------------------------------------------- definitions
# Independent of Blot's Rust code: written from the format specifications.


def luhn_ok(digits):
    total = 0
    for k, ch in enumerate(reversed(digits)):
        v = int(ch)
        if k % 2 == 1:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return total % 10 == 0


def luhn_complete(body):
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


def card_by_definition(digits):
    """13-19 digits, issuer digit 2-6 (or 1 with 15 digits), Luhn."""
    n = len(digits)
    if not 13 <= n <= 19:
        return False
    first = digits[0]
    if not ("2" <= first <= "6" or (first == "1" and n == 15)):
        return False
    return luhn_ok(digits)


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "DO": 28, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22,
    "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23,
    "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31,
    "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24,
    "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_mod97(s):
    s = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in s)
    return int(num) % 97


def iban_make(cc):
    n = IBAN_LENGTHS[cc]
    bban = []
    for k in range(n - 4):
        # A few countries put letters in the bank code; emulate that.
        if cc in ("GB", "IE", "NL", "MT", "BH", "KW", "QA", "JO") and k < 4:
            bban.append(R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        else:
            bban.append(R.choice("0123456789"))
    bban = "".join(bban)
    check = 98 - iban_mod97(cc + "00" + bban)
    return "%s%02d%s" % (cc, check, bban)


def iban_group(iban):
    return " ".join(iban[k:k + 4] for k in range(0, len(iban), 4))


def ssn_ok(area, group, serial):
    return 1 <= area <= 899 and area != 666 and group != 0 and serial != 0


# ---------------------------------------------------------------- value makers

FIRST = ["ann", "bob", "carla", "dmitri", "eve", "farah", "gus", "hana", "ivan", "jo",
         "kenji", "lena", "marta", "nils", "olu", "priya", "quinn", "rosa", "sven", "tariq",
         "uma", "vik", "wen", "xavi", "yara", "zoe"]
LAST = ["lee", "smith", "nowak", "garcia", "muller", "tanaka", "okafor", "rossi", "kim",
        "dubois", "silva", "kowalski", "jensen", "haddad", "novak"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example.co.uk",
           "shop-example.de", "example.io", "uni.example.edu", "example.fr",
           "post.example.jp", "ex-ample.com.au", "example.travel"]


def make_email():
    f, l = R.choice(FIRST), R.choice(LAST)
    style = R.randrange(7)
    if style == 0:
        local = f
    elif style == 1:
        local = f + "." + l
    elif style == 2:
        local = f + "_" + l + str(R.randrange(100))
    elif style == 3:
        local = f + "+" + R.choice(["news", "shop", "x1", "tag"])
    elif style == 4:
        local = f[0] + "." + l + "-" + str(R.randrange(10))
    elif style == 5:
        local = (f + l).upper()
    else:
        local = f + str(R.randrange(1990, 2010))
    return local + "@" + R.choice(DOMAINS)


CARD_PREFIXES = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("55", 16), ("2221", 16),
                 ("2720", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16),
                 ("35", 16), ("36", 14), ("62", 19), ("1", 15)]


def make_card():
    prefix, n = R.choice(CARD_PREFIXES)
    body = prefix + "".join(R.choice("0123456789") for _ in range(n - len(prefix) - 1))
    digits = luhn_complete(body)
    assert card_by_definition(digits)
    style = R.randrange(4)
    if style == 0 or n in (13, 14) and style == 3:
        return digits
    if n == 15 and prefix in ("34", "37") and style == 3:
        sep = R.choice(" -")
        return digits[:4] + sep + digits[4:10] + sep + digits[10:]
    sep = " " if style == 1 else "-"
    return sep.join(digits[k:k + 4] for k in range(0, n, 4))


def make_iban():
    cc = R.choice(sorted(IBAN_LENGTHS))
    iban = iban_make(cc)
    assert iban_mod97(iban) == 1
    return iban_group(iban) if R.random() < 0.4 else iban


def make_ssn_parts():
    while True:
        a, g, s = R.randrange(1, 900), R.randrange(1, 100), R.randrange(1, 10000)
        if ssn_ok(a, g, s):
            return a, g, s


def make_ssn():
    a, g, s = make_ssn_parts()
    sep = "-" if R.random() < 0.8 else " "
    return "%03d%s%02d%s%04d" % (a, sep, g, sep, s)


def nxx():
    return "%d%02d" % (R.randrange(2, 10), R.randrange(100))


def make_phone():
    style = R.randrange(10)
    a, e, line = nxx(), nxx(), "%04d" % R.randrange(10000)
    if style == 0:
        return "(%s) %s-%s" % (a, e, line)
    if style == 1:
        return "%s-%s-%s" % (a, e, line)
    if style == 2:
        return "%s.%s.%s" % (a, e, line)
    if style == 3:
        return "+1 %s %s %s" % (a, e, line)
    if style == 4:
        return "+1%s%s%s" % (a, e, line)
    if style == 5:
        return "1-%s-%s-%s" % (a, e, line)
    if style == 6:
        return "+44 20 %04d %04d" % (R.randrange(10000), R.randrange(10000))
    if style == 7:
        return "+49 30 %08d" % R.randrange(10 ** 8)
    if style == 8:
        return "0%d %02d %02d %02d %02d" % (R.randrange(1, 10), R.randrange(100), R.randrange(100),
                                            R.randrange(100), R.randrange(100))
    return "020 %04d %04d" % (R.randrange(10000), R.randrange(10000))


def octet():
    return str(R.choice([R.randrange(256), R.randrange(10), R.randrange(100)]))


def make_ipv4():
    return ".".join([str(R.randrange(1, 224))] + [octet() for _ in range(3)])


def make_ipv6():
    groups = ["%x" % R.randrange(0x10000) for _ in range(8)]
    style = R.randrange(4)
    if style == 0:
        return ":".join(groups)
    if style == 1:
        return ":".join("%04x" % int(g, 16) for g in groups)
    if style == 2:
        k = R.randrange(1, 6)
        return ":".join(["2001", "db8"] + groups[2:k + 1]) + "::" + groups[7]
    return R.choice(["fe80::", "2001:db8::", "::ffff:"]) + (
        "%x:%x" % (R.randrange(1, 0x10000), R.randrange(0x10000))
        if R.random() < 0.7 else "%d.%d.%d.%d" % (192, 0, 2, R.randrange(1, 255)))


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def rand_str(alphabet, n):
    return "".join(R.choice(alphabet) for _ in range(n))


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def make_jwt():
    header = json.dumps({"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"},
                        separators=(",", ":"))
    payload = json.dumps({"sub": str(R.randrange(10 ** 6)), "name": R.choice(FIRST),
                          "iat": 1700000000 + R.randrange(10 ** 7)}, separators=(",", ":"))
    sig = b64url(bytes(R.randrange(256) for _ in range(32)))
    return b64url(header.encode()) + "." + b64url(payload.encode()) + "." + sig


def secretish(n):
    while True:
        s = rand_str(ALNUM, n)
        if any(c.isdigit() for c in s):
            return s


def make_vendor_token():
    kind = R.randrange(5)
    if kind == 0:
        return "ghp_" + rand_str(ALNUM, 36)
    if kind == 1:
        return "xoxb-" + "%d-%d-" % (R.randrange(10 ** 11), R.randrange(10 ** 12)) + rand_str(ALNUM, 24)
    if kind == 2:
        return "sk_live_" + rand_str(ALNUM, 24)
    if kind == 3:
        return "glpat-" + rand_str(ALNUM + "_-", 20)
    return "AIza" + rand_str(ALNUM + "_-", 35)


AWS_ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def make_aws_access():
    return R.choice(["AKIA", "ASIA", "AROA", "AIDA"]) + rand_str(AWS_ALPHA, 16)


def make_aws_secret():
    return rand_str(ALNUM + "/+", 40)


def make_pem(newline="\n"):
    label = R.choice(["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY",
                      "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"])
    body = base64.b64encode(bytes(R.randrange(256) for _ in range(R.randrange(48, 200)))).decode()
    lines = [body[k:k + 64] for k in range(0, len(body), 64)]
    return newline.join(["-----BEGIN %s-----" % label] + lines + ["-----END %s-----" % label])


# ---------------------------------------------------------------- case builder

class Case:
    def __init__(self):
        self.parts = []
        self.spans = []
        self.size = 0

    def text(self, s):
        self.parts.append(s)
        self.size += len(s.encode())
        return self

    def pii(self, s, kind):
        start = self.size
        self.text(s)
        self.spans.append({"start": start, "end": self.size, "kind": kind})
        return self

    def build(self, tags):
        return {"text": "".join(self.parts), "spans": self.spans, "tags": tags}


def jesc(s):
    """JSON string-escape without the quotes."""
    return json.dumps(s, ensure_ascii=False)[1:-1]


# Free-text frames: `{}` is the value's slot.
SENTENCES = [
    "Please contact me at {} if anything changes.",
    "Customer wrote: my details are {}, thanks",
    "{} was seen in the request",
    "note - value ({}) captured by the form",
    "Ref: {}; status pending",
    "moved to \"{}\" yesterday",
    "values [{}] rejected",
    "Bitte an {} schicken, danke schön!",
    "Proszę o kontakt: {} — dziękuję",
    "連絡先は {} です。",
    "Merci d'utiliser « {} » à l'avenir.",
    "Línea 2: {}\nLínea 3: fin",
    "first line\nsecond line has {}\nthird line",
    "\t{}\t",
    "{}",
]

LOG_FRAMES = [
    "2024-03-05T10:22:31.123Z INFO  user lookup key={} took 12ms",
    "Mar  5 10:22:31 web-1 app[2314]: WARN retry for {} (attempt 3/5)",
    "level=error msg=\"payment failed\" detail=\"{}\" trace_id=4bf92f3577b34da6a3ce929d0e0e4736",
    "[2024-03-05 10:22:31,004] DEBUG handler: got {}",
]

KIND_LABEL = {
    "email": ["email", "e-mail", "mail", "contact"],
    "card": ["card", "pan", "cc", "payment card"],
    "iban": ["IBAN", "account", "iban"],
    "us_ssn": ["ssn", "SSN", "social security number"],
    "phone": ["phone", "tel", "mobile", "call"],
    "ipv4": ["ip", "client", "from", "addr"],
    "ipv6": ["ip6", "client", "from", "addr"],
}


def free_text(value, kind, tag):
    frame = R.choice(SENTENCES)
    pre, post = frame.split("{}")
    c = Case().text(pre).pii(value, kind).text(post)
    return c.build([tag, "text"])


def log_line(value, kind, tag):
    frame = R.choice(LOG_FRAMES)
    pre, post = frame.split("{}")
    return Case().text(pre).pii(value, kind).text(post).build([tag, "log"])


def json_field(value, kind, tag):
    key = R.choice(KIND_LABEL.get(kind, ["value", "data", "field"])).replace(" ", "_")
    c = Case().text('{"id":%d,"%s":"' % (R.randrange(10 ** 6), key))
    c.pii(jesc(value), kind).text('","ok":true}')
    return c.build([tag, "json"])


def nested_json(value, kind, tag):
    """A JSON document carried as a string inside another one: the value is
    escaped twice (escaping is per character, so the pieces concatenate)."""
    c = Case().text('{"payload":"' + jesc('{"v":"'))
    c.pii(jesc(jesc(value)), kind).text(jesc('"}') + '"}')
    return c.build([tag, "json", "nested"])


def url_case(value, kind, tag):
    key = R.choice(["q", "ref", "to", "who", "addr"])
    if kind == "email" and R.random() < 0.5:
        value = value.replace("@", "%40")
    c = Case().text("GET https://app.example.com/v1/search?%s=" % key).pii(value, kind)
    c.text("&page=%d HTTP/1.1" % R.randrange(1, 9))
    return c.build([tag, "url"])


def multi(values, tag):
    """Several values in one multi-line message."""
    c = Case()
    for k, (v, kind) in enumerate(values):
        c.text(R.choice(["\nHi,\n", " - ", "- ", " then ", "\n* ", "; ", "\n"]) if k else "Ticket #%d\n" % R.randrange(10 ** 5))
        c.text(R.choice(KIND_LABEL.get(kind, ["data"])) + ": ")
        c.pii(v, kind)
    c.text("\n-- sent from mobile")
    return c.build([tag, "multi"])


MAKERS = {
    "email": make_email,
    "card": make_card,
    "iban": make_iban,
    "us_ssn": make_ssn,
    "phone": make_phone,
    "ipv4": make_ipv4,
    "ipv6": make_ipv6,
}

CONTEXTS = [free_text, free_text, log_line, json_field, nested_json, url_case]


def positives():
    out = []
    for kind, make in MAKERS.items():
        for _ in range(150):
            ctx = R.choice(CONTEXTS)
            out.append(ctx(make(), kind, "positive"))
        if kind == "us_ssn":
            # Bare nine digits are an SSN only next to an SSN label.
            for _ in range(20):
                a, g, s = make_ssn_parts()
                bare = "%03d%02d%04d" % (a, g, s)
                lab = R.choice(["SSN: ", "ssn=", "\"ssn\":\"", "Social Security No. "])
                out.append(Case().text("record " + lab).pii(bare, "us_ssn").text(" end").build(["positive", "label"]))
    # Credentials.
    for _ in range(100):
        jwt = make_jwt()
        style = R.randrange(4)
        if style == 0:
            out.append(Case().text("Authorization: Bearer ").pii(jwt, "jwt").text("\r\nHost: x").build(["positive", "header"]))
        elif style == 1:
            out.append(Case().text('{"id_token":"').pii(jwt, "jwt").text('"}').build(["positive", "json"]))
        elif style == 2:
            out.append(free_text(jwt, "jwt", "positive"))
        else:
            out.append(url_case(jwt, "jwt", "positive"))
    for _ in range(120):
        style = R.randrange(6)
        if style == 0:
            tok = secretish(R.choice([24, 32, 40]))
            out.append(Case().text("curl -H 'Authorization: Bearer ").pii(tok, "bearer_token").text("' https://api.example.com").build(["positive", "header"]))
        elif style == 1:
            cred = base64.b64encode(("%s:%s" % (R.choice(FIRST), secretish(10))).encode()).decode()
            out.append(Case().text("Authorization: Basic ").pii(cred, "bearer_token").text("\n").build(["positive", "header"]))
        elif style == 2:
            key = R.choice(["api_key", "apiKey", "X-Api-Key", "access_token", "client_secret", "GITHUB_TOKEN", "refresh_token"])
            sep = R.choice(["=", ": ", "\": \"", "="])
            pre = ("{\"%s" % key) if sep == "\": \"" else key
            out.append(Case().text("config " + pre + sep).pii(secretish(R.choice([16, 24, 32])), "bearer_token").text(R.choice(["\"}", " ", "&x=1", ""])).build(["positive", "keyvalue"]))
        else:
            out.append(R.choice([free_text, log_line, json_field])(make_vendor_token(), "bearer_token", "positive"))
    for _ in range(100):
        out.append(R.choice([free_text, log_line, json_field])(make_aws_access(), "aws_access_key", "positive"))
    for _ in range(100):
        key = R.choice(["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "SecretAccessKey", "aws_secret_key"])
        style = R.randrange(3)
        if style == 0:
            c = Case().text("[default]\naws_access_key_id = ").pii(make_aws_access(), "aws_access_key")
            c.text("\n%s = " % key).pii(make_aws_secret(), "aws_secret_key").text("\n")
        elif style == 1:
            c = Case().text('{"%s": "' % key).pii(make_aws_secret(), "aws_secret_key").text('"}')
        else:
            c = Case().text("export %s=" % key).pii(make_aws_secret(), "aws_secret_key").text("; echo ok")
        out.append(c.build(["positive", "keyvalue"]))
    for _ in range(80):
        if R.random() < 0.5:
            pem = make_pem("\n")
            out.append(Case().text("key file contents:\n").pii(pem, "private_key").text("\n# end\n").build(["positive", "multiline"]))
        else:
            pem = make_pem("\n")
            out.append(Case().text('{"private_key":"').pii(jesc(pem), "private_key").text('"}').build(["positive", "json"]))
    # Mixed multi-line messages.
    kinds = list(MAKERS)
    for _ in range(150):
        picks = R.sample(kinds, R.randrange(2, 5))
        out.append(multi([(MAKERS[k](), k) for k in picks], "positive"))
    return out


# ---------------------------------------------------------------- hard negatives

def bad_luhn_number():
    n = R.choice([13, 14, 15, 16, 19])
    while True:
        d = R.choice("23456") + "".join(R.choice("0123456789") for _ in range(n - 1))
        if not luhn_ok(d):
            return d


def bad_iban():
    cc = R.choice(sorted(IBAN_LENGTHS))
    good = iban_make(cc)
    while True:
        chk = "%02d" % R.randrange(100)
        bad = good[:2] + chk + good[4:]
        if iban_mod97(bad) != 1:
            return bad


def bad_ssn():
    a, g, s = make_ssn_parts()
    which = R.randrange(5)
    if which == 0:
        a = 0
    elif which == 1:
        a = 666
    elif which == 2:
        a = R.randrange(900, 1000)
    elif which == 3:
        g = 0
    else:
        s = 0
    return "%03d-%02d-%04d" % (a, g, s)


def uuid():
    h = "%032x" % R.getrandbits(128)
    return "-".join([h[:8], h[8:12], h[12:16], h[16:20], h[20:]])


def hexhash():
    width = R.choice([32, 40, 64])
    return "%0*x" % (width, R.getrandbits(4 * width))


def negative_value():
    kind = R.randrange(16)
    if kind == 0:
        return bad_luhn_number()
    if kind == 1:
        return bad_iban()
    if kind == 2:
        return bad_ssn()
    if kind == 3:
        return R.choice(["ORD-", "INV-", "#", "order ", "PO"]) + str(R.randrange(10 ** 5, 10 ** 9))
    if kind == 4:
        return uuid()
    if kind == 5:
        return "2024-%02d-%02dT%02d:%02d:%02d.%03dZ" % (R.randrange(1, 13), R.randrange(1, 29), R.randrange(24), R.randrange(60), R.randrange(60), R.randrange(1000))
    if kind == 6:
        return str(1600000000 + R.randrange(10 ** 8)) + R.choice(["", "%03d" % R.randrange(1000)])
    if kind == 7:
        return R.choice(["v", "", "version "]) + "%d.%d.%d" % (R.randrange(20), R.randrange(50), R.randrange(200)) + R.choice(["", "-rc.1", "-beta.2", "+build.7"])
    if kind == 8:
        return hexhash()
    if kind == 9:
        return "$%d,%03d.%02d" % (R.randrange(1, 999), R.randrange(1000), R.randrange(100))
    if kind == 10:
        return ":".join("%02x" % R.randrange(256) for _ in range(6))
    if kind == 11:
        return "%d.%d.%d.%d.%d" % tuple(R.randrange(256) for _ in range(5))
    if kind == 12:
        return "%02d:%02d:%02d" % (R.randrange(24), R.randrange(60), R.randrange(60))
    if kind == 13:
        return "%.6f, %.6f" % (R.uniform(-90, 90), R.uniform(-180, 180))
    if kind == 14:
        return R.choice(["token_type=bearer", "basic understanding of the", "a bearer instrument",
                         "token: null", "api_key=<redacted>", "secret: changeme"])
    return "%d-%02d-%02d" % (R.randrange(1990, 2030), R.randrange(1, 13), R.randrange(1, 29))


def contains_pii_by_definition(text):
    """Random negatives may hit a definition by chance (a Luhn-valid run of
    digits); such a case is resampled rather than mislabeled."""
    for m in re.finditer(r"(?<![0-9A-Za-z_.])\d{13,19}(?![0-9A-Za-z_])", text):
        if card_by_definition(m.group()):
            return True
    return False


def negatives():
    out = []
    while len(out) < 800:
        v = negative_value()
        ctx = R.randrange(4)
        if ctx == 0:
            frame = R.choice(SENTENCES)
        elif ctx == 1:
            frame = R.choice(LOG_FRAMES)
        elif ctx == 2:
            frame = '{"ref":"{}","n":%d}' % R.randrange(1000)
        else:
            frame = "GET /api/items/{}?sort=asc HTTP/1.1"
        text = frame.replace("{}", v, 1)
        if contains_pii_by_definition(text):
            continue
        out.append({"text": text, "spans": [], "tags": ["negative"]})
    return out


# ---------------------------------------------------------------- hand-written

HAND = [
    # (text, [(substring, kind), ...]) — substrings are labeled at their first
    # occurrence after the previous one.
    ("Card 4111-1111-1111-1111 expires 12/27, CVV 123", [("4111-1111-1111-1111", "card")]),
    ("Paid with 4111 1111 1111 1111; order ORD-4111-1111 shipped", [("4111 1111 1111 1111", "card")]),
    ("Not a card: 4111111111111112 (typo)", []),
    ("epoch ms 1714567890123, epoch us 1714567890123456", []),
    ("amex 378282246310005 and diners 30569309025904", [("378282246310005", "card"), ("30569309025904", "card")]),
    ("IBAN DE89 3704 0044 0532 0130 00 for rent", [("DE89 3704 0044 0532 0130 00", "iban")]),
    ("IBAN DE89 3704 0044 0532 0130 01 is mistyped", []),
    ("Zahlung an DE89370400440532013000 – danke schön", [("DE89370400440532013000", "iban")]),
    ("wire to GB29NWBK60161331926819 / ref ABCD1234EFGH5678", [("GB29NWBK60161331926819", "iban")]),
    ("SSN 123-45-6789 and 000-12-3456 and 666-01-0001", [("123-45-6789", "us_ssn")]),
    ("order 123456789 shipped to zip 94105-1234", []),
    ("ssn=123456789", [("123456789", "us_ssn")]),
    ("IPv6 ::1 and 127.0.0.1 are loopback", [("::1", "ipv6"), ("127.0.0.1", "ipv4")]),
    ("server listening on [::]:8080 and 0.0.0.0:8080", [("0.0.0.0", "ipv4")]),
    ("Windows 10.0.19041.1 build, firmware 1.2.3", []),
    ("route 10.0.0.0/8 via 192.168.1.1 dev eth0", [("10.0.0.0", "ipv4"), ("192.168.1.1", "ipv4")]),
    ("range 10.1.1.1-10.1.1.9", [("10.1.1.1", "ipv4"), ("10.1.1.9", "ipv4")]),
    ("link fe80::1ff:fe23:4567:890a%eth0 up", [("fe80::1ff:fe23:4567:890a", "ipv6")]),
    ("MAC 00:1a:2b:3c:4d:5e at 10:30:45", []),
    ("uuid 123e4567-e89b-12d3-a456-426614174000 ok", []),
    ("sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", []),
    ("git da39a3ee5e6b4b0d3255bfef95601890afd80709", []),
    ("token_type: bearer, expires_in: 3600", []),
    ("at 2024-01-15T10:30:00.123Z, +02:00 offset", []),
    ("price $1,234.56 (12% off), qty 3", []),
    ("{\"payload\":\"{\\\"email\\\":\\\"ann@example.com\\\"}\"}", [("ann@example.com", "email")]),
    ("log: \"msg\":\"line1\\ncard 4111111111111111\\tend\"", [("4111111111111111", "card")]),
    ("https://example.com/reset?email=ann%40example.com&token=Zx81kQ0pLm3nB7vC", [("ann%40example.com", "email"), ("Zx81kQ0pLm3nB7vC", "bearer_token")]),
    ("https://u.example.com/users/bob.smith@example.org/profile", [("bob.smith@example.org", "email")]),
    ("メール: hana.tanaka@example.jp 電話: +81 3-1234-5678", [("hana.tanaka@example.jp", "email"), ("+81 3-1234-5678", "phone")]),
    ("Tél. : 01 23 45 67 89, portable 06-12-34-56-78", [("01 23 45 67 89", "phone"), ("06-12-34-56-78", "phone")]),
    ("call +1 (415) 555-2671 or 415.555.2671 ext. 12", [("+1 (415) 555-2671", "phone"), ("415.555.2671 ext. 12", "phone")]),
    ("UK office +44 (0)20 7946 0958", [("+44 (0)20 7946 0958", "phone")]),
    ("not phones: 123-456-7890, 555-1234, 2024-01-15", []),
    ("AWS key AKIAIOSFODNN7EXAMPLE used", [("AKIAIOSFODNN7EXAMPLE", "aws_access_key")]),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", [("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key")]),
    ("sha1 of file: 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", []),
    ("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----", []),
    ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----", []),
    ("a bearer bond and basic understanding", []),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     [("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt")]),
    ("users: ann@example.com, bob@example.org; cc carla@example.net.", [("ann@example.com", "email"), ("bob@example.org", "email"), ("carla@example.net", "email")]),
    ("@channel please review; see user@localhost and root@127", []),
    ("ssh git@github.com:org/repo.git", [("git@github.com", "email")]),
    ("pi = 3.14159265358979323 and e = 2.718281828459045", []),
    ("ISBN 978-3-16-148410-0, EAN 4006381333931", []),
    ("dates 01/02/2024 and 01.02.2024 and 2024/02/01", []),
    ("size 4111111111111111KB is absurd", []),
    ("Karte: 5500 0000 0000 0004, Zeitpunkt 12:00", [("5500 0000 0000 0004", "card")]),
    ("Numer karty:\t6011000990139424\nDziękuję", [("6011000990139424", "card")]),
    ("ipv6 2001:0db8:0000:0000:0000:ff00:0042:8329 and 2001:db8::ff00:42:8329", [("2001:0db8:0000:0000:0000:ff00:0042:8329", "ipv6"), ("2001:db8::ff00:42:8329", "ipv6")]),
    ("C++ std::string and Foo::bar() and a::b", []),
    ("vendor token ghp_16C7e42F292c6912E7710c838347Ae178B4a in CI", [("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "bearer_token")]),
    ("slack xoxb-2f2c6912e7-710c838347ae178b4a ok", [("xoxb-2f2c6912e7-710c838347ae178b4a", "bearer_token")]),
    ("SSN: 078051120 on file", [("078051120", "us_ssn")]),
    ("phone 555 0100 short, zip 10001", []),
    ("ticket 2024-000123 and build 20240115.3", []),
    ("X-Forwarded-For: 203.0.113.195, 70.41.3.18, 150.172.238.178", [("203.0.113.195", "ipv4"), ("70.41.3.18", "ipv4"), ("150.172.238.178", "ipv4")]),
    ("résumé of zoë: zoe.dubois@example.fr · +33 1 23 45 67 89", [("zoe.dubois@example.fr", "email"), ("+33 1 23 45 67 89", "phone")]),
    # Issue 20: forms that leaked from an independent sentence suite.
    ("call 240-926-8599x528 or (285)917-8128x657", [("240-926-8599x528", "phone"), ("(285)917-8128x657", "phone")]),
    ("front desk 415-555-2671 ext. 45, fax 415-555-2672", [("415-555-2671 ext. 45", "phone"), ("415-555-2672", "phone")]),
    ("from abroad dial 001-878-469-0736 or +1-878-469-0736", [("001-878-469-0736", "phone"), ("+1-878-469-0736", "phone")]),
    ("London office +44 20 7946 0958, mobile +44 7700 900123", [("+44 20 7946 0958", "phone"), ("+44 7700 900123", "phone")]),
    ("call me on 3306824628 after six", [("3306824628", "phone")]),
    ("my cell is 3306824628", [("3306824628", "phone")]),
    ("maestro 630480746464, 12 digits", [("630480746464", "card")]),
    ("card 6759 6498 2643 8453 exp 04/27", [("6759 6498 2643 8453", "card")]),
    # Look like phones, are not: order numbers, timestamps, builds, amounts.
    ("order 3306824628 shipped; call us about it", []),
    ("please call about ticket 4059763844 tomorrow", []),
    ("api call 12 of 40 took 1709634151 ns", []),
    ("build 20240305.1234 at 2024-03-05 10:22:31 for USD 12,345,678.90", []),
    ("phone case SKU 59688330728 in stock", []),
    ("not phones: 0123 4567 8901 2345 or +28 1234 5678", []),
]


def hand_cases():
    out = []
    for text, labels in HAND:
        spans = []
        pos = 0
        for sub, kind in labels:
            k = text.index(sub, pos)
            start = len(text[:k].encode())
            spans.append({"start": start, "end": start + len(sub.encode()), "kind": kind})
            pos = k + len(sub)
        if not spans:
            assert not contains_pii_by_definition(text), text
        out.append({"text": text, "spans": spans, "tags": ["hand"] + ([] if spans else ["negative"])})
    return out


def main():
    cases = positives() + negatives() + hand_cases()
    for k, c in enumerate(cases):
        c = {"id": k, **c}
        sys.stdout.write(json.dumps(c, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
