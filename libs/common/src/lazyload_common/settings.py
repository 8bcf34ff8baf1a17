"""Settings groups shared by the services (pydantic-settings, `LAZYLOAD_` prefix, `__` nesting).

A service declares its own `BaseSettings` subclass with `model_config = service_config()` and
composes these groups, so `LAZYLOAD_NATS__URL` or `LAZYLOAD_ADMIN__PORT` mean the same everywhere.

A console script loads its settings with `from_environment`: a `LAZYLOAD_*` variable that names no
setting is an error at start-up (pydantic-settings would ignore it, and a misspelt TLS variable
would leave a port in plaintext). As one environment may be shared by several services (`lazyload
up` hands its own to all of them), a variable of a group or setting another lazyload service has
(`SERVICE_SETTINGS`) is left to that service, and the variables of lazyload's tooling
(`TOOLING_VARIABLES`, `TOOLING_PREFIXES`) are no settings at all; anything else is a typo.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lazyload_common import errors

PREFIX = "LAZYLOAD_"
DELIMITER = "__"
SERVICE_SETTINGS = frozenset(
    {
        # shared groups and settings
        "nats",
        "kube",
        "admin",
        "mesh",
        "log_level",
        "log_format",
        # accesslog-ingest
        "grpc",
        "dedup",
        "publish",
        "edges",
        "reporter",
        "decoder",
        # fence-reconciler
        "fence",
        # sidecar-writer
        "sidecar",
        # global-pilot
        "xds",
        "listener",
        "routing",
        "global_sidecar",
        "als",
        "watch",
    }
)
"""The top-level settings (groups or single settings) of every lazyload service, lower case: a
variable under one of them that this service does not have belongs to another service sharing
the environment (`tests/deploy/test_environment.py` keeps the set in step with the models)."""
TOOLING_VARIABLES = frozenset(
    {
        "LAZYLOAD_ADMIN_TOKEN",  # `lazyload fences reset`: the admin API's bearer token
        "LAZYLOAD_ENVOY_BIN",  # the Envoy of `lazyload up`, the tests and the benchmarks
        "LAZYLOAD_KUBECONFIG",  # docker compose: the kubeconfig mounted into the services
        "LAZYLOAD_RECONCILER_ADMIN",  # `lazyload fences`: the reconciler's admin URL
        "LAZYLOAD_REPO_ROOT",  # `lazyload up`: where the repository is
    }
)
"""Variables of lazyload's tools (the CLI, compose, the tests), never settings of a service."""
TOOLING_PREFIXES = ("LAZYLOAD_UP_", "LAZYLOAD_TEST_")
"""`lazyload up`'s options (`LAZYLOAD_UP_NATS_PORT`...) and the test suite's switches."""
S = TypeVar("S", bound=BaseSettings)


