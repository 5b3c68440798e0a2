"""The one plug-in contract: what a plug-in declares, and what it implements.

Theory of operation
-------------------
A plug-in is announced by an entry point in the group ``interapp.plugins`` whose object is a
:class:`PluginSpec`: *static metadata only* (name, version, the account fields it accepts, its
capabilities) plus the dotted path of its implementation. The host lists and checks specs without
importing any network library; only :meth:`PluginSpec.load` imports the implementation, when a
target that uses it is started. The shipped ``interapp`` plug-in is registered exactly this way,
in ``pyproject.toml``, like a third party's would be.

An implementation subclasses :class:`Plugin` and is built per target. The host drives it:

* ``login(answers)`` — different account systems: the user's account information for the
  target (fields from ``spec.account_fields``); returns a :class:`Login` with the credential the
  vault will keep (never a password when the target can issue tokens);
* ``login_with_assertion(assertion)`` — same account system: an RFC 7523 assertion minted by the
  local application;
* ``refresh(credential)`` — rotate a credential; the host saves the result *before* using it;
* ``open(credential)`` — start a session with a credential; then ``profile``, ``buddies``,
  ``send``, ``history``, ``set_presence``, buddy requests and ``events`` (resumable by cursor);
* ``revoke(credential)`` — give the grant back to the target (RFC 7009 for OAuth targets);
* ``close()``.

Rich presence and invites (optional; the defaults raise :class:`~interapp.errors.Unsupported`,
and the host falls back): ``set_activity(activity)`` shows an
:class:`~interapp.presence.Activity` (the host falls back to :func:`render_activity` text in
the status via ``set_presence``); ``invite``, ``answer_invite`` and ``invites`` send, answer and
list :class:`Invite` s (the host falls back to a readable message with the join link). Buddies
carry their ``activity``; events of type ``activity``, ``invite`` and ``invite_answer`` (and an
``activity`` field on ``presence`` events) bring changes. ``PluginSpec.activity`` and
``PluginSpec.invites`` declare, statically, how the network carries them.

Failures are :mod:`interapp.errors` classes: :class:`~interapp.errors.NeedsReauth` when the target
refuses the credential or the account information (wrong password, revoked grant),
:class:`~interapp.errors.ConnectionLost` when it cannot be reached, and
:class:`~interapp.errors.RateLimited` with ``retry_after`` when it asks to slow down.
"""

from __future__ import annotations

import importlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, Literal

from interapp.errors import ConfigError, InvalidInvite, MissingExtra, Unsupported, VaultError
from interapp.plugins.linkways import BrowserStart, DeviceStart, LinkWay
from interapp.presence import (
    MAX_INVITE_MESSAGE,
    Activity,
    PresenceState,
    activity_from_json,
    check_join_url,
    iso_utc,
    parse_iso_utc,
)
from interapp.secret import HiddenMapping, Secret, constant_time_equals

__all__ = [
    "ACTIVITY_SUPPORT", "EVENT_ACTIVITY", "EVENT_INVITE", "EVENT_INVITE_ANSWER",
    "INVITE_SUPPORT", "INVITE_TTL", "Activity", "ActivitySupport", "BrowserStart", "Buddy",
    "ChatMessage", "Credential", "DeviceStart", "Invite", "InviteState", "InviteSupport",
    "LinkWay", "Login", "Plugin", "PluginEvent", "PluginSpec", "PresenceState", "Profile",
    "PromptField", "TargetConfig",
]

#: How a network carries an activity: ``native`` (its own structured presence, e.g. interapp),
#: ``structured`` (a structured form attached where the network allows: XMPP PEP, a Matrix
#: account-data event; readable text beside it) or ``text`` (only the readable status text).
ActivitySupport = Literal["native", "structured", "text"]
ACTIVITY_SUPPORT: Final[tuple[str, ...]] = ("native", "structured", "text")
#: How a network carries invites: ``native`` (its own invite objects), ``message`` (a message
#: with the structured form attached and a readable body) or ``None`` (not at all).
InviteSupport = Literal["native", "message"] | None
INVITE_SUPPORT: Final[tuple[str | None, ...]] = ("native", "message", None)

