"""An h2c (prior knowledge) backend that refuses streams: a request with `x-refuse-first: N`
and `x-demo-key: K` has its first N streams carrying K answered with RST_STREAM REFUSED_STREAM;
everything else gets 200 and `version=<VERSION> refused=<count for K>`. Prints `ready`.

usage: h2_refusing_server.py serve HOST:PORT VERSION
"""
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events

_, _, address, version = sys.argv[:4]
host, port = address.rsplit(":", 1)
counts = {}
lock = threading.Lock()


def serve(sock):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, validate_inbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers = {}
    try:
        while True:
            data = sock.recv(65535)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers[event.stream_id] = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                                                for k, v in event.headers}
                if isinstance(event, h2.events.StreamEnded):
                    request = headers.pop(event.stream_id, {})
                    key = request.get("x-demo-key", "")
                    refuse = int(request.get("x-refuse-first", "0"))
                    with lock:
                        counts[key] = counts.get(key, 0) + 1
                        seen = counts[key]
                    if key and seen <= refuse:
                        conn.reset_stream(event.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
                    else:
                        body = f"version={version} refused={min(seen - 1, refuse)}\n".encode()
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body, end_stream=True)
            sock.sendall(conn.data_to_send())
    except Exception:
        return
    finally:
        sock.close()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, int(port)))
listener.listen(64)
print("ready", flush=True)
while True:
    client, _ = listener.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
