"""Helpers of the agent suite: real servers, the real ``interapp`` command, a real agent process.

* two interapp application servers on their own threads (SQLite): ``arena`` (the local app:
  alice) and ``chatter`` (its own accounts: alice and bob, buddies; bob talks to it over HTTP
  as any other client would);
* the host's data folder, configured with ``interapp local`` / ``login`` / ``targets add``;
* ``interapp agent`` in its own process (:class:`AgentProcess`), stopped with SIGTERM or
  killed with SIGKILL; requests go to it over its Unix socket or its 127.0.0.1 port.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from interapp.secret import Secret
from interapp.testing.servers import ThreadedServer

PW = {"alice@arena": "arena-" + secrets.token_urlsafe(10),
      "alice@chatter": "chatter-" + secrets.token_urlsafe(10),
      "bob@chatter": "bob-" + secrets.token_urlsafe(10)}
LISTENING = re.compile(r"^interapp agent: listening on (\S+)(?: and http://127\.0\.0\.1:(\d+))?")


def interapp_exe() -> str:
    exe = Path(sys.executable).with_name("interapp")
    return str(exe) if exe.exists() else str(shutil.which("interapp"))


def seed(server: ThreadedServer, users: dict[str, str], buddies: bool) -> None:
    """Accounts (and alice-bob buddies) straight into the server's database."""
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    async def work() -> None:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                made = [await accounts.create_user(conn, name, password_hash=passwords.hash_sync(
                    Secret(pw))) for name, pw in users.items()]
                if buddies:
                    await social.make_buddies(conn, made[0], made[1])
        finally:
            await db.close()

    server.call(work)


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"interapp {' '.join(self.args)} → {self.returncode}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


@dataclass
class World:
    """The servers, the host's data folder and environment, and bob at chatter."""

    tmp: Path
    home: Path
    env: dict[str, str]
    servers: dict[str, ThreadedServer]
    clients: dict[str, tuple[str, str]]
    transcript: list[Result] = field(default_factory=list)

    def cli(self, *args: str, input: str = "", timeout: float = 60,
            check: bool = True) -> Result:
        proc = subprocess.run([interapp_exe(), *args], input=input, capture_output=True,
                              text=True, timeout=timeout, env=self.env)
        result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        self.transcript.append(result)
        if check:
            assert proc.returncode == 0, result.describe()
        return result

    def bob(self) -> httpx.Client:
        """bob, signed in to chatter directly (not through any host)."""
        cid, secret = self.clients["peer"]
        url = self.servers["chatter"].url
        token = httpx.post(f"{url}/oauth/token", data={
            "grant_type": "password", "username": "bob", "password": PW["bob@chatter"]},
            auth=(cid, secret), timeout=10)
        assert token.status_code == 200, token.text
        return httpx.Client(base_url=url, timeout=10, headers={
            "Authorization": f"Bearer {token.json()['access_token']}"})

    def stop(self) -> None:
        for srv in self.servers.values():
            srv.stop()


def make_world(tmp: Path, *, link: bool = True) -> World:
    """arena and chatter running, the host configured and signed in (chatter linked)."""
    servers = {"arena": ThreadedServer("arena", tmp / "arena.db").start(),
               "chatter": ThreadedServer("chatter", tmp / "chatter.db").start()}
    seed(servers["arena"], {"alice": PW["alice@arena"]}, False)
    seed(servers["chatter"], {"alice": PW["alice@chatter"], "bob": PW["bob@chatter"]}, True)
    clients: dict[str, tuple[str, str]] = {}
    for app in ("arena", "chatter"):
        cid, secret = servers[app].create_client("host")
        assert secret is not None
        clients[app] = (cid, secret.reveal())
    cid, secret = servers["chatter"].create_client("peer")
    assert secret is not None
    clients["peer"] = (cid, secret.reveal())
    home = tmp / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0",
               INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
    w = World(tmp, home, env, servers, clients)
    w.cli("local", "--server", servers["arena"].url, "--client-id", clients["arena"][0],
          "--client-secret-stdin", input=clients["arena"][1] + "\n")
    w.cli("login", "alice", "--password-stdin", input=PW["alice@arena"] + "\n")
    w.cli("targets", "add", "chatter", "--plugin", "interapp", "--server",
          servers["chatter"].url, "--client-id", clients["chatter"][0],
          "--client-secret-stdin", input=clients["chatter"][1] + "\n")
    if link:
        w.cli("connect", "chatter", "--username", "alice", "--password-stdin",
              input=PW["alice@chatter"] + "\n")
    return w


class AgentProcess:
    """``interapp agent [ARGS]`` in its own process."""

    def __init__(self, world: World, *args: str) -> None:
        self.world = world
        self.log = world.tmp / f"agent-{secrets.token_hex(3)}.log"
        self._fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([interapp_exe(), "agent", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._fh, text=True,
                                     env=world.env)
        self.socket = ""
        self.port: int | None = None
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                buffer += os.read(self.proc.stdout.fileno(), 4096).decode()
                match = LISTENING.match(buffer.strip())
                if match and "\n" in buffer:
                    self.socket = match.group(1)
                    self.port = int(match.group(2)) if match.group(2) else None
                    return
        self.proc.kill()
        raise RuntimeError(f"the agent did not start: {buffer!r}\n{self.log.read_text()}")

    @property
    def token(self) -> str:
        return (self.world.home / "agent.token").read_text().strip()

    def http(self, token: str | None = None) -> httpx.Client:
        """A client on the agent's Unix socket with ``token`` (default: the CLI's)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=self.socket),
                            base_url="http://agent", timeout=60,
                            headers={"Authorization": f"Bearer {token or self.token}"})

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text()


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def presence_of(bob: httpx.Client, user: str = "alice") -> tuple[str, str]:
    """What bob's contact list at chatter says about ``user``."""
    contacts = bob.get("/v1/contacts").json()["contacts"]
    row = next(c for c in contacts if c["username"] == user)
    return row["presence"], row["status_text"]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
