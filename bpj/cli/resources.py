"""``bpj models ...`` and ``bpj jobs ...``: the Model and BatchPredictionJob classes from a shell."""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections.abc import Mapping
from typing import Any

from bpj import rules, validation
from bpj.cli.common import (
    add_json,
    json_value,
    key_values,
    print_fields,
    print_json,
    print_table,
    vertex_reachable,
    when,
)

# -- models -----------------------------------------------------------------------------------------------


def _model_fields(m: Any) -> list[tuple[str, Any]]:
    spec = m.container_spec
    env = ", ".join(f"{e.name}={e.value}" for e in spec.env) if spec is not None else ""
    return [
        ("name", m.resource_name),
        ("display name", m.display_name),
        ("version", m.version_id),
        ("aliases", ", ".join(m.version_aliases)),
        ("description", m.description),
        ("artifact uri", m.artifact_uri),
        ("image", spec.image_uri if spec is not None else ""),
        ("env", env),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(m.labels.items()))),
        ("created", when(m.create_time)),
        ("updated", when(m.update_time)),
    ]


def models_upload(args: argparse.Namespace) -> int:
    from bpj.models import Model, plan_upload

    arguments = dict(
        serving_container_image_uri=args.container_image_uri,
        artifact_uri=args.artifact_uri,
        display_name=args.display_name,
        model_id=args.model_id,
        parent_model=args.parent_model,
        description=args.description,
        version_aliases=args.version_alias,
        labels=key_values(args.labels, "--labels"),
        serving_container_environment_variables=key_values(args.env, "--env"),
        sync=True,
    )
    with flag_names(_UPLOAD_FLAGS):
        plan_upload(**arguments)
    vertex_reachable()
    with flag_names(_UPLOAD_FLAGS):
        model = Model.upload(**arguments)
    if args.json:
        print_json(model.to_dict())
    else:
        print(model.versioned_resource_name)
    return 0


def models_list(args: argparse.Namespace) -> int:
    from bpj.models import Model

    _check_limit(args.limit)
    vertex_reachable()
    found = itertools.islice(Model.list(filter=args.filter, order_by=args.order_by, lazy=True), args.limit)
    if args.json:
        print_json([m.to_dict() for m in found])
        return 0
    print_table(
        ((m.name, m.version_id, m.display_name, when(m.create_time)) for m in found),
        ("ID", "VERSION", "DISPLAY NAME", "CREATED"),
    )
    return 0


def models_describe(args: argparse.Namespace) -> int:
    from bpj.models import Model, model_resource_name

    model_resource_name(args.model, "MODEL")
    vertex_reachable()
    model = Model(args.model)
    if args.json:
        print_json(model.to_dict())
    else:
        print_fields(_model_fields(model))
    return 0


def models_delete(args: argparse.Namespace) -> int:
    from bpj.models import Model, model_resource_name

    model_resource_name(args.model, "MODEL")
    vertex_reachable()
    model = Model(args.model)
    model.delete()
    print(f"deleted {model.resource_name}")
    return 0


# -- jobs -------------------------------------------------------------------------------------------------


def _job_fields(job: Any) -> list[tuple[str, Any]]:
    from bpj import states

    r = job.gca_resource
    c = r.completion_stats
    info = r.output_info
    output = info.gcs_output_directory or (
        f"{info.bigquery_output_dataset}.{info.bigquery_output_table}".rstrip(".")
        if info.bigquery_output_dataset
        else ""
    )
    error = f"{_code_name(r.error.code)}: {r.error.message}" if r.error.code or r.error.message else ""
    sources = list(r.input_config.gcs_source.uris) or [r.input_config.bigquery_source.input_uri]
    destination = (
        r.output_config.gcs_destination.output_uri_prefix or r.output_config.bigquery_destination.output_uri
    )
    return [
        ("name", r.name),
        ("display name", r.display_name),
        ("state", states.name(r.state)),
        ("model", r.model),
        ("input", f"{r.input_config.instances_format} {', '.join(s for s in sources if s)}"),
        ("destination", f"{r.output_config.predictions_format} {destination}"),
        ("instances", f"{c.successful_count} ok, {c.failed_count} failed, {c.incomplete_count} incomplete"),
        ("output", output),
        ("error", error),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(r.labels.items()))),
        ("created", when(job.create_time)),
        ("started", when(job.start_time)),
        ("ended", when(job.end_time)),
    ]


