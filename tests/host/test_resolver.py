"""Tests of the sans-I/O link-or-prompt resolver (interapp.host.resolver)."""

from __future__ import annotations

import itertools
import string
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interapp import errors
from interapp.host import resolver as resolver_module
from interapp.host.lifecycle import TRANSITIONS as LIFECYCLE
from interapp.host.lifecycle import LinkEvent, LinkState, next_state
from interapp.host.resolver import (
    EVENT_TYPES,
    FAILURE_CODES,
    TRANSITIONS,
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
    LinkWay,
    LoginRefused,
    LoginSucceeded,
    LoginWithAnswers,
    LoginWithAssertion,
    LoginWithStoredCredential,
    MarkLink,
    Prompt,
    PromptAnswered,
    PromptDeclined,
    PromptField,
    PromptReason,
    PromptUnavailable,
    ProtocolError,
    RecordAudit,
    RepairLink,
    RequestAssertion,
    Resolver,
    ResolveRequest,
    RevokeCredential,
    State,
    StoreLink,
    TargetUnavailable,
    WayReason,
    WayRefused,
)
from interapp.secret import Secret

TARGET = "chatter"
ISSUER = "http://local.test"
LOCAL = "alice"
USERNAME = PromptField("username", "Username")
PASSWORD = PromptField("password", "Password", secret=True)
FIELDS = (USERNAME, PASSWORD)
LINK_ID = "L1"
LINK_STATES = ("linked", "degraded", "needs_reauth", "revoked")


