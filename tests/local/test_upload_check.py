"""Model upload on the local stack checks the artifacts as Vertex AI does at upload time: the model file its
prebuilt container loads, or the module its custom prediction routine names, must be under artifact_uri. Over
gRPC and REST, against the stack's real GCS."""

from __future__ import annotations

import secrets

import pytest

from bpj import errors, types
from tests.local.conftest import SKLEARN_IMAGE

PARENT = "projects/bpj-local/locations/us-central1"


def upload(
    models,
    artifact_uri: str,
    *,
    image: str = SKLEARN_IMAGE,
    env: dict[str, str] | None = None,
    display_name: str = "checked",
):
    model = types.Model(display_name=display_name, artifact_uri=artifact_uri)
    model.container_spec.image_uri = image
    model.container_spec.env.extend(types.EnvVar(name=k, value=v) for k, v in (env or {}).items())
    op = models.upload_model(types.UploadModelRequest(parent=PARENT, model=model))
    response = types.UploadModelResponse()
    assert op.response.Unpack(response)
    return response.model


@pytest.fixture
def directory(stack):
    stack.gcs.create_bucket("upload-check")
    return f"gs://upload-check/{secrets.token_hex(4)}"


def test_an_empty_directory_is_refused_naming_what_it_needs(clients, stack, directory):
    _, models = clients
    refused = f"refused-{secrets.token_hex(4)}"
    with pytest.raises(errors.FailedPrecondition) as info:
        upload(models, directory, display_name=refused)
    message = info.value.message
    assert directory in message and "model.joblib" in message and "(it is empty)" in message
    stack.gcs.write(f"{directory}/README.txt", b"not a model")
    with pytest.raises(errors.FailedPrecondition, match="it holds README.txt"):
        upload(models, directory, display_name=refused)
    names = [m.display_name for m in models.list_models(types.ListModelsRequest(parent=PARENT)).models]
    assert refused not in names  # nothing stored for a refused upload


def test_the_model_file_makes_it_pass(clients, stack, directory, iris):
    _, models = clients
    from tests.local.conftest import joblib_bytes

    stack.gcs.write(f"{directory}/model.joblib", joblib_bytes(iris[0]))
    name = upload(models, directory)
    assert models.get_model(types.GetModelRequest(name=name)).artifact_uri == directory
    # Two candidate files are as ambiguous at upload as when a job loads them.
    stack.gcs.write(f"{directory}/model.pkl", joblib_bytes(iris[0]))
    with pytest.raises(errors.FailedPrecondition, match="both model.joblib and model.pkl"):
        upload(models, directory)


def test_a_routine_needs_its_module(clients, stack, directory):
    _, models = clients
    env = {"BPJ_PREDICTOR": "predictor:Routine"}
    with pytest.raises(errors.FailedPrecondition, match=r"has no predictor\.py"):
        upload(models, directory, image="example.com/serving:1", env=env)
    stack.gcs.write(f"{directory}/predictor.py", b"class Routine: ...\n")
    assert upload(models, directory, image="example.com/serving:1", env=env).startswith(PARENT)


def test_artifacts_outside_the_stack_are_refused_at_upload(clients):
    _, models = clients
    for uri in ("file:///etc", "/etc"):
        with pytest.raises(errors.InvalidArgument, match="model.artifact_uri.*Must be a gs:// URI"):
            upload(models, uri)
    with pytest.raises(errors.FailedPrecondition, match=r"cannot hold \*"):
        upload(models, "gs://upload-check/*")


def test_no_artifact_uri_is_accepted(clients):
    # Vertex AI takes a model without artifacts (a custom container that carries its own); the local stack
    # says why it cannot run one when a job asks, not at upload.
    _, models = clients
    assert upload(models, "").startswith(f"{PARENT}/models/")
