"""Format generated Python with ruff (pinned in the codegen extra, so the output is the same everywhere)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

LINE_LENGTH = 110


def ruff_bin() -> str:
    from ruff._find_ruff import find_ruff_bin  # ruff's own locator of its binary

    return str(find_ruff_bin())


def format_python(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same files with every ``.py`` and ``.pyi`` run through ``ruff format`` (one process for all)."""
    sources = [rel for rel in files if rel.endswith((".py", ".pyi"))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel in sources:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(files[rel])
        result = subprocess.run(
            [ruff_bin(), "format", "--isolated", "--quiet", f"--line-length={LINE_LENGTH}", str(root)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"ruff format failed on the generated code:\n{result.stderr}")
        return {**files, **{rel: (root / rel).read_bytes() for rel in sources}}
