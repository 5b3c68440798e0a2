"""``interapp agent`` end to end: a real agent process, two real servers, the real command line.

arena (the local application) and chatter (its own accounts) run on threads; the host's data
folder is set up with ``interapp local`` / ``login`` / ``targets add`` / ``connect``; then
``interapp agent --port 0`` runs in its own process and everything goes through it: the
command line (``status``, ``contacts``, ``watch``, ``connect``), the API over the Unix socket
and over 127.0.0.1, the event WebSocket. bob talks to chatter over HTTP as any other client.
The tests share one world and run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_kit import PW, AgentProcess, World, interapp_exe, make_world, presence_of, wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect, unix_connect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("agent"))
    yield w
    w.stop()


@pytest.fixture(scope="module")
def agent(world: World) -> Iterator[AgentProcess]:
    proc = AgentProcess(world, "--port", "0")
    holder = {"proc": proc}
    world.agent = holder  # type: ignore[attr-defined]
    yield proc
    current = holder["proc"]
    if current.proc.poll() is None:
        current.terminate()


def current(world: World) -> AgentProcess:
    return world.agent["proc"]  # type: ignore[attr-defined,no-any-return]


def events_ws(a: AgentProcess, since: int | None = None) -> ClientConnection:
    query = f"?since={since}" if since is not None else ""
    return unix_connect(a.socket, f"ws://agent/agent/v1/events{query}",
                        additional_headers={"Authorization": f"Bearer {a.token}"},
                        open_timeout=10)


def recv_until(ws: ClientConnection, match: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """Every event received until one for which ``match(event)`` is true (it included)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        got.append(event)
        if match(event):
            return got
    raise AssertionError(f"no matching event; got {got}")


def test_status_says_not_running_without_an_agent(world: World) -> None:
    out = world.cli("agent", "status", check=False)
    assert out.returncode == 1 and "not running" in out.stdout
    assert json.loads(world.cli("agent", "status", "--json", check=False).stdout)[
        "running"] is False


def test_the_agent_listens_privately_and_keeps_the_target_connected(
        world: World, agent: AgentProcess) -> None:
    sock = Path(agent.socket)
    assert sock == world.home / "agent.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((world.home / "agent.token").stat().st_mode) == 0o600
    with agent.http() as api:
        state = wait_until(lambda: (s := api.get("/agent/v1/state").json())["targets"][0][
            "state"] == "connected" and s, what="chatter connected")
    assert state["user"] == "alice"
    assert state["agent"]["pid"] == agent.proc.pid
    row = state["targets"][0]
    assert (row["name"], row["link_state"], row["account"], row["branch"]) == \
        ("chatter", "linked", "alice", "stored-link")
    out = world.cli("agent", "status")
    assert "running since" in out.stdout and f"pid {agent.proc.pid}" in out.stdout
    assert "chatter" in out.stdout and "connected" in out.stdout
    data = json.loads(world.cli("agent", "status", "--json").stdout)
    assert data["running"] is True and data["port"] == agent.port


def test_every_request_needs_a_token(world: World, agent: AgentProcess) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=agent.socket),
                      base_url="http://agent") as anon:
        for path in ("/agent/v1/state", "/agent/v1/openapi.json", "/agent/v1/buddies",
                     "/agent/v1/nothing-here"):
            resp = anon.get(path)
            assert resp.status_code == 401, path
            assert set(resp.json()) == {"error", "message"}
            assert resp.json()["error"] == "unauthorized"
        forged = anon.get("/agent/v1/state", headers={
            "Authorization": "Bearer iat_forged", "X-Forwarded-For": "203.0.113.9"})
        assert forged.status_code == 401
        assert "server" not in forged.headers  # a local agent does not name its server
        assert anon.post("/agent/v1/messages", json={}).status_code == 401
    with pytest.raises(InvalidStatus):
        unix_connect(agent.socket, "ws://agent/agent/v1/events", open_timeout=5)


def test_named_tokens_work_until_revoked(world: World, agent: AgentProcess) -> None:
    out = world.cli("agent", "token", "create", "my-game")
    token = out.stdout.strip()
    assert token.startswith("iat_") and "shown only now" in out.stderr
    assert token not in (world.home / "agent-tokens.json").read_text()
    listed = json.loads(world.cli("agent", "token", "list", "--json").stdout)["tokens"]
    assert [t["name"] for t in listed] == ["my-game"]
    with agent.http(token) as api:
        assert wait_until(lambda: api.get("/agent/v1/state").status_code == 200,
                          what="the new token to count")
        world.cli("agent", "token", "revoke", "my-game")
        wait_until(lambda: api.get("/agent/v1/state").status_code == 401, timeout=10,
                   what="the revoked token to be refused")
    assert world.cli("agent", "token", "revoke", "my-game", check=False).returncode == 1


