"""Tests of the link lifecycle table (interapp.host.lifecycle)."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interapp.errors import InterappError
from interapp.host import lifecycle
from interapp.host.lifecycle import (
    STORED_STATES,
    TRANSITIONS,
    USABLE_STATES,
    LifecycleError,
    LinkEvent,
    LinkState,
    allowed_events,
    is_usable,
    next_state,
)

S = LinkState
E = LinkEvent

ALL_PAIRS = list(itertools.product(S, E))
ILLEGAL_PAIRS = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


def _id(pair: tuple[S, E]) -> str:
    return f"{pair[0]}-{pair[1]}"


def test_module_has_theory_of_operation() -> None:
    assert lifecycle.__doc__ is not None
    assert "Theory of operation" in lifecycle.__doc__


def test_enums_have_the_documented_values() -> None:
    assert {s.value for s in S} == {"linked", "degraded", "needs_reauth", "revoked", "unlinked"}
    assert {e.value for e in E} == {
        "login_ok",
        "credential_refused",
        "connection_lost",
        "connection_restored",
        "remote_revoked",
        "reauth_ok",
        "unlink",
    }


@pytest.mark.parametrize(("pair", "target"), list(TRANSITIONS.items()), ids=lambda x: str(x))
def test_every_legal_transition(pair: tuple[S, E], target: S) -> None:
    state, event = pair
    assert next_state(state, event) is target
    # string values work as well as members
    assert next_state(state.value, event.value) is target
    assert event in allowed_events(state)


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=_id)
def test_every_illegal_pair_raises(pair: tuple[S, E]) -> None:
    state, event = pair
    with pytest.raises(LifecycleError) as info:
        next_state(state, event)
    assert str(state) in info.value.message and str(event) in info.value.message
    assert event not in allowed_events(state)


def test_table_and_complement_cover_every_pair() -> None:
    assert len(TRANSITIONS) + len(ILLEGAL_PAIRS) == len(S) * len(E)
    assert ILLEGAL_PAIRS  # some pairs are impossible


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(S.LINKED, E.UNLINK)] = S.LINKED  # type: ignore[index]


@pytest.mark.parametrize(("state", "event"), [("bogus", "login_ok"), ("linked", "bogus")])
def test_unknown_names_raise_lifecycle_error(state: str, event: str) -> None:
    with pytest.raises(LifecycleError):
        next_state(state, event)


def test_allowed_events_of_unknown_state() -> None:
    with pytest.raises(LifecycleError):
        allowed_events("bogus")


def test_error_is_an_interapp_error_with_a_code() -> None:
    err = LifecycleError("x")
    assert isinstance(err, InterappError)
    assert err.code == "link_lifecycle_error"


def test_every_state_is_reachable_from_unlinked() -> None:
    seen = {S.UNLINKED}
    todo = deque([S.UNLINKED])
    while todo:
        s = todo.popleft()
        for e in allowed_events(s):
            n = next_state(s, e)
            if n not in seen:
                seen.add(n)
                todo.append(n)
    assert seen == set(S)


def test_unlinked_only_leaves_by_a_login() -> None:
    assert allowed_events(S.UNLINKED) == {E.LOGIN_OK}
    assert next_state(S.UNLINKED, E.LOGIN_OK) is S.LINKED


@pytest.mark.parametrize("state", sorted(STORED_STATES))
def test_unlink_from_every_stored_state(state: S) -> None:
    assert next_state(state, E.UNLINK) is S.UNLINKED


@pytest.mark.parametrize("state", sorted(STORED_STATES))
def test_remote_revoked_from_every_stored_state(state: S) -> None:
    assert next_state(state, E.REMOTE_REVOKED) is S.REVOKED


def test_reauth_ok_only_repairs_invalid_links() -> None:
    sources = {s for (s, e) in TRANSITIONS if e is E.REAUTH_OK}
    assert sources == {S.NEEDS_REAUTH, S.REVOKED}
    assert all(next_state(s, E.REAUTH_OK) is S.LINKED for s in sources)


def test_a_stored_credential_only_works_in_usable_states() -> None:
    sources = {s for (s, e) in TRANSITIONS if e is E.LOGIN_OK}
    assert sources == USABLE_STATES | {S.UNLINKED}


@pytest.mark.parametrize("state", [S.LINKED, S.DEGRADED, S.NEEDS_REAUTH, S.REVOKED])
def test_credential_refused_always_needs_reauth(state: S) -> None:
    assert next_state(state, E.CREDENTIAL_REFUSED) is S.NEEDS_REAUTH


def test_network_events() -> None:
    assert next_state(S.LINKED, E.CONNECTION_LOST) is S.DEGRADED
    assert next_state(S.DEGRADED, E.CONNECTION_LOST) is S.DEGRADED
    assert next_state(S.DEGRADED, E.CONNECTION_RESTORED) is S.LINKED
    # a network event never hides that the credential is bad
    for s in (S.NEEDS_REAUTH, S.REVOKED):
        assert next_state(s, E.CONNECTION_LOST) is s
        assert next_state(s, E.CONNECTION_RESTORED) is s
    with pytest.raises(LifecycleError):
        next_state(S.LINKED, E.CONNECTION_RESTORED)


def test_is_usable() -> None:
    assert {s for s in S if is_usable(s)} == {S.LINKED, S.DEGRADED}
    assert is_usable("degraded")
    assert set(S) - {S.UNLINKED} == STORED_STATES


@given(st.lists(st.sampled_from(list(E)), max_size=40))
def test_random_event_sequences_stay_in_the_table(events: list[E]) -> None:
    state = S.UNLINKED
    for event in events:
        if (state, event) in TRANSITIONS:
            new = next_state(state, event)
            assert new in S
            state = new
        else:
            with pytest.raises(LifecycleError):
                next_state(state, event)
