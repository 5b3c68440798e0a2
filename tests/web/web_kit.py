"""Helpers of the web UI suite: real servers, a real UI server process, a real Chromium.

* ``chromium``: Debian's ``/usr/bin/chromium``; installed with ``apt-get`` when it is missing
  (the suite fails loudly if that is impossible — it is never skipped). Playwright drives it
  through ``executable_path``; ``playwright install`` is never run.
* ``world``: three interapp application servers on their own threads (SQLite files): ``arena``
  (the local application, alice), ``chatter`` (an IM service with its own accounts: alice, bob,
  carol) and ``arena-chat`` (trusts arena's issuer: the same account system; dave is alice's
  buddy there). The host's data folder is configured as ``interapp local`` / ``targets add``
  would (``HostConfig`` + client secrets in the vault); nobody is logged in yet.
* ``ui``: ``interapp ui --no-browser`` in its own process on that data folder; the URL with the
  launch secret is read from what it prints.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from interapp.host import Host
from interapp.secret import Secret
from interapp.testing.servers import ThreadedServer

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
URL_LINE = re.compile(r"^interapp ui: open (http://\S+/\?k=(\S+))$")

PW = {
    "alice@arena": "arena-" + secrets.token_urlsafe(12),
    "alice@chatter": "chatter-" + secrets.token_urlsafe(12),
    "bob@chatter": "bob-" + secrets.token_urlsafe(12),
    "carol@chatter": "carol-" + secrets.token_urlsafe(12),
}
WRONG = "wrong-" + secrets.token_urlsafe(12)

# ``interapp ui`` exactly as the CLI registers it (ui_cmd.register), in a process of its own.
LAUNCHER = """
import typer
from interapp.cli import ui_cmd
app = typer.Typer(add_completion=False)
@app.callback()
def root() -> None:
    pass
