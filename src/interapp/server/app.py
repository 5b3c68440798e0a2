"""The ASGI application of one interapp application server.

Routes: RFC 8414 metadata and the JWKS under ``/.well-known``, the OAuth endpoints under
``/oauth``, the account API under ``/v1`` and health checks. Every error leaves as JSON: OAuth
endpoints in the RFC 6749 §5.2 shape, everything else as ``{"error", "message"}``; nothing
unexpected ever shows a stack trace to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interapp import __version__
from interapp.errors import (
    ApiError,
    BadRequest,
    InterappError,
    InvalidActivity,
    InvalidInvite,
    OAuthError,
    PayloadTooLarge,
    RequestTimeout,
    UnavailableError,
    UpgradeRequired,
)
from interapp.server.api import invite_routes, routes, stream
from interapp.server.api.errors import to_http
from interapp.server.api.hotreads import HotReads, PageCache
from interapp.server.api.models import (
    ErrorBody,
    Introspection,
    OAuthErrorBody,
    Revoked,
    TokenResponse,
)
from interapp.server.core import AppServer
from interapp.server.keys import public_jwks
from interapp.server.oauth import provider_routes, rfc7009, rfc7662, rfc8414
from interapp.server.oauth.base import oauth_error_response
from interapp.server.oauth.token import token_endpoint
from interapp.server.observability import (
    ERRORS,
    MetricsMiddleware,
    configure_logging,
    metrics_body,
)
from interapp.server.settings import ServerSettings

log = logging.getLogger("interapp.server")


def is_outage(exc: BaseException) -> bool:
    """A failure of PostgreSQL or Redis: answered 503 + ``Retry-After`` even when it escapes
    the mapping of the code that called the service.

    Redis's exceptions are only looked at when its client was imported: a server without
    ``--redis`` never imports it (about 6 MB of memory less).
    """
    if isinstance(exc, OperationalError):
        return True
    redis_errors = sys.modules.get("redis.exceptions")
    return redis_errors is not None and isinstance(
        exc, (redis_errors.ConnectionError, redis_errors.TimeoutError))


def _error(exc: InterappError) -> JSONResponse:
    exc = to_http(exc)
    ERRORS.labels(exc.code).inc()
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="interapp"'
    if isinstance(exc, UpgradeRequired):  # RFC 9110 §15.5.22: say which protocol to upgrade to
        headers["Upgrade"], headers["Connection"] = "websocket", "Upgrade"
    if isinstance(exc, OAuthError):
        return oauth_error_response(exc)
    body = exc.to_wire() if isinstance(exc, ApiError) else {"error": exc.code,
                                                            "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            pos = err.get("loc", ("body", "?"))[-1]
            why = (err.get("ctx") or {}).get("error", "invalid")
            return f"the body is not valid JSON: {why} at character {pos}"
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _validation_error(path: str, exc: RequestValidationError) -> ApiError:
    """The error for a refused body: a bad activity is ``invalid_activity`` and a bad invite
    ``invalid_invite`` (rich presence), anything else ``bad_request``."""
    message = _validation_message(exc)
    locs = [tuple(err.get("loc", ())) for err in exc.errors()]
    if any(loc[:2] == ("body", "activity") for loc in locs):
        return InvalidActivity(message)
    if path.startswith("/v1/invites") and not any(
            err.get("type") == "json_invalid" for err in exc.errors()):
        return InvalidInvite(message)
    return BadRequest(message)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, by header and while streaming,
    and bodies that take more than ``timeout`` seconds to arrive with 408.

    The body is read (at most ``limit`` bytes of it) before the app runs, so a chunked body that
    grows past the limit is answered 413 here rather than failing somewhere inside the app, and
    a client trickling its body in cannot hold a request open for ever. URLs carrying a NUL
    character (``%00``) are refused with 400 too: no stored text may contain one (PostgreSQL
    cannot store it), so they could never name anything.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float = 30.0) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _error(BadRequest("the URL contains a NUL character (%00)"))(
                scope, receive, send)
            return
        declared = False  # a body is coming (without one the read below returns at once)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _error(PayloadTooLarge(f"request body over {self.limit} bytes"))(
                        scope, receive, send)
                    return
                declared = declared or value.strip(b"0") != b""
            elif name == b"transfer-encoding":
                declared = True
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout if declared else None):
                if not await self._read(receive, chunks):
                    return  # the client went away
        except TimeoutError:
            await _error(RequestTimeout(f"the request body did not arrive within "
                                        f"{self.timeout:g} s"))(scope, receive, send)
            return
        except PayloadTooLarge as exc:
            await _error(exc)(scope, receive, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, chunks: list[bytes]) -> bool:
        """The whole body into ``chunks``; False when the client left first."""
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return False
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                raise PayloadTooLarge(f"request body over {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return True


_FORM_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {
        "type": "string"}}}}}}
_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: {"model": OAuthErrorBody} for code in (400, 401, 429)},
    # Refused before the OAuth layer (body limit or timeout) or by an outage: the general shape.
    408: {"model": ErrorBody}, 413: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def create_app(settings: ServerSettings, server: AppServer | None = None) -> FastAPI:
    """Build the ASGI app; the AppServer is started and stopped by the lifespan."""
    srv = server or AppServer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await srv.start()
        try:
            yield
        finally:
            await srv.stop()

    app = FastAPI(title=f"interapp application server ({settings.app})", version=__version__,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = srv

    @app.exception_handler(InterappError)
    async def _interapp(_: Request, exc: InterappError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(_validation_error(request.url.path, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": code, "message": str(exc.detail)},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if is_outage(exc):  # a backing service that escaped its own mapping
            log.warning("backing service unavailable: %s", type(exc).__name__)
            return _error(UnavailableError(f"service unavailable: {type(exc).__name__}",
                                           retry_after=1))
        log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse({"error": "internal_error", "message": "internal server error"},
                            status_code=500)

    @app.get("/.well-known/oauth-authorization-server", tags=["discovery"])
    async def metadata() -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return rfc8414.metadata(srv.issuer)

    @app.get("/.well-known/jwks.json", tags=["discovery"])
    async def jwks() -> dict[str, Any]:
        """The public keys that sign this application's assertions."""
        return public_jwks(await srv.signing_key(), await srv.rsa_signing_key())

    @app.post("/oauth/token", tags=["oauth"], response_model=TokenResponse,
              responses=_OAUTH_ERRORS, openapi_extra=_FORM_BODY)
    async def token(request: Request) -> Response:
        """RFC 6749 token endpoint: every grant of the one grant table (oauth/grants.py)."""
        return await token_endpoint(request)

    @app.post("/oauth/revoke", tags=["oauth"], responses={200: {"model": Revoked},
                                                          **_OAUTH_ERRORS},
              openapi_extra=_FORM_BODY)
    async def revoke(request: Request) -> Response:
        """RFC 7009 token revocation."""
        return await rfc7009.revoke_endpoint(request)

    @app.post("/oauth/introspect", tags=["oauth"],
              responses={200: {"model": Introspection}, **_OAUTH_ERRORS},
              openapi_extra=_FORM_BODY)
    async def introspect(request: Request) -> Response:
        """RFC 7662 token introspection."""
        return await rfc7662.introspect_endpoint(request)

    @app.get("/healthz", tags=["ops"])
    async def healthz(response: Response) -> dict[str, str]:
        """Liveness: the process answers (``X-Interapp-Worker`` tells which worker did)."""
        response.headers["X-Interapp-Worker"] = str(os.getpid())
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics (aggregated over all workers of this server)."""
        body, content_type = metrics_body()
        return Response(body, media_type=content_type)

    @app.get("/readyz", tags=["ops"], responses={503: {"model": ErrorBody}})
    async def readyz() -> dict[str, str]:
        """Readiness: the database answers."""
        import sqlalchemy as sa

        async with srv.db.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return {"status": "ready"}

    @app.get("/v1/events", include_in_schema=False)  # documented by _finish_openapi
    async def events_without_upgrade() -> Response:
        """``/v1/events`` without a WebSocket upgrade (the stream itself never gets here)."""
        raise UpgradeRequired("/v1/events is a WebSocket: connect with Upgrade: websocket")

    app.include_router(routes.router, tags=["v1"])
    app.include_router(invite_routes.router, tags=["v1"])
    app.include_router(provider_routes.router)  # authorize, device grant, OpenID Connect
    app.openapi_schema = None
    _finish_openapi(app)
    app.state.hot_reads = PageCache()
    # inside the body limit and the metrics, in front of FastAPI: see api.hotreads
    app.add_middleware(HotReads, cache=app.state.hot_reads)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(stream.EventStreamRoute)  # outermost: streams skip the HTTP layers
    return app


def _finish_openapi(app: FastAPI) -> None:
    """Make ``/openapi.json`` say what the server really does.

    ``/v1/events`` is served in front of FastAPI (``stream.EventStreamRoute``), so it is
    described by hand; and the 422 responses FastAPI adds for request validation are dropped,
    since this server answers those with 400 and the ``/v1`` error body.
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        for item in schema["paths"].values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        schema["paths"]["/v1/events"] = {"get": {
            "tags": ["v1"], "summary": "Event stream (WebSocket)",
            "description": stream.__doc__ or "",
            "parameters": [
                {"name": "since", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "ticket", "in": "query", "required": False,
                 "schema": {"type": "string"}}],
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol; "
                                       "each frame is one JSON event with a seq."},
                "426": {"description": "Upgrade Required: a request without a WebSocket "
                                       "upgrade (error upgrade_required).",
                        "headers": {"Upgrade": {"schema": {"type": "string",
                                                           "enum": ["websocket"]}}},
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/ErrorBody"}}}}}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


SETTINGS_ENV = "INTERAPP_SERVE_SETTINGS"


def app_from_env() -> FastAPI:
    """ASGI factory for ``--workers N``: each worker builds its app from the parent's settings."""
    import dataclasses
    import json
    import os

    data = json.loads(os.environ[SETTINGS_ENV])
    level, _, fmt = os.environ.get("INTERAPP_LOG", "warning:json").partition(":")
    configure_logging(level, fmt)  # workers are fresh processes: set their logging up too
    names = {f.name for f in dataclasses.fields(ServerSettings)}
    try:
        return create_app(ServerSettings(**{k: v for k, v in data.items() if k in names}))
    except UnavailableError as exc:
        # e.g. PostgreSQL is down while uvicorn replaces a dead worker: one log line, and exit
        # code 1 (not uvicorn's 3, which would stop every worker), so the supervisor tries again
        log.error("worker cannot start: %s", exc.message)
        raise SystemExit(1) from None
