"""Checks that run before any network call, and the BatchPredictionJob message a create() builds.

Every failure is a :class:`bpj.errors.UsageError` (a ValueError) whose message names the argument (and the
v1 field it fills) and says what to change. The rules are Vertex AI's documented ones; where the service is
more lenient than its documentation, bpj follows the documentation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from bpj import rules
from bpj._gen import field_behavior

INSTANCES_FORMATS = ("jsonl", "csv", "tf-record", "tf-record-gzip", "file-list", "bigquery")
PREDICTIONS_FORMATS = ("jsonl", "csv", "bigquery")
MAX_DISPLAY_NAME = 128
MAX_LABEL = 64
MAX_LABELS = 64
INSTANCE_TYPES = ("", "object", "array")

JOB_MESSAGE = "google.cloud.aiplatform.v1.BatchPredictionJob"
# Fields of v1 BatchPredictionJob the service sets and a create may not: the OUTPUT_ONLY fields of the
# google.api.field_behavior annotations in protos/, which codegen writes out as data.
OUTPUT_ONLY = field_behavior.fields_with(JOB_MESSAGE, "OUTPUT_ONLY")

# Patterns end in \Z, never $ (which matches before a final newline too).
_PROJECT = rules.PROJECT.pattern
_LOCATION = rules.LOCATION.pattern
_ID = rules.ID.pattern
_VERSION = rf"@{_ID}"
_PARENT = rf"projects/(?P<project>{_PROJECT})/locations/(?P<location>{_LOCATION})"
MODEL_NAME = re.compile(rf"^{_PARENT}/models/{_ID}(?:{_VERSION})?\Z")
MODEL_ID = re.compile(rf"^{_ID}(?:{_VERSION})?\Z")
PUBLISHER_MODEL = re.compile(
    rf"^(?:projects/{_PROJECT}/locations/{_LOCATION}/)?publishers/{_ID}/models/[A-Za-z0-9_.@-]+\Z"
)
JOB_NAME = re.compile(rf"^{_PARENT}/batchPredictionJobs/{_ID}\Z")
JOB_ID = re.compile(rf"^{_ID}\Z")
KMS_KEY = re.compile(rf"^projects/{_PROJECT}/locations/{_LOCATION}/keyRings/{_ID}/cryptoKeys/{_ID}\Z")
SERVICE_ACCOUNT = re.compile(r"^[^@\s\x00-\x1f]+@[A-Za-z0-9.-]+\Z")


fail = rules.fail


# -- names and labels ---------------------------------------------------------------------------------


def display_name(value: Any, field: str = "job_display_name") -> str:
    """Required, at most 128 characters of any Unicode."""
    rules.text(value, field)
    if not value:
        raise fail(
            field, f"a display name is required (a non-empty str of at most 128 characters), got {value!r}"
        )
    if len(value) > MAX_DISPLAY_NAME:
        raise fail(field, f"must be at most 128 characters, got {len(value)}: shorten it")
    _utf8(value, field)
    return value


def _utf8(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise fail(field, f"must be valid Unicode text (no lone surrogates), got {value!r}") from None


def _label_char(c: str) -> bool:
    if c in "_-":
        return True
    # Google's documented pattern is [\p{Ll}\p{Lo}\p{N}_-]; a character must also be its own lowercase.
    return unicodedata.category(c) in ("Ll", "Lo", "Nd", "Nl", "No") and c.isalnum() and c.lower() == c


def label_problem(text: Any, *, key: bool) -> str | None:
    """What is wrong with a label key or value under Vertex AI's rules, or None: a str of at most 64
    characters, lowercase letters (international ones allowed), digits, underscores and dashes; a key is not
    empty and starts with a lowercase letter."""
    what = "key" if key else "value"
    if not isinstance(text, str):
        return f"label {what} {text!r} must be a str"
    if len(text) > MAX_LABEL:
        return f"label {what} {text[:20]!r}... is {len(text)} characters; at most 64 are allowed"
    bad = [c for c in text if not _label_char(c)]
    if bad:
        return (
            f"label {what} {text!r} has {''.join(dict.fromkeys(bad))!r}: only lowercase letters (international "
            "ones too), digits, underscores and dashes are allowed"
        )
    if key and not text:
        return "a label key must not be empty"
    if key and unicodedata.category(text[0]) not in ("Ll", "Lo"):
        return f"label key {text!r} must start with a lowercase letter"
    return None


def labels(value: Any, field: str = "labels", *, reserved: int = 0) -> dict[str, str]:
    """A copy of ``value`` as a dict after checking every key and value; ``reserved`` labels will be added."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise fail(field, f"must be a mapping of str to str, got {type(value).__name__}")
    if len(value) + reserved > MAX_LABELS:
        extra = f" (bpj adds {reserved}: pass request_id_label=False to keep 64 of yours)" if reserved else ""
        raise fail(field, f"at most 64 labels are allowed, got {len(value)}{extra}")
    for k, v in value.items():
        problem = label_problem(k, key=True) or label_problem(v, key=False)
        if problem:
            raise fail(f"{field}[{k!r}]", problem)
    return dict(value)


