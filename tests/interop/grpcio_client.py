"""Calls a sinew server with Python's grpcio, an independent gRPC stack.

Usage: grpcio_client.py HOST:PORT

Prints one JSON object with what it saw; the Rust test asserts on it.
Uses only what the server publishes: the request and reply types of
greeter.v1.Greeter come from the server's reflection service, not from
generated stubs.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(addr):
    seen = {}
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)

        # Reflection (v1alpha, as grpcio's client speaks it): list, then
        # resolve the greeter's contract.
        database = ProtoReflectionDescriptorDatabase(channel)
        seen["services"] = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("greeter.v1.Greeter").FindMethodByName("SayHello")
        request_type = message_factory.GetMessageClass(method.input_type)
        reply_type = message_factory.GetMessageClass(method.output_type)

        # A unary call built from the reflected types.
        say_hello = channel.unary_unary(
            "/greeter.v1.Greeter/SayHello",
            request_serializer=request_type.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        seen["reply"] = say_hello(request_type(name="python"), timeout=10).message
        try:
            say_hello(request_type(name=""), timeout=10)
            seen["empty_name"] = "OK"
        except grpc.RpcError as error:
            seen["empty_name"] = error.code().name

        # Compression: a request compressed with gzip, as a grpcio client
        # configured for it sends (and whose reply may come compressed).
        seen["gzip_reply"] = say_hello(
            request_type(name="gzip"), timeout=10, compression=grpc.Compression.Gzip
        ).message

        # Health: Check and Watch.
        health = health_pb2_grpc.HealthStub(channel)
        status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
        seen["check_overall"] = status_name(
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        )
        seen["check_greeter"] = status_name(
            health.Check(
                health_pb2.HealthCheckRequest(service="greeter.v1.Greeter"), timeout=10
            ).status
        )
        try:
            health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
            seen["check_unknown"] = "OK"
        except grpc.RpcError as error:
            seen["check_unknown"] = error.code().name

        watch = health.Watch(health_pb2.HealthCheckRequest(service="greeter.v1.Greeter"))
        seen["watch_greeter"] = status_name(next(watch).status)
        watch.cancel()
        unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.Such"))
        seen["watch_unknown"] = status_name(next(unknown).status)
        unknown.cancel()

    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
