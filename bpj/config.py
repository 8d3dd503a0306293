"""Where bpj sends its calls: project, location, endpoints, transport and credentials.

``bpj.init(...)`` sets them for the process; each also comes from an environment variable, so a process
started with the local stack's environment (``bpj local start`` prints it) needs no code change:

    ==========================  ================================  ==========================================
    init() argument             environment variable              default
    ==========================  ================================  ==========================================
    project                     BPJ_PROJECT, GOOGLE_CLOUD_PROJECT  (none; required to create jobs)
    location                    BPJ_LOCATION                      us-central1
    api_endpoint                BPJ_API_ENDPOINT                  {location}-aiplatform.googleapis.com
    transport                   BPJ_TRANSPORT                     grpc
    gcs_endpoint                BPJ_GCS_ENDPOINT, STORAGE_EMULATOR_HOST   https://storage.googleapis.com
    bigquery_endpoint           BPJ_BIGQUERY_ENDPOINT,            https://bigquery.googleapis.com
                                BIGQUERY_EMULATOR_HOST
    bigquery_storage_endpoint   BPJ_BIGQUERY_STORAGE_ENDPOINT     bigquerystorage.googleapis.com:443
    tls_root_cert               BPJ_TLS_ROOT_CERT (a PEM path)    the system's roots
    token                       BPJ_TOKEN                         none (a bearer token for every call)
    ==========================  ================================  ==========================================

``init`` also takes every argument of the official ``aiplatform.init``, so code written for it runs as is:
``api_transport`` is ``transport``; ``encryption_spec_key_name`` and ``service_account`` are the defaults
of ``BatchPredictionJob.create`` and ``Model.upload`` when they are not given there (as in the official SDK);
``request_metadata`` is sent with every call; ``staging_bucket`` is kept (``settings().staging_bucket``)
for code that reads it. ``experiment``, ``experiment_description``, ``experiment_tensorboard`` and
``network`` belong to parts of Vertex AI batch prediction does not use (experiments, training, private
endpoints): they are accepted and have no effect. ``api_key`` (express mode) is refused: bpj authenticates
with credentials.

An endpoint on a loopback address is plaintext and anonymous unless TLS is asked for (an ``https://``
endpoint or a root certificate); every other endpoint is TLS with Application Default Credentials, which
are resolved only when the first call to a real endpoint is made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bpj import errors, rules
from bpj._log import logger
from bpj.transport.base import Transport, WithMetadata
from bpj.transport.endpoints import is_loopback, parse_endpoint  # noqa: F401  (re-exported)

log = logger()

TRANSPORTS = ("grpc", "rest")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


@dataclass(frozen=True)
class Settings:
    project: str | None = None
    location: str = "us-central1"
    api_endpoint: str | None = None
    transport: str = "grpc"
    credentials: Any = field(default=None, repr=False)
    gcs_endpoint: str = "https://storage.googleapis.com"
    bigquery_endpoint: str = "https://bigquery.googleapis.com"
    bigquery_storage_endpoint: str = "bigquerystorage.googleapis.com:443"
    tls_root_cert: str | None = None
    # A bearer token every call carries: what a local stack started with --token asks for.
    token: str | None = field(default=None, repr=False)
    # Defaults for create() and Model.upload(), as the official init() sets them.
    encryption_spec_key_name: str | None = None
    service_account: str | None = None
    staging_bucket: str | None = None
    # Extra metadata (headers) every call carries.
    request_metadata: tuple[tuple[str, str], ...] = ()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call adds: the bearer token, then ``request_metadata``."""
        token = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return (*token, *self.request_metadata)

    @property
    def vertex_endpoint(self) -> str:
        """The Vertex AI endpoint: the one set, else the regional one for ``location``."""
        if self.api_endpoint:
            return self.api_endpoint
        if self.location == "global":
            return "aiplatform.googleapis.com"
        return f"{self.location}-aiplatform.googleapis.com"

    @property
    def parent(self) -> str:
        """``projects/{project}/locations/{location}``; a UsageError when no project is set."""
        if not self.project:
            raise errors.UsageError(
                "no project set: pass project=, call bpj.init(project=...), or set BPJ_PROJECT"
            )
        return f"projects/{self.project}/locations/{self.location}"


