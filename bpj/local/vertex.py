"""The Vertex emulator's services: JobService (batch prediction), ModelService and Operations.

Resource names, output-only fields, timestamps, long-running operations and validation errors follow what
Vertex AI returns. Jobs run in the executor; this module only records them and tells it to start or stop.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bpj import errors, types
from bpj._gen.services.job_service import JobServiceServicer
from bpj._gen.services.model_service import ModelServiceServicer
from bpj._gen.services.operations import OperationsServicer
from bpj.local.checks import (
    PUBLISHER_URI_RULES,
    URI_RULES,
    FieldErrors,
    check_servable,
    check_uris,
    check_values,
)
from bpj.local.filters import compile_filter, compile_order
from bpj.local.store import Store
from bpj.transport.http_rules import is_repeated
from bpj.validation import (
    INSTANCES_FORMATS,
    OUTPUT_ONLY,
    PREDICTIONS_FORMATS,
    label_problem,
)

S = types.JobState
TERMINAL = frozenset(
    {
        S.JOB_STATE_SUCCEEDED,
        S.JOB_STATE_FAILED,
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_EXPIRED,
        S.JOB_STATE_PARTIALLY_SUCCEEDED,
    }
)
_PARENT = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)$")
DEFAULT_PAGE, MAX_PAGE = 100, 1000


def new_id() -> str:
    """A resource id shaped like Vertex AI's: a large decimal number (never from the seedable global random,
    which tests and users reseed)."""
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def now() -> types.Timestamp:
    t = types.Timestamp()
    t.FromNanoseconds(time.time_ns())
    return t


def find_model(store: Store, name: str) -> Any:
    """The Model a name stands for: ``models/{id}`` its default version, ``models/{id}@{version id or
    alias}`` that version. The default version is stored as kind ``model`` (what Get and List see), every
    other version as ``model_version`` under ``{name}@{version_id}``."""
    base, _, version = name.partition("@")
    default = store.get("model", base, types.Model)
    if default is not None:
        if version in ("", default.version_id, *default.version_aliases):
            return default
        for other in store.children("model_version", base, types.Model):
            if version in (other.version_id, *other.version_aliases):
                return other
    raise errors.NotFound(f"The Model {name!r} does not exist.")


def check_parent(parent: str, what: str = "parent") -> re.Match[str]:
    m = _PARENT.match(parent)
    if m is None:
        raise errors.InvalidArgument(
            f"{what} must be projects/{{project}}/locations/{{location}}, got {parent!r}"
        )
    return m


def validate_labels(labels: Any, field: str, problems: FieldErrors) -> None:
    if len(labels) > 64:
        problems.add(field, "A resource can have at most 64 labels.")
    for key, value in labels.items():
        for problem in (label_problem(key, key=True), label_problem(value, key=False)):
            if problem:
                problems.add(f"{field}[{key!r}]", problem)


def page(items: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
    if page_size < 0:
        raise errors.InvalidArgument("page_size must not be negative")
    size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
    try:
        start = int(base64.urlsafe_b64decode(page_token.encode()).decode()) if page_token else 0
    except ValueError:
        raise errors.InvalidArgument(f"page_token {page_token!r} is not one this server gave") from None
    chunk = items[start : start + size]
    more = start + size < len(items)
    return chunk, base64.urlsafe_b64encode(str(start + size).encode()).decode() if more else ""


def field_value(resource: Any, path: str) -> Any:
    """What a filter or order_by sees of a field: enum names, datetimes, label maps."""
    head, _, rest = path.partition(".")
    if head == "labels":
        return dict(resource.labels) if not rest else resource.labels.get(rest)
    if head not in resource.DESCRIPTOR.fields_by_name:
        raise errors.InvalidArgument(f"Unsupported filter field {path!r}")
    value = getattr(resource, head)
    fd = resource.DESCRIPTOR.fields_by_name[head]
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[value].name
    if fd.message_type is not None and fd.message_type.full_name == "google.protobuf.Timestamp":
        return datetime.fromtimestamp(value.seconds + value.nanos / 1e9, tz=timezone.utc)
    return value


def apply_read_mask(resource: Any, mask: Any) -> Any:
    if not mask.paths:
        return resource
    out = type(resource)()
    out.name = resource.name
    for path in mask.paths:
        head = path.split(".", 1)[0]
        if head not in resource.DESCRIPTOR.fields_by_name:
            raise errors.InvalidArgument(
                f"read_mask path {path!r} is not a field of {resource.DESCRIPTOR.name}"
            )
        fd = resource.DESCRIPTOR.fields_by_name[head]
        repeated = is_repeated(fd)
        if fd.message_type is not None and not repeated:
            if resource.HasField(head):
                getattr(out, head).CopyFrom(getattr(resource, head))
        elif repeated:
            target = getattr(out, head)
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                target.update(getattr(resource, head))
            else:
                target.extend(getattr(resource, head))
        else:
            setattr(out, head, getattr(resource, head))
    return out


def operation(name: str, metadata: Any, response: Any | None = None, error: Any | None = None) -> Any:
    op = types.Operation(name=name, done=response is not None or error is not None)
    op.metadata.Pack(metadata)
    if response is not None:
        op.response.Pack(response)
    if error is not None:
        op.error.CopyFrom(error)
    return op


def generic_metadata() -> Any:
    t = now()
    return types.GenericOperationMetadata(create_time=t, update_time=t)


class Vertex:
    """The emulator's state and its link to the executor; the three servicers share one."""

    def __init__(
        self,
        store: Store,
        start: Callable[[str], None],
        stop: Callable[[str], None],
        check_model: Callable[[Any], None] | None = None,
    ) -> None:
        self.store = store
        self.start = start
        self.stop = stop
        # Called with each uploaded Model before it is stored; raises to refuse it (the local stack checks
        # that its artifact_uri holds what its container loads, as Vertex AI does at upload).
        self.check_model = check_model
        # Model uploads and deletions read, then write, several records: one at a time.
        self.lock = threading.Lock()

    def job(self, name: str) -> Any:
        job = self.store.get("job", name, types.BatchPredictionJob)
        if job is None:
            raise errors.NotFound(f"BatchPredictionJob {name} does not exist.")
        return job

    def model(self, name: str) -> Any:
        return find_model(self.store, name)

    def save_operation(self, op: Any, parent: str) -> Any:
        self.store.put("operation", op.name, parent, time.time_ns(), op)
        return op


