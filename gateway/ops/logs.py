"""Logging for machines and for people: one event per line, ID numbers never in clear.

`json` writes one JSON object per line (`ts`, `level`, `logger`, `msg`, the
record's `extra` fields, `exc` for a traceback) for journald or a log shipper;
`text` is the classic line for a person at a terminal. Whatever a caller
wrote, anything shaped like an 18-character ID number is masked in the
finished line (first 3 and last 4 kept): a safety net under the rule that
personal data is masked where it is logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime
from typing import Literal, TextIO

from gateway.domain.ids import mask

LogFormat = Literal["json", "text"]
FORMATS: tuple[LogFormat, ...] = ("json", "text")

ID_NUMBER = re.compile(r"(?<!\d)\d{17}[\dXx\uff38\uff58](?!\d)")
"""18 characters as an ID number is written: `\\d` takes full-width digits too, as input
methods type them, and so the check character may be a full-width X."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
"""Attributes every record has; anything else on a record came from `extra=`."""


def mask_id_numbers(text: str) -> str:
    """`text` with every ID-number-shaped run masked."""
    return ID_NUMBER.sub(lambda match: mask(match.group()), text)


class MaskingTextFormatter(logging.Formatter):
    """The text format, masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_id_numbers(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, masked."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created)
            .astimezone()
            .isoformat("T", "milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in document:
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(document, ensure_ascii=False, default=str)
        return mask_id_numbers(line)  # json.dumps escapes newlines: one line, always


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not when it was made:
    a redirected or replaced stderr (tests capturing output, a daemon reopening it)
    never leaves the handler writing to a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        return None


def configure_logging(
    fmt: LogFormat = "json", level: str | int = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to `stream` (stderr by default) in `fmt`, at `level` and above.

    Replaces the handler an earlier call installed, and leaves others alone.
    Raises ValueError for an unknown format or level.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else MaskingTextFormatter(TEXT_FORMAT))
    handler.set_name(__name__)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == __name__]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
