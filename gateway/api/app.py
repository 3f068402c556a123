"""The gateway's FastAPI application; routers for the web UI join the terminal's here."""

from __future__ import annotations

from fastapi import FastAPI

from gateway import __version__
from gateway.api.terminal import RecordSink, TerminalApiStats, TokenVerifier, terminal_router


def create_api(
    intake: RecordSink, terminals: TokenVerifier, *, stats: TerminalApiStats | None = None
) -> FastAPI:
    """The API app. What the terminal endpoints refused is counted in `app.state.terminal_stats`."""
    app = FastAPI(
        title="Rentgate gateway API", version=__version__, openapi_url="/api/openapi.json"
    )
    app.state.terminal_stats = stats if stats is not None else TerminalApiStats()
    app.include_router(terminal_router(intake, terminals, app.state.terminal_stats))
    return app
