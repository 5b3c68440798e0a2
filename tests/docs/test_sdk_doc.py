"""docs/sdk.md's example is run exactly as printed, against two real application servers.

arena is the local application (alice signs in there), chatter has accounts of its own (alice
and bob, buddies). The example's dialog reads the prompt's answers from standard input; bob
answers from another client once alice's message has reached him.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from interapp.secret import Secret
from interapp.testing.servers import ThreadedServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
PW = {"alice@arena": "arena-pw-1", "alice@chatter": "chatter-pw-1", "bob@chatter": "bob-pw-1"}


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/sdk.md has no python example"
    return str(blocks[0])


def test_the_example_is_at_most_40_lines() -> None:
    assert len(example().rstrip("\n").splitlines()) <= 40


def _seed(server: ThreadedServer, users: dict[str, str], buddies: bool) -> None:
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


def _bob_answers(chatter: ThreadedServer, client: tuple[str, str], proc: subprocess.Popen[str],
                 deadline: float) -> None:
    """bob waits for alice's message, then answers until the example has seen it."""
    with httpx.Client(base_url=chatter.url, timeout=10) as http:
        token = http.post("/oauth/token", auth=client, data={
            "grant_type": "password", "username": "bob",
            "password": PW["bob@chatter"]}).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        while time.monotonic() < deadline:
            got = http.get("/v1/conversations/alice/messages").json()["messages"]
            if any(m["body"] == "hi bob, game tonight?" for m in got):
                break
            time.sleep(0.2)
        n = 0
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)  # the example subscribes to events right after sending
            n += 1
            r = http.post("/v1/messages", json={"to": "alice", "body": f"sure, 9pm! ({n})",
                                                "client_msg_id": f"bob-{n}-{time.time_ns()}"})
            assert r.status_code == 201, r.text


def test_the_example_runs_as_printed(tmp_path: Path) -> None:
    arena = ThreadedServer("arena", tmp_path / "arena.db").start()
    chatter = ThreadedServer("chatter", tmp_path / "chatter.db").start()
    try:
        _seed(arena, {"alice": PW["alice@arena"]}, False)
        _seed(chatter, {"alice": PW["alice@chatter"], "bob": PW["bob@chatter"]}, True)
        a_id, a_secret = arena.create_client("game")
        c_id, c_secret = chatter.create_client("game")
        assert a_secret is not None and c_secret is not None
        script = tmp_path / "example.py"
        script.write_text(example())
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
        env.update(INTERAPP_HOME=str(tmp_path / "home"), INTERAPP_VAULT_KEYRING="0",
                   INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode(),
                   ARENA_URL=arena.url, ARENA_CLIENT_ID=a_id,
                   ARENA_CLIENT_SECRET=a_secret.reveal(), ARENA_USER="alice",
                   ARENA_PASSWORD=PW["alice@arena"], CHATTER_URL=chatter.url,
                   CHATTER_CLIENT_ID=c_id, CHATTER_CLIENT_SECRET=c_secret.reveal())
        deadline = time.monotonic() + 60
        for run in (1, 2):  # the second run uses the stored link: nobody is asked
            proc = subprocess.Popen([sys.executable, str(script)], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(f"alice\n{PW['alice@chatter']}\n" if run == 1 else "")
            proc.stdin.close()
            _bob_answers(chatter, (c_id, c_secret.reveal()), proc, deadline)
            if proc.poll() is None:  # it never saw bob's answer
                proc.kill()
            assert proc.stdout is not None and proc.stderr is not None
            out, err = proc.stdout.read(), proc.stderr.read()
            assert proc.wait(10) == 0, f"{out}\n{err}"
            if run == 1:
                assert "[chatter] sign in to your chatter account" in out
                assert "connected to chatter as alice (prompt)" in out
            else:
                assert "sign in to" not in out
                assert "connected to chatter as alice (stored-link)" in out
            assert "bob (chatter) is offline" in out  # bob answers from an HTTP client
            assert re.search(r"^bob: sure, 9pm! \(\d+\)$", out, re.M), out
            assert PW["alice@chatter"] not in out + err
    finally:
        arena.stop()
        chatter.stop()
