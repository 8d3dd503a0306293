"""generate_explanation on the real local stack: sampled Shapley attributions in the GCS and BigQuery outputs,
through bpj's BatchPredictionJob.create and through the generated clients (gRPC and REST), with the spec on
the Model, on the job, or missing; a cancelled explanation job stops."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bpj import errors, types
from tests.local.conftest import SKLEARN_IMAGE, joblib_bytes, wait_for

S = types.JobState
BUCKET = "explain-bkt"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
META = {
    "inputs": {"features": {"index_feature_mapping": FEATURES, "input_baselines": [[5.8, 3.0, 4.3, 1.3]]}},
    "outputs": {"species_probability": {"index_display_name_mapping": ["setosa", "versicolor", "virginica"]}},
}
PARAMS = {"sampled_shapley_attribution": {"path_count": 10}}


@pytest.fixture(scope="module")
def setup(stack, iris):
    """The iris model on the stack's GCS, its instances as JSONL, and bpj pointed at the stack."""
    from bpj import config

    config.reset()
    stack.init()
    stack.gcs.create_bucket(BUCKET)
    stack.gcs.write(f"gs://{BUCKET}/model/model.joblib", joblib_bytes(iris[0]))
    lines = "".join(json.dumps(row) + "\n" for row in iris[1])
    stack.gcs.write(f"gs://{BUCKET}/in/iris.jsonl", lines.encode())
    many = "".join(json.dumps(row) + "\n" for row in iris[1] * 20)  # 3000 instances
    stack.gcs.write(f"gs://{BUCKET}/in/iris3000.jsonl", many.encode())
    yield stack, iris
    config.reset()


def upload(**explain):
    import bpj

    return bpj.Model.upload(
        display_name="iris-explained",
        artifact_uri=f"gs://{BUCKET}/model",
        serving_container_image_uri=SKLEARN_IMAGE,
        **explain,
    )


def create(model, name: str, *, source: str = "iris.jsonl", **arguments):
    """bpj's BatchPredictionJob.create on the model, reading ``in/<source>``, writing under ``out/<name>``."""
    import bpj

    return bpj.BatchPredictionJob.create(
        job_display_name=f"explain-{name}",
        model_name=model.resource_name,
        gcs_source=f"gs://{BUCKET}/in/{source}",
        gcs_destination_prefix=f"gs://{BUCKET}/out/{name}",
        generate_explanation=True,
        **arguments,
    )


def gcs_lines(stack, directory: str, stem: str = "predictions") -> list[dict]:
    out = []
    for uri in sorted(stack.gcs.list(f"{directory}/{stem}_*")):
        out += [json.loads(line) for line in stack.gcs.read(uri).decode().splitlines() if line]
    return out


def check_attribution(a: dict, *, features: list[str] | None = FEATURES) -> None:
    """Efficiency: the attributions sum to instance output - baseline output (exact by construction)."""
    values = a["featureAttributions"]
    if features is not None:
        assert list(values) == features
    total = sum(v for vs in values.values() for v in (vs if isinstance(vs, list) else [vs]))
    assert total == pytest.approx(a["instanceOutputValue"] - a["baselineOutputValue"], abs=1e-9)
    assert a["approximationError"] >= 0


def test_model_spec_explains_every_prediction_in_gcs(setup):
    import bpj

    stack, (model, rows) = setup
    m = upload(explanation_metadata=META, explanation_parameters=PARAMS)
    # The emulator keeps the spec on the Model.
    stored = types.ExplanationSpec()
    stored.CopyFrom(bpj.Model(m.resource_name).gca_resource.explanation_spec)
    assert stored.parameters.sampled_shapley_attribution.path_count == 10
    assert list(stored.metadata.inputs["features"].index_feature_mapping) == FEATURES

    job = create(m, "model-spec")
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    lines = gcs_lines(stack, job.output_info.gcs_output_directory)
    assert len(lines) == len(rows)
    proba = model.predict_proba(np.array([line["instance"] for line in lines]))
    for line, p in zip(lines, proba, strict=True):
        assert set(line) == {"instance", "prediction", "explanation"}
        [a] = line["explanation"]["attributions"]  # top_k defaults to 1: the predicted class
        k = int(np.argmax(p))
        assert line["prediction"] == k
        assert a["outputIndex"] == [k]
        assert a["outputDisplayName"] == ["setosa", "versicolor", "virginica"][k]
        assert a["outputName"] == "species_probability"
        assert a["instanceOutputValue"] == pytest.approx(p[k])
        check_attribution(a)


