"""The one presence vocabulary, shared by the server, the plug-ins, the host and every face.

A network with a richer or poorer vocabulary maps to and from these four states in its
plug-in (XMPP ``chat``/``xa``/``dnd``, Matrix ``unavailable``); nothing else defines them.

Rich presence
-------------
Beside the state, a user may show an :class:`Activity` (what they play: a name, details, a
state, a party, when it started and where to join). Its JSON form (:meth:`Activity.to_json`)
is the one every network carries where it can — natively on interapp, as a structured
attachment elsewhere — and :func:`render_activity` is the readable text for a network (or a
face) that cannot carry the structure. :func:`render_invite` is the readable fallback body of
an invite. Every size is bounded and checked on the way in (:meth:`Activity.from_json`), so a
value from the wire can be stored and shown as it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from interapp.errors import InvalidActivity

__all__ = [
    "MAX_ACTIVITY_TEXT", "MAX_INVITE_MESSAGE", "MAX_JOIN_URL", "MAX_PARTY_SIZE",
    "MAX_STATUS_TEXT", "PRESENCE_STATES", "Activity", "Join", "Party", "PresenceState",
    "activity_from_json", "check_join_url", "iso_utc", "parse_iso_utc", "parse_presence",
    "render_activity", "render_invite",
]


class PresenceState(StrEnum):
    """Whether a user is there, and how willing to talk."""

    ONLINE = "online"
    AWAY = "away"
    BUSY = "busy"
    OFFLINE = "offline"


#: Every state, in order from most to least available (the order faces sort buddies by).
PRESENCE_STATES: Final[tuple[PresenceState, ...]] = tuple(PresenceState)

#: The longest status text the server stores and the faces accept.
MAX_STATUS_TEXT: Final = 256


def parse_presence(value: str) -> PresenceState:
    """``value`` as a :class:`PresenceState`; ValueError naming the allowed states."""
    try:
        return PresenceState(value)
    except ValueError:
        allowed = ", ".join(PRESENCE_STATES)
        raise ValueError(f"presence state must be one of {allowed}, not {value[:40]!r}") from None


# --- rich presence: the activity ----------------------------------------------------------------

#: The longest ``name``, ``details``, ``state`` and party ``id`` of an activity.
MAX_ACTIVITY_TEXT: Final = 128
#: The largest party ``size`` and ``max``.
MAX_PARTY_SIZE: Final = 1000
#: The longest join URL.
MAX_JOIN_URL: Final = 2048
#: The longest invite message.
MAX_INVITE_MESSAGE: Final = 500

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")
#: Schemes a join link may never have: they run code or read local data where they are opened.
_REFUSED_SCHEMES: Final = frozenset({"javascript", "data", "vbscript", "file", "blob", "about",
                                     "filesystem", "view-source", "jar", "chrome"})
_SEP: Final = " · "


def _text(value: object, what: str, limit: int = MAX_ACTIVITY_TEXT,
          code: type[Exception] = InvalidActivity) -> str | None:
    """``value`` as bounded one-line text (``None``/empty → ``None``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise code(f"{what} must be a string")
    if len(value) > limit:
        raise code(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise code(f"{what} may not contain control characters or line breaks")
    value = value.strip()
    return value or None


def check_join_url(url: object, what: str = "join url",
                   code: type[Exception] = InvalidActivity) -> str:
    """``url`` if it is an acceptable join link: http(s) with a host, or an application's own
    scheme (``steam://``, ``arena://…``) — never one that runs code or reads local files."""
    if not isinstance(url, str) or not url:
        raise code(f"{what} must be a non-empty string")
    if len(url) > MAX_JOIN_URL:
        raise code(f"{what} is longer than {MAX_JOIN_URL} characters")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        raise code(f"{what} may not contain spaces or control characters")
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme) or scheme in _REFUSED_SCHEMES:
        raise code(f"{what} must be an http(s) link or an application's own scheme")
    if scheme in ("http", "https"):
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not host:
            raise code(f"{what} must name a host")
    return url


def _count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidActivity(f"{what} must be a whole number")
    if not 1 <= value <= MAX_PARTY_SIZE:
        raise InvalidActivity(f"{what} must be between 1 and {MAX_PARTY_SIZE}")
    return value


def iso_utc(when: datetime) -> str:
    """``when`` as RFC 3339 UTC with milliseconds and ``Z`` (the server's time format)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso_utc(value: object, what: str = "time",
                  code: type[Exception] = InvalidActivity) -> datetime:
    """An RFC 3339 time *with* an offset, as an aware UTC datetime (to the millisecond)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise code(f"{what} must be an ISO 8601 time") from None
    else:
        raise code(f"{what} must be an ISO 8601 time")
    if when.tzinfo is None or when.utcoffset() is None:
        raise code(f"{what} must carry a UTC offset (e.g. 2026-01-01T12:00:00Z)")
    # to the millisecond, as the wire form carries it: a value survives a round trip equal
    return when.astimezone(UTC).replace(microsecond=when.microsecond // 1000 * 1000)


def _keys(obj: Mapping[str, Any], allowed: tuple[str, ...], what: str, strict: bool) -> None:
    if strict:
        extra = sorted(set(obj) - set(allowed))
        if extra:
            raise InvalidActivity(f"{what} has unknown field {extra[0][:40]!r}")


@dataclass(frozen=True)
class Party:
    """The group the user plays in: an id (to match friends in the same party), its size and
    its capacity (``size`` ≤ ``max``, each 1…1000)."""

    id: str | None = None
    size: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", _text(self.id, "party id"))
        _count(self.size, "party size")
        _count(self.max, "party max")
        if self.size is not None and self.max is not None and self.size > self.max:
            raise InvalidActivity("party size is larger than its max")

    def to_json(self) -> dict[str, Any]:
        """``{"id", "size", "max"}``."""
        return {"id": self.id, "size": self.size, "max": self.max}

    @classmethod
    def from_json(cls, obj: object, *, strict: bool = True) -> Party:
        """A party from its JSON form; :class:`~interapp.errors.InvalidActivity` if malformed."""
        if not isinstance(obj, Mapping):
            raise InvalidActivity("party must be an object")
        _keys(obj, ("id", "size", "max"), "party", strict)
        return cls(id=obj.get("id"), size=obj.get("size"), max=obj.get("max"))


@dataclass(frozen=True)
class Join:
    """Where a friend joins the user's game (an http(s) link or an application's own scheme)."""

    url: str

    def __post_init__(self) -> None:
        check_join_url(self.url)

    def to_json(self) -> dict[str, Any]:
        """``{"url"}``."""
        return {"url": self.url}

    @classmethod
    def from_json(cls, obj: object, *, strict: bool = True) -> Join:
        """A join from its JSON form; :class:`~interapp.errors.InvalidActivity` if malformed."""
        if not isinstance(obj, Mapping):
            raise InvalidActivity("join must be an object")
        _keys(obj, ("url",), "join", strict)
        return cls(url=obj.get("url"))  # type: ignore[arg-type]  # checked in __post_init__


@dataclass(frozen=True)
class Activity:
    """What the user is doing, beside their presence state (every field optional).

    Built directly or with :meth:`from_json`; either way the values are checked (sizes,
    one-line text, an aware ``started_at``, a safe join link) and
    :class:`~interapp.errors.InvalidActivity` names the first problem.
    """

    name: str | None = None
    details: str | None = None
    state: str | None = None
    party: Party | None = None
    started_at: datetime | None = None
    join: Join | None = None

    def __post_init__(self) -> None:
        for what in ("name", "details", "state"):
            object.__setattr__(self, what, _text(getattr(self, what), f"activity {what}"))
        if self.party is not None and not isinstance(self.party, Party):
            raise InvalidActivity("party must be a Party")
        if self.join is not None and not isinstance(self.join, Join):
            raise InvalidActivity("join must be a Join")
        if self.started_at is not None:
            object.__setattr__(self, "started_at",
                               parse_iso_utc(self.started_at, "started_at"))

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"name", "details", "state", "party": {"id", "size", "max"} | null,
        "started_at": ISO | null, "join": {"url"} | null}``."""
        return {"name": self.name, "details": self.details, "state": self.state,
                "party": None if self.party is None else self.party.to_json(),
                "started_at": None if self.started_at is None else iso_utc(self.started_at),
                "join": None if self.join is None else self.join.to_json()}

    @classmethod
    def from_json(cls, obj: object, *, strict: bool = True) -> Activity:
        """An activity from its JSON form, validated.

        ``strict`` (the default) refuses unknown fields; a plug-in reading another client's
        structured form may pass ``strict=False`` to ignore fields a newer version added.
        """
        if not isinstance(obj, Mapping):
            raise InvalidActivity("activity must be an object or null")
        _keys(obj, ("name", "details", "state", "party", "started_at", "join"), "activity",
              strict)
        party, join, started = obj.get("party"), obj.get("join"), obj.get("started_at")
        return cls(name=obj.get("name"), details=obj.get("details"), state=obj.get("state"),
                   party=None if party is None else Party.from_json(party, strict=strict),
                   started_at=None if started is None else parse_iso_utc(started, "started_at"),
                   join=None if join is None else Join.from_json(join, strict=strict))

    @property
    def is_empty(self) -> bool:
        """True when no field is set."""
        return self == Activity()


def activity_from_json(obj: object, *, strict: bool = True) -> Activity | None:
    """:meth:`Activity.from_json`, with ``None`` (JSON ``null``) for no activity."""
    return None if obj is None else Activity.from_json(obj, strict=strict)


def _elapsed(started: datetime, now: datetime) -> str | None:
    seconds = (now - started).total_seconds()
    if seconds < 0:
        return None
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d"


def render_activity(activity: Activity | None, now: datetime | None = None) -> str:
    """The readable text of ``activity``: ``"Arena · Ranked 2v2 · level 7 · 2/4 · 12 min"``.

    Name, details, state, party (``size/max``) and the time since ``started_at`` (as of
    ``now``, default the current time), those that are set, joined by `` · ``; at most
    :data:`MAX_STATUS_TEXT` characters, so it fits any network's status text.
    """
    if activity is None:
        return ""
    parts = [p for p in (activity.name, activity.details, activity.state) if p]
    party = activity.party
    if party is not None and party.size is not None:
        parts.append(f"{party.size}/{party.max}" if party.max is not None else
                     f"party of {party.size}")
    if activity.started_at is not None:
        elapsed = _elapsed(activity.started_at, now or datetime.now(UTC))
        if elapsed:
            parts.append(elapsed)
    text = _SEP.join(parts)
    return text if len(text) <= MAX_STATUS_TEXT else text[:MAX_STATUS_TEXT - 1] + "…"


def render_invite(activity: Activity | None, join_url: str | None, message: str = "",
                  now: datetime | None = None) -> str:
    """The readable fallback body of an invite, with the join link, for a network that
    carries no structured invite: ``"Join me in Arena · Ranked 2v2 · 2/4: URL — message"``."""
    what = render_activity(activity, now)
    url = join_url or (activity.join.url if activity and activity.join else None)
    line = f"Join me in {what}" if what else "Join me"
    if url:
        line += f": {url}"
    if message:
        line += f" — {message}"
    return line
