"""The generated method descriptors agree with the official libraries on every RPC of bpj's subset.

HTTP rules come from google-cloud-aiplatform's REST transports (``_Base<Rpc>._get_http_options()``).
gRPC paths are the ones the official gRPC transports actually send: each official stub is called once
against a local gRPC server that records the path it sees. Request and response types come from the
official stubs' signatures and, for google.longrunning, from the service descriptor in protobuf's pool.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.cloud.aiplatform_v1.services.job_service.transports import grpc as job_grpc
from google.cloud.aiplatform_v1.services.job_service.transports import rest_base as job_rest
from google.cloud.aiplatform_v1.services.model_service.transports import grpc as model_grpc
from google.cloud.aiplatform_v1.services.model_service.transports import rest_base as model_rest
from google.cloud.bigquery_storage_v1.services.big_query_read.transports import grpc as read_grpc
from google.protobuf import descriptor_pool

from bpj._gen.services import big_query_read, job_service, model_service, operations
from bpj.transport.base import HttpRule, Method, Service

REST_BASES = {
    "google.cloud.aiplatform.v1.JobService": job_rest._BaseJobServiceRestTransport,
    "google.cloud.aiplatform.v1.ModelService": model_rest._BaseModelServiceRestTransport,
}
GRPC_TRANSPORTS = {
    "google.cloud.aiplatform.v1.JobService": job_grpc.JobServiceGrpcTransport,
    "google.cloud.aiplatform.v1.ModelService": model_grpc.ModelServiceGrpcTransport,
    "google.cloud.bigquery.storage.v1.BigQueryRead": read_grpc.BigQueryReadGrpcTransport,
    # Vertex AI's transports carry the google.longrunning.Operations mixin.
    "google.longrunning.Operations": job_grpc.JobServiceGrpcTransport,
}
SUBSET = {
    job_service.SERVICE: {
        "CreateBatchPredictionJob",
        "GetBatchPredictionJob",
        "ListBatchPredictionJobs",
        "DeleteBatchPredictionJob",
        "CancelBatchPredictionJob",
    },
    model_service.SERVICE: {"UploadModel", "GetModel", "ListModels", "DeleteModel"},
    operations.SERVICE: {
        "ListOperations",
        "GetOperation",
        "DeleteOperation",
        "CancelOperation",
        "WaitOperation",
    },
    big_query_read.SERVICE: {"CreateReadSession", "ReadRows", "SplitReadStream"},
}
SERVICES: list[Service] = list(SUBSET)
METHODS = [(s, m) for s in SERVICES for m in s.methods]
REST_METHODS = [(s, m) for s, m in METHODS if s.name in REST_BASES]


def method_id(item: tuple[Service, Method]) -> str:
    return item[1].full_name


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def official_rules(base: Any, rpc: str) -> list[HttpRule]:
    options = getattr(base, f"_Base{rpc}")._get_http_options()
    return [HttpRule(o["method"], o["uri"], o.get("body", "")) for o in options]


def full_name(cls: Any) -> str:
    """The message full name of a proto-plus class or a raw protobuf class."""
    raw = cls.pb() if hasattr(cls, "pb") else cls
    return str(raw.DESCRIPTOR.full_name)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_subset_is_exactly_the_batch_prediction_rpcs(service: Service) -> None:
    assert {m.name for m in service.methods} == SUBSET[service]
    assert all(m.service == service.name for m in service.methods)


@pytest.mark.parametrize("item", REST_METHODS, ids=method_id)
def test_http_rules_equal_official(item: tuple[Service, Method]) -> None:
    service, method = item
    assert list(method.http) == official_rules(REST_BASES[service.name], method.name)


@pytest.mark.parametrize("method", operations.SERVICE.methods, ids=lambda m: m.name)
@pytest.mark.parametrize("base", list(REST_BASES.values()), ids=lambda b: b.__name__)
def test_operations_rules_are_official_bindings(base: Any, method: Method) -> None:
    official = official_rules(base, method.name)
    assert method.http, "every Operations RPC needs an HTTP rule for the REST transport"
    for rule in method.http:
        assert rule.template.startswith("/v1/")
        assert rule in official


# --- gRPC ---------------------------------------------------------------------------------------------


class PathRecorder(grpc.GenericRpcHandler):
    """Answers every call UNIMPLEMENTED, remembering the method path it was called with."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> None:
        self.paths.append(handler_call_details.method)  # type: ignore[attr-defined]
        return None


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[PathRecorder, str]]:
    handler = PathRecorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield handler, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def official_stub(service: Service, method: Method, target: str) -> tuple[Any, type, type, grpc.Channel]:
    """The official transport's multicallable for method, and its request and response classes."""
    transport_cls = GRPC_TRANSPORTS[service.name]
    channel = grpc.insecure_channel(target)
    transport = transport_cls(channel=channel)
    attr = snake(method.name)
    hints = typing.get_type_hints(getattr(transport_cls, attr).fget)
    (request_cls,), response_cls = typing.get_args(hints["return"])
    return getattr(transport, attr), request_cls, response_cls, channel


@pytest.mark.parametrize("item", METHODS, ids=method_id)
def test_grpc_path_and_types_equal_official(item: tuple[Service, Method], recorder: Any) -> None:
    service, method = item
    handler, target = recorder
    stub, request_cls, response_cls, channel = official_stub(service, method, target)
    try:
        with pytest.raises(grpc.RpcError) as failure:
            call = stub(request_cls(), timeout=10)
            if method.server_streaming:
                next(iter(call))
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    finally:
        channel.close()
    assert handler.paths[-1] == method.path
    kind = grpc.UnaryStreamMultiCallable if method.server_streaming else grpc.UnaryUnaryMultiCallable
    assert isinstance(stub, kind)
    assert full_name(request_cls) == method.request_type
    # Vertex AI's Operations mixin leaves Delete/Cancel/WaitOperation responses undecoded (typed None);
    # test_operations_types_equal_official_descriptor checks those against the service descriptor.
    if response_cls is not type(None):
        assert full_name(response_cls) == method.response_type


@pytest.mark.parametrize("method", operations.SERVICE.methods, ids=lambda m: m.name)
def test_operations_types_equal_official_descriptor(method: Method) -> None:
    import google.longrunning.operations_pb2  # noqa: F401  (registers google.longrunning.Operations)

    official = descriptor_pool.Default().FindServiceByName("google.longrunning.Operations")
    rpc = official.methods_by_name[method.name]
    assert rpc.input_type.full_name == method.request_type
    assert rpc.output_type.full_name == method.response_type
    assert rpc.server_streaming == method.server_streaming
    assert not rpc.client_streaming


@pytest.mark.parametrize("item", METHODS, ids=method_id)
def test_request_and_response_types_resolve_in_bpj(item: tuple[Service, Method]) -> None:
    _, method = item
    assert method.request_class.DESCRIPTOR.full_name == method.request_type
    assert method.response_class.DESCRIPTOR.full_name == method.response_type
