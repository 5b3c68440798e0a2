"""``interapp serve``: announces where it serves, uses the data folder by default, stops cleanly
on SIGTERM, and refuses bad settings with one line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from server_kit import bearer, serve

Cli = Callable[..., subprocess.CompletedProcess[str]]
Many = Callable[[list[list[str]]], list[subprocess.CompletedProcess[str]]]


def test_serve_help(cli: Cli) -> None:
    res = cli("serve", "--help")
    assert res.returncode == 0, res.stderr
    for option in ("--app", "--db", "--host", "--port", "--public-url", "--redis"):
        assert option in res.stdout


def test_serve_on_the_default_database(cli: Cli, home: Path, tmp_path: Path) -> None:
    res = cli("admin", "add-user", "--app", "arena", "amy", "--password-stdin", input="pw-amy\n")
    assert res.returncode == 0, res.stderr
    client = cli("admin", "add-client", "--app", "arena", "web")
    client_id, secret = (part.split("=", 1)[1] for part in client.stdout.split())
    with serve("arena", None, None, None, tmp_path / "serve.log", home=home) as proc:
        assert proc.issuer == proc.url  # default issuer: http://HOST:PORT
        meta = httpx.get(f"{proc.url}/.well-known/oauth-authorization-server").json()
        assert meta["issuer"] == proc.url
        resp = httpx.post(f"{proc.url}/oauth/token", auth=(client_id, secret), data={
            "grant_type": "password", "username": "amy", "password": "pw-amy"})
        assert resp.status_code == 200, resp.text
        me = httpx.get(f"{proc.url}/v1/me", headers=bearer(resp.json()["access_token"]))
        assert me.json()["username"] == "amy"
        proc.proc.terminate()
        # uvicorn shuts down, then re-raises the SIGTERM it caught, as a default handler would.
        assert proc.proc.wait(timeout=20) in (0, -15)
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert (home / "apps" / "arena" / "server.db").exists()


def test_serve_refuses_bad_settings(cli_many: Many, cli_inproc: Cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = str(taken.getsockname()[1])
        cases = [
            (["serve", "--app", "a", "--port", "0", "--redis", "redis://127.0.0.1:1/0"],
             "redis"),
            (["serve", "--app", "a", "--port", "0", "--redis", "memcached://x"], "redis"),
            (["serve", "--app", "a", "--port", "0", "--db", "mysql://h/d"], "mysql"),
            (["serve", "--app", "a", "--port", "0", "--db",
              "postgresql+psycopg://postgres@127.0.0.1:1/x"], "unavailable"),
            (["serve", "--app", "a", "--port", "70000"], "--port"),
            (["serve", "--app", "a", "--port", busy], busy),
            (["serve", "--app", "a", "--port", "0", "--public-url", "arena.example"], "http"),
            (["serve", "--app", "a", "--port", "0", "--log-level", "loud"], "--log-level"),
            (["serve", "--app", "Not An App", "--port", "0"], "app name"),
            (["serve", "--port", "0"], "--app"),
        ]
        # Three as real subprocesses; the whole matrix in-process (no start-up cost).
        real = cli_many([cases[i][0] for i in (0, 3, 5)])
        results = [cli_inproc(*args) for args, _ in cases]
    for (args, words), res in zip([cases[0], cases[3], cases[5], *cases], [*real, *results],
                                  strict=True):
        assert res.returncode != 0, args
        assert res.stdout == "", args
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("interapp: error: "), (args, res.stderr)
        assert words.lower() in lines[0].lower(), (args, lines[0])
