"""Sending the queue to the gateway over HTTPS, in batches, resuming where it stopped.

The gateway's certificate is verified against the CA file of the terminal's
config (never skipped); the terminal authenticates with its own bearer token.
Records leave the queue's `pending` state only when the gateway's reply names
them `stored` or `duplicate` (or `rejected`, with its reason): a sync cut off at
any point leaves the rest pending, and the next one starts from there. Every
failure is a `SyncError` with a `SyncFailure` reason and a message a
co-ordinator can act on; nothing is lost by one.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import RentgateError
from terminal.queue import Delivered, Queue

RECORDS_PATH = "/api/v1/terminal/records"
PING_PATH = "/api/v1/terminal/ping"
MAX_BATCH = 100
"""The gateway's limit per request."""

Progress = Callable[[int, int], None]
"""Called with (records done, records to do) after every batch."""


class SyncFailure(StrEnum):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    TLS = "tls"
    UNAUTHORIZED = "unauthorized"
    WRONG_TERMINAL = "wrong_terminal"
    GATEWAY_BUSY = "gateway_busy"
    GATEWAY_ERROR = "gateway_error"
    PROTOCOL = "protocol"


class SyncError(RentgateError):
    def __init__(self, reason: SyncFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    url: str
    """https://host:port of the gateway."""
    token: str
    ca_file: Path
    timeout_s: float = 30.0


@dataclass
class SyncReport:
    """What one sync did."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_reasons: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.stored + self.duplicates


@dataclass(frozen=True, slots=True)
class BatchReply:
    delivered: dict[str, Delivered]
    rejected: dict[str, str]


class GatewayClient:
    """The gateway's terminal API, its failures mapped to `SyncError` in one place."""

    def __init__(
        self, settings: GatewaySettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._url = settings.url.rstrip("/")
        try:
            context = ssl.create_default_context(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise SyncError(
                SyncFailure.TLS, f"cannot use the CA file {settings.ca_file}: {exc}"
            ) from exc
        self._client = httpx.Client(
            base_url=self._url,
            verify=context,
            transport=transport,
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s)),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def ping(self) -> str:
        """The terminal id the gateway knows this token by."""
        response = self._request("GET", PING_PATH)
        self._refuse_errors(response, accept=(200,))
        terminal = _json(response).get("terminal")
        if not isinstance(terminal, str):
            raise SyncError(SyncFailure.PROTOCOL, "the gateway's ping reply names no terminal")
        return terminal

    def send(self, batch: Sequence[tuple[str, str]]) -> BatchReply:
        """POST records (id, JSON) and read which the gateway has and which it refused."""
        body = '{"records":[' + ",".join(payload for _, payload in batch) + "]}"
        response = self._request(
            "POST",
            RECORDS_PATH,
            content=body.encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        self._refuse_errors(response, accept=(200, 422))
        results = _json(response).get("results")
        if not isinstance(results, list):
            # A 422 for the whole batch (not a batch, too many records): a terminal bug.
            raise SyncError(
                SyncFailure.PROTOCOL, f"the gateway refused the batch: {_why(response)}"
            )
        delivered: dict[str, Delivered] = {}
        rejected: dict[str, str] = {}
        for index, (record_id, _payload) in enumerate(batch):
            result = results[index] if index < len(results) else None
            if not isinstance(result, dict) or result.get("record_id") != record_id:
                continue  # not answered for: stays pending
            outcome = result.get("outcome")
            if outcome in ("stored", "duplicate"):
                seq = result.get("seq")
                delivered[record_id] = Delivered(outcome, seq if isinstance(seq, int) else None)
            elif outcome == "rejected":
                errors = result.get("errors") or []
                rejected[record_id] = f"{result.get('reason')}: " + "; ".join(map(str, errors))
        return BatchReply(delivered, rejected)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise SyncError(
                SyncFailure.TIMEOUT, f"the gateway at {self._url} did not answer in time"
            ) from exc
        except httpx.TransportError as exc:
            tls = _ssl_cause(exc)
            if tls is not None:
                raise SyncError(
                    SyncFailure.TLS,
                    f"the gateway at {self._url} could not be verified ({tls}):"
                    " check the CA file and the gateway address",
                ) from exc
            raise SyncError(
                SyncFailure.UNREACHABLE, f"the gateway at {self._url} is unreachable ({exc})"
            ) from exc

    def _refuse_errors(self, response: httpx.Response, accept: tuple[int, ...]) -> None:
        status = response.status_code
        if status in accept:
            return
        if status == 401:
            raise SyncError(
                SyncFailure.UNAUTHORIZED,
                f"the gateway refused this terminal's token ({_why(response)}):"
                " ask for a new token and run `rentgate-terminal init` again",
            )
        if status == 503:
            raise SyncError(
                SyncFailure.GATEWAY_BUSY,
                f"the gateway cannot store records now ({_why(response)}): try again later",
            )
        failure = SyncFailure.GATEWAY_ERROR if status >= 500 else SyncFailure.PROTOCOL
        raise SyncError(failure, f"the gateway answered {status}: {_why(response)}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError as exc:
        raise SyncError(SyncFailure.PROTOCOL, "the gateway's reply is not JSON") from exc
    if not isinstance(document, dict):
        raise SyncError(SyncFailure.PROTOCOL, "the gateway's reply is not a JSON object")
    return document


def _why(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return response.reason_phrase or str(response.status_code)
    if isinstance(document, dict) and "error" in document:
        return f"{document['error']}: {document.get('detail', '')}".rstrip(": ")
    return json.dumps(document)[:200]


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def sync(
    queue: Queue,
    client: GatewayClient,
    *,
    terminal: str,
    now: Callable[[], datetime],
    batch_size: int = MAX_BATCH,
    progress: Progress | None = None,
) -> SyncReport:
    """Send every pending record, oldest first; raises SyncError with the rest kept pending."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}")
    known_as = client.ping()
    if known_as != terminal:
        raise SyncError(
            SyncFailure.WRONG_TERMINAL,
            f"the token belongs to terminal {known_as!r}, this terminal is {terminal!r}:"
            " run `rentgate-terminal init` with this terminal's token",
        )
    report = SyncReport()
    done = 0
    total = queue.pending_count()
    if progress is not None:
        progress(done, total)
    while batch := queue.next_batch(batch_size):
        reply = client.send(batch)
        changed = queue.mark(reply.delivered, reply.rejected, now())
        if changed == 0:
            raise SyncError(
                SyncFailure.PROTOCOL, "the gateway's reply accounted for none of the records sent"
            )
        report.stored += sum(d.outcome == "stored" for d in reply.delivered.values())
        report.duplicates += sum(d.outcome == "duplicate" for d in reply.delivered.values())
        report.rejected += len(reply.rejected)
        report.rejected_reasons += reply.rejected.values()
        done += changed
        total = max(total, done + queue.pending_count())
        if progress is not None:
            progress(done, total)
    return report
