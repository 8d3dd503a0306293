"""Hypothesis strategies for the arguments of ``BatchPredictionJob.create``, valid and invalid.

    from hypothesis import given
    from bpj.testing.configs import job_configs

    @given(job_configs(project="bpj-test", location="us-central1"))
    def test_every_config_creates_or_names_its_field(config):
        with FakeVertex() as fake:                                  # a fresh one per example
            fake.init()
            if config.invalid is None:
                job = BatchPredictionJob.submit(**config.kwargs)    # must create
            else:
                with pytest.raises(ValueError, match=re.escape(config.invalid)):
                    BatchPredictionJob.submit(**config.kwargs)

A :class:`JobConfig` holds ``kwargs`` (ready for ``create``/``submit``; ``sync`` left out) and ``invalid``:
None for a valid config, else the name of the one argument given a bad value, which the UsageError (a
ValueError) must name. Valid configs cover every parameter bpj validates: sources as a str, list, tuple or
generator, BigQuery and GCS on either side, formats, labels (international characters too), machine and
accelerator settings, batch size, model parameters, explanations, encryption key, service account,
instance_config, unmanaged_container_model and ``**fields``. Invalid ones break exactly one of them.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

__all__ = ["JobConfig", "INVALID", "invalid_configs", "job_configs", "valid_configs"]

GCS_FORMATS = ("jsonl", "csv", "tf-record", "tf-record-gzip", "file-list")
ACCELERATORS = ("NVIDIA_TESLA_T4", "NVIDIA_TESLA_V100", "NVIDIA_L4", "TPU_V3")
_NO_SURROGATE: Any = ("Cs",)
IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"


@dataclass(frozen=True)
class JobConfig:
    """Keyword arguments for ``BatchPredictionJob.create``; ``invalid`` names the one bad argument, if any."""

    kwargs: dict[str, Any]
    invalid: str | None = None

    def __repr__(self) -> str:
        return f"JobConfig(invalid={self.invalid!r}, kwargs={self.kwargs!r})"


_LOWER = st.sampled_from(string.ascii_lowercase + "äéßøçñ日本語")
_LABEL_CHAR = st.sampled_from(string.ascii_lowercase + string.digits + "_-äéßøçñ日本語")
label_keys = st.builds(lambda a, b: a + b, _LOWER, st.text(_LABEL_CHAR, max_size=20))
label_values = st.text(_LABEL_CHAR, max_size=20)
_ident = st.text(st.sampled_from(string.ascii_lowercase + string.digits), min_size=1, max_size=12)

# Valid names are built valid, by bpj.gcs_uri's rules and the local stack's stricter ones (bpj.local.checks),
# rather than filtered.
# Buckets: 1-3 dot-separated labels of a-z, 0-9, '-' and '_', each starting and ending with a letter or digit,
# the first with a letter (so never an IP address). No 'g' at all, so never "goog..." nor "...google...".
_BUCKET_LETTERS = string.ascii_lowercase.replace("g", "")
_BUCKET_ALNUM = _BUCKET_LETTERS + string.digits
_bucket_label = st.builds(
    lambda a, b, c: a + b + c,
    st.sampled_from(_BUCKET_ALNUM),
    st.text(st.sampled_from(_BUCKET_ALNUM + "-_"), max_size=10),
    st.sampled_from(_BUCKET_ALNUM),
)
_bucket = st.builds(
    lambda a, first, rest: ".".join([a + first, *rest]),
    st.sampled_from(_BUCKET_LETTERS),
    _bucket_label,
    st.lists(_bucket_label, max_size=2),
)
# Objects: up to 3 segments between '/' (and maybe a trailing '/'), none of them '.' or '..', even once
# percent-escapes are decoded, '\\' is read as '/' and NFKC is applied (as the local stack reads them): no
# '%', '\\' or control character, no character NFKC turns into one of those or into '/', and every segment
# holds a character that is not a dot (dots and the characters NFKC makes dots are fine around it; '…' is
# three dots, itself a name). At most
# 27 characters, so that even NFKC's longest expansion (33 bytes for U+FDFA) stays within 1024 bytes.
_DOTS = ".\uff0e\ufe52\u2024\u2025\ufe30"  # '.', and the characters whose NFKC is '.' or '..'
_NAME_CHAR = st.characters(
    blacklist_categories=("Cs", "Cc", "Cn"),
    blacklist_characters="/\\%\uff0f\uff3c\ufe68" + _DOTS,
)
_NAME_OR_DOT = st.one_of(
    st.sampled_from(_DOTS), st.sampled_from(string.ascii_lowercase + "-_ *?["), _NAME_CHAR
)
_dot_run = st.text(st.sampled_from(_DOTS), min_size=1, max_size=3)
_segment = st.one_of(
    st.builds(
        lambda a, c, b: a + c + b,
        st.text(_NAME_OR_DOT, max_size=4),
        _NAME_CHAR,
        st.text(_NAME_OR_DOT, max_size=4),
    ),
    st.builds(lambda d, c: d + c, _dot_run, _NAME_CHAR),  # ".x", "..x", "．．x"
    st.builds(lambda c, d: c + d, _NAME_CHAR, _dot_run),  # "x..", "x‥"
    st.builds(
        lambda n, e: f"{n}.{e}",
        st.text(st.sampled_from(string.ascii_lowercase + string.digits + "_-"), min_size=1, max_size=6),
        st.sampled_from(["jsonl", "csv", "tfrecord", "gz", "txt"]),
    ),
)
_ACME = ".well-known/acme-challenge/"  # reserved by Cloud Storage


def _object_name(segments: list[str], trailing_slash: bool) -> str:
    name = "/".join(segments) + ("/" if segments and trailing_slash else "")
    return "x" + name if unicodedata.normalize("NFKC", name).startswith(_ACME) else name


_object = st.builds(_object_name, st.lists(_segment, max_size=3), st.booleans())
gcs_uris = st.builds(lambda b, o: f"gs://{b}/{o}", _bucket, _object)
_bq_part = st.text(st.sampled_from(string.ascii_letters + string.digits + "_"), min_size=1, max_size=12)
_bq_table = st.text(
    st.sampled_from(string.ascii_letters + string.digits + "_- üß表"), min_size=1, max_size=12
)
_project = st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_lowercase), _ident)
# BigQuery projects may be domain-scoped: example.com:my-project.
_domain = st.lists(
    st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_lowercase), _ident), min_size=2, max_size=3
).map(".".join)
_bq_project = st.one_of(
    _project,
    st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(string.ascii_lowercase),
        st.text("abc12-", max_size=8),
        _ident,
    ),
    st.builds(lambda d, p: f"{d}:{p}", _domain, _project),
)


def _sequence(items: list[str], kind: str) -> Any:
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return (u for u in items)  # a generator: any iterable is taken


def _display_names() -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_categories=_NO_SURROGATE), min_size=1, max_size=128)


@st.composite
def _sources(draw: Any) -> dict[str, Any]:
    if draw(st.booleans()):
        uris = draw(st.lists(gcs_uris, min_size=1, max_size=3))
        form = draw(st.sampled_from(["str", "list", "tuple", "generator"]))
        source = uris[0] if form == "str" else _sequence(uris, form)
        out = {"gcs_source": source}
        fmt = draw(st.sampled_from((None, *GCS_FORMATS)))
    else:
        out = {"bigquery_source": f"bq://{draw(_bq_project)}.{draw(_bq_part)}.{draw(_bq_table)}"}
        fmt = draw(st.sampled_from((None, "bigquery")))
    if fmt is not None:
        out["instances_format"] = fmt
    return out


@st.composite
def _destinations(draw: Any) -> dict[str, Any]:
    if draw(st.booleans()):
        out: dict[str, Any] = {"gcs_destination_prefix": draw(gcs_uris)}
        fmt = draw(st.sampled_from((None, "jsonl", "csv")))
    else:
        dataset = draw(st.one_of(st.none(), _bq_part))
        project = draw(_bq_project)
        dest = project if dataset is None else f"{project}.{dataset}"
        out = {"bigquery_destination_prefix": dest if draw(st.booleans()) else f"bq://{dest}"}
        fmt = draw(st.sampled_from((None, "bigquery")))
    if fmt is not None:
        out["predictions_format"] = fmt
    return out


@st.composite
def _machine(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine_type": draw(st.sampled_from(["n1-standard-4", "n1-highmem-8", "e2-standard-2"]))
    }
    if draw(st.booleans()):
        out["accelerator_type"] = draw(st.sampled_from(ACCELERATORS))
        if draw(st.booleans()):
            out["accelerator_count"] = draw(st.integers(1, 8))
    start = draw(st.one_of(st.none(), st.integers(1, 10)))
    if start is not None:
        out["starting_replica_count"] = start
    if draw(st.booleans()):
        out["max_replica_count"] = draw(st.integers(start or 1, 20))
    return out


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(string.ascii_lowercase, max_size=6), inner, max_size=3),
    )


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=8)),
    _containers,
    max_leaves=6,
)


@st.composite
def _model(draw: Any, project: str | None, location: str) -> dict[str, Any]:
    if draw(st.integers(0, 5)) == 0:
        return {
            "unmanaged_container_model": {
                "artifactUri": draw(gcs_uris),
                "containerSpec": {"imageUri": IMAGE},
            }
        }
    model_id = draw(_ident)
    version = draw(st.sampled_from(["", "@1", "@default"]))
    if project is None or draw(st.booleans()):
        return {"model_name": f"{model_id}{version}"}
    return {"model_name": f"projects/{project}/locations/{location}/models/{model_id}{version}"}


@st.composite
def valid_configs(draw: Any, project: str | None = None, location: str = "us-central1") -> JobConfig:
    """Configs ``create`` must accept and the service must store as given. With ``project``, model names
    are full names half the time; bare ids rely on ``bpj.init(project=)``."""
    kw: dict[str, Any] = {"job_display_name": draw(_display_names())}
    kw.update(draw(_model(project, location)))
    kw.update(draw(_sources()))
    kw.update(draw(_destinations()))
    optional: dict[str, st.SearchStrategy[Any]] = {
        "labels": st.dictionaries(label_keys, label_values, max_size=5),
        "batch_size": st.integers(1, 10_000),
        "model_parameters": st.dictionaries(
            st.text(string.ascii_lowercase, min_size=1, max_size=6), _json, max_size=3
        ),
        "encryption_spec_key_name": st.builds(
            lambda p, r, k: f"projects/{p}/locations/{location}/keyRings/{r}/cryptoKeys/{k}",
            _project,
            _ident,
            _ident,
        ),
        "service_account": st.builds(lambda a, p: f"{a}@{p}.iam.gserviceaccount.com", _ident, _project),
        "disable_container_logging": st.booleans(),
        "create_request_timeout": st.floats(1, 600),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            kw[name] = draw(strategy)
    if draw(st.booleans()):
        kw.update(draw(_machine()))
    if draw(st.booleans()):
        # Explanations need a whole spec (the model may have none to inherit): a method, and metadata with
        # the inputs to explain and exactly one output.
        kw["generate_explanation"] = True
        kw["explanation_parameters"] = {"sampledShapleyAttribution": {"pathCount": draw(st.integers(1, 50))}}
        kw["explanation_metadata"] = {"inputs": {"features": {}}, "outputs": {"prediction": {}}}
    elif draw(st.booleans()):
        kw["generate_explanation"] = False
    if draw(st.booleans()):
        cfg: dict[str, Any] = {"instanceType": draw(st.sampled_from(["object", "array"]))}
        if draw(st.booleans()):
            cfg["keyField"] = draw(_ident)
        structured = kw.get("instances_format", "jsonl") in (
            "jsonl",
            "bigquery",
            "tf-record",
            "tf-record-gzip",
        )
        if structured and draw(st.booleans()):
            cfg["includedFields" if draw(st.booleans()) else "excludedFields"] = draw(
                st.lists(_ident, min_size=1, max_size=3)
            )
        kw["instance_config"] = cfg
    return JobConfig(kw)


def _long(n: int) -> str:
    return "a" * n


# For every validated argument, values that break it: (argument, bad value, argument the error names).
INVALID: list[tuple[str, Any, str]] = [
    ("job_display_name", "", "job_display_name"),
    ("job_display_name", _long(129), "job_display_name"),
    ("job_display_name", 12, "job_display_name"),
    ("model_name", "no spaces allowed", "model_name"),
    ("model_name", "projects/p/locations/europe-west4/models/1", "model_name"),
    ("model_name", 42, "model_name"),
    ("gcs_source", "s3://bucket/x", "gcs_source"),
    ("gcs_source", [], "gcs_source"),
    ("gcs_source", ["gs://bucket/a", 5], "gcs_source"),
    ("gcs_source", b"gs://bucket/a", "gcs_source"),
    ("gcs_source", {"gs://bucket/a": 1}, "gcs_source"),
    ("bigquery_source", "bq://only.two", "bigquery_source"),
    ("bigquery_source", "project.dataset.table", "bigquery_source"),
    ("gcs_destination_prefix", "gs://", "gcs_destination_prefix"),
    ("gcs_destination_prefix", "/tmp/out", "gcs_destination_prefix"),
    ("bigquery_destination_prefix", "bq://a.b.c", "bigquery_destination_prefix"),
    ("instances_format", "parquet", "instances_format"),
    ("instances_format", "JSONL", "instances_format"),
    ("predictions_format", "avro", "predictions_format"),
    ("model_parameters", object(), "model_parameters"),
    ("machine_type", "N1 Standard", "machine_type"),
    ("machine_type", 7, "machine_type"),
    ("accelerator_type", "NOT_A_GPU", "accelerator_type"),
    ("accelerator_count", 0, "accelerator_count"),
    ("starting_replica_count", 0, "starting_replica_count"),
    ("max_replica_count", -1, "max_replica_count"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", 1.5, "batch_size"),
    ("batch_size", True, "batch_size"),
    ("generate_explanation", "yes", "generate_explanation"),
    ("explanation_parameters", {"noSuchMethod": {}}, "explanation_parameters"),
    ("labels", {"Upper": "v"}, "labels"),
    ("labels", {"k": "UPPER"}, "labels"),
    ("labels", {"1abc": "v"}, "labels"),
    ("labels", {_long(65): "v"}, "labels"),
    ("labels", {f"k{i}": "v" for i in range(65)}, "labels"),
    ("labels", "team=vision", "labels"),
    ("encryption_spec_key_name", "my-key", "encryption_spec_key_name"),
    ("service_account", "nobody", "service_account"),
    ("instance_config", {"instanceType": "matrix"}, "instance_config"),
    ("instance_config", {"includedFields": ["a"], "excludedFields": ["b"]}, "instance_config"),
    ("instance_config", {"noSuchField": 1}, "instance_config"),
    ("disable_container_logging", "no", "disable_container_logging"),
    ("create_request_timeout", 0, "create_request_timeout"),
    ("create_request_timeout", "soon", "create_request_timeout"),
    ("project", "Not A Project", "project"),
    ("location", "US Central", "location"),
    ("not_a_field", 1, "not_a_field"),
    ("state", 4, "state"),
    ("display_name", "twice", "display_name"),
]


@st.composite
def invalid_configs(draw: Any, project: str | None = None, location: str = "us-central1") -> JobConfig:
    """A valid config with exactly one argument broken (see :data:`INVALID`), or a rule between arguments
    broken (two sources, no destination, machine settings without machine_type...)."""
    kw = dict(draw(valid_configs(project, location)).kwargs)
    rule = draw(
        st.sampled_from(["value"] * 6 + ["two_sources", "no_destination", "no_model", "machine", "explain"])
    )
    if rule == "two_sources":
        kw.pop("instances_format", None)
        kw["gcs_source"], kw["bigquery_source"] = "gs://bucket/a.jsonl", "bq://p.d.t"
        return JobConfig(kw, "bigquery_source")
    if rule == "no_destination":
        for k in ("gcs_destination_prefix", "bigquery_destination_prefix"):
            kw.pop(k, None)
        return JobConfig(kw, "gcs_destination_prefix")
    if rule == "no_model":
        kw.pop("model_name", None)
        kw.pop("unmanaged_container_model", None)
        return JobConfig(kw, "model_name")
    if rule == "machine":
        for k in (
            "machine_type",
            "accelerator_type",
            "accelerator_count",
            "starting_replica_count",
            "max_replica_count",
        ):
            kw.pop(k, None)
        field = draw(
            st.sampled_from(
                ["accelerator_type", "accelerator_count", "starting_replica_count", "max_replica_count"]
            )
        )
        kw[field] = "NVIDIA_TESLA_T4" if field == "accelerator_type" else 1
        return JobConfig(kw, field)
    if rule == "explain":
        kw["generate_explanation"] = False
        kw["explanation_parameters"] = {"sampledShapleyAttribution": {"pathCount": 1}}
        return JobConfig(kw, "explanation_parameters")
    field, value, named = draw(st.sampled_from(INVALID))
    if field in ("accelerator_type", "accelerator_count", "starting_replica_count", "max_replica_count"):
        kw.setdefault("machine_type", "n1-standard-4")
        for k in ("accelerator_type", "accelerator_count", "starting_replica_count", "max_replica_count"):
            kw.pop(k, None)
        if field == "accelerator_count":
            kw["accelerator_type"] = "NVIDIA_TESLA_T4"
    if field == "explanation_parameters":
        kw["generate_explanation"] = True
    if field == "instance_config":
        kw["instances_format"] = "jsonl"
        kw.pop("bigquery_source", None)
        kw.setdefault("gcs_source", "gs://bucket/in.jsonl")
    if field == "model_name":
        kw.pop("unmanaged_container_model", None)
    if field in ("gcs_source", "bigquery_source"):
        kw.pop("gcs_source", None)
        kw.pop("bigquery_source", None)
        kw.pop("instances_format", None)
    if field in ("gcs_destination_prefix", "bigquery_destination_prefix"):
        kw.pop("gcs_destination_prefix", None)
        kw.pop("bigquery_destination_prefix", None)
        kw.pop("predictions_format", None)
    kw[field] = value
    return JobConfig(kw, named)


def job_configs(
    project: str | None = None, location: str = "us-central1", *, valid: bool | None = None
) -> st.SearchStrategy[JobConfig]:
    """Valid and invalid create() configs (``valid=True`` / ``False`` for one kind only)."""
    if valid is True:
        return valid_configs(project, location)
    if valid is False:
        return invalid_configs(project, location)
    return st.one_of(valid_configs(project, location), invalid_configs(project, location))
