"""What a Vertex AI prediction container does with a model (run by the executor in a predictor process).

``load_predictor(model, fetch, list_dir, workdir)`` reads the objects under ``model.artifact_uri`` (a ``gs://``
directory of the stack's own Cloud Storage, through the two callables; nothing else) and returns a
:class:`Predictor`:

    how the model is chosen                               what is loaded
    container_spec.env has BPJ_PREDICTOR=module:Class     a custom prediction routine (see below)
    image URI contains "sklearn" / "scikit-learn"         exactly one of model.joblib (joblib), model.pkl (pickle)
    image URI contains "xgboost"                          exactly one of model.bst (Booster.load_model),
                                                          model.joblib, model.pkl (the sklearn-API wrappers)
    any other image                                       exactly one of model.joblib, model.pkl, model.bst

These are the prebuilt containers' rules (Vertex AI docs, "Export model artifacts for prediction"): the file
names are fixed and a prebuilt image loads only its framework's formats.

Custom prediction routines are bpj's local convention for Vertex's CPR shape: ``BPJ_PREDICTOR=module:ClassName``
in ``container_spec.env``, and the artifact directory holds ``module.py`` (a dotted ``pkg.module`` is
``pkg/module.py``) with any helper modules. The artifacts are copied into a fresh directory under ``workdir``,
the module is imported there under a unique name (two models with a ``predictor.py`` each never share a module),
the class is instantiated with no arguments and ``load(<that local directory>)`` is called once. A batch then
goes through ``postprocess(predict(preprocess({"instances": [...], "parameters": ...})))``; ``"parameters"`` is
present only when the job has model parameters, as in the request body Vertex sends. ``preprocess`` and
``postprocess`` are optional (identity, as in Vertex's Predictor base class); postprocess returns
``{"predictions": [...]}`` or a list.

Every problem with the artifacts is a :class:`bpj.errors.FailedPrecondition` that says what was found and what
was expected. Loading a pickle runs code from the artifact directory, as the prebuilt containers do: only load
models you trust.

``predict_isolating_errors`` runs one batch and, when it fails, splits it in halves until the bad instances are
alone, so that one malformed instance fails only itself.
"""

from __future__ import annotations

import importlib
import io
import itertools
import os
import pickle
import re
import sys
import tempfile
import threading
import types as pytypes
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bpj import gcs_uri, types
from bpj.errors import ApiError, Code, FailedPrecondition

PREDICTOR_ENV = "BPJ_PREDICTOR"

JOBLIB, PICKLE, BOOSTER = "model.joblib", "model.pkl", "model.bst"

# Framework -> (what the docs call it, the files its prebuilt image loads, in the order the docs list them).
_FRAMEWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sklearn": ("a scikit-learn model", (JOBLIB, PICKLE)),
    "xgboost": ("an XGBoost model", (BOOSTER, JOBLIB, PICKLE)),
    "": ("a model", (JOBLIB, PICKLE, BOOSTER)),
}

# Exceptions that, raised on one instance alone, mean the instance is bad (XGBoostError is a ValueError).
_BAD_INPUT = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)


class Predictor(Protocol):
    """A loaded model: one JSON-serializable prediction per instance, in order."""

    def predict(self, instances: list[Any], parameters: Any = None) -> list[Any]: ...


# -- predictors ------------------------------------------------------------------------------------


class SklearnPredictor:
    """The scikit-learn container (and XGBoost's sklearn-API wrappers): ``model.predict(asarray(instances))``."""

    def __init__(self, model: Any, source: str) -> None:
        self.model = model
        self.source = source

    def predict(self, instances: list[Any], parameters: Any = None) -> list[Any]:
        import numpy

        return _to_list(self.model.predict(numpy.asarray(instances)))

    def __repr__(self) -> str:
        return f"SklearnPredictor({self.source})"


