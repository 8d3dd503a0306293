"""Descriptors and service settings as plain dataclasses: the only input the templates see."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

_VERBS = ("get", "put", "post", "delete", "patch")
_IDEMPOTENT_VERBS = {"get", "put", "delete"}


@dataclass(frozen=True)
class HttpBinding:
    verb: str
    template: str
    body: str


@dataclass(frozen=True)
class Retry:
    initial: float
    maximum: float
    multiplier: float
    deadline: float
    codes: tuple[str, ...]


@dataclass(frozen=True)
class Rpc:
    name: str
    input_type: str  # full name, no leading dot
    output_type: str
    server_streaming: bool
    http: tuple[HttpBinding, ...]
    timeout: float | None
    retry: Retry | None
    idempotent: bool


@dataclass(frozen=True)
class ServiceModel:
    full_name: str
    file: str
    rpcs: tuple[Rpc, ...]

    @property
    def name(self) -> str:
        return self.full_name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class EnumModel:
    name: str
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class FileModel:
    name: str  # proto path, e.g. google/cloud/aiplatform/v1/io.proto
    package: str
    messages: tuple[str, ...]  # top-level message names
    enums: tuple[EnumModel, ...]  # top-level enums

    @property
    def module(self) -> str:
        """Dotted module path under bpj._gen, e.g. google.cloud.aiplatform.v1.io_pb2."""
        return self.name.removesuffix(".proto").replace("/", ".").replace("-", "_") + "_pb2"


@dataclass(frozen=True)
class FieldBehavior:
    """A field's ``google.api.field_behavior`` annotation: OUTPUT_ONLY, REQUIRED, IMMUTABLE..."""

    message: str  # full name, e.g. google.cloud.aiplatform.v1.BatchPredictionJob.OutputInfo
    field: str
    behaviors: tuple[str, ...]  # as the .proto declares them, in its order


@dataclass(frozen=True)
class Api:
    """Everything codegen writes about: the files whose messages bpj exposes and the services it calls."""

    files: tuple[FileModel, ...]
    services: tuple[ServiceModel, ...]
    descriptor_set: bytes
    field_behaviors: tuple[FieldBehavior, ...]
    behavior_names: tuple[str, ...]  # every value of google.api.FieldBehavior

    def module_of(self, full_name: str) -> tuple[str, str]:
        """(module, dotted class path within it) for a message or enum full name."""
        for f in self.files:
            prefix = f.package + "."
            if not full_name.startswith(prefix):
                continue
            local = full_name[len(prefix) :]
            top = local.split(".", 1)[0]
            if top in f.messages or top in {e.name for e in f.enums}:
                return f.module, local
        raise KeyError(f"no exposed file defines {full_name}")


def load_settings(path: Path) -> dict:
    return json.loads(path.read_text())


def _bindings(rule: http_pb2.HttpRule) -> tuple[HttpBinding, ...]:
    out = []
    verb = rule.WhichOneof("pattern")
    if verb in _VERBS:
        out.append(HttpBinding(verb, getattr(rule, verb), rule.body))
    for extra in rule.additional_bindings:
        out.extend(_bindings(extra))
    return tuple(out)


def _rule_from_json(entry: dict) -> tuple[HttpBinding, ...]:
    out = []
    for verb in _VERBS:
        if verb in entry:
            out.append(HttpBinding(verb, entry[verb], entry.get("body", "")))
    for extra in entry.get("additional_bindings", ()):
        out.extend(_rule_from_json(extra))
    return tuple(out)


def _retry(raw: dict | None) -> Retry | None:
    if not raw:
        return None
    return Retry(
        float(raw["initial"]),
        float(raw["maximum"]),
        float(raw["multiplier"]),
        float(raw["deadline"]),
        tuple(sorted(raw["codes"])),
    )


def _field_behaviors(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[FieldBehavior]:
    """The annotated fields of ``messages`` and of the messages nested in them, in declaration order."""
    for m in messages:
        full = f"{prefix}.{m.name}"
        for f in m.field:
            values = f.options.Extensions[field_behavior_pb2.field_behavior]
            if values:
                yield FieldBehavior(
                    full, f.name, tuple(field_behavior_pb2.FieldBehavior.Name(v) for v in values)
                )
        yield from _field_behaviors(full, m.nested_type)


def build(descriptor_set: bytes, inputs: list[str], exposed: list[str], settings: dict) -> Api:
    """The Api for ``inputs`` (the protos/ files) plus the ``exposed`` imported files (Status, Operation...)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    by_name = {f.name: f for f in fds.file}
    overrides: dict[str, tuple[HttpBinding, ...]] = {
        e["selector"]: _rule_from_json(e) for e in settings.get("http", ())
    }
    wanted_services = set(settings.get("generate", ()))
    files: list[FileModel] = []
    services: list[ServiceModel] = []
    # Exposed files only where the inputs import them: protoc also compiles the stubbed common files, which
    # puts them in the set whether or not anything uses them.
    reachable: set[str] = set()
    todo = list(inputs)
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(by_name[name].dependency)
    for name in [*inputs, *(e for e in exposed if e in reachable)]:
        fdp = by_name[name]
        files.append(
            FileModel(
                name=fdp.name,
                package=fdp.package,
                messages=tuple(m.name for m in fdp.message_type),
                enums=tuple(
                    EnumModel(e.name, tuple((v.name, v.number) for v in e.value)) for e in fdp.enum_type
                ),
            )
        )
    for fdp in fds.file:
        for svc in fdp.service:
            full = f"{fdp.package}.{svc.name}"
            if fdp.name not in inputs and full not in wanted_services:
                continue
            conf = settings.get("services", {}).get(full, {})
            rpcs = []
            for m in svc.method:
                if m.client_streaming:
                    continue  # no client-streaming RPC is part of bpj's subset
                selector = f"{full}.{m.name}"
                if selector in overrides:
                    http = overrides[selector]
                elif m.options.HasExtension(annotations_pb2.http):
                    http = _bindings(m.options.Extensions[annotations_pb2.http])
                else:
                    http = ()
                mconf = {**conf, **conf.get("methods", {}).get(m.name, {})}
                idempotent = (bool(http) and http[0].verb in _IDEMPOTENT_VERBS) or m.name in conf.get(
                    "idempotent", ()
                )
                timeout = mconf.get("timeout")
                rpcs.append(
                    Rpc(
                        name=m.name,
                        input_type=m.input_type.lstrip("."),
                        output_type=m.output_type.lstrip("."),
                        server_streaming=m.server_streaming,
                        http=http,
                        timeout=float(timeout) if timeout is not None else None,
                        retry=_retry(mconf.get("retry")),
                        idempotent=idempotent,
                    )
                )
            services.append(ServiceModel(full, fdp.name, tuple(rpcs)))
    behaviors = tuple(b for f in files for b in _field_behaviors(f.package, by_name[f.name].message_type))
    return Api(
        tuple(files),
        tuple(services),
        descriptor_set,
        behaviors,
        tuple(v.name for v in field_behavior_pb2.FieldBehavior.DESCRIPTOR.values),
    )
