#!/usr/bin/env python3
"""Connections that never finish a TLS handshake, as a cheap attacker opens them.

usage: prehandshake_flood.py HOST PORT HALF_SENT SILENT WAIT_SECONDS [CERT_CHAIN KEY ROOT SNI]

Opens HALF_SENT connections that each send one byte of a TLS record header and close, then
SILENT connections that send nothing and stay open. Waits up to WAIT_SECONDS for the server to
close the silent ones and prints JSON: how many the server closed and after how long. With a
client certificate, first opens an mTLS connection to SNI and, after the flood, sends a request
on it: the answer shows established traffic went on.
"""
import json
import select
import socket
import ssl
import sys
import time

host, port, half_sent, silent, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
established = None
if len(sys.argv) > 6:
    chain, key, root, sni = sys.argv[6:10]
    context = ssl.create_default_context(cafile=root)
    context.load_cert_chain(chain, key)
    established = context.wrap_socket(socket.create_connection((host, port)), server_hostname=sni)
    # One keep-alive request first: once it is answered, the server has finished the handshake
    # too (a TLS 1.3 client finishes before the server does).
    established.sendall(b"GET / HTTP/1.1\r\nHost: " + sni.encode() + b"\r\n\r\n")
    established.settimeout(10)
    first = b""
    while b"\r\n\r\n" not in first:
        first += established.recv(65536)
    head, _, rest = first.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")][0])
    while len(rest) < length:
        rest += established.recv(65536)

for _ in range(half_sent):
    s = socket.create_connection((host, port))
    s.sendall(b"\x16")
    s.close()

opened = time.monotonic()
quiet = [socket.create_connection((host, port)) for _ in range(silent)]
closed_after = []
deadline = opened + wait
while quiet and time.monotonic() < deadline:
    readable, _, _ = select.select(quiet, [], [], max(0.0, deadline - time.monotonic()))
    for s in readable:
        try:
            data = s.recv(1)
        except OSError:
            data = b""
        if data == b"":
            closed_after.append(time.monotonic() - opened)
            quiet.remove(s)
            s.close()
for s in quiet:
    s.close()
answer = None
if established is not None:
    established.sendall(b"GET / HTTP/1.1\r\nHost: " + sni.encode() + b"\r\nConnection: close\r\n\r\n")
    received = b""
    while True:
        chunk = established.recv(65536)
        if not chunk:
            break
        received += chunk
    answer = received.decode(errors="replace")
print(json.dumps({"closed_by_server": len(closed_after), "still_open": silent - len(closed_after),
                  "max_seconds": max(closed_after) if closed_after else None, "established_answer": answer}))
