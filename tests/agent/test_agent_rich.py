"""Rich presence and invites from the command line, end to end: real servers (arena, the local
app; chatter with alice and bob, buddies), the real ``interapp`` command in-process and then
through a real ``interapp agent``; bob talks to chatter over HTTP as any other client would.
alice's activity set with ``interapp status`` reaches bob structured; ``interapp contacts``
shows bob's; invites go round with ``interapp invite`` / ``interapp invites``; bad input is a
one-line error and nothing is stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from agent_kit import AgentProcess, World, make_world, wait_until
from websockets.sync.client import ClientConnection, unix_connect

pytestmark = pytest.mark.slow



def twelve_minutes_ago() -> str:
    return (datetime.now(UTC) - timedelta(minutes=12, seconds=5)).isoformat()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("rich"))
    yield w
    w.stop()


def alice_seen_by(bob: httpx.Client) -> dict[str, Any]:
    rows = bob.get("/v1/contacts").json()["contacts"]
    found: dict[str, Any] = next(c for c in rows if c["username"] == "alice")
    return found


def test_status_sets_the_activity_and_bob_sees_it_structured(world: World) -> None:
    bob = world.bob()
    started = twelve_minutes_ago()
    out = world.cli("--no-agent", "status", "--activity-name", "Arena", "--details",
                    "Ranked 2v2", "--party", "2/4", "--party-id", "p-1", "--join-url",
                    "https://arena.example/join/1", "--started-at", started)
    assert out.stdout.strip() == "Arena · Ranked 2v2 · 2/4 · 12 min on chatter (native)"
    seen = alice_seen_by(bob)
    assert seen["activity"] == {
        "name": "Arena", "details": "Ranked 2v2", "state": None,
        "party": {"id": "p-1", "size": 2, "max": 4},
        "started_at": datetime.fromisoformat(started).astimezone(UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "join": {"url": "https://arena.example/join/1"}}
    assert seen["presence"] == "offline"  # only the activity was set, not the presence
    both = json.loads(world.cli("--no-agent", "status", "--state", "busy", "ranked",
                                "--activity-name", "Arena", "--activity-state", "level 7",
                                "--json").stdout)
    assert (both["state"], both["status_text"]) == ("busy", "ranked")
    assert both["activity"]["carried"] == {"chatter": "native"}
    assert both["activity"]["activity"]["state"] == "level 7"
    seen = alice_seen_by(bob)
    assert (seen["presence"], seen["status_text"], seen["activity"]["state"]) == (
        "busy", "ranked", "level 7")
    cleared = world.cli("--no-agent", "status", "--clear-activity")
    assert cleared.stdout.strip() == "activity cleared on chatter (native)"
    assert alice_seen_by(bob)["activity"] is None
    assert alice_seen_by(bob)["presence"] == "busy"


@pytest.mark.parametrize("args", [
    ("--party", "5/4"), ("--party", "two"), ("--party", "0"),
    ("--activity-name", "x" * 129), ("--join-url", "javascript:alert(1)"),
    ("--started-at", "yesterday"), ("--started-at", "2026-12-03T11:48:00"),
    ("--activity-name", "Arena", "--clear-activity"),
])
def test_bad_activity_input_fails_in_one_line_and_stores_nothing(world: World,
                                                                  args: tuple[str, ...]) -> None:
    bob = world.bob()
    before = alice_seen_by(bob)
    out = world.cli("--no-agent", "status", *args, check=False)
    assert out.returncode != 0, out.describe()
    assert len([ln for ln in out.stderr.splitlines() if ln.strip()]) == 1, out.describe()
    assert out.stderr.startswith("interapp: error: ")
    assert alice_seen_by(bob) == before


def test_contacts_shows_the_buddys_activity(world: World) -> None:
    bob = world.bob()
    assert bob.put("/v1/presence", json={"state": "online", "activity": {
        "name": "Arena", "details": "Ranked 2v2", "party": {"size": 2, "max": 4},
        "started_at": twelve_minutes_ago()}}).is_success
    out = world.cli("--no-agent", "contacts").stdout
    assert "bob — Arena · Ranked 2v2 · 2/4 · 12 min" in out
    rows = json.loads(world.cli("--no-agent", "contacts", "--json").stdout)["contacts"]
    assert rows[0]["activity"]["party"] == {"id": None, "size": 2, "max": 4}
    assert rows[0]["activity_text"] == "bob — Arena · Ranked 2v2 · 2/4 · 12 min"


def test_invite_round_trip_in_process(world: World) -> None:
    bob = world.bob()
    sent = json.loads(world.cli("--no-agent", "invite", "chatter", "bob", "--join-url",
                                "steam://joinlobby/1/2", "--message", "rematch?",
                                "--client-invite-id", "cli-inv-1", "--json").stdout)
    assert (sent["from"], sent["to"], sent["state"], sent["outgoing"]) == (
        "alice", "bob", "pending", True)
    again = json.loads(world.cli("--no-agent", "invite", "chatter", "bob", "--join-url",
                                 "steam://joinlobby/1/2", "--message", "rematch?",
                                 "--client-invite-id", "cli-inv-1", "--json").stdout)
    assert again["id"] == sent["id"]  # idempotent
    pending = bob.get("/v1/invites").json()["invites"]
    assert [(i["id"], i["join_url"], i["message"]) for i in pending] == [
        (sent["id"], "steam://joinlobby/1/2", "rematch?")]
    # bob invites alice back; alice lists and accepts it from the command line
    back = bob.post("/v1/invites", json={"to": "alice", "join_url": "https://arena.example/j/2",
                                         "message": "or here"}).json()
    listed = json.loads(world.cli("--no-agent", "invites", "--json").stdout)["invites"]
    assert {i["id"] for i in listed} == {sent["id"], back["id"]}
    mine = next(i for i in listed if i["id"] == back["id"])
    assert (mine["outgoing"], mine["url"]) == (False, "https://arena.example/j/2")
    text = world.cli("--no-agent", "invites", "chatter").stdout
    assert "bob → alice" in text and "join: https://arena.example/j/2" in text
    accepted = world.cli("--no-agent", "invites", "accept", "chatter", back["id"]).stdout
    assert accepted.strip() == ("accepted the invite from bob on chatter: join at "
                                "https://arena.example/j/2")
    assert [i["id"] for i in bob.get("/v1/invites").json()["invites"]] == [sent["id"]]
    # bob declines alice's; answering again the other way is refused
    assert bob.post(f"/v1/invites/{sent['id']}/decline").json()["state"] == "declined"
    refused = world.cli("--no-agent", "invites", "decline", "chatter", back["id"], check=False)
    assert refused.returncode == 1 and "invite" in refused.stderr
    assert "no open invites" in world.cli("--no-agent", "invites").stdout


def test_bad_invites_fail_and_store_nothing(world: World) -> None:
    bob = world.bob()
    for args in (("--join-url", "javascript:alert(1)"), ("--message", "m" * 501),
                 ("--join-url", "https://a.example/" + "x" * 2048)):
        out = world.cli("--no-agent", "invite", "chatter", "bob", *args, check=False)
        assert out.returncode != 0 and out.stderr.startswith("interapp: error: "), \
            out.describe()
    out = world.cli("--no-agent", "invite", "chatter", "nobody-here", "--join-url",
                    "https://a.example/j", check=False)
    assert out.returncode != 0, out.describe()
    assert bob.get("/v1/invites").json()["invites"] == []


# --- through the agent ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(world: World) -> Iterator[AgentProcess]:
    proc = AgentProcess(world)
    yield proc
    if proc.proc.poll() is None:
        proc.terminate()


def events_ws(a: AgentProcess) -> ClientConnection:
    return unix_connect(a.socket, "ws://agent/agent/v1/events",
                        additional_headers={"Authorization": f"Bearer {a.token}"},
                        open_timeout=10)


def next_of(ws: ClientConnection, kind: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event: dict[str, Any] = json.loads(ws.recv(timeout=max(0.1,
                                                               deadline - time.monotonic())))
        if event.get("type") == kind:
            return event
    raise AssertionError(f"no {kind} event")


def test_through_the_agent_activity_is_held_and_invites_go_round(world: World,
                                                                agent: AgentProcess) -> None:
    bob = world.bob()
    wait_until(lambda: "connected" in world.cli("agent", "status").stdout, what="connected")
    out = world.cli("status", "--activity-name", "Arena", "--party", "3/4")
    assert out.stdout.strip().startswith("Arena · 3/4 · 0 min on chatter (native)")
    assert alice_seen_by(bob)["activity"]["party"] == {"id": None, "size": 3, "max": 4}
    with agent.http() as api:
        state = api.get("/agent/v1/state").json()
        assert state["activity"]["name"] == "Arena"  # held by the agent
        buddies = api.get("/agent/v1/buddies").json()["buddies"]
        assert buddies[0]["activity_text"].startswith("Arena · Ranked 2v2 · 2/4 · ")
        with events_ws(agent) as ws:
            assert bob.put("/v1/presence", json={"activity": {"name": "Chess"}}).is_success
            seen = next_of(ws, "activity")
            assert (seen["target"], seen["username"], seen["activity"]["name"]) == (
                "chatter", "bob", "Chess")
            back = bob.post("/v1/invites", json={"to": "alice", "message": "chess?",
                                                 "client_invite_id": "b-1"}).json()
            got = next_of(ws, "invite")
            assert got["invite"]["id"] == back["id"] and got["invite"]["outgoing"] is False
            assert got["invite"]["activity"]["name"] == "Chess"
            card = api.post(f"/agent/v1/invites/chatter/{back['id']}/accept")
            assert card.status_code == 200, card.text
            assert card.json()["state"] == "accepted"
            mine = api.post("/agent/v1/invites", json={"target": "chatter", "to": "bob",
                                                       "join_url": "https://arena.example/j"})
            assert mine.status_code == 201, mine.text
            bob.post(f"/v1/invites/{mine.json()['id']}/decline")
            answered = next_of(ws, "invite_answer")
            while answered["invite"]["id"] != mine.json()["id"]:
                answered = next_of(ws, "invite_answer")
            assert (answered["invite"]["state"], answered["invite"]["outgoing"]) == (
                "declined", True)
        bad = api.put("/agent/v1/activity", json={"activity": {"party": {"size": 9,
                                                                         "max": 2}}})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_activity"
        assert api.get("/agent/v1/state").json()["activity"]["name"] == "Arena"
    # the CLI's invites go through the agent too
    listed = json.loads(world.cli("invites", "--json").stdout)
    assert listed == {"invites": [], "errors": {}}
    # the agent holds the activity: after a restart it is shown again
    agent.terminate()
    assert bob.put("/v1/presence", json={"state": "online"}).is_success
    again = AgentProcess(world)
    try:
        wait_until(lambda: (alice_seen_by(bob)["activity"] or {}).get("name") == "Arena",
                   what="the held activity shown again")
    finally:
        again.terminate()
