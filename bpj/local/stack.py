"""LocalStack: Vertex AI batch prediction, GCS and BigQuery on one machine, on 127.0.0.1 with free ports.

    with LocalStack() as stack:                  # a temporary data dir; LocalStack(data_dir=...) keeps it
        os.environ.update(stack.env())           # or bpj.init(api_endpoint=stack.api_endpoint, ...)
        ...

It serves the Vertex emulator over gRPC (plaintext, and TLS with a self-signed certificate for localhost and
127.0.0.1) and REST, fake-gcs-server for GCS, and BigQuery's REST API and Storage Read API over one table
store. Jobs, models and tables persist under the data dir, so a stack started again on the same dir (after a
clean stop or a ``kill -9``) has them all.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from bpj import errors

log = logging.getLogger("bpj.local")
DEFAULT_PROJECT = "bpj-local"
DEFAULT_LOCATION = "us-central1"


class LocalStack:
    """Starts every local service; ``stop()`` (or leaving the ``with`` block) stops them all.

    ``host`` is 127.0.0.1 unless given explicitly; any other address (0.0.0.0 included) lets other machines
    in, so it requires a ``token`` and warns once. ``token``: every request on every port (Vertex gRPC and
    REST, GCS, BigQuery REST and Storage Read) must carry ``authorization: Bearer <token>``. ``gcs_endpoint``:
    use a GCS-compatible server you run instead of starting fake-gcs-server. ``workers``: jobs run at once.
    ``publisher_model``: ``module:Class`` (``module`` a dotted name or a ``.py`` path) that answers batch jobs on
    publisher models (Gemini, embeddings) instead of bpj's deterministic stand-in; the environment variable
    ``BPJ_PUBLISHER_MODEL`` does the same (see :mod:`bpj.local.publisher`). Settable on a started stack too.
    ``console``: serve the web console (:mod:`bpj.local.console`) at ``console_url``, with the same Host and
    Origin rules and token; with a token, ``console_login_url()`` makes a one-time link that signs a browser in.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        token: str | None = None,
        gcs_endpoint: str | None = None,
        workers: int = 2,
        project: str = DEFAULT_PROJECT,
        location: str = DEFAULT_LOCATION,
        publisher_model: str | None = None,
        console: bool = True,
    ) -> None:
        from bpj.local.servers.guard import is_loopback

        if token is not None and not token.strip():
            raise errors.UsageError("the token is empty: give a non-empty token, or none")
        if not is_loopback(host):
            if not token:
                raise errors.UsageError(
                    f"host {host!r} lets other machines reach the local stack: give a token too "
                    "(--token / token=...), which every request must then carry"
                )
            log.warning(
                "the local stack listens on %s: anyone who can reach this machine and has the token can run "
                "code in it (custom predictors) and read its data; use 127.0.0.1 unless you need that",
                host,
            )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.host = host
        self.token = token
        self.project = project
        self.location = location
        self.workers = workers
        self._publisher_model = publisher_model
        self._gcs_endpoint = gcs_endpoint
        self._console_wanted = console
        self.console: Any = None
        self.console_url: str | None = None
        self._stoppers: list[Any] = []
        self.started = False

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        if self.started:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started = True
        return self

    def _start(self) -> None:
        from bpj.gcs import Gcs
        from bpj.local.bigquery.read_server import StorageReadServicer
        from bpj.local.bigquery.rest import serve_bigquery_rest
        from bpj.local.bigquery.store import TableStore
        from bpj.local.executor import Executor
        from bpj.local.gcs import GcsServer
        from bpj.local.servers.gateway import serve_rest
        from bpj.local.servers.serve import serve_grpc
        from bpj.local.servers.tls import self_signed_cert
        from bpj.local.store import Store
        from bpj.local.vertex import Jobs, Models, Operations, Vertex

        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bpj-local-")
            root = Path(self._tmp.name)
        else:
            root = self.data_dir
            root.mkdir(parents=True, exist_ok=True)
        self.root = root

        if self._gcs_endpoint is None:
            gcs_server = GcsServer(
                root, host=self.host, token=self.token, log_path=root / "logs" / "fake-gcs-server.log"
            )
            self._stoppers.append(gcs_server.stop)
            self.gcs_endpoint = gcs_server.endpoint
            self.gcs_isolated = gcs_server.isolated
        else:
            self.gcs_endpoint = self._gcs_endpoint
            self.gcs_isolated = False
        self.gcs = Gcs(self.gcs_endpoint, token=self.token)

        self.tables = TableStore(root / "bigquery")
        bq_rest = serve_bigquery_rest(self.tables, host=self.host, token=self.token)
        self._stoppers.append(bq_rest.stop)
        self.bigquery_endpoint = f"http://{self.client_host}:{bq_rest.port}"
        storage = serve_grpc(StorageReadServicer(self.tables), host=self.host, token=self.token)
        self._stoppers.append(lambda: storage.stop(None))
        self.bigquery_storage_endpoint = f"{self.client_host}:{storage.port}"

        self.store = Store(root / "vertex.sqlite3")
        self._stoppers.append(self.store.close)
        self.executor = Executor(self.store, self.gcs, self.tables, root / "work", workers=self.workers)
        self._stoppers.append(self.executor.shutdown)
        self.executor.publisher_model = self._publisher_model
        vertex = Vertex(self.store, self.executor.start, self.executor.stop, self._check_model)
        servicers = (Jobs(vertex), Models(vertex), Operations(vertex))

        plain = serve_grpc(*servicers, host=self.host, token=self.token)
        self._stoppers.append(lambda: plain.stop(None))
        self.api_endpoint = f"{self.client_host}:{plain.port}"

        key, cert = self._certificate(root, self_signed_cert)
        tls = serve_grpc(*servicers, host=self.host, tls=(key, cert), token=self.token)
        self._stoppers.append(lambda: tls.stop(None))
        self.grpc_tls_endpoint = f"localhost:{tls.port}"

        rest = serve_rest(*servicers, host=self.host, token=self.token)
        self._stoppers.append(rest.stop)
        self.rest_endpoint = f"http://{self.client_host}:{rest.port}"

        if self._console_wanted:
            self._start_console(servicers)

        self.executor.recover()

    def _start_console(self, servicers: tuple[Any, ...]) -> None:
        from bpj.local.console import Console
        from bpj.local.console.views import Views

        views = Views(
            servicers[0],
            servicers[1],
            self.store,
            parent=f"projects/{self.project}/locations/{self.location}",
            gcs=self.gcs,
            token=self.token,
            tables=self.tables,
        )
        self.console = Console(views, host=self.host, client_host=self.client_host, token=self.token)
        self._stoppers.append(self.console.stop)
        self.console_url = self.console.url

    def console_login_url(self, ttl: float | None = None) -> str:
        """With a token, a link that signs one browser in to the console, once, within ``ttl`` seconds
        (default 15 minutes; the nonce in it is not the token); without one, ``console_url``."""
        if self.console is None:
            raise errors.UsageError("the console is off: start the stack with console=True (no --no-console)")
        return str(self.console.login_url(ttl))

    def _certificate(self, root: Path, make: Any) -> tuple[bytes, bytes]:
        tls_dir = root / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = tls_dir / "key.pem", tls_dir / "cert.pem"
        if not (key_path.exists() and cert_path.exists()):
            key, cert = make(("localhost", "127.0.0.1"))
            key_path.write_bytes(key)
            key_path.chmod(0o600)
            cert_path.write_bytes(cert)
        self.tls_cert_path = str(cert_path)
        return key_path.read_bytes(), cert_path.read_bytes()

    def stop(self) -> None:
        """Stop every service, newest first. Running jobs end as after a crash (see executor.py)."""
        while self._stoppers:
            stop = self._stoppers.pop()
            try:
                stop()
            except Exception:  # keep stopping the rest
                log.exception("stopping the local stack")
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self.started = False

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def publisher_model(self) -> str | None:
        """``module:Class`` answering publisher-model jobs, or None for ``BPJ_PUBLISHER_MODEL`` / the stand-in;
        a job takes the value it finds when it starts."""
        return self._publisher_model

    @publisher_model.setter
    def publisher_model(self, spec: str | None) -> None:
        self._publisher_model = spec
        if self.started:
            self.executor.publisher_model = spec

    def _check_model(self, model: Any) -> None:
        """Refuse an upload whose artifact_uri does not hold what its container loads, as Vertex AI does."""
        from bpj.local.models import check_artifacts

        check_artifacts(model, self.gcs.list)

    # -- for clients ------------------------------------------------------------------------------------
    @property
    def client_host(self) -> str:
        """The address a client on this machine uses: the bind address, or 127.0.0.1 for 0.0.0.0 / ::."""
        host = self.host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    def env(self) -> dict[str, str]:
        """The environment variables a client process needs to use this stack with no code change."""
        if not self.started:
            raise errors.UsageError("the local stack is not started: use `with LocalStack() as stack:`")
        env = {
            "BPJ_PROJECT": self.project,
            "BPJ_LOCATION": self.location,
            "BPJ_API_ENDPOINT": self.api_endpoint,
            "BPJ_TRANSPORT": "grpc",
            "BPJ_GCS_ENDPOINT": self.gcs_endpoint,
            "STORAGE_EMULATOR_HOST": self.gcs_endpoint,
            "BPJ_BIGQUERY_ENDPOINT": self.bigquery_endpoint,
            "BPJ_BIGQUERY_STORAGE_ENDPOINT": self.bigquery_storage_endpoint,
        }
        if self.token:
            env["BPJ_TOKEN"] = self.token
        return env

    def init(self, *, transport: str = "grpc") -> Any:
        """Point this process's bpj at the stack (``bpj.init`` with its endpoints)."""
        from bpj import config

        return config.init(
            project=self.project,
            location=self.location,
            api_endpoint=self.api_endpoint if transport == "grpc" else self.rest_endpoint,
            transport=transport,
            gcs_endpoint=self.gcs_endpoint,
            bigquery_endpoint=self.bigquery_endpoint,
            bigquery_storage_endpoint=self.bigquery_storage_endpoint,
            token=self.token,
        )
