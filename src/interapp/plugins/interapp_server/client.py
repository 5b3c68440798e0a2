"""The ``interapp`` plug-in's implementation (httpx for HTTP, websockets for events).

Credential kept in the vault: ``oauth_tokens`` = access token, rotating refresh token and the
access token's expiry. The password the user typed is used once, for the password grant, and
never stored.

Link ways (see :mod:`interapp.plugins.linkways`): whichever of the three the server's RFC 8414
metadata offers — *browser* (``authorization_endpoint`` with ``response_type=code`` and PKCE
``S256``; the sign-in URL asks for scope ``interapp`` with a fresh S256 challenge; the answer's
``iss`` is required when the server says it sends it, RFC 9207), *device*
(``device_authorization_endpoint`` and the device_code grant) and *password* (the password
grant). The host's client at the server needs the matching grants and, for the browser, the
redirect URI ``http://127.0.0.1/callback`` (any port matches, RFC 8252 §7.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from interapp.client import DEVICE_CODE, ServerClient
from interapp.errors import (
    ConfigError,
    ConnectionLost,
    CursorUnknown,
    InterappError,
    InvalidClient,
    InvalidGrant,
    NeedsReauth,
    OAuthError,
    SlowDown,
    Unauthorized,
    UnauthorizedClient,
    from_wire,
)
from interapp.plugins.contract import (
    EVENT_INVITE,
    EVENT_INVITE_ANSWER,
    Activity,
    BrowserStart,
    Buddy,
    ChatMessage,
    Credential,
    DeviceStart,
    Invite,
    LinkWay,
    Login,
    Plugin,
    PluginEvent,
    PresenceState,
    Profile,
)
from interapp.plugins.interapp_server import PLUGIN
from interapp.plugins.interapp_server.streamsend import StreamSends
from interapp.plugins.linkways import pkce_pair
from interapp.presence import activity_from_json
from interapp.secret import Secret

KIND = "oauth_tokens"
LINK_SCOPE = "interapp"
REFRESH_MARGIN = 30.0
INBOX_SIZE = 1000  # frames read ahead of the consumer; then reading (and answering) waits


def _credential(body: Mapping[str, Any]) -> Credential:
    return Credential(kind=KIND, fields={
        "access_token": str(body["access_token"]),
        "refresh_token": str(body.get("refresh_token", "")),
        "expires_at": f"{float(body.get('expires_at', time.time() + 900)):.3f}"})


def _profile(data: Mapping[str, Any]) -> Profile:
    return Profile(id=str(data["id"]), username=str(data["username"]),
                   display_name=str(data["display_name"]), presence=str(data["presence"]),
                   status_text=str(data["status_text"]))


def _activity(value: Any) -> Activity | None:
    """A buddy's activity as the server sent it; one this version cannot read is none."""
    try:
        return activity_from_json(value, strict=False)
    except InterappError:
        return None


def _buddy(data: Mapping[str, Any]) -> Buddy:
    return Buddy(**_profile(data).__dict__, activity=_activity(data.get("activity")))


def _message(m: Mapping[str, Any]) -> ChatMessage:
    return ChatMessage(id=str(m["message_id"]), sender=str(m["from"]), recipient=str(m["to"]),
                       body=str(m["body"]), sent_at=str(m["sent_at"]),
                       client_msg_id=m.get("client_msg_id"))


