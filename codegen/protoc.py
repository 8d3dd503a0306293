"""Run protoc from grpcio-tools: a FileDescriptorSet with every import, and .pyi stubs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProtocOutput:
    descriptor_set: bytes
    stubs: dict[str, str]  # proto path without ".proto" + "_pb2.pyi" -> text


def include_paths() -> list[Path]:
    """googleapis-common-protos' .proto files and the protobuf well-known types shipped with grpcio-tools."""
    import google.api.annotations_pb2 as annotations
    import grpc_tools

    common = Path(annotations.__file__).resolve().parents[2]
    wkt = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [common, wkt]


def run(proto_root: Path, files: list[str], stub_files: list[str]) -> ProtocOutput:
    """Compile ``files`` (paths relative to ``proto_root``); write stubs for them and for ``stub_files``."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "pyi").mkdir()
        args = [
            "protoc",
            f"-I{proto_root}",
            *(f"-I{p}" for p in include_paths()),
            f"--descriptor_set_out={out / 'set.binpb'}",
            "--include_imports",
            f"--pyi_out={out / 'pyi'}",
            *files,
            *stub_files,
        ]
        code = protoc.main(args)
        if code != 0:
            raise SystemExit(f"protoc failed (exit {code}) on {', '.join(files)}")
        stubs = {str(p.relative_to(out / "pyi")): p.read_text() for p in sorted((out / "pyi").rglob("*.pyi"))}
        return ProtocOutput((out / "set.binpb").read_bytes(), stubs)
