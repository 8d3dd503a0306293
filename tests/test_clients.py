"""Clients built from settings: a process started with the local stack's environment needs no code change,
and every client shares one transport per endpoint."""

from __future__ import annotations

import pytest

import bpj
from bpj import config, types
from bpj.transport.memory import InMemoryTransport
from tests.servicers import Jobs, Reads, job_name, stream_name


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for variables in config._ENV.values():
        for v in variables:
            monkeypatch.delenv(v, raising=False)
    config.reset()
    yield
    config.reset()


@pytest.fixture(scope="module")
def servers():
    from bpj.local.servers.gateway import serve_rest
    from bpj.local.servers.serve import serve_grpc

    jobs, reads = Jobs(), Reads()
    g, r = serve_grpc(jobs, reads), serve_rest(jobs)
    yield g, r
    g.stop(None)
    r.stop()


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_environment_alone_points_clients_at_a_local_server(monkeypatch, servers, kind):
    g, r = servers
    monkeypatch.setenv("BPJ_TRANSPORT", kind)
    monkeypatch.setenv("BPJ_API_ENDPOINT", g.endpoint if kind == "grpc" else r.url)
    name = job_name("env")
    job = bpj.clients.job_service().get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=name))
    assert job.name == name


def test_one_transport_per_endpoint(servers):
    g, _ = servers
    bpj.init(api_endpoint=g.endpoint)
    a, b = bpj.clients.job_service(), bpj.clients.operations()
    assert a.transport is b.transport
    bpj.init(transport="rest", api_endpoint=servers[1].url)
    assert bpj.clients.job_service().transport is not a.transport


def test_bigquery_read_uses_the_storage_endpoint_over_grpc(servers):
    g, r = servers
    bpj.init(transport="rest", api_endpoint=r.url, bigquery_storage_endpoint=g.endpoint)
    rows = list(bpj.clients.bigquery_read().read_rows(types.ReadRowsRequest(read_stream=stream_name("3"))))
    assert [x.row_count for x in rows] == [1, 2, 3]


def test_explicit_transport_wins():
    client = bpj.clients.job_service(transport=InMemoryTransport(Jobs()))
    assert client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name("m"))).name


def test_generated_classes_are_public():
    assert bpj.clients.JobServiceClient.service.name == "google.cloud.aiplatform.v1.JobService"
    assert bpj.clients.AsyncBigQueryReadClient.service.name == "google.cloud.bigquery.storage.v1.BigQueryRead"
    assert issubclass(Reads, bpj.clients.BigQueryReadServicer)
    with pytest.raises(AttributeError):
        _ = bpj.clients.NoSuchClient


def test_credentials_are_looked_up_at_the_first_call_not_before(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    bpj.init(api_endpoint="vertex.example.invalid:443")
    client = bpj.clients.job_service()  # no lookup yet: building a client costs nothing
    with pytest.raises(bpj.errors.UsageError, match="application-default login"):
        client.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name("x")))
