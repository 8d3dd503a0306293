"""``bpj.Model``: upload, get, list and delete Vertex AI models, and run batch predictions on them.

The signatures are the official ``google.cloud.aiplatform.Model``'s for what batch prediction needs::

    model = bpj.Model.upload(
        display_name="iris",
        artifact_uri="gs://my-bucket/iris",               # model.joblib, model.pkl or model.bst
        serving_container_image_uri="us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest",
    )
    job = model.batch_predict(
        job_display_name="nightly", gcs_source="gs://in/*.jsonl", gcs_destination_prefix="gs://out"
    )
    for m in bpj.Model.list(filter='labels.team="vision"', order_by="create_time desc"):
        print(m.resource_name, m.display_name)

Every call goes through the shared channel (or HTTP session) of its endpoint; arguments are checked before
any network call. Properties read the resource fetched last and never call the service; ``refresh()``
fetches it again. Unlike the official class, ``Model.list`` is lazy (one ListModels call per page, ordered
by the server) and ``upload`` with a local directory as ``artifact_uri`` is not supported (copy it to
Cloud Storage first).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, overload

from bpj import rules, steps, validation
from bpj._log import logger
from bpj.lro import wait_operation

if TYPE_CHECKING:
    from bpj.jobs import BatchPredictionJob

log = logger()

__all__ = ["Model", "wait_operation"]  # wait_operation: re-exported from bpj.lro


def _services(project: str | None, location: str | None, credentials: Any) -> tuple[Any, Any, Any]:
    """The settings for a call, and ModelService and Operations clients on the shared transport."""
    from bpj import config

    s = config.settings(project=project, location=location, credentials=credentials)
    return (s, *_clients(s))


def _clients(s: Any) -> tuple[Any, Any]:
    """ModelService and Operations clients on the shared transport of settings ``s``."""
    from bpj import clients, config

    transport = config.transport_for(s.vertex_endpoint, s)
    return clients.model_service(transport=transport), clients.operations(transport=transport)


def _time(ts: Any) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=timezone.utc)


def plan_upload(
    serving_container_image_uri: str | None = None,
    *,
    artifact_uri: str | None = None,
    model_id: str | None = None,
    parent_model: str | None = None,
    is_default_version: bool = True,
    version_aliases: Sequence[str] | None = None,
    version_description: str | None = None,
    serving_container_predict_route: str | None = None,
    serving_container_health_route: str | None = None,
    description: str | None = None,
    serving_container_command: Sequence[str] | None = None,
    serving_container_args: Sequence[str] | None = None,
    serving_container_environment_variables: Mapping[str, str] | None = None,
    serving_container_ports: Sequence[int] | None = None,
    serving_container_grpc_ports: Sequence[int] | None = None,
    instance_schema_uri: str | None = None,
    parameters_schema_uri: str | None = None,
    prediction_schema_uri: str | None = None,
    explanation_metadata: Any = None,
    explanation_parameters: Any = None,
    display_name: str | None = None,
    project: str | None = None,
    location: str | None = None,
    credentials: Any = None,
    labels: Mapping[str, str] | None = None,
    encryption_spec_key_name: str | None = None,
    sync: bool = True,
    upload_request_timeout: float | None = None,
    serving_container_shared_memory_size_mb: int | None = None,
) -> tuple[Any, Any]:
    """Check ``Model.upload``'s arguments and build the UploadModelRequest it sends: (settings, request).
    Pure: no RPC, no connection."""
    from bpj import config, types

    settings = config.settings(project=project, location=location, credentials=credentials)
    if encryption_spec_key_name is None:  # bpj.init()'s default, as in the official SDK
        encryption_spec_key_name = settings.encryption_spec_key_name
    if display_name is None:
        display_name = f"Model {datetime.now().isoformat(sep=' ')}"
    model = types.Model(display_name=validation.display_name(display_name, "display_name"))
    model.labels.update(validation.labels(labels))
    rules.flag(sync, "sync")
    rules.flag(is_default_version, "is_default_version")
    rules.timeout(upload_request_timeout, "upload_request_timeout")
    if serving_container_image_uri is not None:
        rules.text(serving_container_image_uri, "serving_container_image_uri")
    if not serving_container_image_uri or not serving_container_image_uri.isprintable():
        raise validation.fail(
            "serving_container_image_uri",
            "the serving container image is required, e.g. "
            "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest",
        )
    spec = model.container_spec
    spec.image_uri = serving_container_image_uri
    spec.command.extend(_strings(serving_container_command, "serving_container_command"))
    spec.args.extend(_strings(serving_container_args, "serving_container_args"))
    env = serving_container_environment_variables or {}
    if not isinstance(env, Mapping):
        raise validation.fail("serving_container_environment_variables", "must be a mapping of str to str")
    for key, value in env.items():
        if not isinstance(key, str) or not key:
            raise validation.fail("serving_container_environment_variables", f"bad variable name {key!r}")
        where = f"serving_container_environment_variables[{key!r}]"
        spec.env.add(name=rules.text(key, where), value=rules.text(str(value), where))
    for port in _sequence(serving_container_ports, "serving_container_ports", "a sequence of ports"):
        spec.ports.add(container_port=rules.integer(port, "serving_container_ports"))
    for port in _sequence(
        serving_container_grpc_ports, "serving_container_grpc_ports", "a sequence of ports"
    ):
        spec.grpc_ports.add(container_port=rules.integer(port, "serving_container_grpc_ports"))
    if serving_container_predict_route:
        spec.predict_route = rules.text(serving_container_predict_route, "serving_container_predict_route")
    if serving_container_health_route:
        spec.health_route = rules.text(serving_container_health_route, "serving_container_health_route")
    if serving_container_shared_memory_size_mb is not None:
        spec.shared_memory_size_mb = rules.integer(
            serving_container_shared_memory_size_mb, "serving_container_shared_memory_size_mb"
        )
    if artifact_uri is not None:
        if not rules.text(artifact_uri, "artifact_uri").startswith("gs://"):
            raise validation.fail(
                "artifact_uri",
                f"must be a gs:// directory holding the model files, got {artifact_uri!r} (bpj does not "
                "stage local directories: copy it to Cloud Storage first)",
            )
        model.artifact_uri = rules.gcs(artifact_uri, "artifact_uri", what="gs://bucket[/path]")
    if description is not None:
        model.description = rules.text(description, "description")
    if version_description is not None:
        model.version_description = rules.text(version_description, "version_description")
    aliases = list(_strings(version_aliases, "version_aliases"))
    if is_default_version and "default" not in aliases:
        aliases.insert(0, "default")
    model.version_aliases.extend(aliases)
    for field, uri in (
        ("instance_schema_uri", instance_schema_uri),
        ("parameters_schema_uri", parameters_schema_uri),
        ("prediction_schema_uri", prediction_schema_uri),
    ):
        if uri is not None:
            setattr(model.predict_schemata, field, rules.gcs(uri, field, what="gs://bucket/object"))
    if explanation_metadata is not None:
        model.explanation_spec.metadata.CopyFrom(
            validation.message(types.ExplanationMetadata, explanation_metadata, "explanation_metadata")
        )
    if explanation_parameters is not None:
        model.explanation_spec.parameters.CopyFrom(
            validation.message(types.ExplanationParameters, explanation_parameters, "explanation_parameters")
        )
    if encryption_spec_key_name is not None:
        if not validation.KMS_KEY.match(rules.text(encryption_spec_key_name, "encryption_spec_key_name")):
            raise validation.fail(
                "encryption_spec_key_name",
                "must be projects/{p}/locations/{l}/keyRings/{ring}/cryptoKeys/{key}, "
                f"got {encryption_spec_key_name!r}",
            )
        model.encryption_spec.kms_key_name = encryption_spec_key_name
    if model_id is not None:
        rules.identifier(model_id, "model_id", "a model id")

    request = types.UploadModelRequest(parent=settings.parent, model=model, model_id=model_id or "")
    if parent_model:
        request.parent_model = _resolve(
            parent_model, settings.project, settings.location, None, "parent_model"
        )[0]
    return settings, request


class Model:
    """A Vertex AI Model: ``Model(model_name, project=None, location=None, credentials=None, version=None)``
    retrieves one (one GetModel call).

    ``model_name`` is ``projects/{p}/locations/{l}/models/{id}`` or a bare id (with ``project`` and
    ``location``, or the ``bpj.init`` defaults), optionally ``@{version id or alias}`` (or ``version=``).
    """

    def __init__(
        self,
        model_name: str,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        version: str | None = None,
    ) -> None:
        from bpj import types

        name, project, location = _resolve(model_name, project, location, version)
        self._settings, self._models, self._operations = _services(project, location, credentials)
        self._credentials = credentials
        self._version = name.partition("@")[2] or None
        self._gca_resource = self._models.get_model(types.GetModelRequest(name=name))

    @classmethod
    def _from_resource(
        cls, resource: Any, settings: Any, models: Any, operations: Any, credentials: Any
    ) -> Model:
        self = cls.__new__(cls)
        self._settings, self._models, self._operations = settings, models, operations
        self._credentials = credentials
        self._version = None
        self._gca_resource = resource
        return self

    # -- create, list, delete -------------------------------------------------------------------------
    @classmethod
    def upload(
        cls,
        serving_container_image_uri: str | None = None,
        *,
        artifact_uri: str | None = None,
        model_id: str | None = None,
        parent_model: str | None = None,
        is_default_version: bool = True,
        version_aliases: Sequence[str] | None = None,
        version_description: str | None = None,
        serving_container_predict_route: str | None = None,
        serving_container_health_route: str | None = None,
        description: str | None = None,
        serving_container_command: Sequence[str] | None = None,
        serving_container_args: Sequence[str] | None = None,
        serving_container_environment_variables: Mapping[str, str] | None = None,
        serving_container_ports: Sequence[int] | None = None,
        serving_container_grpc_ports: Sequence[int] | None = None,
        instance_schema_uri: str | None = None,
        parameters_schema_uri: str | None = None,
        prediction_schema_uri: str | None = None,
        explanation_metadata: Any = None,
        explanation_parameters: Any = None,
        display_name: str | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        labels: Mapping[str, str] | None = None,
        encryption_spec_key_name: str | None = None,
        sync: bool = True,
        upload_request_timeout: float | None = None,
        serving_container_shared_memory_size_mb: int | None = None,
    ) -> Model:
        """Upload a model (UploadModel) and wait for its operation; returns the new Model.

        Arguments are the official ``Model.upload``'s. ``display_name`` defaults to ``"Model <time>"`` as
        there. ``explanation_metadata``/``explanation_parameters`` take dicts, bpj messages or official ones.
        With ``sync=False`` the call returns as soon as the service has accepted the upload: the returned
        Model knows its operation, and ``wait()`` (or the first property read) waits for it. Nothing runs in
        a background thread, so a process that exits loses nothing but the wait.
        """
        settings, request = plan_upload(**{k: v for k, v in locals().items() if k != "cls"})
        models, operations = _clients(settings)
        op = models.upload_model(request, timeout=upload_request_timeout)
        log.info("Model.upload: operation %s", op.name)
        self = cls.__new__(cls)
        self._settings, self._models, self._operations = settings, models, operations
        self._credentials = credentials
        self._version = None
        self._pending = op
        if sync:
            self.wait()
        return self

    def wait(self, timeout: float | None = None) -> Model:
        """Wait for the upload operation of a ``Model.upload(sync=False)`` and fetch the model; a no-op for
        a model that exists already."""
        from bpj import types

        op = self.__dict__.pop("_pending", None)
        if op is None:
            return self
        try:
            done = wait_operation(self._operations, op, timeout=timeout, what="ModelService.UploadModel")
        except TimeoutError:
            self._pending = op
            raise
        response = types.UploadModelResponse()
        done.response.Unpack(response)
        name = response.model
        if response.model_version_id:
            name = f"{name}@{response.model_version_id}"
            self._version = response.model_version_id
        self._gca_resource = self._models.get_model(types.GetModelRequest(name=name))
        log.info("Model.upload: created %s", self._gca_resource.name)
        return self

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
    ) -> builtins.list[Model]: ...

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
    ) -> Iterator[Model]: ...

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
    ) -> builtins.list[Model] | Iterator[Model]:
        """Models of a location: a list, as the official ``list`` returns; with ``lazy=True`` an iterator
        that makes one ListModels call per page, as it is consumed.

        ``filter`` is Vertex AI's (``display_name="iris"``, ``labels.team="vision"``...), ``order_by``
        is sent to the service (``display_name``, ``create_time``, ``update_time``, each optionally
        ``desc``; comma-separated), ``page_size`` the models per call (the service's default when None).
        """
        from bpj import types

        if page_size is not None:
            rules.integer(page_size, "page_size")
        for field, value in (("filter", filter), ("order_by", order_by)):
            if value is not None and not isinstance(value, str):
                raise validation.fail(field, f"must be a str, got {type(value).__name__}")
        settings, models, operations = _services(project, location, credentials)
        request = types.ListModelsRequest(
            parent=settings.parent, filter=filter or "", order_by=order_by or "", page_size=page_size or 0
        )

        rules.flag(lazy, "lazy")
        listed = steps.iterate(steps.list_items("list_models", request, "models"), steps.one(models))
        found = (cls._from_resource(m, settings, models, operations, credentials) for m in listed)
        return found if lazy else [*found]

    def delete(self, sync: bool = True, timeout: float | None = None) -> None:
        """Delete the model (DeleteModel) and, with ``sync`` (the default), wait for its operation."""
        from bpj import types

        op = self._models.delete_model(types.DeleteModelRequest(name=self.resource_name))
        if sync:
            wait_operation(self._operations, op, timeout=timeout, what="ModelService.DeleteModel")

    def refresh(self) -> Model:
        """Fetch the model again (one GetModel call)."""
        from bpj import types

        self._gca_resource = self._models.get_model(types.GetModelRequest(name=self.versioned_resource_name))
        return self

    # -- batch prediction -----------------------------------------------------------------------------
    def batch_predict(
        self,
        job_display_name: str | None = None,
        gcs_source: str | Sequence[str] | None = None,
        bigquery_source: str | None = None,
        instances_format: str = "jsonl",
        gcs_destination_prefix: str | None = None,
        bigquery_destination_prefix: str | None = None,
        predictions_format: str = "jsonl",
        model_parameters: Any = None,
        machine_type: str | None = None,
        accelerator_type: str | None = None,
        accelerator_count: int | None = None,
        starting_replica_count: int | None = None,
        max_replica_count: int | None = None,
        generate_explanation: bool | None = False,
        explanation_metadata: Any = None,
        explanation_parameters: Any = None,
        labels: Mapping[str, str] | None = None,
        credentials: Any = None,
        encryption_spec_key_name: str | None = None,
        sync: bool = True,
        create_request_timeout: float | None = None,
        batch_size: int | None = None,
        service_account: str | None = None,
        **kwargs: Any,
    ) -> BatchPredictionJob:
        """Create a batch prediction job on this model version; the official ``Model.batch_predict``.

        Delegates to :meth:`bpj.BatchPredictionJob.create` with this model's versioned name, project and
        location; anything ``create`` takes besides (``instance_config=``, ``disable_container_logging=``,
        any v1 field) passes through ``kwargs``. ``job_display_name`` defaults, as in the official SDK, to
        ``"BatchPredictionJob <time>"``. With ``sync`` (the default) it waits for the job to end.
        """
        from bpj.jobs import BatchPredictionJob

        if job_display_name is None:
            job_display_name = f"BatchPredictionJob {datetime.now().isoformat(sep=' ')}"
        return BatchPredictionJob.create(
            job_display_name=job_display_name,
            model_name=self.versioned_resource_name,
            instances_format=instances_format,
            predictions_format=predictions_format,
            gcs_source=gcs_source,
            bigquery_source=bigquery_source,
            gcs_destination_prefix=gcs_destination_prefix,
            bigquery_destination_prefix=bigquery_destination_prefix,
            model_parameters=model_parameters,
            machine_type=machine_type,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            starting_replica_count=starting_replica_count,
            max_replica_count=max_replica_count,
            generate_explanation=bool(generate_explanation),
            explanation_metadata=explanation_metadata,
            explanation_parameters=explanation_parameters,
            labels=labels,
            project=self.project,
            location=self.location,
            credentials=credentials if credentials is not None else self._credentials,
            encryption_spec_key_name=encryption_spec_key_name,
            sync=sync,
            create_request_timeout=create_request_timeout,
            batch_size=batch_size,
            service_account=service_account,
            **kwargs,
        )

    # -- properties (no RPC, except that a pending upload is waited for) -------------------------------
    @property
    def gca_resource(self) -> Any:
        """The v1 Model message (``bpj.types.Model``) as last fetched."""
        if "_pending" in self.__dict__:
            self.wait()
        return self._gca_resource

    @property
    def resource_name(self) -> str:
        """``projects/{p}/locations/{l}/models/{id}`` (no version)."""
        return str(self.gca_resource.name)

    @property
    def name(self) -> str:
        """The model id, the last part of the resource name."""
        return self.resource_name.rsplit("/", 1)[-1]

    @property
    def versioned_resource_name(self) -> str:
        """``{resource_name}@{version_id}``: the exact version this object stands for."""
        version = self.version_id or self._version
        return f"{self.resource_name}@{version}" if version else self.resource_name

    @property
    def project(self) -> str:
        return self.resource_name.split("/")[1]

    @property
    def location(self) -> str:
        return self.resource_name.split("/")[3]

    @property
    def display_name(self) -> str:
        return str(self.gca_resource.display_name)

    @property
    def description(self) -> str:
        return str(self.gca_resource.description)

    @property
    def version_id(self) -> str:
        return str(self.gca_resource.version_id)

    @property
    def version_aliases(self) -> builtins.list[str]:
        return list(self.gca_resource.version_aliases)

    @property
    def version_description(self) -> str:
        return str(self.gca_resource.version_description)

    @property
    def artifact_uri(self) -> str:
        return str(self.gca_resource.artifact_uri)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.gca_resource.labels)

    @property
    def container_spec(self) -> Any:
        r = self.gca_resource
        return r.container_spec if r.HasField("container_spec") else None

    @property
    def supported_input_storage_formats(self) -> builtins.list[str]:
        return list(self.gca_resource.supported_input_storage_formats)

    @property
    def supported_output_storage_formats(self) -> builtins.list[str]:
        return list(self.gca_resource.supported_output_storage_formats)

    @property
    def create_time(self) -> datetime | None:
        return _time(self.gca_resource.create_time)

    @property
    def update_time(self) -> datetime | None:
        return _time(self.gca_resource.update_time)

    def to_dict(self) -> dict[str, Any]:
        """The resource as proto3 JSON (camelCase keys), as the official ``to_dict``."""
        from google.protobuf import json_format

        return json_format.MessageToDict(self.gca_resource)

    def __repr__(self) -> str:
        if "_pending" in self.__dict__:
            return f"<bpj.Model uploading, operation {self._pending.name}>"
        return f"<bpj.Model {self.versioned_resource_name} {self.display_name!r}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Model):
            return NotImplemented
        return self.versioned_resource_name == other.versioned_resource_name

    def __hash__(self) -> int:
        return hash(self.versioned_resource_name)


def _resolve(
    model_name: Any, project: str | None, location: str | None, version: str | None, field: str = "model_name"
) -> tuple[str, str | None, str | None]:
    """(full name with any @version, project, location) for a model name or id."""
    from bpj import config

    if not rules.text(model_name, field):
        raise validation.fail(field, "must be a model resource name or id, got ''")
    m = validation.MODEL_NAME.match(model_name)
    if m is not None:
        project, location = m["project"], m["location"]
        name = model_name
    else:
        s = config.settings(project=project, location=location)
        name = validation.model_name(model_name, s.project, s.location, field)
        project, location = s.project, s.location
    if version is not None:
        if "@" in name:
            raise validation.fail("version", f"the name {model_name!r} has a version already")
        if not isinstance(version, str) or not validation.MODEL_ID.match(version):
            raise validation.fail("version", f"must be a version id or alias, got {version!r}")
        name = f"{name}@{version}"
    return name, project, location


def model_resource_name(value: Any, field: str = "model_name") -> str:
    """The full name (with any @version) that ``Model(value)`` would get; a UsageError naming ``field``
    otherwise. No call."""
    return _resolve(value, None, None, None, field)[0]


def _sequence(value: Any, field: str, expected: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise rules.wrong_type(field, value, expected)
    return list(value)


def _strings(value: Any, field: str) -> Sequence[str]:
    items = _sequence(value, field, "a sequence of str")
    for i, item in enumerate(items):
        rules.text(item, f"{field}[{i}]")
    return items