def _code_name(code: int) -> str:
    from bpj import errors

    try:
        return errors.Code(code).name
    except ValueError:
        return str(code)


def _show_job(job: Any, as_json: bool) -> None:
    if as_json:
        print_json(job.to_dict())
    else:
        print_fields(_job_fields(job))


def _instance_config(args: argparse.Namespace) -> dict[str, Any] | None:
    config: dict[str, Any] = {}
    if args.instance_type:
        config["instance_type"] = args.instance_type
    if args.key_field:
        config["key_field"] = args.key_field
    if args.included_field:
        config["included_fields"] = args.included_field
    if args.excluded_field:
        config["excluded_fields"] = args.excluded_field
    return config or None


def jobs_create(args: argparse.Namespace) -> int:
    from bpj import states
    from bpj.jobs import BatchPredictionJob, check_create

    arguments = _create_arguments(args)
    with flag_names(_CREATE_FLAGS):
        check_create(**arguments)
    vertex_reachable()
    with flag_names(_CREATE_FLAGS):
        job = BatchPredictionJob.create(**arguments)
    if not args.sync:
        _show_created(job, args.json)
        return 0
    try:
        job.wait()
    except states.JobFailed:
        _show_created(job, args.json)
        raise
    _show_created(job, args.json)
    return 0


def _check_job(job: str) -> None:
    from bpj import config, validation

    s = config.settings()
    validation.job_name(job, s.project, s.location, "JOB")


def _check_limit(limit: int | None) -> None:
    from bpj import validation

    if limit is not None:
        validation.positive_int(limit, "--limit", zero=True)


# The parameter names of create() and upload() (and paths into them) as the flags that set them: inside
# flag_names(), the library's messages name the flag from the start.
_GLOBAL_FLAGS = {"project": "--project", "location": "--location"}
_CREATE_FLAGS = {
    **_GLOBAL_FLAGS,
    **{
        name: "--" + name.replace("_", "-")
        for name in (*validation.CREATE_ARGUMENTS, "create_request_timeout")
    },
    "job_display_name": "--display-name",
    "model_name": "--model",
    "instance_config": "--instance-type/--key-field/--included-field/--excluded-field",
    "instance_config.instance_type": "--instance-type",
    "instance_config.key_field": "--key-field",
    "instance_config.included_fields": "--included-field",
    "instance_config.excluded_fields": "--excluded-field",
}
_UPLOAD_FLAGS = {
    **_GLOBAL_FLAGS,
    "serving_container_image_uri": "--container-image-uri",
    "serving_container_environment_variables": "--env",
    "version_aliases": "--version-alias",
    **{
        name: "--" + name.replace("_", "-")
        for name in ["artifact_uri", "display_name", "model_id", "parent_model", "description", "labels"]
    },
}


def flag_names(flags: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
    """A block whose UsageErrors name each parameter of ``flags`` by the flag that sets it."""
    return rules.argument_names(flags)


def _create_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        job_display_name=args.display_name,
        model_name=args.model,
        instances_format=args.instances_format,
        predictions_format=args.predictions_format,
        gcs_source=args.gcs_source,
        bigquery_source=args.bigquery_source,
        gcs_destination_prefix=args.gcs_destination_prefix,
        bigquery_destination_prefix=args.bigquery_destination_prefix,
        model_parameters=json_value(args.model_parameters, "--model-parameters"),
        machine_type=args.machine_type,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count,
        starting_replica_count=args.starting_replica_count,
        max_replica_count=args.max_replica_count,
        generate_explanation=args.generate_explanation,
        labels=key_values(args.labels, "--labels") or None,
        encryption_spec_key_name=args.encryption_spec_key_name,
        sync=False,
        create_request_timeout=args.create_request_timeout,
        batch_size=args.batch_size,
        service_account=args.service_account,
        instance_config=_instance_config(args),
        disable_container_logging=args.disable_container_logging,
    )


def _show_created(job: Any, as_json: bool) -> None:
    from bpj import states

    if as_json:
        print_json(job.to_dict())
    else:
        print(f"{job.resource_name} {states.name(job.gca_resource.state)}")


