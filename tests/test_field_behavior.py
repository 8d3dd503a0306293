"""protos/ carries the public protos' ``google.api.field_behavior`` annotations, and codegen writes them as data.

Three sources must agree for every field of every message in protos/:
- bpj's own descriptors (the annotations in protos/, read through the ``google.api.field_behavior`` extension);
- ``bpj._gen.field_behavior.FIELD_BEHAVIOR``, what codegen emits and ``bpj.validation`` uses;
- the official libraries. Their proto-plus descriptors carry no options at all, so where the official
  field descriptor has no field_behavior the reference is the official class's documentation, which the
  GAPIC generator takes from the same .proto comments: Google's API style opens a field's comment with its
  behaviour in words ("Output only.", "Required.", "Immutable.", "Optional.", "Input only.",
  "Identifier."). Words do not keep the annotation order, so behaviours compare as sets.

The annotations were copied from googleapis/googleapis (protoc over its google/cloud/aiplatform/v1 and
google/cloud/bigquery/storage/v1, commit f8291d2b89f0017ab078a4c7378069bae5686f6f): equal there in order too.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

# The official libraries are test dependencies: missing them is a failure, not a skip.
import google.cloud.aiplatform_v1.types as aiplatform_types
import google.cloud.bigquery_storage_v1.types as bigquery_storage_types
import pytest
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from bpj import types, validation
from bpj._gen import field_behavior

OFFICIAL_PACKAGES = {
    "google.cloud.aiplatform.v1": aiplatform_types,
    "google.cloud.bigquery.storage.v1": bigquery_storage_types,
}
WORDS = {
    "Output only.": "OUTPUT_ONLY",
    "Required.": "REQUIRED",
    "Immutable.": "IMMUTABLE",
    "Optional.": "OPTIONAL",
    "Input only.": "INPUT_ONLY",
    "Identifier.": "IDENTIFIER",
}
# Fields whose public comment opens with "Optional." but that carry no annotation in googleapis.
COMMENT_ONLY = {
    ("google.cloud.bigquery.storage.v1.ArrowSerializationOptions", "picos_timestamp_precision"),
    ("google.cloud.bigquery.storage.v1.AvroSerializationOptions", "picos_timestamp_precision"),
    ("google.cloud.bigquery.storage.v1.ReadSession.TableReadOptions", "selected_fields"),
}


def _messages(desc: Any) -> list[Any]:
    out = [desc]
    for nested in desc.nested_types:
        if not nested.GetOptions().map_entry:
            out.extend(_messages(nested))
    return out


def bpj_messages() -> dict[str, Any]:
    """Every message declared in protos/ (the google.cloud packages), nested ones included."""
    out = {}
    for name in types.__all__:
        desc = getattr(getattr(types, name), "DESCRIPTOR", None)
        if getattr(desc, "full_name", "").startswith(tuple(OFFICIAL_PACKAGES)) and hasattr(desc, "fields"):
            out.update((m.full_name, m) for m in _messages(desc))
    return out


MESSAGES = bpj_messages()


def declared(field: Any) -> tuple[str, ...]:
    """A field descriptor's field_behavior annotation, in declaration order. The options are read again
    from their bytes: options parsed before the extension was imported hold it as an unknown field."""
    options = descriptor_pb2.FieldOptions.FromString(field.GetOptions().SerializeToString())
    return tuple(
        field_behavior_pb2.FieldBehavior.Name(v)
        for v in options.Extensions[field_behavior_pb2.field_behavior]
    )


def official_class(full_name: str) -> Any:
    for package, module in OFFICIAL_PACKAGES.items():
        if full_name.startswith(package + "."):
            obj = module
            for part in full_name[len(package) + 1 :].split("."):
                obj = getattr(obj, part)
            return obj
    raise KeyError(full_name)


def documented(cls: Any) -> dict[str, set[str]]:
    """The behaviours the official class's docstring gives each field (``Attributes:`` entries)."""
    fields: dict[str, str] = {}
    current = None
    for line in (inspect.getdoc(cls) or "").splitlines():
        m = re.match(r"^    (\w+) \(.*\):\s*$", line)
        if m:
            current = m[1]
            fields[current] = ""
        elif current is not None:
            fields[current] += " " + line.strip()
    out = {}
    for name, text in fields.items():
        rest, found = text.strip(), set()
        while word := next((w for w in WORDS if rest.startswith(w)), None):
            found.add(WORDS[word])
            rest = rest[len(word) :].lstrip()
        out[name] = found
    return out


def official(full_name: str) -> dict[str, set[str]]:
    """Field name -> the official behaviours: the descriptor's annotation, else the documented words."""
    cls = official_class(full_name)
    desc = cls.pb().DESCRIPTOR
    docs = documented(cls)
    out = {}
    for f in desc.fields:
        # proto-plus names a field `type_` where the .proto says `type`; bpj kept `type_` (wire-equal)
        out[f.name] = set(declared(f)) or docs.get(f.name, docs.get(f.name.rstrip("_"), set()))
    return out


def test_every_protos_message_is_covered():
    assert "google.cloud.aiplatform.v1.BatchPredictionJob.OutputInfo" in MESSAGES
    assert "google.cloud.aiplatform.v1.Model.ExportFormat" in MESSAGES
    assert "google.cloud.bigquery.storage.v1.ReadSession.TableReadOptions" in MESSAGES
    assert "google.cloud.aiplatform.v1.UploadModelRequest" in MESSAGES
    assert len(MESSAGES) > 60


@pytest.mark.parametrize("full_name", sorted(MESSAGES))
def test_generated_data_is_what_the_protos_declare(full_name):
    ours = {f.name: declared(f) for f in MESSAGES[full_name].fields}
    assert {k: v for k, v in ours.items() if v} == field_behavior.FIELD_BEHAVIOR.get(full_name, {})


@pytest.mark.parametrize("full_name", sorted(MESSAGES))
def test_field_behavior_equals_the_official(full_name):
    theirs = official(full_name)
    for f in MESSAGES[full_name].fields:
        expected = theirs[f.name]
        if (full_name, f.name) in COMMENT_ONLY:
            assert expected == {"OPTIONAL"}, "googleapis' comment changed: check its annotation again"
            expected = set()
        assert set(declared(f)) == expected, f"{full_name}.{f.name}"


def test_validation_output_only_is_the_generated_set():
    assert field_behavior.fields_with(validation.JOB_MESSAGE, "OUTPUT_ONLY") == validation.OUTPUT_ONLY
    assert {"name", "state", "create_time", "output_info", "completion_stats"} <= validation.OUTPUT_ONLY
    assert not validation.OUTPUT_ONLY & {"display_name", "model", "input_config", "labels"}
    settable = set(validation.settable_fields())
    assert settable.isdisjoint(validation.OUTPUT_ONLY)
    assert settable | validation.OUTPUT_ONLY == {f.name for f in types.BatchPredictionJob.DESCRIPTOR.fields}
