"""bpj's messages are the official ones on the wire: the same bytes and the same proto3 JSON, both ways.

Messages come from bpj.testing.strategies, cross to the official libraries' raw protobuf classes and come
back: (a) as bytes, (b) as proto3 JSON. The descriptor tests then check, type by type, that every message
and enum reachable from the RPC messages is declared exactly as the official descriptor declares it,
and every reachable message round-trips as a root of its own.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The official libraries are test dependencies: missing them is a failure, not a skip.
import google.cloud.aiplatform_v1.types as aiplatform_types  # noqa: E402
import google.cloud.bigquery_storage_v1.types as bigquery_storage_types  # noqa: E402
import google.longrunning.operations_pb2 as operations_pb2  # noqa: E402
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpj import types
from bpj.testing import strategies as bst

AIPLATFORM = [
    "BatchPredictionJob",
    "CreateBatchPredictionJobRequest",
    "GetBatchPredictionJobRequest",
    "ListBatchPredictionJobsRequest",
    "ListBatchPredictionJobsResponse",
    "DeleteBatchPredictionJobRequest",
    "CancelBatchPredictionJobRequest",
    "Model",
    "UploadModelRequest",
    "UploadModelResponse",
    "UploadModelOperationMetadata",
    "GetModelRequest",
    "ListModelsRequest",
    "ListModelsResponse",
    "DeleteModelRequest",
    "GenericOperationMetadata",
    "DeleteOperationMetadata",
]
BIGQUERY_STORAGE = [
    "ReadSession",
    "CreateReadSessionRequest",
    "ReadRowsRequest",
    "ReadRowsResponse",
    "SplitReadStreamRequest",
    "SplitReadStreamResponse",
]
LONGRUNNING = ["Operation", "GetOperationRequest", "ListOperationsResponse"]


def official_class(name: str) -> Any:
    if name in AIPLATFORM:
        return getattr(aiplatform_types, name).pb()
    if name in BIGQUERY_STORAGE:
        return getattr(bigquery_storage_types, name).pb()
    return getattr(operations_pb2, name)


NAMES = AIPLATFORM + BIGQUERY_STORAGE + LONGRUNNING
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def through_bytes(msg: Any, official: Any) -> Any:
    theirs = official.FromString(msg.SerializeToString())
    # Same bytes out of both libraries (deterministic: map entries sorted by key).
    assert theirs.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)
    return type(msg).FromString(theirs.SerializeToString())


def through_json(msg: Any, official: Any) -> Any:
    ours = json_format.MessageToJson(msg)
    theirs = json_format.Parse(ours, official())
    text = json_format.MessageToJson(theirs)
    assert json.loads(text) == json.loads(ours)
    return json_format.Parse(text, type(msg)())


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_binary_round_trip(name: str, data: st.DataObject) -> None:
    cls = getattr(types, name)
    msg = data.draw(bst.messages(cls))
    back = through_bytes(msg, official_class(name))
    assert back == msg
    assert back.ListFields() == msg.ListFields()


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_json_round_trip(name: str, data: st.DataObject) -> None:
    cls = getattr(types, name)
    msg = data.draw(bst.messages(cls, json_safe=True))
    back = through_json(msg, official_class(name))
    assert back == msg


@SETTINGS
@given(
    job=bst.batch_prediction_jobs(json_safe=True),
    model=bst.models(json_safe=True),
    session=bst.read_sessions(json_safe=True),
)
def test_named_strategies_round_trip(job: Any, model: Any, session: Any) -> None:
    for msg, name in ((job, "BatchPredictionJob"), (model, "Model"), (session, "ReadSession")):
        assert through_bytes(msg, official_class(name)) == msg
        assert through_json(msg, official_class(name)) == msg
    assert re.fullmatch(r"projects/[a-z0-9-]+/locations/[a-z0-9-]+/batchPredictionJobs/\d+", job.name)
    assert re.fullmatch(r"projects/[a-z0-9-]+/locations/[a-z0-9-]+/models/\d+(@\w+)?", job.model)
    assert job.state in types.JobState.values()
    assert re.fullmatch(r"projects/[a-z0-9-]+/locations/[a-z0-9-]+/models/\d+", model.name)
    assert all(s.name.startswith(session.name + "/streams/") for s in session.streams)


@settings(max_examples=30)
@given(
    st.data(),
    st.sampled_from(["google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"]),
)
def test_well_known_types_stay_valid_in_json(data: st.DataObject, full_name: str) -> None:
    msg = data.draw(bst.messages(full_name))
    assert json_format.Parse(json_format.MessageToJson(msg), type(msg)()) == msg


# --- descriptors ----------------------------------------------------------------------------------


def reachable(roots: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every message and enum descriptor reachable from roots through fields and nested declarations."""
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    stack = list(roots)
    while stack:
        desc = stack.pop()
        if desc.full_name in messages:
            continue
        messages[desc.full_name] = desc
        stack.extend(desc.nested_types)
        enums.update((e.full_name, e) for e in desc.enum_types)
        for field in desc.fields:
            if field.message_type is not None:
                stack.append(field.message_type)
            if field.enum_type is not None:
                enums[field.enum_type.full_name] = field.enum_type
    return messages, enums


