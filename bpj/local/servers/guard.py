"""Who may talk to a local server: the checks every port of the local stack makes, in one place.

- ``Host``: a browser page can point a name it controls at 127.0.0.1 (DNS rebinding) and then read our
  answers as same-origin. So a request must name one of the server's own addresses in its ``Host`` header
  (or ``:authority``); any other name is refused before anything else is looked at.
- ``Origin``: a page on another site may still send "simple" requests (a form POST, a GET) without asking
  first; a request that carries an ``Origin`` other than the server's own is refused, and no answer ever
  carries a wildcard ``Access-Control-Allow-Origin``.
- ``Authorization``: with a token, ``Bearer <token>`` (the scheme in any case, RFC 9110 §11.1), compared in
  constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Iterable

__all__ = ["LOOPBACK_NAMES", "Guard", "bearer_ok", "is_loopback", "split_host"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, str]:
    """``"name:port"`` / ``"[v6]:port"`` / ``"name"`` -> ``(name lower-cased, port or "")``."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value.lower(), ""
        name, rest = value[1:end], value[end + 1 :]
        return name.lower(), rest[1:] if rest.startswith(":") else ""
    name, sep, port = value.rpartition(":")
    if not sep or ":" in name:  # no port, or a bare IPv6 address
        return value.lower(), ""
    return name.lower(), port


def own_names(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a client may use for a server bound to ``bind_host``: loopback names, the bind address, and
    for an unspecified bind (0.0.0.0, ::) this machine's host names and their addresses."""
    names = set(LOOPBACK_NAMES)
    names.add(bind_host.strip("[]").lower())
    if bind_host.strip("[]") in UNSPECIFIED:
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name.lower())
            try:
                for info in socket.getaddrinfo(name, None):
                    names.add(str(info[4][0]).lower())
            except OSError:
                pass
    names.update(n.strip("[]").lower() for n in extra)
    names -= UNSPECIFIED
    return frozenset(names)


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode())


class Guard:
    """The checks of one server: ``refusal(host=, origin=, authorization=)`` is None when a request may go on,
    else ``(http status, message)`` saying why not."""

    def __init__(
        self, bind_host: str, port: int, *, token: str | None = None, extra_names: Iterable[str] = ()
    ) -> None:
        if token is not None and not token.strip():
            raise ValueError("an empty token would let every request in: give a non-empty one, or None")
        self.names = own_names(bind_host, extra_names)
        self.port = str(port)
        self.token = token

    def host_ok(self, host: str | None) -> bool:
        # The name is what DNS rebinding changes; any port is fine (a port forward or a test proxy in front
        # of the server keeps the client's port in Host).
        if not host:
            return False
        return split_host(host)[0] in self.names

    def origin_ok(self, origin: str | None) -> bool:
        """No Origin (not a browser), or exactly this server's own origin (same name and port)."""
        if origin is None:
            return True
        scheme, sep, rest = origin.partition("://")
        name, port = split_host(rest.rstrip("/"))
        return bool(sep) and scheme.lower() in ("http", "https") and name in self.names and port == self.port

    def refusal(
        self, *, host: str | None, origin: str | None = None, authorization: str | None = None
    ) -> tuple[int, str] | None:
        if not self.host_ok(host):
            return 403, (
                f"the Host header {host!r} does not name this server: use 127.0.0.1:{self.port} "
                "(a foreign Host is how a web page reaches a local server by DNS rebinding)"
            )
        if not self.origin_ok(origin):
            return 403, f"requests from web pages of other origins ({origin}) are refused"
        if self.token is not None and not bearer_ok(authorization, self.token):
            return 401, "a bearer token is required: set BPJ_TOKEN (Authorization: Bearer <token>)"
        return None
