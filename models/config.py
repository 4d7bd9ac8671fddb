"""The one configuration object of tusflow.

It lives beside the tables rather than in the web layer because the web server, the RQ
worker and the command line all need it, and ``transcoder`` must never import ``tus_server``.
Values come from ``config.toml`` (every key documented there), then from environment
variables named ``TUSFLOW_<SECTION>__<KEY>`` (double underscore between section and key), e.g.
``TUSFLOW_SERVER__PORT=9000`` or ``TUSFLOW_CORS__ALLOW_ORIGINS='["https://a.example"]'``.
An environment value is read as a TOML value when it parses as one, else as a plain string.
Relative paths resolve against the folder of the config file (or the working directory when
no file is given).  Nothing here is module-level state: callers load a ``Settings`` and pass
it down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, get_type_hints

ENV_PREFIX = "TUSFLOW_"
# The config file a process was started with, exported to the processes it starts (uvicorn's
# workers, RQ's work horses), so each loads its own Settings from its own host's path and
# environment, and nothing (no job argument) carries a path from one machine to another.
CONFIG_ENV = "TUSFLOW_CONFIG_FILE"


class ConfigError(ValueError):
    """A config file or environment value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    base_path: str = "/files/"
    trust_forwarded_headers: bool = False
    workers: int = 1
    body_idle_timeout: float = 30.0
    lock_timeout: float = 10.0
    public_url: str = ""
    http: str = "httptools"
    max_request_line: int = 8192
    max_request_head: int = 65536
    request_head_timeout: float = 10.0
    max_connections_per_address: int = 64


STORAGE_BACKENDS: tuple[str, ...] = ("file", "s3")
MIN_PART_SIZE = 5 * 1024**2  # S3: every part but the last is at least 5 MiB...
MAX_PART_SIZE = 5 * 1024**3  # ...and at most 5 GiB


@dataclass(frozen=True)
class S3Config:
    """``[storage.s3]``: the bucket tus uploads are stored in when ``[storage] backend = "s3"``.
    Empty credentials or region fall back to the standard AWS environment variables."""

    endpoint_url: str = ""
    region: str = ""
    bucket: str = ""
    prefix: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    part_size: int = 8 * 1024**2
    max_buffered_parts: int = 8
    sign_payload: bool = False


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path = Path("var")
    fsync: bool = True
    backend: str = "file"
    s3: S3Config = field(default_factory=S3Config)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""


@dataclass(frozen=True)
class UploadsConfig:
    max_size: int = 20 * 1024**3
    expiration: int = 86400
    max_metadata_size: int = 4096
    max_metadata_pairs: int = 32
    client_chunk_size: int = 8 * 1024**2
    client_retry_delays: tuple[int, ...] = (0, 1000, 3000, 5000, 10000, 20000, 30000)
    max_concat_parts: int = 200
    min_rate: int = 1024
    min_rate_window: float = 60.0


@dataclass(frozen=True)
class CorsConfig:
    allow_origins: tuple[str, ...] = ("*",)
    allow_credentials: bool = False
    max_age: int = 86400


@dataclass(frozen=True)
class RedisConfig:
    url: str = ""
    queue: str = "tusflow-transcode"


@dataclass(frozen=True)
class WorkerConfig:
    count: int = 2
    tries: int = 3
    retry_backoff: tuple[int, ...] = (10, 60, 300)
    reconcile_interval: float = 10.0


LOCK_BACKENDS: tuple[str, ...] = ("auto", "file", "redis")


@dataclass(frozen=True)
class LocksConfig:
    """``[locks]``: where per-upload locks live. "auto" is Redis when the upload bytes are
    shared by several machines (``[storage] backend = "s3"``), else flock files in data_dir."""

    backend: str = "auto"
    lease: float = 8.0

    def resolved(self, storage: "StorageConfig") -> str:
        if self.backend != "auto":
            return self.backend
        return "redis" if storage.backend == "s3" else "file"


@dataclass(frozen=True)
class DeliveryConfig:
    public_base_url: str = ""


@dataclass(frozen=True)
class Rung:
    """One rendition of the ladder, named by its short side (``720p``)."""

    name: str
    height: int
    video_kbps: int            # the ceiling (x264 maxrate; bufsize is twice it)
    audio_kbps: int = 128
    quality: int = 23          # x264 CRF under that ceiling; lower is better and bigger


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("1080p", 1080, 5000, 160, 23),
    Rung("720p", 720, 2800, 128, 22),
    Rung("480p", 480, 1200, 128, 20),
    Rung("360p", 360, 700, 96, 19),
    Rung("240p", 240, 400, 96, 18),
)
RATE_CONTROLS: tuple[str, ...] = ("quality", "bitrate")
TONEMAP_CURVES: tuple[str, ...] = ("mobius", "hable", "reinhard", "clip", "linear")


