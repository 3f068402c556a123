"""The terminal's home: a small TOML config, its key file and its queue.

The config holds the terminal id, the gateway's https URL, the terminal's token
and the CA file that vouches for the gateway. It holds a secret (the token), so
it is written readable by its owner only, atomically (a crash leaves the old
file or the new one, never half of one).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.domain.capture import TerminalId
from gateway.errors import RentgateError

CONFIG_NAME = "terminal.toml"
KEY_NAME = "terminal.key"
QUEUE_NAME = "queue.db"
HOME_ENV = "RENTGATE_TERMINAL_HOME"


class TerminalConfigError(RentgateError):
    """The config is missing or wrong; the message says which key and what to do."""


class TerminalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal: TerminalId
    gateway_url: Annotated[str, Field(min_length=9, max_length=512)]
    token: Annotated[str, Field(min_length=3, max_length=256)]
    ca_file: Path

    @field_validator("gateway_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://") or any(c.isspace() for c in value):
            raise ValueError("the gateway URL must start with https:// (records carry ID numbers)")
        return value.rstrip("/")

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not value.isprintable() or " " in value:
            raise ValueError("the token must be one word of printable characters")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"CA file {value} does not exist")
        return value.resolve()


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".rentgate-terminal")


def load(home: Path) -> TerminalConfig:
    path = home / CONFIG_NAME
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TerminalConfigError(
            f"this terminal is not set up ({path} is missing): run `rentgate-terminal init"
            " --terminal ID --gateway https://HOST:PORT --token TOKEN --ca CA.pem` first"
        ) from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TerminalConfigError(f"{path} cannot be read: {exc}") from exc
    terminal = document.get("terminal", {})
    gateway = document.get("gateway", {})
    try:
        return TerminalConfig(
            terminal=terminal.get("id"),
            gateway_url=gateway.get("url"),
            token=gateway.get("token"),
            ca_file=gateway.get("ca"),
        )
    except (ValidationError, AttributeError) as exc:
        raise TerminalConfigError(f"{path}: {describe(exc)}") from exc


def describe(exc: Exception) -> str:
    """Every problem of a validation error, one per clause, without the input."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in exc.errors(include_input=False, include_url=False)
    )


def save(home: Path, config: TerminalConfig) -> Path:
    """Write the config (mode 0600) atomically."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_NAME
    text = (
        "[terminal]\n"
        f"id = {json.dumps(config.terminal)}\n\n"
        "[gateway]\n"
        f"url = {json.dumps(config.gateway_url)}\n"
        f"token = {json.dumps(config.token)}\n"
        f"ca = {json.dumps(str(config.ca_file))}\n"
    )
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path
