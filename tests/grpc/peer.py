"""A real gRPC peer for jitgate's end-to-end tests (grpcio, no generated code).

  peer.py serve                 start an echo server on 127.0.0.1 (h2c); print "port N"
  peer.py call ADDR [-m K=V]... [--payload TEXT] [--timeout S]
                                one unary /jitgate.test.Echo/Unary call; print its outcome
  peer.py chat ADDR [--count N] a bidirectional /jitgate.test.Echo/Chat stream; print it

Outcomes are one JSON object on stdout: the status code name, details, initial and trailing
metadata, and the responses.
"""

import argparse
import json
import sys
from concurrent import futures

import grpc

UNARY = "/jitgate.test.Echo/Unary"
CHAT = "/jitgate.test.Echo/Chat"


def serve():
    def unary(request, context):
        context.set_trailing_metadata((("x-echo-trailer", "done"),))
        return b"echo:" + request

    def chat(requests, context):
        for r in requests:
            yield b"chat:" + r

    handler = grpc.method_handlers_generic_handler(
        "jitgate.test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    # Run until the test closes our stdin (or kills us).
    sys.stdin.read()
    server.stop(0)


def outcome(code, details, initial, trailing, responses):
    print(
        json.dumps(
            {
                "code": code.name if code else None,
                "details": details,
                "initial": {k: v for k, v in (initial or ()) if isinstance(v, str)},
                "trailing": {k: v for k, v in (trailing or ()) if isinstance(v, str)},
                "responses": [r.decode("utf-8", "replace") for r in responses],
            }
        ),
        flush=True,
    )


def call(addr, metadata, payload, timeout):
    with grpc.insecure_channel(addr) as channel:
        fn = channel.unary_unary(UNARY)
        try:
            response, c = fn.with_call(
                payload.encode(), metadata=metadata, timeout=timeout
            )
            outcome(
                c.code(),
                c.details(),
                c.initial_metadata(),
                c.trailing_metadata(),
                [response],
            )
        except grpc.RpcError as e:
            outcome(e.code(), e.details(), e.initial_metadata(), e.trailing_metadata(), [])


def chat(addr, count, timeout):
    with grpc.insecure_channel(addr) as channel:
        fn = channel.stream_stream(CHAT)
        stream = fn(iter([f"m{i}".encode() for i in range(count)]), timeout=timeout)
        try:
            responses = list(stream)
            outcome(
                stream.code(),
                stream.details(),
                stream.initial_metadata(),
                stream.trailing_metadata(),
                responses,
            )
        except grpc.RpcError as e:
            outcome(e.code(), e.details(), e.initial_metadata(), e.trailing_metadata(), [])


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve")
    c = sub.add_parser("call")
    c.add_argument("addr")
    c.add_argument("-m", "--metadata", action="append", default=[])
    c.add_argument("--payload", default="ping")
    c.add_argument("--timeout", type=float, default=20.0)
    s = sub.add_parser("chat")
    s.add_argument("addr")
    s.add_argument("--count", type=int, default=3)
    s.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()
    if a.cmd == "serve":
        serve()
    elif a.cmd == "call":
        md = [tuple(kv.split("=", 1)) for kv in a.metadata]
        call(a.addr, md, a.payload, a.timeout)
    else:
        chat(a.addr, a.count, a.timeout)


if __name__ == "__main__":
    main()