class Credential:
    """A credential whose own repr leaks its token (the resolver must never show it)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Credential(token={self.token!r})"


def make_link(state: str = "linked", way: str = "") -> LinkSnapshot:
    return LinkSnapshot(LINK_ID, "r-bob", "bob", state, way=way)


def make_req(
    *,
    shared: bool = False,
    assertion: bool = True,
    link: LinkSnapshot | None = None,
    interactive: bool = True,
    max_attempts: int = 3,
    fields: tuple[PromptField, ...] = FIELDS,
    ways: tuple[LinkWay, ...] = (),
    offered_ways: tuple[LinkWay, ...] = (),
    requested_way: LinkWay | None = None,
    headless: bool = False,
) -> ResolveRequest:
    return ResolveRequest(
        target=TARGET,
        account_system="shared" if shared else "separate",
        supports_assertion=assertion,
        local_issuer=ISSUER,
        local_account=LOCAL,
        link=link,
        prompt_fields=fields,
        interactive=interactive,
        max_attempts=max_attempts,
        ways=ways,
        offered_ways=offered_ways,
        requested_way=requested_way,
        headless=headless,
    )


def answered(password: str = "hunter2", username: str = "bob") -> PromptAnswered:
    return PromptAnswered({"username": username, "password": Secret(password)})


def ok(account: str = "r-bob", name: str = "bob", token: str = "tok-1") -> LoginSucceeded:
    return LoginSucceeded(account, name, Credential(token))


def kinds(actions: Sequence[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def without_audit(actions: Sequence[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, RecordAudit)]


def audits(actions: Sequence[Action]) -> list[str]:
    return [a.event for a in actions if isinstance(a, RecordAudit)]


# --- module surface ----------------------------------------------------------------------------


def test_module_has_theory_of_operation() -> None:
    doc = resolver_module.__doc__
    assert doc is not None and "Theory of operation" in doc
    for word in ("states", "event", "action", "RFC 8693", "RFC 7523"):
        assert word.lower() in doc.lower()


def test_branch_values() -> None:
    assert {b.name: b.value for b in Branch} == {
        "SHARED": "same-account-system",
        "STORED": "stored-link",
        "PROMPT": "prompt",
        "REAUTH": "reauth",
    }


def test_protocol_error_is_an_interapp_error() -> None:
    err = ProtocolError("x")
    assert isinstance(err, errors.InterappError)
    assert err.code == "resolver_protocol_error"


@pytest.mark.parametrize("name", sorted(set(TRANSITIONS.values())))
def test_every_handler_in_the_table_exists(name: str) -> None:
    assert callable(getattr(Resolver, name))


def test_terminal_and_start_states_take_no_events() -> None:
    for state, _ in TRANSITIONS:
        assert state not in (State.START, State.DONE, State.FAILED)


# --- request validation ------------------------------------------------------------------------


def test_account_system_string_is_normalised() -> None:
    req = make_req(shared=True)
    assert req.account_system is AccountSystem.SHARED
    assert req.uses_assertion


def test_link_state_is_normalised() -> None:
    assert make_link("degraded").lifecycle is LinkState.DEGRADED
    assert make_link(LinkState.REVOKED).state == "revoked"


@pytest.mark.parametrize("state", ["unlinked", "bogus", ""])
def test_link_state_must_be_a_stored_state(state: str) -> None:
    with pytest.raises(ValueError, match="stored link"):
        make_link(state)


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        make_req(max_attempts=0)


def test_prompt_field_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        make_req(fields=(USERNAME, USERNAME))


@pytest.mark.parametrize(("shared", "assertion"), [(False, True), (True, False), (False, False)])
def test_separate_flow_needs_prompt_fields(shared: bool, assertion: bool) -> None:
    with pytest.raises(ValueError, match="prompt fields"):
        make_req(shared=shared, assertion=assertion, fields=())


def test_assertion_only_plugin_may_have_no_fields() -> None:
    assert make_req(shared=True, fields=()).prompt_fields == ()


def test_attempts_allowed() -> None:
    assert make_req(max_attempts=5).attempts_allowed == 5
    assert make_req(max_attempts=5, interactive=False).attempts_allowed == 1


# --- branch 1: shared account system -----------------------------------------------------------


def test_shared_account_system_uses_an_assertion_without_prompt() -> None:
    r = Resolver(make_req(shared=True, link=make_link()))
    assert r.state.value == "start" and r.branch is None and not r.done
    assert r.start() == [RequestAssertion(TARGET)]
    assert r.state is State.AWAIT_ASSERTION and r.branch is Branch.SHARED
    assertion = Secret("eyJassertion")
    assert r.send(AssertionObtained(assertion)) == [LoginWithAssertion(assertion)]
    assert r.state is State.AWAIT_ASSERTION_LOGIN
    actions = r.send(ok())
    assert actions == [Connected(Branch.SHARED, None, "bob")]
    assert r.done and r.state is State.DONE and r.outcome == actions[-1]
    assert r.branch is Branch.SHARED


def test_shared_trace_names_the_issuer() -> None:
    r = Resolver(make_req(shared=True))
    r.start()
    note = r.trace[0].note
    assert (
        f"trusts issuer {ISSUER} (shared account system): asking the local app for an assertion"
        in note
    )


@pytest.mark.parametrize(
    "refusal",
    ["obtain", "send-login-refused", "send-assertion-refused"],
)
@pytest.mark.parametrize("link_state", [None, *LINK_STATES])
def test_refused_assertion_falls_back_to_the_separate_flow(
    refusal: str, link_state: str | None
) -> None:
    link = make_link(link_state) if link_state else None
    r = Resolver(make_req(shared=True, link=link))
    r.start()
    if refusal == "obtain":
        actions = r.send(AssertionRefused("invalid_target: audience not allowed"))
    else:
        r.send(AssertionObtained(Secret("a")))
        event: Event = (
            LoginRefused("invalid_grant: unknown issuer")
            if refusal == "send-login-refused"
            else AssertionRefused("invalid_grant: unknown issuer")
        )
        actions = r.send(event)
    if link_state is None:
        assert r.branch is Branch.PROMPT and r.state is State.AWAIT_PROMPT
        assert kinds(actions) == ["RecordAudit", "Prompt"]
    elif link_state in ("linked", "degraded"):
        assert r.branch is Branch.STORED and r.state is State.AWAIT_STORED_LOGIN
        assert actions == [LoginWithStoredCredential(LINK_ID)]
    else:
        assert r.branch is Branch.REAUTH and r.state is State.AWAIT_PROMPT
        marks = [] if link_state == "needs_reauth" else ["MarkLink"]  # already marked
        assert kinds(actions) == [*marks, "RecordAudit", "Prompt"]
    note = r.trace[-1].note
    assert "assertion refused" in note and "falling back" in note
    assert ("audience not allowed" in note) or ("unknown issuer" in note)
    assert "refused" in r.explain()


def test_fallback_to_stored_link_then_connects() -> None:
    r = Resolver(make_req(shared=True, link=make_link()))
    r.start()
    r.send(AssertionRefused("nope"))
    assert r.send(ok()) == [Connected(Branch.STORED, LINK_ID, "bob")]


def test_fallback_to_prompt_then_stores_a_link() -> None:
    r = Resolver(make_req(shared=True))
    r.start()
    r.send(AssertionObtained(Secret("a")))
    r.send(LoginRefused("invalid_grant"))
    r.send(answered())
    actions = r.send(ok())
    assert kinds(without_audit(actions)) == ["StoreLink", "Connected"]
    assert actions[-1] == Connected(Branch.PROMPT, None, "bob")


def test_fallback_without_prompt_fields_fails_with_assertion_refused() -> None:
    r = Resolver(make_req(shared=True, fields=()))
    r.start()
    actions = r.send(AssertionRefused("invalid_target: chatter not allowed"))
    assert len(actions) == 1 and isinstance(actions[0], Failed)
    assert actions[0].code == "assertion_refused"
    assert "chatter not allowed" in actions[0].message
    assert r.state is State.FAILED


def test_fallback_without_prompt_fields_but_with_stored_link() -> None:
    r = Resolver(make_req(shared=True, fields=(), link=make_link()))
    r.start()
    assert r.send(AssertionRefused("x")) == [LoginWithStoredCredential(LINK_ID)]


@pytest.mark.parametrize("where", [State.AWAIT_ASSERTION, State.AWAIT_ASSERTION_LOGIN])
def test_unreachable_during_assertion_is_connection_lost(where: State) -> None:
    r = Resolver(make_req(shared=True, link=make_link()))
    r.start()
    if where is State.AWAIT_ASSERTION_LOGIN:
        r.send(AssertionObtained(Secret("a")))
    actions = r.send(TargetUnavailable("timeout"))
    assert len(actions) == 1 and isinstance(actions[0], Failed)
    assert actions[0].code == "connection_lost"
    assert "timeout" in actions[0].message
    assert isinstance(actions[0].to_error(), errors.ConnectionLost)


@pytest.mark.parametrize("link_state", [None, *LINK_STATES])
def test_shared_without_assertion_support_uses_separate_flow(link_state: str | None) -> None:
    link = make_link(link_state) if link_state else None
    r = Resolver(make_req(shared=True, assertion=False, link=link))
    actions = r.start()
    assert "RequestAssertion" not in kinds(actions)
    assert r.branch in (Branch.PROMPT, Branch.STORED, Branch.REAUTH)
    assert "cannot log in with an assertion" in r.trace[0].note


# --- branch 2: stored link ---------------------------------------------------------------------


def test_stored_link_connects_without_prompt() -> None:
    r = Resolver(make_req(link=make_link("linked")))
    assert r.start() == [LoginWithStoredCredential(LINK_ID)]
    assert r.branch is Branch.STORED and r.state is State.AWAIT_STORED_LOGIN
    assert r.trace[0].note == (
        "link found for alice → bob on chatter (state linked): using the stored credential, "
        "no prompt"
    )
    assert r.send(ok()) == [Connected(Branch.STORED, LINK_ID, "bob")]
    assert r.done


def test_degraded_link_is_marked_linked_again_on_success() -> None:
    r = Resolver(make_req(link=make_link("degraded")))
    assert r.start() == [LoginWithStoredCredential(LINK_ID)]
    actions = r.send(ok())
    assert kinds(actions) == ["MarkLink", "Connected"]
    mark = actions[0]
    assert isinstance(mark, MarkLink)
    assert (mark.link_id, mark.state) == (LINK_ID, LinkState.LINKED)


@pytest.mark.parametrize("link_state", ["linked", "degraded"])
def test_unreachable_target_marks_the_link_degraded_without_prompt(link_state: str) -> None:
    r = Resolver(make_req(link=make_link(link_state)))
    r.start()
    actions = r.send(TargetUnavailable("connect timeout"))
    assert kinds(actions) == ["MarkLink", "Failed"]
    mark, failed = actions
    assert isinstance(mark, MarkLink) and isinstance(failed, Failed)
    assert mark == MarkLink(LINK_ID, LinkState.DEGRADED, mark.reason)
    assert "connect timeout" in mark.reason
    assert failed.code == "connection_lost"
    assert "connection lost" in failed.message
    assert r.state is State.FAILED and r.branch is Branch.STORED


@pytest.mark.parametrize("link_state", ["linked", "degraded"])
def test_refused_stored_credential_leads_to_reauth(link_state: str) -> None:
    r = Resolver(make_req(link=make_link(link_state)))
    r.start()
    actions = r.send(LoginRefused("invalid_grant password changed"))
    assert kinds(actions) == ["MarkLink", "RecordAudit", "Prompt"]
    mark, audit, prompt = actions
    assert isinstance(mark, MarkLink) and isinstance(prompt, Prompt)
    assert isinstance(audit, RecordAudit)
    assert mark.link_id == LINK_ID and mark.state is LinkState.NEEDS_REAUTH
    assert "invalid_grant password changed" in mark.reason
    assert prompt.expected_account == "bob" and prompt.attempt == 1
    assert prompt.fields == FIELDS
    assert audit.event == "prompt_shown" and audit.detail["expected_account"] == "bob"
    assert r.branch is Branch.REAUTH
    assert r.trace[-1].note.startswith(
        "stored credential refused: invalid_grant password changed; marking link needs_reauth"
    )
    r.send(answered())
    actions = r.send(ok(token="new"))
    assert kinds(without_audit(actions)) == ["RepairLink", "Connected"]
    repair = without_audit(actions)[0]
    assert isinstance(repair, RepairLink) and repair.link_id == LINK_ID
    assert actions[-1] == Connected(Branch.REAUTH, LINK_ID, "bob")


# --- branch 3: no link -------------------------------------------------------------------------


def test_no_link_prompts_and_stores_only_on_success() -> None:
    r = Resolver(make_req())
    actions = r.start()
    assert r.branch is Branch.PROMPT and r.state is State.AWAIT_PROMPT
    assert r.trace[0].note.startswith("no link stored for alice on chatter: prompting")
    assert kinds(actions) == ["RecordAudit", "Prompt"]
    prompt = actions[-1]
    assert isinstance(prompt, Prompt)
    assert prompt.fields == FIELDS and prompt.attempt == 1 and prompt.expected_account is None
    assert prompt.max_attempts == 3

    actions = r.send(answered("hunter2"))
    assert kinds(actions) == ["RecordAudit", "LoginWithAnswers"]
    login = actions[-1]
    assert isinstance(login, LoginWithAnswers)
    assert login.answers["username"] == "bob"
    password = login.answers["password"]
    assert isinstance(password, Secret) and password.reveal() == "hunter2"

    cred = Credential("tok")
    actions = r.send(LoginSucceeded("r-bob", "bob", cred))
    assert audits(actions) == ["prompt_login_ok"]
    store = without_audit(actions)[0]
    assert isinstance(store, StoreLink)
    assert (store.remote_account_id, store.remote_account_name) == ("r-bob", "bob")
    assert store.credential is cred
    assert actions[-1] == Connected(Branch.PROMPT, None, "bob")
    assert r.outcome == actions[-1]


def test_plain_string_in_a_secret_field_is_wrapped() -> None:
    r = Resolver(make_req())
    r.start()
    actions = r.send(PromptAnswered({"username": "bob", "password": "hunter2"}))
    login = actions[-1]
    assert isinstance(login, LoginWithAnswers)
    assert login.answers["password"] == Secret("hunter2")
    assert login.answers["username"] == "bob"


@pytest.mark.parametrize(
    "answers",
    [{"username": "bob"}, {"username": "bob", "password": "x", "otp": "1"}, {}],
)
def test_answers_must_match_the_fields(answers: dict[str, str]) -> None:
    r = Resolver(make_req())
    r.start()
    with pytest.raises(ProtocolError):
        r.send(PromptAnswered(answers))
    assert r.state is State.AWAIT_PROMPT


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_interactive_retries_up_to_max_attempts(max_attempts: int) -> None:
    r = Resolver(make_req(max_attempts=max_attempts))
    prompts = [a for a in r.start() if isinstance(a, Prompt)]
    all_actions: list[Action] = []
    for n in range(1, max_attempts + 1):
        assert r.state is State.AWAIT_PROMPT and r.attempt == n
        r.send(answered(f"wrong{n}"))
        actions = r.send(LoginRefused("invalid_grant: bad password"))
        all_actions += actions
        prompts += [a for a in actions if isinstance(a, Prompt)]
    assert [p.attempt for p in prompts] == list(range(1, max_attempts + 1))
    assert all(p.max_attempts == max_attempts for p in prompts)
    assert audits(all_actions).count("prompt_login_refused") == max_attempts
    failed = all_actions[-1]
    assert isinstance(failed, Failed) and failed.code == "login_refused"
    assert f"after {max_attempts} attempt(s)" in failed.message
    assert "bad password" in failed.message and "nothing was stored" in failed.message
    assert not any(isinstance(a, StoreLink | RepairLink) for a in all_actions)
    assert r.state is State.FAILED


def test_retry_then_success() -> None:
    r = Resolver(make_req())
    r.start()
    r.send(answered("wrong"))
    actions = r.send(LoginRefused("invalid_grant"))
    prompt = actions[-1]
    assert isinstance(prompt, Prompt) and prompt.attempt == 2
    assert "invalid_grant" in prompt.reason and "attempt 2 of 3" in prompt.reason
    r.send(answered("right"))
    actions = r.send(ok())
    assert kinds(without_audit(actions)) == ["StoreLink", "Connected"]


def test_non_interactive_answers_get_one_attempt() -> None:
    r = Resolver(make_req(interactive=False, max_attempts=5))
    prompt = r.start()[-1]
    assert isinstance(prompt, Prompt) and prompt.max_attempts == 1
    r.send(answered("wrong"))
    actions = r.send(LoginRefused("invalid_grant"))
    assert kinds(actions) == ["RecordAudit", "Failed"]
    failed = actions[-1]
    assert isinstance(failed, Failed) and failed.code == "login_refused"
    assert "after 1 attempt(s)" in failed.message
    assert "tried once" in r.explain()


def test_declined_prompt() -> None:
    r = Resolver(make_req())
    r.start()
    actions = r.send(PromptDeclined())
    assert audits(actions) == ["prompt_declined"]
    failed = actions[-1]
    assert isinstance(failed, Failed) and failed.code == "prompt_declined"
    assert "nothing was stored" in failed.message
    assert r.state is State.FAILED


@pytest.mark.parametrize("interactive", [True, False])
def test_unavailable_prompt_says_why_without_any_faces_command(interactive: bool) -> None:
    r = Resolver(make_req(interactive=interactive))
    r.start()
    actions = r.send(PromptUnavailable())
    assert audits(actions) == ["prompt_unavailable"]
    failed = actions[-1]
    assert isinstance(failed, Failed) and failed.code == "prompt_unavailable"
    assert "no prompt is available" in failed.message and failed.target == TARGET
    assert "interapp " not in failed.message  # each face adds its own hint
    err = failed.to_error()
    assert isinstance(err, errors.PromptUnavailable) and err.message == failed.message
    assert err.target == TARGET


def test_unavailable_prompt_for_a_stale_link_says_it_needs_reauth_and_why() -> None:
    link = LinkSnapshot(LINK_ID, "r-bob", "bob", "linked")
    r = Resolver(make_req(link=link, interactive=False))
    r.start()
    r.send(LoginRefused("the server's salt changed: the password was changed"))
    failed = r.send(PromptUnavailable())[-1]
    assert isinstance(failed, Failed) and failed.code == "needs_reauth"
    assert "needs re-authentication" in failed.message and "salt changed" in failed.message
    assert "no prompt is available" in failed.message and "interapp " not in failed.message
    err = failed.to_error()
    assert isinstance(err, errors.NeedsReauth) and "salt changed" in err.cause
    assert (err.target, err.account) == (TARGET, "bob")


def test_a_link_already_needing_reauth_keeps_its_reason() -> None:
    link = LinkSnapshot(LINK_ID, "r-bob", "bob", "needs_reauth", "refresh token refused")
    r = Resolver(make_req(link=link, interactive=False))
    actions = r.start()
    assert kinds(actions) == ["RecordAudit", "Prompt"]  # no MarkLink restating the state
    prompt = actions[-1]
    assert isinstance(prompt, Prompt) and prompt.reason_code is PromptReason.REAUTH
    assert prompt.cause == "refresh token refused"
    failed = r.send(PromptUnavailable())[-1]
    assert isinstance(failed, Failed) and failed.code == "needs_reauth"
    assert "refresh token refused" in failed.message


@pytest.mark.parametrize("link_state", [*LINK_STATES])
def test_a_stored_link_to_another_account_than_asked_is_refused(link_state: str) -> None:
    r = Resolver(ResolveRequest(
        target=TARGET, account_system="separate", supports_assertion=True,
        local_issuer=ISSUER, local_account=LOCAL, link=make_link(link_state),
        prompt_fields=FIELDS, interactive=False, requested_account="carol"))
    actions = r.start()
    assert kinds(actions) == ["Failed"]  # nothing is tried, nothing is changed
    failed = actions[0]
    assert isinstance(failed, Failed) and failed.code == "link_mismatch"
    assert "linked to bob, not carol" in failed.message
    assert isinstance(failed.to_error(), errors.LinkMismatch)


@pytest.mark.parametrize("asked", ["bob", "r-bob"])
def test_asking_for_the_linked_account_uses_the_link(asked: str) -> None:
    r = Resolver(ResolveRequest(
        target=TARGET, account_system="separate", supports_assertion=True,
        local_issuer=ISSUER, local_account=LOCAL, link=make_link("linked"),
        prompt_fields=FIELDS, interactive=False, requested_account=asked))
    assert r.start() == [LoginWithStoredCredential(LINK_ID)]


@pytest.mark.parametrize("link_state", [*LINK_STATES])
def test_a_link_made_with_another_server_is_never_used(link_state: str) -> None:
    link = LinkSnapshot(LINK_ID, "r-bob", "bob", link_state, "", "https://chatter.example")
    r = Resolver(ResolveRequest(
        target=TARGET, account_system="shared", supports_assertion=True,
        local_issuer=ISSUER, local_account=LOCAL, link=link, prompt_fields=FIELDS,
        interactive=True, server="https://evil.example"))
    actions = r.start()
    assert kinds(actions) == ["Failed"]  # no login of any kind: the credential stays here
    failed = actions[0]
    assert isinstance(failed, Failed) and failed.code == "server_changed"
    assert "https://chatter.example" in failed.message and "evil" in failed.message
    assert isinstance(failed.to_error(), errors.ServerChanged)
    same = LinkSnapshot(LINK_ID, "r-bob", "bob", "linked", "", "https://chatter.example/")
    r = Resolver(ResolveRequest(
        target=TARGET, account_system="separate", supports_assertion=True,
        local_issuer=ISSUER, local_account=LOCAL, link=same, prompt_fields=FIELDS,
        interactive=True, server="https://chatter.example"))
    assert r.start() == [LoginWithStoredCredential(LINK_ID)]


def test_unreachable_during_prompt_login_stores_nothing() -> None:
    r = Resolver(make_req())
    r.start()
    r.send(answered())
    actions = r.send(TargetUnavailable("dns failure"))
    assert kinds(actions) == ["Failed"]
    failed = actions[0]
    assert isinstance(failed, Failed) and failed.code == "connection_lost"
    assert "dns failure" in failed.message and "nothing was stored" in failed.message


# --- branch 4: re-authentication ---------------------------------------------------------------


@pytest.mark.parametrize("link_state", ["needs_reauth", "revoked"])
def test_invalid_stored_link_prompts_then_repairs_the_same_link(link_state: str) -> None:
    r = Resolver(make_req(link=make_link(link_state)))
    actions = r.start()
    prompt = actions[-1]
    if link_state == "revoked":
        assert kinds(actions) == ["MarkLink", "RecordAudit", "Prompt"]
        mark = actions[0]
        assert isinstance(mark, MarkLink)
        assert mark.link_id == LINK_ID and mark.state is LinkState.NEEDS_REAUTH
        assert link_state in mark.reason
    else:
        assert kinds(actions) == ["RecordAudit", "Prompt"]
    assert isinstance(prompt, Prompt) and prompt.reason_code is PromptReason.REAUTH
    assert prompt.expected_account == "bob"
    assert r.branch is Branch.REAUTH
    r.send(answered())
    cred = Credential("fresh")
    actions = r.send(LoginSucceeded("r-bob", "Bob B.", cred))
    core = without_audit(actions)
    assert kinds(core) == ["RepairLink", "Connected"]
    repair = core[0]
    assert isinstance(repair, RepairLink)
    assert repair.link_id == LINK_ID and repair.remote_account_id == "r-bob"
    assert repair.remote_account_name == "Bob B." and repair.credential is cred
    assert core[1] == Connected(Branch.REAUTH, LINK_ID, "Bob B.")
    assert not any(isinstance(a, StoreLink) for a in actions)


@pytest.mark.parametrize("link_state", [*LINK_STATES])
def test_reauth_with_a_different_account_is_refused(link_state: str) -> None:
    r = Resolver(make_req(link=make_link(link_state)))
    r.start()
    if link_state in ("linked", "degraded"):
        r.send(LoginRefused("invalid_grant"))
    r.send(answered(username="carol"))
    cred = Credential("carols-token")
    actions = r.send(LoginSucceeded("r-carol", "carol", cred))
    assert kinds(actions) == ["RecordAudit", "RevokeCredential", "RecordAudit", "Failed"]
    revoke = actions[1]
    assert isinstance(revoke, RevokeCredential) and revoke.credential is cred
    assert "r-carol" in revoke.reason
    assert audits(actions) == ["prompt_login_ok", "link_mismatch"]
    failed = actions[-1]
    assert isinstance(failed, Failed) and failed.code == "link_mismatch"
    assert "carol" in failed.message and "bob" in failed.message
    assert "unlink" in failed.message
    assert isinstance(failed.to_error(), errors.LinkMismatch)
    assert not any(isinstance(a, StoreLink | RepairLink) for a in actions)
    assert r.state is State.FAILED


def test_reauth_declined_keeps_needing_reauth() -> None:
    r = Resolver(make_req(link=make_link("needs_reauth")))
    r.start()
    failed = r.send(PromptDeclined())[-1]
    assert isinstance(failed, Failed) and failed.code == "prompt_declined"
    assert "still needs re-authentication" in failed.message


def test_reauth_retries_exhausted() -> None:
    r = Resolver(make_req(link=make_link("revoked"), max_attempts=2))
    r.start()
    r.send(answered("a"))
    actions = r.send(LoginRefused("bad"))
    assert kinds(actions) == ["RecordAudit", "RecordAudit", "Prompt"]  # no second MarkLink
    prompt = actions[-1]
    assert isinstance(prompt, Prompt) and prompt.expected_account == "bob"
    r.send(answered("b"))
    failed = r.send(LoginRefused("bad"))[-1]
    assert isinstance(failed, Failed) and failed.code == "login_refused"
    assert "still needs re-authentication" in failed.message


def test_reauth_unreachable_does_not_hide_needs_reauth() -> None:
    r = Resolver(make_req(link=make_link("needs_reauth")))
    r.start()
    r.send(answered())
    actions = r.send(TargetUnavailable("reset"))
    assert kinds(actions) == ["Failed"]  # the link stays needs_reauth: no MarkLink(degraded)


# --- the protocol: every (state, event) pair ---------------------------------------------------


def sample_event(event_type: type[Event]) -> Event:
    samples: dict[type[Event], Event] = {
        AssertionObtained: AssertionObtained(Secret("a")),
        AssertionRefused: AssertionRefused("no"),
        LoginSucceeded: ok(),
        LoginRefused: LoginRefused("no"),
        TargetUnavailable: TargetUnavailable("down"),
        PromptAnswered: answered(),
        PromptDeclined: PromptDeclined(),
        PromptUnavailable: PromptUnavailable(),
        AuthorizationFailed: AuthorizationFailed("access_denied", "the user said no"),
        WayRefused: WayRefused("no redirect URI registered"),
    }
    return samples[event_type]


def machine_in(state: State) -> Resolver:
    if state is State.START:
        return Resolver(make_req())
    if state in (State.AWAIT_ASSERTION, State.AWAIT_ASSERTION_LOGIN):
        r = Resolver(make_req(shared=True))
        r.start()
        if state is State.AWAIT_ASSERTION_LOGIN:
            r.send(AssertionObtained(Secret("a")))
    elif state in (State.AWAIT_STORED_LOGIN, State.DONE):
        r = Resolver(make_req(link=make_link()))
        r.start()
        if state is State.DONE:
            r.send(ok())
    elif state is State.AWAIT_AUTHORIZATION:
        r = Resolver(make_req(ways=(LinkWay.BROWSER, LinkWay.PASSWORD)))
        r.start()
    else:
        r = Resolver(make_req())
        r.start()
        if state is State.AWAIT_PROMPT_LOGIN:
            r.send(answered())
        elif state is State.FAILED:
            r.send(PromptDeclined())
    assert r.state is state
    return r


ALL_PAIRS = list(itertools.product(State, EVENT_TYPES))
ILLEGAL_PAIRS = [p for p in ALL_PAIRS if p not in TRANSITIONS]


def test_every_event_type_is_used_somewhere() -> None:
    assert {e for (_, e) in TRANSITIONS} == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("state", "event_type"), list(TRANSITIONS), ids=lambda x: getattr(x, "__name__", str(x))
)
def test_every_legal_pair_is_accepted(state: State, event_type: type[Event]) -> None:
    r = machine_in(state)
    steps = len(r.trace)
    actions = r.send(sample_event(event_type))
    assert actions, "every transition does something"
    assert len(r.trace) == steps + 1
    assert r.trace[-1].state_before is state
    assert r.trace[-1].event == event_type.__name__


@pytest.mark.parametrize(
    ("state", "event_type"), ILLEGAL_PAIRS, ids=lambda x: getattr(x, "__name__", str(x))
)
def test_every_illegal_pair_raises(state: State, event_type: type[Event]) -> None:
    r = machine_in(state)
    steps = len(r.trace)
    with pytest.raises(ProtocolError) as info:
        r.send(sample_event(event_type))
    assert event_type.__name__ in info.value.message
    assert r.state is state and len(r.trace) == steps


def test_start_twice_raises() -> None:
    r = Resolver(make_req())
    r.start()
    with pytest.raises(ProtocolError):
        r.start()


def test_a_non_event_raises() -> None:
    r = machine_in(State.AWAIT_PROMPT)
    with pytest.raises(ProtocolError):
        r.send(object())  # type: ignore[arg-type]


# --- trace and explain -------------------------------------------------------------------------


def test_explain_numbers_every_step() -> None:
    r = Resolver(make_req(link=make_link()))
    r.start()
    r.send(LoginRefused("invalid_grant password changed"))
    r.send(answered())
    r.send(ok())
    lines = r.explain().splitlines()
    assert len(lines) == len(r.trace) == 4
    for n, line in enumerate(lines, 1):
        assert line.startswith(f"{n}. ")
    assert "using the stored credential, no prompt" in lines[0]
    assert "LoginWithStoredCredential(L1)" in lines[0]
    assert "stored credential refused: invalid_grant password changed" in lines[1]
    assert "MarkLink(L1 → needs_reauth)" in lines[1]
    assert "repairing link L1" in lines[3] and "RepairLink" in lines[3]
    assert r.trace[1].actions == (
        "MarkLink(L1 → needs_reauth)",
        "RecordAudit(prompt_shown)",
        "Prompt(attempt 1/3: username, password)",
    )


def test_trace_is_a_copy() -> None:
    r = Resolver(make_req())
    r.start()
    r.trace.clear()
    assert len(r.trace) == 1


def test_failure_is_noted_in_the_trace() -> None:
    r = Resolver(make_req())
    r.start()
    r.send(PromptUnavailable())
    assert "failed (prompt_unavailable)" in r.trace[-1].note
    assert r.trace[-1].actions[-1] == "Failed(prompt_unavailable)"


def test_failed_to_error_codes() -> None:
    for code in FAILURE_CODES:
        err = Failed(code, "m").to_error()
        assert isinstance(err, errors.LinkError | errors.ConnectionLost | errors.OAuthError)
        assert err.message == "m" and err.code == code


# --- no secret ever shows ----------------------------------------------------------------------

secrets = st.text(string.ascii_letters + string.digits + "!#$%&*+-./:;=?@^_~", min_size=6).map(
    lambda s: "S3cr3t" + s
)


def everything_shown(r: Resolver, events: Sequence[Event], actions: Sequence[Action]) -> str:
    parts = [repr(e) for e in events] + [str(e) for e in events]
    parts += [repr(a) for a in actions] + [str(a) for a in actions]
    parts += [repr(step) for step in r.trace] + [r.explain()]
    parts += [a.message for a in actions if isinstance(a, Failed)]
    parts += [repr(a.to_error()) for a in actions if isinstance(a, Failed)]
    return "\n".join(parts)


def run(r: Resolver, events: Sequence[Event]) -> list[Action]:
    actions = r.start()
    for e in events:
        actions += r.send(e)
    return actions


@given(password=secrets, assertion=secrets, token=secrets)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_no_secret_in_any_repr_trace_or_message(password: str, assertion: str, token: str) -> None:
    scenarios: list[tuple[ResolveRequest, list[Event]]] = [
        (
            make_req(shared=True),
            [AssertionObtained(Secret(assertion)), LoginSucceeded("r", "bob", Credential(token))],
        ),
        (
            make_req(),
            [
                PromptAnswered({"username": "bob", "password": password}),
                LoginRefused("invalid_grant"),
                PromptAnswered({"username": "bob", "password": Secret(password)}),
                LoginSucceeded("r-bob", "bob", Credential(token)),
            ],
        ),
        (
            make_req(link=make_link("revoked")),
            [
                PromptAnswered({"username": "carol", "password": password}),
                LoginSucceeded("r-carol", "carol", Credential(token)),
            ],
        ),
        (
            make_req(link=make_link()),
            [
                LoginRefused("invalid_grant"),
                PromptAnswered({"username": "bob", "password": password}),
                LoginSucceeded("r-bob", "bob", Credential(token)),
            ],
        ),
        (make_req(interactive=False), [PromptAnswered({"username": "bob", "password": password}),
                                       LoginRefused("no")]),
    ]
    for req, events in scenarios:
        r = Resolver(req)
        actions = run(r, events)
        assert r.done
        shown = everything_shown(r, events, actions)
        for secret in (password, assertion, token):
            assert secret not in shown


@given(password=secrets)
def test_protocol_errors_do_not_show_answers(password: str) -> None:
    r = machine_in(State.AWAIT_ASSERTION)
    with pytest.raises(ProtocolError) as info:
        r.send(PromptAnswered({"username": "bob", "password": password}))
    assert password not in repr(info.value) and password not in str(info.value)
    r = machine_in(State.AWAIT_PROMPT)
    with pytest.raises(ProtocolError) as info:
        r.send(PromptAnswered({"user": password, "password": password}))
    assert password not in str(info.value)


@given(token=secrets)
def test_action_and_event_reprs_mask_credentials(token: str) -> None:
    cred = Credential(token)
    for obj in (
        LoginSucceeded("r", "n", cred),
        StoreLink("r", "n", cred),
        RepairLink("L", "r", "n", cred),
        RevokeCredential(cred, "why"),
        PromptAnswered({"username": token, "password": Secret(token)}),
        LoginWithAnswers({"username": token, "password": Secret(token)}),
        AssertionObtained(Secret(token)),
        LoginWithAssertion(Secret(token)),
    ):
        assert token not in repr(obj) and token not in str(obj)
        assert "redacted" in repr(obj) or "*****" in repr(obj)


def test_masked_reprs_still_name_the_fields() -> None:
    assert repr(PromptAnswered({"username": "bob", "password": "x"})) == (
        "PromptAnswered(answers={'username': <redacted>, 'password': <redacted>})"
    )
    assert "remote_account_name='bob'" in repr(StoreLink("r", "bob", object()))


def test_answers_are_read_only() -> None:
    src = {"username": "bob", "password": "x"}
    ev = PromptAnswered(src)
    src["username"] = "mallory"
    assert ev.answers["username"] == "bob"
    with pytest.raises(TypeError):
        ev.answers["username"] = "eve"  # type: ignore[index]


# --- random walks ------------------------------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn) -> ResolveRequest:
    shared = draw(st.booleans())
    assertion = draw(st.booleans())
    link_state = draw(st.sampled_from([None, *LINK_STATES]))
    fields: tuple[PromptField, ...] = FIELDS
    if shared and assertion and draw(st.booleans()):
        fields = ()
    ways = tuple(draw(st.sets(st.sampled_from(list(LinkWay)))))
    if not fields:
        ways = tuple(w for w in ways if w is not LinkWay.PASSWORD)
    return make_req(
        shared=shared,
        assertion=assertion,
        link=make_link(link_state, way=draw(st.sampled_from(["", *LinkWay])))
        if link_state else None,
        interactive=draw(st.booleans()),
        max_attempts=draw(st.integers(1, 4)),
        fields=fields,
        ways=ways,
        requested_way=draw(st.sampled_from([None, *LinkWay])),
        headless=draw(st.booleans()),
    )


def draw_event(data: st.DataObject, event_type: type[Event], secret: str) -> Event:
    draw = data.draw
    reason = draw(st.sampled_from(["invalid_grant", "timeout", "denied"]))
    if event_type is AssertionObtained:
        return AssertionObtained(Secret(secret))
    if event_type is LoginSucceeded:
        account = draw(st.sampled_from(["r-bob", "r-carol"]))
        return LoginSucceeded(account, account[2:], Credential(secret))
    if event_type is PromptAnswered:
        return PromptAnswered({"username": "bob", "password": secret})
    if event_type in (PromptDeclined, PromptUnavailable):
        return event_type()
    if event_type is AuthorizationFailed:
        return AuthorizationFailed(draw(st.sampled_from(
            ["access_denied", "expired_token", "invalid_grant", "authorization_mismatch",
             "server_error"])), reason)
    cls: Any = event_type
    event: Event = cls(reason)
    return event


WAITING = (RequestAssertion, LoginWithAssertion, LoginWithStoredCredential, Prompt,
           LoginWithAnswers, Authorize)


@given(req=requests(), data=st.data(), secret=secrets)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_random_walk_invariants(req: ResolveRequest, data: st.DataObject, secret: str) -> None:
    r = Resolver(req)
    batches: list[tuple[Event | None, list[Action]]] = [(None, r.start())]
    events: list[Event] = []
    limit = 4 * req.attempts_allowed + 10
    while not r.done:
        assert len(batches) < limit, "the resolver must terminate"
        legal = [et for (s, et) in TRANSITIONS if s is r.state]
        assert legal, f"non-terminal state {r.state} must accept some event"
        event_type = data.draw(st.sampled_from(legal))
        event = draw_event(data, event_type, secret)
        events.append(event)
        batches.append((event, r.send(event)))

    all_actions = [a for _, acts in batches for a in acts]
    stores = [a for a in all_actions if isinstance(a, StoreLink)]
    repairs = [a for a in all_actions if isinstance(a, RepairLink)]
    # never both, never more than one
    assert not (stores and repairs)
    assert len(stores) <= 1 and len(repairs) <= 1
    link_state = req.link.lifecycle if req.link else None
    prompts = 0
    for cause, acts in batches:
        # StoreLink / RepairLink only in answer to a successful login
        if any(isinstance(a, StoreLink | RepairLink) for a in acts):
            assert isinstance(cause, LoginSucceeded)
        for a in acts:
            if isinstance(a, StoreLink):
                assert req.link is None
            if isinstance(a, RepairLink):
                assert req.link is not None and a.link_id == req.link.link_id
                assert isinstance(cause, LoginSucceeded)
                assert a.remote_account_id == req.link.remote_account_id
                assert link_state is not None
                link_state = next_state(link_state, LinkEvent.REAUTH_OK)
            if isinstance(a, MarkLink):
                assert req.link is not None and a.link_id == req.link.link_id
                assert link_state is not None
                # every mark is a legal step of the link lifecycle
                reachable = {
                    next_state(link_state, e)
                    for e in LinkEvent
                    if (link_state, e) in LIFECYCLE
                }
                assert a.state in reachable
                link_state = a.state
            if isinstance(a, RevokeCredential):
                assert isinstance(acts[-1], Failed) and acts[-1].code == "link_mismatch"
            if isinstance(a, Prompt):
                prompts += 1
                assert a.attempt == prompts <= req.attempts_allowed
        # at most one waiting or terminal action, and it is last
        special = [a for a in acts if isinstance(a, (*WAITING, Connected, Failed))]
        assert len(special) == 1 and acts[-1] is special[0]
    terminal = all_actions[-1]
    assert isinstance(terminal, Connected | Failed) and r.outcome is terminal
    assert sum(isinstance(a, Connected | Failed) for a in all_actions) == 1
    if isinstance(terminal, Connected):
        assert r.state is State.DONE and r.branch is terminal.branch
        if terminal.branch is Branch.SHARED:
            assert req.uses_assertion and terminal.link_id is None
        elif terminal.branch is Branch.PROMPT:
            assert req.link is None and len(stores) == 1 and terminal.link_id is None
        else:
            assert req.link is not None and terminal.link_id == req.link.link_id
            assert (terminal.branch is Branch.REAUTH) == bool(repairs)
    else:
        assert r.state is State.FAILED and terminal.code in FAILURE_CODES
        assert not stores and not repairs
    # no secret anywhere, and no face's command in what the core says
    shown = everything_shown(r, events, all_actions)
    assert secret not in shown
    assert "interapp " not in shown
    # and nothing more is accepted
    for et in EVENT_TYPES:
        with pytest.raises(ProtocolError):
            r.send(sample_event(et))



# --- link ways (browser, device, password) -----------------------------------------------------

ALL_WAYS = (LinkWay.BROWSER, LinkWay.DEVICE, LinkWay.PASSWORD)


def _authorize(actions: list[Action]) -> Authorize:
    last = actions[-1]
    assert isinstance(last, Authorize), actions
    return last


def test_the_most_secure_way_is_the_default() -> None:
    r = Resolver(make_req(ways=ALL_WAYS))
    act = _authorize(r.start())
    assert (act.way, act.way_reason) == (LinkWay.BROWSER, WayReason.MOST_SECURE)
    assert r.state is State.AWAIT_AUTHORIZATION and r.way is LinkWay.BROWSER
    assert "signing in through browser: the most secure way offered" in r.explain()


def test_headless_prefers_the_device_code() -> None:
    act = _authorize(Resolver(make_req(ways=ALL_WAYS, headless=True)).start())
    assert (act.way, act.way_reason) == (LinkWay.DEVICE, WayReason.HEADLESS)


def test_headless_without_device_still_opens_the_browser_way() -> None:
    act = _authorize(Resolver(make_req(ways=(LinkWay.BROWSER, LinkWay.PASSWORD),
                                       headless=True)).start())
    assert (act.way, act.way_reason) == (LinkWay.BROWSER, WayReason.MOST_SECURE)


def test_the_way_asked_for_wins() -> None:
    r = Resolver(make_req(ways=ALL_WAYS, requested_way=LinkWay.PASSWORD))
    actions = r.start()
    assert isinstance(actions[-1], Prompt)
    assert (r.way, r.way_reason) == (LinkWay.PASSWORD, WayReason.REQUESTED)


def test_a_way_not_offered_fails_with_way_unavailable() -> None:
    r = Resolver(make_req(ways=(LinkWay.PASSWORD,), offered_ways=(LinkWay.BROWSER,
                                                                  LinkWay.PASSWORD),
                          requested_way=LinkWay.DEVICE))
    failed = r.start()[-1]
    assert isinstance(failed, Failed) and failed.code == "way_unavailable"
    assert "offers browser, password" in failed.message
    assert isinstance(failed.to_error(), errors.WayUnavailable)
    r2 = Resolver(make_req(ways=(LinkWay.PASSWORD,), offered_ways=ALL_WAYS,
                           requested_way=LinkWay.DEVICE))
    failed = r2.start()[-1]
    assert isinstance(failed, Failed) and "this face cannot do it" in failed.message


def test_a_single_way_is_the_only_way() -> None:
    r = Resolver(make_req())
    assert isinstance(r.start()[-1], Prompt)
    assert (r.way, r.way_reason) == (LinkWay.PASSWORD, WayReason.ONLY_WAY)


def test_browser_success_stores_the_link_with_its_way() -> None:
    r = Resolver(make_req(ways=ALL_WAYS))
    r.start()
    actions = r.send(ok())
    store = next(a for a in actions if isinstance(a, StoreLink))
    assert store.way is LinkWay.BROWSER
    done = actions[-1]
    assert isinstance(done, Connected) and done.way is LinkWay.BROWSER
    assert done.way_reason is WayReason.MOST_SECURE


def test_reauth_uses_the_way_the_link_was_made_with_and_repairs_it() -> None:
    r = Resolver(make_req(ways=ALL_WAYS, link=make_link("needs_reauth", way="device")))
    act = _authorize(r.start())
    assert (act.way, act.way_reason) == (LinkWay.DEVICE, WayReason.REMEMBERED)
    assert act.expected_account == "bob" and act.reason_code is PromptReason.REAUTH
    actions = r.send(ok())
    repair = next(a for a in actions if isinstance(a, RepairLink))
    assert repair.link_id == LINK_ID and repair.way is LinkWay.DEVICE


def test_reauth_as_another_account_through_the_browser_is_refused() -> None:
    r = Resolver(make_req(ways=ALL_WAYS, link=make_link("revoked", way="browser")))
    r.start()
    actions = r.send(LoginSucceeded("r-carol", "carol", Credential("x")))
    assert "RevokeCredential" in kinds(actions)
    assert not any(isinstance(a, StoreLink | RepairLink) for a in actions)
    failed = actions[-1]
    assert isinstance(failed, Failed) and failed.code == "link_mismatch"


@pytest.mark.parametrize("code", ["access_denied", "expired_token", "invalid_grant",
                                  "authorization_mismatch"])
def test_an_authorization_failure_keeps_the_rfc_code_and_stores_nothing(code: str) -> None:
    r = Resolver(make_req(ways=ALL_WAYS))
    r.start()
    actions = r.send(AuthorizationFailed(code, "because"))
    assert not any(isinstance(a, StoreLink | RepairLink) for a in actions)
    failed = actions[-1]
    assert isinstance(failed, Failed) and failed.code == code
    assert failed.to_error().code == code and failed.to_error().target == TARGET


def test_an_unknown_authorization_error_is_a_refused_login() -> None:
    r = Resolver(make_req(ways=ALL_WAYS))
    r.start()
    failed = r.send(AuthorizationFailed("server_error", "oops"))[-1]
    assert isinstance(failed, Failed) and failed.code == "login_refused"


def test_an_authorization_is_tried_once() -> None:
    r = Resolver(make_req(ways=ALL_WAYS, max_attempts=3))
    r.start()
    failed = r.send(LoginRefused("no"))[-1]
    assert isinstance(failed, Failed) and failed.code == "login_refused"


def test_a_refused_way_falls_back_to_the_next_one() -> None:
    r = Resolver(make_req(ways=ALL_WAYS))
    assert _authorize(r.start()).way is LinkWay.BROWSER
    act = _authorize(r.send(WayRefused("no redirect URI")))
    assert act.way is LinkWay.DEVICE and r.attempt == 1
    actions = r.send(WayRefused("no device grant"))
    assert isinstance(actions[-1], Prompt) and r.way is LinkWay.PASSWORD
    assert r.way_reason is WayReason.ONLY_WAY
    assert "would not start browser (no redirect URI): trying device" in r.explain()


def test_a_refused_way_that_was_asked_for_is_way_unavailable() -> None:
    r = Resolver(make_req(ways=ALL_WAYS, requested_way=LinkWay.DEVICE))
    r.start()
    failed = r.send(WayRefused("no device grant"))[-1]
    assert isinstance(failed, Failed) and failed.code == "way_unavailable"