ui_cmd.register(app)
app()
"""


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end on a fresh loop in another thread.

    Playwright's sync API keeps an event loop running on the main thread, so ``asyncio.run``
    cannot be used there.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(120)


def ensure_chromium() -> Path:
    """``/usr/bin/chromium``, installing Debian's package first when it is missing."""
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail("Chromium is required (/usr/bin/chromium) and apt-get is not available to "
                    "install it", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"installing Chromium failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}",
                        pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail("apt-get installed chromium but /usr/bin/chromium is missing", pytrace=False)
    return CHROMIUM


@dataclass
class Peer:
    """A user of chatter talking to it directly over HTTP (not through the host)."""

    username: str
    http: httpx.Client

    def send(self, to: str, body: str) -> dict[str, Any]:
        resp = self.http.post("/v1/messages", json={"to": to, "body": body,
                                                    "client_msg_id": secrets.token_hex(8)})
        assert resp.status_code == 201, resp.text
        out: dict[str, Any] = resp.json()
        return out

    def presence(self, state: str, text: str = "") -> None:
        resp = self.http.put("/v1/presence", json={"state": state, "status_text": text})
        assert resp.status_code == 200, resp.text

    def history(self, user: str, limit: int = 200) -> list[dict[str, Any]]:
        resp = self.http.get(f"/v1/conversations/{user}/messages", params={"limit": limit})
        assert resp.status_code == 200, resp.text
        msgs: list[dict[str, Any]] = resp.json()["messages"]
        return msgs

    def contacts(self) -> list[dict[str, Any]]:
        resp = self.http.get("/v1/contacts")
        assert resp.status_code == 200, resp.text
        out: list[dict[str, Any]] = resp.json()["contacts"]
        return out


@dataclass
class World:
    """The servers, the host's data folder and its environment."""

    tmp: Path
    home: Path
    env: dict[str, str]
    servers: dict[str, ThreadedServer]
    clients: dict[str, tuple[str, Secret]]
    peer_client: tuple[str, Secret]
    peers: dict[str, Peer] = field(default_factory=dict)

    def peer(self, username: str) -> Peer:
        """``username`` logged in to chatter with its own client (cached)."""
        if username not in self.peers:
            cid, secret = self.peer_client
            url = self.servers["chatter"].url
            token = httpx.post(f"{url}/oauth/token", data={
                "grant_type": "password", "username": username,
                "password": PW[f"{username}@chatter"]}, auth=(cid, secret.reveal()), timeout=10)
            assert token.status_code == 200, token.text
            http = httpx.Client(base_url=url, timeout=10, headers={
                "Authorization": f"Bearer {token.json()['access_token']}"})
            self.peers[username] = Peer(username, http)
        return self.peers[username]

    def secrets_to_hide(self) -> list[str]:
        """Every secret that must never show up in a page, a log or the data folder."""
        out = [*PW.values(), WRONG, self.peer_client[1].reveal()]
        out += [s.reveal() for _, s in self.clients.values()]
        return out


async def seed_apps(tmp: Path) -> tuple[dict[str, tuple[str, Secret]], tuple[str, Secret]]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    def pw(key: str) -> str:
        return passwords.hash_sync(Secret(PW[key]))

    clients: dict[str, tuple[str, Secret]] = {}
    peer: tuple[str, Secret] | None = None
    for app in ("arena", "chatter", "arena-chat"):
        db = Database.open(f"sqlite:///{tmp / app}.db")
        async with db.begin() as conn:
            if app == "arena":
                await accounts.create_user(conn, "alice", display_name="Alice",
                                           password_hash=pw("alice@arena"))
            elif app == "chatter":
                alice = await accounts.create_user(conn, "alice", display_name="Alice C.",
                                                   password_hash=pw("alice@chatter"))
                bob = await accounts.create_user(conn, "bob", display_name="Bob",
                                                 password_hash=pw("bob@chatter"))
                carol = await accounts.create_user(conn, "carol", display_name="Carol",
                                                   password_hash=pw("carol@chatter"))
                await social.make_buddies(conn, alice, bob)
                await social.make_buddies(conn, alice, carol)
                pid, psecret = await accounts.create_client(conn, "peers", public=False)
                assert psecret is not None
                peer = (pid, psecret)
            else:
                alice = await accounts.create_user(conn, "alice", display_name="Alice")
                dave = await accounts.create_user(conn, "dave", display_name="Dave")
                await social.make_buddies(conn, alice, dave)
            cid, secret = await accounts.create_client(conn, "host", public=False)
            assert secret is not None
            clients[app] = (cid, secret)
        await db.close()
    assert peer is not None
    return clients, peer


async def trust_arena(tmp: Path, issuer: str) -> None:
    from interapp.server import accounts
    from interapp.server.storage import Database

    db = Database.open(f"sqlite:///{tmp / 'arena-chat'}.db")
    async with db.begin() as conn:
        # alice and dave were seeded as local accounts: arena may sign in to them
        await accounts.trust_issuer(conn, issuer, jwks=None, jwks_url=None,
                                    may_sign_in_local_accounts=True)
    await db.close()


async def configure_host(w: World) -> None:
    async with Host.open(w.home, env=w.env) as host:
        arena = w.servers["arena"]
        cid, secret = w.clients["arena"]
        await host.set_local(arena.url, client_id=cid, client_secret=secret)
        for name, system in (("chatter", "separate"), ("arena-chat", "shared")):
            await host.add_target(name, plugin="interapp", server=w.servers[name].url,
                                  client_id=w.clients[name][0], client_secret=w.clients[name][1],
                                  account_system=system)


@dataclass
class UIProcess:
    """``interapp ui --no-browser`` running in its own process."""

    proc: subprocess.Popen[str]
    url: str  # the first URL, with the launch secret
    secret: str
    log: Path
    log_fh: Any = None

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    def output(self) -> str:
        return self.log.read_text()


def start_ui(w: World, *extra: str) -> UIProcess:
    """Start the UI server on ``w``'s data folder and wait for the address it prints."""
    return launch_ui(w.tmp, w.env, *extra)


def launch_ui(tmp: Path, env: dict[str, str], *extra: str,
              stdin: int = subprocess.DEVNULL) -> UIProcess:
    """``interapp ui --no-browser EXTRA`` with ``env``; waits for the address it prints."""
    log = tmp / f"ui-{secrets.token_hex(3)}.log"
    fh = open(log, "w")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, "ui", "--no-browser", *extra],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=fh,
                            text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    buffer = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096).decode()
            buffer += chunk
            for line in buffer.splitlines():
                match = URL_LINE.match(line.strip())
                if match:
                    with open(log, "a") as out:
                        out.write(buffer)
                    return UIProcess(proc, match.group(1), match.group(2), log, fh)
    proc.kill()
    proc.wait(10)
    fh.close()
    raise RuntimeError(f"interapp ui did not print its address; stdout {buffer!r}; "
                       f"log:\n{log.read_text()}")