class BoosterPredictor:
    """The XGBoost container with a Booster: ``booster.predict(DMatrix(instances))``."""

    def __init__(self, booster: Any, source: str) -> None:
        self.booster = booster
        self.source = source

    def predict(self, instances: list[Any], parameters: Any = None) -> list[Any]:
        import numpy
        import xgboost

        return _to_list(self.booster.predict(xgboost.DMatrix(numpy.asarray(instances))))

    def __repr__(self) -> str:
        return f"BoosterPredictor({self.source})"


class CustomPredictor:
    """A custom prediction routine: ``postprocess(predict(preprocess(request body)))``."""

    def __init__(self, routine: Any, source: str) -> None:
        self.routine = routine
        self.source = source
        self._pre = getattr(routine, "preprocess", None)
        self._post = getattr(routine, "postprocess", None)

    def predict(self, instances: list[Any], parameters: Any = None) -> list[Any]:
        body: dict[str, Any] = {"instances": instances}
        if parameters is not None:
            body["parameters"] = parameters
        value = self._pre(body) if self._pre is not None else body
        value = self.routine.predict(value)
        if self._post is not None:
            value = self._post(value)
        if isinstance(value, dict) and "predictions" in value:
            value = value["predictions"]
        if isinstance(value, list):
            return value
        if hasattr(value, "tolist"):
            return _to_list(value)
        raise _WrongShape(
            f"{self.source} returned {type(value).__name__}; postprocess must return "
            '{"predictions": [...]} or a list with one prediction per instance'
        )

    def __repr__(self) -> str:
        return f"CustomPredictor({self.source})"


class _WrongShape(Exception):
    """The predictor's output is unusable for the whole batch (reported as INTERNAL, not isolated)."""


def _to_list(result: Any) -> list[Any]:
    # ndarray.tolist() turns numpy scalars into Python ones in C, without a per-instance Python loop.
    if hasattr(result, "tolist"):
        out = result.tolist()
        return out if isinstance(out, list) else [out]
    return list(result)


# -- error isolation -------------------------------------------------------------------------------


def predict_isolating_errors(
    predictor: Predictor, instances: list[Any], parameters: Any = None
) -> list[tuple[bool, Any]]:
    """Predict ``instances``; per instance ``(True, prediction)`` or ``(False, (code_name, message))``.

    A failed batch is split in halves, recursively, so a malformed instance (or one the model cannot handle)
    fails alone and costs about ``2 * log2(len(instances))`` extra calls. A predictor that returns the wrong
    number of predictions, or an unusable result, fails the whole (sub-)batch with ``INTERNAL``.
    """
    instances = list(instances)
    out: list[tuple[bool, Any]] = [(False, ("INTERNAL", "not predicted"))] * len(instances)
    _predict_range(predictor, instances, parameters, 0, len(instances), out)
    return out


def _predict_range(
    predictor: Predictor,
    instances: list[Any],
    parameters: Any,
    lo: int,
    hi: int,
    out: list[tuple[bool, Any]],
) -> None:
    if lo >= hi:
        return
    batch = instances if lo == 0 and hi == len(instances) else instances[lo:hi]
    try:
        predictions = predictor.predict(batch, parameters)
        count = len(predictions)
    except _WrongShape as e:
        out[lo:hi] = [(False, ("INTERNAL", str(e)))] * (hi - lo)
        return
    except Exception as e:
        if hi - lo == 1:
            out[lo] = (False, _status_of(e))
            return
        mid = (lo + hi) // 2
        _predict_range(predictor, instances, parameters, lo, mid, out)
        _predict_range(predictor, instances, parameters, mid, hi, out)
        return
    if count != hi - lo:
        message = f"the predictor returned {count} predictions for {hi - lo} instances; it must return one per instance"
        out[lo:hi] = [(False, ("INTERNAL", message))] * (hi - lo)
        return
    out[lo:hi] = zip(itertools.repeat(True), predictions)


