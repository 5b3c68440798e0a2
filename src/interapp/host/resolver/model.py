"""Inputs, events and actions of the link-or-prompt resolver (plain frozen data).

See :mod:`interapp.host.resolver` for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from interapp import errors
from interapp.errors import InterappError
from interapp.host.lifecycle import LinkState
from interapp.plugins.contract import LinkWay, PromptField
from interapp.secret import Secret

_MASK: Final = "<redacted>"


class ProtocolError(InterappError):
    """The driver fed an event the resolver cannot take in its current state."""

    code = "resolver_protocol_error"


# --- input -------------------------------------------------------------------------------------


class WayReason(StrEnum):
    """Why a link way was chosen (a stable code; each face renders its own words)."""

    REQUESTED = "requested"
    """The user asked for it (``--via``)."""
    REMEMBERED = "remembered"
    """Re-authentication of a link made this way: the same way again."""
    HEADLESS = "headless"
    """No display to open a browser on (SSH, a console): the device code is shown instead."""
    MOST_SECURE = "most_secure"
    """The most secure way the target and this face both offer (browser > device >
    password)."""
    ONLY_WAY = "only_way"
    """The only way the target and this face both offer."""


class AccountSystem(StrEnum):
    """Whether the target trusts the local app's accounts (``shared``) or has its own."""

    SHARED = "shared"
    SEPARATE = "separate"


class Branch(StrEnum):
    """Which of the four branches of claim 1 connected (or is connecting)."""

    SHARED = "same-account-system"
    STORED = "stored-link"
    PROMPT = "prompt"
    REAUTH = "reauth"


class PromptReason(StrEnum):
    """Why the user is asked (a stable code; each face renders its own words and hints)."""

    NO_LINK = "no_link"
    """No link is stored: sign in once to make one (branch 3)."""
    REAUTH = "reauth"
    """The stored link is no longer accepted: sign in again as the same account (branch 4)."""
    RETRY = "retry"
    """The previous answer was refused: try again."""


@dataclass(frozen=True)
class LinkSnapshot:
    """The stored link for (local account, target) as the vault has it, without credential."""

    link_id: str
    remote_account_id: str
    remote_account_name: str
    state: str
    reason: str = ""
    """Why the link is in its state (e.g. the plug-in's words when a credential was refused)."""
    server: str = ""
    """The server the link's credential was issued by (it is never sent anywhere else)."""
    way: str = ""
    """The link way the link was made with (``browser``, ``device``, ``password``; empty when
    not recorded): re-authentication uses it again."""

    def __post_init__(self) -> None:
        try:
            lifecycle = LinkState(self.state)
        except ValueError:
            lifecycle = LinkState.UNLINKED
        if lifecycle is LinkState.UNLINKED:
            raise ValueError(
                "a stored link is linked, degraded, needs_reauth or revoked, "
                f"not {self.state!r}"
            )
        object.__setattr__(self, "state", lifecycle)

    @property
    def lifecycle(self) -> LinkState:
        """The link's state as a :class:`LinkState`."""
        return LinkState(self.state)