def validate_job(job: Any, parent: re.Match[str]) -> None:
    p = FieldErrors()
    f = "batch_prediction_job"
    if not job.display_name:
        p.add(f"{f}.display_name", "Required field is not set.")
    elif len(job.display_name) > 128:
        p.add(f"{f}.display_name", "The display name must be at most 128 characters.")
    if bool(job.model) == job.HasField("unmanaged_container_model"):
        p.add(f"{f}.model", "Exactly one of model and unmanaged_container_model must be set.")
    if job.model and _is_publisher(job.model):
        validate_publisher_job(job, parent, f, p)
    elif job.model:
        m = re.match(r"^projects/([^/]+)/locations/([^/]+)/models/[^/@]+(@[\w-]+)?$", job.model)
        if m is None:
            p.add(f"{f}.model", f"Invalid Model resource name {job.model!r}.")
        elif m.group(2) != parent["location"]:
            p.add(f"{f}.model", f"The Model must be in location {parent['location']}, the job's location.")
    ic = job.input_config
    if not job.HasField("input_config"):
        p.add(f"{f}.input_config", "Required field is not set.")
    else:
        if ic.instances_format not in INSTANCES_FORMATS:
            p.add(f"{f}.input_config.instances_format", f"Must be one of {', '.join(INSTANCES_FORMATS)}.")
        source = ic.WhichOneof("source")
        if source is None:
            p.add(f"{f}.input_config.source", "Exactly one of gcs_source and bigquery_source must be set.")
        elif source == "gcs_source":
            if not ic.gcs_source.uris:
                p.add(f"{f}.input_config.gcs_source.uris", "At least one gs:// URI is required.")
            if ic.instances_format == "bigquery":
                p.add(f"{f}.input_config.instances_format", "bigquery needs a bigquery_source.")
        elif source == "bigquery_source":
            if not ic.bigquery_source.input_uri:
                p.add(f"{f}.input_config.bigquery_source.input_uri", "Must be bq://project.dataset.table.")
            if ic.instances_format != "bigquery":
                p.add(
                    f"{f}.input_config.instances_format", "A bigquery_source needs instances_format bigquery."
                )
        else:
            p.add(f"{f}.input_config.source", f"{source} is not supported by the local stack.")
    oc = job.output_config
    if not job.HasField("output_config"):
        p.add(f"{f}.output_config", "Required field is not set.")
    else:
        dest = oc.WhichOneof("destination")
        if dest == "gcs_destination":
            if not oc.gcs_destination.output_uri_prefix:
                p.add(f"{f}.output_config.gcs_destination.output_uri_prefix", "Must be a gs:// URI.")
            if oc.predictions_format not in ("jsonl", "csv"):
                p.add(f"{f}.output_config.predictions_format", "A gcs_destination takes jsonl or csv.")
        elif dest == "bigquery_destination":
            if not oc.bigquery_destination.output_uri:
                p.add(
                    f"{f}.output_config.bigquery_destination.output_uri",
                    "Must be bq://project or bq://project.dataset.",
                )
            if oc.predictions_format != "bigquery":
                p.add(f"{f}.output_config.predictions_format", "A bigquery_destination takes bigquery.")
        else:
            p.add(
                f"{f}.output_config.destination",
                "Exactly one of gcs_destination and bigquery_destination must be set.",
            )
    inst = job.instance_config
    if inst.included_fields and inst.excluded_fields:
        p.add(f"{f}.instance_config", "Only one of included_fields and excluded_fields can be set.")
    if inst.instance_type not in ("", "object", "array"):
        p.add(f"{f}.instance_config.instance_type", "Must be object or array.")
    if job.manual_batch_tuning_parameters.batch_size < 0:
        p.add(f"{f}.manual_batch_tuning_parameters.batch_size", "Must not be negative.")
    validate_labels(job.labels, f"{f}.labels", p)
    check_stored(job, f, p, PUBLISHER_URI_RULES if job.model and _is_publisher(job.model) else URI_RULES)
    p.raise_if_any()


