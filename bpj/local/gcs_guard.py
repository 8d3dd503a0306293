"""The local stack's GCS port: a checking front in its own process, with fake-gcs-server out of reach behind it.

    python -m bpj.local.gcs_guard          (settings as one JSON line on stdin; see GcsServer in gcs.py)

fake-gcs-server has no authentication, answers every origin with ``Access-Control-Allow-Origin: *`` and
writes object names under its root as they come, ``..`` included. So no client ever talks to it: this
process listens on the stack's GCS port and, for each request,

1. refuses a foreign ``Host`` (DNS rebinding), a foreign ``Origin``, and, with a token, a request without
   ``Authorization: Bearer <token>`` (bpj.local.servers.guard);
2. lets through only the JSON API routes of :mod:`bpj.local.gcs_routes`, every bucket and object name
   checked, the request rebuilt from what was checked, with only the headers the API uses;
3. relays the answer without any ``Access-Control-*`` header, bodies moved by ``splice(2)`` from socket to
   socket without passing through Python.

Where the kernel lets an unprivileged process have its own user and network namespace (most Linux systems),
fake-gcs-server runs in a fresh network namespace whose only interface is its own loopback: no other process
on the machine can connect to it, whatever port it uses; this process opened its listening socket before
entering the namespace, and connects to the engine from inside. Where the kernel refuses, the engine listens
on 127.0.0.1 as before and the first line this process prints says that it is not isolated (the stack warns).

Each refusal answers with the JSON API's error body. The process ends, and ends the engine, on SIGTERM or
SIGINT, and when the stack that started it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

from bpj.local.gcs_media import open_media, parse_range
from bpj.local.gcs_routes import (
    MAX_METADATA_BYTES,
    MAX_MULTIPART_BYTES,
    Refused,
    Route,
    canonical_body,
    route,
)
from bpj.local.http_relay import (
    IDLE_TIMEOUT,
    Closed,
    Pipe,
    error_answer,
    framing_of,
    is_decimal,
    linger_close,
    one,
    parse_head,
    read_body,
    read_head,
    recv_exact,
    relay_chunked,
    set_timeouts,
)
from bpj.local.servers.guard import Guard

MAX_CONNECTIONS = 256
FIRST_REQUEST_WAIT = 10.0  # seconds a new connection may stay silent before its first request
_FORWARDED = frozenset(
    {
        "accept",
        "accept-encoding",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-md5",
        "content-range",
        "content-type",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-unmodified-since",
        "range",
        "user-agent",
        "x-upload-content-length",
        "x-upload-content-type",
    }
)


class Connection:
    """One client connection and its own connection to the engine; requests are served one at a time."""

    def __init__(self, client: socket.socket, proxy: Proxy) -> None:
        self.client = client
        self.proxy = proxy
        self.upstream: socket.socket | None = None
        self.served = 0  # requests answered on this connection
        self.pipe = Pipe()

    def serve(self) -> None:
        try:
            while self.serve_one():
                pass
        except (Closed, OSError):
            pass
        finally:
            linger_close(self.client)
            if self.upstream is not None:
                with contextlib.suppress(OSError):
                    self.upstream.close()
            self.pipe.close()

    def serve_one(self) -> bool:
        """Serve one request; False when the connection must end."""
        try:
            # A new connection gets a short while to say something; a kept-alive one may idle longer.
            head = read_head(self.client, first_wait=IDLE_TIMEOUT if self.served else FIRST_REQUEST_WAIT)
            method, target, version, headers = parse_head(head)
            if version not in ("HTTP/1.1", "HTTP/1.0"):
                raise Refused(400, f"unsupported protocol {version[:20]!r}: use HTTP/1.1")
            if len(target) > 16384:
                raise Refused(414, "the request target is over 16 KiB")
            framing = framing_of(headers)
            refusal = self.proxy.guard.refusal(
                host=one(headers, "host"),
                origin=one(headers, "origin"),
                authorization=one(headers, "authorization"),
            )
            if refusal is not None:
                raise Refused(*refusal)
            r = route(method, target, content_type=one(headers, "content-type") or "")
        except Refused as e:
            # The body, if any, is still unread: the connection cannot go on.
            self.client.sendall(error_answer(e.status, e.message, close=True))
            return False
        keep_alive = version == "HTTP/1.1" and (one(headers, "connection") or "").lower() != "close"
        try:
            self.served += 1
            return self.forward(method, r, headers, framing) and keep_alive
        except Refused as e:
            self.client.sendall(error_answer(e.status, e.message, close=True))
            return False

    def forward(
        self, method: str, r: Route, headers: list[tuple[str, str]], framing: tuple[str, int]
    ) -> bool:
        bodiless = framing in (("none", 0), ("length", 0))
        if (
            r.media is not None
            and self.proxy.root is not None
            and bodiless
            and self.serve_media(r.media, headers)
        ):
            return True
        # The client's own Host (checked: one of our names) goes on: the engine builds links from it.
        out = [f"{method} {r.target} HTTP/1.1", f"Host: {one(headers, 'host')}"]
        out += [f"{k}: {v}" for k, v in headers if k in _FORWARDED or k.startswith("x-goog-")]
        body: bytes | None = None
        if r.body in ("json", "multipart"):
            limit = MAX_MULTIPART_BYTES if r.body == "multipart" else MAX_METADATA_BYTES
            if one(headers, "expect") is not None:
                self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            data = read_body(self.client, framing, limit)
            body, content_type = canonical_body(r, one(headers, "content-type") or "", data)
            out = [line for line in out if not line.lower().startswith("content-type:")]
            if content_type:
                out.append(f"Content-Type: {content_type}")
            out.append(f"Content-Length: {len(body)}")
        elif r.body == "stream" and framing[0] != "none":
            if one(headers, "expect") is not None:
                self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            out.append(
                "Transfer-Encoding: chunked" if framing[0] == "chunked" else f"Content-Length: {framing[1]}"
            )
        elif framing != ("none", 0) and framing != ("length", 0):
            raise Refused(400, f"{method} on this route takes no body")
        upstream = self.engine()
        upstream.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if body:
            upstream.sendall(body)
        elif r.body == "stream" and framing[0] == "length":
            self.pipe.move(self.client, upstream, framing[1])
        elif r.body == "stream" and framing[0] == "chunked":
            relay_chunked(self.client, upstream, self.pipe)
        return self.answer(method, upstream)

    def serve_media(self, names: tuple[str, str, str], headers: list[tuple[str, str]]) -> bool:
        """Answer a download from the engine's files (bpj/local/gcs_media.py); False: the engine answers."""
        bucket, name, generation = names
        q = urllib.parse.quote
        meta = self.engine_json(f"/storage/v1/b/{q(bucket, safe='')}/o/{q(name, safe='')}", headers)
        if meta is None or (generation and str(meta.get("generation")) != generation):
            return False
        assert self.proxy.root is not None
        media = open_media(self.proxy.root, bucket, name, meta)
        if media is None:
            return False
        try:
            span = parse_range(one(headers, "range"), media.size)
            if span is False or span is True:
                return False
            try:
                head = media.head(span or None)
            except ValueError:
                return False
            self.client.sendall(head)
            media.send(self.client, span or None)
        finally:
            media.close()
        return True

    def engine_json(self, path: str, headers: list[tuple[str, str]]) -> dict[str, Any] | None:
        """GET a small JSON resource from the engine on this connection's upstream; None unless 200."""
        upstream = self.engine()
        upstream.sendall(f"GET {path} HTTP/1.1\r\nHost: {one(headers, 'host')}\r\n\r\n".encode("latin-1"))
        _, status, _, answer = parse_head(read_head(upstream))
        length = one(answer, "content-length")
        if not is_decimal(length) or int(length) > MAX_METADATA_BYTES:  # type: ignore[arg-type]
            upstream.close()  # cannot tell where this answer ends: start afresh
            self.upstream = None
            return None
        body = recv_exact(upstream, int(length))  # type: ignore[arg-type]
        if (one(answer, "connection") or "").lower() == "close":
            upstream.close()
            self.upstream = None
        if status != "200":
            return None
        try:
            value = json.loads(body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def engine(self) -> socket.socket:
        """The connection to the engine: the one kept from the last request unless the engine closed it or
        wrote past its answer meanwhile (an idle connection with something to read is of no more use)."""
        if self.upstream is not None and select.select([self.upstream], [], [], 0)[0]:
            self.upstream.close()
            self.upstream = None
        if self.upstream is None:
            self.upstream = self.proxy.connect()
        return self.upstream

    def answer(self, method: str, upstream: socket.socket) -> bool:
        """Relay the engine's answer; False when the connection must end after it."""
        try:
            head = read_head(upstream)
        except (Closed, Refused):
            self.upstream = None
            self.client.sendall(error_answer(502, "the GCS engine closed the connection", close=True))
            return False
        _, status, _, headers = parse_head(head)
        lines = head.decode("latin-1").split("\r\n")
        kept = [lines[0]] + [
            line for line in lines[1:-2] if not line.lower().startswith("access-control-") and line
        ]
        self.client.sendall(("\r\n".join(kept) + "\r\n\r\n").encode("latin-1"))
        code = int(status) if is_decimal(status) else 502
        te = (one(headers, "transfer-encoding") or "").lower()
        cl = one(headers, "content-length")
        if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            pass
        elif te == "chunked":
            relay_chunked(upstream, self.client, self.pipe)
        elif cl is not None and is_decimal(cl):
            self.pipe.move(upstream, self.client, int(cl))
        else:
            self.pipe.move_to_end(upstream, self.client)
            self.upstream = None
            return False
        if (one(headers, "connection") or "").lower() == "close":
            upstream.close()
            self.upstream = None
        return True


class Proxy:
    """The listening socket, the guard's checks, and how to reach the engine."""

    def __init__(
        self, listener: socket.socket, guard: Guard, engine: tuple[str, int], root: str | None = None
    ) -> None:
        self.listener = listener
        self.guard = guard
        self.root = root  # the engine's filesystem root: downloads are served from its files
        self.engine_address = engine
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._open: dict[Connection, float] = {}  # connection -> when it was accepted

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.engine_address, timeout=10)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_timeouts(sock)
        return sock

    def serve_forever(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if not self._slots.acquire(blocking=False):
                # Full: make room by closing the oldest connection that has not yet sent a whole request
                # (with a token, nobody without it ever gets past that), so idle strangers cannot lock out
                # the clients that talk.
                self._evict_silent()
                if not self._slots.acquire(timeout=1.0):
                    with contextlib.suppress(OSError):
                        client.sendall(error_answer(503, "too many connections to the local GCS", close=True))
                        client.close()
                    continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_timeouts(client)
            threading.Thread(target=self._serve, args=(Connection(client, self),), daemon=True).start()

    def _evict_silent(self) -> None:
        with self._lock:
            silent = [(t, c) for c, t in self._open.items() if c.served == 0]
        if silent:
            _, oldest = min(silent, key=lambda item: item[0])
            with contextlib.suppress(OSError):
                oldest.client.shutdown(socket.SHUT_RDWR)

    def _serve(self, connection: Connection) -> None:
        with self._lock:
            self._open[connection] = time.monotonic()
        try:
            connection.serve()
        finally:
            with self._lock:
                self._open.pop(connection, None)
            self._slots.release()


# -- the process: isolate, start the engine, serve ------------------------------------------------------------

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def isolate() -> str | None:
    """Enter a new user and network namespace with its loopback up; None on success, else why not."""
    if sys.platform != "linux":
        return "network namespaces are a Linux feature"
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}"
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifreq = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
    except OSError as e:
        return f"setting up the namespace failed: {e}"
    return None


