#!/usr/bin/env python3
"""HTTP server with Basic authentication for the CyberMesh data generator.

GET / answers 200 with a small page for the right credentials, 401 otherwise;
the target of the generator's password-guessing scenario (hydra http-get).
"""
import base64
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port = int(sys.argv[1])
user, password = sys.argv[2], sys.argv[3]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.headers.get("Authorization") == expected:
            body = b"<html><body>welcome</body></html>\n" * 20
            self.send_response(200)
        else:
            body = b"unauthorized\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mesh"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
