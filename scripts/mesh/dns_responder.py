#!/usr/bin/env python3
"""A tiny DNS-like UDP responder for the CyberMesh data generator.

Answers every query with an empty NOERROR response (same id, QR bit set,
question echoed), so `dig` clients see a real request/response exchange.
Runs inside the generator's server namespace only.
"""
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 53
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", port))
while True:
    data, peer = sock.recvfrom(4096)
    if len(data) < 12:
        continue
    qd = data[12:]
    # header: id, flags (QR=1, RD copied, RA=1), qdcount=1, an=ns=ar=0
    flags = bytes([0x80 | (data[2] & 0x01), 0x80])
    reply = data[0:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + qd
    sock.sendto(reply, peer)
