"""Feature attributions for batch prediction jobs with ``generate_explanation`` (sampled Shapley).

What Vertex AI documents, and what the local stack does with it:

- The spec. ``BatchPredictionJob.explanation_spec`` overrides ``Model.explanation_spec`` field by field: a job
  spec without ``parameters`` (or ``metadata``) inherits the model's (REST reference, BatchPredictionJob,
  https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.batchPredictionJobs).
  :func:`effective_spec` merges them; :func:`spec_problems` says what the local stack refuses.
- The method. Sampled Shapley (``sampled_shapley_attribution.path_count``, valid range [1, 50], "the number
  of feature permutations to consider"; SampledShapleyAttribution reference,
  https://cloud.google.com/vertex-ai/docs/reference/rest/v1beta1/ExplanationSpec).
  Integrated gradients and XRAI take "advantage of the model's fully differentiable structure"
  (ExplanationParameters, same page);
  scikit-learn, XGBoost and custom routines give no gradients, so they are refused, as example-based
  explanations are ("only feature-based batch explanations are supported",
  https://cloud.google.com/vertex-ai/docs/explainable-ai/getting-explanations). Vertex's own wording for
  these refusals, and for generate_explanation without any spec, is not published; the messages here are
  the local stack's and name the fields.
- The inputs. For frameworks other than TensorFlow an input's metadata may only use ``input_baselines``,
  ``modality``, ``group_name``, ``encoding`` and ``index_feature_mapping`` (Vertex's own validation error,
  quoted in https://github.com/googleapis/python-aiplatform/issues/5811). An instance that is a list is one
  nameless input, allowed "only if there is a single input in the explanation metadata" (Vertex's error in
  https://github.com/GoogleCloudPlatform/vertex-ai-samples/issues/688): each element is a feature, and the
  attributions are ``{<input name>: [one per element]}``, or ``{<index_feature_mapping[i]>: ...}`` when the
  input maps indices to names. An instance that is an object has one feature per input, its value the field
  of that name. ``input_baselines``: one baseline (a number for every element of a list input, or a value of
  the input's shape) or several, whose attributions are averaged (InputMetadata reference); without one the
  baseline is 0 (a local choice: Vertex says it chooses one).
- The outputs. ``metadata.outputs`` holds one key ("currently only one key is allowed"), which becomes
  ``outputName``. A regressor's prediction is the explained scalar (no ``outputIndex``). A classifier is
  explained on its class probabilities (``predict_proba``; an XGBoost Booster on what ``predict`` returns):
  ``parameters.output_indices`` chooses the classes, else ``top_k`` of them by probability (default 1, -1 for
  all), so by default the predicted class's probability (ExplanationParameters reference: "If neither topK
  nor outputIndices is populated, returns the argmax index of the outputs"). ``outputDisplayName`` comes from
  the output's ``index_display_name_mapping``.
- The result, one ``Explanation`` per instance (``{"attributions": [Attribution, ...]}``, field names as
  the REST Attribution reference spells them: ``baselineOutputValue``, ``instanceOutputValue``,
  ``featureAttributions``, ``outputIndex``, ``outputDisplayName``, ``approximationError``, ``outputName``;
  https://cloud.google.com/vertex-ai/docs/reference/rest/v1/ModelExplanation). The sinks write it as
  ``"explanation"`` beside ``"instance"`` and ``"prediction"`` (an ``explanation`` column in BigQuery and
  CSV).

The estimator (:func:`sampled_shapley`) walks ``path_count`` random feature permutations from the baseline to
the instance, turning one feature on at a time, and credits each feature with the change of the output it
caused; the attribution is the mean over paths (and baselines). Every path telescopes, so the attributions
sum to ``instanceOutputValue - baselineOutputValue`` exactly (up to float rounding) whatever ``path_count``:
efficiency holds by construction, not within an error. When ``path_count`` reaches the number of
permutations (24 for 4 features) every permutation is walked once and the values are the exact Shapley
values. ``approximationError`` is the sampling error of the mean (the standard error across paths, with the
finite-population correction, so 0 when every permutation is walked), as a fraction of the attributions'
total size: sqrt(sum of squared standard errors) / sum(|attribution|). Vertex suggests reconsidering a
configuration above 0.05 (https://cloud.google.com/vertex-ai/docs/explainable-ai/improving-explanations).
It is an estimate from the paths themselves: against brute-force Shapley values it is calibrated from about
8 paths (``tests/test_explain_shapley.py``), loose below; with one path there is no spread to measure and it
is 1.0.
Permutations come from a fixed seed, so a job explains the same way every time it runs.

Speed: the rows of every (instance, baseline, path, step) of a whole message of batches go to the model in
one ``predict_proba``/``predict`` call (at most :data:`MAX_ROWS` rows each), about ``n × path_count ×
(features - 1)`` rows for ``n`` instances. It runs in the predictor process, so cancel stops it as it stops a
prediction.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, NamedTuple

from bpj import errors, types

__all__ = [
    "Explained",
    "Explainer",
    "check_spec",
    "effective_spec",
    "job_problems",
    "no_spec_message",
    "sampled_shapley",
    "spec_problems",
]

MAX_ROWS = 1 << 18
"""Rows per model call when explaining."""
MAX_CELLS = 1 << 22
"""Feature values built at once (instances × baselines × paths × steps × features): about 32 MB of floats."""
PATH_COUNT_RANGE = (1, 50)
SEED = 20260101
NON_TF_FIELDS = ("input_baselines", "modality", "group_name", "encoding", "index_feature_mapping")
_NEEDS_GRADIENTS = (
    "{method} needs the gradients of a differentiable model (TensorFlow); scikit-learn, XGBoost and custom "
    "prediction routines are not differentiable, so use sampled_shapley_attribution"
)


class Explained(NamedTuple):
    """A prediction and its explanation (``{"attributions": [...]}``), from the predictor process."""

    prediction: Any
    explanation: Any


# -- the spec ------------------------------------------------------------------------------------------


def effective_spec(job: Any, model: Any | None) -> Any:
    """The job's explanation_spec, each unset field taken from ``model``'s; None without parameters."""
    spec = types.ExplanationSpec()
    own = job.explanation_spec
    inherited = model.explanation_spec if model is not None else types.ExplanationSpec()
    for field in ("parameters", "metadata"):
        source = own if own.HasField(field) else inherited
        if source.HasField(field):
            getattr(spec, field).CopyFrom(getattr(source, field))
    return spec if spec.HasField("parameters") else None


def spec_problems(spec: Any, field: str, *, running: bool) -> list[tuple[str, str]]:
    """``(field, message)`` for what is wrong with ``spec`` (an ExplanationSpec).

    Always: path_count and step_count ranges. With ``running`` (the spec a job would run with), also what
    the local stack's models cannot do: gradient methods, example-based explanations, TensorFlow-only input
    fields, and not exactly one output.
    """
    out: list[tuple[str, str]] = []
    params = spec.parameters
    method = params.WhichOneof("method")
    p = f"{field}.parameters"
    if method == "sampled_shapley_attribution":
        count = params.sampled_shapley_attribution.path_count
        lo, hi = PATH_COUNT_RANGE
        if not lo <= count <= hi:
            out.append(
                (f"{p}.sampled_shapley_attribution.path_count", f"Valid range is [{lo}, {hi}], got {count}.")
            )
    elif method in ("integrated_gradients_attribution", "xrai_attribution"):
        steps = getattr(params, method).step_count
        if not 1 <= steps <= 100:
            out.append((f"{p}.{method}.step_count", f"Valid range is [1, 100], got {steps}."))
        if running:
            out.append((f"{p}.{method}", _NEEDS_GRADIENTS.format(method=method)))
    elif method == "examples":
        if running:
            out.append(
                (
                    f"{p}.examples",
                    "Only feature-based batch explanations are supported, not example-based ones.",
                )
            )
    elif running or spec.HasField("parameters"):
        out.append(
            (
                f"{p}.method",
                "One of sampled_shapley_attribution, integrated_gradients_attribution, "
                "xrai_attribution or examples is required.",
            )
        )
    if not running:
        return out
    meta = spec.metadata
    m = f"{field}.metadata"
    if not meta.inputs:
        out.append((f"{m}.inputs", "Required field is not set: name at least one input to explain."))
    if len(meta.outputs) != 1:
        out.append(
            (
                f"{m}.outputs",
                f"Exactly one output is required (currently only one key is allowed), got "
                f"{len(meta.outputs)}.",
            )
        )
    for name in sorted(meta.inputs):
        used = [fd.name for fd, _ in meta.inputs[name].ListFields() if fd.name not in NON_TF_FIELDS]
        if used:
            out.append(
                (
                    f"{m}.inputs[{name!r}]",
                    f"Invalid field {used[0]!r} in input metadata for frameworks other than TensorFlow "
                    f"(scikit-learn, XGBoost, custom routines); valid fields: {', '.join(NON_TF_FIELDS)}.",
                )
            )
    return out


def no_spec_message(job: Any) -> str:
    """Why ``job`` cannot explain: generate_explanation without parameters in its spec or its model's."""
    whose = f"model {job.model}" if job.model else "an unmanaged_container_model"
    return (
        "generate_explanation is true, but neither the job's explanation_spec nor the explanation_spec of "
        f"{whose} has parameters: upload the model with explanation_parameters and explanation_metadata, or "
        "create the job with them."
    )