# Resolved once, here: a preexec_fn runs between fork and exec in a copy of a threaded process, where
# loading a library (dlopen) can find its lock held by a thread that no longer exists.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (or a preexec_fn): get ``sig`` when the thread that started this process ends."""
    if _PRCTL is not None:
        _PRCTL(1, sig)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_engine(proc: subprocess.Popen[bytes], address: tuple[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection(address, timeout=1) as s:
                s.sendall(f"GET /storage/v1/b HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake-gcs-server did not answer within {timeout:.0f}s")
        time.sleep(0.02)


def main() -> int:
    """Read settings from stdin, listen, isolate, start the engine, print one JSON line, serve."""
    die_with_parent()
    if os.getppid() == 1:
        return 1
    settings: dict[str, Any] = json.loads(sys.stdin.readline())
    host: str = settings["host"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, int(settings.get("port") or 0)))
    except OSError as e:
        print(json.dumps({"error": f"cannot listen on {host}:{settings.get('port')}: {e}"}), flush=True)
        return 2
    listener.listen(128)
    port = int(listener.getsockname()[1])
    why_not = isolate() if settings.get("isolate", True) else "isolation was turned off"
    engine = ("127.0.0.1", _free_port("127.0.0.1"))
    public = (
        settings.get("public_url") or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    )
    args = [settings["binary"], "-scheme", "http", "-host", engine[0], "-port", str(engine[1])]
    if settings.get("root"):
        args += ["-backend", "filesystem", "-filesystem-root", settings["root"]]
    else:
        args += ["-backend", "memory"]
    args += ["-log-level", "error", "-public-host", public.split("://", 1)[1], "-external-url", public]
    log = open(settings["log"], "ab") if settings.get("log") else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        close_fds=True,
        preexec_fn=die_with_parent,
    )

    def stop(*_: object) -> None:
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _wait_engine(proc, engine, float(settings.get("startup_timeout", 20)))
    except RuntimeError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        stop()
    guard = Guard(host, port, token=settings.get("token"), extra_names=settings.get("names", ()))
    print(
        json.dumps({"port": port, "isolated": why_not is None, "why_not": why_not, "engine_port": engine[1]}),
        flush=True,
    )
    proxy = Proxy(listener, guard, engine, settings.get("root"))

    def engine_ended() -> None:
        proc.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=engine_ended, daemon=True).start()
    try:
        proxy.serve_forever()
    except OSError as e:
        if e.errno != errno.EBADF:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
