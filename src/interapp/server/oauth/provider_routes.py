"""The routes of the authorization server side: authorization endpoint, device grant, OIDC.

``GET``/``POST /oauth/authorize`` (:mod:`.authorize`), ``POST /oauth/device_authorization`` and
``GET``/``POST /device`` (:mod:`.rfc8628`), ``GET``/``POST /oauth/userinfo`` and
``/.well-known/openid-configuration`` (:mod:`.oidc`), and the pages' stylesheet. The pages are
HTML; everything else answers JSON in the RFC 6749 §5.2 shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from interapp.server.api.models import ErrorBody, OAuthErrorBody
from interapp.server.core import AppServer
from interapp.server.oauth import oidc, rfc8414, rfc8628

# The pages (authorize, device_page, pages: Jinja2 and the templates, ~2 MB) are imported by
# the first request that needs one: a server nobody signs in to through a browser never does.

router = APIRouter()

_FORM = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {
        "type": "string"}}}}}}
_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_PAGE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "A sign-in, consent or device page", **_HTML},
    400: {"description": "An error page (unknown client, redirect URI not registered, bad "
                         "form, invalid user code)", **_HTML},
    401: {"description": "The sign-in page again: invalid username or password", **_HTML},
    429: {"description": "The sign-in page again: too many failed sign-ins", **_HTML},
    413: {"model": ErrorBody}, 503: {"model": ErrorBody}}
_REDIRECTS: dict[int | str, dict[str, Any]] = {
    302: {"description": "Back to the client's redirect URI with an error, state and iss"},
    303: {"description": "Back to the client's redirect URI with code (or error), state "
                         "and iss"}}
_OAUTH: dict[int | str, dict[str, Any]] = {
    **{code: {"model": OAuthErrorBody} for code in (400, 401)},
    413: {"model": ErrorBody}, 503: {"model": ErrorBody}}


class DeviceAuthorization(BaseModel):
    """RFC 8628 §3.2."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class UserInfo(BaseModel):
    """OIDC Core §5.3.2 (``preferred_username`` and ``name`` with the ``profile`` scope)."""

    sub: str
    preferred_username: str | None = None
    name: str | None = None


def _srv(request: Request) -> AppServer:
    srv: AppServer = request.app.state.server
    return srv


@router.get("/.well-known/openid-configuration", tags=["discovery"])
async def openid_configuration(request: Request) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 provider metadata."""
    issuer = _srv(request).issuer
    return oidc.discovery(issuer, rfc8414.metadata(issuer))


@router.get("/oauth/authorize", tags=["oauth"], response_class=HTMLResponse,
            responses={**_PAGE_ANSWERS, 302: _REDIRECTS[302]})
async def authorize_get(request: Request) -> Response:
    """RFC 6749 §4.1.1 authorization request (code + PKCE S256): the sign-in/consent page."""
    from interapp.server.oauth import authorize

    return await authorize.authorize_endpoint(request)


@router.post("/oauth/authorize", tags=["oauth"], response_class=HTMLResponse,
             responses={**_PAGE_ANSWERS, **_REDIRECTS}, openapi_extra=_FORM)
async def authorize_post(request: Request) -> Response:
    """The same request as a form, and the sign-in and consent pages' own posts."""
    from interapp.server.oauth import authorize

    return await authorize.authorize_endpoint(request)


@router.post("/oauth/device_authorization", tags=["oauth"], response_model=DeviceAuthorization,
             responses=_OAUTH, openapi_extra=_FORM)
async def device_authorization(request: Request) -> Response:
    """RFC 8628 §3.1 device authorization request."""
    return await rfc8628.device_authorization_endpoint(request)


@router.get("/device", tags=["oauth"], response_class=HTMLResponse, responses=_PAGE_ANSWERS)
async def device_get(request: Request) -> Response:
    """RFC 8628 §3.3: the page where the user types the code."""
    from interapp.server.oauth import device_page

    return await device_page.device_page(request)


@router.post("/device", tags=["oauth"], response_class=HTMLResponse, responses=_PAGE_ANSWERS,
             openapi_extra=_FORM)
async def device_post(request: Request) -> Response:
    """The device page's own posts: the code, the sign-in, the decision."""
    from interapp.server.oauth import device_page

    return await device_page.device_page(request)


_USERINFO: dict[int | str, dict[str, Any]] = {
    **{code: {"model": OAuthErrorBody} for code in (401, 403)}, 503: {"model": ErrorBody}}


@router.get("/oauth/userinfo", tags=["oauth"], response_model=UserInfo, responses=_USERINFO)
async def userinfo_get(request: Request) -> Response:
    """OIDC Core §5.3 UserInfo (Bearer access token with ``openid``)."""
    return await oidc.userinfo_endpoint(request)


@router.post("/oauth/userinfo", tags=["oauth"], response_model=UserInfo, responses=_USERINFO)
async def userinfo_post(request: Request) -> Response:
    """UserInfo by POST (OIDC Core §5.3.1)."""
    return await oidc.userinfo_endpoint(request)


@router.get("/oauth/pages.css", tags=["oauth"],
            responses={200: {"content": {"text/css": {"schema": {"type": "string"}}}}})
async def stylesheet() -> Response:
    """The stylesheet of the sign-in, consent and device pages."""
    from interapp.server.oauth import pages

    return pages.stylesheet()