@dataclass(frozen=True)
class TranscodeConfig:
    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    segment_format: str = "fmp4"
    segment_duration: int = 6
    keyframe_interval: int = 2
    preset: str = "veryfast"
    max_width: int = 7680
    max_height: int = 4320
    max_fps: float = 120.0
    max_duration: float = 6 * 3600.0
    max_streams: int = 16
    threads: int = 0
    timeout_factor: float = 4.0
    timeout_min: int = 300
    storyboard_interval: float = 0.0
    storyboard_columns: int = 10
    storyboard_width: int = 160
    rate_control: str = "quality"
    audio_group: bool = True
    loudness: bool = True
    loudness_target: float = -16.0
    loudness_true_peak: float = -1.0
    loudness_range: float = 11.0
    rung_min_saving: float = 0.25
    hdr_tonemap: str = "mobius"
    # Publish latency (issue 10): a stream-copied or quick first rendition, published early.
    fast_path: bool = True
    fast_path_max_level: int = 42
    fast_path_max_kbps: int = 8000
    fast_path_max_gop_kbps: int = 16000
    fast_path_max_fps: float = 60.0
    fast_path_max_keyframe_interval: float = 10.0
    first_rung: str = "360p"
    first_rung_preset: str = "ultrafast"
    progressive: bool = True
    chunk_seconds: float = 45.0
    # Resource ceilings of every ffmpeg/ffprobe (issue 14): RLIMIT_AS and RLIMIT_CPU.
    memory_limit_mb: int = 0
    memory_base_mb: int = 768
    memory_per_megapixel_mb: int = 100
    cpu_limit_s: int = 0
    max_frame_repeat: float = 300.0
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"


WEBHOOK_EVENTS: tuple[str, ...] = ("upload.created", "upload.completed", "media.playable",
                                   "media.ready", "media.failed", "media.deleted")


@dataclass(frozen=True)
class WebhooksConfig:
    urls: tuple[str, ...] = ()
    secret: str = ""
    timeout: float = 10.0
    max_age: int = 86400
    events: tuple[str, ...] = WEBHOOK_EVENTS
    retry_base: float = 30.0
    retry_max: float = 3600.0


AUTH_ROLES: tuple[str, ...] = ("admin", "user", "service")


@dataclass(frozen=True)
class ApiToken:
    """One static API token (``[[auth.tokens]]``): for the CLI and the platform's services."""

    token: str
    user: str
    role: str = "user"


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = False
    tokens: tuple[ApiToken, ...] = ()
    jwt_hs256_secret: str = ""
    jwt_rs256_public_key: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway: int = 30
    role_claim: str = "role"
    max_size_claim: str = "tusflow_max_size"
    query_token: bool = True
    cookie_name: str = "tusflow_token"
    public_paths: tuple[str, ...] = ("/static/", "/favicon.ico")
    protect_metrics: bool = False
    playback_signing_key: str = ""
    playback_ttl: int = 3600
    signed_playback: bool = False
    quota_bytes_per_day: int = 0
    quota_bytes_total: int = 0
    precreate_hook_url: str = ""
    precreate_hook_timeout: float = 5.0
    creations_per_minute_per_user: int = 60
    creations_per_minute_per_address: int = 120


@dataclass(frozen=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    config_path: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.storage.data_dir / 'tusflow.db'}"

    def replace(self, **sections: Any) -> "Settings":
        """Return a copy with whole sections or section keys changed (``server={"port": 0}``)."""
        changes: dict[str, Any] = {}
        for name, value in sections.items():
            if isinstance(value, Mapping):
                changes[name] = dataclasses.replace(getattr(self, name), **value)
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)


_SECTIONS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "config_path"}


def _section_class(name: str) -> type:
    return type(getattr(Settings(), name))


