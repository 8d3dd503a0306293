"""The local stack's web console: jobs, a job's page, models; served on a port of its own.

    console = Console(views, host="127.0.0.1", client_host="127.0.0.1", token=None)
    console.url            # http://127.0.0.1:PORT/console/
    console.login_url()    # with a token: a one-time link that signs a browser in

Why a port of its own rather than a path on the Vertex REST gateway: the gateway lets a request in only with
the bearer token (checked before any application runs) and answers in google.rpc.Status JSON; the console
needs a cookie session, pages and a sign-in route. On its own port the Vertex API never accepts a cookie (no
ambient credential that a cross-site request could ride on), the console's Origin is its own, and
``console=False`` simply opens no port. The same HTTP server and the same Host and Origin checks serve both.

The pages, scripts and style sheet are files of this package (no build step, nothing fetched at run time);
:mod:`~bpj.local.console.app` says who may use which route, :mod:`~bpj.local.console.views` what they show.
"""

from __future__ import annotations

from typing import Any

from bpj.local.console.app import ConsoleApp
from bpj.local.console.sessions import Sessions

__all__ = ["Console"]


class Console:
    """The console of one stack on ``host`` (port 0: a free one); ``views``: a
    :class:`~bpj.local.console.views.Views`. ``client_host`` is the address its URLs name."""

    def __init__(
        self,
        views: Any,
        *,
        host: str = "127.0.0.1",
        client_host: str = "127.0.0.1",
        token: str | None = None,
        port: int = 0,
        sessions: Sessions | None = None,
    ) -> None:
        from bpj.local.servers.http_server import RestServer

        self.app = ConsoleApp(views, token=token, sessions=sessions)
        # The server checks Host and Origin; the application checks the token, cookie and CSRF header itself,
        # since a browser signed in by cookie does not send the token.
        self.server = RestServer(self.app, host, port, token=None, max_body=64 << 10)
        self.port = self.server.port
        self.app.cookie_name = f"bpj_console_{self.port}"
        self.base = f"http://{client_host}:{self.port}"
        self.token = token

    @property
    def url(self) -> str:
        return f"{self.base}/console/"

    def login_url(self, ttl: float | None = None) -> str:
        """A link that signs one browser in, once, within ``ttl`` seconds (default 15 minutes); without a
        token, the console's URL."""
        if self.token is None:
            return self.url
        return f"{self.base}/console/login?once={self.app.sessions.new_link(ttl)}"

    def stop(self) -> None:
        self.server.stop()
