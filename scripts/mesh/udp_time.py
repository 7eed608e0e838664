#!/usr/bin/env python3
"""An NTP-like UDP responder for the CyberMesh data generator.

Answers every datagram of at least 48 bytes with a 48-byte reply carrying
the current time (mode 4, as an NTP server would), so benign clients make
small UDP request/response exchanges on port 123. Runs inside the
generator's server namespace only.

    udp_time.py PORT              (server)
    udp_time.py --query HOST PORT (one request, waits 1 s for the reply)
"""
import socket
import struct
import sys
import time

NTP_EPOCH = 2208988800

if sys.argv[1] == "--query":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.sendto(b"\x23" + b"\x00" * 47, (sys.argv[2], int(sys.argv[3])))
    try:
        s.recvfrom(512)
    except OSError:
        pass
    sys.exit(0)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = sock.recvfrom(512)
    if len(data) < 48:
        continue
    now = time.time() + NTP_EPOCH
    secs, frac = int(now), int((now % 1) * 2**32)
    reply = bytes([0x24, 2, 6, 0xEC]) + b"\x00" * 8 + b"MESH" + struct.pack(
        "!IIIIIIII", secs, 0, secs, 0, secs, frac, secs, frac)
    sock.sendto(reply, peer)