def jobs_describe(args: argparse.Namespace) -> int:
    from bpj.jobs import BatchPredictionJob

    _check_job(args.job)
    vertex_reachable()
    _show_job(BatchPredictionJob(args.job), args.json)
    return 0


def jobs_list(args: argparse.Namespace) -> int:
    from bpj import rules, states
    from bpj.jobs import BatchPredictionJob

    _check_limit(args.limit)
    if args.page_size is not None:
        rules.integer(args.page_size, "--page-size", "page_size")
    vertex_reachable()
    found = itertools.islice(
        BatchPredictionJob.list(
            filter=args.filter, order_by=args.order_by, page_size=args.page_size, lazy=True
        ),
        args.limit,
    )
    if args.json:
        print_json([j.to_dict() for j in found])
        return 0

    def row(j: Any) -> tuple[Any, ...]:
        c = j.gca_resource.completion_stats
        state = states.name(j.gca_resource.state).removeprefix("JOB_STATE_")
        return (j.name, state, c.successful_count, c.failed_count, when(j.create_time), j.display_name)

    print_table(map(row, found), ("ID", "STATE", "OK", "FAILED", "CREATED", "DISPLAY NAME"))
    return 0


def jobs_wait(args: argparse.Namespace) -> int:
    from bpj import rules, states
    from bpj.jobs import BatchPredictionJob

    _check_job(args.job)
    rules.timeout(args.timeout, "--timeout")
    vertex_reachable()
    job = BatchPredictionJob(args.job)
    try:
        job.wait(timeout=args.timeout)
    except (states.JobFailed, states.WaitTimeout):
        _show_created(job, args.json)
        raise
    _show_created(job, args.json)
    return 0


def jobs_cancel(args: argparse.Namespace) -> int:
    from bpj.jobs import BatchPredictionJob

    _check_job(args.job)
    vertex_reachable()
    job = BatchPredictionJob(args.job).cancel(wait=args.wait)
    if args.json:
        print_json(job.to_dict())
    elif args.wait:
        _show_created(job, False)
    else:
        print(f"cancel requested: {job.resource_name}")
    return 0


def jobs_delete(args: argparse.Namespace) -> int:
    from bpj.jobs import BatchPredictionJob

    _check_job(args.job)
    vertex_reachable()
    job = BatchPredictionJob(args.job)
    job.delete()
    print(f"deleted {job.resource_name}")
    return 0


# -- the parsers ------------------------------------------------------------------------------------------


def add_models(sub: Any, parent: argparse.ArgumentParser) -> None:
    models = sub.add_parser("models", help="upload, list, describe and delete models")
    msub = models.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = msub.add_parser("upload", parents=[parent], help="upload a model (UploadModel) and wait for it")
    p.add_argument("--display-name", required=True)
    p.add_argument(
        "--artifact-uri", help="gs:// directory with model.joblib, model.pkl or model.bst (or a predictor)"
    )
    p.add_argument(
        "--container-image-uri",
        "--image",
        required=True,
        help="serving image, e.g. us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest",
    )
    p.add_argument("--model-id", help="the model ID to use (default: the service picks one)")
    p.add_argument("--parent-model", help="upload as a new version of this model")
    p.add_argument("--description")
    p.add_argument("--version-alias", action="append", help="a version alias (repeatable)")
    p.add_argument("--labels", action="append", metavar="K=V", help="a label (repeatable)")
    p.add_argument(
        "--env", action="append", metavar="K=V", help="a container environment variable (repeatable)"
    )
    add_json(p)
    p.set_defaults(run=models_upload)

    p = msub.add_parser("list", parents=[parent], help="list models, newest first")
    p.add_argument("--filter", help='Vertex AI list filter, e.g. display_name="iris" or labels.team="x"')
    p.add_argument("--order-by", help="e.g. 'create_time desc' or display_name")
    p.add_argument("--limit", type=int, help="show at most this many")
    add_json(p)
    p.set_defaults(run=models_list)

    for name, run, help_ in (
        ("describe", models_describe, "show one model"),
        ("delete", models_delete, "delete a model and wait for it"),
    ):
        p = msub.add_parser(name, parents=[parent], help=help_)
        p.add_argument("model", help="model ID or projects/.../models/ID[@version]")
        if name == "describe":
            add_json(p)
        p.set_defaults(run=run)