class InterappPlugin(Plugin):
    """Connects the local application to an interapp application server."""

    spec = PLUGIN

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        self.client = ServerClient(target.server, client_id=target.client_id,
                                   client_secret=target.client_secret)
        self._issuer: str | None = None
        self._metadata: dict[str, Any] | None = None
        self._stream_sends = StreamSends()

    async def _server_metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = await self.client.metadata()
            self._issuer = str(self._metadata["issuer"])
        return self._metadata

    async def _login_from(self, body: Mapping[str, Any]) -> Login:
        credential = _credential(body)
        profile = await self.open(credential)
        return Login(profile.id, profile.username, credential)

    async def _grant(self, call: Any) -> Login:
        try:
            body = await call
        except InvalidClient as exc:
            raise ConfigError(f"{self.target.name} refused this host's client credentials "
                              f"({exc.message}); check the target's --client-id") from exc
        except SlowDown as exc:
            raise NeedsReauth(exc.message, retry_after=exc.retry_after) from exc
        except OAuthError as exc:
            raise NeedsReauth(exc.message) from exc
        credential = _credential(body)
        profile = await self.open(credential)
        return Login(profile.id, profile.username, credential)

    async def login(self, answers: Mapping[str, Secret | str]) -> Login:
        """Password grant with the account information the user typed."""
        username = answers.get("username")
        password = answers.get("password")
        name = username.reveal() if isinstance(username, Secret) else username
        if not name or password is None:
            raise ConfigError("username and password are required")
        secret = password if isinstance(password, Secret) else Secret(password)
        return await self._grant(self.client.password_grant(name.strip(), secret))

    async def login_with_assertion(self, assertion: Secret) -> Login:
        """RFC 7523 grant with an assertion from the local application."""
        return await self._grant(self.client.jwt_bearer_grant(assertion))

    # --- browser and device linking ----------------------------------------------------------

    async def available_link_ways(self) -> tuple[LinkWay, ...]:
        """What the server's RFC 8414 metadata offers (see the module docstring)."""
        md = await self._server_metadata()
        grants = set(md.get("grant_types_supported") or ())
        ways: list[LinkWay] = []
        if md.get("authorization_endpoint") and "code" in (md.get("response_types_supported")
                                                           or ()) \
                and "S256" in (md.get("code_challenge_methods_supported") or ()):
            ways.append(LinkWay.BROWSER)
        if md.get("device_authorization_endpoint") and DEVICE_CODE in grants:
            ways.append(LinkWay.DEVICE)
        if "password" in grants:
            ways.append(LinkWay.PASSWORD)
        return tuple(ways)

    async def begin_browser(self, redirect_uri: str, state: str) -> BrowserStart:
        """The authorization URL: code + PKCE S256, scope ``interapp``, ``state``."""
        md = await self._server_metadata()
        if not self.target.client_id:
            raise ConfigError(f"{self.target.name} has no --client-id for this host")
        verifier, challenge = pkce_pair()
        query = urlencode({"response_type": "code", "client_id": self.target.client_id,
                           "redirect_uri": redirect_uri, "scope": LINK_SCOPE, "state": state,
                           "code_challenge": challenge, "code_challenge_method": "S256"})
        issuer = str(md["issuer"]) if md.get(
            "authorization_response_iss_parameter_supported") else None
        url = f"{md['authorization_endpoint']}?{query}"
        await self._preflight(url, redirect_uri)
        return BrowserStart(url, redirect_uri, issuer, {"code_verifier": verifier})

    async def _preflight(self, url: str, redirect_uri: str) -> None:
        """Ask the authorization endpoint first, without a browser (nobody is signed in: no
        code can be issued): a client or redirect URI it does not know gets its error page,
        a grant the client may not use its error redirect — better found now than after the
        user waited at a page that never comes back."""
        try:
            resp = await self.client.http.get(url, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise ConnectionLost(f"cannot reach {self.target.name}: {type(exc).__name__}") \
                from exc
        if resp.status_code in (302, 303):
            back = dict(parse_qsl(urlsplit(resp.headers.get("location", "")).query))
            if back.get("error"):
                raise from_wire(400, {"error": back["error"],
                                      "error_description": back.get("error_description", "")})
        elif resp.status_code == 400:
            raise UnauthorizedClient(
                f"{self.target.name} does not know this host's client or its redirect URI "
                f"(register {redirect_uri.split(':')[0]}://127.0.0.1/callback for it)")
        elif resp.status_code >= 500:
            raise ConnectionLost(f"{self.target.name} answered {resp.status_code}")

    async def finish_browser(self, start: BrowserStart, answer: Mapping[str, str]) -> Login:
        """Redeem the code with the PKCE verifier and the same redirect URI."""
        code = answer.get("code")
        if not code:
            raise InvalidGrant("the answer carries no authorization code")
        try:
            body = await self.client.code_grant(
                Secret(code), code_verifier=Secret(start.pending["code_verifier"]),
                redirect_uri=start.redirect_uri)
        except InvalidClient as exc:
            raise ConfigError(f"{self.target.name} refused this host's client credentials "
                              f"({exc.message}); check the target's --client-id") from exc
        return await self._login_from(body)

    async def begin_device(self) -> DeviceStart:
        """RFC 8628 §3.1."""
        try:
            body = await self.client.device_authorization(LINK_SCOPE)
        except InvalidClient as exc:
            raise ConfigError(f"{self.target.name} refused this host's client credentials "
                              f"({exc.message}); check the target's --client-id") from exc
        return DeviceStart(str(body["user_code"]), str(body["verification_uri"]),
                           body.get("verification_uri_complete"),
                           float(body.get("expires_in") or 600),
                           float(body.get("interval") or 5),
                           {"device_code": str(body["device_code"])})

    async def poll_device(self, start: DeviceStart) -> Login:
        """One poll of the token endpoint (RFC 8628 §3.4)."""
        body = await self.client.device_grant(Secret(start.pending["device_code"]))
        return await self._login_from(body)

    def needs_refresh(self, credential: Credential, now: float) -> bool:
        """Refresh when the access token expires within 30 s."""
        try:
            return float(credential.get("expires_at") or 0) - REFRESH_MARGIN < now
        except ValueError:
            return True

    async def audience(self) -> str:
        """The server's issuer identifier, from its RFC 8414 metadata."""
        if self._issuer is None:
            await self._server_metadata()
        assert self._issuer is not None
        return self._issuer

    def prepare_refresh(self, credential: Credential) -> Credential:
        """Record a fresh idempotency key for the coming refresh."""
        return Credential(kind=credential.kind, fields={
            **credential.fields, "refresh_key": secrets.token_urlsafe(24)})

    def has_pending_refresh(self, credential: Credential) -> bool:
        """True when a refresh was started and its result may not have been saved."""
        return bool(credential.get("refresh_key"))

    async def refresh(self, credential: Credential) -> Credential:
        """Rotate the refresh token; a refusal means the link needs re-authentication.

        The idempotency key lets the server hand back the same new pair if this exact refresh
        is retried (after a crash between its answer and the vault's save).
        """
        token = credential.get("refresh_token")
        if not token:
            raise NeedsReauth("no refresh token stored")
        try:
            body = await self.client.refresh_grant(Secret(token),
                                                   idempotency_key=credential.get("refresh_key"))
        except InvalidGrant as exc:
            raise NeedsReauth(f"refresh token refused: {exc.message}") from exc
        except InvalidClient as exc:
            raise ConfigError(f"{self.target.name} refused this host's client credentials") \
                from exc
        return _credential(body)

    async def open(self, credential: Credential) -> Profile:
        """Use the access token; GET /v1/me checks it."""
        self.client.access_token = Secret(credential.get("access_token") or "")
        return _profile(await self.client.api("GET", "/v1/me"))

    async def buddies(self) -> list[Buddy]:
        """Every page of GET /v1/contacts."""
        out: list[Buddy] = []
        cursor: str | None = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            page = await self.client.api("GET", "/v1/contacts", params=params)
            out.extend(_buddy(c) for c in page["contacts"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    async def _contact_id(self, username: str) -> str:
        for buddy in await self.buddies():
            if buddy.username == username:
                return buddy.id
        pending = await self.client.api("GET", "/v1/contacts/requests")
        for req in pending["requests"]:
            if req["username"] == username:
                return str(req["id"])
        raise ConfigError(f"{username} is neither a buddy nor a pending request on "
                          f"{self.target.name}")

    async def add_buddy(self, username: str) -> None:
        """POST /v1/contacts."""
        await self.client.api("POST", "/v1/contacts", json={"username": username})

    async def accept_buddy(self, username: str) -> None:
        """POST /v1/contacts/{id}/accept."""
        await self.client.api("POST", f"/v1/contacts/{await self._contact_id(username)}/accept")

    async def remove_buddy(self, username: str) -> None:
        """DELETE /v1/contacts/{id}."""
        await self.client.api("DELETE", f"/v1/contacts/{await self._contact_id(username)}")

    async def send(self, to: str, body: str, client_msg_id: str) -> ChatMessage:
        """On the open event stream when there is one, else POST /v1/messages (both
        idempotent by client_msg_id; see :mod:`.streamsend`)."""
        data = await self._stream_sends.send(to, body, client_msg_id)
        if data is None:
            data = await self.client.api("POST", "/v1/messages", json={
                "to": to, "body": body, "client_msg_id": client_msg_id})
        return _message(data)

    async def history(self, with_user: str, *, limit: int = 50,
                      before: str | None = None) -> list[ChatMessage]:
        """GET /v1/conversations/{user}/messages (``before`` pages back)."""
        params = {"limit": str(min(max(limit, 1), 200)), **({"before": before} if before else {})}
        data = await self.client.api("GET", f"/v1/conversations/{with_user}/messages",
                                     params=params)
        return [_message(m) for m in data["messages"]]

    async def set_presence(self, state: PresenceState, status_text: str) -> None:
        """PUT /v1/presence."""
        await self.client.api("PUT", "/v1/presence",
                              json={"state": state, "status_text": status_text})

    async def set_activity(self, activity: Activity | None) -> None:
        """PUT /v1/presence with only the activity (state and status text stay)."""
        await self.client.api("PUT", "/v1/presence", json={
            "activity": None if activity is None else activity.to_json()})

    async def invite(self, to: str, *, activity: Activity | None, join_url: str | None,
                     message: str, client_invite_id: str) -> Invite:
        """POST /v1/invites (idempotent by ``client_invite_id``)."""
        body: dict[str, Any] = {"to": to, "message": message,
                                "client_invite_id": client_invite_id}
        if activity is not None:
            body["activity"] = activity.to_json()
        if join_url is not None:
            body["join_url"] = join_url
        return Invite.from_json(await self.client.api("POST", "/v1/invites", json=body),
                                strict=False)

    async def answer_invite(self, invite_id: str, accept: bool) -> Invite:
        """POST /v1/invites/{id}/accept or /decline."""
        action = "accept" if accept else "decline"
        data = await self.client.api("POST", f"/v1/invites/{quote(invite_id, safe='')}/{action}")
        return Invite.from_json(data, strict=False)

    async def invites(self) -> list[Invite]:
        """GET /v1/invites: the pending ones, sent and received."""
        data = await self.client.api("GET", "/v1/invites")
        return [Invite.from_json(i, strict=False) for i in data["invites"]]

    async def events(self, cursor: str | None) -> AsyncIterator[PluginEvent]:
        """The WebSocket stream; ConnectionLost when it drops (resume with the last cursor).

        A reader task takes the frames off the socket, answering stream sends at once, so a
        consumer that sends while handling an event never waits on its own generator. When the
        server no longer knows the cursor (its data was reset: ``cursor_unknown``), the stream
        starts again at the server's newest event and first yields a ``cursor_reset`` event
        (``since``: the cursor refused, ``last_seq``, ``message``): events in between may be
        missing, and the consumer can say so.
        """
        while True:
            try:
                # aclosing: a consumer's aclose() must close this connection now, not when the
                # inner generator is collected (async for never closes what it iterates)
                async with contextlib.aclosing(self._stream(cursor)) as stream:
                    async for event in stream:
                        yield event
            except CursorUnknown as exc:
                refused, cursor = cursor, str(exc.last_seq)
                yield PluginEvent(type="cursor_reset", cursor=cursor, data={
                    "type": "cursor_reset", "since": refused, "last_seq": exc.last_seq,
                    "message": exc.message})
            else:  # _stream only ends by raising
                raise AssertionError("unreachable")

    async def _stream(self, cursor: str | None) -> AsyncGenerator[PluginEvent, None]:
        """One connection of :meth:`events`."""
        url = self.client.events_url(cursor)
        ws: Any = None
        try:
            async with websockets.connect(url, additional_headers=self.client.bearer_header(),
                                          open_timeout=10, max_size=2**20,
                                          compression=None) as ws:
                self._stream_sends.attach(ws)
                inbox: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue(
                    INBOX_SIZE)
                reader = asyncio.create_task(self._read_frames(ws, inbox))
                try:
                    while (event := await inbox.get()) is not None:
                        if isinstance(event, BaseException):
                            raise event
                        if event.get("type") == "error":
                            if event.get("error") == "unauthorized":
                                raise Unauthorized(str(event.get("message", "")))
                            if event.get("error") == "cursor_unknown":
                                raise CursorUnknown(str(event.get("message", "")),
                                                    last_seq=_seq(event.get("last_seq")))
                            raise ConnectionLost(str(event.get("message", "stream error")))
                        kind = str(event.get("type"))
                        if kind in (EVENT_INVITE, EVENT_INVITE_ANSWER):  # the contract's shape
                            event = {**event, "invite": {k: v for k, v in event.items()
                                                         if k not in ("seq", "type")}}
                        yield PluginEvent(type=kind, cursor=str(_seq(event.get("seq"))),
                                          data=event)
                finally:
                    reader.cancel()
        except (ConnectionClosed, OSError, InvalidStatus, TimeoutError) as exc:
            raise ConnectionLost(f"event stream of {self.target.name} dropped: "
                                 f"{type(exc).__name__}") from exc
        finally:
            if ws is not None:
                self._stream_sends.detach(ws)
        raise ConnectionLost(f"event stream of {self.target.name} closed")

    async def _read_frames(self, ws: Any,
                           inbox: asyncio.Queue[dict[str, Any] | BaseException | None]) -> None:
        """Frames → ``inbox`` (None at a clean close, the exception at a failure)."""
        try:
            async for frame in ws:
                event = json.loads(frame)
                if not self._stream_sends.answer(event):
                    await inbox.put(event)
        except Exception as exc:
            await inbox.put(exc)
        else:
            await inbox.put(None)
        finally:
            self._stream_sends.detach(ws)

    async def revoke(self, credential: Credential) -> None:
        """RFC 7009: revoking the refresh token revokes the whole login at the target."""
        token = credential.get("refresh_token") or credential.get("access_token")
        if token:
            await self.client.revoke(Secret(token))

    async def close(self) -> None:
        """Close the HTTP pool."""
        await self.client.aclose()


def _seq(value: Any) -> int:
    """A ``seq`` from the server; a malformed one ends the stream like a dropped connection
    (the host reconnects) instead of escaping as a ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    # isascii: str.isdigit() also accepts digits int() refuses, such as "²"
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise ConnectionLost(f"the event stream sent a malformed seq: {str(value)[:40]!r}")
