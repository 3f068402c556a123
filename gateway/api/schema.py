"""The API's OpenAPI document, for logged-in people only, and no Swagger UI.

FastAPI's defaults served `/docs` (Swagger UI, whose scripts come from a CDN)
and the document to anyone. Here the document is served at
`/api/openapi.json` to any logged-in person (admin, landlord or
co-ordinator): it describes the REST API each of them may script against and
holds no data, while anonymous callers no longer get a map of the gateway.
Swagger UI is dropped rather than served locally: it would need an inline
script the pages' Content-Security-Policy forbids and one more package to
keep patched on a box in a basement; any OpenAPI tool reads the document.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.api.accounts import Accounts
from gateway.api.auth import Principal, Role
from gateway.api.security import require

SCHEMA_PATH = "/api/openapi.json"


def schema_router(accounts: Accounts) -> APIRouter:
    """`GET /api/openapi.json` behind a login."""
    router = APIRouter(include_in_schema=False)
    Anyone = Annotated[
        Principal, Depends(require(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]

    @router.get(SCHEMA_PATH)
    async def openapi_document(request: Request, _principal: Anyone) -> JSONResponse:
        document: dict[str, Any] = request.app.openapi()
        return JSONResponse(document)

    return router