def _status_of(e: Exception) -> tuple[str, str]:
    if isinstance(e, ApiError):
        return e.code.name, e.message
    status = getattr(e, "status_code", None)  # e.g. fastapi.HTTPException, which CPR predictors raise
    if isinstance(status, int):
        return Code.from_http(status).name, str(getattr(e, "detail", "") or e)
    code = Code.INVALID_ARGUMENT if isinstance(e, _BAD_INPUT) else Code.INTERNAL
    text = str(e)
    if type(e) is ValueError and text:
        return code.name, text
    return code.name, f"{type(e).__name__}: {text}" if text else type(e).__name__


# -- artifacts -------------------------------------------------------------------------------------


class _Artifacts:
    """The objects under a ``gs://`` artifact_uri: relative names, bytes, and a copy into a local directory."""

    def __init__(
        self,
        uri: str,
        fetch: Callable[[str], bytes],
        list_dir: Callable[[str], list[str]],
    ) -> None:
        self.uri = uri.rstrip("/")
        self._fetch = fetch
        if not uri.startswith("gs://"):
            raise FailedPrecondition(
                f"artifact_uri {uri} is not supported; the local stack reads artifacts only from its own Cloud "
                "Storage: upload the model directory to gs://bucket/path on the stack's GCS and use that gs:// "
                "URI as artifact_uri"
            )
        _, name = gcs_uri.split(uri, error=FailedPrecondition)
        if gcs_uri.WILDCARD.search(name):
            raise FailedPrecondition(f"artifact_uri {uri} is a directory, so it cannot hold *, ? or [")
        prefix = self.uri + "/"
        try:
            listed = list_dir(prefix)
        except Exception as e:
            raise FailedPrecondition(f"cannot list {prefix}: {_cause(e)}") from e
        self.names = sorted(u[len(prefix) :] for u in listed if u.startswith(prefix) and not u.endswith("/"))

    @property
    def top(self) -> list[str]:
        return [n for n in self.names if "/" not in n]

    def read(self, name: str) -> bytes:
        return self._fetch(f"{self.uri}/{name}")

    def copy_to(self, dest: Path) -> None:
        """Write every object to ``dest/<its relative name>``; FailedPrecondition for a name that could land
        anywhere else (empty, ``.`` or ``..`` segments, ``\\``, control characters), before anything is
        written."""
        root = Path(dest).resolve()
        targets = []
        for name in self.names:
            problem = _relative_problem(name)
            target = (root / name).resolve()
            if problem is None and (target == root or not target.is_relative_to(root)):
                problem = "it resolves outside the directory"
            if problem is not None:
                raise FailedPrecondition(
                    f"{self.uri}/{name}: the object name after {self.uri}/ is {name!r}, and {problem}, so it cannot "
                    "be copied into the predictor's directory; rename the object"
                )
            targets.append((name, target))
        for name, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as f:  # a new file, never through an existing name or link
                f.write(self._fetch(f"{self.uri}/{name}"))

    def holding(self) -> str:
        """``(it holds a.txt, b.csv)`` for messages."""
        if not self.names:
            return "(it is empty)"
        shown = ", ".join(self.names[:10])
        more = f" and {len(self.names) - 10} more" if len(self.names) > 10 else ""
        return f"(it holds {shown}{more})"


# -- loading ---------------------------------------------------------------------------------------


def load_predictor(
    model: types.Model,
    fetch: Callable[[str], bytes],
    list_dir: Callable[[str], list[str]],
    workdir: Path,
) -> Predictor:
    """Load ``model`` as its Vertex AI prediction container would, or raise FailedPrecondition saying why not.

    ``fetch(uri)`` returns an object's bytes and ``list_dir(prefix)`` the URIs of the objects under a
    ``gs://`` prefix; any other artifact_uri (a ``file://`` URI, a host path) is refused. Custom prediction
    routines get a fresh directory under ``workdir`` holding a copy of the artifacts, and an object whose name
    would land outside it is refused.
    """
    uri = model.artifact_uri
    name = model.display_name or model.name or "the model"
    if not uri:
        raise FailedPrecondition(
            f"{name} has no artifact_uri; the local stack loads models from their artifacts"
        )
    artifacts = _Artifacts(uri, fetch, list_dir)
    routine, file = _locate(model, artifacts)
    if routine is not None:
        return _load_custom(routine, artifacts, Path(workdir))
    return _load_file(artifacts, file)