def field_signature(field: Any) -> tuple[Any, ...]:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        repeated = field.label == field.LABEL_REPEATED
    message = field.message_type
    return (
        field.name,
        field.number,
        field.type,
        repeated,
        field.has_presence,
        field.json_name,
        field.containing_oneof.name if field.containing_oneof else None,
        message.full_name if message else None,
        bool(message and message.GetOptions().map_entry),
        field.enum_type.full_name if field.enum_type else None,
    )


BPJ_ROOTS = [getattr(types, name).DESCRIPTOR for name in NAMES]
BPJ_MESSAGES, BPJ_ENUMS = reachable(BPJ_ROOTS)


def official_pool() -> Any:
    for name in NAMES:
        official_class(name)  # registers the official descriptors in protobuf's default pool
    return descriptor_pool.Default()


@pytest.mark.parametrize("full_name", sorted(BPJ_MESSAGES))
def test_message_descriptor_matches_official(full_name: str) -> None:
    ours = BPJ_MESSAGES[full_name]
    theirs = official_pool().FindMessageTypeByName(full_name)
    assert ours is not theirs  # bpj's descriptors stay out of the default pool
    assert {f.number: field_signature(f) for f in ours.fields} == {
        f.number: field_signature(f) for f in theirs.fields
    }
    assert [o.name for o in ours.oneofs] == [o.name for o in theirs.oneofs]
    assert [f.number for f in ours.fields] == [f.number for f in theirs.fields]
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry


@pytest.mark.parametrize("full_name", sorted(BPJ_ENUMS))
def test_enum_descriptor_matches_official(full_name: str) -> None:
    ours = BPJ_ENUMS[full_name]
    theirs = official_pool().FindEnumTypeByName(full_name)
    assert [(v.name, v.number) for v in ours.values] == [(v.name, v.number) for v in theirs.values]


def test_reachable_set_is_whole() -> None:
    # The roots reach every type the round trips exercise; a new root type must be covered too.
    assert "google.cloud.aiplatform.v1.BatchPredictionJob.OutputInfo" in BPJ_MESSAGES
    assert "google.cloud.aiplatform.v1.JobState" in BPJ_ENUMS
    assert "google.cloud.bigquery.storage.v1.DataFormat" in BPJ_ENUMS
    assert "google.rpc.Status" in BPJ_MESSAGES


# Every reachable message as a root of its own, so types deeper than max_depth below the RPC messages
# (explanation metadata, probes, Struct inside Struct...) cross the wire too.
NESTED = sorted(name for name, desc in BPJ_MESSAGES.items() if not desc.GetOptions().map_entry)


@pytest.mark.parametrize("full_name", NESTED)
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_every_reachable_message_round_trips(full_name: str, data: st.DataObject) -> None:
    official = message_factory.GetMessageClass(official_pool().FindMessageTypeByName(full_name))
    msg = data.draw(bst.messages(BPJ_MESSAGES[full_name]))
    assert through_bytes(msg, official) == msg
    safe = data.draw(bst.messages(BPJ_MESSAGES[full_name], json_safe=True))
    assert through_json(safe, official) == safe
