"""The link-or-prompt state machine: states, the transition table and :class:`Resolver`.

See :mod:`interapp.host.resolver` for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from interapp.host.lifecycle import (
    USABLE_STATES,
    LinkEvent,
    LinkState,
    next_state,
)
from interapp.host.resolver.model import (
    AUTHORIZATION_FAILURES,
    FAILURE_CODES,
    AccountSystem,
    Action,
    AssertionObtained,
    AssertionRefused,
    AuthorizationFailed,
    Authorize,
    Branch,
    Connected,
    Event,
    Failed,
    LinkSnapshot,
    LoginRefused,
    LoginSucceeded,
    LoginWithAnswers,
    LoginWithAssertion,
    LoginWithStoredCredential,
    MarkLink,
    Prompt,
    PromptAnswered,
    PromptDeclined,
    PromptReason,
    PromptUnavailable,
    ProtocolError,
    RecordAudit,
    RepairLink,
    RequestAssertion,
    ResolveRequest,
    RevokeCredential,
    StoreLink,
    TargetUnavailable,
    WayReason,
    WayRefused,
)
from interapp.plugins.contract import LinkWay
from interapp.plugins.linkways import SECURITY_ORDER
from interapp.secret import Secret

# --- the machine -------------------------------------------------------------------------------


class State(StrEnum):
    """Where the resolver is; ``AWAIT_*`` states wait for the event the last action asked for."""

    START = "start"
    AWAIT_ASSERTION = "await_assertion"
    AWAIT_ASSERTION_LOGIN = "await_assertion_login"
    AWAIT_STORED_LOGIN = "await_stored_login"
    AWAIT_PROMPT = "await_prompt"
    AWAIT_PROMPT_LOGIN = "await_prompt_login"
    AWAIT_AUTHORIZATION = "await_authorization"
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
        (_S.AWAIT_AUTHORIZATION, LoginSucceeded): "_on_prompt_login_ok",
        (_S.AWAIT_AUTHORIZATION, LoginRefused): "_on_authorization_refused",
        (_S.AWAIT_AUTHORIZATION, AuthorizationFailed): "_on_authorization_failed",
        (_S.AWAIT_AUTHORIZATION, PromptDeclined): "_on_prompt_declined",
        (_S.AWAIT_AUTHORIZATION, PromptUnavailable): "_on_prompt_unavailable",
        (_S.AWAIT_AUTHORIZATION, TargetUnavailable): "_on_prompt_unreachable",
        (_S.AWAIT_AUTHORIZATION, WayRefused): "_on_way_refused",
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
AUDIT_AUTHORIZATION_FAILED: Final = "authorization_failed"

#: How the explanation words each :class:`WayReason` (faces may render their own).
WAY_REASON_WORDS: Mapping[WayReason, str] = MappingProxyType({
    WayReason.REQUESTED: "asked for with --via",
    WayReason.REMEMBERED: "the way the link was made, used again to re-authenticate it",
    WayReason.HEADLESS: "no display to open a browser on, so a code to type elsewhere",
    WayReason.MOST_SECURE: "the most secure way offered (browser > device > password)",
    WayReason.ONLY_WAY: "the only way offered",
})


def describe_action(action: Action) -> str:
    """A one-line, secret-free summary of ``action`` (used in the trace)."""
    match action:
        case RequestAssertion(audience_target=t):
            return f"RequestAssertion(audience={t})"
        case LoginWithStoredCredential(link_id=lid):
            return f"LoginWithStoredCredential({lid})"
        case Prompt(fields=fs, attempt=a, max_attempts=m):
            return f"Prompt(attempt {a}/{m}: {', '.join(f.name for f in fs)})"
        case Authorize(way=w, way_reason=why):
            return f"Authorize({w}, {why})"
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
        self._link_state: LinkState | None = req.link.lifecycle if req.link else None
        self._assertion_refusal: str | None = None
        self._reauth_cause = ""
        self._outcome: Connected | Failed | None = None
        self._way: LinkWay | None = None
        self._way_reason: WayReason | None = None
        self._refused_ways: list[LinkWay] = []
        self._asking: tuple[str, PromptReason, str] = ("", PromptReason.NO_LINK, "")
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
    def way(self) -> LinkWay | None:
        """The link way chosen for the sign-in (None until a sign-in is needed)."""
        return self._way

    @property
    def way_reason(self) -> WayReason | None:
        """Why :attr:`way` was chosen."""
        return self._way_reason

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
        refusal = self._server_changed() or self._requested_mismatch()
        if refusal is not None:
            return self._record(State.START, "start", [refusal])
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
        signed_in = branch in (Branch.PROMPT, Branch.REAUTH)
        self._outcome = Connected(branch, link_id, name,
                                  self._way if signed_in else None,
                                  self._way_reason if signed_in else None)
        return self._outcome

    def _failed(self, code: str, message: str, *, account: str | None = None,
                cause: str = "") -> Failed:
        assert code in FAILURE_CODES
        self._state = State.FAILED
        if account is None and self._req.link is not None:
            account = self._req.link.remote_account_name
        self._outcome = Failed(code, message, self._req.target, account, cause)
        self._note(f"failed ({code}): {message}")
        return self._outcome

    def _server_changed(self) -> Failed | None:
        """A link made with another server than the target names now is not used at all: its
        credential must only ever go back to the server that issued it."""
        req, link = self._req, self._req.link
        if link is None or not link.server or not req.server or \
                link.server.rstrip("/") == req.server.rstrip("/"):
            return None
        self._note(f"the link to {link.remote_account_name} was made with {link.server}, but "
                   f"{req.target} now names {req.server}: not sending its credential there")
        return self._failed(
            "server_changed",
            f"{req.target} now names the server {req.server}, but its link to "
            f"{link.remote_account_name} was made with {link.server}; the stored credential "
            "is never sent to another server: change the server back, or unlink and link "
            "again", account=link.remote_account_name, cause=link.server)

    def _requested_mismatch(self) -> Failed | None:
        """A stored link to another account than the one asked for is refused, not used."""
        req, link = self._req, self._req.link
        wanted = req.requested_account
        if link is None or wanted is None or wanted in (link.remote_account_name,
                                                        link.remote_account_id):
            return None
        self._note(f"{wanted} was asked for, but {req.local_account} is linked to "
                   f"{link.remote_account_name} on {req.target}: refusing")
        return self._failed(
            "link_mismatch",
            f"{req.target} is linked to {link.remote_account_name}, not {wanted}; unlink it "
            f"first to link {wanted} instead", account=link.remote_account_name)

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
        return f"{self._req.local_account} → {link.remote_account_name} on {self._req.target}"

    # -- branches ------------------------------------------------------------------------------

    def _separate_flow(self) -> list[Action]:
        """Branches 2, 3 or 4, depending on the stored link."""
        req = self._req
        link = req.link
        if link is None:
            self._branch = Branch.PROMPT
            self._note(f"no link stored for {req.local_account} on {req.target}: prompting")
            return self._prompt(
                f"sign in to your {req.target} account to link it to {req.local_account}",
                PromptReason.NO_LINK,
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
        cause = link.reason or f"the link is {self._link_state}"
        self._note(
            f"link found for {self._who()} (state {self._link_state}, {cause}): "
            f"re-authentication needed, prompting"
        )
        return self._reauth(cause)

    def _reauth(self, cause: str) -> list[Action]:
        """Branch 4: the link needs re-authentication; prompt for the same remote account.

        The link is marked ``needs_reauth`` with ``cause`` unless it already is (its stored
        reason, the target's own words when it refused the credential, is kept).
        """
        self._branch = Branch.REAUTH
        link = self._link()
        actions: list[Action] = []
        if self._link_state is not LinkState.NEEDS_REAUTH:
            actions.append(self._mark(LinkEvent.CREDENTIAL_REFUSED, cause))
        self._reauth_cause = cause
        return [
            *actions,
            *self._prompt(
                f"the link to {link.remote_account_name} on {self._req.target} needs you to "
                f"sign in again ({cause})", PromptReason.REAUTH, cause),
        ]

    def _choose_way(self) -> tuple[LinkWay, WayReason] | Failed:
        """Which way to sign in (see docs/host.md, "The three ways"): the one asked for; on
        re-authentication the link's own; headless, the device code; else the most secure
        one both the target and the face offer."""
        req = self._req
        usable, offered = req.usable_ways, req.target_ways
        listed = ", ".join(offered) or "none"
        wanted = req.requested_way
        if wanted is not None:
            wanted = LinkWay(wanted)
            if wanted in usable:
                return wanted, WayReason.REQUESTED
            where = (f"{req.target} offers {listed}" if wanted not in offered else
                     f"{req.target} offers it, but this face cannot do it (it can: "
                     f"{', '.join(usable) or 'nothing'})")
            return self._failed("way_unavailable",
                                f"linking {req.target} through {wanted} is not possible: "
                                f"{where}", cause=str(wanted))
        link = req.link
        if self._branch is Branch.REAUTH and link is not None and link.way:
            try:
                remembered = LinkWay(link.way)
            except ValueError:
                remembered = None
            if remembered in usable:
                assert remembered is not None
                return remembered, WayReason.REMEMBERED
            self._note(f"the link was made through {link.way}, which is not offered now")
        if req.headless and LinkWay.DEVICE in usable and LinkWay.BROWSER in usable:
            return LinkWay.DEVICE, WayReason.HEADLESS
        ordered = [w for w in SECURITY_ORDER if w in usable]
        if not ordered:  # guarded by the caller
            return self._failed("prompt_unavailable", f"{req.target} offers no way to sign in")
        if len(ordered) == 1:
            return ordered[0], WayReason.ONLY_WAY
        return ordered[0], WayReason.MOST_SECURE

    def _prompt(self, reason: str, code: PromptReason = PromptReason.NO_LINK,
                cause: str = "") -> list[Action]:
        req = self._req
        if self._way is None and req.usable_ways:
            chosen = self._choose_way()
            if isinstance(chosen, Failed):
                return [chosen]
            self._way, self._way_reason = chosen
            self._note(f"signing in through {self._way}: {WAY_REASON_WORDS[self._way_reason]}"
                       f" (offered: {', '.join(req.target_ways)})")
        if self._way is not None and self._way is not LinkWay.PASSWORD:
            return self._authorize(reason, code, cause)
        if not req.prompt_fields:
            why = self._assertion_refusal or "no assertion"
            return [
                self._failed(
                    "assertion_refused",
                    f"{req.target} did not accept an assertion ({why}) and its plug-in declares "
                    "no sign-in fields to fall back to", cause=why,
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
            Prompt(req.prompt_fields, reason, self._attempt, expected, allowed, code, cause),
        ]

    def _expected(self) -> str | None:
        link = self._req.link
        return link.remote_account_name if self._branch is Branch.REAUTH and link else None

    def _authorize(self, reason: str, code: PromptReason, cause: str) -> list[Action]:
        """Sign in through the browser or a device code: one attempt."""
        assert self._way is not None and self._way_reason is not None
        self._asking = (reason, code, cause)
        self._attempt += 1
        self._state = State.AWAIT_AUTHORIZATION
        expected = self._expected()
        return [
            self._audit(AUDIT_PROMPT_SHOWN, attempt=str(self._attempt), reason=reason,
                        way=str(self._way), expected_account=expected or ""),
            Authorize(self._way, self._way_reason, reason, expected, code, cause),
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
        if self._link_state is LinkState.DEGRADED:
            actions.append(self._mark(LinkEvent.LOGIN_OK, "the stored credential works again"))
            self._note(f"{self._req.target} reachable again: marking link {link.link_id} linked")
        self._note(f"stored credential accepted: signed in as {event.remote_account_name}")
        actions.append(self._connected(Branch.STORED, link.link_id, event.remote_account_name))
        return actions

    def _on_stored_login_refused(self, event: LoginRefused) -> list[Action]:
        self._note(f"stored credential refused: {event.reason}; marking link needs_reauth")
        return self._reauth(f"the stored credential was refused: {event.reason}")

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
        req = self._req
        self._note("no prompt can be shown here")
        audit = self._audit(AUDIT_PROMPT_UNAVAILABLE, attempt=str(self._attempt))
        if self._branch is Branch.REAUTH:
            link = self._link()
            cause = self._reauth_cause
            return [audit, self._failed(
                "needs_reauth",
                f"the link to {link.remote_account_name} on {req.target} needs "
                f"re-authentication ({cause}), and no prompt is available here to sign in "
                "again", cause=cause)]
        return [audit, self._failed(
            "prompt_unavailable",
            f"{req.target} needs your account details to link it to {req.local_account}, "
            "but no prompt is available here")]

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
                StoreLink(event.remote_account_id, event.remote_account_name, event.credential,
                          self._way or LinkWay.PASSWORD),
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
                    "first, then connect again",
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
                self._way or LinkWay.PASSWORD,
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
                    f"attempt {self._attempt + 1} of {allowed}", PromptReason.RETRY,
                    event.reason,
                ),
            ]
        why = "" if req.interactive else " (answers given non-interactively are tried once)"
        self._note(f"sign-in refused: {event.reason}; no attempts left{why}")
        return [
            audit,
            self._failed(
                "login_refused",
                f"{req.target} refused the sign-in after {self._attempt} attempt(s): "
                f"{event.reason}; {self._nothing_stored()}", cause=event.reason,
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

    def _on_authorization_refused(self, event: LoginRefused) -> list[Action]:
        req = self._req
        self._note(f"sign-in through {self._way} refused: {event.reason}")
        return [
            self._audit(AUDIT_PROMPT_LOGIN_REFUSED, attempt=str(self._attempt),
                        reason=event.reason, way=str(self._way)),
            self._failed(
                "login_refused",
                f"{req.target} refused the sign-in through {self._way}: {event.reason}; "
                f"{self._nothing_stored()}", cause=event.reason,
            ),
        ]

    def _on_authorization_failed(self, event: AuthorizationFailed) -> list[Action]:
        req = self._req
        code = event.code if event.code in AUTHORIZATION_FAILURES else "login_refused"
        self._note(f"sign-in through {self._way} failed ({event.code}): {event.reason}")
        return [
            self._audit(AUDIT_AUTHORIZATION_FAILED, attempt=str(self._attempt),
                        error=event.code, way=str(self._way)),
            self._failed(
                code,
                f"linking {req.target} through {self._way} failed ({event.code}): "
                f"{event.reason}; {self._nothing_stored()}", cause=event.reason,
            ),
        ]

    def _on_way_refused(self, event: WayRefused) -> list[Action]:
        req = self._req
        assert self._way is not None
        self._refused_ways.append(self._way)
        self._attempt -= 1  # the sign-in never started
        left = [w for w in SECURITY_ORDER if w in req.usable_ways and w not in self._refused_ways]
        if req.requested_way is not None or not left:
            why = "it was asked for" if req.requested_way is not None else "no other way is left"
            return [self._failed(
                "way_unavailable",
                f"{req.target} would not start linking through {self._way} for this "
                f"application ({event.reason}), and {why}; {self._nothing_stored()}",
                cause=event.reason)]
        self._note(f"{req.target} would not start {self._way} ({event.reason}): trying "
                   f"{left[0]} instead")
        self._way = left[0]
        self._way_reason = WayReason.MOST_SECURE if len(left) > 1 else WayReason.ONLY_WAY
        return self._prompt(*self._asking)
