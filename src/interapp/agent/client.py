"""Talking to a running agent: find it, and the host's API over its local API.

:func:`find_agent` says whether an agent runs for a data folder (``agent.json``, a live pid,
a socket that answers) and how to reach it: its Unix socket and the token it wrote for its
own user (``agent.token``, 0600). :class:`RemoteHost` offers the methods of
:class:`~interapp.host.Host` that the command line uses, each one call to the agent, and hands
back the same typed values (``TargetInfo``, ``Buddy``, ``Message`` …) and the same errors, so a
command runs the same code in-process and through the agent — as ``docker`` does with its
daemon. A connect that needs a prompt is answered here, by the command's own prompter, and
the answers go to the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, unix_connect

from interapp import errors
from interapp.agent.client_people import RemotePeopleMixin
from interapp.agent.tokens import CLI_TOKEN_FILE
from interapp.host import (
    Activity,
    ActivityResult,
    AuditReport,
    Branch,
    Buddies,
    Buddy,
    ConnectResult,
    InterappError,
    Invite,
    Invites,
    InviteState,
    LinkCompletion,
    LinkInfo,
    LinkState,
    LocalInfo,
    LocalUser,
    LoginRefused,
    Message,
    NoInput,
    OpenUrlRequest,
    PluginTimeout,
    PresenceResult,
    PresenceState,
    PromptDeclined,
    Prompter,
    PromptField,
    PromptReason,
    PromptRequest,
    PromptUnavailable,
    Secret,
    ShowCodeRequest,
    TargetInfo,
    TargetState,
    UnlinkResult,
    WayReason,
    events,
)
from interapp.presence import activity_from_json, parse_iso_utc

PREFIX = "/agent/v1"
TIMEOUT = httpx.Timeout(660.0, connect=5.0)  # a connect may wait for a person at the agent


def _codes() -> dict[str, type[InterappError]]:
    found: dict[str, type[InterappError]] = {}
    todo: list[type[InterappError]] = [InterappError]
    while todo:
        cls = todo.pop(0)
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


CODES = _codes()


def error_from(body: Any, status: int) -> InterappError:
    """The host error the agent answered with (same class, code, message and target)."""
    code = str(body.get("error", "")) if isinstance(body, dict) else ""
    message = str(body.get("message", "")) if isinstance(body, dict) else ""
    cls = CODES.get(code) or errors.from_wire(status, body).__class__
    exc = cls(message or f"the agent answered {status}")
    if isinstance(body, dict) and body.get("target"):
        exc.target = str(body["target"])
    return exc


@dataclass(frozen=True)
class AgentEndpoint:
    """How to reach the agent of one data folder."""

    home: Path
    socket: Path
    token: str
    pid: int
    started_at: str
    port: int | None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_agent(home: Path) -> AgentEndpoint | None:
    """The agent running for ``home``, or None (no file, a dead pid, a socket that refuses)."""
    try:
        status = json.loads((home / "agent.json").read_text())
        token = (home / CLI_TOKEN_FILE).read_text().strip()
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or not token:
        return None
    pid, path = int(status.get("pid", 0)), Path(str(status.get("socket", "")))
    if pid <= 0 or not _alive(pid):
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return None
    finally:
        probe.close()
    return AgentEndpoint(home, path, token, pid, str(status.get("started_at", "")),
                         status.get("port"))


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def link_info(d: dict[str, Any]) -> LinkInfo:
    """A :class:`LinkInfo` from the agent's JSON."""
    created = _dt(d.get("created_at"))
    assert created is not None
    return LinkInfo(d["target"], d["remote_account"], d["remote_account_id"],
                    LinkState(d["state"]), d["reason"], d["server"], d["server_changed"],
                    created, _dt(d.get("last_used")), d.get("id", ""))


def message(d: dict[str, Any]) -> Message:
    """A :class:`Message` from the agent's JSON."""
    return Message(d["target"], d["id"], d["sender"], d["recipient"], d["body"], d["sent_at"],
                   d.get("client_msg_id"), bool(d.get("own")))


def activity(value: Any) -> Activity | None:
    """An activity from the agent's JSON (None: none, or one this version cannot read)."""
    try:
        return activity_from_json(value, strict=False)
    except InterappError:
        return None


