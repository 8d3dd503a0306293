"""A predictor in a process of its own, so that one that never returns can be stopped.

The executor starts one child per running job with ``python -m bpj.local.predictor_process`` (a fresh
interpreter: forking the stack, which runs gRPC servers, could deadlock). The child dies with the thread that
started it (Linux ``PR_SET_PDEATHSIG``, SIGKILL), ignores SIGINT (the stack decides when it stops), and talks to
the stack over one socket, in pickled messages:

    stack -> child                          child -> stack
    ("load", model, workdir)                ("fetch", uri) / ("list", prefix), answered ("ok", value) or
                                            ("raise", exception class name, message), then
                                            ("loaded", description) or ("failed", code name, message)
    ("predict", parameters, [[payload]])    ("done", [[(ok, prediction or (code, message))]]), one list per batch
    the socket closes                       the child exits

The child only loads the model and predicts: it reads artifacts through the stack (so it needs no endpoint or
credentials), and the stack keeps reading inputs, writing outputs and the SQLite store. ``stop()`` sends
SIGTERM and SIGKILL :data:`GRACE` seconds later, from any thread; whatever the job thread waits on then ends
with :class:`PredictorDied`. A child that dies on its own (crash, signal, ``os._exit``) ends the same way,
with its exit code or signal in the message.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL when a predictor process is stopped."""

_POLL = 0.5
_EXIT_WAIT = 5.0
_PR_SET_PDEATHSIG = 1


class PredictorDied(Exception):
    """The predictor process ended (or was stopped) before it answered."""


class PredictorProcess:
    """The stack's handle on one predictor process (one job thread uses it; ``stop()`` is thread-safe).

    ``what`` names the model in error messages, e.g. ``model "iris" (projects/p/locations/l/models/1)``.
    The child dies with the thread that creates this object: create it from a thread that outlives it.
    """

    def __init__(self, what: str = "the model") -> None:
        import socket
        from multiprocessing.connection import Connection

        self.what = what
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this same bpj
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), root) if p)
        code = "import sys; del sys.path[0]; from bpj.local.predictor_process import main; main()"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self._conn = Connection(ours.detach())
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # -- the protocol -------------------------------------------------------------------------------------
    def load(
        self,
        model: Any,
        workdir: Path,
        fetch: Callable[[str], bytes],
        list_dir: Callable[[str], list[str]],
    ) -> str:
        """Load ``model`` in the child; its description. Raises the ApiError that loading raised, or
        PredictorDied."""
        from bpj import errors

        self._send(("load", model.SerializeToString(), str(workdir)))
        while True:
            message = self._receive("while loading the model")
            kind = message[0]
            if kind in ("fetch", "list"):
                try:
                    value: Any = fetch(message[1]) if kind == "fetch" else list(list_dir(message[1]))
                    answer: tuple[Any, ...] = ("ok", value)
                except Exception as e:
                    answer = ("raise", type(e).__name__, str(e))
                self._send(answer)
            elif kind == "loaded":
                return str(message[1])
            elif kind == "failed":
                raise errors.ApiError(message[2], code=errors.Code[message[1]])
            else:
                raise PredictorDied(f"the predictor process for {self.what} sent {kind!r} while loading")

    def explain(self, spec: Any) -> None:
        """Make every following prediction an :class:`bpj.local.explain.Explained` with the attributions
        ``spec`` (an ExplanationSpec) asks for. Raises the ApiError the spec raised, or PredictorDied."""
        from bpj import errors

        self._send(("explain", spec.SerializeToString()))
        message = self._receive("while preparing explanations")
        if message[0] == "failed":
            raise errors.ApiError(message[2], code=errors.Code[message[1]])
        if message[0] != "explaining":
            raise PredictorDied(f"the predictor process for {self.what} sent {message[0]!r} while preparing")

    def send_batches(self, parameters: Any, batches: list[list[Any]]) -> None:
        """Send batches of payloads; their results come back, in order, from :meth:`results`."""
        self._send(("predict", parameters, batches))

    def results(self) -> list[list[tuple[bool, Any]]]:
        """The results of the oldest batches sent and not yet received, as ``predict_isolating_errors``."""
        message = self._receive("while predicting")
        if message[0] != "done":
            raise PredictorDied(f"the predictor process for {self.what} sent {message[0]!r} while predicting")
        return message[1]  # type: ignore[no-any-return]

    # -- ending -------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        return not self._stopped.is_set() and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM now, SIGKILL after :data:`GRACE` seconds if it is still there. Returns at once."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a no-op once it is reaped
            timer = threading.Timer(GRACE, self._kill)
            timer.daemon = True
            timer.start()

    def close(self) -> None:
        """End the child: close the socket (it exits on its own), stop it if it does not, and reap it."""
        self._conn.close()
        try:
            self.proc.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.stop()
            self.proc.wait(GRACE + _EXIT_WAIT)

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _send(self, message: Any) -> None:
        try:
            self._conn.send_bytes(pickle.dumps(message, protocol=5))
        except OSError:
            raise self._died("") from None

    def _receive(self, doing: str) -> Any:
        try:
            while not self._conn.poll(_POLL):
                if self.proc.poll() is not None or self._stopped.is_set():
                    raise self._died(doing)
            return pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            raise self._died(doing) from None

    def _died(self, doing: str) -> PredictorDied:
        if self._stopped.is_set():
            return PredictorDied(f"the predictor process for {self.what} was stopped")
        try:
            code = self.proc.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:  # it closed the socket but lives on
            self.stop()
            return PredictorDied(f"the predictor process for {self.what} stopped answering {doing}".strip())
        return PredictorDied(f"the predictor process for {self.what} {exit_text(code)} {doing}".strip())


