"""Link-or-prompt resolution (claim 1 of US 9,451,014) as a sans-I/O state machine.

Theory of operation
-------------------
The host wants to connect its logged-in *local account* to a *target* (an opposite
application). :class:`Resolver` decides **how**, without doing any I/O itself, in the manner of
h11 and matrix-nio: the driver calls :meth:`Resolver.start`, performs the *actions* it gets
back (log in, show a prompt, write the vault, ...), turns each outcome into an *event* and feeds
it to :meth:`Resolver.send`, which returns the next actions. The machine reads no clock, opens
no socket and never looks inside a credential; it only decides.

Four branches:

1. **Shared account system** (``account_system == "shared"`` and the plug-in supports
   assertion login): :class:`RequestAssertion` (RFC 8693 token exchange at the local app), then
   :class:`LoginWithAssertion` (RFC 7523 jwt-bearer grant at the target). No prompt, no link.
   A refusal at either step is recorded in the trace and the separate-system flow (2 or 3)
   takes over.
2. **Stored link** (link ``linked`` or ``degraded``): :class:`LoginWithStoredCredential`. No
   prompt. A refusal leads to branch 4; an unreachable target marks the link ``degraded`` and
   fails with ``connection_lost`` (the host retries with backoff; nobody is prompted because of
   a network error).
3. **No link**: :class:`Prompt` for the fields the plug-in declares, :class:`LoginWithAnswers`;
   *only on success* :class:`StoreLink`. Interactive prompts may be retried up to
   ``max_attempts``; non-interactive answers get exactly one attempt.
4. **Re-authentication** (link ``needs_reauth`` or ``revoked``, or refused in branch 2):
   :class:`MarkLink` ``needs_reauth``, prompt again, and on success :class:`RepairLink` — the
   *same* link. A login as a *different* remote account is refused: :class:`RevokeCredential`
   for the credential just obtained, then ``Failed("link_mismatch")``.

States (:class:`State`)::

    START ─┬─▶ AWAIT_ASSERTION ──▶ AWAIT_ASSERTION_LOGIN ──▶ DONE
           │        │ refused            │ refused
           │        ▼                    ▼
           ├─▶ AWAIT_STORED_LOGIN ──▶ DONE            (and ──unreachable──▶ FAILED)
           │        │ refused
           │        ▼
           └─▶ AWAIT_PROMPT ◀──▶ AWAIT_PROMPT_LOGIN ──▶ DONE | FAILED

Each :meth:`~Resolver.send` returns a list of actions; at most one of them waits for an event
(:class:`RequestAssertion`, a ``Login*`` or :class:`Prompt`) and it comes last, or the list ends
with the terminal :class:`Connected` / :class:`Failed`. Actions before it (:class:`MarkLink`,
:class:`RecordAudit`, :class:`StoreLink`, ...) are side effects to perform in order.

The whole machine is the table :data:`TRANSITIONS`, ``(state, event type) → handler``; any
other pair raises :class:`ProtocolError`. Every step is appended to :attr:`Resolver.trace`
with a human note, rendered by :meth:`Resolver.explain` (``--explain``). Secrets only travel
inside :class:`~interapp.secret.Secret` or opaque credentials, and every repr, note and message
masks them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from interapp import errors
from interapp.errors import InterappError
from interapp.host.lifecycle import (
    USABLE_STATES,
    LinkEvent,
    LinkLifecycleState,
    next_state,
)
from interapp.secret import Secret

__all__ = [
    "EVENT_TYPES",
    "FAILURE_CODES",
    "TRANSITIONS",
    "AccountSystem",
    "Action",
    "AssertionObtained",
    "AssertionRefused",
    "Branch",
    "Connected",
    "Event",
    "Failed",
    "LinkSnapshot",
    "LoginRefused",
    "LoginSucceeded",
    "LoginWithAnswers",
    "LoginWithAssertion",
    "LoginWithStoredCredential",
    "MarkLink",
    "Prompt",
    "PromptAnswered",
    "PromptDeclined",
    "PromptField",
    "PromptUnavailable",
    "ProtocolError",
    "RecordAudit",
    "RepairLink",
    "RequestAssertion",
    "ResolveRequest",
    "Resolver",
    "RevokeCredential",
    "State",
    "StoreLink",
    "TargetUnavailable",
    "TraceStep",
    "connect_commands",
    "unlink_command",
]

_MASK: Final = "<redacted>"


class ProtocolError(InterappError):
    """The driver fed an event the resolver cannot take in its current state."""

    code = "resolver_protocol_error"


def connect_commands(target: str) -> tuple[str, str]:
    """Return the interactive and the non-interactive command that link ``target``."""
    return (
        f"interapp connect {target}",
        f"interapp connect {target} --username U --password-stdin",
    )


def unlink_command(target: str) -> str:
    """Return the command that removes the link to ``target``."""
    return f"interapp unlink {target}"


# --- input -------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class PromptField:
    """One field the plug-in asks for (e.g. ``username``, or ``password`` with ``secret``)."""

    name: str
    label: str
    secret: bool = False


@dataclass(frozen=True)
class LinkSnapshot:
    """The stored link for (local account, target) as the vault has it, without credential."""

    link_id: str
    remote_account_id: str
    remote_account_name: str
    state: str

    def __post_init__(self) -> None:
        try:
            lifecycle = LinkLifecycleState(self.state)
        except ValueError:
            lifecycle = LinkLifecycleState.UNLINKED
        if lifecycle is LinkLifecycleState.UNLINKED:
            raise ValueError(
                "a stored link is linked, degraded, needs_reauth or revoked, "
                f"not {self.state!r}"
            )
        object.__setattr__(self, "state", lifecycle)

    @property
    def lifecycle(self) -> LinkLifecycleState:
        """The link's state as a :class:`LinkLifecycleState`."""
        return LinkLifecycleState(self.state)


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "account_system", AccountSystem(self.account_system))
        object.__setattr__(self, "prompt_fields", tuple(self.prompt_fields))
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        names = [f.name for f in self.prompt_fields]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError("prompt field names must be unique and non-empty")
        if not self.uses_assertion and not self.prompt_fields:
            raise ValueError(
                f"the plug-in for {self.target} neither logs in with an assertion nor declares "
                "prompt fields"
            )

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
    """Ask the user for ``fields``; answer with PromptAnswered/Declined/Unavailable."""

    fields: tuple[PromptField, ...]
    reason: str
    attempt: int
    expected_account: str | None
    max_attempts: int = 1


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
    state: LinkLifecycleState
    reason: str