_ENV: dict[str, tuple[str, ...]] = {
    "project": ("BPJ_PROJECT", "GOOGLE_CLOUD_PROJECT"),
    "location": ("BPJ_LOCATION",),
    "api_endpoint": ("BPJ_API_ENDPOINT",),
    "transport": ("BPJ_TRANSPORT",),
    "gcs_endpoint": ("BPJ_GCS_ENDPOINT", "STORAGE_EMULATOR_HOST"),
    "bigquery_endpoint": ("BPJ_BIGQUERY_ENDPOINT", "BIGQUERY_EMULATOR_HOST"),
    "bigquery_storage_endpoint": ("BPJ_BIGQUERY_STORAGE_ENDPOINT",),
    "tls_root_cert": ("BPJ_TLS_ROOT_CERT",),
    "token": ("BPJ_TOKEN",),
}

_lock = threading.Lock()
_explicit: dict[str, Any] = {}
_transports: dict[tuple[Any, ...], Transport] = {}
_registered: dict[str, Transport] = {}


_TEXT = (
    "api_endpoint",
    "gcs_endpoint",
    "bigquery_endpoint",
    "bigquery_storage_endpoint",
    "token",
    "service_account",
    "staging_bucket",
)


def validate(s: Settings) -> Settings:
    if s.transport not in TRANSPORTS:
        rules.text(s.transport, "transport")
        raise errors.UsageError(f"transport must be one of {', '.join(TRANSPORTS)}, got {s.transport!r}")
    rules.location(s.location)
    if s.api_endpoint is None:  # the endpoint comes from the location: it must name a region
        rules.known_region(s.location, os.environ.get("BPJ_EXTRA_LOCATIONS", ""))
    if s.project is not None:
        rules.project(s.project)
    for name in _TEXT:
        value = getattr(s, name)
        if value is not None and not rules.text(value, name).isprintable():
            raise errors.UsageError(f"{name}: must be printable text, got {value!r}")
    if s.tls_root_cert is not None and not os.path.isfile(rules.text(s.tls_root_cert, "tls_root_cert")):
        raise errors.UsageError(f"tls_root_cert must be a PEM file, not found: {s.tls_root_cert}")
    if s.staging_bucket is not None and not s.staging_bucket.startswith("gs://"):
        raise errors.UsageError(f"staging_bucket must be a gs:// URI, got {errors.shown(s.staging_bucket)}")
    return s


def _metadata(value: Any) -> tuple[tuple[str, str], ...]:
    """``request_metadata`` as pairs of lower-case header names and values, checked."""
    try:
        pairs = [(k, v) for k, v in value]
    except (TypeError, ValueError):
        raise errors.UsageError(
            f"request_metadata must be a sequence of (key, value) pairs, got {errors.shown(value)}"
        ) from None
    for k, v in pairs:
        if (
            not isinstance(k, str)
            or not isinstance(v, str)
            or not k
            or not k.isprintable()
            or not v.isprintable()
        ):
            raise errors.UsageError(
                f"request_metadata: keys and values must be printable text, got {errors.shown((k, v))}"
            )
    return tuple((k.lower(), v) for k, v in pairs)


def from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for name, variables in _ENV.items():
        for var in variables:
            if env.get(var):
                found[name] = env[var]
                break
    return found


def init(
    *,
    project: str | None = None,
    location: str | None = None,
    experiment: str | None = None,
    experiment_description: str | None = None,
    experiment_tensorboard: Any = None,
    staging_bucket: str | None = None,
    credentials: Any = None,
    encryption_spec_key_name: str | None = None,
    network: str | None = None,
    service_account: str | None = None,
    api_endpoint: str | None = None,
    api_key: str | None = None,
    api_transport: str | None = None,
    request_metadata: Sequence[tuple[str, str]] | None = None,
    transport: str | None = None,
    gcs_endpoint: str | None = None,
    bigquery_endpoint: str | None = None,
    bigquery_storage_endpoint: str | None = None,
    tls_root_cert: str | None = None,
    token: str | None = None,
) -> Settings:
    """Set where calls go for this process; arguments left out keep their value (or environment/default).

    The official ``aiplatform.init``'s arguments come first, in its order (see the module docstring for
    what each means here), then bpj's: ``transport`` ("grpc" or "rest"; ``api_transport`` is the same),
    ``gcs_endpoint``, ``bigquery_endpoint``, ``bigquery_storage_endpoint``, ``tls_root_cert`` and ``token``.
    Returns the resulting settings.
    """
    if api_key is not None:
        raise errors.UsageError(
            "bpj.init(api_key=): API keys (Vertex AI express mode) are not supported by bpj; pass credentials= "
            "or use Application Default Credentials"
        )
    if api_transport is not None and transport is not None and api_transport != transport:
        raise errors.UsageError(
            f"api_transport={api_transport!r} and transport={transport!r} disagree: give one of them"
        )
    given = {
        "project": project,
        "location": location,
        "staging_bucket": staging_bucket,
        "credentials": credentials,
        "encryption_spec_key_name": encryption_spec_key_name,
        "service_account": service_account,
        "api_endpoint": api_endpoint,
        "transport": transport if transport is not None else api_transport,
        "request_metadata": None if request_metadata is None else _metadata(request_metadata),
        "gcs_endpoint": gcs_endpoint,
        "bigquery_endpoint": bigquery_endpoint,
        "bigquery_storage_endpoint": bigquery_storage_endpoint,
        "tls_root_cert": tls_root_cert,
        "token": token,
    }
    ignored = {
        "experiment": experiment,
        "experiment_description": experiment_description,
        "experiment_tensorboard": experiment_tensorboard,
        "network": network,
    }
    for name, value in ignored.items():
        if value is not None:
            log.info(
                "bpj.init(%s=...): accepted for compatibility; it has no effect on batch prediction", name
            )
    with _lock:
        candidate = {**_explicit, **{k: v for k, v in given.items() if v is not None}}
        settings = validate(Settings(**{**from_environment(), **candidate}))
        _explicit.clear()
        _explicit.update(candidate)
        close_transports()
    return settings


