"""``BatchPredictionJob``: the official SDK's class and signatures, on bpj's shared transports.

    import bpj
    from bpj.jobs import BatchPredictionJob

    bpj.init(project="my-project", location="us-central1")
    job = BatchPredictionJob.submit(job_display_name="nightly", model_name="123",
                                    gcs_source="gs://in/*.jsonl", gcs_destination_prefix="gs://out/")
    job.wait(timeout=3600)                       # JobFailed / JobCancelled / JobExpired / WaitTimeout
    for blob in job.iter_outputs(): ...

What differs from the official class, on purpose:

- No hidden RPCs. Only ``state`` (and ``done()``) refresh, with one Get, and only while the job is not in a
  terminal state (a terminal state never changes). Every other property reads the resource as of the last
  Get, List, create, ``refresh()`` or ``wait()``.
- ``create(sync=False)`` / ``submit()`` return once the job exists on the server: no background thread, so a
  process that exits right after loses nothing.
- Safe create. CreateBatchPredictionJob has no request id, so each create carries the label
  ``bpj_request_id=<uuid4 hex>`` (``request_id_label=False`` leaves it out). After an ambiguous failure
  (DEADLINE_EXCEEDED or UNAVAILABLE: the server may have made the job before the reply was lost) bpj lists
  jobs with that label before it sends the create again, at most ``CREATE_ATTEMPTS`` times in all; the create
  RPC itself is never retried blindly. Give the label yourself (``labels={"bpj_request_id": key}``) to make
  the key survive your process: bpj then looks it up before the first create too.
- ``wait()`` stops on every terminal state (the table is :mod:`bpj.states`) and raises a typed error unless
  the job SUCCEEDED or PARTIALLY_SUCCEEDED.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

from bpj import clients, config, errors, rules, states, steps, validation
from bpj._log import logger
from bpj.lro import wait_operation
from bpj.states import JobCancelled, JobExpired, JobFailed, WaitTimeout
from bpj.steps import REQUEST_ID_LABEL, messages

if TYPE_CHECKING:
    from bpj import types
    from bpj._gen.services.job_service import JobServiceClient
    from bpj.outputs.bigquery import BigQueryReader
    from bpj.outputs.gcs import GcsReader

__all__ = ["BatchPredictionJob", "JobCancelled", "JobExpired", "JobFailed", "WaitTimeout"]

log = logger()

# The server's own order for ListBatchPredictionJobs (the v1 request has no order_by field).
SERVER_ORDER = "create_time desc"
SORTABLE = ("name", "display_name", "state", "create_time", "start_time", "end_time", "update_time")
_NAME = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/")


def _time(ts: Any) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


class CreatePlan(NamedTuple):
    """What a create sends, decided before any call: the settings it uses, the request, the request id
    stamped on it (None without the label) and whether the id is the caller's (looked up before the first
    create)."""

    settings: config.Settings
    request: Any
    request_id: str | None
    lookup_first: bool


def plan_create(arguments: Mapping[str, Any]) -> CreatePlan:
    """Check ``BatchPredictionJob.create``'s arguments (its parameters by name, ``fields`` for the rest)
    and build the CreateBatchPredictionJobRequest it sends. Pure: no RPC."""
    monitoring = (
        "model_monitoring_objective_config",
        "model_monitoring_alert_config",
        "analysis_instance_schema_uri",
    )
    given = [k for k in monitoring if arguments.get(k) is not None]
    if given:
        raise validation.fail(tuple(given), "model monitoring is a v1beta1 feature bpj does not speak")
    rules.flag(arguments["sync"], "sync")
    rules.timeout(arguments["create_request_timeout"], "create_request_timeout")
    if arguments["job_display_name"] is None:
        arguments = {**arguments, "job_display_name": default_display_name()}
    s = config.settings(
        project=arguments["project"], location=arguments["location"], credentials=arguments["credentials"]
    )
    parent = s.parent
    labels = arguments["labels"]
    user_key = labels.get(REQUEST_ID_LABEL) if isinstance(labels, Mapping) else None
    add_label = bool(arguments["request_id_label"]) and user_key is None
    # Left out here, they default to bpj.init()'s, as in the official SDK.
    defaults = {"encryption_spec_key_name": s.encryption_spec_key_name, "service_account": s.service_account}
    values = {k: arguments[k] for k in validation.CREATE_ARGUMENTS}
    values.update({k: v for k, v in defaults.items() if values[k] is None and v is not None})
    job = validation.build_job(
        project=s.project,
        location=s.location,
        reserved_labels=1 if add_label else 0,
        fields=arguments["fields"],
        **values,
    )
    request_id = user_key
    if add_label:
        request_id = uuid.uuid4().hex
        job.labels[REQUEST_ID_LABEL] = request_id
    request = messages().CreateBatchPredictionJobRequest(parent=parent, batch_prediction_job=job)
    return CreatePlan(s, request, request_id, bool(user_key))


def default_display_name() -> str:
    """The name a job gets when none is given: the official SDK's, ``BatchPredictionJob <local time>``."""
    return f"BatchPredictionJob {datetime.now().isoformat(sep=' ')}"


