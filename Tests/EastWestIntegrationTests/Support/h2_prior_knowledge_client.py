"""An HTTP/2 client over mutual TLS, as a mesh workload would talk through the gateway: with
prior knowledge (no ALPN), or offering ALPN values and speaking h2 only if the server chose h2.
Prints the response status and body; with ALPN, first a line `alpn=<chosen or none>`. With
WAIT_FOR_GOAWAY=1 in the environment it then holds the idle connection until the server ends
it and prints `goaway <error code> last=<stream> after <seconds>` (or `closed without goaway`).

usage: h2_prior_knowledge_client.py HOST PORT SNI CERT_CHAIN KEY ROOT PATH [ALPN,...]
"""
import os
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events

host, port, sni, chain, key, root, path = sys.argv[1:8]
alpn = sys.argv[8].split(",") if len(sys.argv) > 8 else None
context = ssl.create_default_context(cafile=root)
context.check_hostname = False  # the gateway certificate names service hosts, not this SNI
context.load_cert_chain(chain, key)
if alpn:
    context.set_alpn_protocols(alpn)
with socket.create_connection((host, int(port)), timeout=30) as raw:
    with context.wrap_socket(raw, server_hostname=sni) as tls:
        if alpn:
            chosen = tls.selected_alpn_protocol()
            print(f"alpn={chosen or 'none'}")
            if chosen != "h2":
                sys.exit(1)
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "backend")],
                          end_stream=True)
        tls.sendall(conn.data_to_send())
        status, body, done = None, b"", False
        while not done:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status", b"?").decode()
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            tls.sendall(conn.data_to_send())
        print(status)
        print(body.decode(errors="replace"))
        if os.environ.get("WAIT_FOR_GOAWAY") == "1":
            idle_from, goaway = time.monotonic(), None
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        goaway = event
            elapsed = time.monotonic() - idle_from
            if goaway:
                print(f"goaway {int(goaway.error_code)} last={goaway.last_stream_id} after {elapsed:.2f}")
            else:
                print(f"closed without goaway after {elapsed:.2f}")
