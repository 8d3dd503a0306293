"""``python -m codegen [--check] [--protos DIR] [--out DIR]``: write bpj/_gen/ from protos/, or check it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen import fmt, model, protoc, render

ROOT = Path(__file__).resolve().parent.parent
# Imported files whose messages bpj exposes too: the status and operation types its RPCs return, and the
# well-known types its messages embed.
EXPOSED = [
    "google/rpc/status.proto",
    "google/longrunning/operations_proto.proto",
    "google/protobuf/any.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
]
STUBBED = ["google/rpc/status.proto", "google/longrunning/operations_proto.proto"]


def generate(protos: Path) -> dict[str, bytes]:
    """Every file of bpj/_gen/ as codegen would write it from ``protos``."""
    inputs = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    if not inputs:
        raise SystemExit(f"no .proto files under {protos}")
    compiled = protoc.run(protos, inputs, STUBBED)
    settings = model.load_settings(protos / "bpj_services.json")
    api = model.build(compiled.descriptor_set, inputs, EXPOSED, settings)
    return fmt.format_python(render.render(api, compiled.stubs))


def diff(expected: dict[str, bytes], out: Path) -> list[str]:
    """Paths that differ between ``expected`` and the tree at ``out`` (missing, changed or stale)."""
    problems = []
    for rel, data in sorted(expected.items()):
        p = out / rel
        if not p.exists():
            problems.append(f"missing: {rel}")
        elif p.read_bytes() != data:
            problems.append(f"changed: {rel}")
    if out.exists():
        for p in sorted(out.rglob("*")):
            rel = str(p.relative_to(out))
            if p.is_file() and "__pycache__" not in p.parts and rel not in expected:
                problems.append(f"stale: {rel}")
    return problems


def write(expected: dict[str, bytes], out: Path) -> None:
    for problem in diff(expected, out):
        if problem.startswith("stale: "):
            (out / problem.removeprefix("stale: ")).unlink()
    for rel, data in expected.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_bytes() != data:
            p.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    ap.add_argument(
        "--check", action="store_true", help="fail if bpj/_gen/ differs from what would be written"
    )
    ap.add_argument("--protos", type=Path, default=ROOT / "protos")
    ap.add_argument("--out", type=Path, default=ROOT / "bpj" / "_gen")
    args = ap.parse_args(argv)
    expected = generate(args.protos)
    if args.check:
        problems = diff(expected, args.out)
        if problems:
            print(f"{args.out} is out of date with {args.protos}; run `python -m codegen`:", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date ({len(expected)} files)")
        return 0
    write(expected, args.out)
    print(f"wrote {len(expected)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
