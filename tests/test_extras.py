"""``pip install interapp`` gives the host and the interapp plug-in only; each missing extra is
named in one line when it is needed.

A fresh virtual environment gets the project without extras (built from this tree), and the
real ``interapp`` command of that environment is run against servers of the test's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from interapp.secret import Secret
from interapp.testing.servers import ThreadedServer

ROOT = Path(__file__).resolve().parents[1]
EXTRA_MODULES = ("fastapi", "uvicorn", "starlette", "aiosqlite", "joserfc", "jinja2", "redis",
                 "psycopg", "slixmpp", "prometheus_client", "nio")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install <this project>` and nothing else."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def run(bin_dir: Path, *args: str, env: dict[str, str], stdin: str = "") -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "interapp"), *args], input=stdin, text=True,
                          capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    folder = tmp_path_factory.mktemp("extras-apps")
    arena = ThreadedServer("arena", folder / "arena.db").start()
    chatter = ThreadedServer("chatter", folder / "chatter.db").start()

    def seed(server: ThreadedServer, users: tuple[str, ...]) -> None:
        async def work() -> None:
            db = Database.open(server.db_url)
            try:
                async with db.begin() as conn:
                    made = [await accounts.create_user(conn, u, password_hash=passwords.hash_sync(
                        Secret(f"{u}-pw"))) for u in users]
                    if len(made) == 2:
                        await social.make_buddies(conn, made[0], made[1])
            finally:
                await db.close()

        server.call(work)

    seed(arena, ("alice",))
    seed(chatter, ("alice", "bob"))
    try:
        yield {"arena": arena, "chatter": chatter, "arena_client": arena.create_client(),
               "chatter_client": chatter.create_client()}
    finally:
        arena.stop()
        chatter.stop()


def test_the_base_install_has_no_extra(base: Path) -> None:
    probe = "import importlib.util, json, sys; print(json.dumps([m for m in sys.argv[1:] " \
            "if importlib.util.find_spec(m)]))"
    done = subprocess.run([str(base / "python"), "-c", probe, *EXTRA_MODULES],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
    listed = subprocess.run([str(base / "interapp"), "plugins", "--json"], capture_output=True,
                            text=True, check=True)
    plugins = json.loads(listed.stdout)
    assert {p["name"] for p in plugins["plugins"]} == {"interapp", "xmpp", "matrix"}
    assert plugins["broken"] == []


@pytest.mark.parametrize(("args", "extra"), [
    (("serve", "--app", "arena"), "server"),
    (("admin", "add-user", "--app", "arena", "bob"), "server"),
    (("demo", "--yes"), "server"),
    (("ui", "--no-browser"), "web"),
    (("agent",), "web"),
])
def test_a_missing_extra_is_named_in_one_line(base: Path, tmp_path: Path, args: tuple[str, ...],
                                              extra: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")},
           "INTERAPP_HOME": str(tmp_path)}
    done = run(base, *args, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interapp: error: "), done.stderr
    assert f"[{extra}]" in lines[0] and f"pip install 'interapp[{extra}]'" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_host_and_the_interapp_plugin_work_without_extras(
        base: Path, tmp_path: Path, apps: dict[str, object]) -> None:
    arena, chatter = apps["arena"], apps["chatter"]
    assert isinstance(arena, ThreadedServer) and isinstance(chatter, ThreadedServer)
    (a_id, a_secret), (c_id, c_secret) = apps["arena_client"], apps["chatter_client"]  # type: ignore[misc]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")},
           "INTERAPP_HOME": str(tmp_path / "home"), "INTERAPP_VAULT_KEYRING": "0",
           "INTERAPP_VAULT_KEY": "base-install-test-passphrase"}

    def ok(*args: str, stdin: str = "") -> str:
        done = run(base, *args, env=env, stdin=stdin)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    ok("local", "--server", arena.url, "--client-id", a_id, "--client-secret-stdin",
       stdin=a_secret.reveal() + "\n")
    ok("login", "alice", "--password-stdin", stdin="alice-pw\n")
    ok("targets", "add", "chatter", "--plugin", "interapp", "--server", chatter.url,
       "--client-id", c_id, "--client-secret-stdin", stdin=c_secret.reveal() + "\n")
    assert "as alice (prompt)" in ok("connect", "chatter", "--username", "alice",
                                     "--password-stdin", stdin="alice-pw\n")
    rows = json.loads(ok("contacts", "--json"))["contacts"]
    assert [(r["target"], r["username"]) for r in rows] == [("chatter", "bob")]
    ok("targets", "add", "x", "--plugin", "xmpp", "--server", "xmpp://127.0.0.1:9")
    done = run(base, "connect", "x", "--username", "a@localhost", "--password-stdin",
               env=env, stdin="pw\n")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "pip install 'interapp[xmpp]'" in done.stderr and "slixmpp" in done.stderr
