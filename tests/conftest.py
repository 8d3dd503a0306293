"""Fixtures shared by the transport suites: the test servicers behind a real gRPC server and a real HTTP
server on 127.0.0.1 (free ports, stopped when the module's tests end), and sync transports to them."""

from __future__ import annotations

import pytest

from bpj.transport.memory import InMemoryTransport
from tests.servicers import Jobs, Reads

TRANSPORTS = ["grpc", "rest", "memory"]


def use_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The process environment as a client sees it with only ``env``: bpj's variables (and those of the
    official clients that bpj honours) replaced by ``env`` for the test."""
    import os

    for key in list(os.environ):
        if key.startswith("BPJ_") or key in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def servicers():
    return Jobs(), Reads()


@pytest.fixture(scope="module")
def servers(servicers):
    from bpj.local.servers.gateway import serve_rest
    from bpj.local.servers.serve import serve_grpc

    grpc_server = serve_grpc(*servicers)
    rest_server = serve_rest(*servicers)
    yield {"grpc": grpc_server, "rest": rest_server}
    grpc_server.stop(None)
    rest_server.stop()


@pytest.fixture(scope="module")
def sync_transports(servers, servicers):
    from bpj.transport.grpc import GrpcTransport
    from bpj.transport.rest import RestTransport

    made = {
        "grpc": GrpcTransport(servers["grpc"].endpoint),
        "rest": RestTransport(servers["rest"].url),
        "memory": InMemoryTransport(*servicers),
    }
    yield made
    for t in made.values():
        t.close()


@pytest.fixture(params=TRANSPORTS)
def kind(request):
    return request.param
