"""The gateway's FastAPI application: one error shape, every refusal counted.

Routers for the web UI and REST join the terminal's in `gateway.runtime.web`.
Every response carries the security headers of `gateway.api.headers`.
Whatever the API refuses is counted by reason in `app.state.refused` (exported
as `rentgate_api_refused`), so bad requests show up in metrics, not only logs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi import HTTPException as FastApiHTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gateway import __version__
from gateway.api.directory import STATUS, DirectoryError
from gateway.api.forwarded import ForwardedFor, Network
from gateway.api.headers import SecurityHeaders
from gateway.api.terminal_api import RecordSink, TerminalApiStats, TokenVerifier, terminal_router


def create_api(
    intake: RecordSink,
    terminals: TokenVerifier,
    *,
    stats: TerminalApiStats | None = None,
    trusted_proxies: Iterable[Network] = (),
) -> FastAPI:
    """The API app. What the terminal endpoints refused is counted in `app.state.terminal_stats`;
    `X-Forwarded-For` is believed only from `trusted_proxies` (`gateway.api.forwarded`)."""
    app = FastAPI(
        title="Rentgate gateway API",
        version=__version__,
        openapi_url=None,  # served behind a login by `gateway.api.schema`
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ForwardedFor, trusted=tuple(trusted_proxies))
    app.state.terminal_stats = stats if stats is not None else TerminalApiStats()
    app.state.refused = Counter[str]()
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _refused)
    app.add_exception_handler(DirectoryError, _directory_refused)
    app.include_router(terminal_router(intake, terminals, app.state.terminal_stats))
    return app


async def _refused(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer to an HTTPException, counted by the reason in its detail."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    reason = detail.get("error") if isinstance(detail, dict) else None
    if exc.status_code >= 400:
        request.app.state.refused[str(reason or exc.status_code)] += 1
    return await http_exception_handler(request, exc)


async def _directory_refused(request: Request, exc: Exception) -> Response:
    """What the services refused (not found or not yours, conflict, store down), as HTTP."""
    assert isinstance(exc, DirectoryError)
    detail = {"error": exc.problem.value, "message": exc.message}
    status = STATUS[exc.problem]
    headers = {"Retry-After": "5"} if status == 503 else None
    return await _refused(request, FastApiHTTPException(status, detail, headers))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 in the API's one error shape, naming where and what, never echoing the input
    (it may be an ID number)."""
    errors = []
    if isinstance(exc, RequestValidationError):
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()))
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            errors.append(f"{where}: {message}")
    request.app.state.refused["bad_request"] += 1
    detail = {"error": "bad_request", "message": "the request is not valid", "errors": errors}
    return JSONResponse({"detail": detail}, status_code=422)
