"""A WebSocket backend and client for the integration tests, with Python's websockets.

    ws_echo.py serve ADDRESS VERSION
        greets each connection with "hello from VERSION" before it says anything (bytes that
        follow the 101 at once), then answers each message with "VERSION:<message>".
    ws_echo.py call ADDRESS AUTHORITY CERT KEY ROOT COUNT [HEADER=VALUE...]
        one wss:// connection to ADDRESS (host:port) with a client certificate, verifying the
        server as AUTHORITY; sends COUNT messages and one of 1 MiB; prints the greeting, each
        answer, and the size of the big one.
"""
import socket
import ssl
import sys

from websockets.sync.client import connect
from websockets.sync.server import serve


def run_server(address, version):
    host, port = address.rsplit(":", 1)

    def handler(connection):
        connection.send("hello from %s" % version)
        for message in connection:
            connection.send("%s:%s" % (version, message if isinstance(message, str) else len(message)))

    with serve(handler, host, int(port), max_size=None) as server:
        print("ready", flush=True)
        server.serve_forever()


def call(address, authority, cert, key, root, count, headers):
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=root)
    context.load_cert_chain(cert, key)
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    extra = [tuple(h.split("=", 1)) for h in headers]
    with connect("wss://%s:%s/chat" % (authority, port), sock=sock, ssl=context, server_hostname=authority,
                 additional_headers=extra, max_size=None, open_timeout=10) as ws:
        print(ws.recv(timeout=10))
        for i in range(count):
            ws.send("message %d" % i)
            print(ws.recv(timeout=10))
        ws.send(b"x" * (1 << 20))
        print(ws.recv(timeout=10))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        run_server(sys.argv[2], sys.argv[3])
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]), sys.argv[8:])
