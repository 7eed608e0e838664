#!/usr/bin/env python3
"""Servers for the independent hold-out generator (scripts/mesh/holdout.sh).

Subcommands (each runs until killed, inside the generator's namespaces only):
  web BIND PORT DOCROOT USER PASSWORD   HTTP/1.1 file server, /login form
                                        (GET shows it, POST checks user/pass),
                                        PUT or POST /upload/* accepted and discarded
  dns BIND PORT                         DNS responder: answers A/AAAA/TXT/MX
                                        queries with one record each
  telnet BIND PORT USER PASSWORD        telnet-like line login (3 tries per
                                        connection, 1 s delay after a wrong one)
  ports BIND PORT...                    many open TCP ports answering a banner
                                        or a small HTTP /metrics response
  rtc BIND PORT RATE                    video-call peer: echoes a constant-rate
                                        media stream back to every active caller
"""
import asyncio
import os
import random
import socket
import struct
import sys
import time
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


# ---------------------------------------------------------------- web
def web(bind, port, docroot, user, password):
    login_page = (b"<html><body><form method='post' action='/login'>"
                  b"<input name='username'><input name='password' type='password'>"
                  b"<input type='submit'></form></body></html>")

    class H(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **k):
            super().__init__(*a, directory=docroot, **k)

        def log_message(self, *a):
            pass

        def _send(self, code, body, ctype="text/html"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _drain(self):
            n = int(self.headers.get("Content-Length") or 0)
            data = b""
            while n > 0:
                chunk = self.rfile.read(min(n, 65536))
                if not chunk:
                    break
                n -= len(chunk)
                if len(data) < 4096:
                    data += chunk[: 4096 - len(data)]
            return data

        def do_GET(self):
            if self.path.startswith("/login"):
                return self._send(200, login_page)
            return super().do_GET()

        def do_POST(self):
            data = self._drain()
            if self.path.startswith("/login"):
                form = urllib.parse.parse_qs(data.decode("latin-1"))
                ok = form.get("username", [""])[0] == user and form.get("password", [""])[0] == password
                time.sleep(0.05)
                if ok:
                    self.send_response(302)
                    self.send_header("Location", "/page1.html")
                    self.send_header("Set-Cookie", "session=%016x" % random.getrandbits(64))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(200, b"<html><body>Invalid username or password</body></html>" + login_page)
                return
            self._send(201, b"stored\n", "text/plain")

        do_PUT = do_POST

    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((bind, port), H).serve_forever()


# ---------------------------------------------------------------- dns
def dns(bind, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((bind, port))
    while True:
        data, peer = s.recvfrom(4096)
        if len(data) < 17:
            continue
        # walk the question name
        i = 12
        while i < len(data) and data[i] != 0:
            i += data[i] + 1
        q_end = i + 5
        if q_end > len(data):
            continue
        qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
        question = data[12:q_end]
        if qtype == 1:
            rdata = bytes([10, 78, 0, random.randint(10, 12)])
        elif qtype == 28:
            rdata = bytes(16)
        elif qtype == 16:
            txt = os.urandom(random.randint(4, 40)).hex().encode()[:60]
            rdata = bytes([len(txt)]) + txt
        elif qtype == 15:
            rdata = b"\x00\x0a\x04mail\xc0\x0c"
        else:
            rdata = None
        flags = bytes([0x84 | (data[2] & 0x01), 0x80])
        if rdata is None:
            reply = data[0:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
        else:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 300, len(rdata)) + rdata
            reply = data[0:2] + flags + b"\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer
        try:
            s.sendto(reply, peer)
        except OSError:
            pass


# ---------------------------------------------------------------- telnet
async def telnet(bind, port, user, password):
    async def handle(r, w):
        try:
            w.write(b"\xff\xfd\x18\xff\xfd\x20\xff\xfb\x01\r\nDebian GNU/Linux 12\r\n")
            for attempt in range(3):
                w.write(b"\r\nmho-srv login: ")
                await w.drain()
                u = (await asyncio.wait_for(r.readline(), 30)).strip().lstrip(b"\xff\xfc\x18\xfc\x20\xfd\x01")
                w.write(b"Password: ")
                await w.drain()
                p = (await asyncio.wait_for(r.readline(), 30)).strip()
                if u.decode("latin-1", "ignore").endswith(user) and p.decode("latin-1", "ignore") == password:
                    w.write(b"\r\nLast login: today\r\n$ ")
                    await w.drain()
                    while True:
                        line = await asyncio.wait_for(r.readline(), 60)
                        if not line or line.strip() == b"exit":
                            break
                        w.write(b"ok\r\n$ ")
                        await w.drain()
                    break
                await asyncio.sleep(1.0)
                w.write(b"\r\nLogin incorrect\r\n")
                await w.drain()
        except Exception:
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, bind, port, backlog=512)
    async with srv:
        await srv.serve_forever()


# ---------------------------------------------------------------- ports
async def ports(bind, plist):
    async def handle(r, w):
        try:
            try:
                data = await asyncio.wait_for(r.read(1024), 0.5)
            except asyncio.TimeoutError:
                data = b""
            if data.startswith(b"GET"):
                body = b"# HELP up 1\nup 1\nprocess_uptime_seconds %d\n" % int(time.time() % 100000)
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                        b"Connection: close\r\n\r\n" % len(body) + body)
            else:
                w.write(b"SVC-%d READY\r\n" % w.get_extra_info("sockname")[1])
            await w.drain()
        except Exception:
            pass
        finally:
            w.close()

    servers = [await asyncio.start_server(handle, bind, p) for p in plist]
    await asyncio.gather(*(s.serve_forever() for s in servers))


# ---------------------------------------------------------------- rtc
def rtc(bind, port, rate):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, port))
    s.setblocking(False)
    peers = {}  # addr -> last seen
    seq = 0
    nxt = time.monotonic()
    while True:
        now = time.monotonic()
        while True:
            try:
                _, a = s.recvfrom(2048)
                peers[a] = now
            except BlockingIOError:
                break
        for a in [a for a, t in peers.items() if now - t > 2.0]:
            del peers[a]
        if now >= nxt:
            seq += 1
            for a in peers:
                size = random.choice((160, 180, 900, 1000, 1100)) if seq % 3 else 120
                try:
                    s.sendto(b"\x80\x60" + struct.pack("!HI", seq & 0xFFFF, seq * 160) + os.urandom(size), a)
                except OSError:
                    pass
            nxt += 1.0 / rate
            if nxt < now:
                nxt = now
        time.sleep(max(0.0, min(0.002, nxt - time.monotonic())))


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "web":
        web(a[0], int(a[1]), a[2], a[3], a[4])
    elif cmd == "dns":
        dns(a[0], int(a[1]))
    elif cmd == "telnet":
        asyncio.run(telnet(a[0], int(a[1]), a[2], a[3]))
    elif cmd == "ports":
        asyncio.run(ports(a[0], [int(p) for p in a[1:]]))
    elif cmd == "rtc":
        rtc(a[0], int(a[1]), float(a[2]))
    else:
        sys.exit("unknown subcommand " + cmd)