def model_name(value: Any, project: str | None, location: str, field: str = "model_name") -> str:
    """A full model resource name from a full name, a bare ``id[@version]`` (with project and location
    defaults), a publisher model name, or a Model object (bpj's or the official one): its
    ``versioned_resource_name``, as the official SDK sends it, so the job runs the version the object is."""
    if not isinstance(value, str):
        value = getattr(value, "versioned_resource_name", None) or getattr(value, "resource_name", value)
    if not rules.text(value, field):
        raise fail(field, "must be a model resource name or id, got ''")
    m = MODEL_NAME.match(value)
    if m is not None:
        if m["location"] != location:
            raise fail(
                field,
                f"the model is in {m['location']} but the job would be in {location}: a job must run where its "
                f"model is; pass {rules.name_of('location', call=True)} or use a model of that location",
            )
        return value
    if PUBLISHER_MODEL.match(value):
        return value
    if MODEL_ID.match(value):
        if not project:
            raise fail(field, f"a bare model id {value!r} needs a project: {_project_advice()}")
        return f"projects/{project}/locations/{location}/models/{value}"
    raise fail(
        field,
        f"{value!r} is neither projects/{{project}}/locations/{{location}}/models/{{id}}[@version] nor a bare "
        "model id (letters, digits, _ and -, optionally @version)",
    )


def job_name(value: Any, project: str | None, location: str, field: str = "batch_prediction_job_name") -> str:
    """A full job resource name from a full name or a bare id (with project and location defaults)."""
    if not rules.text(value, field):
        raise fail(field, "must be a job resource name or id, got ''")
    if JOB_NAME.match(value):
        return value
    if JOB_ID.match(value):
        if not project:
            raise fail(field, f"a bare job id {value!r} needs a project: {_project_advice()}")
        return f"projects/{project}/locations/{location}/batchPredictionJobs/{value}"
    raise fail(
        field,
        f"{value!r} is neither projects/{{project}}/locations/{{location}}/batchPredictionJobs/{{id}} nor a "
        "bare job id",
    )


def _project_advice() -> str:
    return f"pass {rules.name_of('project', call=True)} or set a default (bpj.init(project=), BPJ_PROJECT)"


# -- sources and destinations -------------------------------------------------------------------------


def gcs_uris(value: Any, field: str = "gcs_source") -> list[str]:
    """A str, or any iterable of str (list, tuple, generator), of gs://bucket/object URIs; at least one."""
    if isinstance(value, str):
        uris = [value]
    elif isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise rules.wrong_type(field, value, "a gs:// URI or a sequence of them")
    else:
        uris = list(value)
    if not uris:
        raise fail(field, "give at least one gs:// URI")
    for i, uri in enumerate(uris):
        where = field if isinstance(value, str) else f"{field}[{i}]"
        rules.gcs(uri, where)
    return uris


def gcs_prefix(value: Any, field: str = "gcs_destination_prefix") -> str:
    return rules.gcs(value, field, what="gs://bucket[/path]")


def bigquery_source(value: Any, field: str = "bigquery_source") -> str:
    return rules.bq(value, field, table=True)


def bigquery_destination(value: Any, field: str = "bigquery_destination_prefix") -> str:
    """bq://project or bq://project.dataset; the bq:// may be left out, as the official SDK allows."""
    if isinstance(value, str) and value and not value.startswith("bq://"):
        value = f"bq://{value}"
    return rules.bq(value, field, table=False)