@dataclass(frozen=True, repr=False)
class StoreLink(Action):
    """Create a new link (state ``linked``) holding ``credential``."""

    remote_account_id: str
    remote_account_name: str
    credential: object = field(hash=False, compare=False)

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


#: Machine codes of :class:`Failed`.
FAILURE_CODES: frozenset[str] = frozenset(
    {
        "prompt_unavailable",
        "prompt_declined",
        "login_refused",
        "link_mismatch",
        "connection_lost",
        "assertion_refused",
    }
)

_ERROR_FOR_CODE: Mapping[str, type[InterappError]] = {
    "prompt_unavailable": errors.PromptUnavailable,
    "link_mismatch": errors.LinkMismatch,
    "connection_lost": errors.ConnectionLost,
    "login_refused": errors.LinkError,
    "prompt_declined": errors.LinkError,
    "assertion_refused": errors.LinkError,
}


@dataclass(frozen=True)
class Failed(Action):
    """Terminal: could not connect. ``code`` is one of :data:`FAILURE_CODES`."""

    code: str
    message: str

    def to_error(self) -> InterappError:
        """The :mod:`interapp.errors` exception to raise for this failure."""
        return _ERROR_FOR_CODE.get(self.code, errors.LinkError)(self.message)


# --- the machine -------------------------------------------------------------------------------


