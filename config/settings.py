"""Service configuration: pydantic models, loaded once from TOML plus environment overrides.

`load_settings` is the only place that reads configuration. It takes the environment as a
mapping so that nothing depends on the process environment at import time, and every error
names the file, the dotted key and the offending value.

Environment overrides use ``MINGLIANG_<SECTION>__<KEY>``, for example
``MINGLIANG_MQTT__PORT=1884``; ``MINGLIANG_CONFIG`` names a TOML file that is layered over the
defaults in ``config/default.toml``.
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from config.redact import is_secret_key, redact

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MINGLIANG_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names file, key and value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]


def _from_project_root(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_ROOT / path


# A file taken from the project root when relative, already at load: the MQTT clients and the
# HTTP server get their own section only, not `Settings.resolve`.
RootedPath = Annotated[Path, AfterValidator(_from_project_root)]


class MqttSettings(_Section):
    host: str = Field(description="Broker host name or address.", min_length=1)
    port: Port = Field(description="Broker TCP port.")
    username: str | None = Field(None, description="User name, if the broker wants one.")
    password: str | None = Field(None, description="Password for `username`.")
    client_id: str = Field(
        description="Client id; must be stable, because the broker keeps the persistent "
        "session (and the messages queued while ingest is down) under it.",
        min_length=1,
        max_length=128,
    )
    keepalive_s: int = Field(description="MQTT keepalive in seconds.", ge=5, le=3600)
    session_expiry_s: int = Field(
        description="How long the broker keeps the session and queues messages for a "
        "disconnected ingest, in seconds.",
        ge=0,
        le=2**32 - 1,
    )
    receive_maximum: int = Field(
        description="MQTT 5 Receive Maximum: unacknowledged QoS 1 messages the broker may "
        "have in flight to ingest. Messages are acknowledged only once durable, so this "
        "bounds both memory and the batch size.",
        ge=1,
        le=65535,
    )
    shared_group: str | None = Field(
        None,
        description="If set, subscribe through the shared subscription $share/<group>/... so "
        "that several ingest nodes split the stream.",
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    reconnect_max_s: float = Field(
        description="Longest wait between reconnection attempts.", gt=0, le=600
    )
    relay_username: str | None = Field(
        None,
        description="If set, alert changes are published on a connection of their own with "
        "this account (the broker's relay role, allowed to write only v1/alerts/#); otherwise "
        "on ingest's connection.",
        min_length=1,
    )
    relay_password: str | None = Field(None, description="Password for `relay_username`.")
    tls_ca: RootedPath | None = Field(
        None,
        description="CA certificate (PEM) that signed the broker's certificate. When set, every "
        "connection to the broker uses TLS, trusts this CA alone and checks that the broker's "
        "certificate names `host`; a broker's TLS listener is port 8883 by convention. Relative "
        "to the project root. See docs/security.md (TLS).",
    )


class InfluxSettings(_Section):
    url: str = Field(
        description="Base URL of InfluxDB.",
        pattern=r"^https?://[^\s/]+(:\d+)?/?$",
    )
    api: Literal["v1", "v2"] = Field(
        description="Write API: v1 is /write (InfluxDB 1.x, and the compatibility endpoint of "
        "2.x and 3.x); v2 is /api/v2/write with token, org and bucket. Reads always use "
        "InfluxQL /query.",
    )
    database: str = Field(description="Database (v1) or the InfluxQL DBRP name (v2).", min_length=1)
    retention_policy: str | None = Field(None, description="Retention policy for v1 writes.")
    username: str | None = Field(None, description="v1 user.")
    password: str | None = Field(None, description="v1 password.")
    token: str | None = Field(None, description="v2/v3 API token.")
    org: str | None = Field(None, description="v2 organisation.")
    bucket: str | None = Field(None, description="v2 bucket.")
    timeout_s: float = Field(description="HTTP timeout per request.", gt=0, le=300)
    create_database: bool = Field(
        description="Issue CREATE DATABASE at start (v1 only; harmless if it exists)."
    )

    @model_validator(mode="after")
    def _v2_needs_target(self) -> InfluxSettings:
        if self.api == "v2":
            missing = [k for k in ("token", "org", "bucket") if not getattr(self, k)]
            if missing:
                raise ValueError(f"api = 'v2' needs {', '.join(missing)}")
        return self


class IngestSettings(_Section):
    max_payload_bytes: int = Field(
        description="Larger payloads are rejected as too_large.", ge=256, le=16 * 2**20
    )
    max_readings_per_message: int = Field(
        description="Most readings one array payload may carry.", ge=1, le=100_000
    )
    max_past_s: int = Field(
        description="Readings older than this are rejected (timestamp_out_of_range).",
        ge=60,
    )
    max_future_s: int = Field(
        description="Readings further ahead of the receive time are rejected.",
        ge=0,
        le=86400,
    )
    batch_max_points: int = Field(
        description="A batch is written once it holds this many points.", ge=1, le=100_000
    )
    batch_max_delay_ms: int = Field(
        description="... or once its oldest point is this old.", ge=1, le=60_000
    )


class SpoolSettings(_Section):
    max_bytes: int = Field(
        description="Disk the spool may use while InfluxDB is away. When it is full, ingest "
        "stops acknowledging and the broker keeps the messages.",
        ge=2**20,
    )
    segment_bytes: int = Field(
        description="Size at which a spool segment file is closed.", ge=2**16
    )
    retry_initial_s: float = Field(description="First wait before retrying InfluxDB.", gt=0, le=60)
    retry_max_s: float = Field(description="Longest wait between retries.", gt=0, le=600)


class RejectsSettings(_Section):
    max_file_bytes: int = Field(description="Size at which rejects.jsonl is rotated.", ge=2**16)
    keep_files: int = Field(description="Rotated reject files kept.", ge=1, le=100)
    recent: int = Field(
        description="Recent rejections kept in memory for the API.", ge=1, le=100_000
    )
    payload_excerpt_bytes: int = Field(
        description="Characters of a rejected payload the rejections API shows (the file "
        "keeps it whole).",
        ge=0,
        le=65536,
    )
    keep_payload_bytes: int = Field(
        description="Longest payload kept whole in the rejects file; only a too_large payload "
        "can be longer, and is cut here and marked truncated.",
        ge=65536,
        le=64 * 2**20,
    )
    log_every_s: float = Field(
        description="At most one log line per reason in this interval; the rest are counted.",
        gt=0,
    )


class ApiSettings(_Section):
    host: str = Field(description="Address the HTTP API listens on.", min_length=1)
    port: Port = Field(description="HTTP API port.")
    reporting_window_s: int = Field(
        description="A site or device counts as reporting if it sent telemetry this recently.",
        ge=10,
    )
    last_seen_lookback_s: int = Field(
        description="How far back the directory looks for a device's newest telemetry.",
        ge=60,
        le=400 * 86400,
    )
    max_points: int = Field(
        description="Most points one telemetry query returns.", ge=1, le=1_000_000
    )
    tls_cert: RootedPath | None = Field(
        None,
        description="Server certificate (PEM, followed by any intermediate CAs) to serve the "
        "API over HTTPS; needs `tls_key`. Its names must include the host clients use. Relative "
        "to the project root. Set `console.secure_cookie` too.",
    )
    tls_key: RootedPath | None = Field(
        None, description="Private key (PEM, unencrypted) of `tls_cert`."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both, or neither")
        return self


class AlertsSettings(_Section):
    store_url: str = Field(
        description="Relational store of alerts: empty for SQLite in the data folder "
        "(alerts.db), or a SQLAlchemy URL such as "
        "postgresql+psycopg://user:password@host:5432/mingliang for several nodes.",
    )
    rules: Path = Field(description="The telemetry rule book (TOML).")
    tick_s: float = Field(
        description="How often rules are evaluated without a message arriving.", gt=0, le=60
    )
    remind_after_s: dict[str, int] = Field(
        description="Per severity: remind about an unacknowledged alert after this long, "
        "and again every as long.",
    )
    escalate_after_s: dict[str, int] = Field(
        description="Per severity: escalate an unacknowledged alert after this long.",
    )
    progress_every_s: float = Field(
        description="How often rule progress (held durations) is saved; a crash loses at most "
        "this much of it (a clean stop saves everything).",
        gt=0,
        le=300,
    )
    counts_every_s: float = Field(
        description="How often open-alert counts are written to InfluxDB.", ge=1, le=3600
    )
    queue_max: int = Field(
        description="Stored records waiting for rule evaluation (records, not batches); ingest "
        "waits, and holds its acknowledgements, while it is full.",
        ge=100,
        le=1_000_000,
    )
    busy_timeout_s: float = Field(
        description="SQLite: how long a write waits for a lock another process holds before "
        "the store counts as unavailable (its loop then retries after a back-off).",
        gt=0,
        le=300,
    )

    @model_validator(mode="after")
    def _severities(self) -> AlertsSettings:
        known = {"critical", "major", "minor", "warning"}
        for name in ("remind_after_s", "escalate_after_s"):
            table = getattr(self, name)
            if set(table) != known:
                raise ValueError(f"{name} needs exactly the severities {sorted(known)}")
            if any(v <= 0 for v in table.values()):
                raise ValueError(f"{name} values must be positive seconds")
        return self


class AuthSettings(_Section):
    enabled: bool = Field(
        description="Require a bearer token, or a console session opened with one, on /api/v1 "
        "(see `python -m api tokens`). Turn off only on a closed test network."
    )
    free_failures: int = Field(
        description="Failed authentications (API and camera tokens, sign-ins, session cookies "
        "naming no session) a client address may make before it has to wait: its further "
        "attempts are then refused with 429, without checking anything, for "
        "`penalty_initial_s`.",
        ge=1,
        le=1000,
    )
    failure_window_s: int = Field(
        description="An address's failures are forgotten once it has gone this long without "
        "failing again (a success forgets them at once).",
        ge=10,
        le=86400,
    )
    penalty_initial_s: float = Field(
        description="The first wait once `free_failures` are used up; it doubles with every "
        "further failure.",
        gt=0,
        le=3600,
    )
    penalty_max_s: float = Field(
        description="The longest wait; at most `failure_window_s`.", gt=0, le=86400
    )
    tracked_addresses: int = Field(
        description="Most client addresses whose failures are remembered (a few hundred bytes "
        "each); beyond it the address that failed longest ago is forgotten.",
        ge=100,
        le=10_000_000,
    )

    @model_validator(mode="after")
    def _penalties(self) -> AuthSettings:
        if self.penalty_initial_s > self.penalty_max_s:
            raise ValueError("penalty_initial_s must not exceed penalty_max_s")
        if self.penalty_max_s > self.failure_window_s:
            # Else an address's record could be forgotten while it is still made to wait.
            raise ValueError("penalty_max_s must not exceed failure_window_s")
        return self


class ConsoleSettings(_Section):
    session_ttl_s: int = Field(
        description="How long a browser session (POST /api/v1/session) lasts before the "
        "console must sign in again with its token.",
        ge=60,
        le=7 * 86400,
    )
    secure_cookie: bool = Field(
        description="Set true when the API is served over HTTPS so the cookie is only sent "
        "over TLS (a browser then keeps no session over plain HTTP)."
    )


class SimulatorSettings(_Section):
    interval_s: float = Field(
        description="Simulated seconds between two readings of a sensor.", gt=0, le=3600
    )
    speed: float = Field(
        description="Simulated seconds per real second (time acceleration).", gt=0, le=3600
    )
    street_heartbeat_s: float = Field(
        description="Seconds between two heartbeats of a street camera.", gt=0, le=3600
    )
    street_connections: int = Field(
        description="MQTT connections the street cameras' heartbeats share.", ge=1, le=2000
    )
    seed: int = Field(description="Seed of every random choice the simulator makes.")
    faults: list[str] = Field(
        description="Scripted faults, 'kind:target@start+duration' (see docs/simulators.md).",
    )


class CamerasSettings(_Section):
    workers: int = Field(
        description="Camera worker processes; each owns the cameras that hash to it. "
        "0 turns the video path off.",
        ge=0,
        le=64,
    )
    offline_after_s: float = Field(
        description="A camera with no decoded frame for this long is offline.", ge=2, le=3600
    )
    health_every_s: float = Field(
        description="How often each camera's health is written to InfluxDB (and offline "
        "cameras looked for).",
        ge=0.5,
        le=300,
    )
    analytics_fps: float = Field(
        description="Frames per second analytics take from each camera's latest-frame slot.",
        gt=0,
        le=60,
    )
    unwatched_decode: Literal["every_frame", "key_frames"] = Field(
        "every_frame",
        description="What a pushing camera's worker decodes while nobody watches it live. "
        "key_frames asks the camera for a key frame (RTCP PLI) each time analytics took a "
        "frame and decodes only those, when the camera sends at least four times "
        "analytics_fps: a quarter less CPU at 15 fps, but about twice the bit rate (key "
        "frames are large), docs/video.md. Live viewers always get every frame.",
    )
    decode_threads: int = Field(
        2,
        description="Decoder threads of a worker process, shared by its pushing cameras.",
        ge=1,
        le=64,
    )
    viewers_per_camera: int = Field(
        description="Live viewers (WHEP and MJPEG) one camera serves at once.", ge=0, le=1000
    )
    viewers_per_worker: int = Field(
        description="Live viewers one worker process serves at once, over all its cameras.",
        ge=0,
        le=10000,
    )
    mjpeg_fps: float = Field(description="Frame rate of MJPEG streams.", gt=0, le=30)
    jpeg_quality: int = Field(description="JPEG quality of snapshots and MJPEG.", ge=10, le=100)
    max_sdp_bytes: int = Field(
        description="Largest SDP offer accepted by WHIP and WHEP.", ge=1024, le=1_048_576
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        description="RTSP transport for pulled cameras; TCP survives lossy links and NAT."
    )
    rtsp_timeout_s: float = Field(
        description="An RTSP camera that sends nothing for this long is reconnected.",
        ge=1,
        le=300,
    )
    reconnect_initial_s: float = Field(
        description="First wait before reconnecting a pulled camera; doubles per failure.",
        gt=0,
        le=60,
    )
    reconnect_max_s: float = Field(
        description="Longest wait between two reconnection attempts.", gt=0, le=3600
    )
    worker_start_timeout_s: float = Field(
        description="How long a worker process may take to start.", ge=1, le=300
    )
    malloc_mmap_threshold_bytes: int = Field(
        description="Allocations this large get memory of their own from the system and give "
        "it back when freed (glibc's M_MMAP_THRESHOLD, fixed). Keeps decoded frames out of the "
        "heap, at a cost: about a fifth less throughput (a mapping and page faults per frame). "
        "0 keeps glibc's moving threshold; `malloc_trim_every_s` then keeps memory flat.",
        ge=0,
        le=32 * 2**20,
    )
    malloc_trim_every_s: float = Field(
        description="How often a worker gives its heap's free pages back to the system "
        "(glibc's malloc_trim). Decoded frames of a few hundred KB, carved from the heap between "
        "small blocks, fragment it; without this a worker grows about 0.3 MiB a minute. "
        "0 never trims.",
        ge=0,
        le=3600,
    )


class EvidenceSettings(_Section):
    keep_days: float = Field(
        description="Evidence (snapshots, clips) is kept at least this long, whatever the "
        "disk budget says (kitchen video: 7 days by national guidance, 15 in some provinces).",
        ge=1,
        le=3650,
    )
    max_age_days: float = Field(description="Evidence older than this is removed.", ge=1, le=3650)
    max_bytes: int = Field(
        description="Disk budget: once the total passes it, the oldest evidence goes first, "
        "but never any younger than keep_days (a warning then says the budget is too small).",
        ge=0,
    )
    jpeg_quality: int = Field(description="JPEG quality of evidence snapshots.", ge=10, le=100)
    clip_before_s: float = Field(
        description="Seconds before an alert its clip starts (each camera keeps this much "
        "picture in memory, at the analytics rate).",
        ge=0,
        le=120,
    )
    clip_after_s: float = Field(
        description="Seconds after an alert its clip runs on.", ge=0, le=120
    )
    prune_every_s: float = Field(
        description="How often old evidence is looked for and removed.", ge=1, le=86400
    )

    @model_validator(mode="after")
    def _kept_before_removed(self) -> EvidenceSettings:
        if self.max_age_days < self.keep_days:
            raise ValueError(
                f"max_age_days ({self.max_age_days}) is shorter than keep_days ({self.keep_days})"
            )
        return self


class AnalyticsSettings(_Section):
    enabled: bool = Field(description="Run video analytics on every camera's frames.")
    profiles_dir: Path = Field(
        description="Camera profiles (zones, masks, detector parameters): all.toml, "
        "<camera type>.toml, rooms/<room>.toml, cameras/<camera id>.toml."
    )
    health_every_s: float = Field(
        description="How often each camera's picture is checked for covered, blurred, frozen "
        "and moved.",
        ge=0.2,
        le=60,
    )
    profile_check_every_s: float = Field(
        description="How often profile files are checked for edits (applied without restart).",
        ge=0.5,
        le=3600,
    )
    signal_poll_s: float = Field(
        description="How often the service collects the camera workers' findings.",
        ge=0.1,
        le=60,
    )
    outbox_max: int = Field(
        description="Findings a worker keeps for collection; beyond, the oldest are dropped "
        "(counted).",
        ge=100,
        le=1_000_000,
    )
    evidence: EvidenceSettings


class ClusterSettings(_Section):
    node_id: str | None = Field(
        None,
        description="This node's name among several service nodes on one PostgreSQL alert "
        "store; each node needs its own. Unset: the node works alone and owns every camera "
        "and site. See docs/capacity.md.",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
    )
    api_url: str | None = Field(
        None,
        description="The base URL other nodes send this node's cameras' publishers and "
        "viewers to; default http://<api.host>:<api.port>.",
        pattern=r"^https?://[^\s/]+(:\d+)?/?$",
    )
    partitions: int = Field(
        description="The sites are split into this many partitions, each ingested by one node "
        "on a persistent MQTT session of its own (client id <mqtt.client_id>-pNN; with broker "
        "accounts, user <mqtt.username>-pNN). The same on every node; more partitions than "
        "nodes spread a dead node's share over the others.",
        ge=1,
        le=256,
    )
    heartbeat_s: float = Field(
        description="How often a node lists the live members (its heartbeat).", gt=0, le=60
    )
    dead_after_s: float = Field(
        description="A node that has not sent a heartbeat for this long is ended by "
        "PostgreSQL and its cameras and sites move to the others; more than heartbeat_s.",
        ge=1,
        le=300,
    )

    @model_validator(mode="after")
    def _heartbeat_within_deadline(self) -> ClusterSettings:
        if not self.heartbeat_s * 2 <= self.dead_after_s:
            raise ValueError(
                f"dead_after_s {self.dead_after_s} must be at least twice heartbeat_s "
                f"{self.heartbeat_s}: one late heartbeat must not end a live node"
            )
        return self


class PathSettings(_Section):
    data_dir: Path = Field(description="Where spool, rejects and local services keep their files.")
    inventory: Path = Field(description="The district inventory manifest.")


class Settings(_Section):
    """The whole configuration; every value has its default in config/default.toml."""

    mqtt: MqttSettings
    influx: InfluxSettings
    ingest: IngestSettings
    spool: SpoolSettings
    rejects: RejectsSettings
    api: ApiSettings
    alerts: AlertsSettings
    auth: AuthSettings
    console: ConsoleSettings
    simulator: SimulatorSettings
    cameras: CamerasSettings
    analytics: AnalyticsSettings
    cluster: ClusterSettings
    paths: PathSettings

    def resolve(self, path: Path) -> Path:
        """A path from the configuration, relative paths taken from the project root."""
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.paths.data_dir)

    @property
    def inventory_path(self) -> Path:
        return self.resolve(self.paths.inventory)

    @property
    def alert_store_url(self) -> str:
        return self.alerts.store_url or f"sqlite:///{self.data_dir / 'alerts.db'}"

    @property
    def rules_path(self) -> Path:
        return self.resolve(self.alerts.rules)

    @property
    def profiles_dir(self) -> Path:
        return self.resolve(self.analytics.profiles_dir)

    @property
    def evidence_dir(self) -> Path:
        return self.data_dir / "evidence"

    @property
    def node_api_url(self) -> str:
        """Where other nodes send this node's callers."""
        scheme = "https" if self.api.tls_cert is not None else "http"
        return self.cluster.api_url or f"{scheme}://{self.api.host}:{self.api.port}"

    @model_validator(mode="after")
    def _cluster_on_postgresql(self) -> Settings:
        unreachable = self.api.host in ("0.0.0.0", "::", "")
        if self.cluster.node_id is not None and self.cluster.api_url is None and unreachable:
            raise ValueError(
                f"cluster.api_url is needed when api.host is {self.api.host!r}: other nodes "
                "send this node's cameras and viewers there, and cannot use that address"
            )
        if self.cluster.node_id is not None and not self.alerts.store_url.startswith("postgresql"):
            raise ValueError(
                f"cluster.node_id {self.cluster.node_id!r} needs alerts.store_url to be a "
                "postgresql+psycopg:// URL: nodes share their alert store, and SQLite is one "
                "machine's file"
            )
        return self


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def merge_tables(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` layered on `base`: tables merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


# MINGLIANG_ variables that are not settings: the file to read, and the test suite's own.
_OTHER_VARIABLES = frozenset({"MINGLIANG_CONFIG"})
TEST_PREFIX = "MINGLIANG_TEST_"


def _known_key(model: type[BaseModel], keys: list[str], where: str = "") -> str | None:
    """None if `keys` name a setting of `model`; else what is wrong with them."""
    key, rest = keys[0], keys[1:]
    field = model.model_fields.get(key)
    if field is None:
        known = ", ".join(model.model_fields)
        place = f"[{where}] has" if where else "there is"
        return f"{place} no key {key!r} (known: {known})"
    kind = field.annotation
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        if not rest:
            return f"{key!r} is a table: name one of its keys"
        return _known_key(kind, rest, f"{where}.{key}" if where else key)
    if rest and typing.get_origin(kind) is not dict:
        return f"{key!r} has no keys below it"
    return None


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """`MINGLIANG_MQTT__PORT=1884` becomes {"mqtt": {"port": "1884"}}; pydantic converts.

    A MINGLIANG_ variable that names no setting is refused, naming it: a misspelt variable
    silently ignored is a setting an operator believes is in force."""
    tree: dict[str, Any] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in _OTHER_VARIABLES:
            continue
        if name.startswith(TEST_PREFIX):
            continue  # read by the test suite, never by the service
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        problem = (
            "settings are named MINGLIANG_<SECTION>__<KEY>, for example MINGLIANG_MQTT__PORT"
            if len(keys) < 2 or not all(keys)
            else _known_key(Settings, keys)
        )
        if problem is not None:
            raise ConfigError(f"environment variable {name}: {problem}")
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if keys[-1] == "faults":
            node[keys[-1]] = [part for part in value.split(",") if part]
        else:
            node[keys[-1]] = value
    return tree


def _describe(error: Mapping[str, Any]) -> str:
    """One problem: the dotted key, what is wrong, and the value unless it is a secret."""
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = redact(str(error["msg"]))
    value = error.get("input")
    if isinstance(value, Mapping | list):
        return f"{key}: {message}"  # a whole table: its secrets must not be echoed
    if is_secret_key(key):
        return f"{key}: {message} (value hidden)"
    return f"{key}: {message} (got {redact(repr(value))})"


def load_settings(
    env: Mapping[str, str], path: Path | None = None, **overrides: Mapping[str, Any]
) -> Settings:
    """Defaults, then the file (`path` or $MINGLIANG_CONFIG), then environment, then overrides.

    `overrides` are whole sections given by callers such as tests (``mqtt={"port": 1884}``).
    """
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (str(DEFAULT_CONFIG), _read_toml(DEFAULT_CONFIG))
    ]
    file_path = path or (Path(env["MINGLIANG_CONFIG"]) if env.get("MINGLIANG_CONFIG") else None)
    if file_path is not None:
        layers.append((str(file_path), _read_toml(file_path)))
    env_tree = _env_overrides(env)
    if env_tree:
        layers.append(("environment (MINGLIANG_*)", env_tree))
    if overrides:
        layers.append(("overrides", overrides))

    merged: dict[str, Any] = {}
    for source, layer in layers:
        merged = merge_tables(merged, layer)
        try:
            # Validate each layer as it is added so the error names the layer that broke it.
            Settings.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise ConfigError(f"{source}: {problems}") from exc
    return Settings.model_validate(merged)