def settings(**overrides: Any) -> Settings:
    """The current settings: init() arguments over environment variables over defaults, then ``overrides``."""
    base = Settings(**{**from_environment(), **_explicit})
    extra = {k: v for k, v in overrides.items() if v is not None}
    if "credentials" in extra and overrides.get("token") is None:
        extra["token"] = None  # credentials given here replace a token set by init() or the environment
    return validate(replace(base, **extra)) if extra else validate(base)


def reset() -> None:
    """Forget init() arguments and close cached transports (tests use this)."""
    with _lock:
        _explicit.clear()
        _registered.clear()
        close_transports()


def register_transport(endpoint: str, transport: Transport | None) -> None:
    """Serve every call to ``endpoint`` with ``transport`` whatever the other settings (a fake, in tests);
    ``None`` removes it. bpj.init() leaves it in place and never closes it; reset() forgets it."""
    with _lock:
        if transport is None:
            _registered.pop(endpoint, None)
        else:
            _registered[endpoint] = transport


def registered_transport(endpoint: str) -> Transport | None:
    """The transport :func:`register_transport` put in place for ``endpoint``, if any."""
    return _registered.get(endpoint)


# -- endpoints and transports ------------------------------------------------------------------------


def wants_tls(endpoint: str, root_cert: str | None = None) -> bool:
    return parse_endpoint(endpoint).tls(root_cert)


def resolve_credentials(s: Settings, endpoint: str) -> Any:
    """The credentials for an endpoint: the ones given, none for a plaintext local endpoint, else ADC."""
    if s.credentials is not None:
        return s.credentials
    if parse_endpoint(endpoint).is_loopback:
        return None
    import google.auth
    import google.auth.exceptions

    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise errors.UsageError(
            f"no credentials for {endpoint}: pass credentials= to bpj.init(), run "
            f"`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS ({e})"
        ) from None
    return credentials


def transport_for(endpoint: str, s: Settings | None = None, *, kind: str | None = None) -> Transport:
    """The shared transport for ``endpoint`` (one channel or HTTP session per endpoint, reused by every call)."""
    registered = registered_transport(endpoint)
    if registered is not None:
        return registered
    s = s or settings()
    kind = kind or s.transport
    key = (kind, endpoint, s.tls_root_cert, id(s.credentials), s.metadata)
    with _lock:
        t = _transports.get(key)
        if t is None:
            t = _make_transport(kind, endpoint, s)
            if s.metadata:
                t = WithMetadata(t, s.metadata)
            _transports[key] = t
        return t


def _make_transport(kind: str, endpoint: str, s: Settings) -> Transport:
    parsed = parse_endpoint(endpoint)
    tls = parsed.tls(s.tls_root_cert)
    if kind == "grpc":
        from bpj.transport.grpc import GrpcTransport

        root = Path(s.tls_root_cert).read_bytes() if s.tls_root_cert else None
        # Application Default Credentials are looked up at the channel's first call, not now.
        return GrpcTransport(
            parsed.target(443 if tls else None),
            credentials=lambda: resolve_credentials(s, endpoint),
            tls=tls,
            root_certificates=root,
        )
    from bpj.transport.rest import RestTransport

    url = f"{'https' if tls else 'http'}://{parsed.target()}"
    return RestTransport(url, credentials=resolve_credentials(s, endpoint), root_certificates=s.tls_root_cert)


def close_transports() -> None:
    ts = list(_transports.values())
    _transports.clear()
    for t in ts:
        t.close()