class State(StrEnum):
    """Where the resolver is; ``AWAIT_*`` states wait for the event the last action asked for."""

    START = "start"
    AWAIT_ASSERTION = "await_assertion"
    AWAIT_ASSERTION_LOGIN = "await_assertion_login"
    AWAIT_STORED_LOGIN = "await_stored_login"
    AWAIT_PROMPT = "await_prompt"
    AWAIT_PROMPT_LOGIN = "await_prompt_login"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class TraceStep:
    """One step of a resolution: the state it started in, the event, the actions, and why."""

    state_before: State
    event: str
    actions: tuple[str, ...]
    note: str


_S = State

#: The whole machine: ``(state, event type) → name of the Resolver method handling it``.
#: Every pair not listed raises :class:`ProtocolError`; ``START``, ``DONE`` and ``FAILED`` take
#: no events (``start()`` leaves ``START``).
TRANSITIONS: Mapping[tuple[State, type[Event]], str] = MappingProxyType(
    {
        (_S.AWAIT_ASSERTION, AssertionObtained): "_on_assertion_obtained",
        (_S.AWAIT_ASSERTION, AssertionRefused): "_on_assertion_refused",
        (_S.AWAIT_ASSERTION, TargetUnavailable): "_on_assertion_unreachable",
        (_S.AWAIT_ASSERTION_LOGIN, LoginSucceeded): "_on_assertion_login_ok",
        (_S.AWAIT_ASSERTION_LOGIN, LoginRefused): "_on_assertion_refused",
        (_S.AWAIT_ASSERTION_LOGIN, AssertionRefused): "_on_assertion_refused",
        (_S.AWAIT_ASSERTION_LOGIN, TargetUnavailable): "_on_assertion_unreachable",
        (_S.AWAIT_STORED_LOGIN, LoginSucceeded): "_on_stored_login_ok",
        (_S.AWAIT_STORED_LOGIN, LoginRefused): "_on_stored_login_refused",
        (_S.AWAIT_STORED_LOGIN, TargetUnavailable): "_on_stored_unreachable",
        (_S.AWAIT_PROMPT, PromptAnswered): "_on_prompt_answered",
        (_S.AWAIT_PROMPT, PromptDeclined): "_on_prompt_declined",
        (_S.AWAIT_PROMPT, PromptUnavailable): "_on_prompt_unavailable",
        (_S.AWAIT_PROMPT_LOGIN, LoginSucceeded): "_on_prompt_login_ok",
        (_S.AWAIT_PROMPT_LOGIN, LoginRefused): "_on_prompt_login_refused",
        (_S.AWAIT_PROMPT_LOGIN, TargetUnavailable): "_on_prompt_unreachable",
    }
)

#: Audit event names emitted with :class:`RecordAudit`.
AUDIT_PROMPT_SHOWN: Final = "prompt_shown"
AUDIT_PROMPT_ANSWERED: Final = "prompt_answered"
AUDIT_PROMPT_DECLINED: Final = "prompt_declined"
AUDIT_PROMPT_UNAVAILABLE: Final = "prompt_unavailable"
AUDIT_PROMPT_LOGIN_OK: Final = "prompt_login_ok"
AUDIT_PROMPT_LOGIN_REFUSED: Final = "prompt_login_refused"
AUDIT_LINK_MISMATCH: Final = "link_mismatch"


def describe_action(action: Action) -> str:
    """A one-line, secret-free summary of ``action`` (used in the trace)."""
    match action:
        case RequestAssertion(audience_target=t):
            return f"RequestAssertion(audience={t})"
        case LoginWithStoredCredential(link_id=lid):
            return f"LoginWithStoredCredential({lid})"
        case Prompt(fields=fs, attempt=a, max_attempts=m):
            return f"Prompt(attempt {a}/{m}: {', '.join(f.name for f in fs)})"
        case LoginWithAnswers(answers=ans):
            return f"LoginWithAnswers({', '.join(ans)})"
        case MarkLink(link_id=lid, state=st):
            return f"MarkLink({lid} → {st})"
        case StoreLink(remote_account_name=name):
            return f"StoreLink({name})"
        case RepairLink(link_id=lid, remote_account_name=name):
            return f"RepairLink({lid} → {name})"
        case RecordAudit(event=ev):
            return f"RecordAudit({ev})"
        case Connected(branch=b):
            return f"Connected({b})"
        case Failed(code=c):
            return f"Failed({c})"
        case _:
            return type(action).__name__