def test_loopback_tcp_checks_host_and_origin(world: World, agent: AgentProcess) -> None:
    base = f"http://127.0.0.1:{agent.port}"
    auth = {"Authorization": f"Bearer {agent.token}"}
    with httpx.Client(base_url=base, timeout=10) as tcp:
        assert tcp.get("/agent/v1/state", headers=auth).status_code == 200
        assert tcp.get("/agent/v1/state").status_code == 401
        rebinding = tcp.get("/agent/v1/state", headers={**auth, "Host": f"evil.example:"
                                                                       f"{agent.port}"})
        assert rebinding.status_code == 403 and rebinding.json()["error"] == "forbidden"
        cross = tcp.get("/agent/v1/state", headers={**auth, "Origin": "http://evil.example"})
        assert cross.status_code == 403
        same = tcp.get("/agent/v1/state", headers={**auth, "Origin": base})
        assert same.status_code == 200
    ws_url = f"ws://127.0.0.1:{agent.port}/agent/v1/events"
    with pytest.raises(InvalidStatus):  # another site's page cannot listen in
        connect(ws_url, origin="http://evil.example", additional_headers=auth,  # type: ignore[arg-type]
                open_timeout=5)
    # the standard WebSocket API cannot set headers: the token may come as a subprotocol
    with connect(ws_url, subprotocols=["interapp.agent.v1", f"bearer.{agent.token}"],  # type: ignore[list-item]
                 open_timeout=5) as ws:
        assert ws.subprotocol == "interapp.agent.v1"


def test_status_over_the_agent_lasts(world: World, agent: AgentProcess) -> None:
    bob = world.bob()
    out = world.cli("status", "--state", "away", "in a match")
    assert out.stdout.strip() == "away — in a match on chatter"
    assert presence_of(bob) == ("away", "in a match")
    time.sleep(10)  # the command has long exited; the agent holds the presence
    assert presence_of(bob) == ("away", "in a match")
    held = json.loads(world.cli("agent", "status", "--json").stdout)["presence"]
    assert held == {"state": "away", "status_text": "in a match", "held": True}


def test_contacts_shows_live_presence_at_once(world: World, agent: AgentProcess) -> None:
    bob = world.bob()
    assert bob.put("/v1/presence", json={"state": "busy", "status_text": "raid"}).is_success
    t0 = time.monotonic()
    rows = json.loads(world.cli("contacts", "--json").stdout)["contacts"]
    assert time.monotonic() - t0 < 10
    assert [(r["username"], r["presence"], r["status_text"]) for r in rows] == [
        ("bob", "busy", "raid")]


