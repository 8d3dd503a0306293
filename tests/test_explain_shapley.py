"""bpj.local.explain against an independent reference: exact Shapley values by brute force over every
coalition, efficiency for any model, instance, baselines and path count (hypothesis), how calibrated the
reported approximation error is, and the spec rules."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import xgboost
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeRegressor

from bpj import types
from bpj.local.explain import (
    Explainer,
    effective_spec,
    job_problems,
    permutations,
    sampled_shapley,
    spec_problems,
)
from bpj.local.models import BoosterPredictor, SklearnPredictor

IRIS_X, IRIS_Y = load_iris(return_X_y=True)


def exact_shapley(f, x, baselines):
    """Shapley values of ``f`` at ``x`` by the definition: for every feature i and coalition S of the others,
    weight |S|! (d - |S| - 1)! / d! times v(S + i) - v(S), where v(S) is f with S's features from x and the
    rest from the baseline; averaged over the baselines. -> (d, k)."""
    d = len(x)
    coalitions = [frozenset(c) for size in range(d + 1) for c in itertools.combinations(range(d), size)]
    total = 0
    for base in baselines:
        rows = np.array([np.where([j in c for j in range(d)], x, base) for c in coalitions])
        outputs = np.asarray(f(rows), dtype=float).reshape(len(coalitions), -1)
        v = dict(zip(coalitions, outputs, strict=True))
        phi = np.zeros((d, outputs.shape[1]))
        for i in range(d):
            for c in coalitions:
                if i not in c:
                    weight = math.factorial(len(c)) * math.factorial(d - len(c) - 1) / math.factorial(d)
                    phi[i] += weight * (v[c | {i}] - v[c])
        total = total + phi
    return total / len(baselines)


def spec(path_count, *, inputs=None, outputs=None, **params):
    from google.protobuf import json_format

    body = {
        "parameters": {"sampled_shapley_attribution": {"path_count": path_count}, **params},
        "metadata": {"inputs": inputs or {"features": {}}, "outputs": outputs or {"out": {}}},
    }
    return json_format.ParseDict(body, types.ExplanationSpec())


@pytest.fixture(scope="module")
def iris_mlp():
    return MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0).fit(IRIS_X, IRIS_Y)


# -- exact on 4 features --------------------------------------------------------------------------------


@pytest.mark.parametrize("path_count", [24, 50])
def test_all_permutations_give_the_exact_shapley_values_and_error_0(iris_mlp, path_count):
    base = np.array([[5.8, 3.0, 4.3, 1.3], [4.0, 2.0, 1.0, 0.1]])
    x = IRIS_X[::10]
    perms, exact = permutations(4, path_count)
    assert exact and len(perms) == 24
    result = sampled_shapley(iris_mlp.predict_proba, x, base, perms, exact=exact)
    for i, row in enumerate(x):
        reference = exact_shapley(iris_mlp.predict_proba, row, base)
        np.testing.assert_allclose(result["phi"][i], reference, atol=1e-12)
    assert not result["error"].any()


def test_sampled_values_are_within_the_reported_error_of_the_exact_ones(iris_mlp):
    """For 8 of 24 paths the distance to the exact values, over the reported error (as an absolute size),
    is about 1 for a typical instance and rarely above 3: the error is a calibrated standard error."""
    base = np.array([[5.8, 3.0, 4.3, 1.3]])
    perms, exact = permutations(4, 8)
    assert not exact
    result = sampled_shapley(iris_mlp.predict_proba, IRIS_X, base, perms)
    ratios = []
    for i, row in enumerate(IRIS_X):
        k = int(np.argmax(result["output"][i]))
        reference = exact_shapley(iris_mlp.predict_proba, row, base)[:, k]
        reported = result["error"][i, k] * np.abs(result["phi"][i, :, k]).sum()
        ratios.append(np.linalg.norm(result["phi"][i, :, k] - reference) / reported)
    ratios = np.array(ratios)
    assert np.median(ratios) < 1.5, np.median(ratios)
    assert np.mean(ratios <= 3) >= 0.95, np.sort(ratios)[-10:]


# -- efficiency, whatever the model ---------------------------------------------------------------------


@functools.cache
def _model(kind, d, seed):
    x, y = make_regression(n_samples=60, n_features=d, random_state=seed)
    if kind == "linear":
        return SklearnPredictor(LinearRegression().fit(x, y), "linear"), x
    if kind == "tree":
        return SklearnPredictor(DecisionTreeRegressor(max_depth=4, random_state=seed).fit(x, y), "tree"), x
    labels = (y > np.median(y)).astype(int) + (y > np.quantile(y, 0.8)).astype(int)
    if kind == "forest":
        forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=seed).fit(x, labels)
        return SklearnPredictor(forest, "forest"), x
    if kind == "logistic":
        return SklearnPredictor(LogisticRegression(max_iter=300).fit(x, labels), "logistic"), x
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "seed": seed}
    booster = xgboost.train(params, xgboost.DMatrix(x, label=labels), num_boost_round=5)
    return BoosterPredictor(booster, "booster"), x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["linear", "tree", "forest", "logistic", "booster"]),
    d=st.integers(1, 7),
    seed=st.integers(0, 3),
    path_count=st.integers(1, 50),
    baselines=st.integers(0, 3),
    top_k=st.sampled_from([0, 1, 2, -1]),
    data=st.data(),
)
def test_attributions_sum_to_instance_minus_baseline_output(
    kind, d, seed, path_count, baselines, top_k, data
):
    predictor, x = _model(kind, d, seed)
    rows = data.draw(st.lists(st.sampled_from(range(len(x))), min_size=1, max_size=6))
    scale = float(np.abs(x).max())
    number = st.floats(-scale, scale, allow_nan=False)
    base = [data.draw(st.one_of(number, st.lists(number, min_size=d, max_size=d))) for _ in range(baselines)]
    inputs = {"features": {"input_baselines": base}}
    payloads = [[float(v) for v in x[r]] for r in rows]
    results = Explainer(spec(path_count, inputs=inputs, top_k=top_k)).explain(predictor, payloads)
    for ok, explanation in results:
        assert ok, explanation
        for a in explanation["attributions"]:
            values = a["featureAttributions"]["features"]
            assert len(values) == d
            gap = a["instanceOutputValue"] - a["baselineOutputValue"]
            assert sum(values) == pytest.approx(gap, abs=1e-9 * max(1.0, abs(gap), scale))
            assert a["approximationError"] >= 0
            assert a["outputName"] == "out"


# -- what an explanation looks like -------------------------------------------------------------------


def test_a_regressor_is_a_scalar_output_and_a_classifier_its_predicted_class():
    regressor = SklearnPredictor(LinearRegression().fit(IRIS_X, IRIS_Y), "r")
    [(ok, e)] = Explainer(spec(24)).explain(regressor, [list(IRIS_X[0])])
    [a] = e["attributions"]
    assert "outputIndex" not in a and "outputDisplayName" not in a
    assert a["approximationError"] == 0
    # A linear model's exact Shapley values against baseline 0: coefficient times value.
    np.testing.assert_allclose(
        a["featureAttributions"]["features"], regressor.model.coef_ * IRIS_X[0], atol=1e-9
    )

    classifier = SklearnPredictor(LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y), "c")
    outputs = {"species": {"index_display_name_mapping": ["setosa", "versicolor", "virginica"]}}
    inputs = {"features": {"index_feature_mapping": ["a", "b", "c", "d"]}}
    explainer = Explainer(spec(10, inputs=inputs, outputs=outputs, output_indices=[2, 0]))
    [(ok, e)] = explainer.explain(classifier, [list(IRIS_X[60])])
    assert [a["outputIndex"] for a in e["attributions"]] == [[2], [0]]
    assert [a["outputDisplayName"] for a in e["attributions"]] == ["virginica", "setosa"]
    assert list(e["attributions"][0]["featureAttributions"]) == ["a", "b", "c", "d"]


class _Objects:
    """A custom routine taking objects: price = 2 * rooms + area + the parameters' bias (the other fields are
    ignored)."""

    def predict(self, instances, parameters=None):
        return [2 * i["rooms"] + i["area"] + parameters["bias"] for i in instances]


def test_object_instances_are_explained_by_field():
    inputs = {"rooms": {"input_baselines": [1]}, "area": {}}
    results = Explainer(spec(2, inputs=inputs)).explain(
        _Objects(), [{"rooms": 3, "area": 50, "id": "a"}, {"rooms": 1, "id": "b"}, [1, 2]], {"bias": 7}
    )
    ok, e = results[0]
    [a] = e["attributions"]
    assert ok and a["featureAttributions"] == {"area": 50.0, "rooms": 4.0}
    assert (a["baselineOutputValue"], a["instanceOutputValue"]) == (9.0, 63.0)
    assert results[1] == (False, ("INVALID_ARGUMENT", results[1][1][1]))
    assert "no field 'area'" in results[1][1][1]
    assert results[2][1][1].startswith("Nameless input are allowed only if there is a single input")


# -- the spec -------------------------------------------------------------------------------------------


def test_the_job_spec_overrides_the_models_field_by_field():
    model = types.Model(explanation_spec=spec(5))
    job = types.BatchPredictionJob(generate_explanation=True, model="projects/p/locations/l/models/1")
    assert effective_spec(job, model) == model.explanation_spec
    job.explanation_spec.parameters.sampled_shapley_attribution.path_count = 9
    merged = effective_spec(job, model)
    assert merged.parameters.sampled_shapley_attribution.path_count == 9
    assert merged.metadata == model.explanation_spec.metadata
    assert effective_spec(job, types.Model()).HasField("metadata") is False
    assert job_problems(types.BatchPredictionJob(generate_explanation=True, model="m"), types.Model())


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"sampled_shapley_attribution": {"path_count": 0}}, "[1, 50]"),
        ({"integrated_gradients_attribution": {"step_count": 50}}, "differentiable"),
        ({"xrai_attribution": {"step_count": 50}}, "differentiable"),
        ({"examples": {"neighbor_count": 3}}, "feature-based"),
        ({"top_k": 2}, "is required"),
    ],
)
def test_spec_problems(parameters, message):
    s = types.ExplanationSpec(parameters=parameters, metadata={"inputs": {"x": {}}, "outputs": {"y": {}}})
    assert any(message in m for _, m in spec_problems(s, "spec", running=True))


def test_metadata_problems():
    s = types.ExplanationSpec(
        parameters={"sampled_shapley_attribution": {"path_count": 3}},
        metadata={"inputs": {"x": {"input_tensor_name": "t"}}, "outputs": {"a": {}, "b": {}}},
    )
    messages = [m for _, m in spec_problems(s, "spec", running=True)]
    assert any("only one key" in m for m in messages)
    assert any("'input_tensor_name'" in m for m in messages)
    assert spec_problems(s, "spec", running=False) == []


class _Fussy:
    """Fails on any row whose rooms is 13 (so on every row of the instance that has 13 rooms)."""

    def predict(self, instances, parameters=None):
        if any(i["rooms"] == 13 for i in instances):
            raise ValueError("13 rooms")
        return [float(i["rooms"]) for i in instances]


def test_an_object_the_model_fails_on_fails_alone():
    explainer = Explainer(spec(3, inputs={"rooms": {"input_baselines": [13]}}))
    assert explainer.explain(_Fussy(), [{"rooms": 2}])[0][1][1] == "explaining failed: ValueError: 13 rooms"
    explainer = Explainer(spec(3, inputs={"rooms": {}}))
    (ok, e), (bad, error) = explainer.explain(_Fussy(), [{"rooms": 2}, {"rooms": 13}])
    assert ok and e["attributions"][0]["featureAttributions"] == {"rooms": 2.0}
    assert not bad and error == ("INTERNAL", "explaining failed: ValueError: 13 rooms")
