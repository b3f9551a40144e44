"""gRPC's interop cases, from Python's grpcio, against any grpc.testing.TestService.

Usage: interop_client.py --server_host HOST --server_port PORT [--test_case all|NAME[,NAME...]]

Runs each case as gRPC's interop test descriptions give its procedure and
its client's assertions, and prints one JSON line per case:
`{"case": NAME, "ok": true}`, or `{"case": NAME, "ok": false, "error": WHY}`.
Exits 1 if any case failed.
"""

import argparse
import json
import queue
import sys
import traceback

import grpc

import testing_stubs

empty_pb2, messages_pb2, test_pb2_grpc = testing_stubs.load()

# Every call but the deadline case's is bounded by this, in seconds.
TIMEOUT = 20

ECHO_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
ECHO_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


class CaseFailed(Exception):
    pass


def ensure(condition, message):
    if not condition:
        raise CaseFailed(message)


class Pipe:
    """A request stream the case feeds one message at a time."""

    _CLOSED = object()

    def __init__(self):
        self._queue = queue.Queue(maxsize=16)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._CLOSED:
            raise StopIteration()
        return item

    def add(self, request):
        self._queue.put(request)

    def close(self):
        self._queue.put(self._CLOSED)


def zeros(size):
    return messages_pb2.Payload(body=b"\0" * size)


def check_payload(response, size):
    body = response.payload.body
    ensure(len(body) == size, "payload of %d bytes, not %d" % (len(body), size))
    ensure(body == b"\0" * size, "payload is not all zeros")


def duplex_request(response_size, payload_size):
    return messages_pb2.StreamingOutputCallRequest(
        response_parameters=(messages_pb2.ResponseParameters(size=response_size),),
        payload=zeros(payload_size),
    )


def expect_error(call, code, details=None):
    """Runs call(), which must fail with code (and details, when given)."""
    try:
        call()
    except grpc.RpcError as error:
        ensure(error.code() == code, "got %s; expected %s" % (error.code(), code))
        if details is not None:
            ensure(
                error.details() == details,
                "got details %r; expected %r" % (error.details(), details),
            )
        return
    raise CaseFailed("succeeded; expected %s" % code)


def empty_unary(stub, channel):
    response = stub.EmptyCall(empty_pb2.Empty(), timeout=TIMEOUT)
    ensure(isinstance(response, empty_pb2.Empty), "response is not an Empty")


def large_unary(stub, channel):
    response = stub.UnaryCall(
        messages_pb2.SimpleRequest(
            response_type=messages_pb2.COMPRESSABLE,
            response_size=314159,
            payload=zeros(271828),
        ),
        timeout=TIMEOUT,
    )
    check_payload(response, 314159)


def client_streaming(stub, channel):
    requests = (
        messages_pb2.StreamingInputCallRequest(payload=zeros(size))
        for size in (27182, 8, 1828, 45904)
    )
    response = stub.StreamingInputCall(requests, timeout=TIMEOUT)
    ensure(
        response.aggregated_payload_size == 74922,
        "aggregated_payload_size %d, not 74922" % response.aggregated_payload_size,
    )


def server_streaming(stub, channel):
    sizes = (31415, 9, 2653, 58979)
    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=size) for size in sizes],
    )
    responses = list(stub.StreamingOutputCall(request, timeout=TIMEOUT))
    ensure(len(responses) == 4, "%d responses, not 4" % len(responses))
    for response, size in zip(responses, sizes):
        check_payload(response, size)


def ping_pong(stub, channel):
    pipe = Pipe()
    try:
        responses = stub.FullDuplexCall(pipe, timeout=TIMEOUT)
        for response_size, payload_size in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
            pipe.add(duplex_request(response_size, payload_size))
            check_payload(next(responses), response_size)
        pipe.close()
        rest = list(responses)
        ensure(not rest, "%d responses more than four" % len(rest))
    finally:
        pipe.close()


def empty_stream(stub, channel):
    responses = list(stub.FullDuplexCall(iter(()), timeout=TIMEOUT))
    ensure(not responses, "%d responses, not none" % len(responses))