class Resolver:
    """The link-or-prompt state machine for one connection attempt (see the module docstring).

    Feed it with :meth:`start` once, then :meth:`send` for each outcome, until :attr:`done`.
    """

    def __init__(self, req: ResolveRequest) -> None:
        """Prepare to resolve ``req``; nothing happens until :meth:`start`."""
        self._req = req
        self._state = State.START
        self._branch: Branch | None = None
        self._attempt = 0
        self._link_state: LinkLifecycleState | None = req.link.lifecycle if req.link else None
        self._assertion_refusal: str | None = None
        self._outcome: Connected | Failed | None = None
        self._trace: list[TraceStep] = []
        self._notes: list[str] = []

    # -- public surface ------------------------------------------------------------------------

    @property
    def request(self) -> ResolveRequest:
        """The request being resolved."""
        return self._req

    @property
    def state(self) -> State:
        """The current :class:`State`."""
        return self._state

    @property
    def branch(self) -> Branch | None:
        """The branch in use (``None`` before :meth:`start`); it may change on fallback."""
        return self._branch

    @property
    def done(self) -> bool:
        """Whether a terminal :class:`Connected` or :class:`Failed` was emitted."""
        return self._state in (State.DONE, State.FAILED)

    @property
    def outcome(self) -> Connected | Failed | None:
        """The terminal action, once :attr:`done`."""
        return self._outcome

    @property
    def attempt(self) -> int:
        """How many prompts were shown so far."""
        return self._attempt

    @property
    def trace(self) -> list[TraceStep]:
        """Every step so far (a copy)."""
        return list(self._trace)

    def start(self) -> list[Action]:
        """Begin: return the first actions. Raises :class:`ProtocolError` if called twice."""
        if self._state is not State.START:
            raise ProtocolError(f"start() called in state {self._state}")
        req = self._req
        if req.uses_assertion:
            self._branch = Branch.SHARED
            self._note(
                f"target {req.target} trusts issuer {req.local_issuer} (shared account "
                f"system): asking the local app for an assertion for {req.local_account}"
            )
            actions: list[Action] = [RequestAssertion(req.target)]
            self._state = State.AWAIT_ASSERTION
        else:
            if req.account_system == AccountSystem.SHARED:
                self._note(
                    f"target {req.target} shares the account system of {req.local_issuer} but "
                    "its plug-in cannot log in with an assertion: using the separate-system flow"
                )
            actions = self._separate_flow()
        return self._record(State.START, "start", actions)

    def send(self, event: Event) -> list[Action]:
        """Feed ``event``; return the next actions. Unexpected events raise ProtocolError."""
        before = self._state
        name = TRANSITIONS.get((before, type(event)))
        if name is None:
            raise ProtocolError(
                f"event {type(event).__name__} is not expected in state {before}"
            )
        handler: Callable[[Event], list[Action]] = getattr(self, name)
        actions = handler(event)
        return self._record(before, type(event).__name__, actions)

    def explain(self) -> str:
        """The trace as numbered, human-readable lines (for ``--explain``)."""
        lines = []
        for n, step in enumerate(self._trace, 1):
            acts = ", ".join(step.actions) or "nothing"
            lines.append(f"{n}. [{step.state_before} · {step.event}] {step.note} → {acts}")
        return "\n".join(lines)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self._notes.append(text)

    def _record(self, before: State, event: str, actions: list[Action]) -> list[Action]:
        self._trace.append(
            TraceStep(
                state_before=before,
                event=event,
                actions=tuple(describe_action(a) for a in actions),
                note="; ".join(self._notes),
            )
        )
        self._notes = []
        return actions

    def _connected(self, branch: Branch, link_id: str | None, name: str) -> Connected:
        self._state = State.DONE
        self._branch = branch
        self._outcome = Connected(branch, link_id, name)
        return self._outcome

    def _failed(self, code: str, message: str) -> Failed:
        assert code in FAILURE_CODES
        self._state = State.FAILED
        self._outcome = Failed(code, message)
        self._note(f"failed ({code}): {message}")
        return self._outcome

    def _link(self) -> LinkSnapshot:
        link = self._req.link
        if link is None:  # pragma: no cover - guarded by the branch logic
            raise ProtocolError("no stored link")
        return link

    def _mark(self, event: LinkEvent, reason: str) -> MarkLink:
        """Move the link along the lifecycle table and say so."""
        link = self._link()
        assert self._link_state is not None
        self._link_state = next_state(self._link_state, event)
        return MarkLink(link.link_id, self._link_state, reason)

    def _audit(self, event: str, **detail: str) -> RecordAudit:
        base = {"target": self._req.target, "local_account": self._req.local_account}
        return RecordAudit(event, {**base, **detail})

    def _who(self) -> str:
        link = self._link()
        return f"{self._req.local_account} → {link.remote_account_name}@{self._req.target}"

    # -- branches ------------------------------------------------------------------------------

    def _separate_flow(self) -> list[Action]:
        """Branches 2, 3 or 4, depending on the stored link."""
        req = self._req
        link = req.link
        if link is None:
            self._branch = Branch.PROMPT
            self._note(f"no link stored for {req.local_account} on {req.target}: prompting")
            return self._prompt(
                f"sign in to your {req.target} account to link it to {req.local_account}"
            )
        assert self._link_state is not None
        if self._link_state in USABLE_STATES:
            self._branch = Branch.STORED
            self._note(
                f"link found for {self._who()} (state {self._link_state}): "
                "using the stored credential, no prompt"
            )
            self._state = State.AWAIT_STORED_LOGIN
            return [LoginWithStoredCredential(link.link_id)]
        reason = f"the link to {link.remote_account_name} is {self._link_state}"
        self._note(
            f"link found for {self._who()} (state {self._link_state}): re-authentication "
            f"needed, marking link {link.link_id} needs_reauth and prompting"
        )
        return self._reauth(reason)

    def _reauth(self, reason: str) -> list[Action]:
        """Branch 4: mark the link ``needs_reauth`` and prompt for the same remote account."""
        self._branch = Branch.REAUTH
        link = self._link()
        mark = self._mark(LinkEvent.CREDENTIAL_REFUSED, reason)
        return [
            mark,
            *self._prompt(
                f"{reason}: sign in to {self._req.target} again as {link.remote_account_name}"
            ),
        ]

    def _prompt(self, reason: str) -> list[Action]:
        req = self._req
        if not req.prompt_fields:
            why = self._assertion_refusal or "no assertion"
            return [
                self._failed(
                    "assertion_refused",
                    f"{req.target} did not accept an assertion ({why}) and its plug-in declares "
                    "no sign-in fields to fall back to",
                )
            ]
        self._attempt += 1
        self._state = State.AWAIT_PROMPT
        expected = (
            self._req.link.remote_account_name
            if self._branch is Branch.REAUTH and self._req.link
            else None
        )
        allowed = req.attempts_allowed
        self._note(f"prompt attempt {self._attempt} of {allowed}")
        return [
            self._audit(
                AUDIT_PROMPT_SHOWN,
                attempt=str(self._attempt),
                reason=reason,
                fields=",".join(f.name for f in req.prompt_fields),
                expected_account=expected or "",
            ),
            Prompt(req.prompt_fields, reason, self._attempt, expected, allowed),
        ]

    def _nothing_stored(self) -> str:
        if self._branch is Branch.REAUTH:
            return f"the link to {self._link().remote_account_name} still needs re-authentication"
        return "nothing was stored"

    # -- handlers (named in TRANSITIONS) -------------------------------------------------------

    def _on_assertion_obtained(self, event: AssertionObtained) -> list[Action]:
        self._note(f"the local app issued an assertion: sending it to {self._req.target}")
        self._state = State.AWAIT_ASSERTION_LOGIN
        return [LoginWithAssertion(event.assertion)]

    def _on_assertion_refused(self, event: AssertionRefused | LoginRefused) -> list[Action]:
        who = "the local app" if self._state is State.AWAIT_ASSERTION else self._req.target
        self._assertion_refusal = f"{who} refused: {event.reason}"
        self._note(
            f"assertion refused by {who}: {event.reason}; falling back to the "
            "separate-system flow"
        )
        return self._separate_flow()

    def _on_assertion_unreachable(self, event: TargetUnavailable) -> list[Action]:
        req = self._req
        who = (
            f"the local app ({req.local_issuer})"
            if self._state is State.AWAIT_ASSERTION
            else req.target
        )
        return [
            self._failed(
                "connection_lost",
                f"connection lost: {who} is unreachable ({event.reason}); try again later",
            )
        ]

    def _on_assertion_login_ok(self, event: LoginSucceeded) -> list[Action]:
        self._note(
            f"{self._req.target} accepted the assertion: signed in as "
            f"{event.remote_account_name}, no prompt and no link needed"
        )
        return [self._connected(Branch.SHARED, None, event.remote_account_name)]

    def _on_stored_login_ok(self, event: LoginSucceeded) -> list[Action]:
        link = self._link()
        actions: list[Action] = []
        if self._link_state is LinkLifecycleState.DEGRADED:
            actions.append(self._mark(LinkEvent.LOGIN_OK, "the stored credential works again"))
            self._note(f"{self._req.target} reachable again: marking link {link.link_id} linked")
        self._note(f"stored credential accepted: signed in as {event.remote_account_name}")
        actions.append(self._connected(Branch.STORED, link.link_id, event.remote_account_name))
        return actions

    def _on_stored_login_refused(self, event: LoginRefused) -> list[Action]:
        self._note(f"stored credential refused: {event.reason}; marking link needs_reauth")
        return self._reauth(f"the stored credential was refused ({event.reason})")

    def _on_stored_unreachable(self, event: TargetUnavailable) -> list[Action]:
        link = self._link()
        req = self._req
        mark = self._mark(LinkEvent.CONNECTION_LOST, f"{req.target} unreachable: {event.reason}")
        self._note(
            f"{req.target} unreachable: {event.reason}; marking link {link.link_id} {mark.state}"
            " (no prompt: a network error says nothing about the credential)"
        )
        return [
            mark,
            self._failed(
                "connection_lost",
                f"connection lost: {req.target} is unreachable ({event.reason}); the link to "
                f"{link.remote_account_name} is kept and will be retried",
            ),
        ]

    def _on_prompt_answered(self, event: PromptAnswered) -> list[Action]:
        fields = self._req.prompt_fields
        expected = {f.name for f in fields}
        given = set(event.answers)
        if given != expected:
            missing = ", ".join(sorted(expected - given)) or "-"
            extra = ", ".join(sorted(given - expected)) or "-"
            raise ProtocolError(
                f"prompt answers do not match the fields (missing: {missing}; unexpected: {extra})"
            )
        answers: dict[str, Secret | str] = {}
        for f in fields:
            value = event.answers[f.name]
            answers[f.name] = Secret(value) if f.secret and isinstance(value, str) else value
        self._note(f"prompt answered: signing in to {self._req.target}")
        self._state = State.AWAIT_PROMPT_LOGIN
        return [
            self._audit(
                AUDIT_PROMPT_ANSWERED,
                attempt=str(self._attempt),
                fields=",".join(f.name for f in fields),
            ),
            LoginWithAnswers(answers),
        ]

    def _on_prompt_declined(self, event: PromptDeclined) -> list[Action]:
        self._note("prompt declined by the user")
        return [
            self._audit(AUDIT_PROMPT_DECLINED, attempt=str(self._attempt)),
            self._failed(
                "prompt_declined",
                f"sign-in to {self._req.target} was declined; {self._nothing_stored()}",
            ),
        ]

    def _on_prompt_unavailable(self, event: PromptUnavailable) -> list[Action]:
        target = self._req.target
        interactive, scripted = connect_commands(target)
        self._note("no prompt can be shown here")
        return [
            self._audit(AUDIT_PROMPT_UNAVAILABLE, attempt=str(self._attempt)),
            self._failed(
                "prompt_unavailable",
                f"{target} needs your account details but no prompt is available here; "
                f"link the account with `{interactive}` (interactive) or `{scripted}`",
            ),
        ]

    def _on_prompt_login_ok(self, event: LoginSucceeded) -> list[Action]:
        req = self._req
        audit = self._audit(
            AUDIT_PROMPT_LOGIN_OK,
            attempt=str(self._attempt),
            remote_account=event.remote_account_name,
        )
        if self._branch is not Branch.REAUTH:
            self._note(
                f"signed in as {event.remote_account_name}: storing a new link for "
                f"{req.local_account} on {req.target}"
            )
            return [
                audit,
                StoreLink(event.remote_account_id, event.remote_account_name, event.credential),
                self._connected(Branch.PROMPT, None, event.remote_account_name),
            ]
        link = self._link()
        if event.remote_account_id != link.remote_account_id:
            self._note(
                f"signed in as {event.remote_account_name} ({event.remote_account_id}) but the "
                f"link is for {link.remote_account_name} ({link.remote_account_id}): revoking "
                "the new credential, the link is not changed"
            )
            return [
                audit,
                RevokeCredential(
                    event.credential,
                    f"signed in as {event.remote_account_id}, link {link.link_id} is for "
                    f"{link.remote_account_id}",
                ),
                self._audit(
                    AUDIT_LINK_MISMATCH,
                    link_id=link.link_id,
                    expected_account=link.remote_account_id,
                    got_account=event.remote_account_id,
                ),
                self._failed(
                    "link_mismatch",
                    f"you signed in to {req.target} as {event.remote_account_name}, but "
                    f"{req.local_account} is linked to {link.remote_account_name}; unlink it "
                    f"first (`{unlink_command(req.target)}`), then connect again",
                ),
            ]
        assert self._link_state is not None
        self._link_state = next_state(self._link_state, LinkEvent.REAUTH_OK)
        self._note(f"signed in again as {event.remote_account_name}: repairing link {link.link_id}")
        return [
            audit,
            RepairLink(
                link.link_id,
                event.remote_account_id,
                event.remote_account_name,
                event.credential,
            ),
            self._connected(Branch.REAUTH, link.link_id, event.remote_account_name),
        ]

    def _on_prompt_login_refused(self, event: LoginRefused) -> list[Action]:
        req = self._req
        audit = self._audit(
            AUDIT_PROMPT_LOGIN_REFUSED, attempt=str(self._attempt), reason=event.reason
        )
        allowed = req.attempts_allowed
        if self._attempt < allowed:
            self._note(f"sign-in refused: {event.reason}; asking again")
            return [
                audit,
                *self._prompt(
                    f"{req.target} refused the sign-in ({event.reason}); "
                    f"attempt {self._attempt + 1} of {allowed}"
                ),
            ]
        why = "" if req.interactive else " (answers given non-interactively are tried once)"
        self._note(f"sign-in refused: {event.reason}; no attempts left{why}")
        return [
            audit,
            self._failed(
                "login_refused",
                f"{req.target} refused the sign-in after {self._attempt} attempt(s): "
                f"{event.reason}; {self._nothing_stored()}",
            ),
        ]

    def _on_prompt_unreachable(self, event: TargetUnavailable) -> list[Action]:
        req = self._req
        return [
            self._failed(
                "connection_lost",
                f"connection lost: {req.target} is unreachable ({event.reason}); "
                f"{self._nothing_stored()}; try again later",
            )
        ]
