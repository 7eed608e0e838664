#!/usr/bin/env python3
"""A minimal POP3-style login server for the CyberMesh data generator.

Speaks just enough of POP3 (RFC 1939) for a login exchange: a greeting,
USER/PASS (+OK for the right pair, -ERR otherwise), STAT, QUIT, and -ERR for
anything else. It is the target of the generator's fourth password-guessing
scenario (a line-protocol service next to ssh, ftp and HTTP basic auth).
Runs inside the generator's server namespace only.

    pop3_login.py PORT USER PASSWORD
"""
import socketserver
import sys

port = int(sys.argv[1])
user, password = sys.argv[2].encode(), sys.argv[3].encode()


class Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def say(self, text):
        self.wfile.write(text + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.say(b"+OK mesh POP3 ready")
        name, authed, fails = None, False, 0
        for _ in range(200):  # bounded session
            try:
                line = self.rfile.readline(512)
            except OSError:
                return
            if not line:
                return
            parts = line.strip().split(b" ", 1)
            cmd = parts[0].upper()
            arg = parts[1] if len(parts) > 1 else b""
            if cmd == b"USER":
                name = arg
                self.say(b"+OK")
            elif cmd == b"PASS":
                if name == user and arg == password:
                    authed = True
                    self.say(b"+OK logged in")
                else:
                    fails += 1
                    self.say(b"-ERR authentication failed")
                    if fails >= 3:
                        return
            elif cmd == b"STAT" and authed:
                self.say(b"+OK 0 0")
            elif cmd == b"QUIT":
                self.say(b"+OK bye")
                return
            else:
                self.say(b"-ERR unknown command")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(("0.0.0.0", port), Handler).serve_forever()
