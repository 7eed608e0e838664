#!/usr/bin/env python3
"""Benign clients for the independent hold-out generator (holdout.sh).

Each subcommand runs until DEADLINE (epoch seconds) or until STOPFILE exists.

  call SERVER PORT RATE DEADLINE STOPFILE    video-call-like UDP: calls of 40-120 s
                                             at RATE packets/s (the server peer
                                             streams back), pauses between calls
  monitor HOSTS PORTS DEADLINE STOPFILE      blackbox-style TCP checks of every
                                             PORT on every HOST (comma lists) every 30 s
  browse SERVER DEADLINE STOPFILE            page loads: one HTML page, then 8-30
                                             assets over up to 6 parallel connections,
                                             3-20 s think time
"""
import os
import random
import socket
import struct
import sys
import threading
import time
import http.client
from concurrent.futures import ThreadPoolExecutor


def alive(deadline, stop):
    return time.time() < deadline and not os.path.exists(stop)


def call(server, port, rate, deadline, stop):
    while alive(deadline, stop):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        length = random.uniform(40, 120)
        t_end = time.time() + length
        seq = 0
        nxt = time.monotonic()
        while time.time() < t_end and alive(deadline, stop):
            seq += 1
            size = random.choice((160, 180, 900, 1000, 1100)) if seq % 3 else 120
            try:
                s.sendto(b"\x80\x60" + struct.pack("!HI", seq & 0xFFFF, seq * 160) + os.urandom(size), (server, port))
            except OSError:
                pass
            try:
                while True:
                    s.recvfrom(2048)
            except OSError:
                pass
            nxt += 1.0 / rate
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
        s.close()
        t = time.time() + random.uniform(8, 25)
        while time.time() < t and alive(deadline, stop):
            time.sleep(0.5)


def check(host, port):
    try:
        s = socket.create_connection((host, port), timeout=2)
        s.settimeout(1.0)
        if port >= 9100:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: %s\r\nUser-Agent: blackbox-probe\r\n\r\n" % host.encode())
        try:
            s.recv(2048)
        except OSError:
            pass
        s.close()
    except OSError:
        pass


def monitor(hosts, ports, deadline, stop):
    hosts = hosts.split(",")
    ports = [int(p) for p in ports.split(",")]
    while alive(deadline, stop):
        t0 = time.time()
        with ThreadPoolExecutor(4) as ex:
            for h in hosts:
                for p in ports:
                    ex.submit(check, h, p)
        while time.time() < t0 + 30 and alive(deadline, stop):
            time.sleep(0.5)


def browse(server, deadline, stop):
    pages = ["/page%d.html" % i for i in range(1, 41)]
    assets = ["/static/asset%d.bin" % i for i in range(1, 61)]
    while alive(deadline, stop):
        try:
            c = http.client.HTTPConnection(server, 80, timeout=10)
            c.request("GET", random.choice(pages), headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
            c.getresponse().read()
            want = random.sample(assets, random.randint(8, 30))
            lock = threading.Lock()

            def conn_worker():
                cc = http.client.HTTPConnection(server, 80, timeout=10)
                while True:
                    with lock:
                        if not want:
                            break
                        a = want.pop()
                    try:
                        cc.request("GET", a, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
                        cc.getresponse().read()
                    except Exception:
                        cc.close()
                        cc = http.client.HTTPConnection(server, 80, timeout=10)
                cc.close()

            ts = [threading.Thread(target=conn_worker) for _ in range(6)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            c.close()
        except Exception:
            pass
        t = time.time() + random.uniform(3, 20)
        while time.time() < t and alive(deadline, stop):
            time.sleep(0.5)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "call":
        call(a[0], int(a[1]), float(a[2]), float(a[3]), a[4])
    elif cmd == "monitor":
        monitor(a[0], a[1], float(a[2]), a[3])
    elif cmd == "browse":
        browse(a[0], float(a[1]), a[2])
    else:
        sys.exit("unknown subcommand " + cmd)
