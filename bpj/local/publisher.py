"""What answers publisher-model requests on the local stack: a stand-in that says what it is, or your model.

Vertex AI runs batch jobs on publisher models (``publishers/google/models/gemini-2.0-flash-001``,
``publishers/google/models/text-embedding-005``, or the same under ``projects/{p}/locations/{l}/``). The local
stack has no Gemini; it answers each request with a documented, deterministic stand-in, or with a local model
you plug in. Nothing here pretends to be Google's model: the text says it is bpj's stand-in and
``modelVersion`` ends in ``@bpj-local-stand-in``.

Formats (Vertex AI's, as documented):

- Gemini batch input: each JSONL line / BigQuery row has a ``request`` holding a GenerateContentRequest in its
  JSON form (https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-from-cloud-storage,
  .../batch-prediction-from-bigquery, .../model-reference/batch-prediction-api). Its answer is a
  GenerateContentResponse: ``candidates`` (``content`` with role ``model`` and text ``parts``, ``finishReason``,
  ``index``), ``usageMetadata`` (``promptTokenCount``, ``candidatesTokenCount``, ``totalTokenCount``),
  ``modelVersion``, ``responseId``. The job's ``model_parameters`` fill in the ``generationConfig`` fields a
  request leaves unset (:func:`with_parameters`).
- Embeddings batch input: each line / row is an instance ``{"content": ..., "task_type": ..., "title": ...}``
  and its prediction ``{"embeddings": {"statistics": {"token_count": n, "truncated": false}, "values": [...]}}``
  (https://cloud.google.com/vertex-ai/generative-ai/docs/embeddings/batch-prediction-genai-embeddings). The job's
  ``model_parameters`` may hold ``outputDimensionality`` and ``autoTruncate``, as the online API's parameters.

The stand-in, as functions of the request only (no clock, no randomness), so tests can assert on it:

- :func:`stand_in_response`: one candidate per ``generationConfig.candidateCount`` (default 1), each with the
  text ``bpj local stand-in for <model id>, not a real model. Request sha256 <16 hex>, <n> prompt tokens.
  It ends: "<the last 60 characters of the last text part>"`` where the digest is SHA-256 of the request's
  ``contents`` as compact JSON with sorted keys. ``maxOutputTokens`` cuts the text (``finishReason``
  ``MAX_TOKENS``), else ``finishReason`` is ``STOP``. ``responseId`` is the first 24 hex digits of SHA-256 of
  the model id and the whole request. No ``createTime`` (it would make the answer depend on the clock).
- Token counts: no Gemini tokenizer ships in any installed package, so :func:`approx_tokens` counts
  ``ceil(characters / 4)`` for each text (Google's rule of thumb: a token is about four characters,
  https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/get-token-count); other parts count 0.
- :func:`stand_in_embedding`: the dimension of the model (768 for text-embedding-005 and the gecko and
  multilingual text models, 3072 for gemini-embedding-001), or ``outputDimensionality``; the values are SHA-256
  of ``[model id, task_type, title, content]`` (compact JSON) stretched in counter mode to 32-bit numbers mapped
  to [-1, 1), then scaled to unit length. Content over 2048 tokens is cut (``truncated: true``) unless
  ``autoTruncate`` is false, which makes the row an error.

Malformed requests (not an object, no ``contents``, wrong types, an unknown field, a bad role) and plug-in
failures are per-row errors: the row's ``status`` holds ``Bad Request: {"error": {...}}`` (or ``Internal Server
Error: ...``), the job goes on.

Plug-in: ``BPJ_PUBLISHER_MODEL=module:Class`` in the stack's environment, or ``LocalStack(publisher_model=
"module:Class")`` (``module`` may be a path to a ``.py`` file). The class is built as ``Class(model_name)``
(the job's model name) in the job's predictor process, so cancel stops it as it stops custom predictors, and
has either method or both::

    def generate(self, request: dict) -> dict: ...   # a GenerateContentResponse as JSON
    def embed(self, instance: dict, parameters: dict) -> dict | list[float]: ...  # {"values", "statistics"}

A method it lacks falls back to the stand-in; an exception it raises fails that row only.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PLUGIN_ENV",
    "PublisherModel",
    "PublisherPredictor",
    "approx_tokens",
    "bad_request",
    "embedding_problem",
    "format_problems",
    "is_publisher",
    "load_publisher",
    "with_parameters",
    "parse_model",
    "request_problem",
    "stand_in_embedding",
    "stand_in_response",
]

PLUGIN_ENV = "BPJ_PUBLISHER_MODEL"
VERSION_SUFFIX = "@bpj-local-stand-in"
MAX_EMBEDDING_TOKENS = 2048
_NAME = re.compile(
    r"^(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
    r"publishers/(?P<publisher>[a-z0-9][a-z0-9._-]*)/models/(?P<model>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?:@(?P<version>[A-Za-z0-9._-]+))?$"
)
_DIMENSIONS = {"gemini-embedding-001": 3072}
_DEFAULT_DIMENSION = 768
TASK_TYPES = frozenset(
    {
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)
# GenerateContentRequest's fields, in both spellings proto JSON accepts.
_REQUEST_FIELDS = frozenset(
    {
        "contents",
        "model",
        "systemInstruction",
        "system_instruction",
        "cachedContent",
        "cached_content",
        "tools",
        "toolConfig",
        "tool_config",
        "labels",
        "safetySettings",
        "safety_settings",
        "generationConfig",
        "generation_config",
    }
)
_PART_DATA = frozenset(
    {
        "text",
        "inlineData",
        "inline_data",
        "fileData",
        "file_data",
        "functionCall",
        "function_call",
        "functionResponse",
        "function_response",
        "executableCode",
        "executable_code",
        "codeExecutionResult",
        "code_execution_result",
    }
)
_PART_EXTRA = frozenset(
    {"thought", "thoughtSignature", "thought_signature", "videoMetadata", "video_metadata"}
)


@dataclass(frozen=True)
class PublisherModel:
    """A publisher model's name taken apart; ``kind`` is ``generate`` or ``embed``."""

    publisher: str
    model: str
    version: str | None
    location: str | None

    @property
    def kind(self) -> str:
        m = self.model.lower()
        return "embed" if "embedding" in m else "generate"

    @property
    def is_gemini(self) -> bool:
        return self.publisher == "google" and self.model.startswith("gemini")


