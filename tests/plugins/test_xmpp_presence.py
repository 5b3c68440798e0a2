"""The presence bookkeeping of the ``xmpp`` plug-in (sans-I/O: no server, explicit times)."""

from __future__ import annotations

from interapp.plugins.xmpp.presence import (
    LIMIT,
    QUIET,
    Announced,
    ProbeWait,
    hand_over,
    take_over,
)


def test_the_wait_ends_as_soon_as_every_subscribed_contact_answered() -> None:
    wait = ProbeWait({"bob@x", "carol@x"}, started=100.0)
    assert not wait.done(100.0)
    wait.heard("bob@x", 100.04)
    assert not wait.done(100.05)
    wait.heard("carol@x", 100.06)
    assert wait.done(100.06)
    assert ProbeWait(set(), started=5.0).done(5.0)  # nobody to wait for


def test_the_wait_ends_after_a_quiet_period_and_never_after_the_limit() -> None:
    assert 0 < QUIET < LIMIT < 1.0  # "well under a second"
    silent = ProbeWait({"dave@unreachable"}, started=0.0)
    assert not silent.done(QUIET - 0.01) and silent.done(QUIET)
    busy = ProbeWait({"dave@unreachable"}, started=0.0)
    now = 0.0
    while now < LIMIT:  # other presence keeps arriving, never dave's
        assert not busy.done(now)
        busy.heard("someone@x", now)
        now += QUIET / 2
    assert busy.done(LIMIT) and busy.until() == LIMIT


def test_a_repeated_presence_is_no_news() -> None:
    seen = Announced()
    assert seen.fresh("bob@x", "online", "ready")
    assert not seen.fresh("bob@x", "online", "ready")
    assert seen.fresh("bob@x", "online", "in a match")
    assert seen.fresh("bob@x", "offline", "")
    assert seen.fresh("carol@x", "away", "")
    assert seen.available() == ["carol@x"]


def test_a_dropped_stream_hands_what_it_announced_to_the_next_session_once() -> None:
    key = ("x", "xmpp://127.0.0.1:5222", "alice@x")
    before = Announced()
    before.fresh("bob@x", "online", "ready")
    hand_over(key, before)
    after = take_over(key)
    assert after is not None and not after.fresh("bob@x", "online", "ready")
    assert take_over(key) is None  # taken once, by one successor
    assert take_over(("y", "xmpp://127.0.0.1:5222", "alice@x")) is None  # per target
