"""The property of issue 4: every config bpj.testing.configs builds either creates a job whose stored
resource equals the request, or raises a ValueError (UsageError) naming the offending argument before any
call, and never any other exception. The stored resource is compared, field by field, with what an
independent reading of the official create() documentation says the arguments mean."""

from __future__ import annotations

import collections.abc
import re
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings

from bpj import bq_uri, errors, gcs_uri, validation
from bpj import config as config_module
from bpj.jobs import REQUEST_ID_LABEL, BatchPredictionJob
from bpj.local import checks
from bpj.testing.configs import INVALID, JobConfig, gcs_uris, job_configs
from bpj.testing.fake import FakeVertex

PROJECT, LOCATION = "bpj-test", "us-central1"
# What the service fills in on create; everything else must be what the request asked for.
SERVICE_SET = {"name", "state", "createTime", "updateTime", "modelVersionId"}


def expected(kw: dict[str, Any]) -> dict[str, Any]:
    """The proto3 JSON of the job these arguments ask for (fields at their default left out)."""
    out: dict[str, Any] = {"displayName": kw["job_display_name"]}
    model = kw.get("model_name")
    if model is not None:
        out["model"] = (
            model
            if model.startswith("projects/")
            else f"projects/{PROJECT}/locations/{LOCATION}/models/{model}"
        )
    if "unmanaged_container_model" in kw:
        out["unmanagedContainerModel"] = kw["unmanaged_container_model"]
    if "gcs_source" in kw:
        uris = kw["gcs_source"]
        out["inputConfig"] = {
            "instancesFormat": kw.get("instances_format", "jsonl"),
            "gcsSource": {"uris": [uris] if isinstance(uris, str) else list(uris)},
        }
    else:
        out["inputConfig"] = {
            "instancesFormat": "bigquery",
            "bigquerySource": {"inputUri": kw["bigquery_source"]},
        }
    if "gcs_destination_prefix" in kw:
        out["outputConfig"] = {
            "predictionsFormat": kw.get("predictions_format", "jsonl"),
            "gcsDestination": {"outputUriPrefix": kw["gcs_destination_prefix"]},
        }
    else:
        dest = kw["bigquery_destination_prefix"]
        out["outputConfig"] = {
            "predictionsFormat": "bigquery",
            "bigqueryDestination": {"outputUri": dest if dest.startswith("bq://") else f"bq://{dest}"},
        }
    if "machine_type" in kw:
        spec: dict[str, Any] = {"machineType": kw["machine_type"]}
        if "accelerator_type" in kw:
            spec["acceleratorType"] = kw["accelerator_type"]
            spec["acceleratorCount"] = kw.get("accelerator_count", 1)
        out["dedicatedResources"] = {"machineSpec": spec}
        out["manualBatchTuningParameters"] = {}  # sent (empty) with dedicated resources, as the official SDK
        for arg, field in (
            ("starting_replica_count", "startingReplicaCount"),
            ("max_replica_count", "maxReplicaCount"),
        ):
            if arg in kw:
                out["dedicatedResources"][field] = kw[arg]
    if "batch_size" in kw:
        out["manualBatchTuningParameters"] = {"batchSize": kw["batch_size"]}
    if kw.get("model_parameters"):  # an empty (falsy) one is not sent, as the official SDK
        out["modelParameters"] = kw["model_parameters"]
    if kw.get("generate_explanation"):
        out["generateExplanation"] = True
    if "explanation_parameters" in kw:
        out["explanationSpec"] = {"parameters": kw["explanation_parameters"]}
    if "explanation_metadata" in kw:
        out.setdefault("explanationSpec", {})["metadata"] = kw["explanation_metadata"]
    if kw.get("labels"):
        out["labels"] = kw["labels"]
    if "encryption_spec_key_name" in kw:
        out["encryptionSpec"] = {"kmsKeyName": kw["encryption_spec_key_name"]}
    if "service_account" in kw:
        out["serviceAccount"] = kw["service_account"]
    if "instance_config" in kw:
        out["instanceConfig"] = kw["instance_config"]
    if kw.get("disable_container_logging"):
        out["disableContainerLogging"] = True
    return out


def _numbers_as_floats(value: Any) -> Any:
    # google.protobuf.Value holds every number as a double.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    return [_numbers_as_floats(v) for v in value]