def parse_model(name: str) -> PublisherModel | None:
    """``publishers/{pub}/models/{m}[@v]`` or ``projects/{p}/locations/{l}/publishers/...`` -> its parts."""
    m = _NAME.match(name or "")
    if m is None:
        return None
    return PublisherModel(m["publisher"], m["model"], m["version"], m["location"])


def is_publisher(name: str) -> bool:
    return parse_model(name) is not None


def approx_tokens(text: str) -> int:
    """About four characters a token (see the module docstring)."""
    return math.ceil(len(text) / 4)


def bad_request(message: str) -> str:
    """A row's ``status`` for a request Vertex AI would refuse."""
    body = {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    return "Bad Request: " + json.dumps(body, ensure_ascii=False)


def internal_error(message: str) -> str:
    body = {"error": {"code": 500, "message": message, "status": "INTERNAL"}}
    return "Internal Server Error: " + json.dumps(body, ensure_ascii=False)


# -- Gemini requests ---------------------------------------------------------------------------------------


def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    return d[camel] if camel in d else d.get(snake)


def _content_problem(content: Any, where: str, *, role_allowed: bool = True) -> str | None:
    if not isinstance(content, dict):
        return f"{where} must be an object"
    role = content.get("role")
    if role is not None and (not role_allowed or role not in ("user", "model", "")):
        return f"{where}.role: Please use a valid role: user, model."
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        return f"{where}.parts must be a non-empty array"
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            return f"{at} must be an object"
        data = [k for k in part if k in _PART_DATA]
        unknown = [k for k in part if k not in _PART_DATA and k not in _PART_EXTRA]
        if unknown:
            return f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at '{at}'"
        if len(data) != 1:
            return f"{at} must hold exactly one of text, inlineData, fileData, functionCall, functionResponse"
        if "text" in part and not isinstance(part["text"], str):
            return f"{at}.text must be a string"
    return None


def request_problem(request: Any, *, gemini: bool = True) -> str | None:
    """Why Vertex AI would refuse ``request`` as a GenerateContentRequest (None: it would not). Only the
    object check applies to other publishers' models (their request formats differ)."""
    if not isinstance(request, dict):
        return "request must be a JSON object (a GenerateContentRequest)"
    if not gemini:
        return None
    for key in request:
        if key not in _REQUEST_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    contents = request.get("contents")
    if contents is None:
        return "contents is required: at least one content with parts"
    if not isinstance(contents, list) or not contents:
        return "contents must be a non-empty array"
    for i, content in enumerate(contents):
        problem = _content_problem(content, f"contents[{i}]")
        if problem:
            return problem
    system = _get(request, "systemInstruction", "system_instruction")
    if system is not None:
        problem = _content_problem(system, "systemInstruction")
        if problem:
            return problem
    config = _get(request, "generationConfig", "generation_config")
    if config is not None:
        if not isinstance(config, dict):
            return "generationConfig must be an object"
        limit = _get(config, "maxOutputTokens", "max_output_tokens")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            return "generationConfig.maxOutputTokens must be a positive integer"
        count = _get(config, "candidateCount", "candidate_count")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 8
        ):
            return "generationConfig.candidateCount must be an integer from 1 to 8"
        temperature = config.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0 <= temperature <= 2
        ):
            return "generationConfig.temperature must be a number from 0 to 2"
    return None