#: PluginEvent types of rich presence: a buddy's activity changed (``data``: ``username``,
#: ``activity`` — JSON or null); an invite arrived (``data``: ``invite`` — :meth:`Invite.to_json`);
#: an invite the user sent was answered or expired (``data``: ``invite``).
EVENT_ACTIVITY: Final = "activity"
EVENT_INVITE: Final = "invite"
EVENT_INVITE_ANSWER: Final = "invite_answer"
#: How long an invite stays open unless the network says otherwise (seconds).
INVITE_TTL: Final = 600

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class PromptField:
    """One field the plug-in asks for (e.g. ``username``, or ``password`` with ``secret``)."""

    name: str
    label: str
    secret: bool = False


@dataclass(frozen=True, eq=False, repr=False)
class Credential:
    """What a plug-in keeps to log in again: a ``kind`` and named string ``fields``.

    ``kind`` names the scheme (``"oauth_tokens"``, ``"matrix_session"``, ``"xmpp_scram"``,
    ...); the fields are whatever that scheme needs. The vault stores it only encrypted; its
    ``repr``/``str`` (and that of ``fields``) show field *names* only, it refuses to be
    pickled, and equality is constant-time.
    """

    kind: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise VaultError("a credential needs a non-empty kind")
        for name, value in self.fields.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise VaultError("credential field names and values must be str")
        object.__setattr__(self, "fields", HiddenMapping(self.fields))

    def get(self, name: str) -> str | None:
        """The value of field ``name``, or ``None``."""
        return self.fields.get(name)

    def secret(self, name: str) -> Secret | None:
        """The value of field ``name`` wrapped in a :class:`Secret`, or ``None``."""
        value = self.fields.get(name)
        return None if value is None else Secret(value)

    def to_json(self) -> bytes:
        """Canonical JSON bytes (what the vault encrypts)."""
        doc = {"v": 1, "kind": self.kind, "fields": dict(self.fields)}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Credential:
        """Rebuild a credential from :meth:`to_json` output."""
        try:
            doc = json.loads(data)
            kind, fields = doc["kind"], doc["fields"]
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultError("stored credential is not valid JSON") from exc
        if not isinstance(kind, str) or not isinstance(fields, dict):
            raise VaultError("stored credential has the wrong shape")
        return cls(kind=kind, fields=fields)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.fields))
        return f"Credential(kind={self.kind!r}, fields=[{names}])"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credential):
            return NotImplemented
        return constant_time_equals(self.to_json(), other.to_json())

    def __hash__(self) -> int:
        return hash(("Credential", self.kind, tuple(sorted(self.fields))))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credential values are not picklable")


