"""Malformed HTTP/2 against the gateway, next to a request that must not notice it. Over one
mutual-TLS connection (ALPN h2): stream 1 is a valid GET of PATH (slow, so it is in flight);
stream 3 a header block without :path; stream 5 one with an upper-case header name. Prints a
line per stream: `1 <status> <body bytes>`, `3 reset <code>`, `5 reset <code>`. Then a second
connection sends a DATA frame on stream 0 (a connection error) and prints `goaway <code>` or
`closed without goaway`.

usage: h2_malformed_client.py HOST PORT SNI CERT_CHAIN KEY ROOT AUTHORITY PATH
"""
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events

host, port, sni, chain, key, root, authority, path = sys.argv[1:9]
context = ssl.create_default_context(cafile=root)
context.check_hostname = False
context.load_cert_chain(chain, key)
context.set_alpn_protocols(["h2"])


def connect():
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = context.wrap_socket(raw, server_hostname=sni)
    if tls.selected_alpn_protocol() != "h2":
        sys.exit("the gateway did not choose h2")
    return tls


# The client library would refuse to send what this test sends.
config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                   normalize_outbound_headers=False, validate_inbound_headers=False)
tls = connect()
conn = h2.connection.H2Connection(config=config)
conn.initiate_connection()
base = [(":method", "GET"), (":scheme", "https"), (":authority", authority)]
conn.send_headers(1, base + [(":path", path)], end_stream=True)
conn.send_headers(3, base, end_stream=True)
conn.send_headers(5, base + [(":path", "/"), ("X-Upper", "1")], end_stream=True)
tls.sendall(conn.data_to_send())
results, status, body = {}, None, 0
while len(results) < 3:
    data = tls.recv(65536)
    if not data:
        break
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
            status = dict(event.headers).get(b":status", b"?").decode()
        elif isinstance(event, h2.events.DataReceived):
            body += len(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
            results[1] = f"1 {status} {body}"
        elif isinstance(event, h2.events.StreamReset):
            results[event.stream_id] = f"{event.stream_id} reset {int(event.error_code)}"
    tls.sendall(conn.data_to_send())
for stream in sorted(results):
    print(results[stream])
tls.close()

tls = connect()
conn = h2.connection.H2Connection(config=config)
conn.initiate_connection()
tls.sendall(conn.data_to_send())
# DATA (type 0) on stream 0, 4 bytes: RFC 9113 §6.1 makes it a connection error.
tls.sendall(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd")
goaway = None
while goaway is None:
    try:
        data = tls.recv(65536)
    except (ConnectionError, ssl.SSLError):
        break
    if not data:
        break
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.ConnectionTerminated):
            goaway = event
print(f"goaway {int(goaway.error_code)}" if goaway else "closed without goaway")
