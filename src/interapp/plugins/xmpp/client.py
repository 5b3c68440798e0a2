"""The ``xmpp`` plug-in's implementation (slixmpp, inside the host's asyncio loop).

Theory of operation
-------------------
One :class:`XmppPlugin` holds at most one XMPP session (a ``slixmpp.ClientXMPP`` built inside
the running loop, resource ``interapp-XXXXXXXX``). :meth:`XmppPlugin.login` authenticates with
the typed password, :meth:`XmppPlugin.open` with the stored credential; both leave the session
running: roster fetched, archive position taken, vCard read, initial presence sent.

**Credential.** SASL SCRAM is required whenever the server offers it. After the first login the
link keeps ``xmpp_scram`` = the mechanism, salt, iteration count, ``ClientKey`` and
``ServerKey`` (RFC 5802), never the password: :mod:`interapp.plugins.xmpp.sasl` teaches
slixmpp's SCRAM to log in with those keys and to check the server's signature with them. Only
where a server offers no SCRAM at all does the link keep ``xmpp_password`` (the password; the
vault encrypts every credential), used with SASL PLAIN — on an unencrypted stream only to a
loopback server. A password change gives the account a new salt: the stored keys are then
refused (or recognised as stale before a proof is sent) and the plug-in raises
:class:`~interapp.errors.NeedsReauth`.

**Events and the cursor.** Everything the session receives (chat messages, buddy presence,
subscription changes) goes into an inbox from the moment the session starts. The cursor is a
position in the user's message archive (XEP-0313 MAM): the archive id (XEP-0359 ``stanza-id``
stamped by the server) of the last message event yielded; ``^`` is the start of an empty
archive. Before sending its initial presence the session asks the archive for its newest id —
that is where ``events(None)`` starts, and the query also tells the server that this client
reads the archive, so it does not replay offline messages as live ones (they are in the
archive). ``events(cursor)`` first pages through the archive *after* the cursor, then drains
the inbox; every message is yielded once, by archive id (and by sender + XEP-0359 origin id, so
a retried send is not shown twice). A server restart therefore loses and doubles nothing:
whatever arrived while the link was down is read from the archive after the saved cursor.

**Failures.** A SASL failure is :class:`~interapp.errors.NeedsReauth`; an unreachable or
dropped server (also a request left unanswered) is :class:`~interapp.errors.ConnectionLost`;
a ``wait`` error such as ``resource-constraint``/``policy-violation`` (rate limits) or a SASL
``temporary-auth-failure`` is :class:`~interapp.errors.RateLimited` with ``retry_after`` taken
from the server's text when it gives a number of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import ssl
from base64 import b64decode
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from interapp.errors import (
    ApiError,
    ApiNotFound,
    BadRequest,
    ConfigError,
    ConnectionLost,
    Forbidden,
    InterappError,
    NeedsReauth,
    RateLimited,
)
from interapp.plugins.contract import (
    Buddy,
    ChatMessage,
    Credential,
    Login,
    Plugin,
    PluginEvent,
    PresenceState,
    Profile,
    TargetConfig,
)
from interapp.plugins.xmpp import PLUGIN
from interapp.plugins.xmpp.sasl import ScramKeys, StoredKeySCRAM, install
from interapp.secret import Secret

install()
# slixmpp logs refused logins and certificate problems itself; this plug-in reports them as
# interapp errors, so keep them out of stderr when the application configured no logging.
logging.getLogger("slixmpp").addHandler(logging.NullHandler())

SCRAM_KIND = "xmpp_scram"
PASSWORD_KIND = "xmpp_password"
DEFAULT_PORT = 5222
CONNECT_TIMEOUT = 15.0
IQ_TIMEOUT = 10.0
MAM_PAGE = 50
CURSOR_START = "^"  # the start of the archive (it was empty when the cursor was handed out)
DEFAULT_RETRY_AFTER = 5.0
KEEPALIVE = 60.0  # seconds of silence on the event stream before a ping

_NS_SID = "{urn:xmpp:sid:0}"
_NS_MAM = "{urn:xmpp:mam:2}"
_NS_CLIENT = "{jabber:client}"
_NS_FORWARD = "{urn:xmpp:forward:0}"
_NS_DELAY = "{urn:xmpp:delay}"
_SLIXMPP_PLUGINS = ("xep_0030", "xep_0054", "xep_0059", "xep_0203", "xep_0297", "xep_0313",
                    "xep_0199", "xep_0359")
_SHOW_TO_STATE: dict[str, PresenceState] = {"": "online", "chat": "online", "away": "away",
                                            "xa": "away", "dnd": "busy"}
_STATE_TO_SHOW = {"online": "chat", "away": "away", "busy": "dnd"}
_RANK = {"online": 0, "away": 1, "busy": 2, "offline": 3}
_RATE_CONDITIONS = {"resource-constraint", "policy-violation"}
_SEEN_LIMIT = 5000


# --- small helpers ---------------------------------------------------------------------------


def parse_server(url: str) -> tuple[str, int]:
    """``xmpp://HOST[:PORT]`` → (host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigError(f"XMPP server {url!r} is not valid: {exc}") from exc
    if parts.scheme != "xmpp" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"XMPP server {url!r} is not valid: expected xmpp://HOST[:PORT]")
    return parts.hostname, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bare_jid(value: str, default_domain: str | None = None) -> str:
    """A user's bare JID (``user@domain``); ``default_domain`` completes a bare user name."""
    text = value.strip()
    if default_domain and "@" not in text and text:
        text = f"{text}@{default_domain}"
    try:
        jid = JID(text)
    except InvalidJID as exc:
        raise ConfigError(f"{value!r} is not a valid XMPP address: {exc}") from exc
    if not jid.user or not jid.domain:
        raise ConfigError(f"{value!r} is not an XMPP account: expected user@domain")
    return str(jid.bare)


