"""``interapp ui`` is a client of the agent (issue 13): it starts the agent of its data folder
or reuses the one that runs, and the pages' calls are the agent's own endpoints.

Real processes only: ``interapp ui`` and ``interapp agent`` as the commands run them; the
requests are a browser's (a session cookie from the printed address, the CSRF token of the
page), made with httpx and a WebSocket client.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx
from web_kit import AgentProcess, interapp_exe, launch_ui, lone_home, session_of, stop_ui
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

AGENT_FILES = ("agent.sock", "agent.json", "agent.token")


def agent_pid(client: httpx.Client) -> int:
    resp = client.get("/agent/v1/state")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["agent"]["pid"])


def first_event(ui_base: str, client: httpx.Client) -> dict[str, object]:
    """The first event of the agent's stream, through the UI (a cursor from the future: the
    agent answers with ``cursor_reset`` at once)."""
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    url = ui_base.replace("http://", "ws://") + "/agent/v1/events?since=999999"
    with ws_connect(url, origin=Origin(ui_base), additional_headers={"Cookie": cookie},
                    open_timeout=10) as ws:
        event: dict[str, object] = json.loads(ws.recv(timeout=10))
    return event


def test_the_ui_starts_the_agent_the_cli_then_uses_and_stops_it(tmp_path: Path) -> None:
    home, env = lone_home(tmp_path)
    ui = launch_ui(tmp_path, env)
    token = "never-read"
    try:
        assert "started the agent of this data folder" in ui.output()
        status = json.loads((home / "agent.json").read_text())
        assert status["pid"] == ui.proc.pid  # in the UI's own process
        # the command line finds it and goes through it, as through any agent
        said = subprocess.run([interapp_exe(), "agent", "status"], env=env, text=True,
                              capture_output=True, timeout=60)
        assert said.returncode == 0, said.stderr
        assert str(ui.proc.pid) in said.stdout
        client, csrf = session_of(ui)
        with closing(client):
            # the page's calls are the agent's endpoints, answered by that agent
            assert agent_pid(client) == ui.proc.pid
            doc = client.get("/agent/v1/openapi.json")
            assert doc.status_code == 200 and "/agent/v1/messages" in doc.json()["paths"]
            held = client.put("/agent/v1/presence", json={"state": "busy", "status_text": "x"},
                              headers={"X-CSRF-Token": csrf, "Origin": ui.base})
            assert held.status_code == 200, held.text
            assert client.get("/agent/v1/state").json()["presence"] == {
                "state": "busy", "status_text": "x", "held": True}
            bad = client.post("/agent/v1/messages", json={"target": "nope"},
                              headers={"X-CSRF-Token": csrf, "Origin": ui.base})
            assert bad.status_code == 400 and set(bad.json()) == {"error", "message"}
            event = first_event(ui.base, client)
            assert event["type"] == "cursor_reset"
            # the browser never holds the agent's token: not in a page, a header or an answer
            token = (home / "agent.token").read_text().strip()
            seen = [client.get(p) for p in ("/", "/fragments/targets", "/agent/v1/state",
                                            "/static/app.js")] + [held, bad, doc]
            for resp in seen:
                assert token not in resp.text
                assert all(token not in v for v in resp.headers.values())
            assert "www-authenticate" not in {k.lower() for k in bad.headers}
    finally:
        stop_ui(ui)
    assert ui.proc.returncode == 0
    for name in AGENT_FILES:  # the agent it started stopped with it, cleanly
        assert not (home / name).exists(), name
    assert token not in ui.output()


def test_the_ui_reuses_a_running_agent_and_follows_it(tmp_path: Path) -> None:
    home, env = lone_home(tmp_path)
    agent = AgentProcess.start(tmp_path, env)
    ui = launch_ui(tmp_path, env)
    try:
        assert f"using the agent of this data folder (pid {agent.proc.pid}" in ui.output()
        client, _ = session_of(ui)
        with closing(client):
            assert agent_pid(client) == agent.proc.pid
            # the agent restarts (a new token): the UI finds it again
            assert agent.stop() == 0
            agent = AgentProcess.start(tmp_path, env)
            assert agent_pid(client) == agent.proc.pid
            assert first_event(ui.base, client)["type"] == "cursor_reset"
            # the agent goes away for good: the UI starts its own
            assert agent.stop() == 0
            assert agent_pid(client) == ui.proc.pid
            assert json.loads((home / "agent.json").read_text())["pid"] == ui.proc.pid
    finally:
        stop_ui(ui)
        if agent.proc.poll() is None:
            agent.stop()
    for name in AGENT_FILES:
        assert not (home / name).exists(), name


def test_an_agent_the_ui_reused_keeps_running_after_it(tmp_path: Path) -> None:
    home, env = lone_home(tmp_path)
    agent = AgentProcess.start(tmp_path, env)
    try:
        ui = launch_ui(tmp_path, env)
        client, _ = session_of(ui)
        with closing(client):
            assert agent_pid(client) == agent.proc.pid
        stop_ui(ui)
        assert ui.proc.returncode == 0
        time.sleep(0.5)
        assert agent.proc.poll() is None  # not the UI's to stop
        assert json.loads((home / "agent.json").read_text())["pid"] == agent.proc.pid
        os.kill(agent.proc.pid, 0)
    finally:
        assert agent.stop() == 0