def formats(
    instances_format: Any, predictions_format: Any, *, bigquery_in: bool, bigquery_out: bool
) -> tuple[str, str]:
    """The formats to send. As in the official SDK, a BigQuery source or destination implies "bigquery" when
    the format was left at its default; an explicit other format with it is refused."""
    if instances_format not in INSTANCES_FORMATS:
        raise fail(
            "instances_format", f"must be one of {', '.join(INSTANCES_FORMATS)}, got {instances_format!r}"
        )
    if predictions_format not in PREDICTIONS_FORMATS:
        raise fail(
            "predictions_format",
            f"must be one of {', '.join(PREDICTIONS_FORMATS)}, got {predictions_format!r}",
        )
    if bigquery_in:
        if instances_format not in ("jsonl", "bigquery"):
            raise fail(
                "instances_format",
                f"a {rules.name_of('bigquery_source')} reads format bigquery, not {instances_format!r}",
            )
        instances_format = "bigquery"
    elif instances_format == "bigquery":
        raise fail(
            "instances_format",
            f"bigquery needs {rules.name_of('bigquery_source', call=True)}; "
            f"{rules.name_of('gcs_source')} takes the other formats",
        )
    if bigquery_out:
        if predictions_format not in ("jsonl", "bigquery"):
            raise fail(
                "predictions_format",
                f"a {rules.name_of('bigquery_destination_prefix')} writes format bigquery, "
                f"not {predictions_format!r}",
            )
        predictions_format = "bigquery"
    elif predictions_format == "bigquery":
        raise fail(
            "predictions_format",
            f"bigquery needs {rules.name_of('bigquery_destination_prefix', call=True)}; "
            f"{rules.name_of('gcs_destination_prefix')} takes jsonl or csv",
        )
    return instances_format, predictions_format


def one_of(field_a: str, a: Any, field_b: str, b: Any) -> None:
    if (a is None) == (b is None):
        both = "both were given" if a is not None else "neither was given"
        raise fail(
            (field_a, field_b),
            f"give exactly one of {rules.name_of(field_a)} and {rules.name_of(field_b)}; {both}",
        )


# -- numbers and messages -----------------------------------------------------------------------------


def positive_int(value: Any, field: str, *, zero: bool = False) -> int:
    """An int >= 1 (>= 0 with ``zero``) of an argument with no proto field (the others: rules.integer)."""
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise rules.wrong_type(field, value, f"an int >= {low}")
    if value < low:
        raise fail(field, f"must be an int >= {low}, got {value!r}")
    return value


