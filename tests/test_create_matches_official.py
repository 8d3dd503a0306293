"""``bpj.BatchPredictionJob.create`` sends the CreateBatchPredictionJobRequest the official SDK sends.

For create arguments drawn from bpj's own valid strategies (:func:`bpj.testing.configs.valid_configs`), the
request bpj builds (:func:`bpj.jobs.check_create`, no RPC) must equal, field for field, the request
google-cloud-aiplatform's ``aiplatform.BatchPredictionJob.create`` actually sends. The official request is
captured without patching anything: the official SDK is pointed (``aiplatform.init(api_endpoint=...,
api_transport="rest")``) at a recording JobService served over REST by bpj's own gateway on 127.0.0.1. The
recorded job is already SUCCEEDED, so ``sync=True`` returns after one Get instead of polling.

Deliberate differences, removed or adapted before comparing:

- bpj stamps a ``bpj_request_id`` label on every create, so a create whose reply is lost is looked up
  instead of made twice (bpj/jobs.py, module docstring "Safe create"; README "What differs from the official
  SDK, on purpose"). It is checked to be there, then removed.
- ``instance_config``, ``unmanaged_container_model`` and ``disable_container_logging`` are bpj-only
  parameters (bpj/jobs.py, ``create``'s docstring; README: fields "the official create can't set"), so
  configs using them are left out (``disable_container_logging`` and ``instance_config`` are dropped, a
  config whose model is an ``unmanaged_container_model`` is skipped).
- ``gcs_source`` as a tuple or a generator: bpj takes any iterable of URIs (bpj/validation.py ``gcs_uris``;
  the official signature says ``Sequence[str]`` but its code wraps anything that is not a list in a list,
  so a tuple raises TypeError there). The official SDK gets the same URIs as a list.
- ``explanation_parameters`` drawn as a proto3 JSON dict: the official SDK gets the same value as its
  ``aiplatform.explain.ExplanationParameters`` message.
- ``create_request_timeout`` is the RPC's deadline, not a request field: both get it, nothing to compare.
- ``project`` and ``location`` (the configs leave them to ``init``) are passed to both explicitly.

Three differences are bpj's on purpose (README, "What differs from the official SDK, on purpose"), kept out
of the property test by :func:`deliberate_difference` and each asserted exactly by
``test_deliberate_difference``:

- ``batch_size`` without ``machine_type``: bpj sends it; the official SDK drops it without a word.
- ``accelerator_type`` without ``accelerator_count``: bpj sends a count of 1; the official SDK sends none.
- A one-character model id (``"a"``, valid for Vertex AI): bpj takes it; the official SDK refuses it.

``model_name`` is also drawn in every form users give it (``test_model_name_forms_match_the_official_sdk``):
an id or a full name, with or without ``@version``, names both refuse, and Model objects, bpj's and the
official one, each given as the same object to both libraries. The official SDK sends a Model object's
``versioned_resource_name`` (it reads nothing else of it), so the job runs the version the object stands
for, not the model's default one. The objects are real: the recording server also serves GetModel for
models with three versions, the default being neither the first nor the last.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform
from google.cloud.aiplatform import initializer
from google.protobuf import text_format
from hypothesis import event, given, settings
from hypothesis import strategies as st

import bpj
from bpj import config, errors, types
from bpj._gen.services.job_service import JobServiceServicer
from bpj._gen.services.model_service import ModelServiceServicer
from bpj.jobs import REQUEST_ID_LABEL, check_create
from bpj.local.servers.gateway import serve_rest
from bpj.testing.configs import JobConfig, valid_configs

PROJECT, LOCATION = "bpj-test", "us-central1"
BPJ_ONLY = ("instance_config", "disable_container_logging")


class Recorder(JobServiceServicer):
    """Records every CreateBatchPredictionJobRequest (a bpj message) and answers with the job SUCCEEDED."""

    def __init__(self) -> None:
        self.created: list[Any] = []
        self._lock = threading.Lock()

    def CreateBatchPredictionJob(self, request, context):
        with self._lock:
            self.created.append(request)
        job = types.BatchPredictionJob()
        job.CopyFrom(request.batch_prediction_job)
        job.name = f"{request.parent}/batchPredictionJobs/1"
        job.state = types.JobState.JOB_STATE_SUCCEEDED
        return job

    def GetBatchPredictionJob(self, request, context):
        return types.BatchPredictionJob(name=request.name, state=types.JobState.JOB_STATE_SUCCEEDED)

    def take(self) -> list[Any]:
        with self._lock:
            out, self.created = self.created, []
        return out


# Models the recording server knows, each with these versions: version id -> aliases. The default version is
# the second one, so neither "the first" nor "the latest" passes for it.
MODEL_IDS = ("123", "iris_v2-x")
VERSIONS = {"1": ("stable",), "2": ("default",), "3": ("canary", "next")}


class Registry(ModelServiceServicer):
    """GetModel as Vertex AI answers it for the models of MODEL_IDS: ``models/{id}`` is the default version,
    ``models/{id}@{version id or alias}`` that version; the returned name carries no version."""

    def GetModel(self, request, context):
        base, _, asked = request.name.partition("@")
        parent, _, model_id = base.rpartition("/models/")
        if parent == f"projects/{PROJECT}/locations/{LOCATION}" and model_id in MODEL_IDS:
            for version, aliases in VERSIONS.items():
                if asked in (version, *aliases) or (not asked and "default" in aliases):
                    return types.Model(
                        name=base, display_name=model_id, version_id=version, version_aliases=aliases
                    )
        raise errors.NotFound(f"The Model {request.name!r} does not exist.")


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    """The recording server, and the official SDK and bpj pointed at it; their global configs are reset
    afterwards."""
    rec = Recorder()
    with serve_rest(rec, Registry()) as server:
        aiplatform.init(
            project=PROJECT,
            location=LOCATION,
            api_endpoint=server.url,
            api_transport="rest",
            credentials=AnonymousCredentials(),
        )
        config.init(project=PROJECT, location=LOCATION, api_endpoint=server.url, transport="rest")
        try:
            yield rec
        finally:
            initializer.global_config.__init__()  # type: ignore[misc]  # back to its defaults
            config.reset()


def comparable_configs() -> Any:
    """bpj's valid configs that the official ``create`` can express (see the module docstring), minus those
    that run into an undocumented difference (each pinned by test_undocumented_difference)."""
    return (
        valid_configs(project=PROJECT, location=LOCATION)
        .filter(lambda c: "unmanaged_container_model" not in c.kwargs)
        .map(lambda c: JobConfig({k: v for k, v in c.kwargs.items() if k not in BPJ_ONLY}))
        .filter(lambda c: deliberate_difference(c.kwargs) is None)
    )


def deliberate_difference(kwargs: dict[str, Any]) -> str | None:
    """Which of bpj's deliberate differences these arguments run into, if any (see the module docstring)."""
    if kwargs.get("batch_size") is not None and kwargs.get("machine_type") is None:
        return "batch_size without machine_type"
    if kwargs.get("accelerator_type") is not None and kwargs.get("accelerator_count") is None:
        return "accelerator_type without accelerator_count"
    if re.fullmatch(r"[\w-]", str(kwargs.get("model_name"))):
        return "one-character model id"
    return None