def exit_text(returncode: int) -> str:
    """``exited with code 3`` or ``was killed by signal SIGSEGV (11)``, for a Popen returncode."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "signal"
    return f"was killed by signal {name} ({-returncode})"


# -- the child -------------------------------------------------------------------------------------------


def die_with_parent(parent: int) -> None:
    """Get SIGKILL when the thread that started this process ends (Linux); exit now if it already has."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


# Imported by every child before it waits for its model (a spare child is started ahead of its job, so a
# scikit-learn job does not wait about a second for scipy and scikit-learn to import).
PRELOAD = ("numpy", "joblib", "sklearn.base")


def _preload() -> None:
    import contextlib
    import importlib

    for name in ("bpj.local.models", *PRELOAD):
        # Not installed or broken: the model's own load says so, if it needs it.
        with contextlib.suppress(Exception):
            importlib.import_module(name)


class _Child:
    def __init__(self, fd: int) -> None:
        from multiprocessing.connection import Connection

        os.set_inheritable(fd, False)  # the predictor's own subprocesses must not hold the socket open
        self.conn = Connection(fd)

    def receive(self) -> Any:
        return pickle.loads(self.conn.recv_bytes())

    def send(self, message: Any) -> None:
        self.conn.send_bytes(_dumps(message))

    def ask(self, kind: str, argument: str) -> Any:
        self.send((kind, argument))
        answer = self.receive()
        if answer[0] == "ok":
            return answer[1]
        raise _exception(answer[1], answer[2])

    def load(self, model_bytes: bytes, workdir: str) -> Any:
        from bpj import errors, types
        from bpj.local.models import load_predictor

        model = types.Model.FromString(model_bytes)
        fetch: Callable[[str], bytes] = lambda uri: self.ask("fetch", uri)  # noqa: E731
        list_dir: Callable[[str], list[str]] = lambda prefix: self.ask("list", prefix)  # noqa: E731
        try:
            load = _publisher_loader(model) or load_predictor
            predictor = load(model, fetch=fetch, list_dir=list_dir, workdir=Path(workdir))
        except errors.ApiError as e:
            self.send(("failed", e.code.name, e.message))
            return None
        except Exception as e:
            self.send(("failed", "INTERNAL", f"loading the model failed: {type(e).__name__}: {e}"))
            return None
        self.send(("loaded", repr(predictor)))
        return predictor

    def explainer(self, spec_bytes: bytes) -> Any:
        from bpj import errors, types
        from bpj.local.explain import Explainer

        try:
            explainer = Explainer(types.ExplanationSpec.FromString(spec_bytes))
        except errors.ApiError as e:
            self.send(("failed", e.code.name, e.message))
            return None
        self.send(("explaining",))
        return explainer

    def serve(self) -> None:
        from bpj.local.models import predict_isolating_errors

        message = self.receive()
        predictor = self.load(message[1], message[2])
        if predictor is None:
            return
        explainer = None
        while True:
            message = self.receive()
            if message[0] == "explain":
                explainer = self.explainer(message[1])
                continue
            _, parameters, batches = message
            results = [
                predict_isolating_errors(predictor, payloads, parameters) if payloads else []
                for payloads in batches
            ]
            if explainer is not None:
                results = _explained(explainer, predictor, batches, results, parameters)
            try:
                data = _dumps(("done", results))
            except Exception:
                data = _dumps(("done", [[_sendable(r) for r in rs] for rs in results]))
            self.conn.send_bytes(data)


def _publisher_loader(model: Any) -> Any:
    """bpj.local.publisher's loader when ``model`` names a publisher model (Gemini, embeddings), else None."""
    from bpj.local.publisher import is_publisher, load_publisher

    return load_publisher if is_publisher(model.name) else None


def _explained(
    explainer: Any, predictor: Any, batches: list[Any], results: list[Any], parameters: Any
) -> list[Any]:
    """``results`` with each prediction explained (in one pass over every batch), or failed when its
    explanation failed."""
    from bpj.local.explain import Explained

    spots = [(b, i) for b, rs in enumerate(results) for i, (ok, _) in enumerate(rs) if ok]
    explained = explainer.explain(predictor, [batches[b][i] for b, i in spots], parameters)
    out = [list(rs) for rs in results]
    for (b, i), (ok, value) in zip(spots, explained, strict=True):
        out[b][i] = (True, Explained(out[b][i][1], value)) if ok else (False, value)
    return out


def _dumps(message: Any) -> bytes:
    import io

    buf = io.BytesIO()
    _Pickler(buf, protocol=5).dump(message)
    return buf.getvalue()


class _Pickler(pickle.Pickler):
    # Objects of the predictor's own classes cannot be unpickled in the stack, which cannot import its module.
    def reducer_override(self, obj: Any) -> Any:
        if type(obj).__module__.startswith("_bpj_cpr_"):
            raise pickle.PicklingError(f"{type(obj).__name__} is defined by the predictor's own module")
        return NotImplemented


def _sendable(result: tuple[bool, Any]) -> tuple[bool, Any]:
    try:
        _dumps(result)
        return result
    except Exception as e:
        what = type(result[1]).__name__
        return False, ("INTERNAL", f"the prediction ({what}) cannot be sent back from the predictor: {e}")


def _exception(name: str, message: str) -> Exception:
    """The stack's exception again, with its class name, so load_predictor's messages read as in-process."""
    from bpj import errors

    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.ApiError):
        return cls(message)
    return type(name, (Exception,), {})(message)


def main() -> None:
    """The child: ``<socket fd> <parent pid>`` as arguments."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    child = _Child(fd)
    try:
        child.serve()
    except EOFError:  # the stack closed the socket: done
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