def machine(
    machine_type: Any,
    accelerator_type: Any,
    accelerator_count: Any,
    starting_replica_count: Any,
    max_replica_count: Any,
) -> dict[str, Any] | None:
    """The dedicated_resources dict, or None for automatic resources (no machine_type)."""
    given = {
        "accelerator_type": accelerator_type,
        "accelerator_count": accelerator_count,
        "starting_replica_count": starting_replica_count,
        "max_replica_count": max_replica_count,
    }
    if machine_type is None:
        set_ = [k for k, v in given.items() if v is not None]
        if set_:
            raise fail(
                tuple(set_),
                f"only applies to dedicated resources: pass {rules.name_of('machine_type', call=True)} too "
                "(e.g. n1-standard-4)",
            )
        return None
    if not isinstance(machine_type, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", machine_type):
        raise fail("machine_type", f"must be a machine type such as 'n1-standard-4', got {machine_type!r}")
    spec: dict[str, Any] = {"machine_type": machine_type}
    if accelerator_type is not None:
        from bpj import types

        names = [v.name for v in types.AcceleratorType.DESCRIPTOR.values if v.number]
        if accelerator_type not in names:
            raise fail("accelerator_type", f"must be one of {', '.join(names)}, got {accelerator_type!r}")
        spec["accelerator_type"] = accelerator_type
        spec["accelerator_count"] = rules.integer(
            1 if accelerator_count is None else accelerator_count, "accelerator_count"
        )
    elif accelerator_count is not None:
        raise fail(
            "accelerator_count",
            f"needs {rules.name_of('accelerator_type', call=True)} (e.g. NVIDIA_TESLA_T4)",
        )
    out: dict[str, Any] = {"machine_spec": spec}
    if starting_replica_count is not None:
        out["starting_replica_count"] = rules.integer(starting_replica_count, "starting_replica_count")
    if max_replica_count is not None:
        out["max_replica_count"] = rules.integer(max_replica_count, "max_replica_count")
    if out.get("starting_replica_count", 1) > out.get(
        "max_replica_count", out.get("starting_replica_count", 1)
    ):
        raise fail("starting_replica_count", f"must not exceed {rules.name_of('max_replica_count')}")
    return out


def message(cls: Any, value: Any, field: str) -> Any:
    """A bpj message of class ``cls`` from a dict (field names or JSON names), a bpj message, or an official
    one (proto-plus or protobuf) of the same full name, converted through bytes."""
    from google.protobuf import json_format

    full = cls.DESCRIPTOR.full_name
    if isinstance(value, cls):
        return cls.FromString(value.SerializeToString())
    if isinstance(value, Mapping):
        try:
            return json_format.ParseDict(dict(value), cls())
        except (json_format.ParseError, TypeError, ValueError) as e:
            raise fail(field, f"not a valid {cls.DESCRIPTOR.name}: {e}") from None
    pb = value
    to_pb = getattr(type(value), "pb", None)
    if callable(to_pb):  # proto-plus (the official SDK's classes)
        try:
            pb = to_pb(value)
        except TypeError:
            pb = value
    descriptor = getattr(pb, "DESCRIPTOR", None)
    if getattr(descriptor, "full_name", None) == full and hasattr(pb, "SerializeToString"):
        return cls.FromString(pb.SerializeToString())
    raise fail(field, f"must be a dict or a {full} message, got {type(value).__name__}")


def instance_config(value: Any, instances_format: str) -> Any:
    from bpj import types

    cfg = message(types.BatchPredictionJob.InstanceConfig, value, "instance_config")
    if cfg.instance_type not in INSTANCE_TYPES:
        raise fail("instance_config.instance_type", f"must be 'object' or 'array', got {cfg.instance_type!r}")
    given = tuple(f"instance_config.{k}" for k in ("included_fields", "excluded_fields") if getattr(cfg, k))
    if len(given) == 2:
        raise fail(given, "set one of them, not both")
    if given and instances_format in ("csv", "file-list"):
        raise fail(
            given,
            f"need jsonl, bigquery or tf-record input ({rules.name_of('instances_format')}), "
            f"not {instances_format}",
        )
    for field in given:
        for i, name in enumerate(getattr(cfg, field.removeprefix("instance_config."))):
            if not name:
                raise fail(f"{field}[{i}]", "a field name must not be empty")
    return cfg


def settable_fields() -> list[str]:
    from bpj import types

    return [f.name for f in types.BatchPredictionJob.DESCRIPTOR.fields if f.name not in OUTPUT_ONLY]


def _unknown_argument(name: str) -> str:
    """What to say about an argument create() does not take: the nearest argument or field, if one is near
    (a misspelling), else every settable field."""
    import difflib

    arguments = [*CREATE_ARGUMENTS, "project", "location", "credentials", "sync", "create_request_timeout"]
    near_argument = difflib.get_close_matches(name, arguments, n=1, cutoff=0.6)
    if near_argument:
        return f"not an argument of create(); did you mean {rules.name_of(near_argument[0])}?"
    near_field = difflib.get_close_matches(name, settable_fields(), n=1, cutoff=0.6)
    if near_field:
        return f"not a field of BatchPredictionJob; did you mean {near_field[0]}?"
    return f"not an argument of create() nor a field of BatchPredictionJob; settable fields: {', '.join(settable_fields())}"


def set_fields(job: Any, fields: Mapping[str, Any], taken: Iterable[str]) -> None:
    """Set extra v1 BatchPredictionJob fields given by name (``**fields`` of create)."""
    known = {f.name: f for f in job.DESCRIPTOR.fields}
    unknown = sorted(k for k in fields if k not in known)
    if unknown:
        raise fail(tuple(unknown), _unknown_argument(unknown[0]))
    output_only = sorted(k for k in fields if k in OUTPUT_ONLY)
    if output_only:
        raise fail(tuple(output_only), "output only: the service sets it, a create cannot")
    clash = sorted(set(fields) & set(taken))
    if clash:
        raise fail(tuple(clash), "also set by an argument of create(): give it once")
    for k, v in fields.items():
        fd = known[k]
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            getattr(job, k).CopyFrom(message(type(getattr(job, k)), v, k))
        else:
            from google.protobuf import json_format

            try:
                json_format.ParseDict({fd.json_name: v}, job, ignore_unknown_fields=False)
            except (json_format.ParseError, TypeError, ValueError) as e:
                raise fail(k, f"cannot set it to {v!r}: {e}") from None


# -- the whole create ---------------------------------------------------------------------------------

# The arguments of BatchPredictionJob.create() that build_job() takes as they are.
CREATE_ARGUMENTS = (
    "job_display_name",
    "model_name",
    "instances_format",
    "predictions_format",
    "gcs_source",
    "bigquery_source",
    "gcs_destination_prefix",
    "bigquery_destination_prefix",
    "model_parameters",
    "machine_type",
    "accelerator_type",
    "accelerator_count",
    "starting_replica_count",
    "max_replica_count",
    "generate_explanation",
    "explanation_metadata",
    "explanation_parameters",
    "labels",
    "encryption_spec_key_name",
    "batch_size",
    "service_account",
    "instance_config",
    "unmanaged_container_model",
    "disable_container_logging",
)

# build_job's parameters shadow the checks of the same name.
_model_name = model_name
_bigquery_source = bigquery_source
_labels = labels
_instance_config = instance_config


def build_job(
    *,
    project: str | None,
    location: str,
    job_display_name: Any,
    model_name: Any,
    instances_format: Any,
    predictions_format: Any,
    gcs_source: Any,
    bigquery_source: Any,
    gcs_destination_prefix: Any,
    bigquery_destination_prefix: Any,
    model_parameters: Any,
    machine_type: Any,
    accelerator_type: Any,
    accelerator_count: Any,
    starting_replica_count: Any,
    max_replica_count: Any,
    generate_explanation: Any,
    explanation_metadata: Any,
    explanation_parameters: Any,
    labels: Any,
    encryption_spec_key_name: Any,
    batch_size: Any,
    service_account: Any,
    instance_config: Any,
    unmanaged_container_model: Any,
    disable_container_logging: Any,
    reserved_labels: int = 0,
    fields: Mapping[str, Any] | None = None,
) -> Any:
    """The v1 BatchPredictionJob for create()'s arguments, every one checked first."""
    from google.protobuf import json_format

    from bpj import types

    fields = dict(fields or {})
    job = types.BatchPredictionJob(display_name=display_name(job_display_name))
    if model_name is not None and unmanaged_container_model is not None:
        raise fail(("model_name", "unmanaged_container_model"), "give one of them, not both")
    if model_name is not None:
        job.model = _model_name(model_name, project, location)
    elif unmanaged_container_model is not None:
        job.unmanaged_container_model.CopyFrom(
            message(types.UnmanagedContainerModel, unmanaged_container_model, "unmanaged_container_model")
        )
    elif "model" not in fields and "unmanaged_container_model" not in fields:
        raise fail(
            "model_name",
            f"a model is required: pass {rules.name_of('model_name', call=True)} "
            f"(or {rules.name_of('unmanaged_container_model', call=True)})",
        )

    custom_io = {"input_config", "output_config"} & set(fields)
    if "input_config" not in custom_io:
        one_of("gcs_source", gcs_source, "bigquery_source", bigquery_source)
    if "output_config" not in custom_io:
        one_of(
            "gcs_destination_prefix",
            gcs_destination_prefix,
            "bigquery_destination_prefix",
            bigquery_destination_prefix,
        )
    ins, outs = formats(
        instances_format,
        predictions_format,
        bigquery_in=bigquery_source is not None,
        bigquery_out=bigquery_destination_prefix is not None,
    )
    if gcs_source is not None:
        job.input_config.gcs_source.uris.extend(gcs_uris(gcs_source))
        job.input_config.instances_format = ins
    elif bigquery_source is not None:
        job.input_config.bigquery_source.input_uri = _bigquery_source(bigquery_source)
        job.input_config.instances_format = ins
    if gcs_destination_prefix is not None:
        job.output_config.gcs_destination.output_uri_prefix = gcs_prefix(gcs_destination_prefix)
        job.output_config.predictions_format = outs
    elif bigquery_destination_prefix is not None:
        job.output_config.bigquery_destination.output_uri = bigquery_destination(bigquery_destination_prefix)
        job.output_config.predictions_format = outs

    if model_parameters is not None:
        parsed = type(job.model_parameters)()
        try:
            json_format.ParseDict(model_parameters, parsed)
        except (json_format.ParseError, TypeError, ValueError) as e:
            raise fail(
                "model_parameters", f"must be JSON-like (dict, list, str, number, bool, None): {e}"
            ) from None
        if model_parameters:  # as the official SDK: an empty one is not sent
            job.model_parameters.CopyFrom(parsed)
    resources = machine(
        machine_type, accelerator_type, accelerator_count, starting_replica_count, max_replica_count
    )
    if resources is not None:
        job.dedicated_resources.CopyFrom(json_format.ParseDict(resources, types.BatchDedicatedResources()))
        job.manual_batch_tuning_parameters.SetInParent()  # as the official SDK sends it with a machine_type
    if batch_size is not None:
        job.manual_batch_tuning_parameters.batch_size = rules.integer(batch_size, "batch_size")
    job.generate_explanation = rules.flag(generate_explanation, "generate_explanation")
    if explanation_metadata is not None or explanation_parameters is not None:
        if not generate_explanation:
            raise fail(
                ("explanation_metadata", "explanation_parameters"),
                f"only apply together with {rules.name_of('generate_explanation')}",
            )
        if explanation_metadata is not None:
            job.explanation_spec.metadata.CopyFrom(
                message(types.ExplanationMetadata, explanation_metadata, "explanation_metadata")
            )
        if explanation_parameters is not None:
            job.explanation_spec.parameters.CopyFrom(
                message(types.ExplanationParameters, explanation_parameters, "explanation_parameters")
            )
    job.labels.update(_labels(labels, reserved=reserved_labels))
    if encryption_spec_key_name is not None:
        if not KMS_KEY.match(rules.text(encryption_spec_key_name, "encryption_spec_key_name")):
            raise fail(
                "encryption_spec_key_name",
                "must be projects/{p}/locations/{l}/keyRings/{ring}/cryptoKeys/{key}, "
                f"got {encryption_spec_key_name!r}",
            )
        job.encryption_spec.kms_key_name = encryption_spec_key_name
    if service_account is not None:
        if not SERVICE_ACCOUNT.match(rules.text(service_account, "service_account")):
            raise fail("service_account", f"must be a service account email, got {service_account!r}")
        job.service_account = service_account
    if instance_config is not None:
        job.instance_config.CopyFrom(_instance_config(instance_config, ins))
    job.disable_container_logging = rules.flag(disable_container_logging, "disable_container_logging")

    if fields:
        set_fields(job, fields, {fd.name for fd, _ in job.ListFields()})
    if custom_io:
        check_io(job)
    return job


def check_io(job: Any) -> None:
    """The source and destination rules, on a message whose input/output config came in whole."""
    ic, oc = job.input_config, job.output_config
    src = ic.WhichOneof("source")
    if src is None:
        raise fail("input_config", "set gcs_source or bigquery_source")
    if src == "gcs_source":
        gcs_uris(list(ic.gcs_source.uris), "input_config.gcs_source.uris")
    else:
        bigquery_source(ic.bigquery_source.input_uri, "input_config.bigquery_source.input_uri")
    dest = oc.WhichOneof("destination")
    if dest is None:
        raise fail("output_config", "set gcs_destination or bigquery_destination")
    if dest == "gcs_destination":
        gcs_prefix(oc.gcs_destination.output_uri_prefix, "output_config.gcs_destination.output_uri_prefix")
    else:
        bigquery_destination(
            oc.bigquery_destination.output_uri, "output_config.bigquery_destination.output_uri"
        )
    if job.labels:
        labels(dict(job.labels))
    formats(
        ic.instances_format,
        oc.predictions_format,
        bigquery_in=src == "bigquery_source",
        bigquery_out=dest == "bigquery_destination",
    )