def both_arguments(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bpj's arguments, the official SDK's) for the same create: see the module docstring."""
    ours = {**kwargs, "project": PROJECT, "location": LOCATION}
    theirs = dict(ours)
    source = kwargs.get("gcs_source")
    if source is not None and not isinstance(source, (str, list)):
        uris = list(source)  # a generator is read once: give bpj a fresh one of the same kind
        ours["gcs_source"] = tuple(uris) if isinstance(source, tuple) else iter(uris)
        theirs["gcs_source"] = uris
    if isinstance(kwargs.get("explanation_parameters"), dict):
        theirs["explanation_parameters"] = aiplatform.explain.ExplanationParameters.from_json(
            json.dumps(kwargs["explanation_parameters"])
        )
    return ours, theirs


def bpj_request(kwargs: dict[str, Any]) -> Any:
    """The request bpj's create would send, without its bpj_request_id label (checked to be there)."""
    plan = check_create(**kwargs)
    request = plan.request
    assert plan.request_id is not None
    assert request.batch_prediction_job.labels[REQUEST_ID_LABEL] == plan.request_id
    del request.batch_prediction_job.labels[REQUEST_ID_LABEL]
    return request


def official_request(recorder: Recorder, kwargs: dict[str, Any]) -> Any:
    """The request the official SDK sends for ``create(**kwargs, sync=True)``, as the server received it."""
    recorder.take()
    job = aiplatform.BatchPredictionJob.create(**kwargs, sync=True)
    assert job.state.name == "JOB_STATE_SUCCEEDED"
    [request] = recorder.take()
    assert isinstance(request, types.CreateBatchPredictionJobRequest)
    return request