def invite(d: dict[str, Any]) -> Invite:
    """An :class:`Invite` from the agent's JSON."""
    return Invite(d["target"], d["id"], d["from"], d["to"], activity(d.get("activity")),
                  d.get("join_url"), d.get("message", ""), parse_iso_utc(d["created_at"]),
                  parse_iso_utc(d["expires_at"]), InviteState(d["state"]),
                  bool(d.get("outgoing")))


def target_info(d: dict[str, Any]) -> TargetInfo:
    """A :class:`TargetInfo` from one of the agent's target rows."""
    return TargetInfo(d["name"], d["plugin"], d["server"], d.get("client_id"),
                      d["account_system"], d.get("tls"), dict(d.get("options") or {}),
                      TargetState(d["state"]), d.get("account"),
                      Branch(d["branch"]) if d.get("branch") else None, d.get("problem", ""),
                      d.get("problem_code", ""))


def event_from(d: dict[str, Any]) -> events.Event:
    """A typed event from one message of the agent's event stream (``raw``: the message,
    ``cursor``: its seq); kinds this version does not know become ``OtherEvent``."""
    kind = str(d.get("type", ""))
    target = str(d.get("target", "*"))
    cursor, raw = str(d.get("seq", "")), d
    cls = events.KINDS.get(kind)
    try:
        if cls is events.MessageReceived:
            return events.MessageReceived(target, message(d["message"]), cursor=cursor, raw=raw)
        if cls is events.BuddyPresence:
            return events.BuddyPresence(target, d["username"], PresenceState(d["state"]),
                                        d.get("status_text", ""), PresenceState(d["previous"]),
                                        bool(d.get("own")), cursor=cursor, raw=raw)
        if cls is events.BuddyCameOnline:
            return events.BuddyCameOnline(target, d["username"], PresenceState(d["state"]),
                                          d.get("status_text", ""), cursor=cursor, raw=raw)
        if cls is events.BuddyActivity:
            return events.BuddyActivity(target, d["username"], activity(d.get("activity")),
                                        bool(d.get("own")), cursor=cursor, raw=raw)
        if cls is events.InviteReceived or cls is events.InviteAnswered:
            return cls(target, invite(d["invite"]), cursor=cursor, raw=raw)
        if cls is events.TargetConnected:
            return events.TargetConnected(target, Branch(d["branch"]), d["account"])
        if cls is not None and cls is not events.OtherEvent:
            names = {f.name for f in fields(cls)}
            values: dict[str, Any] = {k: d[k] for k in names - {"target", "cursor", "raw"}
                                      if k in d}
            if "cursor" in names:
                values.update(cursor=cursor, raw=raw)
            return cls(target, **values)
    except (KeyError, TypeError, ValueError):
        pass
    return events.OtherEvent(target, type=kind, cursor=cursor, raw=raw)


