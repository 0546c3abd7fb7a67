"""Istio's sample ext-authz gRPC server (samples/extauthz/src/main.go, the v3 Check) with
Python's grpcio and the protobuf runtime: the messages are built from descriptors written here
with Envoy's field numbers (api/envoy/service/auth/v3, config/core/v3, type/v3, google/rpc), so
the official protobuf library, not EastWest's codec, reads the gateway's CheckRequest and writes
the CheckResponse.

    ext_authz_grpc.py serve ADDRESS LOG [ALLOW_FILE]
        Check allows a request with header `x-ext-authz: allow` (OK, headers
        x-ext-authz-check-result: allowed and x-ext-authz-check-received: <the attributes>),
        denies any other (PERMISSION_DENIED, 403, the sample's body, x-ext-authz-check-result:
        denied); appends each CheckRequest in text format to LOG. A check without the header (a
        TCP connection's) is allowed, as the sample's, when the source principal ends with
        ALLOW_FILE's text (the sample's `/sa/<service account>`), read at each check.
"""
import sys
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

F = descriptor_pb2.FieldDescriptorProto


def build_messages():
    file = descriptor_pb2.FileDescriptorProto(name="eastwest_ext_authz_test.proto", package="t", syntax="proto3")

    def message(name, fields, parent=None):
        target = (parent.nested_type if parent else file.message_type).add(name=name)
        for field_name, number, kind, type_name, repeated in fields:
            field = target.field.add(name=field_name, number=number, type=kind,
                                     label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = type_name
        return target

    def string_map(parent, name):
        entry = message(name, [("key", 1, F.TYPE_STRING, None, False), ("value", 2, F.TYPE_STRING, None, False)], parent)
        entry.options.map_entry = True

    message("SocketAddress", [("protocol", 1, F.TYPE_INT32, None, False), ("address", 2, F.TYPE_STRING, None, False),
                              ("port_value", 3, F.TYPE_UINT32, None, False)])
    message("Address", [("socket_address", 1, F.TYPE_MESSAGE, ".t.SocketAddress", False)])
    message("Timestamp", [("seconds", 1, F.TYPE_INT64, None, False), ("nanos", 2, F.TYPE_INT32, None, False)])
    context = message("AttributeContext", [
        ("source", 1, F.TYPE_MESSAGE, ".t.AttributeContext.Peer", False),
        ("destination", 2, F.TYPE_MESSAGE, ".t.AttributeContext.Peer", False),
        ("request", 4, F.TYPE_MESSAGE, ".t.AttributeContext.Request", False),
        ("context_extensions", 10, F.TYPE_MESSAGE, ".t.AttributeContext.ContextExtensionsEntry", True)])
    string_map(context, "ContextExtensionsEntry")
    peer = message("Peer", [("address", 1, F.TYPE_MESSAGE, ".t.Address", False), ("service", 2, F.TYPE_STRING, None, False),
                            ("labels", 3, F.TYPE_MESSAGE, ".t.AttributeContext.Peer.LabelsEntry", True),
                            ("principal", 4, F.TYPE_STRING, None, False), ("certificate", 5, F.TYPE_STRING, None, False)], context)
    string_map(peer, "LabelsEntry")
    message("Request", [("time", 1, F.TYPE_MESSAGE, ".t.Timestamp", False),
                        ("http", 2, F.TYPE_MESSAGE, ".t.AttributeContext.HttpRequest", False)], context)
    http = message("HttpRequest", [
        ("id", 1, F.TYPE_STRING, None, False), ("method", 2, F.TYPE_STRING, None, False),
        ("headers", 3, F.TYPE_MESSAGE, ".t.AttributeContext.HttpRequest.HeadersEntry", True),
        ("path", 4, F.TYPE_STRING, None, False), ("host", 5, F.TYPE_STRING, None, False), ("scheme", 6, F.TYPE_STRING, None, False),
        ("query", 7, F.TYPE_STRING, None, False), ("fragment", 8, F.TYPE_STRING, None, False), ("size", 9, F.TYPE_INT64, None, False),
        ("protocol", 10, F.TYPE_STRING, None, False), ("body", 11, F.TYPE_STRING, None, False), ("raw_body", 12, F.TYPE_BYTES, None, False)],
        context)
    string_map(http, "HeadersEntry")
    message("CheckRequest", [("attributes", 1, F.TYPE_MESSAGE, ".t.AttributeContext", False)])
    message("Status", [("code", 1, F.TYPE_INT32, None, False), ("message", 2, F.TYPE_STRING, None, False)])
    message("HttpStatus", [("code", 1, F.TYPE_INT32, None, False)])
    message("BoolValue", [("value", 1, F.TYPE_BOOL, None, False)])
    message("HeaderValue", [("key", 1, F.TYPE_STRING, None, False), ("value", 2, F.TYPE_STRING, None, False)])
    message("HeaderValueOption", [("header", 1, F.TYPE_MESSAGE, ".t.HeaderValue", False),
                                  ("append", 2, F.TYPE_MESSAGE, ".t.BoolValue", False),
                                  ("append_action", 3, F.TYPE_INT32, None, False)])
    message("DeniedHttpResponse", [("status", 1, F.TYPE_MESSAGE, ".t.HttpStatus", False),
                                   ("headers", 2, F.TYPE_MESSAGE, ".t.HeaderValueOption", True), ("body", 3, F.TYPE_STRING, None, False)])
    message("OkHttpResponse", [("headers", 2, F.TYPE_MESSAGE, ".t.HeaderValueOption", True),
                               ("headers_to_remove", 5, F.TYPE_STRING, None, True),
                               ("response_headers_to_add", 6, F.TYPE_MESSAGE, ".t.HeaderValueOption", True)])
    message("CheckResponse", [("status", 1, F.TYPE_MESSAGE, ".t.Status", False),
                              ("denied_response", 2, F.TYPE_MESSAGE, ".t.DeniedHttpResponse", False),
                              ("ok_response", 3, F.TYPE_MESSAGE, ".t.OkHttpResponse", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName("t." + name))
            for name in ["CheckRequest", "CheckResponse"]}


DENY_BODY = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"


def serve(address, log, allow_file=None):
    messages = build_messages()

    def check(request_bytes, context):
        request = messages["CheckRequest"].FromString(request_bytes)
        attributes = request.attributes
        with open(log, "a") as out:
            out.write(text_format.MessageToString(request) + "\n----\n")
        header = attributes.request.http.headers.get("x-ext-authz")
        if header is not None:
            allowed = header == "allow"
        else:
            suffix = open(allow_file).read().strip() if allow_file else None
            allowed = bool(suffix) and attributes.source.principal.endswith(suffix)
        received = text_format.MessageToString(attributes, as_one_line=True)[:2000]
        response = messages["CheckResponse"]()
        if allowed:
            response.status.code = 0
            for key, value in (("x-ext-authz-check-result", "allowed"), ("x-ext-authz-check-received", received)):
                option = response.ok_response.headers.add()
                option.header.key, option.header.value = key, value
            option = response.ok_response.response_headers_to_add.add()
            option.header.key, option.header.value = "x-ext-authz-response", "seen"
            response.ok_response.headers_to_remove.append("x-remove-me")
        else:
            response.status.code = 7  # PERMISSION_DENIED
            response.denied_response.status.code = 403
            response.denied_response.body = DENY_BODY
            for key, value in (("x-ext-authz-check-result", "denied"), ("x-ext-authz-check-received", received)):
                option = response.denied_response.headers.add()
                option.header.key, option.header.value = key, value
        return response.SerializeToString()

    handler = grpc.method_handlers_generic_handler("envoy.service.auth.v3.Authorization",
                                                   {"Check": grpc.unary_unary_rpc_method_handler(check)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    serve(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