def service_config() -> SettingsConfigDict:
    """The settings config every service uses: `LAZYLOAD_` prefix, nested groups with `__`."""
    return SettingsConfigDict(
        env_prefix="LAZYLOAD_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )


class NatsSettings(BaseModel):
    """Where NATS JetStream is."""

    url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated."
    )
    name: str = Field(
        default="", description="Client connection name (defaults to the service name)."
    )
    user: str = Field(default="", description="User name, when the server requires one.")
    password: str = Field(default="", description="Password for `user`.")
    token: str = Field(default="", description="Auth token, when the server requires one.")
    nkey_seed_file: Path | None = Field(
        default=None,
        description="File holding this service's NKey user seed (`SU...`): the identity whose "
        "permissions the NATS server checks. Checked at start-up.",
    )
    creds_file: Path | None = Field(
        default=None,
        description="A NATS .creds file (user JWT and seed, decentralized auth) instead of "
        "`nkey_seed_file`. Checked at start-up.",
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the server's certificate must chain to (TLS with a private "
        "CA); set = TLS required.",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate, when the server asks for one (mutual TLS).",
    )
    tls_key_file: Path | None = Field(
        default=None, description="PEM private key of `tls_cert_file`."
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of streams this service creates."
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for each connect attempt."
    )

    @model_validator(mode="after")
    def _credentials_consistent(self) -> NatsSettings:
        problems = nats_problems(self, files=False)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def nats_problems(nats: NatsSettings, *, files: bool = True) -> list[str]:
    """What is wrong with the credential and TLS settings of `nats`; with `files`, the files
    named are read too (`from_environment` does, at a service's start-up: a model built
    elsewhere, e.g. to check a chart's values, may name files of another machine)."""
    problems = []
    chosen = [
        name
        for name, value in (
            ("user", nats.user),
            ("token", nats.token),
            ("nkey_seed_file", nats.nkey_seed_file),
            ("creds_file", nats.creds_file),
        )
        if value
    ]
    if len(chosen) > 1:
        problems.append(f"{' and '.join(chosen)}: set one way to authenticate, not several")
    if nats.password and not nats.user:
        problems.append("password: needs user")
    if bool(nats.tls_cert_file) != bool(nats.tls_key_file):
        problems.append("tls_cert_file and tls_key_file: set both or neither")
    if not files:
        return problems
    for name in ("nkey_seed_file", "creds_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(nats, name)
        if path is not None and not _readable(path):
            problems.append(f"{name}: {path} is not a readable file")
    if nats.nkey_seed_file is not None and _readable(nats.nkey_seed_file):
        from lazyload_common import natsauth

        try:
            natsauth.public_key(nats.nkey_seed_file.read_text().strip())
        except ValueError as e:
            problems.append(f"nkey_seed_file: {nats.nkey_seed_file}: {e}")
    if nats.creds_file is not None and _readable(nats.creds_file):
        text = nats.creds_file.read_text()
        if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
            problems.append(f"creds_file: {nats.creds_file} holds no user JWT and seed")
    return problems


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


class KubeSettings(BaseModel):
    """How to reach the Kubernetes API (a real cluster or the local emulator, always by kubeconfig)."""

    kubeconfig: Path | None = Field(
        default=None,
        description="Path of a kubeconfig; unset means in-cluster config, then ~/.kube/config.",
    )
    context: str | None = Field(default=None, description="Context of the kubeconfig to use.")
    qps: float = Field(
        default=50.0,
        gt=0,
        description="Client-side rate limit of every Kubernetes API request of the service "
        "(reads, writes, lists, watch starts), requests/second.",
    )
    burst: int = Field(default=100, ge=1, description="Client-side rate limit burst.")


class AdminSettings(BaseModel):
    """The admin HTTP endpoint: /healthz, /readyz, /metrics and service APIs."""

    host: str = Field(default="0.0.0.0", description="Address the admin server binds.")
    port: int = Field(default=8080, ge=0, le=65535, description="Admin port; 0 picks a free port.")
    auth: Literal["kubernetes", "token", "none"] = Field(
        default="kubernetes",
        description="How mutating admin requests (a reset) are authorized: kubernetes = "
        "TokenReview + SubjectAccessReview of the bearer token (update servicefences/status in "
        "the namespace); token = the bearer token must equal token_file's content; none = open, "
        "only with a loopback admin.host.",
    )
    token_file: Path | None = Field(default=None, description="The admin token of auth=token.")
    auth_cache_seconds: float = Field(
        default=10.0, ge=0, description="Seconds a token's review answer is reused."
    )
    docs: bool = Field(default=False, description="Serve the OpenAPI page /docs and /openapi.json.")

    @model_validator(mode="after")
    def _auth_usable(self) -> AdminSettings:
        if self.auth == "none" and not is_loopback(self.host):
            raise ValueError(
                f"auth=none needs a loopback host (not {self.host!r}): mutating endpoints would "
                "be open to the network"
            )
        if self.auth == "token" and self.token_file is None:
            raise ValueError("auth=token needs token_file")
        return self


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MeshSettings(BaseModel):
    """Facts about the mesh that several services need to agree on."""

    cluster_domain: str = Field(
        default="cluster.local", description="Kubernetes cluster DNS domain."
    )
    istio_namespace: str = Field(default="istio-system", description="Namespace of istiod.")
    global_sidecar_namespace: str = Field(
        default="mesh-operator",
        description="Namespace of the global-sidecar and lazyload (Slime's default).",
    )
    global_sidecar_service: str = Field(
        default="",
        description="Namespace mode: the name of the global-sidecar Service in each fenced "
        "namespace; every Sidecar then holds `*/<name>.<its namespace>.svc.<cluster domain>` "
        "so unknown calls can reach it. Empty = cluster mode (one global-sidecar in "
        "global_sidecar_namespace).",
    )


class _NatsGroup(BaseModel):
    """The `nats` group, first of a service's settings (see `NatsServiceSettings`)."""

    nats: NatsSettings = Field(default_factory=NatsSettings)


class ServiceSettings(BaseSettings):
    """The settings every service has: the shared groups `kube`, `admin`, `mesh` and the log
    settings. A service subclasses it (or `NatsServiceSettings`) and adds its own groups."""

    model_config = service_config()

    kube: KubeSettings = Field(default_factory=KubeSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    mesh: MeshSettings = Field(default_factory=MeshSettings)
    log_level: str = Field(default="INFO", description="Python log level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or as one JSON object a line (time, level, logger, message, and `fence` where a line is about one).",
    )


class NatsServiceSettings(ServiceSettings, _NatsGroup):
    """`ServiceSettings` of a service that talks to NATS: `nats` comes first (the mixin's place
    in the bases puts its field ahead of the shared ones)."""


def unknown_variables(model: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One message per `LAZYLOAD_*` variable of `environ` that names no setting of `model` (nor
    another service's setting, nor a tool's variable), sorted; with the likeliest meant name."""
    known = _env_names(model)
    problems = []
    for variable in sorted(environ):
        name = variable.upper()  # pydantic-settings reads names case-insensitively
        if not name.startswith(PREFIX) or name in TOOLING_VARIABLES:
            continue
        if name.startswith(TOOLING_PREFIXES):
            continue
        path = name[len(PREFIX) :].lower().split(DELIMITER)
        if path[0] not in model.model_fields and path[0] in SERVICE_SETTINGS:
            continue  # another lazyload service's setting in a shared environment
        if _resolves(model, path):
            continue
        guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        problems.append(f"unknown setting {variable}{hint}")
    return problems


def from_environment(model: type[S], environ: Mapping[str, str] | None = None) -> S:
    """The settings of a console script from the environment. Raises `ConfigError` with one line
    naming the first misspelt `LAZYLOAD_*` variable (and how many more there are), or the first
    value that does not parse."""
    problems = unknown_variables(model, os.environ if environ is None else environ)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise errors.ConfigError(problems[0] + more)
    try:
        settings = model()
    except ValidationError as e:
        first = e.errors()[0]
        where = DELIMITER.join(str(p) for p in first["loc"]).upper()
        raise errors.ConfigError(
            f"invalid setting {PREFIX}{where}: {first['msg']}"
            + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else "")
        ) from e
    nats = getattr(settings, "nats", None)
    if isinstance(nats, NatsSettings):
        problems = nats_problems(nats)
        if problems:
            raise errors.ConfigError(f"invalid setting {PREFIX}NATS: {'; '.join(problems)}")
    return settings


def _resolves(model: type[BaseModel], path: list[str]) -> bool:
    """True when `path` (lower case, split at `__`) is a setting or a group of `model`."""
    annotation: Any = model
    for i, part in enumerate(path):
        group = _group(annotation)
        if group is None:
            # a leaf: only a mapping (`LAZYLOAD_X__KEY` sets one key of it) takes more parts
            return i > 0 and _is_mapping(annotation)
        field = group.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
    return True


def _env_names(model: type[BaseModel], prefix: str = PREFIX) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        env = prefix + name.upper()
        names.add(env)
        group = _group(field.annotation)
        if group is not None:
            names |= _env_names(group, env + DELIMITER)
    return names


def _group(annotation: Any) -> type[BaseModel] | None:
    """The settings group `annotation` is (a model, also inside `X | None`), or None."""
    origin = typing.get_origin(annotation)
    if origin is None:
        candidates: tuple[Any, ...] = (annotation,)
    elif origin in (typing.Union, types.UnionType):
        candidates = typing.get_args(annotation)
    else:  # a list of models, an Annotated leaf...: no group to nest into
        return None
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_mapping(typing.get_args(annotation)[0])
    return isinstance(origin, type) and issubclass(origin, Mapping)
