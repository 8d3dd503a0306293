"""bpj.init and the environment: defaults, validation before any call, and endpoint security rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpj import config, errors


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for variables in config._ENV.values():
        for v in variables:
            monkeypatch.delenv(v, raising=False)
    config.reset()
    yield
    config.reset()


def test_defaults_are_googles_endpoints():
    s = config.settings()
    assert s.vertex_endpoint == "us-central1-aiplatform.googleapis.com"
    assert s.transport == "grpc"
    assert s.gcs_endpoint == "https://storage.googleapis.com"
    assert (
        config.settings(location="europe-west4").vertex_endpoint == "europe-west4-aiplatform.googleapis.com"
    )
    assert config.settings(location="global").vertex_endpoint == "aiplatform.googleapis.com"


def test_environment_then_init_then_overrides(monkeypatch):
    monkeypatch.setenv("BPJ_PROJECT", "from-env")
    monkeypatch.setenv("BPJ_API_ENDPOINT", "127.0.0.1:7000")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    assert config.settings().project == "from-env"
    assert config.settings().gcs_endpoint == "http://127.0.0.1:4443"
    config.init(project="from-init", transport="rest")
    s = config.settings()
    assert (s.project, s.transport, s.vertex_endpoint) == ("from-init", "rest", "127.0.0.1:7000")
    assert config.settings(project="override").parent == "projects/override/locations/us-central1"


def test_credentials_given_to_a_client_replace_an_ambient_token(monkeypatch):
    from google.oauth2.credentials import Credentials

    mine = Credentials("mine")
    for ambient in ("env", "init"):
        config.reset()
        monkeypatch.delenv("BPJ_TOKEN", raising=False)
        if ambient == "env":
            monkeypatch.setenv("BPJ_TOKEN", "ambient")
        else:
            config.init(token="ambient")
        assert config.settings().token == "ambient"
        s = config.settings(credentials=mine)
        assert (s.credentials, s.token) == (mine, None), ambient
        assert config.settings(credentials=mine, token="both").token == "both"  # both given: both kept


def test_missing_project_says_how_to_set_it():
    with pytest.raises(errors.UsageError, match="BPJ_PROJECT"):
        _ = config.settings().parent


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"transport": "http"}, "transport must be one of grpc, rest"),
        ({"location": "US Central"}, "location: must look like"),
        ({"project": "Bad Project!"}, "project: must be"),
        ({"tls_root_cert": "/nonexistent/ca.pem"}, "tls_root_cert must be a PEM file"),
    ],
)
def test_bad_init_is_refused_with_what_to_change(kwargs, words):
    with pytest.raises(errors.UsageError) as info:
        config.init(**kwargs)
    assert words in str(info.value)
    assert config.settings().transport == "grpc"  # a refused init changes nothing


@pytest.mark.parametrize(
    ("endpoint", "tls"),
    [
        ("127.0.0.1:8080", False),
        ("localhost:8080", False),
        ("[::1]:8080", False),
        ("127.9.9.9:1", False),
        ("http://127.0.0.1:8080", False),
        ("https://127.0.0.1:8443", True),
        ("us-central1-aiplatform.googleapis.com", True),
        ("10.0.0.5:8080", True),
        ("example.com:80", True),
    ],
)
def test_loopback_is_plaintext_unless_asked(endpoint, tls):
    assert config.wants_tls(endpoint) is tls


def test_root_certificate_turns_tls_on_for_loopback():
    assert config.wants_tls("127.0.0.1:8443", root_cert="ca.pem") is True


def test_local_endpoint_needs_no_credentials():
    s = config.settings(api_endpoint="127.0.0.1:9")
    assert config.resolve_credentials(s, s.vertex_endpoint) is None


@given(st.ip_addresses(v=4))
def test_loopback_detection_matches_ipaddress(addr):
    assert config.is_loopback(str(addr)) == addr.is_loopback


def test_an_unknown_init_argument_is_a_type_error_as_for_any_python_function():
    with pytest.raises(TypeError, match="colour"):
        config.init(colour="red")  # type: ignore[call-arg]


def test_init_takes_the_official_arguments():
    import inspect

    from google.cloud import aiplatform

    official = list(inspect.signature(aiplatform.init).parameters)
    ours = list(inspect.signature(config.init).parameters)
    assert ours[: len(official)] == official  # the official ones, in its order, then bpj's own


def test_api_transport_is_transport_and_disagreeing_is_refused():
    assert config.init(api_transport="rest").transport == "rest"
    assert config.init(api_transport="grpc", transport="grpc").transport == "grpc"
    with pytest.raises(errors.UsageError, match="disagree"):
        config.init(api_transport="rest", transport="grpc")
    with pytest.raises(errors.UsageError, match="transport must be one of"):
        config.init(api_transport="carrier-pigeon")


def test_api_keys_are_refused_and_the_arguments_of_no_meaning_accepted(caplog):
    with pytest.raises(errors.UsageError, match="API keys"):
        config.init(api_key="k")
    caplog.set_level("INFO", logger="bpj")
    before = config.settings()
    s = config.init(experiment="e", experiment_description="d", network="projects/1/global/networks/n")
    assert s == before  # accepted, and nothing changed
    assert sum("no effect" in r.getMessage() for r in caplog.records) == 3


def test_staging_bucket_is_kept_and_checked():
    assert config.init(staging_bucket="gs://staging").staging_bucket == "gs://staging"
    assert config.settings().staging_bucket == "gs://staging"
    with pytest.raises(errors.UsageError, match="staging_bucket must be a gs:// URI"):
        config.init(staging_bucket="/tmp/staging")


@pytest.mark.parametrize("bad", [["k"], [("k", 1)], [("", "v")], [("k", "v\n")], 5])
def test_request_metadata_must_be_pairs_of_text(bad):
    with pytest.raises(errors.UsageError, match="request_metadata"):
        config.init(request_metadata=bad)


@pytest.mark.parametrize("kind", ["grpc", "rest"])
def test_request_metadata_and_the_token_reach_the_server(kind):
    from bpj.local.servers.gateway import serve_rest
    from bpj.local.servers.serve import serve_grpc
    from tests.servicers import Jobs, job_name

    jobs = Jobs()
    server = serve_grpc(jobs) if kind == "grpc" else serve_rest(jobs)
    try:
        endpoint = server.endpoint if kind == "grpc" else server.url
        config.init(
            project="p",
            api_endpoint=endpoint,
            transport=kind,
            token="t0k",
            request_metadata=[("X-Team", "vision")],
        )
        from bpj import clients, types

        clients.job_service().get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=job_name("m")))
        sent = dict(jobs.metadata[-1])
        assert sent["x-team"] == "vision" and sent["authorization"] == "Bearer t0k"

        async def get_async() -> None:
            from bpj import aio

            request = types.GetBatchPredictionJobRequest(name=job_name("a"))
            await aio._job_service(config.settings()).get_batch_prediction_job(request)
            await aio.close_transports()

        import asyncio

        asyncio.run(get_async())
        sent = dict(jobs.metadata[-1])
        assert sent["x-team"] == "vision" and sent["authorization"] == "Bearer t0k"
    finally:
        server.stop(None) if kind == "grpc" else server.stop()


def test_a_location_must_be_a_region_when_the_endpoint_comes_from_it(monkeypatch):
    with pytest.raises(errors.UsageError, match="not a Vertex AI region; did you mean 'us-central1'"):
        config.init(location="us-central-1")
    assert config.settings().location == "us-central1"  # the refused init changed nothing
    # With an endpoint of its own (the local stack, a proxy) any well-formed location goes.
    assert config.init(location="on-prem1", api_endpoint="127.0.0.1:1").location == "on-prem1"
    config.reset()
    monkeypatch.setenv("BPJ_EXTRA_LOCATIONS", "mars-north1, moon-south1")
    assert config.init(location="moon-south1").vertex_endpoint == "moon-south1-aiplatform.googleapis.com"


def test_the_region_list_holds_every_region_the_official_sdk_knows():
    from google.cloud.aiplatform.constants import base

    from bpj import rules

    assert set(base.SUPPORTED_REGIONS) <= rules.REGIONS
