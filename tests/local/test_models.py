"""bpj.local.models: real scikit-learn and XGBoost models saved as Vertex AI expects, custom prediction
routines written to disk and loaded through a dict standing in for the stack's GCS (the only place the local
stack reads artifacts from)."""

from __future__ import annotations

import pickle
import sys
import textwrap
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import xgboost
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bpj import types
from bpj.errors import FailedPrecondition
from bpj.local.models import load_predictor, predict_isolating_errors

SKLEARN = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
XGBOOST = "us-docker.pkg.dev/vertex-ai/prediction/xgboost-cpu.2-1:latest"
OTHER = "europe-docker.pkg.dev/my-project/serving/model-server:1"

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)


class FakeGcs:
    """Objects in a dict, behind the two callables the executor passes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_dir(self, prefix: str, directory: Path) -> str:
        for p in directory.rglob("*"):
            if p.is_file():
                self.objects[f"{prefix}/{p.relative_to(directory).as_posix()}"] = p.read_bytes()
        return prefix

    def fetch(self, uri: str) -> bytes:
        return self.objects[uri]

    def list_dir(self, prefix: str) -> list[str]:
        return [u for u in self.objects if u.startswith(prefix)]


def no_fetch(uri: str) -> bytes:
    raise AssertionError(f"fetch({uri}) for an artifact_uri that must be refused")


def no_list(prefix: str) -> list[str]:
    raise AssertionError(f"list_dir({prefix}) for an artifact_uri that must be refused")


def gs(directory: Path) -> str:
    """The gs:// URI a local directory of artifacts is uploaded to."""
    return f"gs://bucket/models/{directory.name}"


def model_of(uri: str, image: str = SKLEARN, env: dict[str, str] | None = None) -> types.Model:
    return types.Model(
        display_name="m",
        artifact_uri=uri,
        container_spec=types.ModelContainerSpec(
            image_uri=image, env=[types.EnvVar(name=k, value=v) for k, v in (env or {}).items()]
        ),
    )


def save(directory: Path, file: str, obj: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if file == "model.joblib":
        joblib.dump(obj, directory / file)
    elif file == "model.pkl":
        (directory / file).write_bytes(pickle.dumps(obj))
    else:
        with warnings.catch_warnings():  # xgboost notes that .bst gets its default (UBJSON) format
            warnings.simplefilter("ignore", UserWarning)
            obj.save_model(str(directory / file))  # type: ignore[attr-defined]
    return directory


def from_dir(
    directory: Path, image: str = SKLEARN, env: dict[str, str] | None = None, workdir: Path | None = None
):
    """Upload ``directory`` to a fake GCS at ``gs(directory)`` (beside another model) and load it from there."""
    gcs = FakeGcs()
    uri = gcs.put_dir(gs(directory), directory)
    gcs.objects["gs://bucket/models/other/model.pkl"] = b"not this one"
    workdir = workdir if workdir is not None else directory.parent / "work"
    return load_predictor(model_of(uri, image, env), gcs.fetch, gcs.list_dir, workdir)


# -- the models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logistic():
    return LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)


@pytest.fixture(scope="module")
def models(logistic):
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(CANCER_X, label=CANCER_Y),
        num_boost_round=10,
    )
    return {
        "logistic": (logistic, IRIS_X),
        "forest": (RandomForestClassifier(n_estimators=15, random_state=0).fit(IRIS_X, IRIS_Y), IRIS_X),
        "pipeline": (
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(CANCER_X, CANCER_Y),
            CANCER_X,
        ),
        "booster": (booster, CANCER_X),
        "xgbclassifier": (
            xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(IRIS_X, IRIS_Y),
            IRIS_X,
        ),
    }


def expected(model: object, rows: np.ndarray) -> list:
    if isinstance(model, xgboost.Booster):
        return model.predict(xgboost.DMatrix(rows)).tolist()
    return model.predict(rows).tolist()  # type: ignore[attr-defined]


CASES = [
    ("logistic", "model.joblib", SKLEARN),
    ("logistic", "model.pkl", SKLEARN),
    ("forest", "model.pkl", SKLEARN),
    ("pipeline", "model.joblib", SKLEARN),
    ("booster", "model.bst", XGBOOST),
    ("xgbclassifier", "model.joblib", XGBOOST),
    ("xgbclassifier", "model.pkl", XGBOOST),
    ("xgbclassifier", "model.pkl", SKLEARN),  # the sklearn-API wrapper is a scikit-learn estimator
    ("booster", "model.bst", OTHER),  # not a prebuilt image: chosen by file
    ("pipeline", "model.joblib", OTHER),
]