def test_job_spec_overrides_the_models(setup):
    stack, (model, rows) = setup
    m = upload(explanation_metadata=META, explanation_parameters=PARAMS)
    job = create(
        m,
        "job-spec",  # 24 paths walk all 4! orders: exact Shapley values, error 0; top_k -1: every class
        explanation_parameters={"sampled_shapley_attribution": {"path_count": 24}, "top_k": -1},
    )
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    lines = gcs_lines(stack, job.output_info.gcs_output_directory)
    for line in lines:
        attributions = line["explanation"]["attributions"]
        assert len(attributions) == 3
        outputs = [a["instanceOutputValue"] for a in attributions]
        assert outputs == sorted(outputs, reverse=True)  # top_k: by output, descending
        for a in attributions:
            assert a["approximationError"] == 0
            assert a["outputName"] == "species_probability"  # metadata still the model's
            check_attribution(a)


def test_no_spec_anywhere_and_gradient_methods_are_refused(setup):
    with pytest.raises(errors.InvalidArgument, match=r"path_count.*\[1, 50\]"):
        upload(
            explanation_metadata=META,
            explanation_parameters={"sampled_shapley_attribution": {"path_count": 0}},
        )
    m = upload()
    with pytest.raises(errors.InvalidArgument, match="neither the job's explanation_spec nor"):
        create(m, "no-spec")
    for method in ("integrated_gradients_attribution", "xrai_attribution"):
        with pytest.raises(errors.InvalidArgument, match="differentiable"):
            create(
                m,
                "ig",
                explanation_metadata=META,
                explanation_parameters={method: {"step_count": 50}},
            )
    with pytest.raises(errors.InvalidArgument, match=r"\[1, 50\]"):
        create(
            m,
            "paths",
            explanation_metadata=META,
            explanation_parameters={"sampled_shapley_attribution": {"path_count": 51}},
        )
    with pytest.raises(errors.InvalidArgument, match="input_tensor_name"):
        create(
            m,
            "tensor",
            explanation_metadata={"inputs": {"x": {"input_tensor_name": "x"}}, "outputs": {"y": {}}},
            explanation_parameters=PARAMS,
        )


def test_a_few_thousand_rows_explain_in_seconds(setup):
    stack, (model, rows) = setup
    m = upload(explanation_metadata=META, explanation_parameters=PARAMS)
    started = time.monotonic()
    job = create(m, "3000", source="iris3000.jsonl")
    took = time.monotonic() - started
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    assert job.completion_stats.successful_count == 3000
    assert took < 30, took  # about a second here; generous for loaded machines
    lines = gcs_lines(stack, job.output_info.gcs_output_directory)
    assert len(lines) == 3000
    check_attribution(lines[-1]["explanation"]["attributions"][0])


def test_cancel_stops_an_explanation_job(setup):
    import bpj

    stack, _ = setup
    lines = "".join(json.dumps([5.1 + i % 7, 3.5, 1.4, 0.2]) + "\n" for i in range(400_000))
    stack.gcs.write(f"gs://{BUCKET}/in/big.jsonl", lines.encode())
    m = upload(
        explanation_metadata=META, explanation_parameters={"sampled_shapley_attribution": {"path_count": 50}}
    )
    job = create(
        m,
        "cancel",
        source="big.jsonl",
        sync=False,
    )
    deadline = time.monotonic() + 60
    while bpj.BatchPredictionJob(job.resource_name).state != S.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    job.cancel()
    stopped = time.monotonic()
    while bpj.BatchPredictionJob(job.resource_name).state not in (
        S.JOB_STATE_CANCELLED,
        S.JOB_STATE_SUCCEEDED,
    ):
        assert time.monotonic() - stopped < 10, "the explanation job did not stop within 10 s of cancel"
        time.sleep(0.05)
    assert bpj.BatchPredictionJob(job.resource_name).state == S.JOB_STATE_CANCELLED


# -- the generated clients, gRPC and REST ----------------------------------------------------------------


def _model(clients, stack, **spec):
    _, models = clients
    model = types.Model(
        display_name="iris-gen",
        artifact_uri=f"gs://{BUCKET}/model",
        container_spec=types.ModelContainerSpec(image_uri=SKLEARN_IMAGE),
        **spec,
    )
    op = models.upload_model(types.UploadModelRequest(parent=_parent(stack), model=model))
    response = types.UploadModelResponse()
    op.response.Unpack(response)
    return response.model


def _parent(stack) -> str:
    return f"projects/{stack.project}/locations/{stack.location}"


def _create(jobs, stack, model: str, display_name: str, output_config, **fields):
    """Create a job on the iris JSONL input through the generated JobService client."""
    return jobs.create_batch_prediction_job(
        types.CreateBatchPredictionJobRequest(
            parent=_parent(stack),
            batch_prediction_job=types.BatchPredictionJob(
                display_name=display_name,
                model=model,
                input_config=types.BatchPredictionJob.InputConfig(
                    instances_format="jsonl",
                    gcs_source=types.GcsSource(uris=[f"gs://{BUCKET}/in/iris.jsonl"]),
                ),
                output_config=output_config,
                **fields,
            ),
        )
    )