@dataclass(frozen=True)
class ResolveRequest:
    """Everything the resolver needs to decide how to connect ``local_account`` to ``target``."""

    target: str
    account_system: AccountSystem | Literal["shared", "separate"]
    supports_assertion: bool
    local_issuer: str
    local_account: str
    link: LinkSnapshot | None
    prompt_fields: tuple[PromptField, ...]
    interactive: bool
    max_attempts: int = 3
    requested_account: str | None = None
    """The remote account the user asked for (``--username``), if any: a stored link to another
    account is refused instead of being used silently."""
    server: str = ""
    """The server the target's configuration names now; a link made with another is refused."""
    ways: tuple[LinkWay | str, ...] = ()
    """The link ways both the target and the face offer (empty: ``password`` when there are
    ``prompt_fields``)."""
    offered_ways: tuple[LinkWay | str, ...] = ()
    """The link ways the target offers (for the explanation; empty: same as ``ways``)."""
    requested_way: LinkWay | str | None = None
    """The way the user asked for (``--via``), if any."""
    headless: bool = False
    """No display to open a browser on: the device way is preferred to the browser."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "account_system", AccountSystem(self.account_system))
        object.__setattr__(self, "prompt_fields", tuple(self.prompt_fields))
        object.__setattr__(self, "ways", tuple(LinkWay(w) for w in self.ways))
        object.__setattr__(self, "offered_ways", tuple(LinkWay(w) for w in self.offered_ways))
        if self.requested_way is not None:
            object.__setattr__(self, "requested_way", LinkWay(self.requested_way))
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        names = [f.name for f in self.prompt_fields]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError("prompt field names must be unique and non-empty")
        if LinkWay.PASSWORD in self.ways and not self.prompt_fields:
            raise ValueError(f"the password way for {self.target} needs prompt fields")
        if not self.uses_assertion and not self.prompt_fields and not self.ways and \
                not self.offered_ways:
            raise ValueError(
                f"the plug-in for {self.target} neither logs in with an assertion nor declares "
                "prompt fields"
            )

    @property
    def usable_ways(self) -> tuple[LinkWay, ...]:
        """The ways to choose from: ``ways``, else ``password`` when there are fields."""
        if self.ways:
            return tuple(LinkWay(w) for w in self.ways)
        return (LinkWay.PASSWORD,) if self.prompt_fields else ()

    @property
    def target_ways(self) -> tuple[LinkWay, ...]:
        """The ways the target offers (``offered_ways``, else :attr:`usable_ways`)."""
        if self.offered_ways:
            return tuple(LinkWay(w) for w in self.offered_ways)
        return self.usable_ways

    @property
    def uses_assertion(self) -> bool:
        """Whether branch 1 (assertion login) applies."""
        return self.account_system == AccountSystem.SHARED and self.supports_assertion

    @property
    def attempts_allowed(self) -> int:
        """How many prompt attempts one resolution may make (1 when not interactive)."""
        return self.max_attempts if self.interactive else 1


# --- events ------------------------------------------------------------------------------------


class Event:
    """Base of what the driver tells the resolver."""

    __slots__ = ()


@dataclass(frozen=True)
class AssertionObtained(Event):
    """The local app issued an assertion for the target (RFC 8693)."""

    assertion: Secret


@dataclass(frozen=True)
class AssertionRefused(Event):
    """The local app (or the target) would not issue or accept an assertion."""

    reason: str


@dataclass(frozen=True, repr=False)
class LoginSucceeded(Event):
    """The target accepted the login; ``credential`` is opaque to the resolver."""

    remote_account_id: str
    remote_account_name: str
    credential: object = field(hash=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"LoginSucceeded(remote_account_id={self.remote_account_id!r}, "
            f"remote_account_name={self.remote_account_name!r}, credential={_MASK})"
        )


@dataclass(frozen=True)
class LoginRefused(Event):
    """The target refused the credentials (bad password, revoked grant, refused refresh)."""

    reason: str


@dataclass(frozen=True)
class TargetUnavailable(Event):
    """The target (or the local app) could not be reached."""

    reason: str


def _freeze_answers(answers: Mapping[str, Secret | str]) -> Mapping[str, Secret | str]:
    return MappingProxyType(dict(answers))


def _mask_answers(answers: Mapping[str, Secret | str]) -> str:
    return "{" + ", ".join(f"{k!r}: {_MASK}" for k in answers) + "}"


@dataclass(frozen=True, repr=False)
class PromptAnswered(Event):
    """The user (or ``--username``/``--password-stdin``) answered the prompt."""

    answers: Mapping[str, Secret | str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "answers", _freeze_answers(self.answers))

    def __repr__(self) -> str:
        return f"PromptAnswered(answers={_mask_answers(self.answers)})"


@dataclass(frozen=True)
class PromptDeclined(Event):
    """The user cancelled the prompt."""


@dataclass(frozen=True)
class PromptUnavailable(Event):
    """No face can show a prompt (headless, no TTY, no ``--password-stdin``)."""


@dataclass(frozen=True)
class AuthorizationFailed(Event):
    """A browser or device authorization ended without a login: ``code`` is the RFC's error
    (``access_denied``, ``expired_token``, ``invalid_grant``) or ``authorization_mismatch``
    (wrong ``state``/``iss``); ``reason`` says it in words."""

    code: str
    reason: str


@dataclass(frozen=True)
class WayRefused(Event):
    """The target would not even start this link way for this host (its OAuth client lacks
    the grant or the loopback redirect URI, …): the next way offered is tried instead."""

    reason: str


#: Every event type, for exhaustive tests and drivers.
EVENT_TYPES: tuple[type[Event], ...] = (
    AssertionObtained,
    AssertionRefused,
    LoginSucceeded,
    LoginRefused,
    TargetUnavailable,
    PromptAnswered,
    PromptDeclined,
    PromptUnavailable,
    AuthorizationFailed,
    WayRefused,
)


# --- actions -----------------------------------------------------------------------------------


class Action:
    """Base of what the resolver asks the driver to do."""

    __slots__ = ()


@dataclass(frozen=True)
class RequestAssertion(Action):
    """Ask the local app for an assertion whose audience is ``audience_target`` (RFC 8693)."""

    audience_target: str


@dataclass(frozen=True)
class LoginWithAssertion(Action):
    """Log in to the target with the assertion (RFC 7523 jwt-bearer grant)."""

    assertion: Secret


@dataclass(frozen=True)
class LoginWithStoredCredential(Action):
    """Log in to the target with the credential stored in link ``link_id``."""

    link_id: str


@dataclass(frozen=True)
class Prompt(Action):
    """Ask the user for ``fields``; answer with PromptAnswered/Declined/Unavailable.

    ``reason_code`` says why (:class:`PromptReason`), ``reason`` in words; ``cause`` is what
    the target or plug-in said when it refused the stored credential or the last answer.
    """

    fields: tuple[PromptField, ...]
    reason: str
    attempt: int
    expected_account: str | None
    max_attempts: int = 1
    reason_code: PromptReason = PromptReason.NO_LINK
    cause: str = ""


@dataclass(frozen=True)
class Authorize(Action):
    """Link through the browser or with a device code (``way``); answer with
    LoginSucceeded, LoginRefused, AuthorizationFailed, PromptDeclined, PromptUnavailable or
    TargetUnavailable.

    ``way_reason`` says why this way (:class:`WayReason`); ``reason``/``reason_code``/
    ``cause``/``expected_account`` are as for :class:`Prompt`.
    """

    way: LinkWay
    way_reason: WayReason
    reason: str
    expected_account: str | None
    reason_code: PromptReason = PromptReason.NO_LINK
    cause: str = ""


@dataclass(frozen=True, repr=False)
class LoginWithAnswers(Action):
    """Log in to the target with the prompt's answers (secret fields are :class:`Secret`)."""

    answers: Mapping[str, Secret | str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "answers", _freeze_answers(self.answers))

    def __repr__(self) -> str:
        return f"LoginWithAnswers(answers={_mask_answers(self.answers)})"