def _is_publisher(name: str) -> bool:
    from bpj.local.publisher import is_publisher

    return is_publisher(name)


def validate_publisher_job(job: Any, parent: re.Match[str], f: str, p: FieldErrors) -> None:
    """A publisher model (``publishers/google/models/gemini-2.0-flash-001``, or under ``projects/{p}/locations/
    {l}/``) in the job's location, and the formats Vertex AI takes for it (bpj.local.publisher_job)."""
    from bpj.local.publisher import format_problems, parse_model

    model = parse_model(job.model)
    if model is not None and model.location is not None and model.location != parent["location"]:
        p.add(
            f"{f}.model", f"The publisher model must be in location {parent['location']}, the job's location."
        )
    for field, problem in format_problems(job):
        p.add(f"{f}.{field}", problem)


def check_explanations(store: Store, job: Any) -> None:
    """generate_explanation and explanation_spec as the job would run them (bpj.local.explain)."""
    if not job.generate_explanation and not job.HasField("explanation_spec"):
        return
    from bpj.local.explain import job_problems

    model = None
    if job.model:
        with contextlib.suppress(errors.ApiError):  # no such model: the job fails when it runs
            model = find_model(store, job.model)
    p = FieldErrors()
    for field, message in job_problems(job, model):
        p.add(field, message)
    p.raise_if_any()


def check_explanation_spec(model: Any, p: FieldErrors) -> None:
    """The ranges of an uploaded model's explanation_spec (bpj.local.explain)."""
    if model.HasField("explanation_spec"):
        from bpj.local.explain import spec_problems

        for field, message in spec_problems(model.explanation_spec, "model.explanation_spec", running=False):
            p.add(field, message)


def check_stored(
    message: Any, field: str, problems: FieldErrors, uri_rules: dict[Any, str | None] = URI_RULES
) -> None:
    """Every URI field of what is about to be stored, every Value in it, and that REST can serve it back."""
    check_uris(message, field, problems, uri_rules)
    check_values(message, field, problems)
    if not problems.items:
        check_servable(message, field, problems)