def _gcs_output(prefix: str, fmt: str = "jsonl"):
    return types.BatchPredictionJob.OutputConfig(
        predictions_format=fmt, gcs_destination=types.GcsDestination(output_uri_prefix=prefix)
    )


def _spec(**params) -> types.ExplanationSpec:
    spec = types.ExplanationSpec()
    spec.metadata.inputs["features"].index_feature_mapping.extend(FEATURES)
    spec.metadata.outputs["probability"].SetInParent()
    spec.parameters.sampled_shapley_attribution.path_count = params.get("path_count", 5)
    return spec


def test_generated_clients_bigquery_output(setup, clients):
    stack, (model, rows) = setup
    jobs, _ = clients
    name = _model(clients, stack, explanation_spec=_spec())
    job = _create(
        jobs,
        stack,
        name,
        "explain-bq",
        types.BatchPredictionJob.OutputConfig(
            predictions_format="bigquery",
            bigquery_destination=types.BigQueryDestination(output_uri=f"bq://{stack.project}"),
        ),
        generate_explanation=True,
    )
    done = wait_for(
        lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)), job.name
    )
    assert done.state == S.JOB_STATE_SUCCEEDED, done.error
    dataset = done.output_info.bigquery_output_dataset.removeprefix(f"bq://{stack.project}.")
    table = stack.tables.read(stack.project, dataset, "predictions")
    assert table.column_names[-2:] == ["prediction", "explanation"]
    assert table.num_rows == len(rows)
    errors_table = stack.tables.read(stack.project, dataset, "errors")
    assert "explanation" not in errors_table.column_names
    for text in table.column("explanation").to_pylist()[:20]:
        [a] = json.loads(text)["attributions"]
        assert a["outputName"] == "probability"
        check_attribution(a)


def test_generated_clients_job_spec_csv_output(setup, clients):
    stack, _ = setup
    jobs, _ = clients
    name = _model(clients, stack)  # no spec on the model: the job's is the whole spec
    job = _create(
        jobs,
        stack,
        name,
        "explain-csv",
        _gcs_output(f"gs://{BUCKET}/out/csv", "csv"),
        generate_explanation=True,
        explanation_spec=_spec(path_count=3),
    )
    done = wait_for(
        lambda n: jobs.get_batch_prediction_job(types.GetBatchPredictionJobRequest(name=n)), job.name
    )
    assert done.state == S.JOB_STATE_SUCCEEDED, done.error
    import csv
    import io

    [uri] = stack.gcs.list(f"{done.output_info.gcs_output_directory}/predictions_*")
    records = list(csv.reader(io.StringIO(stack.gcs.read(uri).decode())))
    assert records[0][-2:] == ["prediction", "explanation"]
    [a] = json.loads(records[1][-1])["attributions"]
    check_attribution(a)


def test_generated_clients_refuse_a_spec_without_generate_explanation(setup, clients):
    stack, _ = setup
    jobs, _ = clients
    name = _model(clients, stack)
    with pytest.raises(errors.InvalidArgument, match="only if generate_explanation"):
        _create(
            jobs,
            stack,
            name,
            "explain-flag",
            _gcs_output(f"gs://{BUCKET}/out/flag"),
            explanation_spec=_spec(),
        )


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob"])
def test_an_xgboost_booster_is_explained(setup, tmp_path, objective):
    """model.bst under the XGBoost image: a binary booster's probability is one scalar output (no
    outputIndex), a softprob booster's classes are explained as a classifier's."""
    import warnings

    import xgboost

    import bpj

    stack, (_, rows) = setup
    x = np.array(rows)
    labels = np.repeat([0, 1, 2], 50)
    params = {"objective": objective, "max_depth": 3, "nthread": 1}
    if objective == "binary:logistic":
        labels = (labels == 2).astype(int)
    else:
        params["num_class"] = 3
    booster = xgboost.train(params, xgboost.DMatrix(x, label=labels), num_boost_round=5)
    with warnings.catch_warnings():  # .bst gets xgboost's default format
        warnings.simplefilter("ignore", UserWarning)
        booster.save_model(str(tmp_path / "model.bst"))
    directory = f"gs://{BUCKET}/xgb-{objective.split(':')[0]}"
    stack.gcs.write(f"{directory}/model.bst", (tmp_path / "model.bst").read_bytes())
    m = bpj.Model.upload(
        display_name="iris-xgb",
        artifact_uri=directory,
        serving_container_image_uri="us-docker.pkg.dev/vertex-ai/prediction/xgboost-cpu.2-1:latest",
        explanation_metadata={"inputs": {"features": {}}, "outputs": {"score": {}}},
        explanation_parameters={"sampled_shapley_attribution": {"path_count": 24}},
    )
    job = create(m, f"xgb-{objective.split(':')[0]}")
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    lines = gcs_lines(stack, job.output_info.gcs_output_directory)
    assert len(lines) == len(rows)
    outputs = booster.predict(xgboost.DMatrix(np.array([line["instance"] for line in lines])))
    for line, out in zip(lines, outputs, strict=True):
        [a] = line["explanation"]["attributions"]
        if objective == "binary:logistic":
            assert "outputIndex" not in a
            assert a["instanceOutputValue"] == pytest.approx(float(out))
        else:
            assert a["outputIndex"] == [int(np.argmax(out))]
        assert a["approximationError"] == 0  # 24 paths: every order of 4 features
        check_attribution(a, features=["features"])