class RemoteHost(RemotePeopleMixin):
    """The :class:`~interapp.host.Host` API the command line uses, through a running agent."""

    def __init__(self, endpoint: AgentEndpoint, prompter: Prompter | None = None) -> None:
        self.endpoint = endpoint
        self.prompter: Prompter = prompter or NoInput()
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(endpoint.socket)),
            base_url="http://agent", timeout=TIMEOUT,
            headers={"Authorization": f"Bearer {endpoint.token}"})
        self._state: dict[str, Any] = {}

    async def __aenter__(self) -> RemoteHost:
        await self.refresh()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection to the agent."""
        await self._http.aclose()

    async def call(self, method: str, path: str, body: Any = None,
                   params: dict[str, Any] | None = None) -> Any:
        """One request to the agent; its errors are raised as the host's."""
        resp = await self._http.request(method, PREFIX + path, json=body, params=params)
        data = resp.json() if resp.content else None
        if resp.status_code >= 400:
            raise error_from(data, resp.status_code)
        return data

    async def refresh(self) -> dict[str, Any]:
        """Read the agent's state again."""
        self._state = await self.call("GET", "/state")
        return self._state

    # --- what the host knows ----------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """The agent's state as last read."""
        return self._state

    @property
    def signed_in(self) -> str | None:
        """The local account signed in at the agent."""
        user = self._state.get("user")
        return str(user) if user else None

    def targets(self) -> list[TargetInfo]:
        """The configured targets as the agent sees them (as last read)."""
        return [target_info(t) for t in self._state.get("targets", [])]

    # --- the local application and targets --------------------------------------------------

    async def set_local(self, url: str, *, client_id: str,
                        client_secret: Secret | str | None = None) -> LocalInfo:
        """See :meth:`Host.set_local`."""
        secret = client_secret.reveal() if isinstance(client_secret, Secret) else client_secret
        d = await self.call("PUT", "/local", {"server": url, "client_id": client_id,
                                              "client_secret": secret})
        await self.refresh()
        return LocalInfo(d["server"], d["client_id"], d["issuer"], d.get("username"))

    async def sign_in(self, username: str, password: Secret | str) -> LocalUser:
        """See :meth:`Host.sign_in`."""
        pw = password.reveal() if isinstance(password, Secret) else password
        d = await self.call("POST", "/session", {"username": username, "password": pw})
        await self.refresh()
        return LocalUser(d["username"], d["display_name"], d["issuer"])

    async def add_target(self, name: str, *, plugin: str, server: str,
                         client_id: str | None = None,
                         client_secret: Secret | str | None = None,
                         account_system: str = "separate", tls: bool | None = None,
                         options: dict[str, str] | None = None) -> TargetInfo:
        """See :meth:`Host.add_target`."""
        secret = client_secret.reveal() if isinstance(client_secret, Secret) else client_secret
        d = await self.call("POST", "/targets", {
            "name": name, "plugin": plugin, "server": server, "client_id": client_id,
            "client_secret": secret, "account_system": account_system, "tls": tls,
            "options": dict(options or {})})
        await self.refresh()
        return target_info(d)

    async def remove_target(self, name: str) -> None:
        """See :meth:`Host.remove_target`."""
        await self.call("DELETE", f"/targets/{_seg(name)}")
        await self.refresh()

    # --- connecting: the prompt is answered here ---------------------------------------------

    async def connect(self, name: str, prompter: Prompter | None = None, *,
                      account: str | None = None, reconnect: bool = False,
                      via: str | None = None) -> ConnectResult:
        """See :meth:`Host.connect`; a prompt is answered by ``prompter`` (this command's)."""
        face = prompter or self.prompter
        body: dict[str, Any] = {"account": account, "reconnect": reconnect,
                                "can": [w for w, method in (("browser", "open_url"),
                                                            ("device", "show_code"))
                                        if callable(getattr(face, method, None))],
                                "headless": bool(getattr(face, "headless", False))}
        if via is not None:
            body["via"] = via
        out = await self.call("POST", f"/targets/{_seg(name)}/connect", body)
        while "prompt" in out:
            out = await self._answer(face, out["prompt"])
        if "pending" in out:
            raise PluginTimeout(f"{name}: the agent is still connecting; see "
                                "'interapp agent status'")
        d = out["connected"]
        return ConnectResult(d["target"], Branch(d["branch"]), d["account"], d["account_id"],
                             d["display_name"], link_info(d["link"]) if d.get("link") else None,
                             d.get("explain", ""), d.get("way"), d.get("way_reason"))

    async def _answer(self, face: Prompter, p: dict[str, Any]) -> Any:
        if p.get("kind") in ("open_url", "show_code"):
            return await self._link_way(face, p)
        request = PromptRequest(
            p["target"], tuple(PromptField(f["name"], f["label"], bool(f["secret"]))
                               for f in p["fields"]),
            p["reason"], int(p["attempt"]), int(p["max_attempts"]), p.get("expected_account"),
            PromptReason(p.get("reason_code", "no_link")), p.get("cause", ""))
        decline = {"decline": True}
        if request.attempt > 1 and not face.interactive:  # scripted answers: one attempt
            await self.call("POST", f"/prompts/{_seg(p['id'])}", decline)
            raise LoginRefused(f"{request.target} refused the account information given "
                               f"({request.cause or 'refused'}); nothing was stored",
                               target=request.target, cause=request.cause)
        try:
            answers = await face.ask(request)
        except PromptUnavailable:
            await self.call("POST", f"/prompts/{_seg(p['id'])}", decline)
            raise
        if answers is None:
            await self.call("POST", f"/prompts/{_seg(p['id'])}", decline)
            raise PromptDeclined(f"{request.target}: the prompt was declined",
                                 target=request.target)
        plain = {k: v.reveal() if isinstance(v, Secret) else v for k, v in answers.items()}
        return await self.call("POST", f"/prompts/{_seg(p['id'])}", {"answers": plain})

    async def _link_way(self, face: Prompter, p: dict[str, Any]) -> Any:
        """An ``open_url`` / ``show_code`` prompt: this command's face opens the page or
        shows the code; the agent's own loopback listener gets the answer, or it polls."""
        decline = {"decline": True}
        completion = LinkCompletion()
        reason_code = PromptReason(p.get("reason_code", "no_link"))
        why = WayReason(p.get("way_reason") or "most_secure")
        try:
            if p["kind"] == "open_url":
                opened = await face.open_url(OpenUrlRequest(  # type: ignore[attr-defined]
                    p["target"], p["url"], p.get("redirect_uri", ""), p["reason"], completion,
                    p.get("expected_account"), reason_code, p.get("cause", ""), why))
                if opened is False:
                    await self.call("POST", f"/prompts/{_seg(p['id'])}", decline)
                    raise PromptDeclined(f"{p['target']}: the sign-in was declined",
                                         target=p["target"])
            else:
                await face.show_code(ShowCodeRequest(  # type: ignore[attr-defined]
                    p["target"], p["user_code"], p["verification_uri"],
                    p.get("verification_uri_complete"), float(p.get("expires_in") or 600),
                    p["reason"], completion, p.get("expected_account"), reason_code,
                    p.get("cause", ""), why))
        except PromptUnavailable:
            await self.call("POST", f"/prompts/{_seg(p['id'])}", decline)
            raise
        return await self.call("POST", f"/prompts/{_seg(p['id'])}", {"answers": {}})

    # --- links ----------------------------------------------------------------------------

    async def links(self) -> list[LinkInfo]:
        """See :meth:`Host.links`."""
        return [link_info(d) for d in (await self.call("GET", "/links"))["links"]]

    async def link(self, name: str) -> LinkInfo | None:
        """See :meth:`Host.link`."""
        return next((ln for ln in await self.links() if ln.target == name), None)

    async def unlink(self, name: str) -> UnlinkResult:
        """See :meth:`Host.unlink`."""
        d = await self.call("DELETE", f"/targets/{_seg(name)}/link")
        return UnlinkResult(d["target"], d["remote_revoked"], d["local_credential_destroyed"],
                            d["note"])

    async def verify_audit(self) -> AuditReport:
        """See :meth:`Host.verify_audit`."""
        d = await self.call("GET", "/audit")
        return AuditReport(d["ok"], d["entries"], d.get("first_bad_seq"), d["reason"])

    # --- buddies, messages, presence ----------------------------------------------------------

    async def buddies(self, target: str | None = None) -> Buddies:
        """See :meth:`Host.buddies`."""
        d = await self.call("GET", "/buddies", params={"target": target} if target else None)
        found = [Buddy(b["target"], b["id"], b["username"], b["display_name"],
                       PresenceState(b["presence"]), b["status_text"], tuple(b["groups"]),
                       b["subscription"], activity(b.get("activity"))) for b in d["buddies"]]
        problems = {n: error_from(e, 503) for n, e in d["problems"].items()}
        for name, exc in problems.items():
            exc.target = name
        return Buddies(found, problems)

    async def add_buddy(self, target: str, user: str) -> None:
        """See :meth:`Host.add_buddy`."""
        await self.call("POST", "/buddies", {"target": target, "user": user})

    async def accept_buddy(self, target: str, user: str) -> None:
        """See :meth:`Host.accept_buddy`."""
        await self.call("POST", "/buddies/accept", {"target": target, "user": user})

    async def remove_buddy(self, target: str, user: str) -> None:
        """See :meth:`Host.remove_buddy`."""
        await self.call("DELETE", f"/buddies/{_seg(target)}/{_seg(user)}")

    async def send(self, target: str, to: str, body: str, *,
                   client_msg_id: str | None = None) -> Message:
        """See :meth:`Host.send`."""
        return message(await self.call("POST", "/messages", {
            "target": target, "to": to, "body": body, "client_msg_id": client_msg_id}))

    async def history(self, target: str, user: str, *, limit: int = 50,
                      before: str | None = None) -> list[Message]:
        """See :meth:`Host.history`."""
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        d = await self.call("GET", f"/history/{_seg(target)}/{_seg(user)}", params=params)
        return [message(m) for m in d["messages"]]

    async def set_presence(self, state: PresenceState | str, status_text: str = "", *,
                           targets: list[str] | None = None) -> PresenceResult:
        """Set presence through the agent, which holds it (``targets`` is ignored: the agent
        sets it on every connected target and on each one that connects later)."""
        d = await self.call("PUT", "/presence", {"state": str(state),
                                                 "status_text": status_text})
        problems = {n: InterappError(msg) for n, msg in d["errors"].items()}
        for name, exc in problems.items():
            exc.target = name
        return PresenceResult(PresenceState(d["state"]), d["status_text"],
                              tuple(d["targets"]), dict(d["errors"]), problems)

    # --- rich presence and invites -----------------------------------------------------------

    async def set_activity(self, activity: Activity | None, *,
                           targets: list[str] | None = None) -> ActivityResult:
        """Set the activity through the agent, which holds it (``targets`` is ignored, as for
        :meth:`set_presence`: every connected target, and each that connects later)."""
        d = await self.call("PUT", "/activity", {
            "activity": None if activity is None else activity.to_json()})
        problems = {n: InterappError(msg) for n, msg in d["errors"].items()}
        for name, exc in problems.items():
            exc.target = name
        return ActivityResult(activity, tuple(d["targets"]), dict(d["carried"]),
                              dict(d["errors"]), problems)

    async def invite(self, target: str, user: str, *, activity: Activity | None = None,
                     join_url: str | None = None, message: str = "",
                     client_invite_id: str | None = None) -> Invite:
        """See :meth:`Host.invite`."""
        body: dict[str, Any] = {"target": target, "to": user, "message": message,
                                "join_url": join_url, "client_invite_id": client_invite_id}
        if activity is not None:
            body["activity"] = activity.to_json()
        return invite(await self.call("POST", "/invites", body))

    async def invites(self, target: str | None = None) -> Invites:
        """See :meth:`Host.invites`."""
        d = await self.call("GET", "/invites", params={"target": target} if target else None)
        problems = {n: error_from(e, 503) for n, e in d["problems"].items()}
        for name, exc in problems.items():
            exc.target = name
        return Invites([invite(i) for i in d["invites"]], problems)

    async def answer_invite(self, target: str, invite_id: str, accept: bool) -> Invite:
        """See :meth:`Host.answer_invite`."""
        action = "accept" if accept else "decline"
        return invite(await self.call("POST",
                                      f"/invites/{_seg(target)}/{_seg(invite_id)}/{action}"))

    # --- events -----------------------------------------------------------------------------

    def events(self, since: int | None = None) -> RemoteEvents:
        """The agent's event stream as typed events, from ``since`` (default: the agent's
        newest event when this host was opened, so nothing in between is missed)."""
        if since is None:
            since = int(self._state.get("agent", {}).get("last_seq", 0)) or None
        return RemoteEvents(self.endpoint, since)


def _seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(value, safe="")


class RemoteEvents:
    """The agent's ``/agent/v1/events`` WebSocket over its Unix socket, as typed events."""

    def __init__(self, endpoint: AgentEndpoint, since: int | None) -> None:
        self.endpoint = endpoint
        self.since = since
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> RemoteEvents:
        query = f"?since={self.since}" if self.since is not None else ""
        self._ws = await unix_connect(
            str(self.endpoint.socket), f"ws://agent{PREFIX}/events{query}",
            additional_headers={"Authorization": f"Bearer {self.endpoint.token}"},
            max_size=1 << 20)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave the stream."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None

    def __aiter__(self) -> AsyncIterator[events.Event]:
        return self

    async def __anext__(self) -> events.Event:
        if self._ws is None:
            await self.__aenter__()
        assert self._ws is not None
        try:
            text = await self._ws.recv()
        except Exception as exc:
            raise StopAsyncIteration from exc
        data = json.loads(text)
        self.since = int(data.get("seq", self.since or 0))
        return event_from(data)