def retry_after_of(text: str | None) -> float:
    """Seconds to wait, from a server's error text ("... retry in 30 s"), else a default."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*(?:s|sec|secs|second|seconds)\b", text or "")
    return float(match.group(1)) if match else DEFAULT_RETRY_AFTER


def stanza_error(etype: str, condition: str, text: str, what: str) -> InterappError:
    """The interapp error for an XMPP stanza error (RFC 6120 §8.3)."""
    message = f"{what}: {condition or 'error'}" + (f" ({text})" if text else "")
    if condition in _RATE_CONDITIONS or (etype == "wait" and condition == "policy-violation"):
        return RateLimited(message, retry_after=retry_after_of(text))
    if condition in ("not-authorized", "forbidden", "not-allowed", "registration-required",
                     "subscription-required"):
        return Forbidden(message)
    if condition in ("item-not-found", "service-unavailable", "recipient-unavailable",
                     "remote-server-not-found", "gone", "jid-malformed"):
        return ApiNotFound(message)
    if condition in ("bad-request", "not-acceptable", "feature-not-implemented"):
        return BadRequest(message)
    if condition == "remote-server-timeout":
        return ConnectionLost(message)
    return ApiError(message)


def _iso(stamp: str | None) -> str:
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(
                UTC).isoformat()
    return datetime.now(UTC).isoformat()


def _subscription(item: Any, requested: bool) -> str:
    value = str(item["subscription"] or "none")
    if item["pending_out"]:
        value += "+pending_out"
    if requested and not item["from"]:
        value += "+pending_in"
    return value


@dataclass
class _Archived:
    """One message, from the archive or live."""

    archive_id: str | None
    sender: str
    recipient: str
    body: str
    stanza_id: str
    origin_id: str | None
    sent_at: str

    def as_event_data(self) -> dict[str, Any]:
        return {"from": self.sender, "to": self.recipient, "body": self.body,
                "message_id": self.archive_id or self.stanza_id,
                "client_msg_id": self.origin_id or self.stanza_id or None,
                "sent_at": self.sent_at}


@dataclass
class _Item:
    """An inbox entry: an event to yield, or the news that the connection dropped."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    message: _Archived | None = None


@dataclass
class _Attempt:
    """What one connection attempt learned before the session started (or failed)."""

    ready: asyncio.Future[None]
    auth_condition: str = ""
    auth_text: str = ""
    stream_error: str = ""
    tls_error: str = ""


def _parse_message(xml: Any, me: str) -> _Archived | None:
    """A chat message element → :class:`_Archived` (None when it carries no text)."""
    body = xml.findtext(f"{_NS_CLIENT}body")
    if not body:
        return None
    archive_id = None
    for sid in xml.findall(f"{_NS_SID}stanza-id"):
        if sid.get("by") == me:
            archive_id = sid.get("id")
    origin = xml.find(f"{_NS_SID}origin-id")
    delay = xml.find(f"{_NS_DELAY}delay")
    return _Archived(
        archive_id=archive_id, sender=str(JID(xml.get("from") or me).bare),
        recipient=str(JID(xml.get("to") or me).bare), body=body,
        stanza_id=xml.get("id") or "", origin_id=origin.get("id") if origin is not None else None,
        sent_at=_iso(delay.get("stamp") if delay is not None else None))


def _dedup_keys(message: _Archived) -> list[str]:
    """Identities of a message: its archive id, and sender + origin id (a retried send)."""
    keys = [f"a:{message.archive_id}"] if message.archive_id else []
    if message.origin_id:
        keys.append(f"o:{message.sender}:{message.origin_id}")
    return keys


