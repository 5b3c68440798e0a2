"""The rich-presence core types: Activity, Party, Join, Invite, their JSON forms and the
readable text every network without structure falls back to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from interapp.errors import REGISTRY, InvalidActivity, InvalidInvite, from_wire
from interapp.plugins.contract import Buddy, Invite, InviteState, Plugin, PluginSpec
from interapp.presence import (
    MAX_STATUS_TEXT,
    Activity,
    Join,
    Party,
    activity_from_json,
    render_activity,
    render_invite,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
FULL = {"name": "Arena", "details": "Ranked 2v2", "state": "level 7",
        "party": {"id": "p-1", "size": 2, "max": 4},
        "started_at": "2026-12-03T11:48:00.000Z", "join": {"url": "https://arena.example/j/1"}}


def test_json_round_trip_is_exactly_the_issue_shape() -> None:
    activity = Activity.from_json(FULL)
    assert activity.to_json() == FULL
    assert Activity.from_json(activity.to_json()) == activity
    assert activity.started_at == datetime(2026, 12, 3, 11, 48, tzinfo=UTC)
    empty = Activity().to_json()
    assert empty == {"name": None, "details": None, "state": None, "party": None,
                     "started_at": None, "join": None}
    assert activity_from_json(None) is None


def test_render_is_the_readable_line() -> None:
    activity = Activity.from_json({**FULL, "state": None})
    assert render_activity(activity, NOW) == "Arena · Ranked 2v2 · 2/4 · 12 min"
    assert render_activity(Activity.from_json(FULL), NOW) == (
        "Arena · Ranked 2v2 · level 7 · 2/4 · 12 min")
    assert render_activity(Activity(name="Arena", started_at=NOW - timedelta(hours=2)),
                           NOW) == "Arena · 2 h"
    assert render_activity(None) == ""
    long = Activity(name="n" * 128, details="d" * 128, state="s" * 128)
    assert len(render_activity(long)) == MAX_STATUS_TEXT
    body = render_invite(activity, None, "come", NOW)
    assert body == "Join me in Arena · Ranked 2v2 · 2/4 · 12 min: https://arena.example/j/1 — come"


def test_other_timezones_become_utc() -> None:
    activity = Activity.from_json({"started_at": "2026-12-03T13:48:00+02:00"})
    assert activity.started_at == datetime(2026, 12, 3, 11, 48, tzinfo=UTC)


@pytest.mark.parametrize("bad", [
    {"name": "x" * 129}, {"details": 5}, {"state": "two\nlines"},
    {"party": {"size": 5, "max": 4}}, {"party": {"size": 0}}, {"party": {"max": 1001}},
    {"party": {"size": True}}, {"party": {"id": "i" * 129}}, {"party": []},
    {"join": {"url": "javascript:alert(1)"}}, {"join": {"url": "data:text/html,x"}},
    {"join": {"url": "https://"}}, {"join": {"url": "https://a.example/" + "x" * 2048}},
    {"join": {"url": "https://a.example/ x"}}, {"join": "https://a.example"},
    {"started_at": "2026-12-03T11:48:00"}, {"started_at": "yesterday"}, {"started_at": 5},
    {"colour": "red"}, [1], "Arena",
])
def test_malformed_is_refused_with_a_stable_code(bad: object) -> None:
    with pytest.raises(InvalidActivity) as caught:
        Activity.from_json(bad)
    assert caught.value.code == "invalid_activity" and caught.value.status == 400


def test_lenient_reading_ignores_newer_fields_only() -> None:
    assert Activity.from_json({"name": "Arena", "colour": "red"}, strict=False).name == "Arena"
    with pytest.raises(InvalidActivity):
        Activity.from_json({"name": "x" * 129, "colour": "red"}, strict=False)


def test_app_schemes_are_join_links() -> None:
    assert Join("steam://joinlobby/1/2").url == "steam://joinlobby/1/2"
    assert Party(size=2).max is None


def test_invite_json_and_errors_on_the_wire() -> None:
    invite = Invite(id="inv1", from_user="alice", to_user="bob",
                    activity=Activity(name="Arena"), join_url="arena://join/7", message="gg",
                    created_at=NOW, expires_at=NOW + timedelta(minutes=10))
    assert Invite.from_json(invite.to_json()) == invite
    assert invite.url == "arena://join/7" and invite.is_open(NOW)
    assert not invite.is_open(NOW + timedelta(minutes=11))
    assert invite.to_json()["state"] == "pending"
    with pytest.raises(InvalidInvite):
        Invite.from_json({**invite.to_json(), "message": "m" * 501})
    with pytest.raises(InvalidInvite):
        Invite.from_json({**invite.to_json(), "state": "maybe"})
    answered = Invite.from_json({**invite.to_json(), "state": "accepted"})
    assert answered.state is InviteState.ACCEPTED
    assert REGISTRY["invalid_activity"] is InvalidActivity
    assert isinstance(from_wire(400, {"error": "invalid_activity", "message": "m"}),
                      InvalidActivity)


def test_contract_defaults() -> None:
    assert Buddy(id="1", username="bob", display_name="Bob").activity is None
    spec = PluginSpec(name="x", version="1", description="", implementation="m:C",
                      account_fields=())
    assert spec.capabilities()["activity"] == "text" and spec.capabilities()["invites"] is None
    assert Plugin.set_activity.__doc__