def assert_same_request(recorder: Recorder, kwargs: dict[str, Any]) -> None:
    """bpj builds the request the official SDK sends; or both refuse the arguments (a ValueError)."""
    ours, theirs = both_arguments(kwargs)
    try:
        sent = official_request(recorder, theirs)
    except ValueError as refused:
        try:
            bpj_request(ours)
        except ValueError:  # bpj.errors.UsageError is one
            return
        pytest.fail(f"the official SDK refuses these arguments ({refused}); bpj accepts them")
    built = bpj_request(ours)
    # Text first, for a readable diff (map entries come out sorted); then the messages themselves, which
    # also tell a set-but-empty submessage from an unset one.
    assert text_format.MessageToString(built) == text_format.MessageToString(sent)
    assert built == sent
    assert built.SerializeToString(deterministic=True) == sent.SerializeToString(deterministic=True)


@settings(max_examples=25, deadline=None)
@given(comparable_configs())
def test_create_request_matches_the_official_sdk(recorder, config):
    assert_same_request(recorder, config.kwargs)


GCS = {"gcs_source": "gs://in-bucket/a.jsonl", "gcs_destination_prefix": "gs://out-bucket/run/"}
MODEL = f"projects/{PROJECT}/locations/{LOCATION}/models/123"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"model_name": "123@2", **GCS}, id="plain"),
        pytest.param(
            {
                "model_name": MODEL,
                "bigquery_source": "bq://p.d.t",
                "bigquery_destination_prefix": "p.d",
                "machine_type": "n1-standard-4",
                "accelerator_type": "NVIDIA_TESLA_T4",
                "accelerator_count": 2,
                "starting_replica_count": 1,
                "max_replica_count": 3,
                "batch_size": 16,
                "model_parameters": {"k": [1, "x", None]},
                "labels": {"team": "vision"},
                "generate_explanation": True,
                "explanation_parameters": {"sampledShapleyAttribution": {"pathCount": 5}},
                "encryption_spec_key_name": f"projects/k/locations/{LOCATION}/keyRings/r/cryptoKeys/c",
                "service_account": "sa@p.iam.gserviceaccount.com",
            },
            id="everything",
        ),
    ],
)
def test_examples_match(recorder, kwargs):
    assert_same_request(recorder, {"job_display_name": "example", **kwargs})


def test_deliberate_difference_batch_size_without_machine_type(recorder):
    kwargs = {"job_display_name": "d", "model_name": "123", **GCS, "batch_size": 64}
    ours, theirs = both_arguments(kwargs)
    assert bpj_request(ours).batch_prediction_job.manual_batch_tuning_parameters.batch_size == 64
    assert not official_request(recorder, theirs).batch_prediction_job.HasField(
        "manual_batch_tuning_parameters"
    )


def test_deliberate_difference_accelerator_count_defaults_to_one(recorder):
    kwargs = {"job_display_name": "d", "model_name": "123", **GCS, "machine_type": "n1-standard-4"}
    kwargs["accelerator_type"] = "NVIDIA_TESLA_T4"
    ours, theirs = both_arguments(kwargs)
    assert bpj_request(ours).batch_prediction_job.dedicated_resources.machine_spec.accelerator_count == 1
    sent = official_request(recorder, theirs).batch_prediction_job.dedicated_resources.machine_spec
    assert sent.accelerator_type and sent.accelerator_count == 0