@pytest.mark.parametrize(("name", "file", "image"), CASES)
def test_predictions_equal_model_predict(models, tmp_path, name, file, image):
    model, x = models[name]
    predictor = from_dir(save(tmp_path / "m", file, model), image)
    rows = x[::7]
    got = predictor.predict(rows.tolist())
    assert got == expected(model, rows)
    assert all(type(v) in (int, float) for v in got)
    assert predict_isolating_errors(predictor, rows.tolist()) == [(True, v) for v in got]


def test_gcs_reads_only_the_model_file(models, tmp_path):
    gcs = FakeGcs()
    uri = gcs.put_dir("gs://bkt/m", save(tmp_path / "m", "model.joblib", models["logistic"][0]))
    gcs.objects["gs://bkt/m/README.md"] = b"notes"
    gcs.objects["gs://bkt/m/"] = b""  # a "directory" placeholder object
    fetched: list[str] = []

    def fetch(u: str) -> bytes:
        fetched.append(u)
        return gcs.fetch(u)

    load_predictor(model_of(uri + "/"), fetch, gcs.list_dir, tmp_path)
    assert fetched == ["gs://bkt/m/model.joblib"]


# -- error isolation -------------------------------------------------------------------------------

BAD_KINDS = st.sampled_from(["short", "long", "text", "none", "dict", "nested"])


def malformed(kind: str, row: list[float]) -> object:
    return {
        "short": row[:2],
        "long": row + [1.0],
        "text": [row[0], "sepal", row[2], row[3]],
        "none": [None, row[1], row[2], row[3]],
        "dict": {"sepal_length": row[0]},
        "nested": [row, row],
    }[kind]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_malformed_instances_fail_alone(logistic, n, data):
    bad = data.draw(st.dictionaries(st.integers(0, n - 1), BAD_KINDS, max_size=n))
    rows = [IRIS_X[(i * 11) % len(IRIS_X)].tolist() for i in range(n)]
    instances = [malformed(bad[i], r) if i in bad else r for i, r in enumerate(rows)]
    predictor = from_dir(_saved(logistic))
    out = predict_isolating_errors(predictor, instances)
    good = [i for i in range(n) if i not in bad]
    want = logistic.predict(np.asarray([rows[i] for i in good])).tolist() if good else []
    assert [out[i] for i in good] == [(True, v) for v in want]
    for i in bad:
        ok, (code, message) = out[i]
        assert not ok and code == "INVALID_ARGUMENT" and message


_SAVED: dict[int, Path] = {}


def _saved(model: object) -> Path:
    # hypothesis runs the body many times; save the model once per session.
    if id(model) not in _SAVED:
        import tempfile

        _SAVED[id(model)] = save(Path(tempfile.mkdtemp()), "model.joblib", model)
    return _SAVED[id(model)]


def test_model_error_message_is_the_models_text(models, tmp_path):
    predictor = from_dir(save(tmp_path / "m", "model.joblib", models["logistic"][0]))
    out = predict_isolating_errors(predictor, [IRIS_X[0].tolist(), [1.0, 2.0]])
    assert out[0][0] is True
    assert out[1] == (
        False,
        ("INVALID_ARGUMENT", "X has 2 features, but LogisticRegression is expecting 4 features as input."),
    )


class Counting:
    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def predict(self, instances, parameters=None):
        self.calls += 1
        return self.inner.predict(instances, parameters)


def test_halving_not_one_by_one(logistic, tmp_path):
    predictor = Counting(from_dir(save(tmp_path / "m", "model.joblib", logistic)))
    instances = IRIS_X[:64].tolist()
    instances[37] = "oops"
    out = predict_isolating_errors(predictor, instances)
    assert [i for i, (ok, _) in enumerate(out) if not ok] == [37]
    assert predictor.calls == 1 + 2 * 6  # one failed batch, then two halves per level down to one instance


class WrongCount:
    def predict(self, instances, parameters=None):
        return [0] * (len(instances) + 1)


def test_wrong_number_of_predictions_fails_the_batch():
    out = predict_isolating_errors(WrongCount(), [[1], [2], [3]])
    assert (
        out
        == [
            (
                False,
                (
                    "INTERNAL",
                    "the predictor returned 4 predictions for 3 instances; it must return one per instance",
                ),
            )
        ]
        * 3
    )