def _to_path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a path string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _to_bool(value: Any, where: str, base: Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _to_int(value: Any, where: str, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer")
    return value


def _to_float(value: Any, where: str, base: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number")
    return float(value)


def _to_str(value: Any, where: str, base: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value


def _to_ladder(value: Any, where: str, base: Path) -> tuple[Rung, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty array of tables")
    rungs = []
    for item in value:
        try:
            rungs.append(Rung(str(item["name"]), int(item["height"]), int(item["video_kbps"]),
                              int(item.get("audio_kbps", 128)), int(item.get("quality", 23))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: each rung needs name, height, video_kbps") from exc
    return tuple(rungs)


def _to_tokens(value: Any, where: str, base: Path) -> tuple[ApiToken, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be an array of tables {{token, user, role}}")
    tokens = []
    for item in value:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("token", "user")):
            raise ConfigError(f"{where}: each token needs token and user strings")
        role = item.get("role", "user")
        if role not in AUTH_ROLES:
            raise ConfigError(f"{where}: role must be one of {list(AUTH_ROLES)}")
        if len(item["token"]) < 16:
            raise ConfigError(f"{where}: tokens must be at least 16 characters")
        tokens.append(ApiToken(item["token"], item["user"], role))
    return tuple(tokens)


def _to_ints(value: Any, where: str, base: Path) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in value):
        raise ConfigError(f"{where} must be an array of integers")
    return tuple(value)


def _to_strs(value: Any, where: str, base: Path) -> tuple[str, ...]:
    if isinstance(value, str):  # an environment value "a, b" reads as a list
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be an array of strings")
    return tuple(value)


def _to_s3(value: Any, where: str, base: Path) -> S3Config:
    """A nested table (``[storage.s3]``): each key converted like a section's."""
    return _table(S3Config, _field_types(S3Config), value, where, ".", base)


Converter = Callable[[Any, str, Path], Any]

# How a TOML value becomes each field type the sections use. A new field type is one more row;
# a field whose type has no row fails at import (see _FIELD_TYPES), not when a user sets it.
CONVERTERS: dict[Any, Converter] = {
    Path: _to_path,
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    tuple[Rung, ...]: _to_ladder,
    tuple[ApiToken, ...]: _to_tokens,
    tuple[int, ...]: _to_ints,
    tuple[str, ...]: _to_strs,
    S3Config: _to_s3,
}


def _field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field (``from __future__ import annotations`` leaves
    them as strings), each checked against CONVERTERS."""
    hints = get_type_hints(cls)
    types = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    missing = {k: t for k, t in types.items() if t not in CONVERTERS}
    if missing:
        raise TypeError(f"{cls.__name__}: no converter for {missing}")  # pragma: no cover
    return types


_FIELD_TYPES: dict[str, dict[str, Any]] = {name: _field_types(_section_class(name)) for name in _SECTIONS}


def _table(cls: type, types: Mapping[str, Any], values: Any, where: str, sep: str,
           base: Path) -> Any:
    """One TOML table as the dataclass ``cls``: every key must be a field, and is converted
    by its type's row in CONVERTERS. Sections (``[uploads] max_size``) and nested tables
    (``[storage] s3.bucket``) go through here alike, so both refuse and report the same way."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table")
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"{where}{sep}{key}: unknown key")
        kwargs[key] = CONVERTERS[types[key]](value, f"{where}{sep}{key}", base)
    return cls(**kwargs)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _one_of(value: str, choices: Sequence[str], where: str) -> None:
    """A key whose value names one of a fixed set; the message lists the set, so a typo is
    fixed from the error alone."""
    if value not in choices:
        raise ConfigError(f"{where} must be one of {list(choices)}")


def _check_transcode_quality(t: TranscodeConfig) -> None:
    _one_of(t.rate_control, RATE_CONTROLS, "[transcode] rate_control")
    _one_of(t.hdr_tonemap, TONEMAP_CURVES, "[transcode] hdr_tonemap")
    for rung in t.ladder:
        if not 0 <= rung.quality <= 51:
            raise ConfigError(f"[transcode] ladder: rung {rung.name!r} quality must be 0-51")
    if not -70.0 <= t.loudness_target <= -5.0:
        raise ConfigError("[transcode] loudness_target must be between -70 and -5 LUFS")
    if not -9.0 <= t.loudness_true_peak <= 0.0:
        raise ConfigError("[transcode] loudness_true_peak must be between -9 and 0 dBTP")
    if not 1.0 <= t.loudness_range <= 50.0:
        raise ConfigError("[transcode] loudness_range must be between 1 and 50 LU")
    if t.chunk_seconds < 0:
        raise ConfigError("[transcode] chunk_seconds must be >= 0 (0 = one job per video)")
    if not 0.0 <= t.rung_min_saving < 1.0:
        raise ConfigError("[transcode] rung_min_saving must be at least 0 and below 1")


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (if any), apply ``TUSFLOW_SECTION__KEY`` overrides, validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    config_path: Path | None = None
    if path:
        config_path = Path(path).expanduser().resolve()
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {config_path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: {exc}") from exc
    base = config_path.parent if config_path else Path.cwd()

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if section not in _SECTIONS:
            raise ConfigError(f"{name}: unknown section [{section}]")
        key, _, subkey = key.partition("__")  # TUSFLOW_STORAGE__S3__BUCKET: a nested table's key
        if subkey:
            table = raw.setdefault(section, {}).setdefault(key, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{name}: [{section}] {key} is not a table")
            table[subkey] = _parse_env_value(value)
        else:
            raw.setdefault(section, {})[key] = _parse_env_value(value)

    sections: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}]")
        sections[section] = _table(_section_class(section), _FIELD_TYPES[section], values,
                                   f"[{section}]", " ", base)

    settings = Settings(**sections, config_path=config_path)
    if not sections.get("storage") or "data_dir" not in raw.get("storage", {}):
        settings = settings.replace(storage={"data_dir": (base / "var").resolve()})
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not s.server.base_path.startswith("/"):
        raise ConfigError("[server] base_path must start with '/'")
    if s.uploads.max_size < 0:
        raise ConfigError("[uploads] max_size must be >= 0")
    if s.uploads.max_concat_parts < 1:
        raise ConfigError("[uploads] max_concat_parts must be >= 1")
    if s.uploads.min_rate < 0 or s.uploads.min_rate_window <= 0:
        raise ConfigError("[uploads] min_rate must be >= 0 (0 = off) and min_rate_window > 0")
    if s.transcode.segment_format not in ("fmp4", "ts"):
        raise ConfigError("[transcode] segment_format must be 'fmp4' or 'ts'")
    _check_transcode_quality(s.transcode)
    _check_storage(s.storage)
    if s.cors.allow_credentials and "*" in s.cors.allow_origins:
        raise ConfigError("[cors] allow_credentials cannot be combined with allow_origins '*'")
    if s.webhooks.urls and not s.webhooks.secret:
        raise ConfigError("[webhooks] secret is required when urls are set (receivers verify it)")
    unknown = set(s.webhooks.events) - set(WEBHOOK_EVENTS)
    if unknown:
        raise ConfigError(f"[webhooks] events: unknown {sorted(unknown)}; known {list(WEBHOOK_EVENTS)}")
    _validate_auth(s.auth)
    _check_locks(s)


def _check_storage(st: StorageConfig) -> None:
    _one_of(st.backend, STORAGE_BACKENDS, "[storage] backend")
    if not MIN_PART_SIZE <= st.s3.part_size <= MAX_PART_SIZE:
        raise ConfigError("[storage.s3] part_size must be between 5 MiB and 5 GiB (S3's part limits)")
    if st.s3.max_buffered_parts < 1:
        raise ConfigError("[storage.s3] max_buffered_parts must be >= 1")
    if st.backend == "s3" and not st.s3.bucket:
        raise ConfigError("[storage.s3] bucket is required with [storage] backend = \"s3\"")


def _check_locks(s: "Settings") -> None:
    _one_of(s.locks.backend, LOCK_BACKENDS, "[locks] backend")
    if s.locks.lease <= 0:
        raise ConfigError("[locks] lease must be > 0")
    base = s.delivery.public_base_url
    if base and not base.startswith(("http://", "https://")):
        raise ConfigError("[delivery] public_base_url must start with http:// or https://")


def _validate_auth(a: AuthConfig) -> None:
    if a.enabled and not (a.tokens or a.jwt_hs256_secret or a.jwt_rs256_public_key):
        raise ConfigError("[auth] enabled needs tokens, jwt_hs256_secret or jwt_rs256_public_key")
    if a.signed_playback and not a.playback_signing_key:
        raise ConfigError("[auth] signed_playback needs playback_signing_key")
    if a.playback_ttl <= 0 or a.precreate_hook_timeout <= 0 or a.jwt_leeway < 0:
        raise ConfigError("[auth] playback_ttl and precreate_hook_timeout must be > 0, jwt_leeway >= 0")
    if a.quota_bytes_per_day < 0 or a.quota_bytes_total < 0:
        raise ConfigError("[auth] quotas must be >= 0 (0 = no quota)")
    if a.creations_per_minute_per_user < 0 or a.creations_per_minute_per_address < 0:
        raise ConfigError("[auth] creations_per_minute_* must be >= 0 (0 = no limit)")
    for key in ("jwt_hs256_secret", "playback_signing_key"):
        if 0 < len(getattr(a, key)) < 32:
            raise ConfigError(f"[auth] {key} must be at least 32 characters (256 bits for HMAC-SHA256)")
    if len({t.token for t in a.tokens}) != len(a.tokens):
        raise ConfigError("[auth] tokens: the same token is listed twice")
