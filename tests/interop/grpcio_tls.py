"""TLS and mTLS with Python's grpcio, an independent gRPC stack (on BoringSSL).

Usage:

  grpcio_tls.py call HOST:PORT [--ca CA] [--cert CERT --key KEY] [--name NAME]
                               [--server-name NAME] [--plaintext]
      Calls greeter.v1.Greeter/SayHello and the health service's Check at
      HOST:PORT over TLS (trusting the CA bundle CA, presenting CERT and KEY
      when given, expecting the server's certificate to be for
      --server-name, `localhost` by default), or in plain text with
      --plaintext. Prints one JSON object: {"ok": true, "reply": ...,
      "check_overall": ..., "check_greeter": ...}, or {"ok": false,
      "code": "UNAVAILABLE", "details": ...} for the first call that
      failed. Exits 0 either way: the Rust test judges.

  grpcio_tls.py serve --cert CERT --key KEY --ca CA
      Serves greeter.v1.Greeter and grpc.health.v1.Health on 127.0.0.1 (a
      port the system chooses) over TLS, requiring a client certificate
      signed by CA; prints `listening on 127.0.0.1:PORT`, then serves until
      it is killed. Its SayHello answers `Hello, NAME! (client CN)`, the
      common name of the certificate the caller presented, as grpcio saw it.

The greeter's types come from the repository's own proto/greeter/v1/
contract, compiled at run time by grpcio-tools (grpc.protos_and_services).
Keys are PKCS#8 PEM, as sinew_testing::pki writes them.
"""

import argparse
import json
import os
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "proto")
)
GREETER = "greeter.v1.Greeter"
TIMEOUT = 10


def greeter_contract():
    """(messages, services) of proto/greeter/v1/greeter.proto."""
    sys.path.append(_PROTO_ROOT)
    return grpc.protos_and_services("greeter/v1/greeter.proto")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def call(args):
    protos, services = greeter_contract()
    if args.plaintext:
        channel = grpc.insecure_channel(args.addr)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca),
            private_key=read(args.key) if args.key else None,
            certificate_chain=read(args.cert) if args.cert else None,
        )
        # By IP, expecting the certificate's name, as sinew's
        # ClientTlsConfig::server_name does.
        options = [("grpc.ssl_target_name_override", args.server_name)]
        channel = grpc.secure_channel(args.addr, credentials, options=options)
    seen = {}
    with channel:
        try:
            greeter = services.GreeterStub(channel)
            reply = greeter.SayHello(protos.HelloRequest(name=args.name), timeout=TIMEOUT)
            seen["reply"] = reply.message
            checks = health_pb2_grpc.HealthStub(channel)
            status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
            for key, service in (("check_overall", ""), ("check_greeter", GREETER)):
                asked = health_pb2.HealthCheckRequest(service=service)
                seen[key] = status_name(checks.Check(asked, timeout=TIMEOUT).status)
            seen["ok"] = True
        except grpc.RpcError as error:
            seen.update(ok=False, code=error.code().name, details=error.details())
    print(json.dumps(seen), flush=True)


def serve(args):
    protos, services = greeter_contract()

    class Greetings(services.GreeterServicer):
        def SayHello(self, request, context):
            if not request.name:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
            names = context.auth_context().get("x509_common_name", [])
            client = b",".join(names).decode() or "no certificate"
            return protos.HelloReply(message="Hello, %s! (%s)" % (request.name, client))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services.add_GreeterServicer_to_server(Greetings(), server)
    checks = health.HealthServicer()
    checks.set(GREETER, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    credentials = grpc.ssl_server_credentials(
        [(read(args.key), read(args.cert))],
        root_certificates=read(args.ca),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    if port == 0:
        sys.exit("cannot listen on 127.0.0.1")
    server.start()
    print("listening on 127.0.0.1:%d" % port, flush=True)
    server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser()
    modes = parser.add_subparsers(dest="mode", required=True)
    calling = modes.add_parser("call")
    calling.add_argument("addr")
    calling.add_argument("--ca")
    calling.add_argument("--cert")
    calling.add_argument("--key")
    calling.add_argument("--name", default="grpcio")
    calling.add_argument("--server-name", default="localhost")
    calling.add_argument("--plaintext", action="store_true")
    serving = modes.add_parser("serve")
    serving.add_argument("--cert", required=True)
    serving.add_argument("--key", required=True)
    serving.add_argument("--ca", required=True)
    args = parser.parse_args()
    if args.mode == "call":
        if not args.plaintext and not args.ca:
            parser.error("call over TLS needs --ca")
        if bool(args.cert) != bool(args.key):
            parser.error("--cert and --key go together")
        call(args)
    else:
        serve(args)


if __name__ == "__main__":
    main()
