#!/usr/bin/env python3
"""A long-lived, mostly idle TCP session for the CyberMesh data generator.

Connects to HOST:PORT (an echo service) and sends a short keepalive line
every PERIOD seconds, reading the echo, until DEADLINE (epoch seconds) or
until the file STOP exists. TCP keepalive is switched on too. Benign.

    keepalive_client.py HOST PORT PERIOD DEADLINE STOP
"""
import os
import socket
import sys
import time

host, port, period, deadline, stop = (
    sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
for attr, val in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 5)):
    if hasattr(socket, attr):
        s.setsockopt(socket.IPPROTO_TCP, getattr(socket, attr), val)
n = 0
while time.time() < deadline and not os.path.exists(stop) and n < 10000:
    n += 1
    s.sendall(b"PING %d\n" % n)
    try:
        s.recv(256)
    except OSError:
        break
    end = time.time() + period
    while time.time() < min(end, deadline) and not os.path.exists(stop):
        time.sleep(0.5)
s.close()