def check_artifacts(model: types.Model, list_dir: Callable[[str], list[str]]) -> None:
    """What Vertex AI checks when a model is uploaded: its ``artifact_uri`` (when set) holds the file its
    prebuilt container loads, or the module its custom prediction routine names. Lists, reads nothing;
    FailedPrecondition with load_predictor's message otherwise."""
    if model.artifact_uri:
        _locate(model, _Artifacts(model.artifact_uri, _no_fetch, list_dir))


def _no_fetch(uri: str) -> bytes:
    raise AssertionError(f"check_artifacts read {uri}")


def _locate(model: types.Model, artifacts: _Artifacts) -> tuple[str | None, str]:
    """``(routine, "")`` for a custom prediction routine (its module checked present), else ``(None, file)``:
    the one model file the prebuilt container loads."""
    spec = model.container_spec
    env = {e.name: e.value for e in spec.env}
    if PREDICTOR_ENV in env:
        _routine_module(env[PREDICTOR_ENV], artifacts)
        return env[PREDICTOR_ENV], ""
    return None, _choose_file(artifacts, _framework_of(spec.image_uri), spec.image_uri)


def _framework_of(image: str) -> str:
    lowered = image.lower()
    if "sklearn" in lowered or "scikit-learn" in lowered:
        return "sklearn"
    if "xgboost" in lowered:
        return "xgboost"
    return ""


def _choose_file(artifacts: _Artifacts, framework: str, image: str) -> str:
    what, wanted = _FRAMEWORKS[framework]
    present = [f for f in wanted if f in artifacts.top]
    needs = f"{what} needs exactly one of {_either(wanted)}"
    if len(present) == 1:
        return present[0]
    if present:
        raise FailedPrecondition(f"{artifacts.uri} has {_both(present)}; {needs}")
    found = f"{artifacts.uri} has {_neither(wanted)} {artifacts.holding()}"
    if framework:
        raise FailedPrecondition(f"{found}; {needs} (image {image})")
    raise FailedPrecondition(
        f"{found}, and the container spec has no {PREDICTOR_ENV}; image {image or '(none)'} is neither a "
        f"scikit-learn nor an XGBoost prebuilt image, so {needs}, or {PREDICTOR_ENV}=module:ClassName in "
        "container_spec.env with the module's .py file in the artifact directory (a custom prediction routine)"
    )


