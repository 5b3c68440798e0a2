"""Presence bookkeeping of the ``xmpp`` plug-in, without I/O.

* Priorities: a session sends its presence with :data:`ONE_SHOT_PRIORITY` (negative) until an
  event stream asks for live messages, then with :data:`LIVE_PRIORITY`. RFC 6121 §8.5.2.1.1:
  messages to the bare JID are not delivered to a resource with negative priority (the server
  stores them offline, for the user's other clients), and a server does not flush its offline
  store to such a resource.
* :class:`ProbeWait` — after its initial presence a session's server probes every contact the
  user is subscribed to (``to``/``both``) and relays their answers a few tens of milliseconds
  later. A one-shot read waits for them: until every such contact has answered, or no presence
  arrived for :data:`QUIET` seconds, and never longer than :data:`LIMIT` after the initial
  presence (ejabberd does not answer for offline contacts; Prosody sends ``unavailable``).
* :class:`Announced` — the last presence (state, status text) yielded per contact, so that a
  repeated identical presence is not a new event.
* :func:`hand_over` / :func:`take_over` — when a session's stream drops, the host starts a new
  plug-in instance for the same target and account; what the dropped stream announced passes
  to it, so a server restart does not announce everyone again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ONE_SHOT_PRIORITY = -1
LIVE_PRIORITY = 0
QUIET = 0.25  # seconds without any presence after which the answers are taken as complete
LIMIT = 0.8  # seconds after the initial presence a one-shot read waits at most


@dataclass
class ProbeWait:
    """Which subscribed contacts have not answered the initial presence's probes yet."""

    pending: set[str]
    started: float
    last: float = field(init=False)

    def __post_init__(self) -> None:
        self.last = self.started

    def heard(self, jid: str, now: float) -> None:
        """A presence from ``jid`` arrived at ``now``."""
        self.pending.discard(jid)
        self.last = max(self.last, now)

    def until(self) -> float:
        """The time at which waiting ends even if some contacts never answer."""
        return min(self.started + LIMIT, self.last + QUIET)

    def done(self, now: float) -> bool:
        """True when every contact answered or the wait is over."""
        return not self.pending or now >= self.until()


class Announced:
    """The last (state, status text) yielded for each contact."""

    def __init__(self, seen: dict[str, tuple[str, str]] | None = None) -> None:
        self.seen: dict[str, tuple[str, str]] = dict(seen or {})

    def fresh(self, jid: str, state: str, status: str) -> bool:
        """True (and remembered) when this differs from what was last announced for ``jid``."""
        if self.seen.get(jid) == (state, status):
            return False
        self.seen[jid] = (state, status)
        return True

    def available(self) -> list[str]:
        """Contacts last announced as anything but offline."""
        return [jid for jid, (state, _) in self.seen.items() if state != "offline"]


# Keyed by (target name, server URL, account): at most one entry per account a dropped stream
# watched, taken by the next session of that account in this process.
_HANDED_OVER: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = {}


def hand_over(key: tuple[str, str, str], announced: Announced) -> None:
    """Leave what a dropped stream announced for the session that replaces it."""
    if announced.seen:
        _HANDED_OVER[key] = dict(announced.seen)


def take_over(key: tuple[str, str, str]) -> Announced | None:
    """What the dropped predecessor of this session announced, if there was one."""
    seen = _HANDED_OVER.pop(key, None)
    return Announced(seen) if seen is not None else None


__all__ = ["LIMIT", "LIVE_PRIORITY", "ONE_SHOT_PRIORITY", "QUIET", "Announced", "ProbeWait",
           "hand_over", "take_over"]
