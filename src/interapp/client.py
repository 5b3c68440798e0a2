"""HTTP client for an interapp application server: OAuth grants and the ``/v1`` API.

Used by the ``interapp`` plug-in (talking to opposite applications) and by the host (talking to
its local application). Wire errors become :mod:`interapp.errors` classes through the shared
registry (``errors.from_wire``); network failures become :class:`ConnectionLost`.
"""

from __future__ import annotations

import functools
import ssl
import time
from typing import Any

import httpx

from interapp.errors import (
    ConnectionLost,
    InterappError,
    InvalidClient,
    from_wire,
)
from interapp.secret import Secret

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one (and loading the CA bundle) per
    client cost ~25 ms per target when a host starts a thousand of them."""
    return ssl.create_default_context()


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class ServerClient:
    """One interapp server, seen by one OAuth client."""

    def __init__(self, base_url: str, *, client_id: str | None, client_secret: Secret | None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                      verify=_tls_context())
        self.access_token: Secret | None = None

    def __repr__(self) -> str:
        return f"ServerClient({self.base_url!r}, client_id={self.client_id!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConnectionLost(f"cannot reach {self.base_url}: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise from_wire(resp.status_code, body, _retry_after(resp))
        return resp

    # --- OAuth -------------------------------------------------------------------------------

    def _client_auth(self, form: dict[str, str]) -> httpx.BasicAuth | None:
        if not self.client_id:
            raise InvalidClient("no client_id configured for this server")
        if self._client_secret is not None:
            return httpx.BasicAuth(self.client_id, self._client_secret.reveal())
        form["client_id"] = self.client_id
        return None

    async def token(self, **params: str) -> dict[str, Any]:
        """POST /oauth/token with client authentication; returns the JSON body."""
        form = dict(params)
        auth = self._client_auth(form)
        resp = await self._request("POST", "/oauth/token", data=form, auth=auth)
        body: dict[str, Any] = resp.json()
        if "expires_in" in body:
            body["expires_at"] = time.time() + float(body["expires_in"])
        return body

    async def password_grant(self, username: str, password: Secret) -> dict[str, Any]:
        """RFC 6749 §4.3."""
        return await self.token(grant_type="password", username=username,
                                password=password.reveal())

    async def refresh_grant(self, refresh_token: Secret, *,
                            idempotency_key: str | None = None) -> dict[str, Any]:
        """RFC 6749 §6 (the server rotates the refresh token).

        ``idempotency_key`` (an interapp extension) makes a retried refresh return the same new
        pair instead of counting as re-use.
        """
        extra = {"idempotency_key": idempotency_key} if idempotency_key else {}
        return await self.token(grant_type="refresh_token", refresh_token=refresh_token.reveal(),
                                **extra)

    async def jwt_bearer_grant(self, assertion: Secret) -> dict[str, Any]:
        """RFC 7523 §2.1."""
        return await self.token(grant_type=JWT_BEARER, assertion=assertion.reveal())

    async def exchange_for_assertion(self, access_token: Secret, audience: str) -> Secret:
        """RFC 8693: trade this server's access token for an assertion addressed to ``audience``."""
        body = await self.token(grant_type=TOKEN_EXCHANGE, subject_token=access_token.reveal(),
                                subject_token_type=ACCESS_TOKEN_TYPE,
                                requested_token_type=JWT_TOKEN_TYPE, audience=audience)
        return Secret(str(body["access_token"]))

    async def code_grant(self, code: Secret, *, code_verifier: Secret,
                         redirect_uri: str) -> dict[str, Any]:
        """RFC 6749 §4.1.3 with the RFC 7636 ``code_verifier``."""
        return await self.token(grant_type="authorization_code", code=code.reveal(),
                                code_verifier=code_verifier.reveal(), redirect_uri=redirect_uri)

    async def device_authorization(self, scope: str) -> dict[str, Any]:
        """RFC 8628 §3.1: start a device authorization (client authenticated)."""
        form = {"scope": scope} if scope else {}
        auth = self._client_auth(form)
        resp = await self._request("POST", "/oauth/device_authorization", data=form, auth=auth)
        body: dict[str, Any] = resp.json()
        return body

    async def device_grant(self, device_code: Secret) -> dict[str, Any]:
        """RFC 8628 §3.4: one poll (``authorization_pending`` … are raised as errors)."""
        return await self.token(grant_type=DEVICE_CODE, device_code=device_code.reveal())

    async def revoke(self, token: Secret, hint: str = "refresh_token") -> None:
        """RFC 7009."""
        form = {"token": token.reveal(), "token_type_hint": hint}
        auth = self._client_auth(form)
        await self._request("POST", "/oauth/revoke", data=form, auth=auth)

    async def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata (gives the issuer identifier)."""
        body: dict[str, Any] = (await self._request(
            "GET", "/.well-known/oauth-authorization-server")).json()
        return body

    # --- /v1 ---------------------------------------------------------------------------------

    def _bearer(self) -> dict[str, str]:
        if self.access_token is None:
            raise InterappError("not logged in to this server")
        return {"Authorization": f"Bearer {self.access_token.reveal()}"}

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/v1…`` with the bearer token; JSON body or None (204)."""
        resp = await self._request(method, path, headers=self._bearer(), **kwargs)
        return None if resp.status_code == 204 else resp.json()

    def events_url(self, since: str | None) -> str:
        """The WebSocket URL of the event stream."""
        ws = "wss" + self.base_url[5:] if self.base_url.startswith("https") else \
            "ws" + self.base_url[4:]
        return f"{ws}/v1/events" + (f"?since={since}" if since is not None else "")

    def bearer_header(self) -> dict[str, str]:
        """The Authorization header (for the WebSocket handshake)."""
        return self._bearer()