def test_deliberate_difference_one_character_model_id(recorder):
    kwargs = {"job_display_name": "d", "model_name": "a", **GCS}
    ours, theirs = both_arguments(kwargs)
    assert bpj_request(ours).batch_prediction_job.model.endswith("/models/a")
    with pytest.raises(ValueError, match="not a valid resource ID"):
        official_request(recorder, theirs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"machine_type": "n1-standard-4"}, id="machine_type-without-batch_size"),
        pytest.param({"model_parameters": {}}, id="empty-model_parameters"),
    ],
)
def test_former_differences_now_match(recorder, kwargs):
    assert_same_request(recorder, {"job_display_name": "d", "model_name": "123", **GCS, **kwargs})


# -- model_name: ids, full names, versions and Model objects ---------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9_-]{2,24}", fullmatch=True)
_versions = st.one_of(st.just(""), st.from_regex(r"@[A-Za-z0-9_-]{1,12}", fullmatch=True))
# Both refuse these (a ValueError before any call).
REFUSED_NAMES = ("", "ab@", "ab@@1", "ab@1@2", "ab cd", "models/123", "projects/p/models/123")


class ModelObject(NamedTuple):
    """A Model object to make once the server is up: ``library`` "bpj" or "official", made with
    ``Model(name)`` or ``Model(name, version=version)``."""

    library: str
    name: str
    version: str | None

    def make(self) -> Any:
        cls = bpj.Model if self.library == "bpj" else aiplatform.Model
        return cls(self.name) if self.version is None else cls(self.name, version=self.version)


@st.composite
def model_names(draw: Any) -> str | ModelObject:
    """A ``model_name`` as users give it: an id or a full name, with or without ``@version``, a name both
    libraries refuse, or a bpj or official Model object of a model with versions."""
    kind = draw(st.sampled_from(["id", "full name", "refused", "bpj", "official"]))
    event(f"model_name: {kind}")
    if kind == "id":
        return draw(_ids) + draw(_versions)
    if kind == "full name":
        project = draw(st.sampled_from([PROJECT, "another-project", "123456789"]))
        return f"projects/{project}/locations/{LOCATION}/models/{draw(_ids)}{draw(_versions)}"
    if kind == "refused":
        return draw(st.sampled_from(REFUSED_NAMES))
    model_id = draw(st.sampled_from(MODEL_IDS))
    name = draw(st.sampled_from([model_id, f"projects/{PROJECT}/locations/{LOCATION}/models/{model_id}"]))
    version = draw(st.sampled_from([None, *VERSIONS, *(a for aliases in VERSIONS.values() for a in aliases)]))
    if version is not None and draw(st.booleans()):
        name, version = f"{name}@{version}", None
    return ModelObject(kind, name, version)


@settings(max_examples=100, deadline=None)
@given(comparable_configs(), model_names())
def test_model_name_forms_match_the_official_sdk(recorder, job, model_name):
    """Whatever form ``model_name`` takes, bpj sends the official SDK's request (a Model object: the same
    object to both), or both refuse it."""
    if isinstance(model_name, ModelObject):
        model_name = model_name.make()
    assert_same_request(recorder, {**job.kwargs, "model_name": model_name})


@pytest.mark.parametrize("library", ["bpj", "official"])
@pytest.mark.parametrize(
    ("name", "version", "sent"),
    [
        pytest.param("123", None, "2", id="default"),
        pytest.param("123", "canary", "3", id="alias"),
        pytest.param(f"{MODEL}@1", None, "1", id="versioned-name"),
    ],
)
def test_a_model_object_sends_its_version(recorder, library, name, version, sent):
    """The regression: a Model object names the version it stands for, never the bare model (which would
    run the default version)."""
    model = ModelObject(library, name, version).make()
    assert model.versioned_resource_name == f"{MODEL}@{sent}"
    kwargs = {"job_display_name": "d", "model_name": model, **GCS}
    assert_same_request(recorder, kwargs)
    assert bpj_request(both_arguments(kwargs)[0]).batch_prediction_job.model == f"{MODEL}@{sent}"
