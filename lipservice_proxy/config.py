"""The config file: pydantic models with defaults and validation, env overrides, clear errors.

Every key is optional. `load_config(path)` reads YAML, applies `LIPSERVICE_<SECTION>__<KEY>=value`
overrides (values parsed as YAML scalars, `__` separating nesting levels, list items by index), and
validates. Any problem raises `ConfigError` with one line per problem naming the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .sampling.severity import SeverityName

ENV_PREFIX = "LIPSERVICE_"
MIB = 1024 * 1024

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|m|h|d)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'200ms', '30s', '5m', '1h30m' or a number of seconds -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 200ms")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 200ms") from None
    else:
        raise ValueError("expected a duration such as 30s, 5m or 200ms")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(us|ms|s|m|h|d)\s*)+$"},
            ],
            "description": "seconds, or a duration such as 200ms, 30s, 5m, 1h30m",
        }
    ),
]
"""Seconds; written in the file as 200ms, 30s, 5m, 1h or a bare number of seconds."""


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
"""A Duration that must be above zero: an interval or a timeout."""


def _split_host_port(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{endpoint!r} is not host:port (for example 127.0.0.1:4317)")
    return host.strip("[]"), int(port)


def _check_listen_endpoint(value: str) -> str:
    _split_host_port(value)
    return value


ListenEndpoint = Annotated[str, BeforeValidator(lambda v: _check_listen_endpoint(str(v)))]


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# ---- reusable settings (as the Collector's configretry / exporterhelper / configtls) ----


class RetrySettings(Model):
    """Exponential backoff with jitter inside a deadline; a hint (Retry-After, RetryInfo) is its floor."""

    enabled: bool = True
    initial_interval: PositiveDuration = 1.0
    max_interval: Duration = 30.0
    max_elapsed: Duration = 300.0
    multiplier: float = Field(1.5, ge=1.0)
    randomization_factor: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _intervals_ordered(self) -> RetrySettings:
        if self.initial_interval > self.max_interval:
            raise ValueError("initial_interval must not exceed max_interval")
        return self


class BatchSettings(Model):
    """Re-batching toward upstream. `max_records` is 1024, not the Collector's 8192: joining and sending
    an 8,192-record batch (~2 MB) holds the proxy's event loop long enough to add 2.5-4 ms to the p99
    of the application's Export calls (bench/README.md), while 8x the calls upstream costs about 1% of
    a core at full load. `max_bytes` keeps a batch under common upstream message limits (gRPC's default
    is 4 MiB); a single payload above it is still sent, alone."""

    max_records: int = Field(1024, ge=1)
    max_bytes: int = Field(3 * MIB, ge=1024)
    timeout: Duration = 0.2


class QueueSettings(Model):
    """A bounded queue in front of an exporter: in memory (`max_records`, `max_bytes`) or, with
    `directory`, a persistent segment log on disk bounded by `max_disk_mib`."""

    max_records: int = Field(200_000, ge=1)
    max_bytes: int = Field(256 * MIB, ge=1024)
    num_senders: int = Field(4, ge=1, le=64)
    batch: BatchSettings = BatchSettings()
    directory: Path | None = None
    max_disk_mib: float = Field(1024, ge=1)
    fsync: Literal["batch", "interval"] = "batch"
    fsync_interval: PositiveDuration = 1.0


class ClientTLS(Model):
    """TLS toward upstream. An `http://` endpoint is plaintext, `https://` is TLS (as the OTel SDKs)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> ClientTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class ServerTLS(Model):
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class BearerAuth(Model):
    """A bearer token clients must present, read from an environment variable or a file."""

    bearer_token_env: str | None = None
    bearer_token_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BearerAuth:
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("give bearer_token_env or bearer_token_file, not both")
        return self


# ---- receivers ----


class GrpcReceiverConfig(Model):
    enabled: bool = True
    endpoint: ListenEndpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: float = Field(4, gt=0, le=1024)
    # A connection that has not completed its TLS and HTTP/2 handshake (the client's preface and
    # SETTINGS) within this is closed by grpc; beyond max_connections, grpc closes new ones at once.
    handshake_timeout: PositiveDuration = 10.0
    max_connections: int = Field(1000, ge=1, le=1_000_000)


