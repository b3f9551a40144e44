"""grpcio stubs of gRPC's interop test service, generated at run time.

The contracts are the repository's own, under proto/grpc/testing/, the
ones sinew's interop example is built from. They are compiled here with
grpcio-tools (protoc, for Python only: sinew itself never needs it) into a
temporary folder that lives as long as the process.

Their package is `grpc.testing`, so the generated modules are
`grpc.testing.*_pb2`: a folder `grpc/testing/` beside grpcio's own `grpc`
package. grpcio ships no `grpc.testing`, so the generated folder is added
to the `grpc` package's search path, where Python finds it as a namespace
package.
"""

import atexit
import os
import shutil
import sys
import tempfile

import grpc
from grpc_tools import protoc

_PROTO_ROOT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "proto"
)
_FILES = ["grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"]


def load():
    """Generates the stubs and returns (empty_pb2, messages_pb2, test_pb2_grpc)."""
    out = tempfile.mkdtemp(prefix="sinew-interop-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    code = protoc.main(
        ["grpc_tools.protoc", "-I" + os.path.normpath(_PROTO_ROOT),
         "--python_out=" + out, "--grpc_python_out=" + out] + _FILES
    )
    if code != 0:
        sys.exit("protoc failed on %s with code %d" % (", ".join(_FILES), code))
    grpc.__path__.append(os.path.join(out, "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402

    return empty_pb2, messages_pb2, test_pb2_grpc