def job_problems(job: Any, model: Any | None, field: str = "batch_prediction_job") -> list[tuple[str, str]]:
    """What the emulator refuses in a job's explanation settings at create; ``model`` None when unknown
    (the job then fails when it runs if the model's spec does not do)."""
    own = job.explanation_spec
    has_own = job.HasField("explanation_spec")
    if not job.generate_explanation:
        if has_own:
            return [
                (f"{field}.explanation_spec", "Can be specified only if generate_explanation is set to true.")
            ]
        return []
    out = spec_problems(own, f"{field}.explanation_spec", running=False) if has_own else []
    if model is None and job.model:
        return out
    spec = effective_spec(job, model)
    if spec is None:
        return [*out, (f"{field}.explanation_spec", no_spec_message(job))]
    if not out:
        out = spec_problems(spec, f"{field}.explanation_spec", running=True)
    return out


def check_spec(spec: Any, field: str = "explanation_spec") -> None:
    """Raise InvalidArgument with every problem :func:`spec_problems` finds in the spec a job runs with."""
    problems = spec_problems(spec, field, running=True)
    if problems:
        listed = "; ".join(f"{f}: {m}" for f, m in problems)
        raise errors.InvalidArgument(f"The explanation spec cannot be used: {listed}")


# -- the estimator ---------------------------------------------------------------------------------------


