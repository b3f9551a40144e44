"""gRPC's interop test service, grpc.testing.TestService, on Python's grpcio.

Usage: interop_server.py [--port PORT] [--reflection]

Serves on 127.0.0.1 (port 0, the default, lets the system choose), then
prints `listening on 127.0.0.1:PORT` and serves until it is killed.

Implements the server features the interop test descriptions ask for:
sized payloads (EmptyCall, UnaryCall, StreamingInputCall,
StreamingOutputCall, FullDuplexCall, HalfDuplexCall), Echo Status and Echo
Metadata; UnimplementedCall is left unimplemented.

With --reflection it also serves grpcio's server reflection (which
answers v1alpha only) and grpc.health.v1, with the test service SERVING:
a server that is not sinew's for the `sinew` command's tests.
"""

import argparse
import asyncio
import importlib
import sys

import grpc

import testing_stubs

empty_pb2, messages_pb2, test_pb2_grpc = testing_stubs.load()

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def status_code(number):
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


async def echo_metadata(context):
    """Echo Metadata: the initial key back as initial metadata, the
    trailing key back as trailing metadata."""
    received = dict(context.invocation_metadata())
    if ECHO_INITIAL in received:
        await context.send_initial_metadata(((ECHO_INITIAL, received[ECHO_INITIAL]),))
    if ECHO_TRAILING in received:
        context.set_trailing_metadata(((ECHO_TRAILING, received[ECHO_TRAILING]),))


async def echo_status(request, context):
    """Echo Status: ends the call with the status the request carries."""
    if request.HasField("response_status") and request.response_status.code != 0:
        await context.abort(
            status_code(request.response_status.code), request.response_status.message
        )


def payload(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)


async def streamed(requests, context):
    async for request in requests:
        await echo_status(request, context)
        for parameters in request.response_parameters:
            if parameters.interval_us > 0:
                await asyncio.sleep(parameters.interval_us / 1e6)
            yield messages_pb2.StreamingOutputCallResponse(payload=payload(parameters.size))


async def iterate(items):
    for item in items:
        yield item


class TestService(test_pb2_grpc.TestServiceServicer):
    async def EmptyCall(self, request, context):
        await echo_metadata(context)
        return empty_pb2.Empty()

    async def UnaryCall(self, request, context):
        await echo_metadata(context)
        await echo_status(request, context)
        return messages_pb2.SimpleResponse(payload=payload(request.response_size))

    async def CacheableUnaryCall(self, request, context):
        return await self.UnaryCall(request, context)

    async def StreamingOutputCall(self, request, context):
        await echo_metadata(context)
        async for response in streamed(iterate([request]), context):
            yield response

    async def StreamingInputCall(self, request_iterator, context):
        await echo_metadata(context)
        size = 0
        async for request in request_iterator:
            size += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=size)

    async def FullDuplexCall(self, request_iterator, context):
        await echo_metadata(context)
        async for response in streamed(request_iterator, context):
            yield response

    async def HalfDuplexCall(self, request_iterator, context):
        await echo_metadata(context)
        requests = [request async for request in request_iterator]
        async for response in streamed(iterate(requests), context):
            yield response


async def serve(port, with_reflection):
    server = grpc.aio.server()
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    if with_reflection:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        # Registers the service's descriptor, which reflection answers
        # from (the _grpc module does not import it).
        importlib.import_module("grpc.testing.test_pb2")

        service = "grpc.testing.TestService"
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (service, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    if bound == 0:
        sys.exit("cannot listen on 127.0.0.1:%d" % port)
    await server.start()
    print("listening on 127.0.0.1:%d" % bound, flush=True)
    await server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reflection", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.reflection))


if __name__ == "__main__":
    main()
