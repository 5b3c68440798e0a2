"""The slixmpp session of the ``xmpp`` plug-in: server address and JID helpers, the mapping of
XMPP errors to interapp errors, and :class:`XmppSession` — the connection state, opening and
authenticating a stream (SASL policy), noticing drops, tearing down, and awaiting IQs."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import ssl
import xml.etree.ElementTree as ET
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID

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
from interapp.plugins.contract import Plugin, PresenceState, TargetConfig
from interapp.plugins.xmpp.presence import ONE_SHOT_PRIORITY, Announced, ProbeWait
from interapp.plugins.xmpp.sasl import ScramKeys, StoredKeySCRAM, install
from interapp.plugins.xmpp.stanzas import Archived, InboxItem

install()
# slixmpp logs refused logins and certificate problems itself; this plug-in reports them as
# interapp errors, so keep them out of stderr when the application configured no logging.
logging.getLogger("slixmpp").addHandler(logging.NullHandler())

DEFAULT_PORT = 5222
CONNECT_TIMEOUT = 15.0
IQ_TIMEOUT = 10.0
DEFAULT_RETRY_AFTER = 5.0

# xep_0115 (entity capabilities) tells the server which PEP notifications the session wants
_SLIXMPP_PLUGINS = ("xep_0030", "xep_0054", "xep_0059", "xep_0203", "xep_0297", "xep_0313",
                    "xep_0199", "xep_0359", "xep_0115")
_RATE_CONDITIONS = {"resource-constraint", "policy-violation"}


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


@dataclass
class Attempt:
    """What one connection attempt learned before the session started (or failed)."""

    ready: asyncio.Future[None]
    auth_condition: str = ""
    auth_text: str = ""
    stream_error: str = ""
    tls_error: str = ""


class XmppSession(Plugin):
    """The session state of :class:`~interapp.plugins.xmpp.client.XmppPlugin` and its
    connection: at most one ``slixmpp.ClientXMPP``, built inside the running loop."""

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self.host, self.port = parse_server(target.server)
        self.tls = target.tls if target.tls is not None else not is_loopback(self.host)
        self.ca_file = target.options.get("ca_file") or None
        self._client: Any = None
        self._jid = ""
        self._lost: ConnectionLost | None = None
        self._dropped: asyncio.Future[None] | None = None
        self._inbox: asyncio.Queue[InboxItem] = asyncio.Queue()
        self._yielded: OrderedDict[str, None] = OrderedDict()  # messages streams yielded
        self._start_cursor = ""
        self._cursor = ""
        self._mam = False
        self._roster_jids: set[str] = set()
        self._requests: set[str] = set()  # incoming subscription requests not yet answered
        self._mam_results: dict[str, list[Any]] = {}
        self._send_errors: dict[str, asyncio.Future[tuple[str, str, str]]] = {}
        self._state: PresenceState = PresenceState.ONLINE
        self._status = ""
        self._show: str | None = None  # the <show> last sent (None: plain "available")
        self._priority = ONE_SHOT_PRIORITY  # raised once a stream wants live messages
        self._live = False
        self._probe: ProbeWait | None = None  # answers to the initial presence still awaited
        self._presence_news = asyncio.Event()
        self._announced = Announced()  # what the event streams said of each buddy
        self._inherited = False  # _announced came from a dropped predecessor
        self._closed_by_us = False

    # --- connection ------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.target.name} ({self.host}:{self.port})"

    def _handover_key(self) -> tuple[str, str, str]:
        """Which session a replacement of this one continues (see ``presence.hand_over``)."""
        return self.target.name, self.target.server, self._jid

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
        attempt = Attempt(ready=loop.create_future())

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
        self._priority, self._live, self._probe = ONE_SHOT_PRIORITY, False, None
        self._closed_by_us = False
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

    def _install_sasl_policy(self, client: Any, attempt: Attempt,
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

    def _auth_error(self, client: Any, attempt: Attempt, jid: str) -> InterappError:
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
        self._inbox.put_nowait(InboxItem("lost"))

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._lost is None:
            self._closed_by_us = True
            self._lost = ConnectionLost(f"the session with {self._where()} was closed")
            self._inbox.put_nowait(InboxItem("lost"))
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

    def _presence_payload(self, status: str) -> tuple[str, list[ET.Element]]:
        """The status text to send and the presence's extension elements (the rich-presence
        mixin adds the readable activity and its structured form where PEP is missing)."""
        return status, []

    def _send_own_presence(self, client: Any, *, pshow: str | None = None, status: str = "",
                           priority: int | None = None) -> None:
        """Send the session's available presence (show, status text, priority, extensions)."""
        text, extras = self._presence_payload(status)
        pres = client.make_presence(pshow=pshow, pstatus=text or None, ppriority=priority)
        for element in extras:
            pres.append(element)
        pres.send()

    async def _deliver(self, jid: str, body: str, msg_id: str,
                       extras: tuple[ET.Element, ...] = ()) -> None:
        """Send a chat message (stanza id and origin id ``msg_id``, extension elements
        ``extras``); the stanza error the server answers with, if any, is raised."""
        client = self._require()
        msg = client.make_message(mto=jid, mbody=body, mtype="chat")
        msg["id"] = msg_id
        msg["origin_id"]["id"] = msg_id
        for element in extras:
            msg.append(element)
        waiter: asyncio.Future[tuple[str, str, str]] = \
            asyncio.get_running_loop().create_future()
        self._send_errors[msg_id] = waiter
        try:
            msg.send()
            await self._round_trip(f"message to {jid}")
            if waiter.done():
                raise stanza_error(*waiter.result(), f"message to {jid}")
        finally:
            self._send_errors.pop(msg_id, None)

    def _message_event(self, message: Archived) -> tuple[str, dict[str, Any]]:
        """The event type and data of a received message (an invite or its answer are
        recognised by the rich-presence mixin)."""
        return "message", message.as_event_data()

    @abstractmethod
    def _install_handlers(self, client: Any) -> None:
        """Register the handlers of stanzas and events on a new ``client``."""