def check(fake: Any, config: JobConfig) -> None:
    kw = dict(config.kwargs)
    if isinstance(kw.get("gcs_source"), collections.abc.Iterator):
        uris = list(kw["gcs_source"])
        kw["gcs_source"] = uris
        config.kwargs["gcs_source"] = iter(uris)
    before = sum(fake.calls.values())
    try:
        job = BatchPredictionJob.submit(**config.kwargs)
    except ValueError as e:
        assert isinstance(e, errors.UsageError), f"a ValueError that is not a UsageError: {e!r}"
        assert config.invalid is not None, f"a valid config was refused: {e}"
        assert re.search(rf"\b{re.escape(config.invalid)}\b", str(e)), f"{e} does not name {config.invalid}"
        assert sum(fake.calls.values()) == before, "a call was made before the refusal"
        return
    assert config.invalid is None, f"{config.invalid}={config.kwargs.get(config.invalid)!r} was accepted"
    stored = json_format.MessageToDict(fake.job(job.resource_name))
    assert job.gca_resource == fake.job(job.resource_name)
    want = expected(kw)
    labels = stored.get("labels", {})
    assert re.fullmatch(r"[0-9a-f]{32}", labels.pop(REQUEST_ID_LABEL, "")), "the request-id label is missing"
    if not labels:
        stored.pop("labels", None)
    if "modelParameters" in want:
        want["modelParameters"] = _numbers_as_floats(want["modelParameters"])
    assert {k: v for k, v in stored.items() if k not in SERVICE_SET} == want


@settings(max_examples=300, deadline=None)
@given(config=job_configs(project=PROJECT, location=LOCATION))
def test_every_config_creates_the_job_it_describes_or_names_its_bad_argument(config):
    # A fresh fake per example: the emulator draws job ids from the global `random`, which hypothesis
    # seeds the same way for every example, so ids repeat across examples in one store.
    with FakeVertex(PROJECT, LOCATION) as fake:
        fake.init()
        try:
            check(fake, config)
        finally:
            config_module.reset()


@pytest.mark.parametrize(
    "field, value, named", INVALID, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(INVALID)]
)
def test_each_invalid_value_alone(bpj_fake, field, value, named):
    """Every entry of INVALID on a known-good config, so each rule runs whatever hypothesis draws."""
    kw = {
        "job_display_name": "j",
        "model_name": "iris",
        "gcs_source": "gs://bpj-in/a.jsonl",
        "gcs_destination_prefix": "gs://bpj-out/",
    }
    if field in ("accelerator_type", "accelerator_count", "starting_replica_count", "max_replica_count"):
        kw["machine_type"] = "n1-standard-4"
        if field == "accelerator_count":
            kw["accelerator_type"] = "NVIDIA_TESLA_T4"
    if field == "explanation_parameters":
        kw["generate_explanation"] = True
    if field in ("gcs_source", "bigquery_source"):
        kw.pop("gcs_source")
    if field in ("gcs_destination_prefix", "bigquery_destination_prefix"):
        kw.pop("gcs_destination_prefix")
    check(bpj_fake, JobConfig({**kw, field: value}, named))


def test_the_strategy_covers_every_validated_argument():
    import inspect

    validated = set(inspect.signature(validation.build_job).parameters) - {
        "project",
        "location",
        "reserved_labels",
        "fields",
    }
    validated -= {"explanation_metadata"}  # a dict of its own schema: covered by validation's own tests
    covered = {f for f, _, _ in INVALID} | {"unmanaged_container_model", "bigquery_source"}
    assert validated <= covered, validated - covered


def test_a_table_id_with_a_dash_is_created(bpj_fake):
    check(
        bpj_fake,
        JobConfig(
            {
                "job_display_name": "j",
                "model_name": "iris",
                "bigquery_source": "bq://p.d.my-table",
                "gcs_destination_prefix": "gs://bpj-out/",
            }
        ),
    )


@settings(max_examples=3000, deadline=None)
@given(uri=gcs_uris)
def test_every_gcs_uri_is_one_the_emulator_takes(uri):
    bucket, name = gcs_uri.split(uri)
    assert gcs_uri.bucket_problem(bucket) is None
    assert not name or gcs_uri.object_problem(name) is None
    for kind in ("object", "prefix", "schema"):
        assert checks.gcs_problem(uri, kind=kind) is None, checks.gcs_problem(uri, kind=kind)


@settings(max_examples=1000, deadline=None)
@given(config=job_configs(project=PROJECT, location=LOCATION, valid=True))
def test_every_valid_config_holds_uris_the_emulator_takes(config):
    kw = config.kwargs
    source = kw.get("gcs_source", [])
    for uri in [source] if isinstance(source, str) else list(source):
        assert checks.gcs_problem(uri, kind="object") is None
    if "gcs_destination_prefix" in kw:
        assert checks.gcs_problem(kw["gcs_destination_prefix"], kind="prefix") is None
    if "unmanaged_container_model" in kw:
        uri = kw["unmanaged_container_model"]["artifactUri"]
        assert checks.gcs_problem(uri, kind="prefix") is None
    if "bigquery_source" in kw:
        assert checks.bq_problem(kw["bigquery_source"], table=True) is None
        assert bq_uri.split_table(kw["bigquery_source"])
    if "bigquery_destination_prefix" in kw:
        dest = validation.bigquery_destination(kw["bigquery_destination_prefix"])
        assert checks.bq_problem(dest, table=False) is None