def test_bigquery_in_and_out(setup):
    """A BigQuery source reaches the model as arrays in column order: index_feature_mapping names the
    columns, and the output rows keep the source's columns, then prediction and explanation."""
    import pyarrow as pa

    stack, (model, rows) = setup
    schema = pa.schema([(c, pa.float64()) for c in FEATURES])
    stack.tables.create_dataset(stack.project, "explain_src", exists_ok=True)
    stack.tables.create_table(stack.project, "explain_src", "iris", schema, exists_ok=True)
    stack.tables.append(
        stack.project,
        "explain_src",
        "iris",
        pa.Table.from_pylist([dict(zip(FEATURES, r, strict=True)) for r in rows], schema),
    )
    import bpj

    m = upload(explanation_metadata=META, explanation_parameters=PARAMS)
    job = bpj.BatchPredictionJob.create(
        job_display_name="explain-bq-in",
        model_name=m.resource_name,
        instances_format="bigquery",
        predictions_format="bigquery",
        bigquery_source=f"bq://{stack.project}.explain_src.iris",
        bigquery_destination_prefix=f"bq://{stack.project}",
        generate_explanation=True,
    )
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    dataset = job.output_info.bigquery_output_dataset.removeprefix(f"bq://{stack.project}.")
    table = stack.tables.read(stack.project, dataset, "predictions")
    assert table.column_names == [*FEATURES, "prediction", "explanation"]
    assert table.schema.field("sepal_length").type == pa.float64()
    for row in table.to_pylist()[::15]:
        [a] = json.loads(row["explanation"])["attributions"]
        assert a["outputIndex"] == [json.loads(row["prediction"])]
        check_attribution(a)


ROUTINE = '''
class Price:
    """price = 2 * rooms + area + the model parameters' bias; a missing area counts 0."""

    def load(self, artifacts):
        pass

    def predict(self, body):
        bias = body.get("parameters", {}).get("bias", 0)
        return {"predictions": [2 * i["rooms"] + i.get("area", 0) + bias for i in body["instances"]]}
'''


def test_a_custom_routine_on_objects_and_an_instance_that_cannot_be_explained(setup):
    """Object instances are explained field by field through the routine (with the job's parameters); an
    instance the routine predicts but that lacks an input field goes to the errors output, the job succeeds."""
    import bpj

    stack, _ = setup
    stack.gcs.write(f"gs://{BUCKET}/routine/price.py", ROUTINE.encode())
    instances = [{"rooms": 3, "area": 50, "id": "a"}, {"rooms": 1, "id": "b"}]
    stack.gcs.write(
        f"gs://{BUCKET}/in/houses.jsonl", "".join(json.dumps(i) + "\n" for i in instances).encode()
    )
    m = bpj.Model.upload(
        display_name="price",
        artifact_uri=f"gs://{BUCKET}/routine",
        serving_container_image_uri="europe-docker.pkg.dev/my-project/serving/price:1",
        serving_container_environment_variables={"BPJ_PREDICTOR": "price:Price"},
        explanation_metadata={
            "inputs": {"rooms": {"input_baselines": [1]}, "area": {}},
            "outputs": {"price": {}},
        },
        explanation_parameters={"sampled_shapley_attribution": {"path_count": 2}},
    )
    job = create(m, "routine", source="houses.jsonl", model_parameters={"bias": 7})
    assert job.state == S.JOB_STATE_SUCCEEDED, job.error
    [line] = gcs_lines(stack, job.output_info.gcs_output_directory)
    [a] = line["explanation"]["attributions"]
    assert line["prediction"] == 63
    assert a["featureAttributions"] == {"area": 50.0, "rooms": 4.0}
    assert (a["baselineOutputValue"], a["instanceOutputValue"], a["approximationError"]) == (9.0, 63.0, 0.0)
    [error] = gcs_lines(stack, job.output_info.gcs_output_directory, "errors")
    assert error["instance"] == instances[1]
    assert error["error"]["status"] == "INVALID_ARGUMENT"
    assert "no field 'area'" in error["error"]["message"]
    assert job.completion_stats.failed_count == 1
