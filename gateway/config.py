"""The gateway's configuration: one TOML file, validated whole, overridable by environment.

`load_config` reports every problem at once (file, key, what is wrong) by
raising `ConfigError`; the command line prints them and exits with status 2.
`RENTGATE_SECTION__KEY=value` overrides a key (`RENTGATE_MQTT__URL`), and list
entries are addressed by index (`RENTGATE_DEVICES__0__PATH`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.devices.serial_port import SUPPORTED_BAUD
from gateway.domain.credentials import CredentialKind
from gateway.errors import RentgateError
from gateway.store.audit_retention import MIN_AUDIT_DAYS
from gateway.sync.wire import GATEWAY_ID_PATTERN, GATEWAY_ID_RULE

ENV_PREFIX = "RENTGATE_"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Reader names: local only, so they may keep a `.`; gateway and client ids may not."""
_DOOR = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$"
"""Door names are shorter so that a default reader name, door-kind-index, stays within 64."""


class ConfigError(RentgateError):
    """The configuration is unusable; `problems` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def report(self) -> str:
        lines = [f"{self.source}: configuration is not valid:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    id: str = Field(description="gateway id; appears in every MQTT topic")
    data_dir: Path
    timezone: str = "Asia/Shanghai"
    key_file: Path | None = None
    commit_window_ms: float = Field(2.0, ge=0, le=50)
    store_shared_with_group: bool = Field(
        False,
        description="the web process runs as another user whose group is this one's (the"
        " systemd units): the store, its WAL and the field key become group read-write (key:"
        " read); everything else in the data dir stays this user's alone",
    )

    @field_validator("id")
    @classmethod
    def _gateway_id(cls, value: str) -> str:
        return _broker_safe_id(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def database(self) -> Path:
        return self.data_dir / "rentgate.db"

    @property
    def keys(self) -> Path:
        return self.key_file or self.data_dir / "keys" / "field.key"

    @property
    def status_file(self) -> Path:
        return self.data_dir / "status.json"


def _broker_safe_id(value: str) -> str:
    if not re.fullmatch(GATEWAY_ID_PATTERN, value):
        raise ValueError(f"{value!r}: {GATEWAY_ID_RULE}")
    return value


def _broker_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"{value!r} must be mqtt://host[:port] or mqtts://host[:port]")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r}: bad port: {exc}") from exc
    return value


class MqttSection(_Section):
    url: str | None = Field(None, description="one broker; or `urls` for a cluster, not both")
    urls: list[str] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="the nodes of a broker cluster, tried in order; the link stays on a node"
        " that works and moves to the next when it fails",
    )
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto: MQTT 5, falling back to 3.1.1 on a broker that refuses 5"
    )
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    inflight_window: int = Field(16, ge=1, le=1000)
    batch_events: int = Field(500, ge=1, le=10_000)
    ack_timeout_s: float = Field(60.0, ge=1, le=3600)
    state_every_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="the retained birth is republished this often, with its time, so that"
        " the platform can call a gateway offline when its state goes stale",
    )

    ack_resend_s: float = Field(
        120.0,
        ge=1,
        le=86_400,
        description="PUBACKed events the platform has not acknowledged (cmd/ack) for this long"
        " are published again; the wait doubles, up to 8 times, while no ack comes",
    )

    @field_validator("url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """`RENTGATE_MQTT__URL=` (empty) unsets a file's `url`, so that `urls` can replace it."""
        return None if value == "" else value

    @field_validator("url")
    @classmethod
    def _one_url(cls, value: str | None) -> str | None:
        return None if value is None else _broker_url(value)

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """A comma-separated string (as an environment override gives it) is a list too."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("urls")
    @classmethod
    def _cluster_urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        checked = [_broker_url(url) for url in value]
        if len(set(checked)) != len(checked):
            raise ValueError("a URL is listed twice")
        return checked

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        return None if value is None else _broker_safe_id(value)

    @model_validator(mode="after")
    def _tls_consistent(self) -> MqttSection:
        if (self.url is None) == (self.urls is None):
            raise ValueError('give the broker as url = "…" or as urls = ["…", …], exactly one')
        schemes = {urlsplit(url).scheme for url in self.brokers}
        if len(schemes) > 1:
            raise ValueError(
                "urls mix mqtt:// and mqtts://; a failover must never fall back to plaintext"
            )
        secure = schemes == {"mqtts"}
        if not secure and any((self.ca, self.cert, self.key)):
            raise ValueError("ca/cert/key are given but url is plaintext mqtt://; use mqtts://")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self

    @property
    def brokers(self) -> list[str]:
        """Every broker URL, in the order to try them (`url` is a list of one)."""
        if self.urls is not None:
            return list(self.urls)
        return [self.url] if self.url is not None else []


class ApiSection(_Section):
    listen: str = Field("127.0.0.1:8080", description="host:port; port 0 picks a free one")
    cert: Path | None = Field(None, description="TLS certificate (PEM); absent: self-signed")
    key: Path | None = None
    max_connections: int = Field(512, ge=1, le=60_000, description="open at once, in all")
    max_connections_per_address: int = Field(32, ge=1, le=60_000)
    read_timeout_s: float = Field(
        10.0, gt=0, le=300, description="for a TLS handshake, and for a request's headers and body"
    )
    state_dir: Path | None = Field(
        None,
        description="the web process's own files (self-signed TLS key, first-run setup code);"
        " absent: the data dir",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="reverse proxies whose X-Forwarded-For is believed (addresses or networks)",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be host:port")
        return value

    @model_validator(mode="after")
    def _pair(self) -> ApiSection:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")


class LineDevice(_Section):
    kind: Literal["line"]
    door: str = Field(pattern=_DOOR)
    path: Path
    credential: CredentialKind = CredentialKind.CARD_UID
    baud: int | None = None
    name: str | None = Field(None, pattern=_NAME)

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: int | None) -> int | None:
        if value is not None and value not in SUPPORTED_BAUD:
            raise ValueError(f"must be one of {', '.join(map(str, SUPPORTED_BAUD))}")
        return value


class SamDevice(_Section):
    """A second-generation ID-card reader with a SAM module on a serial port."""

    kind: Literal["idcard-sam"]
    door: str = Field(pattern=_DOOR)
    path: Path
    baud: int = 115200
    name: str | None = Field(None, pattern=_NAME)

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: int) -> int:
        if value not in SUPPORTED_BAUD:
            raise ValueError(f"must be one of {', '.join(map(str, SUPPORTED_BAUD))}")
        return value


class OsdpDevice(_Section):
    """One OSDP reader (a peripheral device) on an RS-485 line; readers on the same
    `path` share one line and are told apart by `address`."""

    kind: Literal["osdp"]
    door: str = Field(pattern=_DOOR)
    path: Path
    baud: int = 115200
    address: int = Field(ge=0, le=126)
    key_file: Path = Field(description="the reader's 16-byte secure-channel key, hex")
    install: bool = Field(False, description="no key yet: provision one with KEYSET")
    name: str | None = Field(None, pattern=_NAME)
    output: int = Field(0, ge=0, le=255, description="relay output driving the strike")
    output_mode: Literal["pulse", "latch"] = "pulse"
    led: int = Field(0, ge=0, le=255)
    contact_input: int | None = Field(0, ge=0, le=255)
    exit_input: int | None = Field(1, ge=0, le=255)
    contact_open_level: Literal[0, 1] = 1

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: int) -> int:
        if value not in SUPPORTED_BAUD:
            raise ValueError(f"must be one of {', '.join(map(str, SUPPORTED_BAUD))}")
        return value


Device = Annotated[LineDevice | SamDevice | OsdpDevice, Field(discriminator="kind")]


class DoorSection(_Section):
    name: str = Field(pattern=_DOOR)
    lock: Literal["auto", "sim", "osdp"] = Field(
        "auto", description="osdp: the relay of the door's OSDP reader; auto: that if any, else sim"
    )
    unlock_seconds: float = Field(5.0, gt=0, le=600)
    units: list[str] | None = Field(None, description="units this door serves; absent: all")
    held_open_s: float = Field(60.0, gt=0, le=3600, description="open longer: held-open alarm")
    fail_mode: Literal["secure", "safe"] = "secure"


HANGZHOU_URBAN_DISTRICTS = [
    "杭州市上城区",
    "杭州市下城区",
    "杭州市江干区",
    "杭州市拱墅区",
    "杭州市西湖区",
    "杭州市滨江区",
    "杭州市萧山区",
    "杭州市余杭区",
    "杭州市富阳区",
    "杭州市临平区",
    "杭州市钱塘区",
]
"""The urban districts as ID cards print them, including names retired in 2021 (下城, 江干)
that older cards still carry."""


class StorageSection(_Section):
    budget_mb: float = Field(
        1024.0, gt=0, description="the data dir's share of the disk; delivered history yields"
    )
    history_days: float = Field(30.0, gt=0, description="delivered events kept this long")
    personal_grace_hours: float = Field(
        24.0, gt=0, description="delivered events with full ID numbers kept this long"
    )
    audit_days: int = Field(
        MIN_AUDIT_DAYS,
        ge=MIN_AUDIT_DAYS,
        le=36500,
        description="audit log entries kept this long; at least six months (Cybersecurity Law)",
    )
    check_every_s: float = Field(300.0, gt=0, le=86400)


class PlatformSection(_Section):
    keys: list[Path] = Field(
        default_factory=list, description="PEM public keys trusted to sign platform commands"
    )
    encryption_key: Path | None = Field(
        None,
        description="the platform's X25519 public key (PEM, or its 32 bytes in base64) that"
        " personal data is sealed to; without it terminal captures are refused",
    )
    reply_prefix: str | None = Field(
        None,
        min_length=2,
        max_length=200,
        description="MQTT 5 response topics under this prefix get a command's reply too;"
        " absent: replies go to cmd-reply only",
    )

    @field_validator("reply_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(c in value for c in "+#\0") or not value.endswith("/"):
            raise ValueError("must be a topic prefix ending in '/', without + # or NUL")
        if value.startswith(("rentgate/", "$")):
            raise ValueError("must lie outside the gateways' rentgate/ topics and $SYS")
        return value


class ResidenceSection(_Section):
    building: str | None = Field(
        None, min_length=1, max_length=64, description="building id for registration; gateway id"
    )
    local_districts: list[str] = Field(
        default_factory=lambda: list(HANGZHOU_URBAN_DISTRICTS), min_length=1
    )
    check_at: time = time(6, 0)
    """When the daily residence check runs (local time)."""


class Config(_Section):
    gateway: GatewaySection
    mqtt: MqttSection
    api: ApiSection = ApiSection()
    platform: PlatformSection = PlatformSection()
    storage: StorageSection = StorageSection()
    residence: ResidenceSection = ResidenceSection()
    devices: list[Device] = Field(default_factory=list)
    doors: list[DoorSection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> Config:
        problems = []
        door_names = [door.name for door in self.doors]
        if len(set(door_names)) != len(door_names):
            problems.append("doors: door names must be unique")
        reader_names = [device.name for device in self.devices if device.name]
        if len(set(reader_names)) != len(reader_names):
            problems.append("devices: device names must be unique")
        paths = [device.path for device in self.devices if not isinstance(device, OsdpDevice)]
        osdp = [device for device in self.devices if isinstance(device, OsdpDevice)]
        if len(set(paths)) != len(paths) or set(paths) & {device.path for device in osdp}:
            problems.append("devices: two devices share a path (only OSDP readers share a line)")
        lines: dict[Path, list[OsdpDevice]] = {}
        for device in osdp:
            lines.setdefault(device.path, []).append(device)
        for path, readers in lines.items():
            if len({reader.address for reader in readers}) != len(readers):
                problems.append(f"devices: two OSDP readers on {path} share an address")
            if len({reader.baud for reader in readers}) != 1:
                problems.append(f"devices: OSDP readers on {path} disagree on the baud rate")
        for door in self.doors:
            if door.lock == "osdp" and not any(device.door == door.name for device in osdp):
                problems.append(f'doors: {door.name} has lock = "osdp" but no OSDP reader')
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def all_doors(self) -> list[DoorSection]:
        """Declared doors plus, with defaults, any door a device names but no [[doors]] does."""
        declared = {door.name: door for door in self.doors}
        for device in self.devices:
            declared.setdefault(device.door, DoorSection(name=device.door))
        return list(declared.values())

    @property
    def building(self) -> str:
        return self.residence.building or self.gateway.id

    @property
    def web_state_dir(self) -> Path:
        """The web process's own files (TLS key, setup code): `[api] state_dir`, else the
        data dir. A split install gives the web a folder of its own: it may not write in
        the door core's."""
        return self.api.state_dir or self.gateway.data_dir

    def reader_name(self, index: int) -> str:
        device = self.devices[index]
        return device.name or f"{device.door}-{device.kind}-{index}"