def stop_ui(ui: UIProcess) -> None:
    """Stop the UI server (SIGTERM, then SIGKILL after 10 s)."""
    if ui.proc.poll() is None:
        ui.proc.terminate()
        try:
            ui.proc.wait(10)
        except subprocess.TimeoutExpired:
            ui.proc.kill()
            ui.proc.wait(10)
    if ui.proc.stdout is not None:
        rest = ui.proc.stdout.read()
        with open(ui.log, "a") as out:
            out.write(rest)
        ui.proc.stdout.close()
    if ui.log_fh is not None:
        ui.log_fh.close()


def shot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot under docs/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def interapp_exe() -> str:
    """The ``interapp`` command of this environment."""
    exe = Path(sys.executable).with_name("interapp")
    return str(exe) if exe.exists() else str(shutil.which("interapp"))


@dataclass
class AgentProcess:
    """``interapp agent`` in its own process (the real command)."""

    proc: subprocess.Popen[str]
    log: Path

    @classmethod
    def start(cls, tmp: Path, env: dict[str, str]) -> AgentProcess:
        log = tmp / f"agent-{secrets.token_hex(3)}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen([interapp_exe(), "agent"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=fh, text=True, env=env)
        assert proc.stdout is not None
        deadline, buffer = time.monotonic() + 30, ""
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                buffer += os.read(proc.stdout.fileno(), 4096).decode()
                if "interapp agent: listening on" in buffer and buffer.endswith("\n"):
                    return cls(proc, log)
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"the agent did not start: {buffer!r}\n{log.read_text()}")

    def stop(self) -> int:
        """SIGTERM, and its exit code."""
        self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def lone_home(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A data folder whose local application is configured but does not answer (nothing
    here needs it), and the environment for it."""
    from interapp.host.config import HostConfig, LocalApp
    from interapp.testing.servers import free_port
    from interapp.vault import Vault

    home = tmp / "host"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0",
               INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
    dead = f"http://127.0.0.1:{free_port()}"
    # a local app that does not answer cannot be set through the host (it asks the app for
    # its metadata): write the configuration as an earlier session would have left it
    HostConfig(home).set_local(LocalApp(dead, "ia_client", dead))
    with Vault.open(home / "vault.db", env=env) as vault:
        vault.put_secret("local:client_secret", Secret("cs-" + "x" * 20))
    return home, env


def session_of(ui: UIProcess, secret: str | None = None) -> tuple[httpx.Client, str]:
    """A client holding a session of ``ui`` (from its first address), and its CSRF token."""
    client = httpx.Client(base_url=ui.base, timeout=30, follow_redirects=True)
    resp = client.get(f"/?k={secret or ui.secret}")
    assert resp.status_code == 200, resp.text
    token = re.search(r'name="csrf-token" content="([^"]+)"', resp.text)
    assert token is not None
    return client, token.group(1)