def _texts(content: Any) -> list[str]:
    if not isinstance(content, dict):
        return []
    return [
        p["text"]
        for p in content.get("parts") or []
        if isinstance(p, dict) and isinstance(p.get("text"), str)
    ]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def stand_in_response(request: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The stand-in's GenerateContentResponse for a valid ``request`` (see the module docstring)."""
    contents = request.get("contents") or []
    system = _get(request, "systemInstruction", "system_instruction")
    prompt_texts = [t for c in contents for t in _texts(c)] + _texts(system)
    prompt_tokens = sum(approx_tokens(t) for t in prompt_texts)
    last = next((ts[-1] for ts in (_texts(c) for c in reversed(contents)) if ts), "")
    digest = hashlib.sha256(_canonical(contents)).hexdigest()[:16]
    text = (
        f"bpj local stand-in for {model_id}, not a real model. Request sha256 {digest}, "
        f'{prompt_tokens} prompt tokens. It ends: "{last[-60:]}"'
    )
    config = _get(request, "generationConfig", "generation_config") or {}
    limit = _get(config, "maxOutputTokens", "max_output_tokens")
    finish = "STOP"
    if limit is not None and approx_tokens(text) > limit:
        text, finish = text[: limit * 4], "MAX_TOKENS"
    n = _get(config, "candidateCount", "candidate_count") or 1
    out_tokens = approx_tokens(text)
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish, "index": i}
            for i in range(n)
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens * n,
            "totalTokenCount": prompt_tokens + out_tokens * n,
        },
        "modelVersion": model_id + VERSION_SUFFIX,
        "responseId": hashlib.sha256(_canonical([model_id, request])).hexdigest()[:24],
    }


def with_parameters(request: Any, parameters: Any) -> Any:
    """The request as the model gets it: the job's ``model_parameters`` fill in the ``generationConfig``
    fields the request leaves unset (Google's sample of a Gemini batch job from BigQuery sets temperature and
    maxOutputTokens there: .../docs/samples/generativeaionvertexai-batch-predict-gemini-createjob-bigquery).
    The output keeps the request as it was given."""
    if not isinstance(parameters, dict) or not parameters or not isinstance(request, dict):
        return request
    key = (
        "generation_config" if "generation_config" in request and "generationConfig" not in request else None
    )
    key = key or "generationConfig"
    config = request.get(key)
    if config is not None and not isinstance(config, dict):
        return request  # request_problem says why
    # model_parameters reach the job as a protobuf Value, whose numbers are floats
    defaults = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in parameters.items()}
    return {**request, key: {**defaults, **(config or {})}}


# -- embeddings --------------------------------------------------------------------------------------------


def dimension_of(model_id: str) -> int:
    return _DIMENSIONS.get(model_id.split("@")[0], _DEFAULT_DIMENSION)