@dataclass(frozen=True)
class PluginSpec:
    """Static metadata of a plug-in, importable without its heavy dependencies."""

    name: str
    version: str
    description: str
    implementation: str  # "package.module:ClassName"
    account_fields: tuple[PromptField, ...]
    supports_refresh: bool = False
    supports_presence: bool = True
    supports_history: bool = True
    supports_assertion: bool = False
    supports_revocation: bool = True
    credential_kinds: tuple[str, ...] = ()
    url_schemes: tuple[str, ...] = ("http", "https")
    extra: str = ""
    """The pip extra the implementation needs (``pip install 'interapp[EXTRA]'``), if any."""
    activity: ActivitySupport = "text"
    """How the network carries an activity (see :data:`ActivitySupport`)."""
    invites: InviteSupport = None
    """How the network carries invites (see :data:`InviteSupport`)."""
    link_ways: tuple[str, ...] = ()
    """The ways a user can link an account of this target (:class:`LinkWay` values:
    ``browser``, ``device``, ``password``); empty means ``password`` when there are
    ``account_fields``. See :mod:`interapp.plugins.linkways`."""

    def ways(self) -> tuple[LinkWay, ...]:
        """The declared link ways, most secure first."""
        declared = {LinkWay(w) for w in self.link_ways}
        if not self.link_ways and self.account_fields:
            declared = {LinkWay.PASSWORD}
        return tuple(w for w in (LinkWay.BROWSER, LinkWay.DEVICE, LinkWay.PASSWORD)
                     if w in declared)

    def check(self, entry_point_name: str | None = None) -> None:
        """Validate the metadata; ConfigError naming the problem."""
        if not _NAME.match(self.name):
            raise ConfigError(f"plug-in name {self.name!r} is not valid")
        if entry_point_name is not None and entry_point_name != self.name:
            raise ConfigError(f"entry point {entry_point_name!r} announces plug-in {self.name!r}")
        if not re.match(r"^\d+(\.\d+)*", self.version):
            raise ConfigError(f"plug-in {self.name}: version {self.version!r} is not valid")
        if ":" not in self.implementation:
            raise ConfigError(f"plug-in {self.name}: implementation must be 'module:Class'")
        names = [f.name for f in self.account_fields]
        if len(set(names)) != len(names):
            raise ConfigError(f"plug-in {self.name}: account field names repeat")
        if self.activity not in ACTIVITY_SUPPORT:
            raise ConfigError(f"plug-in {self.name}: activity must be one of "
                              f"{', '.join(ACTIVITY_SUPPORT)}")
        if self.invites not in INVITE_SUPPORT:
            raise ConfigError(f"plug-in {self.name}: invites must be native, message or None")
        unknown = [w for w in self.link_ways if w not in set(LinkWay)]
        if unknown:
            raise ConfigError(f"plug-in {self.name}: unknown link way {unknown[0]!r} (use "
                              "browser, device or password)")

    def capabilities(self) -> dict[str, Any]:
        """Capabilities as plain data, for ``interapp plugins --json``."""
        return {"refresh": self.supports_refresh, "presence": self.supports_presence,
                "history": self.supports_history, "same_account_login": self.supports_assertion,
                "remote_revocation": self.supports_revocation,
                "activity": self.activity, "invites": self.invites,
                "link_ways": [str(w) for w in self.ways()],
                "account_fields": [{"name": f.name, "label": f.label, "secret": f.secret}
                                   for f in self.account_fields]}

    def load(self) -> type[Plugin]:
        """Import the implementation (the heavy part) and return its class."""
        module_name, _, attr = self.implementation.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if self.extra and exc.name and not exc.name.startswith("interapp"):
                raise MissingExtra(f"the {self.name} plug-in needs interapp's [{self.extra}] "
                                   f"part ({exc.name} is not installed)",
                                   extra=self.extra) from None
            raise
        cls = getattr(module, attr)
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise ConfigError(f"plug-in {self.name}: {self.implementation} is not a Plugin")
        return cls


@dataclass(frozen=True)
class TargetConfig:
    """One configured target (an opposite application), as the plug-in sees it."""

    name: str
    plugin: str
    server: str
    client_id: str | None = None
    client_secret: Secret | None = None
    account_system: Literal["shared", "separate"] = "separate"
    tls: bool | None = None
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Login:
    """A successful login: who the user is on the target, and what to keep."""

    remote_account_id: str
    remote_account_name: str
    credential: Credential


@dataclass(frozen=True)
class Profile:
    """The user's (or a buddy's) profile on the target."""

    id: str
    username: str
    display_name: str
    presence: str = "offline"
    status_text: str = ""


@dataclass(frozen=True)
class Buddy(Profile):
    """A buddy-list entry (``activity``: what they are doing, where the network carries it)."""

    groups: tuple[str, ...] = ()
    subscription: str = "both"
    activity: Activity | None = None