@dataclass(frozen=True)
class MarkLink(Action):
    """Set link ``link_id`` to ``state``, recording ``reason``."""

    link_id: str
    state: LinkState
    reason: str


@dataclass(frozen=True, repr=False)
class StoreLink(Action):
    """Create a new link (state ``linked``) holding ``credential``."""

    remote_account_id: str
    remote_account_name: str
    credential: object = field(hash=False, compare=False)
    way: LinkWay = LinkWay.PASSWORD
    """The way the link was made (remembered for re-authentication)."""

    def __repr__(self) -> str:
        return (
            f"StoreLink(remote_account_id={self.remote_account_id!r}, "
            f"remote_account_name={self.remote_account_name!r}, credential={_MASK})"
        )


@dataclass(frozen=True, repr=False)
class RepairLink(Action):
    """Replace the credential of the existing link ``link_id`` and set it ``linked`` again."""

    link_id: str
    remote_account_id: str
    remote_account_name: str
    credential: object = field(hash=False, compare=False)
    way: LinkWay = LinkWay.PASSWORD
    """The way the link was repaired (remembered for the next re-authentication)."""

    def __repr__(self) -> str:
        return (
            f"RepairLink(link_id={self.link_id!r}, "
            f"remote_account_id={self.remote_account_id!r}, "
            f"remote_account_name={self.remote_account_name!r}, credential={_MASK})"
        )