def missing_files(config: Config) -> list[str]:
    """Files the config names that cannot be read now (checked at start, not at load).

    Kept apart from validation so a config can be checked on another machine.
    """
    named = {
        "mqtt.ca": config.mqtt.ca,
        "mqtt.cert": config.mqtt.cert,
        "mqtt.key": config.mqtt.key,
        "mqtt.password_file": config.mqtt.password_file,
    }
    named |= {f"platform.keys.{i}": path for i, path in enumerate(config.platform.keys)}
    named |= {"platform.encryption_key": config.platform.encryption_key}
    named |= {"api.cert": config.api.cert, "api.key": config.api.key}
    problems = []
    for key, path in named.items():
        if path is not None and not os.access(path, os.R_OK):
            problems.append(f"{key}: cannot read {path}")
    return problems


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for variable, value in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable:
            continue
        path = variable[len(ENV_PREFIX) :].lower().split("__")
        node: Any = data
        for step, key in enumerate(path[:-1]):
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    problems.append(f"{variable}: no entry {key} in {'.'.join(path[:step])}")
                    break
                node = node[int(key)]
            else:
                node = node.setdefault(key, {})
            if not isinstance(node, dict | list):
                problems.append(f"{variable}: {'.'.join(path[: step + 1])} is not a section")
                break
        else:
            if isinstance(node, dict):
                node[path[-1]] = value
            else:
                problems.append(f"{variable}: cannot set a key on a list")


_DEVICE_KINDS = ("line", "idcard-sam", "osdp")


def _describe(error: Mapping[str, Any]) -> str:
    loc = list(error["loc"])
    if len(loc) > 2 and loc[0] == "devices" and loc[2] in _DEVICE_KINDS:
        del loc[2]  # pydantic names the union member; the file has no such level
    location = ".".join(str(part) for part in loc) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        location += ".kind"
        message = f"must be one of {', '.join(repr(kind) for kind in _DEVICE_KINDS)}"
    return f"{location}: {message}"


def parse_config(
    text: str, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate TOML text (with environment overrides) into a `Config`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from exc
    problems: list[str] = []
    _apply_env(data, os.environ if environ is None else environ, problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
        raise ConfigError(source, problems) from exc
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise `ConfigError` listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    return parse_config(text, str(path), environ)