class HttpReceiverConfig(Model):
    enabled: bool = True
    endpoint: ListenEndpoint = "127.0.0.1:4318"
    max_request_body_mib: float = Field(20, gt=0, le=1024)
    read_timeout: PositiveDuration = 30.0
    # Request line and headers must arrive within this (from the connection's start or the next
    # request's first byte), else the connection is closed: a client dripping headers holds nothing.
    header_timeout: PositiveDuration = 10.0
    idle_timeout: PositiveDuration = 60.0  # a kept-alive connection with no request is closed after this
    # Open connections at most; one more gets 503 and is closed. Keep the sum of both receivers'
    # below the open-file limit, less room for the admin server, exporters and disk queues.
    max_connections: int = Field(1000, ge=1, le=1_000_000)


class RecordLimits(Model):
    """Per log record: a record over any limit is rejected (OTLP partial success, counted), so one
    client's absurd record cannot hold the event loop every other client waits on. Sizes are the
    serialized protobuf size of the value. The defaults are far above what applications send: the
    OpenTelemetry SDKs keep at most 128 attributes per record unless told otherwise, and 1 MiB still
    fits a record into one PostHog request (2 MiB)."""

    max_attributes_per_record: int = Field(1024, ge=1)
    max_attribute_value_bytes: int = Field(MIB, ge=64)
    max_body_bytes: int = Field(MIB, ge=64)


class ReceiversConfig(Model):
    grpc: GrpcReceiverConfig = GrpcReceiverConfig()
    http: HttpReceiverConfig = HttpReceiverConfig()
    limits: RecordLimits = RecordLimits()
    auth: BearerAuth | None = None
    tls: ServerTLS | None = None


# ---- sampler and patterns ----