def test_empty_batch(logistic, tmp_path):
    assert predict_isolating_errors(Counting(WrongCount()), []) == []


# -- custom prediction routines --------------------------------------------------------------------

PREDICTOR = """
import os

import joblib
import numpy as np

from helpers import LABELS


class IrisPredictor:
    def load(self, artifacts_uri):
        self.model = joblib.load(os.path.join(artifacts_uri, "model.joblib"))

    def preprocess(self, prediction_input):
        self.scale = (prediction_input.get("parameters") or {}).get("scale", 1.0)
        return np.asarray([[i["sl"], i["sw"], i["pl"], i["pw"]] for i in prediction_input["instances"]])

    def predict(self, instances):
        return self.model.predict(instances * self.scale)

    def postprocess(self, prediction_results):
        return {"predictions": [{"label": LABELS[int(c)], "class": int(c)} for c in prediction_results]}
"""


def iris_instance(row: np.ndarray) -> dict[str, float]:
    return dict(zip(["sl", "sw", "pl", "pw"], row.tolist(), strict=True))


def write_cpr(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def test_custom_prediction_routine(logistic, tmp_path):
    d = write_cpr(
        tmp_path / "m",
        {"predictor.py": PREDICTOR, "helpers.py": "LABELS = ['setosa', 'versicolor', 'virginica']"},
    )
    joblib.dump(logistic, d / "model.joblib")  # with BPJ_PREDICTOR set, the routine loads it, not bpj
    predictor = from_dir(d, OTHER, {"BPJ_PREDICTOR": "predictor:IrisPredictor"})
    rows = IRIS_X[::5]
    classes = logistic.predict(rows).tolist()
    names = ["setosa", "versicolor", "virginica"]
    assert predictor.predict([iris_instance(r) for r in rows]) == [
        {"label": names[c], "class": c} for c in classes
    ]
    assert predictor.predict([iris_instance(rows[0])], {"scale": 0.0}) == [
        {"label": names[logistic.predict(rows[:1] * 0)[0]], "class": int(logistic.predict(rows[:1] * 0)[0])}
    ]
    assert "predictor" not in sys.modules and "helpers" not in sys.modules
    out = predict_isolating_errors(predictor, [iris_instance(rows[0]), {"sl": 1.0}, iris_instance(rows[1])])
    assert out[0] == (True, {"label": names[classes[0]], "class": classes[0]})
    assert out[1] == (False, ("INVALID_ARGUMENT", "KeyError: 'sw'"))
    assert out[2][0] is True


def test_routines_with_the_same_module_names_stay_apart(tmp_path):
    predictors = []
    for k in (1, 2):
        code = "from helpers import K\nclass P:\n    def load(self, d): pass\n    def predict(self, x): return [K * v for v in x['instances']]\n"
        d = write_cpr(tmp_path / f"m{k}", {"predictor.py": code, "helpers.py": f"K = {k}"})
        predictors.append(from_dir(d, OTHER, {"BPJ_PREDICTOR": "predictor:P"}))
    assert [p.predict([1, 2]) for p in predictors] == [[1, 2], [2, 4]]
    assert not {"predictor", "helpers"} & set(sys.modules)


def test_routine_in_a_package_without_pre_or_postprocess(tmp_path):
    d = write_cpr(
        tmp_path / "m",
        {
            "serving/__init__.py": "",
            "serving/routine.py": "from .util import double\nclass R:\n    def load(self, d):\n        self.d = d\n    def predict(self, body):\n        return double(body['instances'])\n",
            "serving/util.py": "import numpy\ndef double(x):\n    return numpy.asarray(x) * 2\n",
        },
    )
    predictor = from_dir(d, SKLEARN, {"BPJ_PREDICTOR": "serving.routine:R"})
    assert predictor.predict([1, 2.5]) == [2, 5.0]
    assert predictor.routine.d != str(d) and Path(predictor.routine.d, "serving", "util.py").is_file()  # type: ignore[attr-defined]


def test_routine_returning_something_else_fails_the_batch(tmp_path):
    d = write_cpr(
        tmp_path / "m",
        {"p.py": "class P:\n    def load(self, d): pass\n    def predict(self, x): return 'nope'\n"},
    )
    predictor = from_dir(d, OTHER, {"BPJ_PREDICTOR": "p:P"})
    out = predict_isolating_errors(predictor, [1, 2])
    assert out[0] == out[1]
    assert out[0][1][0] == "INTERNAL" and 'must return {"predictions": [...]} or a list' in out[0][1][1]


def test_routine_raising_api_errors_keeps_their_code(tmp_path):
    code = (
        "from bpj.errors import PermissionDenied\nclass P:\n    def load(self, d): pass\n"
        "    def predict(self, x):\n"
        "        if 'secret' in x['instances']:\n            raise PermissionDenied('no secrets')\n"
        "        return x['instances']\n"
    )
    d = write_cpr(tmp_path / "m", {"p.py": code})
    predictor = from_dir(d, OTHER, {"BPJ_PREDICTOR": "p:P"})
    assert predict_isolating_errors(predictor, ["a", "secret", "b"]) == [
        (True, "a"),
        (False, ("PERMISSION_DENIED", "no secrets")),
        (True, "b"),
    ]


# -- what cannot be loaded -------------------------------------------------------------------------


def error_of(
    directory: Path, image: str = SKLEARN, env: dict[str, str] | None = None, uri: str | None = None
) -> str:
    with pytest.raises(FailedPrecondition) as info:
        if uri is None:
            from_dir(directory, image, env)
        else:
            load_predictor(model_of(uri, image, env), no_fetch, no_list, directory.parent)
    return info.value.message


def test_missing_files(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    assert (
        error_of(d)
        == f"{gs(d)} has neither model.joblib nor model.pkl (it is empty); a scikit-learn model needs exactly one of model.joblib or model.pkl (image {SKLEARN})"
    )
    (d / "model.bst").write_bytes(b"x")
    assert (
        error_of(d)
        == f"{gs(d)} has neither model.joblib nor model.pkl (it holds model.bst); a scikit-learn model needs exactly one of model.joblib or model.pkl (image {SKLEARN})"
    )
    (d / "model.bst").unlink()
    (d / "saved_model.pb").write_bytes(b"x")
    assert error_of(d, XGBOOST).startswith(
        f"{gs(d)} has neither model.bst, model.joblib nor model.pkl (it holds saved_model.pb); an XGBoost model needs exactly one of model.bst, model.joblib or model.pkl"
    )
    message = error_of(d, OTHER)
    assert message.startswith(
        f"{gs(d)} has neither model.joblib, model.pkl nor model.bst (it holds saved_model.pb), and the container spec has no BPJ_PREDICTOR;"
    )
    assert "BPJ_PREDICTOR=module:ClassName" in message


def test_gcs_missing_files(tmp_path):
    gcs = FakeGcs()
    gcs.objects["gs://bkt/m2/model.joblib"] = b"a neighbour, not under gs://bkt/m/"
    with pytest.raises(
        FailedPrecondition, match=r"gs://bkt/m has neither model.joblib nor model.pkl \(it is empty\)"
    ):
        load_predictor(model_of("gs://bkt/m"), gcs.fetch, gcs.list_dir, tmp_path)


def test_two_candidates(models, tmp_path):
    d = save(tmp_path / "m", "model.joblib", models["logistic"][0])
    save(d, "model.pkl", models["logistic"][0])
    assert (
        error_of(d)
        == f"{gs(d)} has both model.joblib and model.pkl; a scikit-learn model needs exactly one of model.joblib or model.pkl"
    )
    save(d, "model.bst", models["booster"][0])
    assert error_of(d, XGBOOST).startswith(
        f"{gs(d)} has all of model.bst, model.joblib and model.pkl; an XGBoost"
    )
    (d / "model.pkl").unlink()
    assert error_of(d, OTHER).startswith(f"{gs(d)} has both model.joblib and model.bst;")


def test_unloadable_files(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.joblib").write_bytes(b"\x00garbage")
    assert error_of(d).startswith(f"cannot load {gs(d)}/model.joblib: ")
    (d / "model.joblib").unlink()
    (d / "model.pkl").write_bytes(pickle.dumps({"coef": [1, 2]}))
    assert error_of(d) == f"cannot load {gs(d)}/model.pkl: it holds a dict, which has no predict method"
    (d / "model.pkl").write_bytes(b"cnot_installed_anywhere\nModel\n)R.")
    assert (
        error_of(d)
        == f"cannot load {gs(d)}/model.pkl: ModuleNotFoundError: No module named 'not_installed_anywhere'"
    )
    (d / "model.pkl").unlink()
    (d / "model.bst").write_bytes(b"not a booster")
    assert error_of(d, XGBOOST).startswith(f"cannot load {gs(d)}/model.bst: XGBoostError")


def test_unreadable_gcs_object(tmp_path):
    gcs = FakeGcs()
    gcs.objects["gs://bkt/m/model.joblib"] = b""

    def fetch(uri: str) -> bytes:
        raise OSError(f"503 reading {uri}")

    with pytest.raises(
        FailedPrecondition,
        match=r": cannot read gs://bkt/m/model.joblib: OSError: 503 reading gs://bkt/m/model.joblib$",
    ):
        load_predictor(model_of("gs://bkt/m"), fetch, gcs.list_dir, tmp_path)


def test_unlistable_gcs_prefix(tmp_path):
    def list_dir(prefix: str) -> list[str]:
        raise OSError("404 bucket b not found")

    with pytest.raises(
        FailedPrecondition, match=r": cannot list gs://bkt/m/: OSError: 404 bucket b not found$"
    ):
        load_predictor(model_of("gs://bkt/m"), no_fetch, list_dir, tmp_path)


def test_bad_artifact_uris(tmp_path):
    assert (
        error_of(tmp_path, uri="")
        == "m has no artifact_uri; the local stack loads models from their artifacts"
    )
    d = save(tmp_path / "my models" / "v1", "model.joblib", {"a": "model that must never be read"})
    for uri in (str(d), d.as_uri(), "s3://bkt/m", f"gs:{d}", f"GS://{d}"):
        assert error_of(tmp_path, uri=uri) == (
            f"artifact_uri {uri} is not supported; the local stack reads artifacts only from its own Cloud "
            "Storage: upload the model directory to gs://bucket/path on the stack's GCS and use that gs:// URI "
            "as artifact_uri"
        )
    assert "does not name a valid object" in error_of(tmp_path, uri="gs://bkt/m/../other")
    assert "does not name a valid bucket ('')" in error_of(tmp_path, uri=f"gs://{d}")
    assert (
        error_of(tmp_path, uri="gs://bkt/m*")
        == "artifact_uri gs://bkt/m* is a directory, so it cannot hold *, ? or ["
    )


@pytest.mark.parametrize(
    ("files", "env", "message"),
    [
        (
            {},
            "predictor",
            "BPJ_PREDICTOR='predictor' is not module:ClassName (e.g. predictor:MyPredictor, with predictor.py in {d})",
        ),
        (
            {"other.py": ""},
            "predictor:P",
            "BPJ_PREDICTOR=predictor:P names module predictor, but {d} has no predictor.py (it holds other.py); put the predictor's source files in the artifact directory",
        ),
        (
            {"predictor.py": "class Q: pass\n"},
            "predictor:P",
            "BPJ_PREDICTOR=predictor:P: module predictor has no class P",
        ),
        (
            {"predictor.py": "class P(:\n"},
            "predictor:P",
            "BPJ_PREDICTOR=predictor:P: importing predictor.py failed: SyntaxError: ",
        ),
        (
            {"predictor.py": "import not_installed_anywhere\n"},
            "predictor:P",
            "BPJ_PREDICTOR=predictor:P: importing predictor.py failed: ModuleNotFoundError: No module named 'not_installed_anywhere'",
        ),
        (
            {"predictor.py": "class P:\n    def load(self, d): pass\n"},
            "predictor:P",
            "BPJ_PREDICTOR=predictor:P: P has no predict method; a custom prediction routine needs load(artifacts_uri) and predict(instances)",
        ),
        (
            {
                "predictor.py": "class P:\n    def load(self, d): raise FileNotFoundError('model.pt')\n    def predict(self, x): return x\n"
            },
            "predictor:P",
            "BPJ_PREDICTOR=predictor:P: P.load(",
        ),
    ],
)
def test_routine_errors(tmp_path, files, env, message):
    d = write_cpr(tmp_path / "m", files)
    got = error_of(d, OTHER, {"BPJ_PREDICTOR": env})
    assert got.startswith(message.format(d=gs(d)))
    if message.endswith("P.load("):
        assert got.endswith(") failed: FileNotFoundError: model.pt")
    assert not {"predictor", "not_installed_anywhere"} & set(sys.modules)