class XmppPlugin(Plugin):
    """Connects the local application to an XMPP server (see the module docstring)."""

    spec = PLUGIN

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self.host, self.port = parse_server(target.server)
        self.tls = target.tls if target.tls is not None else not is_loopback(self.host)
        self.ca_file = target.options.get("ca_file") or None
        self._client: Any = None
        self._jid = ""
        self._lost: ConnectionLost | None = None
        self._dropped: asyncio.Future[None] | None = None
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._yielded: OrderedDict[str, None] = OrderedDict()  # messages streams yielded
        self._start_cursor = ""
        self._cursor = ""
        self._mam = False
        self._roster_jids: set[str] = set()
        self._requests: set[str] = set()  # incoming subscription requests not yet answered
        self._mam_results: dict[str, list[Any]] = {}
        self._send_errors: dict[str, asyncio.Future[tuple[str, str, str]]] = {}
        self._state: PresenceState = "online"
        self._status = ""

    # --- connection ------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.target.name} ({self.host}:{self.port})"

    async def _connect(self, jid: str, *, password: str = "",
                       keys: ScramKeys | None = None) -> Any:
        """Open a stream and authenticate; returns the client once the session started."""
        await self._teardown()
        loop = asyncio.get_running_loop()
        client = slixmpp.ClientXMPP(
            f"{jid}/interapp-{secrets.token_hex(4)}", password,
            plugin_config={"feature_mechanisms": {"unencrypted_scram": not self.tls}})
        for name in _SLIXMPP_PLUGINS:
            client.register_plugin(name)
        client.enable_starttls = self.tls
        client.enable_direct_tls = False
        client.enable_plaintext = not self.tls
        if self.ca_file:
            client.ca_certs = Path(self.ca_file)
        if keys is not None:
            client.credentials.update(keys.as_credentials())
        client.auto_authorize = None  # subscription requests are the user's decision
        client.auto_subscribe = False
        attempt = _Attempt(ready=loop.create_future())

        def fail(exc: InterappError) -> None:
            if not attempt.ready.done():
                attempt.ready.set_exception(exc)

        self._install_sasl_policy(client, attempt, fail, password=password, keys=keys)
        self._install_handlers(client)

        def on_session_start(_: Any) -> None:
            if not attempt.ready.done():
                attempt.ready.set_result(None)

        def on_failed_auth(stanza: Any) -> None:
            attempt.auth_condition = str(stanza["condition"] or "")
            attempt.auth_text = str(stanza["text"] or "")

        def on_auth_exhausted(_: Any) -> None:
            fail(self._auth_error(client, attempt, jid))

        def on_connection_failed(err: Any) -> None:
            client.cancel_connection_attempt()
            fail(ConnectionLost(f"cannot reach {self._where()}: {err}"))

        def on_stream_error(err: Any) -> None:
            attempt.stream_error = str(err["condition"] or "")

        def on_tls_failure(_: Any) -> None:
            attempt.tls_error = "its TLS certificate is not trusted (set the target's ca_file " \
                                "option for a private CA)"

        def on_negotiated(_: Any) -> None:
            # features done without SASL: nothing to log in with on this stream
            if client.authenticated or attempt.ready.done():
                return
            if self.tls:
                fail(ConfigError(f"{self._where()} offered no way to log in"))
            else:
                fail(ConfigError(f"{self._where()} offers no login on an unencrypted stream "
                                 "(it requires TLS): use --tls"))
            client.abort()

        def on_disconnected(reason: Any) -> None:
            if not attempt.ready.done():
                if attempt.auth_condition:
                    fail(self._auth_error(client, attempt, jid))
                else:
                    why = attempt.tls_error or attempt.stream_error or str(reason or "") \
                        or "closed"
                    if "CERTIFICATE_VERIFY_FAILED" in why:
                        why += "; set the target's ca_file option for a private CA"
                    fail(ConnectionLost(f"{self._where()} closed the connection: {why}"))
            else:
                self._on_drop(client, attempt.stream_error or str(reason or ""))

        client.add_event_handler("session_start", on_session_start)
        client.add_event_handler("failed_auth", on_failed_auth)
        client.add_event_handler("failed_all_auth", on_auth_exhausted)
        client.add_event_handler("no_auth", on_auth_exhausted)
        client.add_event_handler("connection_failed", on_connection_failed)
        client.add_event_handler("stream_error", on_stream_error)
        client.add_event_handler("ssl_invalid_chain", on_tls_failure)
        client.add_event_handler("ssl_invalid_cert", on_tls_failure)
        client.add_event_handler("stream_negotiated", on_negotiated)
        client.add_event_handler("disconnected", on_disconnected)

        self._client = client
        self._lost = None
        self._dropped = loop.create_future()
        self._inbox = asyncio.Queue()
        self._yielded = OrderedDict()
        self._roster_jids = set()
        self._requests = set()
        client.connect(self.host, self.port)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):  # (wait_for may swallow a cancel)
                await asyncio.shield(attempt.ready)
        except BaseException as exc:
            if not attempt.ready.done():
                attempt.ready.cancel()  # late failures of this attempt go nowhere
            await self._teardown()
            if isinstance(exc, TimeoutError):
                raise ConnectionLost(f"no XMPP session with {self._where()} within "
                                     f"{CONNECT_TIMEOUT:.0f} s") from None
            raise
        self._jid = str(client.boundjid.bare)
        return client

    def _install_sasl_policy(self, client: Any, attempt: _Attempt,
                             fail: Any, *, password: str, keys: ScramKeys | None) -> None:
        """Choose the SASL mechanisms once the server's offer is known (SCRAM first)."""
        mechanisms = client.plugin["feature_mechanisms"]
        original, restart = client._stream_feature_handlers["mechanisms"]

        def choose(features: Any) -> Any:
            offered = set(features["mechanisms"])
            encrypted = "starttls" in client.features or isinstance(
                client.socket, ssl.SSLSocket | ssl.SSLObject)
            problem: InterappError | None = None
            allowed: set[str] = set()
            scram = {m for m in offered if m.startswith("SCRAM-")}
            if self.tls and not encrypted:
                problem = ConfigError(f"{self._where()} did not offer TLS (STARTTLS); use "
                                      "--no-tls only for a server on a trusted network")
            elif keys is not None:
                allowed = {keys.mechanism, f"{keys.mechanism}-PLUS"} & offered
                if not allowed:
                    problem = NeedsReauth(f"{self._where()} no longer offers {keys.mechanism}; "
                                          "log in again")
            elif scram:
                allowed = scram
            elif "PLAIN" in offered and password:
                if not encrypted and not is_loopback(self.host):
                    problem = ConfigError(f"{self._where()} offers only SASL PLAIN on an "
                                          "unencrypted stream; refusing to send the password "
                                          "in clear (use TLS)")
                else:
                    mechanisms.config["unencrypted_plain"] = not encrypted
                    allowed = {"PLAIN"}
            else:
                problem = ConfigError(f"{self._where()} offers no SASL mechanism interapp can "
                                      f"use ({', '.join(sorted(offered)) or 'none'})")
            if problem is not None:
                fail(problem)
                client.abort()
                return True
            mechanisms.use_mechs = allowed
            return original(features)

        client._stream_feature_handlers["mechanisms"] = (choose, restart)

    def _auth_error(self, client: Any, attempt: _Attempt, jid: str) -> InterappError:
        mech = client.plugin["feature_mechanisms"].mech
        if isinstance(mech, StoredKeySCRAM) and mech.stale:
            return NeedsReauth(f"the password of {jid} was changed on {self.target.name}; "
                               "log in again")
        condition = attempt.auth_condition or "no usable SASL mechanism"
        if condition == "temporary-auth-failure":
            return RateLimited(f"{self.target.name} refused the login for now: {condition}"
                               + (f" ({attempt.auth_text})" if attempt.auth_text else ""),
                               retry_after=retry_after_of(attempt.auth_text))
        return NeedsReauth(f"{self.target.name} refused the login of {jid}: {condition}"
                           + (f" ({attempt.auth_text})" if attempt.auth_text else ""))

    def _on_drop(self, client: Any, reason: str) -> None:
        if client is not self._client or self._lost is not None:
            return
        self._lost = ConnectionLost(f"connection to {self._where()} dropped"
                                    + (f": {reason}" if reason else ""))
        if self._dropped is not None and not self._dropped.done():
            self._dropped.set_result(None)
        self._inbox.put_nowait(_Item("lost"))

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._lost is None:
            self._lost = ConnectionLost(f"the session with {self._where()} was closed")
            self._inbox.put_nowait(_Item("lost"))
        if self._dropped is not None and not self._dropped.done():
            self._dropped.set_result(None)
        try:
            if client.transport is not None:
                async with asyncio.timeout(3):
                    await client.disconnect(wait=1.0)
        except Exception:  # closing anyway
            client.abort()
        finally:
            client.cancel_connection_attempt()
            for name in list(client.scheduled_events):
                client.cancel_schedule(name)
            filters = getattr(client, "_run_out_filters", None)
            if filters is not None:
                filters.cancel()
                with contextlib.suppress(BaseException):
                    await filters

    def _require(self) -> Any:
        if self._lost is not None or self._client is None:
            raise ConnectionLost((self._lost.message if self._lost else None)
                                 or f"not connected to {self._where()}")
        return self._client

    async def _call(self, request: Awaitable[Any], what: str) -> Any:
        """Await an IQ, failing fast with ConnectionLost when the stream drops."""
        task = asyncio.ensure_future(request)
        waiters: set[asyncio.Future[Any]] = {task}
        if self._dropped is not None:
            waiters.add(self._dropped)
        try:
            done, _ = await asyncio.wait(waiters, timeout=IQ_TIMEOUT + 1,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task not in done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise ConnectionLost((self._lost.message if self._lost else None)
                                 or f"{self._where()} did not answer the {what}")
        try:
            return task.result()
        except IqTimeout as exc:
            raise ConnectionLost(f"{self._where()} did not answer the {what}") from exc
        except IqError as exc:
            err = exc.iq["error"]
            raise stanza_error(str(err["type"] or ""), str(err["condition"] or ""),
                               str(err["text"] or ""), what) from exc

    async def _round_trip(self, what: str) -> None:
        """Ping the server: it handles a session's stanzas in order, so this proves it has
        processed everything sent before."""
        client = self._require()
        try:
            await self._call(client.plugin["xep_0199"].send_ping(
                JID(client.boundjid.domain), timeout=IQ_TIMEOUT), what)
        except ApiError as exc:  # a server without XEP-0199 still answered (with an error)
            if isinstance(exc, RateLimited):
                raise

    # --- handlers ------------------------------------------------------------------------------

    def _install_handlers(self, client: Any) -> None:
        def mine(handler: Any) -> Any:
            def wrapped(stanza: Any) -> None:
                if client is self._client and self._lost is None:
                    handler(client, stanza)
            return wrapped

        client.add_event_handler("message", mine(self._on_message))
        client.add_event_handler("message_error", mine(self._on_message_error))
        client.add_event_handler("changed_status", mine(self._on_status))
        client.add_event_handler("roster_update", mine(self._on_roster))
        client.add_event_handler("roster_subscription_request", mine(self._on_subscribe))
        client.add_event_handler("roster_subscription_authorized", mine(self._on_subscribed))
        client.add_event_handler("roster_subscription_removed", mine(self._on_unsubscribed))
        client.register_handler(Callback(
            "interapp MAM result", MatchXPath(f"{_NS_CLIENT}message/{_NS_MAM}result"),
            lambda msg: self._on_mam_result(client, msg)))

    def _on_message(self, client: Any, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal") or msg.xml.find(f"{_NS_MAM}result") is not None:
            return
        parsed = _parse_message(msg.xml, self._jid)
        if parsed is None or parsed.sender == self._jid:
            return
        self._inbox.put_nowait(_Item("message", parsed.as_event_data(), parsed))

    def _on_message_error(self, client: Any, msg: Any) -> None:
        waiter = self._send_errors.get(str(msg["id"]))
        if waiter is not None and not waiter.done():
            err = msg["error"]
            waiter.set_result((str(err["type"] or ""), str(err["condition"] or ""),
                               str(err["text"] or "")))

    def _on_mam_result(self, client: Any, msg: Any) -> None:
        if client is not self._client or str(JID(msg["from"]).bare) not in ("", self._jid):
            return  # only our own account's archive may answer
        result = msg.xml.find(f"{_NS_MAM}result")
        bucket = self._mam_results.get(result.get("queryid") or "")
        if bucket is not None:
            bucket.append(result)

    def _presence_of(self, client: Any, jid: str,
                     fallback_status: str = "") -> tuple[PresenceState, str]:
        resources = client.client_roster[jid].resources if client.client_roster.has_jid(
            jid) else {}
        if not resources:
            return "offline", fallback_status
        best = sorted(resources.values(), key=lambda r: (
            -int(r.get("priority") or 0), _RANK[_SHOW_TO_STATE.get(r.get("show") or "",
                                                                   "online")]))[0]
        return _SHOW_TO_STATE.get(best.get("show") or "", "online"), str(best.get("status") or "")

    def _on_status(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        if not who or who == self._jid or pres["type"] == "error":
            return
        state, status = self._presence_of(client, who, str(pres["status"] or ""))
        self._inbox.put_nowait(_Item("presence", {"username": who, "state": state,
                                                  "status_text": status,
                                                  "resource": str(pres["from"].resource)}))

    def _on_roster(self, client: Any, iq: Any) -> None:
        for jid, item in iq["roster"]["items"].items():
            bare = str(JID(jid).bare)
            if item["subscription"] == "remove":
                self._roster_jids.discard(bare)
            else:
                self._roster_jids.add(bare)

    def _on_subscribe(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        item = client.client_roster[who]
        if item["to"] or item["pending_out"] or item["from"]:
            item.authorize()  # we asked them (or already share): the answer is yes
            return
        self._requests.add(who)
        nick = pres.xml.findtext("{http://jabber.org/protocol/nick}nick") or ""
        self._inbox.put_nowait(_Item("contact_request", {
            "username": who, "from": who, "display_name": nick or JID(who).user}))

    def _on_subscribed(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        self._inbox.put_nowait(_Item("contact_added", {"username": who}))

    def _on_unsubscribed(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        self._requests.discard(who)
        self._inbox.put_nowait(_Item("contact_removed", {"username": who}))

    # --- session start ---------------------------------------------------------------------

    async def _start_session(self) -> Profile:
        client = self._require()
        await self._call(client.get_roster(timeout=IQ_TIMEOUT), "roster request")
        try:  # where events(None) starts; also stops the server replaying offline messages
            _, _, _, last = await self._mam_query(before=True, limit=1)
            self._mam = True
            self._start_cursor = last or CURSOR_START
        except (ApiError, ConfigError):
            self._mam, self._start_cursor = False, ""
        self._cursor = self._start_cursor
        name = await self._vcard_name(self._jid)
        self._state, self._status = "online", ""
        client.send_presence()
        return Profile(id=self._jid, username=self._jid,
                       display_name=name or JID(self._jid).user, presence=self._state,
                       status_text=self._status)

    async def _vcard_name(self, jid: str) -> str:
        client = self._require()
        iq = client.make_iq_get(ito=jid)
        iq.enable("vcard_temp")
        try:
            resp = await self._call(iq.send(timeout=IQ_TIMEOUT), "vCard request")
        except ApiError:
            return ""
        vcard = resp["vcard_temp"]
        return str(vcard["FN"] or vcard["NICKNAME"] or "").strip()

    async def set_display_name(self, name: str) -> None:
        """Publish ``name`` as the vCard's full name (XEP-0054); not part of the contract."""
        client = self._require()
        vcard = client.plugin["xep_0054"].make_vcard()
        vcard["FN"] = name
        vcard["NICKNAME"] = name
        iq = client.make_iq_set()
        iq.append(vcard)
        await self._call(iq.send(timeout=IQ_TIMEOUT), "vCard update")

    # --- the contract ----------------------------------------------------------------------

    async def login(self, answers: Mapping[str, Secret | str]) -> Login:
        """SASL SCRAM with the typed password; keeps the SCRAM keys, not the password."""
        username = answers.get("username")
        password = answers.get("password")
        name = username.reveal() if isinstance(username, Secret) else username
        secret = password.reveal() if isinstance(password, Secret) else password
        if not name or not secret:
            raise ConfigError("an XMPP account (user@domain) and its password are required")
        try:
            jid = bare_jid(name)
        except ConfigError as exc:  # the typed account is wrong: ask again
            raise NeedsReauth(exc.message) from exc
        client = await self._connect(jid, password=secret)
        mech = client.plugin["feature_mechanisms"].mech
        if isinstance(mech, StoredKeySCRAM) and mech.derived is not None:
            keys = mech.derived
            credential = Credential(kind=SCRAM_KIND, fields={
                "jid": self._jid, "mechanism": keys.mechanism, **keys.as_credentials()})
        else:  # the server offered no SCRAM: keep the password (the vault encrypts it)
            credential = Credential(kind=PASSWORD_KIND, fields={"jid": self._jid,
                                                                "password": secret})
        client.password = ""  # the session needs it no more
        profile = await self._start_session()
        return Login(profile.id, profile.username, credential)

    async def open(self, credential: Credential) -> Profile:
        """Log in with the stored SCRAM keys (or stored password); start the session."""
        jid = credential.get("jid") or ""
        if credential.kind == SCRAM_KIND:
            try:
                keys = ScramKeys(
                    mechanism=credential.get("mechanism") or "SCRAM-SHA-1",
                    salt=_b64(credential.get("scram_salt")),
                    iterations=int(credential.get("scram_iterations") or "0"),
                    client_key=_b64(credential.get("scram_client_key")),
                    server_key=_b64(credential.get("scram_server_key")))
            except ValueError as exc:
                raise NeedsReauth("the stored XMPP credential is damaged; log in again") \
                    from exc
            await self._connect(bare_jid(jid), keys=keys)
        elif credential.kind == PASSWORD_KIND:
            client = await self._connect(bare_jid(jid), password=credential.get("password")
                                         or "")
            client.password = ""
        else:
            raise NeedsReauth(f"credential kind {credential.kind!r} is not an XMPP credential")
        return await self._start_session()

    async def buddies(self) -> list[Buddy]:
        """The roster (names, groups, subscription state, presence) and pending requests."""
        client = self._require()
        out: list[Buddy] = []
        for jid in sorted(self._roster_jids | self._requests):
            if jid == self._jid:
                continue
            item = client.client_roster[jid]
            state, status = self._presence_of(client, jid)
            out.append(Buddy(id=jid, username=jid,
                             display_name=str(item["name"] or "") or JID(jid).user or jid,
                             presence=state, status_text=status,
                             groups=tuple(sorted(str(g) for g in item["groups"])),
                             subscription=_subscription(item, jid in self._requests)))
        return out

    def _buddy(self, username: str) -> str:
        jid = bare_jid(username, default_domain=JID(self._jid).domain if self._jid else None)
        if jid == self._jid:
            raise BadRequest("that is your own account")
        return jid

    async def add_buddy(self, username: str) -> None:
        """Put ``username`` on the roster and send a subscription request."""
        client = self._require()
        jid = self._buddy(username)
        if jid not in self._roster_jids:
            await self._call(client.update_roster(jid, timeout=IQ_TIMEOUT), "roster update")
        item = client.client_roster[jid]
        if not item["to"]:
            client.send_presence_subscription(pto=jid, ptype="subscribe")
        if jid in self._requests and not item["from"]:
            self._requests.discard(jid)
            item.authorize()
        await self._round_trip(f"subscription request to {jid}")

    async def accept_buddy(self, username: str) -> None:
        """Authorize ``username``'s subscription and ask for theirs (mutual buddies)."""
        client = self._require()
        jid = self._buddy(username)
        item = client.client_roster[jid]
        client.send_presence(pto=jid, ptype="subscribed")
        self._requests.discard(jid)
        if not item["to"] and not item["pending_out"]:
            client.send_presence_subscription(pto=jid, ptype="subscribe")
        await self._round_trip(f"accepting {jid}")

    async def remove_buddy(self, username: str) -> None:
        """Remove ``username`` from the roster (this cancels both subscriptions), or decline
        their pending request."""
        client = self._require()
        jid = self._buddy(username)
        if jid not in self._roster_jids:
            if jid not in self._requests:
                raise ApiNotFound(f"{jid} is neither a buddy nor asking to be one")
            self._requests.discard(jid)
            client.send_presence(pto=jid, ptype="unsubscribed")
            await self._round_trip(f"declining {jid}")
            return
        self._requests.discard(jid)
        await self._call(client.update_roster(jid, subscription="remove", timeout=IQ_TIMEOUT),
                         "roster removal")

    async def send(self, to: str, body: str, client_msg_id: str) -> ChatMessage:
        """A chat message whose stanza id and origin id are ``client_msg_id``."""
        client = self._require()
        jid = self._buddy(to)
        msg = client.make_message(mto=jid, mbody=body, mtype="chat")
        msg["id"] = client_msg_id
        msg["origin_id"]["id"] = client_msg_id
        waiter: asyncio.Future[tuple[str, str, str]] = \
            asyncio.get_running_loop().create_future()
        self._send_errors[client_msg_id] = waiter
        try:
            msg.send()
            await self._round_trip(f"message to {jid}")
            if waiter.done():
                raise stanza_error(*waiter.result(), f"message to {jid}")
        finally:
            self._send_errors.pop(client_msg_id, None)
        return ChatMessage(id=client_msg_id, sender=self._jid, recipient=jid, body=body,
                           sent_at=datetime.now(UTC).isoformat(), client_msg_id=client_msg_id)

    async def history(self, with_user: str, *, limit: int = 50,
                      before: str | None = None) -> list[ChatMessage]:
        """The newest ``limit`` messages with ``with_user`` from the archive, newest last.

        ``before`` (an archive id from an earlier answer) pages back with RSM.
        """
        self._require()
        jid = self._buddy(with_user)
        if not self._mam:
            return []
        limit = min(max(limit, 1), 500)
        found: list[_Archived] = []
        cursor: str | bool = before or True
        while len(found) < limit:
            page, complete, first, _ = await self._mam_query(
                with_jid=jid, before=cursor, limit=min(MAM_PAGE, limit - len(found)))
            found[:0] = page
            if complete or not first or not page:
                break
            cursor = first
        return [ChatMessage(id=m.archive_id or m.stanza_id, sender=m.sender,
                            recipient=m.recipient, body=m.body, sent_at=m.sent_at,
                            client_msg_id=m.origin_id or m.stanza_id or None)
                for m in found[-limit:]]

    async def set_presence(self, state: PresenceState, status_text: str) -> None:
        """online/away/busy/offline → show chat/away/dnd, or unavailable."""
        client = self._require()
        if state == "offline":
            client.send_presence(ptype="unavailable", pstatus=status_text or None)
        elif state in _STATE_TO_SHOW:
            client.send_presence(pshow=_STATE_TO_SHOW[state], pstatus=status_text or None)
        else:
            raise ConfigError(f"presence must be online, away, busy or offline, not {state!r}")
        self._state, self._status = state, status_text
        await self._round_trip("presence update")

    async def events(self, cursor: str | None) -> AsyncIterator[PluginEvent]:
        """Archive after ``cursor`` first, then live events; ConnectionLost when it drops.

        Every archived message after ``cursor`` is yielded, even if an earlier stream of this
        session yielded it already (the caller asked to resume there); a live message is
        skipped when this stream's catch-up or an earlier stream already yielded it.
        """
        self._require()
        self._cursor = cursor or self._start_cursor
        caught_up: set[str] = set()
        if self._mam and self._cursor:
            try:
                async for event in self._catch_up(self._cursor, caught_up):
                    yield event
            except (ApiError, ConfigError) as exc:  # the stream only ever ends in ConnectionLost
                raise ConnectionLost(f"reading the archive of {self._jid} failed: "
                                     f"{exc.message}", retry_after=exc.retry_after) from exc
        while True:
            try:  # asyncio.timeout, not wait_for: a cancel must never be swallowed here
                async with asyncio.timeout(KEEPALIVE):
                    item = await self._inbox.get()
            except TimeoutError:  # quiet: make sure the server is still there (XEP-0199)
                with contextlib.suppress(RateLimited):
                    await self._round_trip("keepalive ping")
                continue
            if item.type == "lost":
                self._inbox.put_nowait(item)  # later readers learn it too
                raise ConnectionLost(self._lost.message if self._lost else "connection lost")
            if item.message is not None:
                keys = _dedup_keys(item.message)
                if any(k in caught_up or k in self._yielded for k in keys):
                    continue
                self._remember(keys)
                self._cursor = item.message.archive_id or self._cursor
            yield PluginEvent(type=item.type, cursor=self._cursor, data=item.data)

    def _remember(self, keys: list[str]) -> None:
        for key in keys:
            self._yielded[key] = None
        while len(self._yielded) > _SEEN_LIMIT:
            self._yielded.popitem(last=False)

    async def _catch_up(self, cursor: str, caught_up: set[str]) -> AsyncIterator[PluginEvent]:
        after: str | None = None if cursor == CURSOR_START else cursor
        restarted = False
        while True:
            try:
                page, complete, _, last = await self._mam_query(after=after, limit=MAM_PAGE)
            except ApiNotFound:
                if after is None or restarted:
                    raise
                # the cursor's message is gone from the archive (expired): all that is left
                # is newer than it
                after, restarted = None, True
                continue
            for message in page:
                keys = _dedup_keys(message)
                if message.sender == self._jid or any(k in caught_up for k in keys):
                    continue
                caught_up.update(keys)
                self._remember(keys)
                self._cursor = message.archive_id or self._cursor
                yield PluginEvent(type="message", cursor=self._cursor,
                                  data=message.as_event_data())
            if complete or not last or not page:
                return
            after = last

    async def _mam_query(self, *, with_jid: str | None = None, after: str | None = None,
                         before: str | bool | None = None, limit: int = MAM_PAGE,
                         ) -> tuple[list[_Archived], bool, str | None, str | None]:
        """One XEP-0313 page: (messages, complete, first id, last id)."""
        client = self._require()
        iq = client.make_iq_set()
        query_id = str(iq["id"])
        iq["mam"]["queryid"] = query_id
        if with_jid:
            iq["mam"]["with"] = JID(with_jid)
        rsm = iq["mam"]["rsm"]
        rsm["max"] = str(limit)
        if after:
            rsm["after"] = after
        if before is True:
            rsm["before"] = True
        elif before:
            rsm["before"] = before
        bucket: list[Any] = []
        self._mam_results[query_id] = bucket
        try:
            resp = await self._call(iq.send(timeout=IQ_TIMEOUT), "archive query")
        finally:
            self._mam_results.pop(query_id, None)
        fin = resp.xml.find(f"{_NS_MAM}fin")
        complete = fin is not None and fin.get("complete") in ("true", "1")
        rsm_set = resp["mam_fin"]["rsm"]
        first, last = str(rsm_set["first"] or "") or None, str(rsm_set["last"] or "") or None
        out: list[_Archived] = []
        for result in bucket:
            forwarded = result.find(f"{_NS_FORWARD}forwarded")
            inner = forwarded.find(f"{_NS_CLIENT}message") if forwarded is not None else None
            if inner is None:
                continue
            parsed = _parse_message(inner, self._jid)
            if parsed is None:
                continue
            delay = forwarded.find(f"{_NS_DELAY}delay")
            parsed.archive_id = result.get("id")
            parsed.sent_at = _iso(delay.get("stamp") if delay is not None else None)
            out.append(parsed)
        return out, complete, first, last

    async def close(self) -> None:
        """Close the stream (the server then tells the buddies this resource went offline)."""
        await self._teardown()


def _b64(value: str | None) -> bytes:
    if not value:
        raise ValueError("missing")
    return b64decode(value, validate=True)


__all__ = ["PASSWORD_KIND", "SCRAM_KIND", "XmppPlugin", "bare_jid", "parse_server"]