def _parameter(parameters: Any, camel: str, snake: str) -> Any:
    value = _get(parameters, camel, snake) if isinstance(parameters, dict) else None
    # model_parameters reach the job as a protobuf Value: its numbers are floats
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def embedding_problem(instance: Any, parameters: Any, model_id: str) -> str | None:
    """Why Vertex AI would refuse this embeddings instance with these parameters (None: it would not)."""
    if not isinstance(instance, dict):
        return "each instance must be a JSON object with a content field"
    content = instance.get("content")
    if not isinstance(content, str):
        return "content is required and must be a string"
    task = instance.get("task_type", instance.get("taskType"))
    if task is not None and (not isinstance(task, str) or task not in TASK_TYPES):
        return f"task_type {task!r} is not one of {', '.join(sorted(TASK_TYPES))}"
    title = instance.get("title")
    if title is not None:
        if not isinstance(title, str):
            return "title must be a string"
        if task != "RETRIEVAL_DOCUMENT":
            return "title is only valid with task_type RETRIEVAL_DOCUMENT"
    size = _parameter(parameters, "outputDimensionality", "output_dimensionality")
    full = dimension_of(model_id)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= full):
        return f"outputDimensionality must be an integer from 1 to {full}"
    auto = _parameter(parameters, "autoTruncate", "auto_truncate")
    if auto is False and approx_tokens(content) > MAX_EMBEDDING_TOKENS:
        return (
            f"the content has about {approx_tokens(content)} tokens, over the model's limit of "
            f"{MAX_EMBEDDING_TOKENS}, and autoTruncate is false"
        )
    return None


def stand_in_embedding(instance: dict[str, Any], parameters: Any, model_id: str) -> dict[str, Any]:
    """The stand-in's ``embeddings`` object for a valid instance (see the module docstring)."""
    content = instance["content"]
    tokens = approx_tokens(content)
    truncated = tokens > MAX_EMBEDDING_TOKENS
    if truncated:
        content, tokens = content[: MAX_EMBEDDING_TOKENS * 4], MAX_EMBEDDING_TOKENS
    task = instance.get("task_type", instance.get("taskType")) or ""
    size = _parameter(parameters, "outputDimensionality", "output_dimensionality") or dimension_of(model_id)
    seed = hashlib.sha256(_canonical([model_id, task, instance.get("title") or "", content])).digest()
    raw: list[float] = []
    counter = 0
    while len(raw) < size:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw.extend(u / 2**31 - 1.0 for u in struct.unpack(">8I", block))
        counter += 1
    raw = raw[:size]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return {
        "statistics": {"token_count": tokens, "truncated": truncated},
        "values": [x / norm for x in raw],
    }


# -- the predictor the job's process runs ------------------------------------------------------------------


class _StandIn:
    def __repr__(self) -> str:
        return "bpj's local stand-in"


class PublisherPredictor:
    """Answers a batch of payloads (JSONL lines or BigQuery rows as dicts) with one dict each:

    - generate: ``{"request": <the parsed request>, "response": {...}}`` or ``{"status": "...", "code": ...}``
      (``request`` also when the request was parsed but refused);
    - embed: ``{"predictions": [{"embeddings": {...}}]}`` or ``{"status": "...", "code": ...}``.

    ``code`` is a google.rpc code name, for the job's partial_failures; writers drop it.
    """

    def __init__(self, model_name: str, backend: Any = None, plugin: str = "") -> None:
        parsed = parse_model(model_name)
        if parsed is None:
            raise ValueError(f"{model_name!r} is not a publisher model name")
        self.name = model_name
        self.model = parsed
        self.backend = backend if backend is not None else _StandIn()
        self.plugin = plugin

    def __repr__(self) -> str:
        what = f"plug-in {self.plugin}" if self.plugin else "bpj's local stand-in"
        return f"{self.model.publisher}/{self.model.model} answered by {what}"

    def predict(self, instances: list[Any], parameters: Any = None) -> list[dict[str, Any]]:
        if self.model.kind == "embed":
            return [self.embed(i, parameters) for i in instances]
        return [self.generate(i, parameters) for i in instances]

    def generate(self, payload: Any, parameters: Any = None) -> dict[str, Any]:
        if not isinstance(payload, dict) or "request" not in payload:
            return {
                "status": bad_request("each line or row needs a request field"),
                "code": "INVALID_ARGUMENT",
            }
        request = payload["request"]
        if isinstance(request, str):  # a BigQuery STRING or JSON column
            try:
                request = json.loads(request)
            except ValueError as e:
                return {"status": bad_request(f"request is not valid JSON: {e}"), "code": "INVALID_ARGUMENT"}
        asked = with_parameters(request, parameters) if self.model.is_gemini else request
        problem = request_problem(asked, gemini=self.model.is_gemini)
        if problem is not None:
            return {"request": request, "status": bad_request(problem), "code": "INVALID_ARGUMENT"}
        method = getattr(self.backend, "generate", None)
        if method is None:
            if not self.model.is_gemini:
                message = f"the local stack has no stand-in for {self.name}; plug in a model ({PLUGIN_ENV})"
                return {"request": request, "status": internal_error(message), "code": "FAILED_PRECONDITION"}
            return {"request": request, "response": stand_in_response(asked, self.model.model)}
        try:
            response = method(asked)
            if not isinstance(response, dict):
                raise TypeError(f"generate() returned {type(response).__name__}, not a dict")
            json.dumps(response, allow_nan=False)
        except Exception as e:
            return {
                "request": request,
                "status": internal_error(f"{type(e).__name__}: {e}"),
                "code": "INTERNAL",
            }
        return {"request": request, "response": response}

    def embed(self, instance: Any, parameters: Any) -> dict[str, Any]:
        problem = embedding_problem(instance, parameters, self.model.model)
        if problem is not None:
            return {"status": bad_request(problem), "code": "INVALID_ARGUMENT"}
        method = getattr(self.backend, "embed", None)
        if method is None:
            return {
                "predictions": [{"embeddings": stand_in_embedding(instance, parameters, self.model.model)}]
            }
        try:
            result = method(instance, parameters if isinstance(parameters, dict) else {})
            if isinstance(result, dict):
                values = [float(v) for v in result["values"]]
                statistics = result.get("statistics") or _statistics(instance)
            else:
                values, statistics = [float(v) for v in result], _statistics(instance)
            if not all(math.isfinite(v) for v in values):
                raise ValueError("embed() returned a value that is not finite")
        except Exception as e:
            return {"status": internal_error(f"{type(e).__name__}: {e}"), "code": "INTERNAL"}
        return {"predictions": [{"embeddings": {"statistics": statistics, "values": values}}]}