class Jobs(JobServiceServicer):
    def __init__(self, vertex: Vertex) -> None:
        self.v = vertex

    def CreateBatchPredictionJob(self, request: Any, context: Any) -> Any:
        parent = check_parent(request.parent)
        job = types.BatchPredictionJob()
        job.CopyFrom(request.batch_prediction_job)
        for field in OUTPUT_ONLY:
            job.ClearField(field)
        validate_job(job, parent)
        check_explanations(self.v.store, job)
        job.name = f"{request.parent}/batchPredictionJobs/{new_id()}"
        job.state = S.JOB_STATE_PENDING
        job.create_time.CopyFrom(now())
        job.update_time.CopyFrom(job.create_time)
        if job.model and not _is_publisher(job.model):
            with contextlib.suppress(errors.NotFound):  # the job fails when it runs, as on Vertex AI
                job.model_version_id = find_model(self.v.store, job.model).version_id
        self.v.store.insert("job", job.name, request.parent, job.create_time.ToNanoseconds(), job)
        self.v.start(job.name)
        return job

    def GetBatchPredictionJob(self, request: Any, context: Any) -> Any:
        return self.v.job(request.name)

    def ListBatchPredictionJobs(self, request: Any, context: Any) -> Any:
        check_parent(request.parent)
        matches = compile_filter(request.filter, field_value)
        jobs = [
            j for j in self.v.store.children("job", request.parent, types.BatchPredictionJob) if matches(j)
        ]
        chunk, token = page(jobs, request.page_size, request.page_token)
        return types.ListBatchPredictionJobsResponse(
            batch_prediction_jobs=[apply_read_mask(j, request.read_mask) for j in chunk],
            next_page_token=token,
        )

    def CancelBatchPredictionJob(self, request: Any, context: Any) -> Any:
        def cancel(job: Any) -> None:
            if job.state in TERMINAL:
                raise errors.FailedPrecondition(
                    f"BatchPredictionJob {job.name} is in state {S.Name(job.state)} and cannot be cancelled."
                )
            if job.state != S.JOB_STATE_CANCELLING:
                job.state = S.JOB_STATE_CANCELLING
                job.update_time.CopyFrom(now())

        self.v.job(request.name)
        self.v.store.update("job", request.name, types.BatchPredictionJob, cancel)
        self.v.stop(request.name)
        return types.Empty()

    def DeleteBatchPredictionJob(self, request: Any, context: Any) -> Any:
        job = self.v.job(request.name)
        if job.state not in TERMINAL and job.state != S.JOB_STATE_PENDING:
            raise errors.FailedPrecondition(
                f"BatchPredictionJob {job.name} is in state {S.Name(job.state)}; cancel it before deleting it."
            )
        if job.state == S.JOB_STATE_PENDING:
            self.v.stop(job.name)
        self.v.store.delete("job", job.name)
        parent = job.name.rsplit("/batchPredictionJobs/", 1)[0]
        op = operation(
            f"{parent}/operations/{new_id()}",
            types.DeleteOperationMetadata(generic_metadata=generic_metadata()),
            types.Empty(),
        )
        return self.v.save_operation(op, parent)


_MODEL_ORDER = ("display_name", "create_time", "update_time")