def check_create(**arguments: Any) -> CreatePlan:
    """:func:`plan_create` for ``BatchPredictionJob.create``'s keyword arguments, its defaults for the rest
    (what the CLI checks before it connects)."""
    import inspect

    bound = inspect.signature(BatchPredictionJob.create).bind(**arguments)
    bound.apply_defaults()
    return plan_create(bound.arguments)


class BatchPredictionJob:
    """A Vertex AI batch prediction job. ``BatchPredictionJob(name_or_id)`` retrieves one (one Get)."""

    # Seconds between polls in wait(): the first, and the cap it grows to (x1.5 a poll, with jitter).
    poll_interval = 1.0
    max_poll_interval = 30.0

    def __init__(
        self,
        batch_prediction_job_name: str,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
    ) -> None:
        s = config.settings(project=project, location=location, credentials=credentials)
        name = validation.job_name(batch_prediction_job_name, s.project, s.location)
        self._overrides = _overrides(name, credentials)
        self._resource = self._client().get_batch_prediction_job(
            messages().GetBatchPredictionJobRequest(name=name)
        )

    @classmethod
    def from_resource(cls, resource: Any, *, credentials: Any = None) -> BatchPredictionJob:
        """A job object for a BatchPredictionJob message already in hand (no RPC)."""
        job = cls.__new__(cls)
        job._overrides = _overrides(resource.name, credentials)
        job._resource = resource
        return job

    def _client(self) -> Any:
        return clients.job_service(**self._overrides)

    # -- create -------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        job_display_name: str | None,
        model_name: Any = None,
        instances_format: str = "jsonl",
        predictions_format: str = "jsonl",
        gcs_source: Any = None,
        bigquery_source: str | None = None,
        gcs_destination_prefix: str | None = None,
        bigquery_destination_prefix: str | None = None,
        model_parameters: Any = None,
        machine_type: str | None = None,
        accelerator_type: str | None = None,
        accelerator_count: int | None = None,
        starting_replica_count: int | None = None,
        max_replica_count: int | None = None,
        generate_explanation: bool = False,
        explanation_metadata: Any = None,
        explanation_parameters: Any = None,
        labels: Mapping[str, str] | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        encryption_spec_key_name: str | None = None,
        sync: bool = True,
        create_request_timeout: float | None = None,
        batch_size: int | None = None,
        model_monitoring_objective_config: Any = None,
        model_monitoring_alert_config: Any = None,
        analysis_instance_schema_uri: str | None = None,
        service_account: str | None = None,
        *,
        instance_config: Any = None,
        unmanaged_container_model: Any = None,
        disable_container_logging: bool = False,
        request_id_label: bool = True,
        **fields: Any,
    ) -> BatchPredictionJob:
        """Create a batch prediction job; with ``sync=True`` (the default) wait until it ends (see wait()).

        The parameters are the official ``aiplatform.BatchPredictionJob.create``'s, in its order, plus
        ``instance_config``, ``unmanaged_container_model`` and ``disable_container_logging`` (dicts or
        ``bpj.types`` messages; official messages are converted), and ``**fields``: any other settable field
        of the v1 BatchPredictionJob by name (e.g. ``dedicated_resources={...}``). Everything is checked
        before any network call (``bpj.errors.UsageError`` naming the argument). The model monitoring
        parameters belong to the v1beta1 API and are refused. ``request_id_label``: see the module docstring.
        """
        plan = plan_create(dict(locals()))
        # The settings plan_create resolved, not a second lookup: this is the hot path of submit_many.
        transport = config.transport_for(plan.settings.vertex_endpoint, plan.settings)
        created = steps.run(
            steps.create_job(
                plan.request, create_request_timeout, plan.request_id, lookup_first=plan.lookup_first
            ),
            steps.one(clients.job_service(transport=transport)),
        )
        out = cls.from_resource(created, credentials=credentials)
        log.info("created batch prediction job %s (%s)", out.resource_name, out.display_name)
        if sync:
            out.wait()
        return out

    @classmethod
    def submit(cls, *args: Any, **kwargs: Any) -> BatchPredictionJob:
        """``create(..., sync=False)``: the same parameters; returns as soon as the job exists. As in the
        official SDK, ``job_display_name`` may be left out (``BatchPredictionJob <local time>``)."""
        if "sync" in kwargs or len(args) > 22:
            raise validation.fail("sync", "submit() never waits: call create(sync=True) to wait")
        if not args:
            kwargs.setdefault("job_display_name", None)
        kwargs["sync"] = False
        return cls.create(*args, **kwargs)

    # -- list ---------------------------------------------------------------------------------------
    @overload
    @classmethod
    def list(
        cls,
        filter: str | None = None,
        order_by: str | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        page_size: int | None = None,
        *,
        lazy: Literal[False] = False,
    ) -> builtins.list[BatchPredictionJob]: ...

    @overload
    @classmethod
    def list(
        cls,
        filter: str | None = None,
        order_by: str | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        page_size: int | None = None,
        *,
        lazy: Literal[True],
    ) -> Iterator[BatchPredictionJob]: ...

    @classmethod
    def list(
        cls,
        filter: str | None = None,
        order_by: str | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        page_size: int | None = None,
        *,
        lazy: bool = False,
    ) -> builtins.list[BatchPredictionJob] | Iterator[BatchPredictionJob]:
        """Jobs of a project and location: a list, as the official ``list`` returns; with ``lazy=True`` an
        iterator that fetches a page at a time, as it is consumed.

        ``filter`` is Vertex AI's List filter (``state="JOB_STATE_SUCCEEDED" AND labels.team="vision"``).
        The v1 List call has no order_by: the server returns newest first, so ``order_by=None`` or
        ``"create_time desc"`` stays lazy. Any other ``order_by`` (``"display_name, create_time desc"``;
        fields: name, display_name, state, create_time, start_time, end_time, update_time) reads every page
        first and sorts on the client. ``page_size`` (after the official parameters, which keep their order):
        jobs per List call, the server's default (100 on the local stack) when None.
        """
        s = config.settings(project=project, location=location, credentials=credentials)
        keys = order_keys(order_by)
        if page_size is not None:
            rules.integer(page_size, "page_size")
        rules.flag(lazy, "lazy")
        jobs = clients.job_service(project=s.project, location=s.location, credentials=credentials)
        request = messages().ListBatchPredictionJobsRequest(
            parent=s.parent, filter=filter or "", page_size=page_size or 0
        )
        listed = steps.iterate(list_jobs(request), steps.one(jobs))
        found = (cls.from_resource(r, credentials=credentials) for r in listed)
        if keys is None:
            return found if lazy else [*found]
        everything = [*found]
        for field, descending in reversed(keys):
            everything.sort(key=sort_key(field), reverse=descending)
        return iter(everything) if lazy else everything

    # -- properties ---------------------------------------------------------------------------------
    @property
    def gca_resource(self) -> types.BatchPredictionJob:
        """The ``bpj.types.BatchPredictionJob`` message as last fetched: the wire message itself, so its
        ``state`` is the enum's number and its times are ``Timestamp`` messages (``ToDatetime()``); the
        job's own ``state`` and ``create_time``... give the enum member and datetimes, as the official
        properties do."""
        return self._resource

    @property
    def credentials(self) -> Any:
        """The credentials this job's calls use: the ones given, else ``bpj.init``'s (None: Application
        Default Credentials, or none for a local endpoint)."""
        given = self._overrides["credentials"]
        return given if given is not None else config.settings(**self._overrides).credentials

    @property
    def api_client(self) -> JobServiceClient:
        """bpj's JobService client for this job's project and location (requests are ``bpj.types``
        messages, where the official ``api_client`` is the GAPIC client)."""
        return self._client()  # type: ignore[no-any-return]

    @property
    def preview(self) -> Any:
        """The official SDK's v1beta1 face of the job; bpj speaks the v1 API only."""
        raise NotImplementedError(
            "BatchPredictionJob.preview is the v1beta1 (preview) API, which bpj does not speak: every v1 field "
            "is settable through create(**fields)"
        )

    @property
    def resource_name(self) -> str:
        return str(self._resource.name)

    @property
    def name(self) -> str:
        """The job id (the last part of the resource name), as the official class has it."""
        return self.resource_name.rsplit("/", 1)[-1]

    @property
    def project(self) -> str:
        return self._overrides["project"]

    @property
    def location(self) -> str:
        return self._overrides["location"]

    @property
    def display_name(self) -> str:
        return str(self._resource.display_name)

    @property
    def state(self) -> states.JobState:
        """The job's state, refreshed with one Get unless it is terminal: a :class:`bpj.states.JobState`
        (an IntEnum: equal to the ``bpj.types.JobState`` numbers, with ``.name`` as the official enum has)."""
        if not states.is_terminal(self._resource.state):
            self.refresh()
        return states.as_enum(self._resource.state)

    def done(self) -> bool:
        """Whether the job is in a terminal state (refreshes like ``state``)."""
        return states.is_terminal(self.state)

    @property
    def output_info(self) -> Any:
        return self._resource.output_info

    @property
    def completion_stats(self) -> Any:
        return self._resource.completion_stats

    @property
    def partial_failures(self) -> builtins.list[Any]:
        return list(self._resource.partial_failures)

    @property
    def error(self) -> Any:
        """The google.rpc.Status of a failed job (empty otherwise)."""
        return self._resource.error

    @property
    def create_time(self) -> datetime | None:
        return _time(self._resource.create_time)

    @property
    def start_time(self) -> datetime | None:
        return _time(self._resource.start_time)

    @property
    def end_time(self) -> datetime | None:
        return _time(self._resource.end_time)

    @property
    def update_time(self) -> datetime | None:
        return _time(self._resource.update_time)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._resource.labels)

    @property
    def encryption_spec(self) -> Any:
        """The job's EncryptionSpec (an empty message when none was set, as the official property)."""
        return self._resource.encryption_spec

    def to_dict(self) -> dict[str, Any]:
        """The resource as proto3 JSON (camelCase keys), as the official ``to_dict``."""
        from google.protobuf import json_format

        return json_format.MessageToDict(self._resource)

    def refresh(self, resource: Any = None) -> BatchPredictionJob:
        """Fetch the job again (one Get); or adopt ``resource``, a newer message of this job (no RPC), as
        ``bpj.wait_all`` does with what one List returned."""
        if resource is None:
            resource = self._client().get_batch_prediction_job(
                messages().GetBatchPredictionJobRequest(name=self.resource_name)
            )
        elif resource.name != self.resource_name:
            raise errors.UsageError(f"refresh(resource=): {resource.name} is not {self.resource_name}")
        self._resource = resource
        return self

    def __repr__(self) -> str:
        return f"<BatchPredictionJob {self.resource_name} {states.name(self._resource.state)}>"

    # -- waiting ------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> BatchPredictionJob:
        """Poll until the job reaches a terminal state; return it when it SUCCEEDED or PARTIALLY_SUCCEEDED.

        Raises :class:`JobFailed` (FAILED), :class:`JobCancelled` (CANCELLED) or :class:`JobExpired`
        (EXPIRED), each carrying the job and its google.rpc.Status, or :class:`WaitTimeout` (a TimeoutError)
        when ``timeout`` seconds pass first. Polls Get every ``poll_interval`` seconds at first, growing to
        ``max_poll_interval``, with jitter. Shows state, counts, rate and elapsed time (and the share done
        with the time left, when the total is known) on stderr when it is a terminal, or as a plain line
        every 30 s elsewhere with ``BPJ_PROGRESS=1`` (``BPJ_PROGRESS=0``: never); logs state changes to the
        ``bpj`` logger.
        """
        if not steps.run(wait_steps(self, self, timeout), self._client_for):
            raise WaitTimeout(self, timeout or 0.0)
        return settle(self, self)

    wait_for_completion = wait

    def wait_for_resource_creation(self) -> None:
        """Return once the job exists on the server: at once, since bpj's ``create(sync=False)`` and
        ``submit()`` return only after the job was made (the official SDK creates it in a background
        thread this call waits for)."""
        if not self.resource_name:
            raise RuntimeError("the batch prediction job was not created")

    def _client_for(self, where: Any) -> Any:
        return self._client()

    # -- cancel, delete -----------------------------------------------------------------------------
    def cancel(self, wait: bool = False) -> BatchPredictionJob:
        """Ask the service to cancel the job; with ``wait=True`` poll until it is terminal (CANCELLED, or how
        it ended if it ended first) and return without raising for that state."""
        self._client().cancel_batch_prediction_job(
            messages().CancelBatchPredictionJobRequest(name=self.resource_name)
        )
        log.info("%s: cancel requested", self.resource_name)
        if wait:
            steps.run(wait_steps(self, self, None), self._client_for)
        return self

    def delete(self, sync: bool = True, timeout: float | None = None) -> None:
        """Delete the job; with ``sync=True`` (the default) wait for the deletion's long-running operation to
        finish (``timeout`` seconds at most), with ``sync=False`` return once the service accepted it."""
        rules.flag(sync, "sync")
        rules.timeout(timeout, "timeout")
        op = self._client().delete_batch_prediction_job(
            messages().DeleteBatchPredictionJobRequest(name=self.resource_name)
        )
        if not sync:
            log.info("%s: deletion started (%s)", self.resource_name, op.name)
            return
        wait_operation(
            clients.operations(**self._overrides),
            op,
            timeout=timeout,
            what="JobService.DeleteBatchPredictionJob",
        )
        log.info("%s: deleted", self.resource_name)

    # -- outputs ------------------------------------------------------------------------------------
    def iter_outputs(self, bq_max_results: int | None = 100) -> Any:
        """The output files (google-cloud-storage Blobs under ``output_info.gcs_output_directory``) or the
        predictions table (a google-cloud-bigquery RowIterator of at most ``bq_max_results`` rows), as the
        official ``iter_outputs``. Uses the GCS and BigQuery endpoints of ``bpj.init``.

        For volume, read with :meth:`outputs` instead: bpj's readers fetch GCS objects in parallel and read
        BigQuery over the Storage Read API, straight into records or Arrow.
        """
        self._require_outputs()
        s = config.settings(**self._overrides)
        info = self._resource.output_info
        if info.gcs_output_directory:
            from google.cloud import storage  # type: ignore[attr-defined]

            bucket, _, prefix = info.gcs_output_directory.removeprefix("gs://").partition("/")
            client = storage.Client(
                project=self.project,
                credentials=_google_credentials(s, s.gcs_endpoint),
                client_options={"api_endpoint": s.gcs_endpoint},
            )
            return client.list_blobs(bucket, prefix=prefix)
        if info.bigquery_output_dataset:
            from google.cloud import bigquery

            if not info.bigquery_output_table:
                raise RuntimeError(f"{self.resource_name} has no BigQuery predictions table")
            client = bigquery.Client(
                project=self.project,
                credentials=_google_credentials(s, s.bigquery_endpoint),
                client_options={"api_endpoint": s.bigquery_endpoint},
            )
            dataset = info.bigquery_output_dataset.removeprefix("bq://")
            return client.list_rows(f"{dataset}.{info.bigquery_output_table}", max_results=bq_max_results)
        raise NotImplementedError(f"{self.resource_name} has no GCS or BigQuery output: {info}")

    def outputs(self, **kwargs: Any) -> GcsReader | BigQueryReader:
        """The predictions through bpj's fast readers: ``bpj.outputs.read_gcs(gcs_output_directory,
        **kwargs)`` or ``bpj.outputs.read_bigquery("bq://project.dataset.table", **kwargs)``."""
        self._require_outputs()
        info = self._resource.output_info
        from bpj import outputs  # type: ignore[attr-defined]

        if info.gcs_output_directory:
            return outputs.read_gcs(info.gcs_output_directory, **kwargs)
        if info.bigquery_output_dataset and info.bigquery_output_table:
            return outputs.read_bigquery(
                f"{info.bigquery_output_dataset}.{info.bigquery_output_table}", **kwargs
            )
        raise NotImplementedError(f"{self.resource_name} has no GCS or BigQuery output: {info}")

    def _require_outputs(self) -> None:
        state = self.state
        if not states.is_success(state):
            raise RuntimeError(
                f"cannot read the outputs of {self.resource_name} before it succeeds; it is {states.name(state)}"
            )


