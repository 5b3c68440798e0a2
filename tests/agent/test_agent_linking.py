"""The device and browser link ways through a running agent: ``interapp connect NAME --via …``
goes to the agent (the CLI's face shows the code or opens the browser; the agent polls, or
its own loopback listener gets the answer), and a client that says nothing about link ways
keeps getting the password prompt it knows."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from agent_kit import PW, AgentProcess, World, interapp_exe, make_world

from interapp.testing.browser import FormBrowser

GRANTS = ("authorization_code", "urn:ietf:params:oauth:grant-type:device_code", "password",
          "refresh_token")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, AgentProcess]]:
    w = make_world(tmp_path_factory.mktemp("agent-linking"), link=False)
    cid, secret = w.servers["chatter"].create_client(
        "host2", redirect_uris=("http://127.0.0.1/callback",), grant_types=GRANTS)
    assert secret is not None
    w.cli("targets", "add", "chat2", "--plugin", "interapp", "--server",
          w.servers["chatter"].url, "--client-id", cid, "--client-secret-stdin",
          input=secret.reveal() + "\n")
    agent = AgentProcess(w)
    try:
        yield w, agent
    finally:
        agent.terminate()
        w.stop()


def test_a_client_that_names_no_way_gets_the_password_prompt(
        running: tuple[World, AgentProcess]) -> None:
    _, agent = running
    with agent.http() as api:
        out = api.post("/agent/v1/targets/chat2/connect", json={}).json()
        prompt = out["prompt"]
        assert prompt["kind"] == "fields" and [f["name"] for f in prompt["fields"]] == [
            "username", "password"]
        api.post(f"/agent/v1/prompts/{prompt['id']}", json={"decline": True})


def test_connect_via_device_through_the_agent(running: tuple[World, AgentProcess]) -> None:
    w, agent = running
    proc = subprocess.Popen([interapp_exe(), "connect", "chat2", "--via", "device",
                             "--explain"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=w.env)
    assert proc.stderr is not None
    seen = ""
    code = None
    while code is None:
        line = proc.stderr.readline()
        assert line, f"no code shown: {seen}"
        seen += line
        found = re.search(r"enter the code:\s+([B-Z]{4}-[B-Z]{4})", seen)
        code = found.group(1) if found else None
    browser = FormBrowser("alice", PW["alice@chatter"])

    async def approve() -> Any:
        try:
            return await browser.enter_code(f"{w.servers['chatter'].url}/device", code)
        finally:
            await browser.aclose()

    page = asyncio.run(approve())
    assert "Device connected" in page.text
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, seen + err
    assert out.strip() == "connected to chat2 as alice (prompt)"
    assert "way: device (requested" in err
    with agent.http() as api:  # the agent holds the connection (and the link)
        body = api.get("/agent/v1/links").json()
        links = body["links"] if isinstance(body, dict) else body
        assert [ln["target"] for ln in links if ln["target"] == "chat2"] == ["chat2"]
