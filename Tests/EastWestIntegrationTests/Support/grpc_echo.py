"""A gRPC backend and client for the integration tests, with Python's grpcio (no generated code:
one unary method, /echo.Echo/Say, on raw bytes).

    grpc_echo.py serve ADDRESS VERSION
        answers Say with "VERSION:<request>:<x-forwarded-client-cert it received>" and the
        trailing metadata x-version: VERSION.
    grpc_echo.py call TARGET AUTHORITY CERT KEY ROOT MESSAGE COUNT [KEY=VALUE...]
        COUNT calls over one mTLS channel to TARGET (host:port), verifying the server as
        AUTHORITY; prints "ok <response> <x-version>" or "error <CODE> <details>" per call.
"""
import sys
from concurrent import futures

import grpc


def serve(address, version):
    def say(request, context):
        metadata = dict(context.invocation_metadata())
        context.set_trailing_metadata((("x-version", version),))
        return b"%s:%s:%s" % (version.encode(), request, metadata.get("x-forwarded-client-cert", "").encode())

    handler = grpc.method_handlers_generic_handler("echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(target, authority, cert, key, root, message, count, metadata):
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(root_certificates=read(root), private_key=read(key), certificate_chain=read(cert))
    channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", authority),
                                                                 ("grpc.default_authority", authority)])
    say = channel.unary_unary("/echo.Echo/Say")
    for _ in range(count):
        try:
            response, rpc = say.with_call(message.encode(), timeout=5, metadata=metadata)
            print("ok", response.decode(), dict(rpc.trailing_metadata()).get("x-version"), flush=True)
        except grpc.RpcError as error:
            print("error", error.code().name, error.details(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        pairs = [tuple(pair.split("=", 1)) for pair in sys.argv[9:]]
        call(*sys.argv[2:8], int(sys.argv[8]), pairs)
