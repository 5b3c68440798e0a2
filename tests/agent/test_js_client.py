"""The JavaScript client (``clients/js``), tested with Node's test runner against a real agent.

arena and chatter run on threads; the host is configured with chatter *not* linked;
``interapp agent --port 0`` runs in its own process; a token is made with ``interapp agent
token create``. Then ``node --test clients/js/test/`` links chatter through the prompt (its
callback answers), chats with bob, sees him come online and resumes its event stream — see
``clients/js/test/agent.test.js``. ``npm ci`` in ``clients/js`` (``make test`` runs it) provides
``ws``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_kit import PW, AgentProcess, World, make_world

pytestmark = pytest.mark.slow
JS = Path(__file__).resolve().parents[2] / "clients" / "js"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js ≥ 20 is required for the JavaScript client's tests", pytrace=False)
    return found


def ensure_node_modules() -> None:
    if not (JS / "node_modules" / "ws").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install clients/js (npm ci)", pytrace=False)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def js_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, AgentProcess,
                                                                         str]]:
    ensure_node_modules()
    w = make_world(tmp_path_factory.mktemp("js"), link=False)
    agent = AgentProcess(w, "--port", "0")
    token = w.cli("agent", "token", "create", "js-tests").stdout.strip()
    yield w, agent, token
    agent.terminate()
    w.stop()


def js_env(w: World, agent: AgentProcess, token: str) -> dict[str, str]:
    bob = w.bob()
    bob_token = str(bob.headers["Authorization"]).split(" ", 1)[1]
    bob.close()
    return {**os.environ, "AGENT_URL": f"http://127.0.0.1:{agent.port}", "AGENT_TOKEN": token,
            "CHATTER_URL": w.servers["chatter"].url, "BOB_TOKEN": bob_token,
            "ALICE_PASSWORD": PW["alice@chatter"]}


def test_the_javascript_client_with_nodes_test_runner(
        js_world: tuple[World, AgentProcess, str]) -> None:
    w, agent, token = js_world
    done = subprocess.run([node(), "--test", "--test-reporter=spec", "test/"], cwd=JS,
                          env=js_env(w, agent, token), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\S+ pass 7$", done.stdout, re.M), done.stdout  # the runner's summary
    assert re.search(r"^\S+ fail 0$", done.stdout, re.M), done.stdout
