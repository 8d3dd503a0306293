"""The console's WSGI application: pages, static files, a JSON API, and who may use them.

Routes (all under ``/console``; ``/`` redirects there):

    GET  /console/                   the jobs page          GET  /console/api/session   {csrf, parent, ...}
    GET  /console/job?name=...       one job's page         GET  /console/api/jobs?state=&label=
    GET  /console/models             the models page        GET  /console/api/job?name=
    GET  /console/static/<file>      its scripts and style  GET  /console/api/models
    GET  /console/login?once=<n>     one-time link          POST /console/api/cancel    {"name": ...}
    GET  /console/login              sign in with the token POST /console/api/delete    {"name": ...}
    POST /console/login              (form field ``token``) GET  /console/api/download?job=&uri=  an output file

Who may do what (the server in front, :class:`~bpj.local.servers.http_server.RestServer`, has already
refused a ``Host`` that is not the stack's and an ``Origin`` that is not the console's own):

- With a token, every route but login needs the session cookie a login set, or ``Authorization: Bearer``.
  Without one, a first page view starts a session by itself (the loopback default: any local process may
  use the stack, as with its other ports).
- A POST by cookie also needs the session's CSRF token in ``X-BPJ-CSRF``; a ``Sec-Fetch-Site`` naming another
  site (``same-site``, ``cross-site``) is refused. GET never changes anything.
- Every answer carries a Content-Security-Policy without inline script, ``nosniff``, ``no-referrer``,
  ``frame-ancestors 'none'`` and ``no-store``; an output file comes as an attachment under a ``sandbox`` CSP. The pages hold no data: scripts fetch it as JSON
  and build the DOM with ``textContent``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from http import cookies
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from bpj import errors
from bpj.local.console.sessions import Session, Sessions
from bpj.local.servers.guard import bearer_ok

StartResponse = Callable[..., Any]

CSRF_HEADER = "X-BPJ-CSRF"
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
]
CHALLENGE = ("WWW-Authenticate", 'Bearer realm="bpj console"')  # what a 401 asks for (RFC 9110 §11.6.1)
PAGES = frozenset({"/console/", "/console/job", "/console/models"})  # one page; its script shows the view
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "jobs.js": "text/javascript; charset=utf-8",
    "job.js": "text/javascript; charset=utf-8",
    "models.js": "text/javascript; charset=utf-8",
}
_MAX_FORM = 4096


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConsoleApp:
    """The console of one stack; ``cookie_name`` is set once its port is known (cookies ignore ports)."""

    # How the HTTP server renders the refusals it makes itself (Host, Origin, framing): google.rpc.Status.
    error_body = staticmethod(errors.status_json)

    def __init__(self, views: Any, *, token: str | None, sessions: Sessions | None = None) -> None:
        self.views = views
        self.token = token
        self.sessions = sessions or Sessions()
        self.cookie_name = "bpj_console"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = {
            k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()
        }
        try:
            if path in ("/", "/console"):
                return _redirect(start_response, "/console/")
            if path == "/console/login":
                return self.login(environ, method, query, start_response)
            if not path.startswith("/console/"):
                raise Refused(404, f"nothing is served at {path}")
            if path == "/console/static/console.css" and method == "GET":
                return self.file(start_response, "console.css")  # the sign-in page's style: no data in it
            session = self.session_of(environ)
            if self.token is not None and session is None and not self.bearer(environ):
                if path.startswith("/console/api/"):
                    raise Refused(401, "sign in first: open the one-time link `bpj local start` printed")
                return self.file(start_response, "signin.html", status="401 Unauthorized")
            set_cookie = None
            if session is None and self.token is None and method == "GET" and path in PAGES:
                session = self.sessions.new_session()  # the loopback default: no sign-in
                set_cookie = self.cookie(session)
            if path.startswith("/console/api/"):
                return self.api(environ, method, path[len("/console/api/") :], query, session, start_response)
            if method != "GET":
                raise Refused(405, f"{method} is not served at {path}")
            if path in PAGES:
                return self.file(start_response, "console.html", set_cookie=set_cookie)
            name = path[len("/console/static/") :] if path.startswith("/console/static/") else ""
            if name in STATIC:
                return self.file(start_response, name)
            raise Refused(404, f"nothing is served at {path}")
        except Refused as e:
            return _json(start_response, {"error": {"code": e.status, "message": e.message}}, status=e.status)

    # -- who ---------------------------------------------------------------------------------------------

    def bearer(self, environ: dict[str, Any]) -> bool:
        return self.token is not None and bearer_ok(environ.get("HTTP_AUTHORIZATION"), self.token)

    def session_of(self, environ: dict[str, Any]) -> Session | None:
        jar = cookies.SimpleCookie()
        try:
            jar.load(environ.get("HTTP_COOKIE", ""))
        except cookies.CookieError:
            return None
        morsel = jar.get(self.cookie_name)
        return self.sessions.get(morsel.value if morsel is not None else None)

    def cookie(self, session: Session) -> tuple[str, str]:
        max_age = int(self.sessions.session_ttl)
        return (
            "Set-Cookie",
            f"{self.cookie_name}={session.id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        )

    def check_post(self, environ: dict[str, Any], session: Session | None) -> None:
        """A POST changes something: the bearer token, or the session cookie with its CSRF header."""
        site = environ.get("HTTP_SEC_FETCH_SITE")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, f"requests from other sites ({site}) are refused")
        if self.bearer(environ):
            return
        if session is None:
            raise Refused(401, "sign in first, or send Authorization: Bearer <token>")
        if not session.csrf_ok(environ.get("HTTP_" + CSRF_HEADER.upper().replace("-", "_"))):
            raise Refused(403, f"the {CSRF_HEADER} header is missing or is not this session's")

    def login(
        self, environ: dict[str, Any], method: str, query: dict[str, str], start_response: StartResponse
    ) -> Iterable[bytes]:
        if method not in ("GET", "POST"):
            raise Refused(405, f"{method} is not served at /console/login")
        if self.token is None:  # nothing to sign in to
            return _redirect(start_response, "/console/")
        if method == "GET" and "once" in query:
            session = self.sessions.redeem(query["once"])
            if session is None:  # used already, expired or made up: the page says how to sign in instead
                return self.file(start_response, "signin.html", status="403 Forbidden")
            return _redirect(start_response, "/console/", self.cookie(session))
        if method == "GET":
            return self.file(start_response, "signin.html")
        form = parse_qs(_body(environ, _MAX_FORM).decode("utf-8", "replace"))
        typed = (form.get("token") or [""])[0]
        if not bearer_ok(f"Bearer {typed}", self.token):
            return self.file(start_response, "signin.html", status="401 Unauthorized")
        return _redirect(start_response, "/console/", self.cookie(self.sessions.new_session()))

    # -- answers -----------------------------------------------------------------------------------------

    def api(
        self,
        environ: dict[str, Any],
        method: str,
        route: str,
        query: dict[str, str],
        session: Session | None,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        gets: dict[str, Callable[[], Any]] = {
            "session": lambda: {
                "csrf": session.csrf if session is not None else None,
                "parent": self.views.parent,
                "signedIn": session is not None or self.bearer(environ),
            },
            "jobs": lambda: self.views.jobs(query.get("state", ""), query.get("label", "")),
            "job": lambda: self.views.job(_required(query, "name")),
            "models": lambda: self.views.models(),
        }
        posts: dict[str, Callable[[str], Any]] = {"cancel": self.views.cancel, "delete": self.views.delete}
        if route == "download" and method == "GET":
            return self.download(start_response, _required(query, "job"), _required(query, "uri"))
        if route in gets:
            if method != "GET":
                raise Refused(405, f"{method} is not served at /console/api/{route}")
            return self.call(start_response, gets[route])
        if route in posts:
            if method != "POST":
                raise Refused(405, f"/console/api/{route} changes things: POST it")
            self.check_post(environ, session)
            try:
                body = json.loads(_body(environ, _MAX_FORM) or b"{}")
            except ValueError:
                raise Refused(400, "the body is not JSON") from None
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name:
                raise Refused(400, 'the body must be {"name": "<job resource name>"}')
            return self.call(start_response, lambda: posts[route](name) or {"done": True})
        raise Refused(404, f"no API at /console/api/{route}")

    def call(self, start_response: StartResponse, view: Callable[[], Any]) -> Iterable[bytes]:
        try:
            return _json(start_response, view())
        except errors.ApiError as e:
            return _api_error(start_response, e)

    def download(self, start_response: StartResponse, job: str, uri: str) -> Iterable[bytes]:
        """One file of a job's outputs, as an attachment: user data is never rendered from this origin."""
        try:
            f, size = self.views.open_output(job, uri)
        except errors.ApiError as e:
            return _api_error(start_response, e)
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", uri.rsplit("/", 1)[-1]) or "output"
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(size)),
            ("Content-Disposition", f'attachment; filename="{filename}"'),
            *[(k, f"{v}; sandbox" if k == "Content-Security-Policy" else v) for k, v in SECURITY_HEADERS],
        ]
        start_response("200 OK", headers)
        return _chunks(f)

    def file(
        self,
        start_response: StartResponse,
        name: str,
        *,
        status: str = "200 OK",
        set_cookie: tuple[str, str] | None = None,
    ) -> Iterable[bytes]:
        data = resources.files(__package__).joinpath(name).read_bytes()
        kind = STATIC.get(name, "text/html; charset=utf-8")
        headers = [("Content-Type", kind), ("Content-Length", str(len(data))), *SECURITY_HEADERS]
        if set_cookie is not None:
            headers.append(set_cookie)
        if status.startswith("401"):
            headers.append(CHALLENGE)
        start_response(status, headers)
        return [data]


def _api_error(start_response: StartResponse, e: errors.ApiError) -> list[bytes]:
    body = {"error": {"code": e.http_status, "status": e.code.name, "message": e.message}}
    return _json(start_response, body, status=e.http_status)


def _chunks(f: Any, size: int = 1 << 20) -> Iterator[bytes]:
    try:
        while chunk := f.read(size):
            yield chunk
    finally:
        f.close()


def _required(query: dict[str, str], key: str) -> str:
    value = query.get(key, "")
    if not value:
        raise Refused(400, f"the query parameter {key!r} is required")
    return value


def _body(environ: dict[str, Any], limit: int) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise Refused(413, f"the body is over {limit} bytes")
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _json(start_response: StartResponse, data: Any, *, status: int = 200) -> list[bytes]:
    from http import HTTPStatus

    payload = json.dumps(data, ensure_ascii=False).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(payload))),
            *SECURITY_HEADERS,
            *([CHALLENGE] if status == 401 else []),
        ],
    )
    return [payload]


def _redirect(start_response: StartResponse, to: str, *extra: tuple[str, str]) -> list[bytes]:
    start_response("303 See Other", [("Location", to), ("Content-Length", "0"), *SECURITY_HEADERS, *extra])
    return []
