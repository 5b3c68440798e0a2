"""The one presence vocabulary, shared by the server, the plug-ins, the host and every face.

A network with a richer or poorer vocabulary maps to and from these four states in its
plug-in (XMPP ``chat``/``xa``/``dnd``, Matrix ``unavailable``); nothing else defines them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["MAX_STATUS_TEXT", "PRESENCE_STATES", "PresenceState", "parse_presence"]


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
