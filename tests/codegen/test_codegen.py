"""codegen: golden output for a small API, and --check catching a proto change that was not regenerated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codegen import __main__ as cli
from codegen import render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"


def test_golden_output_is_what_codegen_writes():
    expected = cli.generate(GOLDEN / "protos")
    assert cli.diff(expected, GOLDEN / "expected") == []


def test_golden_service_carries_rules_retry_and_streaming():
    text = (GOLDEN / "expected" / "services" / "things.py").read_text()
    assert 'HttpRule("get", "/v1/{name=things/*}", "")' in text  # additional binding kept, in order
    assert "server_streaming=True" in text
    assert "timeout=3600.0" in text  # per-method override of the service default


def test_golden_field_behavior_is_data():
    namespace: dict = {}
    exec((GOLDEN / "expected" / "field_behavior.py").read_text(), namespace)
    assert namespace["FIELD_BEHAVIOR"] == {
        "demo.v1.Thing": {"create_time": ("OUTPUT_ONLY",)},
        "demo.v1.Thing.Part": {"label": ("REQUIRED", "IMMUTABLE")},  # nested, two behaviours in order
        "demo.v1.WatchThingsRequest": {"parent": ("REQUIRED",)},
    }
    fields_with = namespace["fields_with"]
    assert fields_with("demo.v1.Thing.Part", "IMMUTABLE") == {"label"}
    assert fields_with("demo.v1.GetThingRequest", "REQUIRED") == frozenset()
    with pytest.raises(ValueError, match="not a google.api.FieldBehavior"):
        fields_with("demo.v1.Thing", "OUTPUT-ONLY")


def test_checked_in_code_is_up_to_date():
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_check_fails_after_unregenerated_proto_change(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    job = protos / "google/cloud/aiplatform/v1/batch_prediction_job.proto"
    text = job.read_text()
    added = text.replace(
        "bool disable_container_logging = 34;", "bool disable_container_logging = 34;\n  string extra = 99;"
    )
    # an annotation dropped: OUTPUT_ONLY no longer says the service sets name
    dropped = added.replace(
        "string name = 1 [(google.api.field_behavior) = OUTPUT_ONLY];", "string name = 1;"
    )
    assert text != added != dropped
    job.write_text(dropped)
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "--check", "--protos", str(protos)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "changed: descriptors.binpb" in result.stderr
    assert "batch_prediction_job_pb2.pyi" in result.stderr
    assert "changed: field_behavior.py" in result.stderr


def test_check_reports_stale_files(tmp_path):
    out = tmp_path / "gen"
    expected = cli.generate(GOLDEN / "protos")
    cli.write(expected, out)
    (out / "leftover.py").write_text("")
    assert cli.diff(expected, out) == ["stale: leftover.py"]
    cli.write(expected, out)
    assert cli.diff(expected, out) == []


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("GetBatchPredictionJob", "get_batch_prediction_job"),
        ("BigQueryRead", "big_query_read"),
        ("ReadRows", "read_rows"),
        ("UploadModel", "upload_model"),
        ("HTTPRule", "http_rule"),
    ],
)
def test_snake_case(name, snake):
    assert render.snake(name) == snake


@given(
    st.lists(
        st.sampled_from(["Get", "Batch", "Prediction", "Job", "Read", "Rows", "V1"]), min_size=1, max_size=5
    )
)
def test_snake_case_of_camel_words(words):
    assert render.snake("".join(words)) == "_".join(w.lower() for w in words)


def test_stub_imports_point_into_bpj_gen():
    stub = "from google.cloud.aiplatform.v1 import io_pb2 as _io_pb2\nfrom google.protobuf import struct_pb2 as _s\n"
    out = render.rewrite_stub(stub, {"google.cloud.aiplatform.v1.io_pb2", "google.protobuf.struct_pb2"})
    assert "from bpj._gen.google.cloud.aiplatform.v1 import io_pb2 as _io_pb2" in out
    assert "from google.protobuf import struct_pb2 as _s" in out  # well-known types keep upstream stubs


def test_generated_python_is_formatted():
    from codegen.fmt import LINE_LENGTH, ruff_bin

    result = subprocess.run(
        [
            ruff_bin(),
            "format",
            "--check",
            "--isolated",
            f"--line-length={LINE_LENGTH}",
            str(ROOT / "bpj" / "_gen"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_template_is_rendered():
    render._template.cache_clear()
    cli.generate(GOLDEN / "protos")
    used = render._template.cache_info().currsize
    assert used == len(list(render.TEMPLATES.glob("*.tmpl")))
