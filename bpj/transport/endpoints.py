"""Endpoints: parsing ``host:port`` / ``scheme://host[:port]``, and the rule for when a connection is TLS.

An endpoint on a loopback address (127.0.0.0/8, ::1, localhost) is plaintext unless TLS is asked for (an
``https://``/``grpcs://`` scheme, ``tls=True`` or a root certificate); every other endpoint is TLS.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from bpj import errors

_SCHEME_TLS = {"": None, "grpc": None, "dns": None, "grpcs": True, "https": True, "http": False}
_HOSTPORT = re.compile(r"\[(?P<v6>[0-9a-fA-F:.%]+)\](?::(?P<p6>\d+))?|(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?")


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Endpoint(NamedTuple):
    """A parsed endpoint. ``scheme_tls`` is what the scheme said (None: the scheme said nothing)."""

    host: str
    port: int | None
    scheme_tls: bool | None

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)

    def tls(self, root_certificates: object = None) -> bool:
        """Whether to use TLS: yes for ``https://`` and whenever a root certificate is given (it asks for
        TLS whatever the scheme says), else no for ``http://`` and loopback addresses, yes elsewhere."""
        if self.scheme_tls is not None:
            return self.scheme_tls or root_certificates is not None
        return root_certificates is not None or not self.is_loopback

    def target(self, port: int | None = None) -> str:
        """``host:port`` (IPv6 in brackets); ``port`` when the endpoint named none."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        p = self.port if self.port is not None else port
        return host if p is None else f"{host}:{p}"


def parse_endpoint(endpoint: str) -> Endpoint:
    """``host[:port]``, ``[v6addr]:port``, ``grpc://host:port``, ``https://host[:port]`` (TLS), ``http://``
    (plaintext). A path after the host is ignored (``https://host/`` is fine)."""
    text = endpoint.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    scheme = scheme.lower()
    if scheme not in _SCHEME_TLS:
        raise errors.UsageError(
            f"endpoint {endpoint!r}: unknown scheme {scheme!r}; use host:port, grpc://, https:// or http://"
        )
    m = _HOSTPORT.fullmatch(rest.split("/", 1)[0])
    if m is None:
        raise errors.UsageError(
            f"endpoint {endpoint!r} is not host:port (write an IPv6 address in brackets: [::1]:8500)"
        )
    port = int(m["p6"] or m["port"]) if (m["p6"] or m["port"]) else None
    if port is not None and not 0 < port < 65536:
        raise errors.UsageError(f"endpoint {endpoint!r}: port {port} is out of range")
    return Endpoint(m["v6"] or m["host"], port, _SCHEME_TLS[scheme])