def permutations(d: int, path_count: int, seed: int = SEED) -> tuple[Any, bool]:
    """``(array (m, d) of feature orders, exact)``: all ``d!`` orders when ``path_count`` reaches ``d!``
    (``exact``), else ``path_count`` distinct random ones."""
    import numpy as np

    if d <= 8 and path_count >= math.factorial(d):
        return np.array(list(itertools.permutations(range(d))), dtype=np.intp).reshape(-1, d), True
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < path_count:
        seen.setdefault(tuple(int(i) for i in rng.permutation(d)), None)
    return np.array(list(seen), dtype=np.intp).reshape(-1, d), False


def sampled_shapley(f: Any, x: Any, base: Any, perms: Any, *, exact: bool = False) -> dict[str, Any]:
    """Shapley values of ``f`` at the rows of ``x`` against the rows of ``base``, along ``perms``.

    ``f(rows (r, d)) -> (r, k)`` outputs; ``x`` (n, d) values; ``base`` (b, d) baselines; ``perms`` (m, d)
    feature orders. Returns numpy arrays: ``phi`` (n, d, k) attributions averaged over paths and baselines,
    ``error`` (n, k) the relative sampling error (0 when ``exact``), ``output`` (n, k) = f(x) and
    ``baseline_output`` (k,) the mean of f(base). Rows go to ``f`` in calls of at most :data:`MAX_ROWS`.
    """
    import numpy as np

    x = np.asarray(x)
    base = np.asarray(base)
    n, d = x.shape
    b, m = base.shape[0], perms.shape[0]
    rank = np.argsort(perms, axis=1)  # rank[p, feature]: where the feature comes in path p
    # mask[p, s, feature]: after s + 1 steps of path p the feature has the instance's value
    mask = rank[:, None, :] <= np.arange(d - 1)[None, :, None]
    chunk = max(1, MAX_CELLS // max(1, b * m * (d - 1) * d))
    ends = _outputs(f, np.concatenate([base, x]))
    base_out, out = ends[:b], ends[b:]
    k = out.shape[1]
    phi = np.empty((n, d, k))
    error = np.zeros((n, k))
    for lo in range(0, n, chunk):
        xs = x[lo : lo + chunk]
        c = xs.shape[0]
        if d > 1:
            rows = np.where(mask[None, None], xs[:, None, None, None, :], base[None, :, None, None, :])
            mid = _outputs(f, rows.reshape(-1, d)).reshape(c, b, m, d - 1, k)
        else:
            mid = np.empty((c, b, m, 0, k))
        start = np.broadcast_to(base_out[None, :, None, None, :], (c, b, m, 1, k))
        end = np.broadcast_to(out[lo : lo + c, None, None, None, :], (c, b, m, 1, k))
        path = np.concatenate([start, mid, end], axis=3)  # (c, b, m, d + 1, k)
        steps = np.diff(path, axis=3).mean(axis=1)  # (c, m, d, k): step s credits feature perms[p, s]
        per_path = np.take_along_axis(steps, rank[None, :, :, None], axis=2)  # (c, m, d, k) by feature
        phi[lo : lo + c] = per_path.mean(axis=1)
        if not exact:
            error[lo : lo + c] = _relative_error(per_path, phi[lo : lo + c], d)
    return {"phi": phi, "error": error, "output": out, "baseline_output": base_out.mean(axis=0)}


def _relative_error(per_path: Any, phi: Any, d: int) -> Any:
    import numpy as np

    m = per_path.shape[1]
    if m < 2:
        return np.ones((phi.shape[0], phi.shape[2]))
    population = math.factorial(d) if d <= 20 else math.inf
    correction = max(0.0, 1.0 - m / population)
    se2 = per_path.var(axis=1, ddof=1) / m * correction  # (c, d, k)
    size = np.abs(phi).sum(axis=1)  # (c, k)
    spread = np.sqrt(se2.sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(size > 0, spread / np.where(size > 0, size, 1.0), np.where(spread > 0, 1.0, 0.0))


def _outputs(f: Any, rows: Any) -> Any:
    import numpy as np

    parts = [np.asarray(f(rows[i : i + MAX_ROWS]), dtype=float) for i in range(0, len(rows), MAX_ROWS)]
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != len(rows):
        raise ValueError(
            f"the model returned outputs of shape {out.shape} for {len(rows)} rows; explanations need one "
            "number or one vector of numbers per instance"
        )
    return out


# -- explaining payloads -------------------------------------------------------------------------------


class Explainer:
    """Explains batches of payloads for one job, in the predictor process."""

    def __init__(self, spec: Any) -> None:
        check_spec(spec)
        meta, params = spec.metadata, spec.parameters
        self.path_count = params.sampled_shapley_attribution.path_count
        self.top_k = params.top_k
        self.output_indices = _flat_ints(params.output_indices) if params.HasField("output_indices") else None
        self.output_name = next(iter(meta.outputs))
        mapping = meta.outputs[self.output_name]
        self.display_names = (
            _python(mapping.index_display_name_mapping)
            if mapping.HasField("index_display_name_mapping")
            else None
        )
        self.inputs = {name: meta.inputs[name] for name in sorted(meta.inputs)}
        self._perms: dict[int, tuple[Any, bool]] = {}
        self._parameters: Any = None

    def explain(self, predictor: Any, payloads: list[Any], parameters: Any = None) -> list[tuple[bool, Any]]:
        """One ``(True, {"attributions": [...]})`` or ``(False, (code name, message))`` per payload;
        ``parameters`` go to a custom routine's predict with every row, as with the predictions."""
        self._parameters = parameters
        out: list[tuple[bool, Any]] = [(False, ("INTERNAL", "not explained"))] * len(payloads)
        groups: dict[Any, list[int]] = {}
        for i, payload in enumerate(payloads):
            try:
                groups.setdefault(self._layout(payload), []).append(i)
            except _Refused as e:
                out[i] = (False, ("INVALID_ARGUMENT", str(e)))
        for layout, members in groups.items():
            group = [payloads[i] for i in members]
            if layout[0] == "list":
                results = _guarded(functools.partial(self._explain_lists, predictor, layout[1], group), group)
            else:  # one instance at a time: its other fields go with its rows
                results = []
                for p in group:
                    results += _guarded(functools.partial(self._explain_objects, predictor, p), [p])
            for i, r in zip(members, results, strict=True):
                out[i] = r
        return out

    # A layout: ("list", length) or ("dict",). Instances of one layout are explained together.
    def _layout(self, payload: Any) -> tuple[Any, ...]:
        if isinstance(payload, list):
            if len(self.inputs) != 1:
                raise _Refused(
                    "Nameless input are allowed only if there is a single input in the explanation metadata: "
                    f"this instance is a list, and the metadata names {len(self.inputs)} inputs "
                    f"({', '.join(self.inputs)})"
                )
            return ("list", len(payload))
        if isinstance(payload, dict):
            missing = [k for k in self.inputs if k not in payload]
            if missing:
                raise _Refused(
                    f"the instance has no field {missing[0]!r}, an input of the explanation metadata "
                    f"(it has {', '.join(map(str, list(payload)[:10])) or 'no fields'})"
                )
            return ("dict",)
        raise _Refused(f"a {type(payload).__name__} instance cannot be explained: use a list or an object")

    def _explain_lists(self, predictor: Any, d: int, payloads: list[Any]) -> list[Any]:
        """List instances of ``d`` values: one nameless input, each element a feature."""
        import numpy as np

        name, meta = next(iter(self.inputs.items()))
        names = list(meta.index_feature_mapping)
        if names and len(names) != d:
            raise _Refused(
                f"input {name!r} maps {len(names)} indices to names (index_feature_mapping), and the "
                f"instance has {d} values"
            )
        if d == 0:
            raise _Refused("an empty instance has no features to explain")
        base_rows = [self._list_baseline(name, v, d) for v in _baselines(meta)] or [[0.0] * d]
        x = _numeric(payloads)
        if x is not None and all(_numeric_row(r) for r in base_rows):
            f = _model_function(predictor, self._parameters)
            values, baselines = x, np.asarray(base_rows, dtype=float)
        else:
            f = _object_function(predictor, self._parameters)
            values, baselines = _objects(payloads), _objects(base_rows)
        perms, exact = self._paths(d)
        result = sampled_shapley(f, values, baselines, perms, exact=exact)
        keys, list_name = (names, None) if names else (None, name)
        return [(True, self._explanation(result, i, keys, list_name)) for i in range(len(payloads))]

    def _explain_objects(self, predictor: Any, payload: dict[str, Any]) -> list[Any]:
        """An object instance: one feature per input, the field of that name; its other fields stay."""
        keys = list(self.inputs)
        counts = {len(_baselines(m)) for m in self.inputs.values()} - {0, 1}
        if len(counts) > 1:
            raise _Refused("inputs with several input_baselines must have the same number of them")
        b = counts.pop() if counts else 1
        baselines = _objects([[self._dict_baseline(k, j) for k in keys] for j in range(b)])
        perms, exact = self._paths(len(keys))
        f = _object_function(predictor, self._parameters, keys=keys, template=payload)
        result = sampled_shapley(f, _objects([[payload[k] for k in keys]]), baselines, perms, exact=exact)
        return [(True, self._explanation(result, 0, keys, None))]

    def _paths(self, d: int) -> tuple[Any, bool]:
        if d not in self._perms:
            self._perms[d] = permutations(d, self.path_count)
        return self._perms[d]

    def _list_baseline(self, name: str, value: Any, d: int) -> list[Any]:
        if isinstance(value, list):
            if len(value) != d:
                raise _Refused(
                    f"a baseline of input {name!r} has {len(value)} values, and the instance has {d}"
                )
            return value
        return [value] * d

    def _dict_baseline(self, key: str, j: int) -> Any:
        values = _baselines(self.inputs[key])
        if not values:
            return 0
        return values[j] if len(values) > 1 else values[0]

    def _explanation(
        self, result: dict[str, Any], i: int, keys: list[str] | None, list_name: str | None
    ) -> Any:
        out = result["output"][i]
        k = out.shape[0]
        scalar = k == 1 and self.output_indices is None
        if scalar:
            chosen = [0]
        elif self.output_indices is not None:
            chosen = self.output_indices
            bad = [c for c in chosen if not 0 <= c < k]
            if bad:
                raise _Refused(f"output_indices holds {bad[0]}, and the model has {k} outputs")
        else:
            top = k if self.top_k < 0 else max(1, self.top_k)
            chosen = [int(c) for c in sorted(range(k), key=lambda c: -out[c])[:top]]
        attributions = []
        for c in chosen:
            phi = result["phi"][i, :, c]
            if list_name is not None:
                features: Any = {list_name: [float(v) for v in phi]}
            else:
                features = {name: float(v) for name, v in zip(keys or [], phi, strict=True)}
            item: dict[str, Any] = {
                "baselineOutputValue": float(result["baseline_output"][c]),
                "instanceOutputValue": float(out[c]),
                "featureAttributions": features,
            }
            if not scalar:
                item["outputIndex"] = [int(c)]
                shown = self._display_name(c)
                if shown is not None:
                    item["outputDisplayName"] = shown
            item["approximationError"] = float(result["error"][i, c])
            item["outputName"] = self.output_name
            attributions.append(item)
        return {"attributions": attributions}

    def _display_name(self, index: int) -> str | None:
        names = self.display_names
        if isinstance(names, list) and 0 <= index < len(names):
            return str(names[index])
        return None


class _Refused(Exception):
    """The instance (or the spec, for it) cannot be explained; the message says why."""


def _guarded(explain: Any, group: list[Any]) -> list[tuple[bool, Any]]:
    """``explain()``, or the failure of every instance of ``group`` when it raises."""
    try:
        return explain()  # type: ignore[no-any-return]
    except _Refused as e:
        return [(False, ("INVALID_ARGUMENT", str(e)))] * len(group)
    except Exception as e:  # the model failed on rows mixing instance and baseline values
        return [(False, ("INTERNAL", f"explaining failed: {type(e).__name__}: {e}"))] * len(group)


def _baselines(meta: Any) -> list[Any]:
    return [_python(v) for v in meta.input_baselines]


def _python(value: Any) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(value)


def _flat_ints(values: Any) -> list[int]:
    out: list[int] = []
    for v in _python(values):
        items = v if isinstance(v, list) else [v]
        out.extend(int(i) for i in items)
    return out


def _numeric_row(row: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)


def _numeric(payloads: list[Any]) -> Any:
    import numpy as np

    try:
        x = np.asarray(payloads, dtype=float)
    except (TypeError, ValueError):
        return None
    return x if x.ndim == 2 and all(_numeric_row(p) for p in payloads) else None


def _objects(rows: list[list[Any]]) -> Any:
    import numpy as np

    out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out


def _model_function(predictor: Any, parameters: Any) -> Any:
    """What the predictor's model outputs for rows of numbers: class probabilities for a classifier."""
    model = getattr(predictor, "model", None)
    booster = getattr(predictor, "booster", None)
    if model is not None and callable(getattr(model, "predict_proba", None)):
        return model.predict_proba
    if model is not None:
        return model.predict
    if booster is not None:
        import xgboost

        return lambda rows: booster.predict(xgboost.DMatrix(rows))
    return lambda rows: predictor.predict(rows.tolist(), parameters)


def _object_function(
    predictor: Any, parameters: Any, *, keys: list[str] | None = None, template: Any = None
) -> Any:
    """The predictor's outputs for rows of any values: lists, or the fields ``keys`` of ``template``."""
    import numpy as np

    model = getattr(predictor, "model", None)
    proba = getattr(model, "predict_proba", None) if model is not None else None

    def f(rows: Any) -> Any:
        if keys is None:
            instances: list[Any] = [list(r) for r in rows]
        else:
            instances = [{**template, **dict(zip(keys, r, strict=True))} for r in rows]
        if callable(proba) and keys is None:
            return proba(np.asarray(instances))
        return np.asarray(predictor.predict(instances, parameters), dtype=float)

    return f
