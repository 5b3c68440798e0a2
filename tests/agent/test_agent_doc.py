"""docs/agent.md's JavaScript example is run exactly as printed, against a real agent.

arena and chatter run on threads; alice has not linked chatter yet, so the example's
``onPrompt`` answers the agent's prompt; bob (over HTTP at chatter) answers once alice's
message has reached him. The example imports the package by its name, ``interapp-agent``,
from a folder where that name resolves to ``clients/js``.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from agent_kit import PW, AgentProcess, make_world
from test_js_client import JS, ensure_node_modules, node

pytestmark = pytest.mark.slow
DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"


def example() -> str:
    blocks = re.findall(r"```js\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/agent.md has no JavaScript example"
    return str(blocks[0])


def test_the_example_is_at_most_40_lines() -> None:
    assert len(example().rstrip("\n").splitlines()) <= 40


def test_the_example_runs_as_printed(tmp_path: Path) -> None:
    ensure_node_modules()
    w = make_world(tmp_path, link=False)
    agent = AgentProcess(w, "--port", "0")
    try:
        token = w.cli("agent", "token", "create", "doc-example").stdout.strip()
        app = tmp_path / "app"
        (app / "node_modules").mkdir(parents=True)
        (app / "node_modules" / "interapp-agent").symlink_to(JS)
        (app / "example.mjs").write_text(example())
        env = {**os.environ, "AGENT_URL": f"http://127.0.0.1:{agent.port}",
               "AGENT_TOKEN": token, "CHATTER_USER": "alice",
               "CHATTER_PASSWORD": PW["alice@chatter"]}
        proc = subprocess.Popen([node(), "example.mjs"], cwd=app, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        bob = w.bob()

        def answer() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                got = bob.get("/v1/conversations/alice/messages").json()["messages"]
                if any(m["body"] == "hi bob, game tonight?" for m in got):
                    break
                time.sleep(0.2)
            bob.put("/v1/presence", json={"state": "online", "status_text": "ready"})
            n = 0
            while proc.poll() is None and time.monotonic() < deadline:
                n += 1
                bob.post("/v1/messages", json={"to": "alice", "body": f"sure, 9pm! ({n})",
                                               "client_msg_id": f"bob-doc-{n}"})
                time.sleep(1.0)

        helper = threading.Thread(target=answer, daemon=True)
        helper.start()
        out, err = proc.communicate(timeout=90)
        helper.join(10)
        bob.close()
    finally:
        agent.terminate()
        w.stop()
    assert proc.returncode == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "signed in as alice"
    assert lines[1].startswith("[chatter] ") and "sign in" in lines[1]
    assert "connected to chatter as alice (prompt)" in lines
    assert "bob (chatter) is offline" in lines
    assert "bob came online" in lines
    assert re.match(r"^bob: sure, 9pm! \(\d+\)$", lines[-1]), out