class SamplerConfig(Model):
    policy_file: Path = Path("policies/default.yaml")
    always_keep_min_severity: SeverityName = "ERROR"
    dry_run: bool = False
    reload_interval: PositiveDuration = 1.0
    summaries: bool = True  # send each open tail's lipservice.count as a summary record

    @field_validator("always_keep_min_severity", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class PatternsConfig(Model):
    max_templates: int = Field(10_000, ge=16)
    cache_size: int = Field(100_000, ge=16)
    state_file: Path | None = None
    save_interval: PositiveDuration = 60.0


# ---- exporters ----


class ExporterBase(Model):
    """What every exporter entry has. A subclass names its type as `type: Literal["<name>"]` and is
    added with `register_exporter`."""

    type: str
    name: str = ""  # unnamed: its type (ProxyConfig names a second unnamed one of a type `type/<index>`)
    timeout: PositiveDuration = 10.0
    retry: RetrySettings = RetrySettings()
    queue: QueueSettings = QueueSettings()

    @model_validator(mode="before")
    @classmethod
    def _named_after_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(data.get("type"), str):
            return {**data, "name": data["type"]}
        return data

    @classmethod
    def type_name(cls) -> str:
        """The name its `type` Literal gives it."""
        names = get_args(cls.model_fields["type"].annotation)
        if len(names) != 1 or not isinstance(names[0], str):
            raise TypeError(f"{cls.__name__}.type must be a Literal of one name")
        return names[0]


class OtlpGrpcExporterConfig(ExporterBase):
    type: Literal["otlp_grpc"]
    endpoint: str
    headers: dict[str, str] = {}
    compression: Literal["gzip", "none"] = "gzip"
    tls: ClientTLS = ClientTLS()


class OtlpHttpExporterConfig(ExporterBase):
    type: Literal["otlp_http"]
    endpoint: str
    encoding: Literal["protobuf", "json"] = "protobuf"
    headers: dict[str, str] = {}
    compression: Literal["gzip", "none"] = "gzip"
    tls: ClientTLS = ClientTLS()

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be a URL such as https://backend:4318/v1/logs")
        return value


class PosthogExporterConfig(ExporterBase):
    type: Literal["posthog"]
    host: str = "https://us.i.posthog.com"
    api_key_env: str = "POSTHOG_API_KEY"
    max_body_bytes: int = Field(2 * MIB, ge=64 * 1024, le=2 * MIB)
    compression: Literal["gzip", "none"] = "gzip"
    tls: ClientTLS = ClientTLS()

    @field_validator("host")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be a URL such as https://us.i.posthog.com")
        return value.rstrip("/")


class DebugExporterConfig(ExporterBase):
    type: Literal["debug"]
    stream: Literal["stdout", "stderr"] = "stdout"


@dataclass(frozen=True, slots=True)
class ExporterType:
    """A registered exporter type: its config model, and its factory named as `module:attribute` (config
    sits below the exporters, which import it) and called as `factory(config, environ)` by
    `exporters.build_exporter`."""

    model: type[ExporterBase]
    factory: str


EXPORTER_TYPES: dict[str, ExporterType] = {}
"""Type name -> ExporterType: which `exporters` entries config accepts, the known types its message
lists, and what the proxy builds. Adding an exporter type is one `register_exporter` call."""


def register_exporter(model: type[ExporterBase], factory: str) -> None:
    name = model.type_name()
    if name in EXPORTER_TYPES:
        raise ValueError(f"exporter type {name!r} is registered twice")
    module, _, attribute = factory.partition(":")
    if not module or not attribute:
        raise ValueError(f"exporter type {name!r}: factory {factory!r} is not module:attribute")
    EXPORTER_TYPES[name] = ExporterType(model, factory)


def _exporter_entry(value: Any) -> ExporterBase:
    """One `exporters` entry, validated by the model of the type it names."""
    if isinstance(value, ExporterBase):
        return value
    types = {"types": ", ".join(EXPORTER_TYPES)}
    if not isinstance(value, dict):
        raise PydanticCustomError("exporter_entry", "must be a mapping with a type, one of {types}", types)
    kind = value.get("type")
    registered = EXPORTER_TYPES.get(kind) if isinstance(kind, str) else None
    if registered is None:
        got = f" (got {kind!r})" if kind is not None else ""
        raise PydanticCustomError("exporter_type", "type must be one of {types}{got}", {**types, "got": got})
    return registered.model.model_validate(value)


ExporterConfig = Annotated[SerializeAsAny[ExporterBase], PlainValidator(_exporter_entry)]

register_exporter(OtlpGrpcExporterConfig, "lipservice_proxy.exporters.otlp_grpc:OtlpGrpcExporter.from_config")
register_exporter(OtlpHttpExporterConfig, "lipservice_proxy.exporters.otlp_http:OtlpHttpExporter.from_config")
register_exporter(
    PosthogExporterConfig, "lipservice_proxy.exporters.posthog:PosthogExporter.from_environment"
)
register_exporter(DebugExporterConfig, "lipservice_proxy.exporters.debug:DebugExporter.from_config")


class PassthroughConfig(Model):
    """Where traces and metrics go, untouched. An unset signal is refused (UNIMPLEMENTED / 404)."""

    traces: str | None = None
    metrics: str | None = None
    headers: dict[str, str] = {}
    timeout: PositiveDuration = 10.0
    tls: ClientTLS = ClientTLS()


# ---- analysis ----


class LlmConfig(Model):
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: PositiveDuration = 30.0
    max_retries: int = Field(2, ge=0, le=10)
    max_calls_per_hour: int = Field(12, ge=1)
    max_tokens_per_hour: int = Field(200_000, ge=1000)


class AnalysisConfig(Model):
    enabled: bool = True
    interval: PositiveDuration = 300.0
    # apply: each pass writes its policy; propose: it records a proposal a person applies (admin API)
    mode: Literal["apply", "propose"] = "apply"
    llm: LlmConfig | None = None
    target_keep_ratio: float = Field(0.1, gt=0, le=1)
    min_rate: float = Field(0.001, gt=0, le=1)
    max_rate_change_factor: float = Field(4.0, ge=1)
    history: int = Field(10, ge=0, le=1000)
    # Generated policies go beside the operator's, never over it: the operator's file may be a
    # read-only ConfigMap, and a hand edit must not be lost to the next refresh.
    policy_file: Path = Path("policies/generated.yaml")


# ---- fleet mode (lipservice_proxy/fleet) ----


class FleetConfig(Model):
    """One analyzer, many samplers: `run --role sampler` reports to `analyzer` and takes its policy;
    `run --role analyzer` serves them on `listen`. A standalone proxy ignores this section."""

    analyzer: str | None = None  # host:port of the analyzer, for samplers
    listen: ListenEndpoint = "127.0.0.1:4320"  # where the analyzer serves the fleet API
    report_interval: PositiveDuration = 10.0
    sampler_id: str | None = Field(None, min_length=1, max_length=253)  # default: the host (pod) name
    max_patterns_per_report: int = Field(2000, ge=1, le=100_000)
    reconnect_interval: PositiveDuration = 0.5
    max_reconnect_interval: PositiveDuration = 10.0
    max_message_mib: float = Field(16, gt=0, le=1024)
    auth: BearerAuth | None = None  # a token samplers send and the analyzer requires

    @field_validator("analyzer")
    @classmethod
    def _analyzer_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            _split_host_port(value)
        return value

    @model_validator(mode="after")
    def _intervals(self) -> FleetConfig:
        if self.reconnect_interval > self.max_reconnect_interval:
            raise ValueError("reconnect_interval must not exceed max_reconnect_interval")
        return self


# ---- process-wide ----


class AdminConfig(Model):
    enabled: bool = True
    endpoint: ListenEndpoint = "127.0.0.1:8888"
    auth: BearerAuth | None = None
    # what one GiB of log data costs downstream, in any currency: the status page projects costs with it
    price_per_gib: float | None = Field(None, ge=0, allow_inf_nan=False)


class MemoryLimiterConfig(Model):
    """Refuse data (retryably) before the process grows past `limit_mib`; soft limit = limit - spike."""

    enabled: bool = True
    limit_mib: float = Field(1024, gt=0)
    spike_limit_mib: float = Field(256, ge=0)
    check_interval: PositiveDuration = 1.0

    @model_validator(mode="after")
    def _spike_below_limit(self) -> MemoryLimiterConfig:
        if self.spike_limit_mib >= self.limit_mib:
            raise ValueError("spike_limit_mib must be below limit_mib")
        return self


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class ProxyConfig(Model):
    receivers: ReceiversConfig = ReceiversConfig()
    sampler: SamplerConfig = SamplerConfig()
    patterns: PatternsConfig = PatternsConfig()
    exporters: list[ExporterConfig] = Field(
        default_factory=lambda: list[ExporterConfig]([DebugExporterConfig(type="debug")])
    )
    passthrough: PassthroughConfig = PassthroughConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    admin: AdminConfig = AdminConfig()
    memory_limiter: MemoryLimiterConfig = MemoryLimiterConfig()
    logging: LoggingConfig = LoggingConfig()
    fleet: FleetConfig = FleetConfig()

    @field_validator("exporters", mode="before")
    @classmethod
    def _number_unnamed_exporters(cls, entries: Any) -> Any:
        """An unnamed exporter whose type an earlier exporter goes by is named `type/<index>`."""
        if not isinstance(entries, list):
            return entries
        numbered: list[Any] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            if isinstance(entry, dict):
                kind, name = entry.get("type"), entry.get("name")
                if not name and isinstance(kind, str) and kind in seen:
                    entry = {**entry, "name": f"{kind}/{index}"}
                named = entry.get("name") or kind
            else:
                named = getattr(entry, "name", None)
            if isinstance(named, str):
                seen.add(named)
            numbered.append(entry)
        return numbered

    @model_validator(mode="after")
    def _unique_exporter_names(self) -> ProxyConfig:
        seen: set[str] = set()
        for index, exporter in enumerate(self.exporters):
            if exporter.name in seen:
                raise ValueError(f"exporters[{index}].name {exporter.name!r} is used twice")
            seen.add(exporter.name)
        return self


SECTIONS = tuple(ProxyConfig.model_fields)


# ---- loading ----


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts = [
        f"[{item}]" if isinstance(item, int) else ("." if i else "") + str(item) for i, item in enumerate(loc)
    ]
    return "".join(parts) or "(top level)"


def _within(where: str, key: str) -> bool:
    return where == key or where.startswith((key + ".", key + "["))


def format_validation_error(
    error: ValidationError, source: str, env_keys: Mapping[str, str] | None = None
) -> str:
    """One line per problem, naming the key (and `env_keys`' variable, key -> name, when one set it)."""
    lines = []
    for detail in error.errors():
        where = _format_location(tuple(detail["loc"]))
        variables = [
            name for key, name in (env_keys or {}).items() if _within(key, where) or _within(where, key)
        ]
        if variables:
            where += f" (from {', '.join(variables)})"
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown key"
        got = detail.get("input")
        shown = got is not None and not isinstance(got, dict | list) and repr(got) not in message
        suffix = f" (got {got!r})" if shown else ""
        lines.append(f"{source}: {where}: {message}{suffix}")
    return "\n".join(lines)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = tree
    for i, key in enumerate(path[:-1]):
        nxt_is_index = path[i + 1].isdigit()
        if isinstance(node, list):
            index = int(key)
            while len(node) <= index:
                node.append({})
            if not isinstance(node[index], dict | list):
                node[index] = [] if nxt_is_index else {}
            node = node[index]
        else:
            if not isinstance(node.get(key), dict | list):
                node[key] = [] if nxt_is_index else {}
            node = node[key]
    last = path[-1]
    if isinstance(node, list):
        index = int(last)
        while len(node) <= index:
            node.append({})
        node[index] = value
    else:
        node[last] = value


def _env_override_paths(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """The LIPSERVICE_<SECTION>__<KEY>[__<KEY>...] variables that are overrides, with their key paths."""
    overrides = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if path[0] in SECTIONS and all(path):
            overrides[name] = path
    return overrides


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply LIPSERVICE_<SECTION>__<KEY>[__<KEY>...] overrides; values are parsed as YAML scalars."""
    for name, path in _env_override_paths(environ).items():
        text = environ[name]
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        _set_path(raw, path, value)
    return raw


def _env_sourced_keys(config: ProxyConfig) -> set[str]:
    """The environment variables the config names as the source of a secret (tokens, API keys)."""
    auths = [config.receivers.auth, config.admin.auth, config.fleet.auth]
    names = {auth.bearer_token_env for auth in auths if auth is not None and auth.bearer_token_env}
    if config.analysis.llm is not None:
        names.add(config.analysis.llm.api_key_env)
    names.update(e.api_key_env for e in config.exporters if isinstance(e, PosthogExporterConfig))
    return names


def unknown_env_variables(config: ProxyConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per LIPSERVICE_* variable that is neither an override nor named by the config as a
    secret's source: most likely a misspelt override (LIPSERVICE_SAMPLR__DRY_RUN), which would
    otherwise be ignored without a word."""
    environ = os.environ if environ is None else environ
    known = set(_env_override_paths(environ)) | _env_sourced_keys(config)
    return [
        f"environment variable {name} is ignored: it is no config override "
        f"(LIPSERVICE_<SECTION>__<KEY>, sections: {', '.join(SECTIONS)}) and no *_env key names it"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known
    ]


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> ProxyConfig:
    """Load, override from the environment and validate. Raises ConfigError with a readable message."""
    environ = os.environ if environ is None else environ
    source = str(path) if path is not None else "config"
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: not UTF-8 text") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
    raw = apply_env_overrides(raw, environ)
    try:
        return ProxyConfig.model_validate(raw)
    except ValidationError as exc:
        env_keys = {
            _format_location(tuple(int(p) if p.isdigit() else p for p in path)): name
            for name, path in _env_override_paths(environ).items()
        }
        raise ConfigError(format_validation_error(exc, source, env_keys)) from None


REDACTED = "<redacted>"
# Keys whose values are secrets themselves (a *_env or *_file key only names where one is).
_SECRET_KEY = re.compile(r"(token|secret|password|api_key|apikey)$", re.I)


def redacted(value: Any, key: str = "") -> Any:
    """A dumped config (`ProxyConfig.model_dump(mode="json")`) with its secrets replaced: every header
    value, any key named like a token, secret, password or API key, and the credentials in a URL."""
    if isinstance(value, dict):
        if key == "headers":
            return {name: REDACTED for name in value}
        return {name: redacted(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [redacted(item, key) for item in value]
    if isinstance(value, str) and value and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, _, rest = value.partition("://")
        userinfo, at, host = rest.partition("@")
        if at and "/" not in userinfo:
            return f"{scheme}://{REDACTED}@{host}"
    return value


def host_port(endpoint: str) -> tuple[str, int]:
    """Split a validated 'host:port' (IPv6 in brackets allowed)."""
    return _split_host_port(endpoint)