def _either(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


def _neither(names: tuple[str, ...]) -> str:
    return "neither " + ", ".join(names[:-1]) + " nor " + names[-1]


def _both(names: list[str]) -> str:
    return ("both " if len(names) == 2 else "all of ") + ", ".join(names[:-1]) + " and " + names[-1]


def _load_file(artifacts: _Artifacts, file: str) -> Predictor:
    where = f"{artifacts.uri}/{file}"
    try:
        data = artifacts.read(file)
    except Exception as e:
        raise FailedPrecondition(f"cannot read {where}: {_cause(e)}") from e
    try:
        if file == BOOSTER:
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(bytearray(data))
            return BoosterPredictor(booster, f"{where} (Booster)")
        if file == JOBLIB:
            import joblib

            obj = joblib.load(io.BytesIO(data))
        else:
            obj = pickle.loads(data)
    except Exception as e:
        raise FailedPrecondition(f"cannot load {where}: {_cause(e)}") from e
    kind = type(obj).__name__
    if _is_booster(obj):
        return BoosterPredictor(obj, f"{where} ({kind})")
    if not callable(getattr(obj, "predict", None)):
        raise FailedPrecondition(f"cannot load {where}: it holds a {kind}, which has no predict method")
    return SklearnPredictor(obj, f"{where} ({kind})")


def _is_booster(obj: Any) -> bool:
    cls = type(obj)
    return cls.__name__ == "Booster" and cls.__module__.startswith("xgboost")


def _relative_problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if "\\" in name:
        return "it has a '\\'"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' path segment"
    return gcs_uri.object_problem(name)


def _cause(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# -- custom prediction routines --------------------------------------------------------------------

_SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<cls>[A-Za-z_]\w*)$")
_import_lock = threading.Lock()
_counter = itertools.count(1)


def _routine_module(value: str, artifacts: _Artifacts) -> tuple[str, str, str]:
    """``(module, class name, relative path)`` of ``module:ClassName``, its source checked present."""
    m = _SPEC.match(value.strip())
    if not m:
        raise FailedPrecondition(
            f"{PREDICTOR_ENV}={value!r} is not module:ClassName (e.g. predictor:MyPredictor, with predictor.py "
            f"in {artifacts.uri})"
        )
    module, cls_name = m["module"], m["cls"]
    rel = module.replace(".", "/")
    if f"{rel}.py" not in artifacts.names and f"{rel}/__init__.py" not in artifacts.names:
        raise FailedPrecondition(
            f"{PREDICTOR_ENV}={value} names module {module}, but {artifacts.uri} has no {rel}.py "
            f"{artifacts.holding()}; put the predictor's source files in the artifact directory"
        )
    return module, cls_name, rel


def _load_custom(value: str, artifacts: _Artifacts, workdir: Path) -> Predictor:
    module, cls_name, rel = _routine_module(value, artifacts)
    workdir.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix="artifacts-", dir=workdir))
    try:
        artifacts.copy_to(local)
    except FailedPrecondition:
        raise
    except Exception as e:
        raise FailedPrecondition(f"cannot copy {artifacts.uri} to {local}: {_cause(e)}") from e
    source = f"{value} from {artifacts.uri}"
    try:
        routine_cls = getattr(_import_isolated(local, module), cls_name)
    except AttributeError as e:
        raise FailedPrecondition(f"{PREDICTOR_ENV}={value}: module {module} has no class {cls_name}") from e
    except Exception as e:
        raise FailedPrecondition(f"{PREDICTOR_ENV}={value}: importing {rel}.py failed: {_cause(e)}") from e
    missing = [a for a in ("load", "predict") if not callable(getattr(routine_cls, a, None))]
    if missing:
        raise FailedPrecondition(
            f"{PREDICTOR_ENV}={value}: {cls_name} has no {' or '.join(missing)} method; a custom prediction "
            "routine needs load(artifacts_uri) and predict(instances), and may have preprocess and postprocess"
        )
    try:
        routine = routine_cls()
        routine.load(str(local))
    except Exception as e:
        raise FailedPrecondition(
            f"{PREDICTOR_ENV}={value}: {cls_name}.load({local}) failed: {_cause(e)}"
        ) from e
    return CustomPredictor(routine, source)


def _import_isolated(root: Path, module: str) -> pytypes.ModuleType:
    """Import ``module`` from ``root`` under a unique package name, leaving no other names in sys.modules.

    The module is ``_bpj_cpr_<n>.<module>``, so relative imports of its neighbours work. Absolute imports of
    neighbours (``import helpers``, as code written for a CPR container does) find ``root`` on sys.path while
    this import runs; the modules they create are then taken out of sys.modules, so the next model's
    ``helpers`` is its own. Imports that run later, inside predict, only see the unique package.
    """
    package = f"_bpj_cpr_{next(_counter)}"
    pkg = pytypes.ModuleType(package)
    pkg.__path__ = [str(root)]
    pkg.__package__ = package
    root_text = os.path.join(root.resolve(), "")
    with _import_lock:
        before = set(sys.modules)
        sys.modules[package] = pkg
        sys.path.insert(0, str(root))
        try:
            return importlib.import_module(f"{package}.{module}")
        except BaseException:
            for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
                del sys.modules[name]
            raise
        finally:
            sys.path.remove(str(root))
            importlib.invalidate_caches()
            for name in set(sys.modules) - before:
                if name == package or name.startswith(package + "."):
                    continue
                file = getattr(sys.modules[name], "__file__", None) or ""
                if file and str(Path(file).resolve()).startswith(root_text):
                    del sys.modules[name]