def custom_metadata(stub, channel):
    metadata = (ECHO_INITIAL, ECHO_TRAILING)

    def check(call, what):
        initial = call.initial_metadata()
        trailing = call.trailing_metadata()
        ensure(ECHO_INITIAL in initial, "%s: initial metadata %r" % (what, initial))
        ensure(ECHO_TRAILING in trailing, "%s: trailing metadata %r" % (what, trailing))
        ensure(
            all(key != ECHO_TRAILING[0] for key, _ in initial),
            "%s: %s came in the initial metadata" % (what, ECHO_TRAILING[0]),
        )

    response, call = stub.UnaryCall.with_call(
        messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828)),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    check_payload(response, 314159)
    check(call, "UnaryCall")

    call = stub.FullDuplexCall(
        iter((duplex_request(314159, 271828),)), metadata=metadata, timeout=TIMEOUT
    )
    responses = list(call)
    ensure(len(responses) == 1, "FullDuplexCall: %d responses, not 1" % len(responses))
    check_payload(responses[0], 314159)
    check(call, "FullDuplexCall")


def echo_status(message):
    return messages_pb2.EchoStatus(code=2, message=message)


def status_code_and_message(stub, channel):
    message = "test status message"
    expect_error(
        lambda: stub.UnaryCall(
            messages_pb2.SimpleRequest(response_status=echo_status(message)), timeout=TIMEOUT
        ),
        grpc.StatusCode.UNKNOWN,
        message,
    )
    request = messages_pb2.StreamingOutputCallRequest(response_status=echo_status(message))
    expect_error(
        lambda: list(stub.FullDuplexCall(iter((request,)), timeout=TIMEOUT)),
        grpc.StatusCode.UNKNOWN,
        message,
    )


def special_status_message(stub, channel):
    expect_error(
        lambda: stub.UnaryCall(
            messages_pb2.SimpleRequest(response_status=echo_status(SPECIAL_MESSAGE)),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.UNKNOWN,
        SPECIAL_MESSAGE,
    )


def unimplemented_method(stub, channel):
    expect_error(
        lambda: stub.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT),
        grpc.StatusCode.UNIMPLEMENTED,
    )


def unimplemented_service(stub, channel):
    other = test_pb2_grpc.UnimplementedServiceStub(channel)
    expect_error(
        lambda: other.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT),
        grpc.StatusCode.UNIMPLEMENTED,
    )


def cancel_after_begin(stub, channel):
    pipe = Pipe()
    try:
        call = stub.StreamingInputCall.future(pipe, timeout=TIMEOUT)
        call.cancel()
        ensure(call.cancelled(), "the call was not cancelled")
        ensure(
            call.code() == grpc.StatusCode.CANCELLED,
            "completed with %s, not CANCELLED" % call.code(),
        )
    finally:
        pipe.close()


def cancel_after_first_response(stub, channel):
    pipe = Pipe()
    try:
        responses = stub.FullDuplexCall(pipe, timeout=TIMEOUT)
        pipe.add(duplex_request(31415, 27182))
        check_payload(next(responses), 31415)
        responses.cancel()
        expect_error(lambda: next(responses), grpc.StatusCode.CANCELLED)
        ensure(
            responses.code() == grpc.StatusCode.CANCELLED,
            "completed with %s, not CANCELLED" % responses.code(),
        )
    finally:
        pipe.close()


def timeout_on_sleeping_server(stub, channel):
    pipe = Pipe()
    try:
        responses = stub.FullDuplexCall(pipe, timeout=0.001)
        pipe.add(messages_pb2.StreamingOutputCallRequest(payload=zeros(27182)))
        expect_error(lambda: next(responses), grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        pipe.close()


CASES = {
    case.__name__: case
    for case in (
        empty_unary,
        large_unary,
        client_streaming,
        server_streaming,
        ping_pong,
        empty_stream,
        custom_metadata,
        status_code_and_message,
        special_status_message,
        unimplemented_method,
        unimplemented_service,
        cancel_after_begin,
        cancel_after_first_response,
        timeout_on_sleeping_server,
    )
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server_host", default="127.0.0.1")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", default="all")
    args = parser.parse_args()
    names = list(CASES) if args.test_case == "all" else args.test_case.split(",")
    unknown = [name for name in names if name not in CASES]
    if unknown:
        sys.exit("no such case: %s" % ", ".join(unknown))

    passed = True
    target = "%s:%d" % (args.server_host, args.server_port)
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        stub = test_pb2_grpc.TestServiceStub(channel)
        for name in names:
            try:
                CASES[name](stub, channel)
                result = {"case": name, "ok": True}
            except (CaseFailed, grpc.RpcError, StopIteration) as error:
                passed = False
                result = {"case": name, "ok": False, "error": repr(error)}
            except Exception:  # noqa: BLE001 - a broken case is a failed case
                passed = False
                result = {"case": name, "ok": False, "error": traceback.format_exc()}
            print(json.dumps(result), flush=True)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