# -- helpers --------------------------------------------------------------------------------------------


def _overrides(name: str, credentials: Any) -> dict[str, Any]:
    m = _NAME.match(name)
    if m is None:
        raise errors.UsageError(f"not a job resource name: {name!r}")
    return {"project": m["project"], "location": m["location"], "credentials": credentials}


def _google_credentials(s: config.Settings, endpoint: str) -> Any:
    if s.credentials is None and config.parse_endpoint(endpoint).is_loopback:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return config.resolve_credentials(s, endpoint)


def list_jobs(request: Any) -> steps.Machine[None]:
    """Emit every BatchPredictionJob a ListBatchPredictionJobsRequest returns, a page at a time."""
    return steps.list_items("list_batch_prediction_jobs", request, "batch_prediction_jobs")


def wait_steps(job: BatchPredictionJob, face: Any, timeout: float | None) -> steps.Machine[bool]:
    """:func:`bpj.steps.wait_job` for ``job``, paced by ``face``'s ``poll_interval`` and
    ``max_poll_interval``, with a progress line when stderr is a terminal."""
    pacer = steps.Pacer(face.poll_interval, face.max_poll_interval, timeout)
    from bpj.progress import WaitProgress

    return steps.wait_job(job, pacer, WaitProgress.wanted(job))