class Models(ModelServiceServicer):
    def __init__(self, vertex: Vertex) -> None:
        self.v = vertex

    def UploadModel(self, request: Any, context: Any) -> Any:
        parent = request.parent
        check_parent(parent)
        p = FieldErrors()
        if not request.model.display_name:
            p.add("model.display_name", "Required field is not set.")
        if not request.model.container_spec.image_uri:
            p.add("model.container_spec.image_uri", "Required field is not set.")
        if request.model_id and not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", request.model_id):
            p.add(
                "model_id",
                "Must be up to 63 lowercase letters, digits and dashes, starting with a letter or digit.",
            )
        if request.parent_model and (
            request.parent_model.rsplit("/models/", 1)[0] != parent or "@" in request.parent_model
        ):
            p.add("parent_model", f"Must be a model of {parent}, without a version.")
        if request.parent_model and request.model_id:
            p.add("model_id", "Cannot be set with parent_model: a new version keeps its model's id.")
        validate_labels(request.model.labels, "model.labels", p)
        check_explanation_spec(request.model, p)
        check_stored(request.model, "model", p)
        p.raise_if_any()
        if self.v.check_model is not None:
            self.v.check_model(request.model)
        model = types.Model()
        model.CopyFrom(request.model)
        t = now()
        for field in ("update_time", "version_create_time", "version_update_time"):
            getattr(model, field).CopyFrom(t)
        model.etag = base64.b64encode(secrets.token_bytes(9)).decode()
        del model.supported_input_storage_formats[:]
        model.supported_input_storage_formats.extend(INSTANCES_FORMATS)
        del model.supported_output_storage_formats[:]
        model.supported_output_storage_formats.extend(PREDICTIONS_FORMATS)
        with self.v.lock:
            if request.parent_model:
                self._add_version(model, request.parent_model)
            else:
                model.name = f"{parent}/models/{request.model_id or new_id()}"
                model.version_id = "1"
                model.create_time.CopyFrom(t)
                aliases = [a for a in model.version_aliases if a != "default"]
                del model.version_aliases[:]
                model.version_aliases.extend(["default", *aliases])
                self.v.store.insert("model", model.name, parent, t.ToNanoseconds(), model)
        op = operation(
            f"{model.name}/operations/{new_id()}",
            types.UploadModelOperationMetadata(generic_metadata=generic_metadata()),
            types.UploadModelResponse(model=model.name, model_version_id=model.version_id),
        )
        return self.v.save_operation(op, parent)

    def _add_version(self, model: Any, base: str) -> None:
        """Store ``model`` as the next version of ``base``; the default version when it asks for the
        ``default`` alias (the previous default then keeps its other aliases)."""
        default = self.v.store.get("model", base, types.Model)
        if default is None:
            raise errors.NotFound(f"The parent model {base!r} does not exist.")
        others = self.v.store.children("model_version", base, types.Model)
        taken = {a for m in (default, *others) for a in m.version_aliases if a != "default"}
        clash = sorted(set(model.version_aliases) & taken)
        if clash:
            p = FieldErrors()
            p.add(
                "model.version_aliases", f"Alias {clash[0]!r} is already used by another version of {base}."
            )
            p.raise_if_any()
        model.name = base
        model.version_id = str(1 + max(int(m.version_id) for m in (default, *others)))
        model.create_time.CopyFrom(default.create_time)
        stamp = model.version_create_time.ToNanoseconds()
        if "default" not in model.version_aliases:
            self.v.store.insert("model_version", f"{base}@{model.version_id}", base, stamp, model)
            return
        aliases = [a for a in default.version_aliases if a != "default"]
        del default.version_aliases[:]
        default.version_aliases.extend(aliases)
        self.v.store.insert(
            "model_version",
            f"{base}@{default.version_id}",
            base,
            default.version_create_time.ToNanoseconds(),
            default,
        )
        parent = base.rsplit("/models/", 1)[0]
        self.v.store.put("model", base, parent, model.create_time.ToNanoseconds(), model)

    def GetModel(self, request: Any, context: Any) -> Any:
        return self.v.model(request.name)

    def ListModels(self, request: Any, context: Any) -> Any:
        check_parent(request.parent)
        matches = compile_filter(request.filter, field_value)
        models = [m for m in self.v.store.children("model", request.parent, types.Model) if matches(m)]
        if request.order_by:
            models = compile_order(request.order_by, field_value, _MODEL_ORDER)(models)
        chunk, token = page(models, request.page_size, request.page_token)
        return types.ListModelsResponse(
            models=[apply_read_mask(m, request.read_mask) for m in chunk], next_page_token=token
        )

    def DeleteModel(self, request: Any, context: Any) -> Any:
        model = self.v.model(request.name)
        with self.v.lock:
            others = self.v.store.children("model_version", model.name, types.Model)
            if "@" not in request.name:  # the model: every version of it
                for other in others:
                    self.v.store.delete("model_version", f"{model.name}@{other.version_id}")
                self.v.store.delete("model", model.name)
            elif "default" in model.version_aliases:
                if others:
                    raise errors.FailedPrecondition(
                        f"Version {model.version_id} is the default version of {model.name}: make another "
                        "version the default first, or delete the model."
                    )
                self.v.store.delete("model", model.name)
            else:
                self.v.store.delete("model_version", f"{model.name}@{model.version_id}")
        parent = model.name.rsplit("/models/", 1)[0]
        op = operation(
            f"{parent}/operations/{new_id()}",
            types.DeleteOperationMetadata(generic_metadata=generic_metadata()),
            types.Empty(),
        )
        return self.v.save_operation(op, parent)


class Operations(OperationsServicer):
    """Operations finish before they are returned here, so Wait and Cancel have nothing to wait for."""

    def __init__(self, vertex: Vertex) -> None:
        self.v = vertex

    def _op(self, name: str) -> Any:
        op = self.v.store.get("operation", name, types.Operation)
        if op is None:
            raise errors.NotFound(f"Operation {name} does not exist.")
        return op

    def GetOperation(self, request: Any, context: Any) -> Any:
        return self._op(request.name)

    def ListOperations(self, request: Any, context: Any) -> Any:
        ops = self.v.store.children("operation", request.name, types.Operation)
        chunk, token = page(ops, request.page_size, request.page_token)
        return types.ListOperationsResponse(operations=chunk, next_page_token=token)

    def DeleteOperation(self, request: Any, context: Any) -> Any:
        self._op(request.name)
        self.v.store.delete("operation", request.name)
        return types.Empty()

    def CancelOperation(self, request: Any, context: Any) -> Any:
        self._op(request.name)
        return types.Empty()

    def WaitOperation(self, request: Any, context: Any) -> Any:
        return self._op(request.name)