def _statistics(instance: dict[str, Any]) -> dict[str, Any]:
    tokens = approx_tokens(instance["content"])
    return {"token_count": min(tokens, MAX_EMBEDDING_TOKENS), "truncated": tokens > MAX_EMBEDDING_TOKENS}


def load_plugin(spec: str, model_name: str) -> Any:
    """``module:Class`` (``module`` a dotted name or a path to a ``.py`` file) -> ``Class(model_name)``.
    FailedPrecondition, naming the setting, when it cannot be loaded."""
    from bpj import errors

    module_name, colon, class_name = spec.rpartition(":")
    if not colon or not module_name or not class_name:
        raise errors.FailedPrecondition(f"{PLUGIN_ENV}={spec!r} must be module:Class")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            unique = "_bpj_publisher_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
            loader = importlib.util.spec_from_file_location(unique, path)
            if loader is None or loader.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(loader)
            sys.modules[unique] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        return cls(model_name)
    except Exception as e:
        raise errors.FailedPrecondition(
            f"the publisher model plug-in {PLUGIN_ENV}={spec!r} could not be loaded: {type(e).__name__}: {e}"
        ) from None


def load_publisher(model: Any, **_: Any) -> PublisherPredictor:
    """The predictor process's loader for a publisher model: ``model`` is a ``types.Model`` whose ``name`` is
    the job's model and whose ``container_spec.env`` may carry :data:`PLUGIN_ENV` (the executor puts the
    stack's setting there). Takes and ignores ``load_predictor``'s other arguments."""
    env = {e.name: e.value for e in model.container_spec.env}
    spec = env.get(PLUGIN_ENV, "")
    backend = load_plugin(spec, model.name) if spec else None
    return PublisherPredictor(model.name, backend, spec)


def format_problems(job: Any) -> list[tuple[str, str]]:
    """(field, problem) pairs for the formats a publisher-model job cannot take."""
    out = []
    ic, oc = job.input_config, job.output_config
    if ic.WhichOneof("source") == "gcs_source" and ic.instances_format != "jsonl":
        out.append(("input_config.instances_format", "A publisher model reads jsonl from Cloud Storage."))
    if oc.WhichOneof("destination") == "gcs_destination" and oc.predictions_format != "jsonl":
        out.append(("output_config.predictions_format", "A publisher model writes jsonl to Cloud Storage."))
    if job.generate_explanation:
        out.append(("generate_explanation", "Batch jobs on publisher models do not give explanations."))
    return out
