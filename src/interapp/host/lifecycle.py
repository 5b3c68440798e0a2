"""The life of one link (local account → remote account on a target), as a pure state machine.

Theory of operation
-------------------
A *link* is what the host stores after the user has proved, once, that they own an account on
an opposite application whose account system differs from the local one (branch 3 of the
resolver). Its stored credential is then used without prompting (branch 2) until the target
stops accepting it. The link's state says which of those situations holds (the arrows are the
main paths; :data:`TRANSITIONS` is authoritative)::

    unlinked ──login_ok──▶ linked ◀──connection_restored, login_ok── degraded
                           │ ▲  └─────────────connection_lost──────────▶ │
        credential_refused │ │ reauth_ok                                 │ credential_refused
                           ▼ │                                           │
                      needs_reauth ◀─────────────────────────────────────┘
                           │ ▲
            remote_revoked │ │ credential_refused
                           ▼ │
                        revoked ──reauth_ok──▶ linked

    remote_revoked: linked, degraded, needs_reauth ──▶ revoked
    unlink: every stored state ──▶ unlinked

* ``linked``       the stored credential works; connect without prompting.
* ``degraded``     the target was unreachable last time; the credential is presumed good and the
                   host retries with backoff (no prompt: a network error says nothing about the
                   password).
* ``needs_reauth`` the target refused the credential (password changed, refresh token refused,
                   grant revoked); the user must sign in again, and the *same* link is repaired.
* ``revoked``      the target told us the grant is gone; like ``needs_reauth`` until the user
                   signs in again (a refused credential moves it to ``needs_reauth``).
* ``unlinked``     no link (never made, or removed by the user); only a fresh login leaves it.

Events are the facts the host learns. :data:`TRANSITIONS` is the whole machine as data: a pair
that is not in it is impossible and :func:`next_state` raises :class:`LifecycleError`. Nothing
here does I/O; the resolver and the vault both consult this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from interapp.errors import InterappError

__all__ = [
    "STORED_STATES",
    "TRANSITIONS",
    "USABLE_STATES",
    "LifecycleError",
    "LinkEvent",
    "LinkState",
    "allowed_events",
    "is_usable",
    "next_state",
]


class LinkState(StrEnum):
    """The state of one link: the one link-state vocabulary (the vault stores these values;
    a stored link is never ``unlinked``)."""

    LINKED = "linked"
    DEGRADED = "degraded"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"
    UNLINKED = "unlinked"


class LinkEvent(StrEnum):
    """What the host learned about a link."""

    LOGIN_OK = "login_ok"
    """A login succeeded: a new link was made, or the stored credential was accepted."""
    CREDENTIAL_REFUSED = "credential_refused"
    """The target refused the stored credential (bad password, refresh refused, ...)."""
    CONNECTION_LOST = "connection_lost"
    """The target could not be reached."""
    CONNECTION_RESTORED = "connection_restored"
    """The target can be reached again."""
    REMOTE_REVOKED = "remote_revoked"
    """The target reported that the grant behind the credential was revoked."""
    REAUTH_OK = "reauth_ok"
    """The user signed in again and the link was repaired."""
    UNLINK = "unlink"
    """The user removed the link."""


class LifecycleError(InterappError):
    """An event that cannot happen to a link in its current state."""

    code = "link_lifecycle_error"


_S = LinkState
_E = LinkEvent

#: ``(state, event) → next state``. Every pair not listed is impossible.
TRANSITIONS: Mapping[tuple[LinkState, LinkEvent], LinkState] = (
    MappingProxyType(
        {
            # no link yet: only a successful first login creates one
            (_S.UNLINKED, _E.LOGIN_OK): _S.LINKED,
            # linked: the normal, promptless state
            (_S.LINKED, _E.LOGIN_OK): _S.LINKED,
            (_S.LINKED, _E.CREDENTIAL_REFUSED): _S.NEEDS_REAUTH,
            (_S.LINKED, _E.CONNECTION_LOST): _S.DEGRADED,
            (_S.LINKED, _E.REMOTE_REVOKED): _S.REVOKED,
            (_S.LINKED, _E.UNLINK): _S.UNLINKED,
            # degraded: the network failed, the credential is presumed good
            (_S.DEGRADED, _E.LOGIN_OK): _S.LINKED,
            (_S.DEGRADED, _E.CONNECTION_RESTORED): _S.LINKED,
            (_S.DEGRADED, _E.CONNECTION_LOST): _S.DEGRADED,
            (_S.DEGRADED, _E.CREDENTIAL_REFUSED): _S.NEEDS_REAUTH,
            (_S.DEGRADED, _E.REMOTE_REVOKED): _S.REVOKED,
            (_S.DEGRADED, _E.UNLINK): _S.UNLINKED,
            # needs_reauth: only the user signing in again repairs it; the network
            # coming or going does not change the fact that the credential is bad
            (_S.NEEDS_REAUTH, _E.REAUTH_OK): _S.LINKED,
            (_S.NEEDS_REAUTH, _E.CREDENTIAL_REFUSED): _S.NEEDS_REAUTH,
            (_S.NEEDS_REAUTH, _E.CONNECTION_LOST): _S.NEEDS_REAUTH,
            (_S.NEEDS_REAUTH, _E.CONNECTION_RESTORED): _S.NEEDS_REAUTH,
            (_S.NEEDS_REAUTH, _E.REMOTE_REVOKED): _S.REVOKED,
            (_S.NEEDS_REAUTH, _E.UNLINK): _S.UNLINKED,
            # revoked: as needs_reauth; a refusal while re-authenticating demotes it
            (_S.REVOKED, _E.REAUTH_OK): _S.LINKED,
            (_S.REVOKED, _E.CREDENTIAL_REFUSED): _S.NEEDS_REAUTH,
            (_S.REVOKED, _E.CONNECTION_LOST): _S.REVOKED,
            (_S.REVOKED, _E.CONNECTION_RESTORED): _S.REVOKED,
            (_S.REVOKED, _E.REMOTE_REVOKED): _S.REVOKED,
            (_S.REVOKED, _E.UNLINK): _S.UNLINKED,
        }
    )
)

#: States in which a link exists in the vault.
STORED_STATES: frozenset[LinkState] = frozenset(
    {_S.LINKED, _S.DEGRADED, _S.NEEDS_REAUTH, _S.REVOKED}
)

#: States in which the stored credential may be tried without prompting (branch 2).
USABLE_STATES: frozenset[LinkState] = frozenset({_S.LINKED, _S.DEGRADED})


def next_state(
    state: LinkState | str, event: LinkEvent | str
) -> LinkState:
    """Return the state a link in ``state`` moves to on ``event``.

    Accepts the enum members or their string values. Raises :class:`LifecycleError` for an
    unknown state or event and for a pair that is not in :data:`TRANSITIONS`.
    """
    try:
        s = LinkState(state)
    except ValueError:
        raise LifecycleError(f"unknown link state {state!r}") from None
    try:
        e = LinkEvent(event)
    except ValueError:
        raise LifecycleError(f"unknown link event {event!r}") from None
    try:
        return TRANSITIONS[(s, e)]
    except KeyError:
        raise LifecycleError(f"a link in state {s} cannot take event {e}") from None


def allowed_events(state: LinkState | str) -> frozenset[LinkEvent]:
    """Return the events a link in ``state`` can take."""
    try:
        s = LinkState(state)
    except ValueError:
        raise LifecycleError(f"unknown link state {state!r}") from None
    return frozenset(e for (st, e) in TRANSITIONS if st is s)


def is_usable(state: LinkState | str) -> bool:
    """Return whether a link in ``state`` may be used without prompting."""
    return LinkState(state) in USABLE_STATES
