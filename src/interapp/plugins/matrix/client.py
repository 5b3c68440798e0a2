"""The ``matrix`` plug-in's implementation: plain httpx against the client-server API (v3).

Credential kept in the vault (kind ``matrix_session``): ``access_token``, ``device_id``,
``user_id`` and ``homeserver``. The password is sent once, to ``/login``, and never stored.
The ``/sync`` token is the event cursor, kept by the host (see :mod:`.sync`).

Same account system: ``login_with_assertion`` posts the local application's JWT as an
``org.matrix.login.jwt`` login; a homeserver whose ``jwt_config`` trusts the local issuer logs
the user in (creating the Matrix account on first use). :meth:`MatrixPlugin.audience` is the
target option ``jwt_audience`` if set, else the homeserver URL.

Link ways: *browser* when the homeserver offers ``m.login.sso`` (and ``m.login.token``): the
browser goes to ``/login/sso/redirect`` (``/login/sso/redirect/{sso_idp}`` with the target
option ``sso_idp``), signs in at the identity provider (e.g. an interapp app as Synapse's OpenID
Connect provider), and comes back to the host's loopback listener with a ``loginToken``, which
``m.login.token`` trades for a session — no Matrix password anywhere. *password* when it offers
``m.login.password``. The loopback URL carries the host's ``state`` in its query (Synapse keeps
the redirect URL's query and adds ``loginToken``); the homeserver must accept the loopback
URL as an SSO client (Synapse: ``sso.client_whitelist: ["http://127.0.0.1:"]``, or it shows
its confirmation page first).

Target options: ``jwt_audience``; ``sso_idp``; ``max_rate_limit_wait`` (seconds of 429 hints
honoured per call before :class:`~interapp.errors.RateLimited` is raised, default 10);
``sync_timeout`` (long-poll seconds, default 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from interapp.errors import (
    ApiError,
    ApiNotFound,
    ConfigError,
    ConnectionLost,
    NeedsReauth,
    RateLimited,
    Unauthorized,
)
from interapp.plugins.contract import (
    BrowserStart,
    Buddy,
    ChatMessage,
    Credential,
    LinkWay,
    Login,
    PluginEvent,
    PresenceState,
    Profile,
    TargetConfig,
)
from interapp.plugins.invitebook import expired_data
from interapp.plugins.matrix import PLUGIN
from interapp.plugins.matrix.api import MatrixApi, now_iso, q
from interapp.plugins.matrix.rich import ACTIVITY_EVENT
from interapp.plugins.matrix.richpresence import RichMixin
from interapp.plugins.matrix.sync import (
    DIRECT,
    GAP_FILTER,
    MESSAGE,
    MESSAGES_FILTER,
    PRESENCE_CHOICE,
    TO_MATRIX,
    DirectRooms,
    Position,
    Room,
    invite_request,
    localpart,
    mxid,
    normalize,
    presence_data,
    sync_filter,
)
from interapp.secret import Secret

KIND = "matrix_session"
TIMELINE_LIMIT = 100
MAX_GAP_EVENTS = 5000


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def homeserver_url(target: TargetConfig) -> str:
    """The base URL: ``--tls``/``--no-tls`` force the scheme; by default TLS off loopback."""
    parts = urlsplit(target.server.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{target.name}: the homeserver must be an http(s) URL")
    scheme = parts.scheme
    if target.tls is True:
        scheme = "https"
    elif target.tls is False:
        scheme = "http"
    elif scheme == "http" and not _is_loopback(parts.hostname):
        scheme = "https"
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def _option_float(target: TargetConfig, name: str, default: float) -> float:
    raw = target.options.get(name)
    if raw is None or raw == "":
        return default
    try:
        return max(0.0, float(raw))
    except ValueError as exc:
        raise ConfigError(f"{target.name}: option {name} must be a number") from exc


def _text(value: Secret | str | None) -> str:
    return value.reveal() if isinstance(value, Secret) else (value or "")


class MatrixPlugin(RichMixin):
    """Connects the local application to a Matrix homeserver."""

    spec = PLUGIN

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self.base_url = homeserver_url(target)
        self.api = MatrixApi(self.base_url,
                             max_rate_wait=_option_float(target, "max_rate_limit_wait", 10.0))
        self.sync_timeout = _option_float(target, "sync_timeout", 30.0)
        self.user_id = ""
        self.device_id = ""
        self._direct: DirectRooms | None = None
        self._sync_presence = "online"
        self._presence_at = 0.0

    # --- login ---------------------------------------------------------------------------------

    async def _login(self, body: dict[str, Any], what: str) -> Login:
        body = {**body, "initial_device_display_name": f"interapp ({self.target.name})"}
        try:
            data = await self.api.request("POST", "/login", json_body=body, auth=False)
        except (RateLimited, ConnectionLost):
            raise
        except ApiError as exc:  # M_FORBIDDEN, M_USER_DEACTIVATED, M_INVALID_USERNAME, …
            raise NeedsReauth(f"{self.target.name} refused the {what}: {exc.message}") from exc
        credential = Credential(kind=KIND, fields={
            "access_token": str(data["access_token"]), "device_id": str(data["device_id"]),
            "user_id": str(data["user_id"]), "homeserver": self.base_url})
        profile = await self.open(credential)
        return Login(profile.id, profile.username, credential)

    async def login(self, answers: Mapping[str, Secret | str]) -> Login:
        """Password login (``m.login.password``) with a localpart or a full MXID."""
        user = _text(answers.get("username")).strip()
        password = answers.get("password")
        if not user or password is None:
            raise ConfigError("username and password are required")
        return await self._login({
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": _text(password)}, "login")

    async def login_with_assertion(self, assertion: Secret) -> Login:
        """``org.matrix.login.jwt`` with the local application's assertion."""
        return await self._login({"type": "org.matrix.login.jwt", "token": assertion.reveal()},
                                 "same-account (JWT) login")

    async def available_link_ways(self) -> tuple[LinkWay, ...]:
        """What ``GET /login`` offers: SSO (with token login) → browser; password."""
        data = await self.api.request("GET", "/login", auth=False)
        flows = {str(f.get("type")) for f in data.get("flows", []) if isinstance(f, Mapping)}
        ways: list[LinkWay] = []
        if "m.login.sso" in flows and "m.login.token" in flows:
            ways.append(LinkWay.BROWSER)
        if "m.login.password" in flows and self.spec.account_fields:
            ways.append(LinkWay.PASSWORD)
        return tuple(ways)

    async def begin_browser(self, redirect_uri: str, state: str) -> BrowserStart:
        """The ``m.login.sso`` redirect, coming back to ``redirect_uri?state=…``."""
        back = f"{redirect_uri}?{urlencode({'state': state})}"
        idp = self.target.options.get("sso_idp")
        path = "/_matrix/client/v3/login/sso/redirect" + (f"/{q(idp)}" if idp else "")
        return BrowserStart(f"{self.base_url}{path}?{urlencode({'redirectUrl': back})}", back)

    async def finish_browser(self, start: BrowserStart, answer: Mapping[str, str]) -> Login:
        """``m.login.token`` with the ``loginToken`` the browser came back with."""
        token = answer.get("loginToken")
        if not token:
            raise NeedsReauth(f"{self.target.name} sent the browser back without a loginToken")
        return await self._login({"type": "m.login.token", "token": token}, "SSO login")

    async def audience(self) -> str:
        """The ``aud`` the homeserver's ``jwt_config`` expects (option ``jwt_audience``)."""
        return (self.target.options.get("jwt_audience") or self.target.server).rstrip("/")

    # --- session -------------------------------------------------------------------------------

    async def open(self, credential: Credential) -> Profile:
        """Use the access token; ``/account/whoami`` checks it (Unauthorized when refused)."""
        if credential.kind != KIND or not credential.get("access_token"):
            raise Unauthorized(f"not a {KIND} credential")
        self.api.access_token = Secret(credential.get("access_token") or "")
        who = await self.api.request("GET", "/account/whoami")
        user_id = str(who["user_id"])
        if user_id != self.user_id:
            self._direct = None
        self.user_id, self.device_id = user_id, str(who.get("device_id") or "")
        name = await self._display_name(user_id)
        state, status = "online", ""
        with contextlib.suppress(ApiError):
            data = presence_data(user_id, await self.api.request(
                "GET", f"/presence/{q(user_id)}/status"))
            state, status = data["state"], data["status_text"]
        return Profile(id=user_id, username=user_id, display_name=name, presence=state,
                       status_text=status)

    async def _display_name(self, user_id: str) -> str:
        with contextlib.suppress(ApiError):
            data = await self.api.request("GET", f"/profile/{q(user_id)}/displayname")
            if data.get("displayname"):
                return str(data["displayname"])
        return localpart(user_id)

    def _me(self) -> str:
        if not self.user_id:
            raise ConfigError(f"{self.target.name}: not connected (open a credential first)")
        return self.user_id

    def _user(self, name: str) -> str:
        me = self._me()
        return mxid(name, me.split(":", 1)[1])

    async def revoke(self, credential: Credential) -> None:
        """``/logout``: the access token (and its device) are dead afterwards."""
        token = credential.get("access_token")
        if not token:
            return
        with contextlib.suppress(Unauthorized):  # already dead: nothing left to revoke
            await self.api.request("POST", "/logout", json_body={}, token=Secret(token))

    async def close(self) -> None:
        """Close the HTTP pool."""
        await self.api.aclose()

    # --- rooms ---------------------------------------------------------------------------------

    async def _scan(self) -> tuple[DirectRooms, dict[str, Any]]:
        """Current rooms, invites and ``m.direct`` in one filtered ``/sync`` (no presence change).
        """
        me = self._me()
        data = await self.api.request("GET", "/sync", params={
            "filter": sync_filter(0, secrets.token_hex(8)), "set_presence": "offline",
            "timeout": "0"})
        direct = DirectRooms(me)
        for event in (data.get("account_data") or {}).get("events", []):
            if event.get("type") == DIRECT and isinstance(event.get("content"), Mapping):
                direct.set_m_direct(event["content"])
            elif event.get("type") == PRESENCE_CHOICE:
                self._choose_sync_presence(event.get("content"))
            elif event.get("type") == ACTIVITY_EVENT:
                self._adopt_activity(event.get("content"))
        for room_id, room_data in ((data.get("rooms") or {}).get("join") or {}).items():
            room = direct.room(room_id)
            for part in ("state", "timeline"):
                for event in (room_data.get(part) or {}).get("events", []):
                    if "state_key" in event:
                        room.apply(event)
        self._direct = direct
        return direct, data

    async def _rooms(self) -> DirectRooms:
        if self._direct is None or self._direct.me != self._me():
            await self._scan()
        assert self._direct is not None
        return self._direct

    def _choose_sync_presence(self, content: Any) -> None:
        """Adopt a presence choice from account data, unless ours is newer."""
        if not isinstance(content, Mapping):
            return
        try:
            at = float(content.get("at") or 0)
        except (TypeError, ValueError):
            at = 0.0
        if at >= self._presence_at:
            self._presence_at = at
            self._sync_presence = TO_MATRIX.get(str(content.get("state")), "online")

    async def _add_to_m_direct(self, user: str, room_id: str) -> None:
        me = self._me()
        path = f"/user/{q(me)}/account_data/{DIRECT}"
        try:
            content = await self.api.request("GET", path)
        except ApiNotFound:
            content = {}
        rooms = [str(r) for r in content.get(user, []) if isinstance(r, str)]
        if room_id in rooms:
            return
        content = {**content, user: [*rooms, room_id]}
        await self.api.request("PUT", path, json_body=content)
        if self._direct is not None:
            self._direct.set_m_direct(content)

    async def _remove_from_m_direct(self, user: str) -> None:
        me = self._me()
        path = f"/user/{q(me)}/account_data/{DIRECT}"
        try:
            content = await self.api.request("GET", path)
        except ApiNotFound:
            return
        if user in content:
            content = {k: v for k, v in content.items() if k != user}
            await self.api.request("PUT", path, json_body=content)
            if self._direct is not None:
                self._direct.set_m_direct(content)

    async def _create_direct_room(self, user: str) -> str:
        data = await self.api.request("POST", "/createRoom", json_body={
            "preset": "trusted_private_chat", "is_direct": True, "invite": [user]})
        room_id = str(data["room_id"])
        await self._add_to_m_direct(user, room_id)
        direct = await self._rooms()
        room = direct.room(room_id)
        room.apply({"type": "m.room.member", "state_key": self._me(),
                    "content": {"membership": "join"}})
        room.apply({"type": "m.room.member", "state_key": user,
                    "content": {"membership": "invite", "is_direct": True}})
        return room_id

    async def _room_with(self, user: str) -> str | None:
        direct = await self._rooms()
        room_id = direct.room_with(user)
        if room_id is None:
            direct, _ = await self._scan()
            room_id = direct.room_with(user)
        return room_id

    # --- buddies -------------------------------------------------------------------------------

    async def buddies(self) -> list[Buddy]:
        """The people the user shares a direct room with, with their presence."""
        direct, _ = await self._scan()
        rooms = direct.direct_rooms()

        async def one(user: str) -> Buddy:
            member = direct.rooms[rooms[user][0]].members[user]
            joined = member.membership == "join"
            state, status = "offline", ""
            if joined:
                with contextlib.suppress(ApiError):
                    data = presence_data(user, await self.api.request(
                        "GET", f"/presence/{q(user)}/status"))
                    state, status = data["state"], data["status_text"]
            return Buddy(id=user, username=user,
                         display_name=member.displayname or localpart(user), presence=state,
                         status_text=status, subscription="both" if joined else "pending",
                         activity=direct.activity_of(user) if joined else None)

        return list(await asyncio.gather(*(one(u) for u in sorted(rooms))))

    async def add_buddy(self, username: str) -> None:
        """Open a direct room inviting ``username`` (unless one exists already)."""
        user = self._user(username)
        if user == self._me():
            raise ConfigError("you cannot add yourself as a buddy")
        if await self._room_with(user) is None:
            await self._create_direct_room(user)

    async def accept_buddy(self, username: str) -> None:
        """Join ``username``'s direct-room invite and file it in ``m.direct``."""
        user = self._user(username)
        _, data = await self._scan()
        invites = (data.get("rooms") or {}).get("invite") or {}
        me = self._me()
        for room_id in sorted(invites):
            state = (invites[room_id].get("invite_state") or {}).get("events", [])
            request = invite_request(room_id, state, me)
            if request is not None and request["from"] == user:
                await self.api.request("POST", f"/join/{q(room_id)}", json_body={})
                await self._add_to_m_direct(user, room_id)
                self._direct = None
                return
        raise ConfigError(f"no buddy request from {user} on {self.target.name}")

    async def remove_buddy(self, username: str) -> None:
        """Leave every direct room with ``username`` and drop them from ``m.direct``."""
        user = self._user(username)
        direct, _ = await self._scan()
        rooms = direct.direct_rooms().get(user, [])
        if not rooms and user not in direct.m_direct:
            raise ConfigError(f"{user} is not a buddy on {self.target.name}")
        for room_id in rooms:
            await self.api.request("POST", f"/rooms/{q(room_id)}/leave", json_body={})
        await self._remove_from_m_direct(user)
        self._direct = None

    # --- messages ------------------------------------------------------------------------------

    async def send(self, to: str, body: str, client_msg_id: str) -> ChatMessage:
        """Send to the direct room with ``to`` (created if none); the client_msg_id is the
        transaction id, so a retried send is not duplicated."""
        user = self._user(to)
        if user == self._me():
            raise ConfigError("you cannot send a message to yourself")
        room_id = await self._room_with(user) or await self._create_direct_room(user)
        data = await self.api.request(
            "PUT", f"/rooms/{q(room_id)}/send/{MESSAGE}/{q(client_msg_id)}",
            json_body={"msgtype": "m.text", "body": body})
        return ChatMessage(id=str(data["event_id"]), sender=self._me(), recipient=user,
                           body=body, sent_at=now_iso(), client_msg_id=client_msg_id)

    async def history(self, with_user: str, *, limit: int = 50,
                      before: str | None = None) -> list[ChatMessage]:
        """The direct room's messages (``/messages`` backwards), newest last.

        ``before`` (an event id from an earlier answer): Matrix pages by token, not by event,
        so the pages are walked back past that event first (at most 20 pages).
        """
        user = self._user(with_user)
        room_id = await self._room_with(user)
        if room_id is None:
            return []
        me = self._me()
        out: list[ChatMessage] = []
        token: str | None = None
        limit = min(max(limit, 1), 1000)
        skipping = before is not None  # until the event ``before`` has gone by
        pages = 0
        while len(out) < limit and pages < 20:
            pages += 1
            params = {"dir": "b", "limit": str(min(100, max(limit - len(out), 10))),
                      "filter": MESSAGES_FILTER}
            if token:
                params["from"] = token
            page = await self.api.request("GET", f"/rooms/{q(room_id)}/messages", params=params)
            for event in page.get("chunk", []):
                if skipping:
                    skipping = event.get("event_id") != before
                    continue
                content = event.get("content") or {}
                if event.get("type") != MESSAGE or not isinstance(content.get("body"), str):
                    continue
                sender = str(event.get("sender", ""))
                out.append(ChatMessage(
                    id=str(event.get("event_id", "")), sender=sender,
                    recipient=user if sender == me else me, body=str(content["body"]),
                    sent_at=now_iso(float(event.get("origin_server_ts") or 0)),
                    client_msg_id=(event.get("unsigned") or {}).get("transaction_id")))
            token = page.get("end")
            if not token or not page.get("chunk"):
                break
        return list(reversed(out[:limit]))

    # --- presence ------------------------------------------------------------------------------

    async def set_presence(self, state: PresenceState, status_text: str) -> None:
        """``PUT /presence``; busy becomes ``unavailable`` (Matrix has no busy without MSC3026).

        The choice is also kept in the account data ``io.interapp.presence`` so that any
        process syncing as this user keeps it instead of resetting it to online.
        """
        if state not in TO_MATRIX:
            raise ConfigError(f"unknown presence state {state!r}")
        me = self._me()
        matrix_state = TO_MATRIX[state]
        # chosen before the PUT, so that a concurrent /sync of this plug-in does not undo it;
        # "at" orders choices, so an older one arriving late through /sync is ignored
        self._sync_presence, self._presence_at = matrix_state, time.time()
        await self.api.request("PUT", f"/presence/{q(me)}/status", json_body={
            "presence": matrix_state, "status_msg": await self._status_msg(status_text)})
        await self.api.request("PUT", f"/user/{q(me)}/account_data/{PRESENCE_CHOICE}",
                               json_body={"state": state, "status_text": status_text,
                                          "at": self._presence_at})

    # --- events --------------------------------------------------------------------------------

    async def _fill_gap(self, room_id: str, timeline: Mapping[str, Any],
                        since: str) -> list[dict[str, Any]]:
        """A ``limited`` timeline plus the events ``/sync`` left out (back to ``since``)."""
        events: list[dict[str, Any]] = list(timeline.get("events", []))
        token = timeline.get("prev_batch")
        older: list[dict[str, Any]] = []
        while token and len(older) < MAX_GAP_EVENTS:
            page = await self.api.request("GET", f"/rooms/{q(room_id)}/messages", params={
                "dir": "b", "from": str(token), "to": since, "limit": "100",
                "filter": GAP_FILTER})
            chunk = page.get("chunk", [])
            older.extend(chunk)
            token = page.get("end")
            if not chunk:
                break
        return list(reversed(older)) + events

    def _stream_error(self, exc: ApiError) -> Exception:
        """What the event stream raises: Unauthorized as is, anything else ConnectionLost (the
        host then reconnects with backoff and resumes from the cursor)."""
        if isinstance(exc, Unauthorized):
            return exc
        return ConnectionLost(f"/sync of {self.target.name} failed: {exc.message}")

    async def _timelines(self, data: Mapping[str, Any], position: Position
                         ) -> dict[str, list[Mapping[str, Any]]]:
        """Each joined room's complete timeline since ``position`` (gaps filled)."""
        timelines: dict[str, list[Mapping[str, Any]]] = {}
        for room_id, room_data in ((data.get("rooms") or {}).get("join") or {}).items():
            timeline = room_data.get("timeline") or {}
            if timeline.get("limited") and position.since:
                timelines[room_id] = list(await self._fill_gap(room_id, timeline,
                                                               position.since))
            else:
                timelines[room_id] = list(timeline.get("events", []))
        return timelines

    async def events(self, cursor: str | None) -> AsyncIterator[PluginEvent]:
        """``/sync`` long-polling from ``cursor``; each event carries the cursor to resume after
        it (see :mod:`interapp.plugins.matrix.sync`). Unauthorized when the token is refused,
        ConnectionLost when the homeserver drops; rate limits are waited out."""
        position = Position.decode(cursor)
        try:
            direct, scan = await self._scan()
        except ApiError as exc:
            raise self._stream_error(exc) from exc
        if position.since is None:
            position = Position(str(scan["next_batch"]))
        else:  # the scan shows today's activities; the host knows them as of the cursor
            direct.forget_activities()
        loop_filter = sync_filter(TIMELINE_LIMIT)
        while True:
            for gone in self._book.expire_due():  # sent, unanswered, now expired
                yield PluginEvent(type="invite_answer", cursor=position.encode(),
                                  data=expired_data(gone))
            wait = self._book.wait(self.sync_timeout)
            try:
                data = await self.api.long_poll("/sync", {
                    "since": position.since or "", "filter": loop_filter,
                    "timeout": str(int(wait * 1000)),
                    "set_presence": self._sync_presence}, wait)
                timelines = await self._timelines(data, position)
            except RateLimited as exc:
                await asyncio.sleep(exc.retry_after or 1.0)
                continue
            except ApiError as exc:
                raise self._stream_error(exc) from exc
            for event in (data.get("account_data") or {}).get("events", []):
                if event.get("type") == PRESENCE_CHOICE:
                    self._choose_sync_presence(event.get("content"))
                elif event.get("type") == ACTIVITY_EVENT:  # set by another of the user's
                    self._adopt_activity(event.get("content"))  # processes
            batch = normalize(data, timelines, direct, position, self._classify)
            for event in batch.events:
                yield event
            position = Position(batch.next_batch)


__all__ = ["KIND", "MatrixPlugin", "Room", "homeserver_url"]
