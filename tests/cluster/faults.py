"""A partition that fails on its first attempt, for engines to retry: importable by the workers (the
folder's conftest puts this checkout on their path)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bpj.outputs.engines import read_piece
from bpj.outputs.reader import Reader


@dataclass(frozen=True)
class FailsOnce:
    """``inner``, except that its first read (across every process) raises; each attempt adds a line to
    ``log``. The first attempt is the one that creates ``log``."""

    inner: Any
    log: str

    def _attempt(self) -> None:
        try:
            fd = os.open(self.log, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with open(self.log, "a") as f:
                f.write("retry\n")
            return
        with os.fdopen(fd, "w") as f:
            f.write("first\n")
        raise ConnectionResetError(f"injected: the first read of {self.log} breaks")

    def read(self) -> Any:
        self._attempt()
        return self.inner.read()

    def read_piece(self) -> Any:
        self._attempt()
        return read_piece(self.inner)

    @property
    def object(self) -> Any:
        return getattr(self.inner, "object", None)


class FailingOnce(Reader):
    """``reader`` whose every partition fails once; the attempt logs go to ``directory``."""

    def __init__(self, reader: Reader, directory: str) -> None:
        self.reader, self.directory = reader, directory

    def iter_batches(self) -> Any:
        return self.reader.iter_batches()

    def partitions(self, **kwargs: Any) -> Sequence[FailsOnce]:
        parts = self.reader.partitions(**kwargs)
        return [FailsOnce(p, os.path.join(self.directory, f"{n}.log")) for n, p in enumerate(parts)]

    def attempts(self) -> list[list[str]]:
        logs = sorted(os.listdir(self.directory), key=lambda name: int(name.split(".")[0]))
        return [open(os.path.join(self.directory, name)).read().split() for name in logs]
