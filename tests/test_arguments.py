"""Every public entry point, over the whole input space: a call either builds its request or raises a
UsageError naming the argument, and a refusal never reaches the transport (issue 17).

The transport is an in-memory one whose handler records the request and stops the call, so a test sees
exactly what would have gone on the wire, and a refusal that called it fails.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bpj import config, errors, rules
from bpj.cli import main
from bpj.jobs import REQUEST_ID_LABEL, BatchPredictionJob, check_create
from bpj.models import Model, plan_upload
from bpj.testing import configs
from bpj.transport.memory import InMemoryTransport
from tests.conftest import use_environment

ENDPOINT = "never-called.invalid:1"
PROJECT, LOCATION = "bpj-test", "us-central1"


class Stop(Exception):
    """Raised by the transport after it recorded a request: the test needs nothing past it."""


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.transport = InMemoryTransport(handler=self.handle)

    def handle(self, method: Any, request: Any, context: Any) -> Any:
        self.requests.append((method.name, request))
        raise Stop(method.name)


@pytest.fixture
def wire():
    config.reset()
    recorder = Recorder()
    config.register_transport(ENDPOINT, recorder.transport)
    config.init(project=PROJECT, location=LOCATION, api_endpoint=ENDPOINT)
    yield recorder
    config.reset()


# Hostile values: strings that pass a `$` anchor, URIs Cloud Storage or BigQuery refuse, numbers past a
# proto field's range, non-finite floats and values of the wrong type.
HOSTILE_TEXT = [
    "",
    " ",
    "\n",
    "1\n",
    "a b",
    "\x00",
    "\ud800",
    "UPPER",
    "projects/p/locations/us-central1/models/1\n",
    "projects/p/locations/us-central1/batchPredictionJobs/1\n",
    "gs://",
    "gs://b",
    "gs://bucket/a\n",
    "gs://bucket/a\x00b",
    "gs://bucket/a/../b",
    "gs://bucket/./a",
    "gs://bkt..x/a",
    "gs://bucket/" + "a" * 1025,
    "gs://Bucket/a",
    "bq://",
    "bq://p.d.t\n",
    "bq://p.d.t.u",
    "bq://p..t",
    "bq://p.d-x.t",
    "bq://p.d.t/x",
    "us-central1\n",
    "bpj-test\n",
]
HOSTILE_NUMBERS = [0, -1, 2**31 - 1, 2**31, 2**40, 2**63, -(2**63), 1.5, math.nan, math.inf, -math.inf, True]
WRONG_TYPES = [5, b"gs://bucket/a", ["gs://bucket/a", 5], {"a": "b"}, object(), 1j]
hostile = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.sampled_from(HOSTILE_NUMBERS),
    st.sampled_from(WRONG_TYPES),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
)

# Every create() parameter that takes a plain value, from its signature (a new one is drawn at once); the
# others take messages or objects, or are checked elsewhere (sync, the monitoring refusals, fields).
NOT_DRAWN = {
    "explanation_metadata",
    "explanation_parameters",
    "credentials",
    "sync",
    "model_monitoring_objective_config",
    "model_monitoring_alert_config",
    "analysis_instance_schema_uri",
    "unmanaged_container_model",
    "request_id_label",
    "fields",
}
CREATE_PARAMETERS = [p for p in inspect.signature(BatchPredictionJob.create).parameters if p not in NOT_DRAWN]


def names(error: BaseException, argument: str) -> bool:
    return argument in str(error)


def without_request_id(request: Any) -> Any:
    out = type(request)()
    out.CopyFrom(request)
    out.batch_prediction_job.labels.pop(REQUEST_ID_LABEL, None)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(configs.valid_configs(PROJECT, LOCATION), st.sampled_from(CREATE_PARAMETERS), hostile)
def test_create_builds_its_request_or_names_the_argument(wire, config_, argument, value):
    # A generator source is read once: both calls get the same items.
    kwargs = {k: list(v) if isinstance(v, Iterator) else v for k, v in config_.kwargs.items()}
    kwargs[argument] = value
    try:
        plan = check_create(**kwargs, sync=False)
    except errors.UsageError as e:
        assert names(e, argument), (argument, value, e)
        planned = None
    else:
        planned = without_request_id(plan.request)
    wire.requests.clear()
    if planned is None:
        with pytest.raises(errors.UsageError) as caught:
            BatchPredictionJob.submit(**kwargs)
        assert names(caught.value, argument)
        assert wire.requests == [], "a refused argument reached the transport"
        event("refused")
        return
    event("built")
    with pytest.raises(Stop):
        BatchPredictionJob.submit(**kwargs)
    (method, sent), *_ = wire.requests
    assert method == "CreateBatchPredictionJob"
    assert without_request_id(sent) == planned
    # What was accepted is what protobuf holds: every integer inside its field's range.
    job = sent.batch_prediction_job
    for number in (
        job.manual_batch_tuning_parameters.batch_size,
        job.dedicated_resources.starting_replica_count,
        job.dedicated_resources.max_replica_count,
        job.dedicated_resources.machine_spec.accelerator_count,
    ):
        assert 0 <= number <= rules.INT32_MAX


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("model_name", "1\n"),
        ("model_name", "projects/p/locations/us-central1/models/1\n"),
        ("project", "bpj-test\n"),
        ("location", "us-central1\n"),
        ("bigquery_source", "bq://p.d.t\n"),
        ("batch_size", 2**31),
        ("create_request_timeout", math.inf),
        ("create_request_timeout", math.nan),
        ("gcs_source", "gs://bucket/a\n"),
        ("gcs_source", "gs://bucket/a\x00"),
        ("gcs_source", "gs://bucket/a/../b"),
        ("gcs_source", "gs://bucket/" + "a" * 1025),
        ("gcs_source", "gs://bkt..x/a"),
        ("gcs_destination_prefix", "gs://"),
    ],
)
def test_the_reported_holes_are_closed(wire, argument, value):
    kwargs = dict(
        job_display_name="j",
        model_name="1",
        gcs_source="gs://bucket/in.jsonl",
        gcs_destination_prefix="gs://bucket/out",
    )
    kwargs[argument] = value
    with pytest.raises(errors.UsageError, match=argument):
        BatchPredictionJob.submit(**kwargs)
    assert wire.requests == []


@pytest.mark.parametrize(
    ("argument", "value"),
    [("starting_replica_count", 2**40), ("accelerator_count", 2**40), ("max_replica_count", 2**31)],
)
def test_huge_replica_and_accelerator_counts_are_usage_errors(wire, argument, value):
    kwargs = dict(
        job_display_name="j",
        model_name="1",
        gcs_source="gs://bucket/in.jsonl",
        gcs_destination_prefix="gs://bucket/out",
        machine_type="n1-standard-4",
        accelerator_type="NVIDIA_TESLA_T4",
    )
    with pytest.raises(errors.UsageError, match=f"{argument}: must be an int from 1 to 2147483647"):
        BatchPredictionJob.submit(**{**kwargs, argument: value})
    assert wire.requests == []


# -- Model.upload -------------------------------------------------------------------------------------

UPLOAD_PARAMETERS = [
    "serving_container_image_uri",
    "artifact_uri",
    "model_id",
    "parent_model",
    "is_default_version",
    "version_aliases",
    "version_description",
    "serving_container_predict_route",
    "serving_container_health_route",
    "description",
    "serving_container_command",
    "serving_container_args",
    "serving_container_environment_variables",
    "serving_container_ports",
    "serving_container_grpc_ports",
    "instance_schema_uri",
    "display_name",
    "project",
    "location",
    "labels",
    "encryption_spec_key_name",
    "sync",
    "upload_request_timeout",
    "serving_container_shared_memory_size_mb",
]
SEQUENCES = {
    "version_aliases",
    "serving_container_command",
    "serving_container_args",
    "serving_container_ports",
    "serving_container_grpc_ports",
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(UPLOAD_PARAMETERS), st.one_of(hostile, st.lists(hostile, min_size=1, max_size=2)))
def test_upload_builds_its_request_or_names_the_argument(wire, argument, value):
    if argument not in SEQUENCES and isinstance(value, list):
        value = value[0]
    kwargs = dict(
        serving_container_image_uri=configs.IMAGE,
        artifact_uri="gs://bucket/model",
        display_name="m",
        sync=False,
    )
    kwargs[argument] = value
    try:
        _, planned = plan_upload(**kwargs)
    except errors.UsageError as e:
        assert names(e, argument), (argument, value, e)
        planned = None
    wire.requests.clear()
    if planned is None:
        with pytest.raises(errors.UsageError, match=argument):
            Model.upload(**kwargs)
        assert wire.requests == []
        event("refused")
        return
    event("built")
    with pytest.raises(Stop):
        Model.upload(**kwargs)
    (method, sent), *_ = wire.requests
    assert method == "UploadModel" and sent == planned


@pytest.mark.parametrize("uri", ["gs://", "gs://b", "gs://bucket/a\n", "gs://bkt..x", "/local/dir", 5])
def test_upload_refuses_bad_artifact_uris(wire, uri):
    with pytest.raises(errors.UsageError, match="artifact_uri"):
        Model.upload(configs.IMAGE, artifact_uri=uri, sync=False)
    assert wire.requests == []


# -- init ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["project", "location", "transport", "api_endpoint"]), hostile)
def test_init_takes_a_value_or_names_the_argument(argument, value):
    config.reset()
    try:
        config.init(**{argument: value})
    except errors.UsageError as e:
        assert names(e, argument), (argument, value, e)
        if not isinstance(value, str):
            assert isinstance(e, TypeError)
    else:
        assert getattr(config.settings(), argument) == value
    finally:
        config.reset()


def test_wrong_types_are_type_errors_too():
    for kwargs in ({"project": 5}, {"location": 5}):
        with pytest.raises(TypeError, match=next(iter(kwargs))) as caught:
            config.init(**kwargs)
        assert isinstance(caught.value, errors.UsageError)
    config.reset()


# -- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def unreachable(monkeypatch):
    """An environment whose every endpoint refuses connections: a command that gets past its argument
    checks says "cannot reach"; one that names a flag never tried."""
    nowhere = {
        "BPJ_PROJECT": PROJECT,
        "BPJ_API_ENDPOINT": "127.0.0.1:9",
        "BPJ_GCS_ENDPOINT": "http://127.0.0.1:9",
        "BPJ_BIGQUERY_STORAGE_ENDPOINT": "127.0.0.1:9",
    }
    use_environment(monkeypatch, nowhere)
    config.reset()
    yield
    config.reset()


CREATE = [
    "jobs",
    "create",
    "--display-name",
    "j",
    "--model",
    "1",
    "--gcs-source",
    "gs://bucket/in.jsonl",
    "--gcs-destination-prefix",
    "gs://bucket/out",
]
BENCH = ["bench", "--model", "1", "--gcs-prefix", "gs://bucket/bench", "-n", "10"]
CLI_FLAGS = [
    (CREATE, "--model"),
    (CREATE, "--display-name"),
    (CREATE, "--gcs-source"),
    (CREATE, "--gcs-destination-prefix"),
    (CREATE, "--batch-size"),
    (CREATE, "--labels"),
    (CREATE, "--bigquery-source"),
    (CREATE, "--create-request-timeout"),
    (CREATE, "--machine-type"),
    (CREATE, "--service-account"),
    (["jobs", "list"], "--page-size"),
    (["jobs", "list"], "--limit"),
    (["models", "upload", "--image", configs.IMAGE, "--artifact-uri", "gs://bucket/m"], "--artifact-uri"),
    (["models", "upload", "--image", configs.IMAGE], "--model-id"),
    (["models", "upload", "--image", configs.IMAGE], "--labels"),
    (BENCH, "--model"),
    (BENCH, "--gcs-prefix"),
    (BENCH, "--batch-size"),
    (BENCH, "--timeout"),
    (BENCH, "--machine-type"),
]
cli_values = st.one_of(
    st.sampled_from([v for v in HOSTILE_TEXT if "\x00" not in v and "\ud800" not in v]),
    st.sampled_from(
        ["-1", "0", "2147483648", "1099511627776", "nan", "inf", "-inf", "1.5", "x=Y", "novalue"]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
)


def run(capsys: Any, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    _, err = capsys.readouterr()
    return code, err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(CLI_FLAGS), cli_values)
def test_the_cli_checks_every_argument_before_it_connects(unreachable, capsys, command, value):
    argv, flag = command
    if flag in argv:
        i = argv.index(flag)
        argv = [*argv[: i + 1], value, *argv[i + 2 :]]
    else:
        argv = [*argv, f"{flag}={value}"]
    code, err = run(capsys, argv)
    assert code != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpj: "), err
    event("connected" if "cannot reach" in lines[0] else "refused")
    if "cannot reach" in lines[0]:
        assert code == 1  # every argument passed its checks: then, and only then, a connection
        return
    assert code == 2, lines[0]
    assert "unexpected" not in lines[0]


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--model", ""], "--model"),
        (["--labels", "Bad=1"], "--labels"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--batch-size", str(2**31)], "--batch-size"),
        (
            ["--starting-replica-count", str(2**40), "--machine-type", "n1-standard-4"],
            "--starting-replica-count",
        ),
        (["--create-request-timeout", "inf"], "--create-request-timeout"),
        (["--gcs-source", "gs://bkt..x/a"], "--gcs-source"),
    ],
)
def test_the_reported_cli_mistakes_name_the_flag_not_the_endpoint(unreachable, capsys, extra, flag):
    code, err = run(capsys, [*CREATE, *extra])
    assert code == 2 and flag in err and "cannot reach" not in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "describe", "1\n"],
        ["jobs", "wait", "1", "--timeout", "nan"],
        ["jobs", "cancel", "a b"],
        ["jobs", "delete", ""],
        ["models", "describe", "1\n"],
        ["models", "delete", "x/y"],
        ["outputs", "read", "gs://bkt..x/a"],
        ["outputs", "read", "bq://p.d"],
        ["outputs", "read", "1", "-n", "-1"],
        [*BENCH[:2], "", *BENCH[3:]],
        [*BENCH[:4], "gs://bucket/../x", *BENCH[5:]],
        [*BENCH, "--batch-size", "-3"],
        [*BENCH, "--timeout", "inf"],
    ],
)
def test_other_commands_check_before_they_connect(unreachable, capsys, argv):
    code, err = run(capsys, argv)
    assert code == 2 and "cannot reach" not in err, err


@pytest.mark.parametrize("argv", [CREATE, BENCH])
def test_a_good_command_does_try_to_connect(unreachable, capsys, argv):
    code, err = run(capsys, argv)
    assert code == 1 and "cannot reach" in err