def settle(job: Any, face: Any) -> Any:
    """What ``wait()`` does once ``job`` is terminal: raise the typed error of a failure (carrying
    ``face``, the object the caller holds), warn on a partial success, else return ``face``."""
    outcome = states.rule(job.gca_resource.state).outcome
    if outcome in states.FAILURES:
        raise states.error_for(face)
    if outcome is states.Outcome.PARTIALLY_SUCCEEDED:
        log.warning("%s ended PARTIALLY_SUCCEEDED: see partial_failures", job.resource_name)
    return face


def order_keys(order_by: str | None) -> builtins.list[tuple[str, bool]] | None:
    """None for the server's order, else [(field, descending)] for a client-side sort."""
    if order_by is None or " ".join(order_by.split()).lower() == SERVER_ORDER:
        return None
    keys = []
    for part in order_by.split(","):
        words = part.split()
        if (
            not words
            or len(words) > 2
            or words[0] not in SORTABLE
            or words[1:] not in ([], ["asc"], ["desc"])
        ):
            raise validation.fail(
                "order_by", f"must be 'field [asc|desc], ...' over {', '.join(SORTABLE)}; got {order_by!r}"
            )
        keys.append((words[0], words[1:] == ["desc"]))
    return keys


def sort_key(field: str) -> Callable[[BatchPredictionJob], Any]:
    def key(job: BatchPredictionJob) -> Any:
        value = getattr(job.gca_resource, field)
        return value.ToNanoseconds() if hasattr(value, "ToNanoseconds") else value

    return key