def add_jobs(sub: Any, parent: argparse.ArgumentParser) -> None:
    jobs = sub.add_parser("jobs", help="create and manage batch prediction jobs")
    jsub = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = jsub.add_parser(
        "create",
        parents=[parent],
        help="create a batch prediction job (flags mirror BatchPredictionJob.create)",
        description="Create a batch prediction job. Prints its name and final state (--json: the job).",
    )
    p.add_argument("--display-name", required=True, help="job_display_name")
    p.add_argument("--model", required=True, help="model ID or projects/.../models/ID[@version]")
    p.add_argument("--instances-format", default="jsonl", help="jsonl (default), csv, bigquery, tf-record...")
    p.add_argument("--predictions-format", default="jsonl", help="jsonl (default), csv or bigquery")
    p.add_argument("--gcs-source", action="append", metavar="GS_URI", help="input gs:// URI (repeatable)")
    p.add_argument("--bigquery-source", metavar="BQ_URI", help="input table bq://project.dataset.table")
    p.add_argument("--gcs-destination-prefix", metavar="GS_URI")
    p.add_argument("--bigquery-destination-prefix", metavar="BQ_URI", help="bq://project[.dataset]")
    p.add_argument("--batch-size", type=int, help="instances per prediction call")
    p.add_argument("--labels", action="append", metavar="K=V", help="a label (repeatable)")
    p.add_argument("--model-parameters", metavar="JSON", help="model parameters as JSON")
    p.add_argument("--machine-type", help="dedicated resources, e.g. n1-standard-4")
    p.add_argument("--accelerator-type")
    p.add_argument("--accelerator-count", type=int)
    p.add_argument("--starting-replica-count", type=int)
    p.add_argument("--max-replica-count", type=int)
    p.add_argument("--generate-explanation", action="store_true")
    p.add_argument("--service-account")
    p.add_argument("--encryption-spec-key-name")
    p.add_argument("--create-request-timeout", type=float, metavar="SECONDS")
    p.add_argument("--instance-type", choices=("object", "array"), help="instance_config.instance_type")
    p.add_argument("--key-field", help="instance_config.key_field")
    p.add_argument("--included-field", action="append", help="instance_config.included_fields (repeatable)")
    p.add_argument("--excluded-field", action="append", help="instance_config.excluded_fields (repeatable)")
    p.add_argument("--disable-container-logging", action="store_true")
    p.add_argument(
        "--sync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the job ends (default), or return once it exists (--no-sync)",
    )
    add_json(p)
    p.set_defaults(run=jobs_create)

    p = jsub.add_parser("list", parents=[parent], help="list jobs, newest first")
    p.add_argument("--filter", help='Vertex AI list filter, e.g. state="JOB_STATE_SUCCEEDED"')
    p.add_argument("--order-by", help="client-side sort, e.g. 'display_name, create_time desc'")
    p.add_argument("--limit", type=int, help="show at most this many")
    p.add_argument("--page-size", type=int, help="jobs per List call")
    add_json(p)
    p.set_defaults(run=jobs_list)

    p = jsub.add_parser("describe", parents=[parent], help="show one job")
    p.add_argument("job", help="job ID or projects/.../batchPredictionJobs/ID")
    add_json(p)
    p.set_defaults(run=jobs_describe)

    p = jsub.add_parser("wait", parents=[parent], help="wait until a job ends; exit 0 only when it succeeded")
    p.add_argument("job", help="job ID or projects/.../batchPredictionJobs/ID")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long")
    add_json(p)
    p.set_defaults(run=jobs_wait)

    p = jsub.add_parser("cancel", parents=[parent], help="ask the service to cancel a job")
    p.add_argument("job", help="job ID or projects/.../batchPredictionJobs/ID")
    p.add_argument("--wait", action="store_true", help="wait until the job has ended")
    add_json(p)
    p.set_defaults(run=jobs_cancel)

    p = jsub.add_parser("delete", parents=[parent], help="delete a job and wait for it")
    p.add_argument("job", help="job ID or projects/.../batchPredictionJobs/ID")
    p.set_defaults(run=jobs_delete)