def test_watch_attaches_to_the_agents_stream(world: World, agent: AgentProcess) -> None:
    bob = world.bob()
    proc = subprocess.Popen([interapp_exe(), "watch", "chatter", "--count", "1", "--timeout",
                             "20"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=world.env)
    try:
        n = 0
        while proc.poll() is None and n < 20:  # until watch has attached and printed one
            bob.post("/v1/messages", json={"to": "alice", "body": f"gg, rematch? {n}",
                                           "client_msg_id": f"bob-watch-{n}"})
            n += 1
            time.sleep(1.0)
        out, err = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.strip().startswith("[chatter] bob → alice: gg, rematch? ")
    assert n < 6, "watch took more than a few seconds to show a message through the agent"


def test_messages_are_idempotent_and_history_is_newest_last(world: World,
                                                            agent: AgentProcess) -> None:
    bob = world.bob()
    body = {"target": "chatter", "to": "bob", "body": "see you at 9",
            "client_msg_id": "cmid-agent-1"}
    with agent.http() as api:
        first = api.post("/agent/v1/messages", json=body)
        again = api.post("/agent/v1/messages", json=body)
        assert first.status_code == again.status_code == 201, first.text
        assert first.json()["id"] == again.json()["id"] and first.json()["own"] is True
        got = bob.get("/v1/conversations/alice/messages").json()["messages"]
        assert [m["body"] for m in got].count("see you at 9") == 1
        hist = api.get("/agent/v1/history/chatter/bob", params={"limit": 2}).json()
        assert hist["with"] == "bob"
        assert [m["body"] for m in hist["messages"]][-1] == "see you at 9"
        assert hist["messages"][0]["body"].startswith("gg, rematch?")
        missing = api.get("/agent/v1/history/nowhere/bob")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        bad = api.post("/agent/v1/messages", json={**body, "body": ""})
        assert bad.status_code == 400 and set(bad.json()) == {"error", "message"}


def test_connect_through_the_prompt_and_the_cli_answers_it(world: World,
                                                           agent: AgentProcess) -> None:
    with agent.http() as api:
        done = api.delete("/agent/v1/targets/chatter/link").json()
        assert done == {"target": "chatter", "remote_revoked": True,
                        "local_credential_destroyed": True, "note": "revoked at the target"}
        out = api.post("/agent/v1/targets/chatter/connect").json()
        prompt = out["prompt"]
        assert set(prompt) >= {"id", "target", "fields", "reason", "attempt", "max_attempts"}
        assert [(f["name"], f["secret"]) for f in prompt["fields"]] == [
            ("username", False), ("password", True)]
        assert (prompt["target"], prompt["attempt"], prompt["max_attempts"]) == ("chatter", 1, 3)
        state = api.get("/agent/v1/state").json()
        assert state["targets"][0]["prompt"] == prompt["id"]
        again = api.post(f"/agent/v1/prompts/{prompt['id']}",
                         json={"answers": {"username": "alice", "password": "wrong"}}).json()
        retry = again["prompt"]
        assert retry["attempt"] == 2 and "invalid username or password" in retry["reason"]
        declined = api.post(f"/agent/v1/prompts/{retry['id']}", json={"decline": True})
        assert declined.json() == {"declined": {"id": retry["id"], "target": "chatter"}}
        gone = api.post(f"/agent/v1/prompts/{retry['id']}", json={"decline": True})
        assert gone.status_code == 404
    # the command line answers the agent's prompt with its own (scripted) answers
    out = world.cli("connect", "chatter", "--username", "alice", "--password-stdin",
                    "--json", input=PW["alice@chatter"] + "\n")
    data = json.loads(out.stdout)
    assert (data["branch"], data["remote_account"], data["link_state"]) == \
        ("prompt", "alice", "linked")
    with agent.http() as api:
        row = api.get("/agent/v1/state").json()["targets"][0]
        assert (row["state"], row["link_state"]) == ("connected", "linked")


def test_a_refused_link_becomes_a_prompt_event_any_client_answers(world: World,
                                                                  agent: AgentProcess) -> None:
    with agent.http() as api:
        last = api.get("/agent/v1/state").json()["agent"]["last_seq"]
    with events_ws(agent, since=last) as ws:
        # the grant is revoked at chatter: its stream closes, the stored link is refused
        db = world.servers["chatter"].db_url
        world.cli("admin", "revoke", "--app", "chatter", "alice", "--db", db, "--json")
        got = recv_until(ws, lambda e: e["type"] == "prompt", timeout=30)
    prompt = got[-1]["prompt"]
    assert prompt["reason_code"] == "reauth" and prompt["expected_account"] == "alice"
    with agent.http() as api:
        row = api.get("/agent/v1/state").json()["targets"][0]
        assert (row["state"], row["link_state"], row["prompt"]) == \
            ("needs_reauth", "needs_reauth", prompt["id"])
        out = api.post(f"/agent/v1/prompts/{prompt['id']}", json={"answers": {
            "username": "alice", "password": PW["alice@chatter"]}}).json()
        assert out["connected"]["branch"] == "reauth"
        row = api.get("/agent/v1/state").json()["targets"][0]
        assert (row["state"], row["link_state"]) == ("connected", "linked")


def test_kill_9_and_restart_lose_no_event_for_a_client_that_resumes(world: World) -> None:
    a = current(world)
    bob = world.bob()
    with events_ws(a) as ws:
        bob.post("/v1/messages", json={"to": "alice", "body": "before the crash",
                                       "client_msg_id": "crash-0"})
        seen = recv_until(ws, lambda e: e.get("message", {}).get("body") == "before the crash")
    last = seen[-1]["seq"]
    a.kill()  # SIGKILL: no goodbye, no cursor flush beyond what was on disk
    sent = [f"while down {i}" for i in range(3)]
    for i, text in enumerate(sent):
        bob.post("/v1/messages", json={"to": "alice", "body": text, "client_msg_id": f"d{i}"})
    world.agent["proc"] = b = AgentProcess(world)  # type: ignore[attr-defined]
    with events_ws(b, since=last) as ws:
        got = recv_until(ws, lambda e: e.get("message", {}).get("body") == sent[-1], timeout=30)
    bodies = [e["message"]["body"] for e in got if e["type"] == "message"]
    assert bodies == sent  # each once, in order, nothing before `last` again
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs) and seqs[0] > last and len(set(seqs)) == len(seqs)


def test_sigterm_sets_presence_offline_and_cleans_up(world: World) -> None:
    a = current(world)
    bob = world.bob()
    wait_until(lambda: presence_of(bob)[0] == "away", what="the held presence after restarts")
    assert a.terminate() == 0
    assert presence_of(bob)[0] == "offline"
    for name in ("agent.sock", "agent.json", "agent.token"):
        assert not (world.home / name).exists(), name
    assert (world.home / "agent-events.db").exists()
    assert world.cli("agent", "status", check=False).returncode == 1
    # without an agent the command line works in-process again
    out = world.cli("targets", "list")
    assert out.stdout.startswith("chatter\tinterapp")


def test_no_agent_forces_in_process(world: World) -> None:
    world.agent["proc"] = a = AgentProcess(world)  # type: ignore[attr-defined]
    os.kill(a.proc.pid, signal.SIGSTOP)  # an agent that answers nothing
    try:
        out = world.cli("--no-agent", "targets", "list", timeout=30)
        assert out.stdout.startswith("chatter\tinterapp")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert a.terminate() == 0


def test_no_secret_in_the_agents_files_or_output(world: World) -> None:
    secrets = [*PW.values(), *(s for _, s in world.clients.values())]
    for path in world.home.glob("agent*"):
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path
    for result in world.transcript:
        for secret in secrets:
            assert secret not in result.stdout + result.stderr, result.args
