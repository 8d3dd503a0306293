"""Who may use the console: one-time login links, sessions and their CSRF tokens.

- A stack with a token prints a one-time link, ``/console/login?once=<nonce>``. The nonce is a random value of
  its own (never the token), works once, and expires after :data:`LINK_TTL` seconds unless used.
- Opening it starts a session: a random value sent back as an ``HttpOnly; SameSite=Strict`` cookie, scoped
  to ``/console`` and named after the port (two stacks on one machine keep their cookies apart). The session
  carries a CSRF token of its own, which the page reads from ``/console/api/session`` (same origin only: the
  console sends no CORS headers) and sends in the ``X-BPJ-CSRF`` header of every POST.
- Sessions and nonces live in memory: a restarted stack asks for a new link.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

LINK_TTL = 15 * 60.0
SESSION_TTL = 12 * 3600.0
MAX_LINKS = 64
MAX_SESSIONS = 256


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires: float  # time.monotonic()

    def csrf_ok(self, header: str | None) -> bool:
        if not header:
            return False
        return hmac.compare_digest(header.strip().encode("utf-8", "surrogateescape"), self.csrf.encode())


class Sessions:
    """One-time links and sessions of one console; thread-safe."""

    def __init__(self, *, link_ttl: float = LINK_TTL, session_ttl: float = SESSION_TTL) -> None:
        self.link_ttl = link_ttl
        self.session_ttl = session_ttl
        self._links: OrderedDict[str, float] = OrderedDict()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def new_link(self, ttl: float | None = None) -> str:
        """A fresh nonce, valid once for ``ttl`` seconds (default :attr:`link_ttl`)."""
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            self._links[nonce] = time.monotonic() + (self.link_ttl if ttl is None else ttl)
            while len(self._links) > MAX_LINKS:
                self._links.popitem(last=False)
        return nonce

    def redeem(self, nonce: str) -> Session | None:
        """A new session for a valid, unused, unexpired nonce (which is then spent); else None."""
        with self._lock:
            # Looked up by equality in a dict: the nonce is random and single-use, so a timing difference
            # tells an attacker nothing they could use twice.
            expires = self._links.pop(nonce, None)
        if expires is None or time.monotonic() >= expires:
            return None
        return self.new_session()

    def new_session(self) -> Session:
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + self.session_ttl
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and time.monotonic() >= session.expires:
                del self._sessions[session_id]
                session = None
        return session