class InviteState(StrEnum):
    """Where an invite stands."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Invite:
    """An invitation to join the sender's activity (or a join link), from one user to a buddy.

    ``from_user``/``to_user`` are usernames on the target. ``created_at``/``expires_at`` are
    aware UTC times. Its JSON form (:meth:`to_json`: ``{"id", "from", "to", "activity",
    "join_url", "message", "created_at", "expires_at", "state"}``) is what the interapp server
    answers and what a message-based network attaches as the structured form.
    """

    id: str
    from_user: str
    to_user: str
    activity: Activity | None
    join_url: str | None
    message: str
    created_at: datetime
    expires_at: datetime
    state: InviteState = InviteState.PENDING

    def __post_init__(self) -> None:
        for what in ("id", "from_user", "to_user"):
            value = getattr(self, what)
            if not isinstance(value, str) or not value or len(value) > 256:
                raise InvalidInvite(f"invite {what} must be a non-empty string")
        if self.activity is not None and not isinstance(self.activity, Activity):
            raise InvalidInvite("invite activity must be an Activity")
        if self.join_url is not None:
            check_join_url(self.join_url, "invite join_url", InvalidInvite)
        if not isinstance(self.message, str) or len(self.message) > MAX_INVITE_MESSAGE:
            raise InvalidInvite(f"invite message must be text of at most {MAX_INVITE_MESSAGE} "
                                f"characters")
        for what in ("created_at", "expires_at"):
            object.__setattr__(self, what,
                               parse_iso_utc(getattr(self, what), f"invite {what}",
                                             InvalidInvite))
        object.__setattr__(self, "state", _invite_state(self.state))

    @property
    def url(self) -> str | None:
        """Where to join: the invite's own link, else its activity's."""
        if self.join_url:
            return self.join_url
        if self.activity is not None and self.activity.join is not None:
            return self.activity.join.url
        return None

    def is_open(self, now: datetime) -> bool:
        """True while pending and not past ``expires_at``."""
        return self.state is InviteState.PENDING and now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        """The wire form (see the class docstring)."""
        return {"id": self.id, "from": self.from_user, "to": self.to_user,
                "activity": None if self.activity is None else self.activity.to_json(),
                "join_url": self.join_url, "message": self.message,
                "created_at": iso_utc(self.created_at), "expires_at": iso_utc(self.expires_at),
                "state": str(self.state)}

    @classmethod
    def from_json(cls, obj: object, *, strict: bool = True) -> Invite:
        """An invite from :meth:`to_json`'s form; :class:`~interapp.errors.InvalidInvite` (or
        :class:`~interapp.errors.InvalidActivity` for its activity) when malformed."""
        if not isinstance(obj, Mapping):
            raise InvalidInvite("invite must be an object")
        try:
            return cls(id=obj["id"], from_user=obj["from"], to_user=obj["to"],
                       activity=activity_from_json(obj.get("activity"), strict=strict),
                       join_url=obj.get("join_url"), message=obj.get("message") or "",
                       created_at=obj["created_at"], expires_at=obj["expires_at"],
                       state=obj.get("state", "pending"))
        except KeyError as exc:
            raise InvalidInvite(f"invite has no {exc.args[0]!r}") from None


def _invite_state(value: object) -> InviteState:
    if isinstance(value, InviteState):
        return value
    try:
        return InviteState(str(value))
    except ValueError:
        raise InvalidInvite(f"invite state must be one of "
                            f"{', '.join(InviteState)}") from None


@dataclass(frozen=True)
class ChatMessage:
    """A message in a conversation."""

    id: str
    sender: str
    recipient: str
    body: str
    sent_at: str
    client_msg_id: str | None = None


@dataclass(frozen=True)
class PluginEvent:
    """A live event from the target, with the cursor to resume after it."""

    type: str  # "message" | "presence" | "contact_request" | "contact_added" | "activity" | ...
    cursor: str
    data: Mapping[str, Any]


class Plugin(ABC):
    """Base class of every plug-in implementation (see the module docstring)."""

    spec: ClassVar[PluginSpec]

    def __init__(self, target: TargetConfig) -> None:
        self.target = target

    @abstractmethod
    async def login(self, answers: Mapping[str, Secret | str]) -> Login:
        """Log in with the account information the user typed."""

    async def login_with_assertion(self, assertion: Secret) -> Login:
        """Log in with an assertion from the local application (same account system)."""
        raise ConfigError(f"plug-in {self.spec.name} has no same-account login")

    async def audience(self) -> str:
        """The target's issuer identifier (the audience of same-account assertions)."""
        return self.target.server

    # --- browser and device linking (see interapp.plugins.linkways) -------------------------

    async def available_link_ways(self) -> tuple[LinkWay, ...]:
        """The link ways this target offers now (default: the declared ones). A plug-in may
        narrow them, e.g. to what the server's metadata offers; ConnectionLost when it cannot
        tell because the target is unreachable."""
        return self.spec.ways()

    async def begin_browser(self, redirect_uri: str, state: str) -> BrowserStart:
        """Start a browser sign-in that will come back to ``redirect_uri`` (a loopback URI of
        the host) carrying ``state`` unchanged."""
        raise ConfigError(f"plug-in {self.spec.name} cannot link through the browser")

    async def finish_browser(self, start: BrowserStart, answer: Mapping[str, str]) -> Login:
        """Finish the sign-in from the query parameters the browser came back with (``state``
        and ``iss`` were already checked by the host). OAuth errors are raised as their
        :mod:`interapp.errors` classes (``InvalidGrant`` …)."""
        raise ConfigError(f"plug-in {self.spec.name} cannot link through the browser")

    async def begin_device(self) -> DeviceStart:
        """Start an RFC 8628 device authorization."""
        raise ConfigError(f"plug-in {self.spec.name} cannot link with a device code")

    async def poll_device(self, start: DeviceStart) -> Login:
        """Poll once: the login, or ``AuthorizationPending`` / ``PollingTooFast`` (keep
        polling, slower) / ``ExpiredToken`` / ``AccessDenied``."""
        raise ConfigError(f"plug-in {self.spec.name} cannot link with a device code")

    def prepare_refresh(self, credential: Credential) -> Credential:
        """The credential with the intent to refresh recorded (e.g. an idempotency key).

        The host saves this *before* calling :meth:`refresh`, so a refresh interrupted by a
        crash can be completed with the same intent after restart.
        """
        return credential

    def has_pending_refresh(self, credential: Credential) -> bool:
        """True when ``credential`` carries an unfinished refresh intent."""
        return False

    async def refresh(self, credential: Credential) -> Credential:
        """Rotate ``credential``; the default keeps it as is."""
        return credential

    def needs_refresh(self, credential: Credential, now: float) -> bool:
        """True when ``credential`` should be rotated before use."""
        return False

    @abstractmethod
    async def open(self, credential: Credential) -> Profile:
        """Start a session; return the user's profile (this also checks the credential)."""

    @abstractmethod
    async def buddies(self) -> list[Buddy]:
        """The buddy list."""

    async def add_buddy(self, username: str) -> None:
        """Ask ``username`` to become a buddy."""
        raise ConfigError(f"plug-in {self.spec.name} cannot add buddies")

    async def accept_buddy(self, username: str) -> None:
        """Accept ``username``'s buddy request."""
        raise ConfigError(f"plug-in {self.spec.name} cannot accept buddies")

    async def remove_buddy(self, username: str) -> None:
        """Remove ``username`` from the buddies."""
        raise ConfigError(f"plug-in {self.spec.name} cannot remove buddies")

    @abstractmethod
    async def send(self, to: str, body: str, client_msg_id: str) -> ChatMessage:
        """Send a message to a buddy (``client_msg_id`` makes retries safe)."""

    async def history(self, with_user: str, *, limit: int = 50,
                      before: str | None = None) -> list[ChatMessage]:
        """The conversation with ``with_user``, newest last.

        ``before`` is the id of a message from an earlier answer: the page then ends just
        before it (scrolling back).
        """
        return []

    async def set_presence(self, state: PresenceState, status_text: str) -> None:
        """Set the user's presence and status text (default: the target has no presence)."""
        raise ConfigError(f"plug-in {self.spec.name} has no presence")

    async def set_activity(self, activity: Activity | None) -> None:
        """Show ``activity`` (``None`` clears it) beside the user's presence.

        The default raises :class:`~interapp.errors.Unsupported`: the host then shows
        :func:`~interapp.presence.render_activity` text as the status (via
        :meth:`set_presence`), so a network that cannot carry it never yields an error.
        A plug-in that can carry only part (e.g. XMPP without PEP) sets the readable status
        text itself and returns.
        """
        raise Unsupported(f"plug-in {self.spec.name} carries no structured activity")

    async def invite(self, to: str, *, activity: Activity | None, join_url: str | None,
                     message: str, client_invite_id: str) -> Invite:
        """Invite buddy ``to`` to join ``activity`` or ``join_url`` (``client_invite_id``
        makes retries safe: the same id answers the same invite).

        The default raises :class:`~interapp.errors.Unsupported`: the host then sends the
        readable :func:`~interapp.presence.render_invite` text as a message.
        """
        raise Unsupported(f"plug-in {self.spec.name} carries no invites")

    async def answer_invite(self, invite_id: str, accept: bool) -> Invite:
        """Accept or decline a received invite; the answered invite."""
        raise Unsupported(f"plug-in {self.spec.name} carries no invites")

    async def invites(self) -> list[Invite]:
        """The open (pending) invites sent to and by the user."""
        raise Unsupported(f"plug-in {self.spec.name} carries no invites")

    @abstractmethod
    def events(self, cursor: str | None) -> AsyncIterator[PluginEvent]:
        """Live events after ``cursor`` (None: from now on)."""

    async def revoke(self, credential: Credential) -> None:
        """Revoke the grant behind ``credential`` at the target (default: nothing to revoke)."""
        return None

    async def close(self) -> None:
        """Release the session (default: nothing held)."""
        return None

    @classmethod
    def spec_of(cls) -> PluginSpec:
        """The plug-in's spec."""
        return cls.spec