@dataclass(frozen=True, repr=False)
class RevokeCredential(Action):
    """Revoke ``credential`` at the target (RFC 7009); it must not be kept."""

    credential: object = field(hash=False, compare=False)
    reason: str = ""

    def __repr__(self) -> str:
        return f"RevokeCredential(credential={_MASK}, reason={self.reason!r})"


@dataclass(frozen=True)
class RecordAudit(Action):
    """Append ``event`` with ``detail`` to the audit log (prompt events, link mismatch)."""

    event: str
    detail: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))

    def __repr__(self) -> str:
        return f"RecordAudit(event={self.event!r}, detail={dict(self.detail)!r})"


@dataclass(frozen=True)
class Connected(Action):
    """Terminal: connected. ``link_id`` is ``None`` for branch 1 and for a new link (branch 3:
    the driver knows the id it gave the link when performing :class:`StoreLink`)."""

    branch: Branch
    link_id: str | None
    remote_account_name: str
    way: LinkWay | None = field(default=None, compare=False)
    """The link way used to sign in (None when no sign-in was needed)."""
    way_reason: WayReason | None = field(default=None, compare=False)
    """Why that way (None when no sign-in was needed)."""


#: The :class:`AuthorizationFailed` codes that end a resolution with the same code.
AUTHORIZATION_FAILURES: frozenset[str] = frozenset(
    {"access_denied", "expired_token", "invalid_grant", "authorization_mismatch"})

#: Machine codes of :class:`Failed`.
FAILURE_CODES: frozenset[str] = frozenset(
    {
        "prompt_unavailable",
        "prompt_declined",
        "login_refused",
        "link_mismatch",
        "needs_reauth",
        "server_changed",
        "connection_lost",
        "assertion_refused",
        "way_unavailable",
        *AUTHORIZATION_FAILURES,
    }
)

_ERROR_FOR_CODE: Mapping[str, type[InterappError]] = {
    "prompt_unavailable": errors.PromptUnavailable,
    "link_mismatch": errors.LinkMismatch,
    "needs_reauth": errors.NeedsReauth,
    "server_changed": errors.ServerChanged,
    "connection_lost": errors.ConnectionLost,
    "login_refused": errors.LoginRefused,
    "prompt_declined": errors.PromptDeclined,
    "assertion_refused": errors.AssertionRefused,
    "way_unavailable": errors.WayUnavailable,
    "authorization_mismatch": errors.AuthorizationMismatch,
    "access_denied": errors.AccessDenied,
    "expired_token": errors.ExpiredToken,
    "invalid_grant": errors.InvalidGrant,
}


@dataclass(frozen=True)
class Failed(Action):
    """Terminal: could not connect. ``code`` is one of :data:`FAILURE_CODES`.

    ``message`` is a complete sentence without any face's commands in it; ``target``,
    ``account`` (the remote account concerned) and ``cause`` (the target's or plug-in's own
    words) let each face add its own hint.
    """

    code: str
    message: str
    target: str = ""
    account: str | None = None
    cause: str = ""

    def to_error(self) -> InterappError:
        """The :mod:`interapp.errors` exception to raise for this failure."""
        cls = _ERROR_FOR_CODE.get(self.code, errors.LinkError)
        if issubclass(cls, errors.LinkError):
            return cls(self.message, target=self.target or None, account=self.account,
                       cause=self.cause)
        error = cls(self.message)
        error.target = self.target or None
        return error
