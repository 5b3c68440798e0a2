"""Who may use the UI server: launch secret, session cookie, CSRF, Host/Origin checks, headers.

A real ``interapp ui`` process on a data folder whose local application is configured but not
running (nothing here needs it); requests are made with httpx and a WebSocket client.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from web_kit import URL_LINE, UIProcess, launch_ui, stop_ui
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from interapp.host.config import HostConfig, LocalApp
from interapp.secret import Secret
from interapp.testing.servers import free_port
from interapp.vault import Vault


@pytest.fixture(scope="module")
def lone_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIProcess]:
    tmp = tmp_path_factory.mktemp("gate")
    home = tmp / "host"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0",
               INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
    dead = f"http://127.0.0.1:{free_port()}"  # a local app that does not answer

    # a local app that does not answer cannot be set through the host (it asks the app for
    # its metadata): write the configuration as an earlier session would have left it
    HostConfig(home).set_local(LocalApp(dead, "ia_client", dead))
    with Vault.open(home / "vault.db", env=env) as vault:
        vault.put_secret("local:client_secret", Secret("cs-" + "x" * 20))
    ui = launch_ui(tmp, env)
    yield ui
    stop_ui(ui)


@pytest.fixture
def anonymous(lone_ui: UIProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lone_ui.base, timeout=10) as client:
        yield client


def next_address(ui: UIProcess, ask: Callable[[], None] | None = None) -> str:
    """Ask the running ``interapp ui`` for a fresh one-time address (SIGUSR1 by default)."""
    (ask or (lambda: ui.proc.send_signal(signal.SIGUSR1)))()
    assert ui.proc.stdout is not None
    deadline, buffer = time.monotonic() + 15, ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([ui.proc.stdout], [], [], 0.2)
        if ready:
            buffer += os.read(ui.proc.stdout.fileno(), 4096).decode()
            for line in buffer.splitlines():
                match = URL_LINE.match(line.strip())
                if match:
                    return match.group(2)
    raise AssertionError(f"interapp ui printed no new address: {buffer!r}")


def signed_in(ui: UIProcess) -> tuple[httpx.Client, str]:
    """A client holding a session (from a fresh one-time address), and its CSRF token."""
    client = httpx.Client(base_url=ui.base, timeout=10, follow_redirects=True)
    resp = client.get(f"/?k={next_address(ui)}")
    assert resp.status_code == 200  # followed the redirect to /
    token = re.search(r'name="csrf-token" content="([^"]+)"', resp.text)
    assert token is not None
    return client, token.group(1)


@pytest.mark.parametrize("path", ["/", "/signin", "/agent/v1/state", "/fragments/targets",
                                  "/fragments/buddies", "/static/app.js", "/static/app.css",
                                  "/agent/v1/history/a/b", "/agent/v1/openapi.json",
                                  "/targets/x/unlink"])
def test_nothing_without_a_session(anonymous: httpx.Client, path: str) -> None:
    resp = anonymous.get(path)
    assert resp.status_code == 401
    assert "csrf" not in resp.text
    assert "app.js" not in resp.text


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/signin"), ("POST", "/signout"), ("PUT", "/agent/v1/presence"),
    ("POST", "/agent/v1/messages"), ("POST", "/agent/v1/targets/chatter/connect"),
    ("POST", "/agent/v1/prompts/x"), ("DELETE", "/agent/v1/targets/chatter/link"),
    ("DELETE", "/agent/v1/session"), ("POST", "/targets/chatter/unlink")])
def test_no_change_without_a_session(anonymous: httpx.Client, method: str, path: str) -> None:
    assert anonymous.request(method, path, json={}).status_code == 401


def test_websocket_needs_the_session(lone_ui: UIProcess) -> None:
    ws_url = lone_ui.base.replace("http://", "ws://") + "/agent/v1/events"
    with pytest.raises(InvalidStatus):
        ws_connect(ws_url, origin=Origin(lone_ui.base), open_timeout=5)


def test_wrong_launch_secret_gives_nothing(anonymous: httpx.Client) -> None:
    resp = anonymous.get("/?k=not-the-secret", follow_redirects=False)
    assert resp.status_code == 403
    assert "set-cookie" not in resp.headers


def test_the_secret_works_only_on_the_first_page(anonymous: httpx.Client,
                                                 lone_ui: UIProcess) -> None:
    resp = anonymous.get(f"/agent/v1/state?k={lone_ui.secret}", follow_redirects=False)
    assert resp.status_code == 401
    assert "set-cookie" not in resp.headers


def test_launch_secret_becomes_a_strict_http_only_cookie(anonymous: httpx.Client,
                                                         lone_ui: UIProcess) -> None:
    resp = anonymous.get(f"/?k={lone_ui.secret}", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/"
    cookie = resp.headers["set-cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    port = lone_ui.base.rsplit(":", 1)[1]
    name, _, value = attrs[0].partition("=")
    assert name == f"interapp_ui_{port}"  # cookies ignore ports: one name per UI server
    assert len(value) >= 40 and value != lone_ui.secret
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs)
    page = anonymous.get("/")
    assert page.status_code == 200
    assert "Sign in" in page.text
    assert lone_ui.secret not in page.text


def test_security_headers(lone_ui: UIProcess) -> None:
    client, _ = signed_in(lone_ui)
    with closing(client):
        resp = client.get("/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["referrer-policy"] == "same-origin"


def test_csrf_token_is_required_on_every_post(lone_ui: UIProcess) -> None:
    client, token = signed_in(lone_ui)
    origin = lone_ui.base
    with closing(client):
        body = {"state": "away", "status_text": ""}
        assert client.put("/agent/v1/presence", json=body).status_code == 403
        assert client.put("/agent/v1/presence", json=body,
                          headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert client.put("/agent/v1/presence", json=body, headers={
            "X-CSRF-Token": token, "Origin": "http://evil.example"}).status_code == 403
        assert client.delete("/agent/v1/session").status_code == 403  # DELETE too
        ok = client.put("/agent/v1/presence", json=body,
                        headers={"X-CSRF-Token": token, "Origin": origin})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"state": "away", "status_text": "", "targets": [], "errors": {}}
        # plain HTML forms carry the token in a hidden field
        form = {"username": "alice", "password": "pw-not-used"}
        assert client.post("/signin", data=form).status_code == 403
        assert client.post("/signin", data={**form, "csrf": "forged"}).status_code == 403
        refused = client.post("/signin", data={**form, "csrf": token})
        assert refused.status_code == 400  # accepted by the gate; the local app is down
        assert "pw-not-used" not in refused.text
        assert 'role="alert"' in refused.text


def test_only_its_own_host_name(lone_ui: UIProcess) -> None:
    client, _ = signed_in(lone_ui)
    with closing(client):
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
        port = lone_ui.base.rsplit(":", 1)[1]
        assert client.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_websocket_with_session_and_origin(lone_ui: UIProcess) -> None:
    client, _ = signed_in(lone_ui)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    client.close()
    ws_url = lone_ui.base.replace("http://", "ws://") + "/agent/v1/events?since=999999"
    headers = {"Cookie": cookie}
    with pytest.raises(InvalidStatus):  # another site's page cannot listen in
        ws_connect(ws_url, origin=Origin("http://evil.example"),
                   additional_headers=headers, open_timeout=5)
    with ws_connect(ws_url, origin=Origin(lone_ui.base),
                    additional_headers=headers, open_timeout=5) as ws:
        first = json.loads(ws.recv(timeout=5))
    # the agent's own stream, carried through: a cursor it does not have yet is reset
    assert first["type"] == "cursor_reset" and first["target"] == "*"
    assert first["since"] == 999999


def test_request_bodies_are_bounded(lone_ui: UIProcess) -> None:
    client, token = signed_in(lone_ui)
    with closing(client):
        resp = client.post("/agent/v1/messages", content=b"x" * (300 * 1024),
                           headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert resp.status_code == 413


DEEP = ["[" * 5000 + "]" * 5000, '{"answers": ' + '{"a": ' * 3000 + "1" + "}" * 3001,
        '{"state": ' + "[" * 5000 + "]" * 5000 + "}"]


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/agent/v1/presence"), ("POST", "/agent/v1/messages"),
    ("POST", "/agent/v1/prompts/p1")])
@pytest.mark.parametrize("body", [*DEEP, "{", "[1, 2]", "\ud800", "null"])
def test_malformed_json_posts_are_4xx(lone_ui: UIProcess, method: str, path: str,
                                      body: str) -> None:
    """Bad JSON bodies — 5,000 nested arrays too (a RecursionError in json.loads) — are
    answered with a 4xx JSON error, never a 500 (by the agent: the UI forwards them)."""
    client, token = signed_in(lone_ui)
    with closing(client):
        resp = client.request(method, path, content=body.encode("utf-8", "surrogatepass"), headers={
            "X-CSRF-Token": token, "Origin": lone_ui.base, "Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    assert set(resp.json()) == {"error", "message"}


def test_server_output_has_no_secret(lone_ui: UIProcess) -> None:
    out = lone_ui.output()
    assert out.count(lone_ui.secret) == 1  # the printed address, nothing else
    assert "pw-not-used" not in out
    assert "cs-" + "x" * 20 not in out


def test_an_address_opens_the_ui_once(lone_ui: UIProcess) -> None:
    """Issue 16: the launch secret could mint any number of sessions."""
    secret = next_address(lone_ui)
    first = httpx.Client(base_url=lone_ui.base, timeout=10)
    with closing(first):
        assert first.get(f"/?k={secret}").status_code == 303
        for _ in range(5):  # someone else holding the address gets nothing, however often
            with httpx.Client(base_url=lone_ui.base, timeout=10) as other:
                again = other.get(f"/?k={secret}")
                assert again.status_code == 403 and "set-cookie" not in again.headers
                assert "press Enter in the terminal" in again.text
        # the same browser opening the address again (a second tab) is just let in
        back = first.get(f"/?k={secret}")
        assert back.status_code == 303 and "set-cookie" not in back.headers
        assert first.get("/").status_code == 200


def test_a_new_address_replaces_the_unused_one(lone_ui: UIProcess) -> None:
    old = next_address(lone_ui)
    new = next_address(lone_ui)
    with httpx.Client(base_url=lone_ui.base, timeout=10) as client:
        assert client.get(f"/?k={old}").status_code == 403
        assert client.get(f"/?k={new}").status_code == 303


def test_new_sessions_do_not_push_a_session_in_use_out(lone_ui: UIProcess) -> None:
    user, _ = signed_in(lone_ui)
    with closing(user):
        for _ in range(70):  # more than MAX_SESSIONS (64) new sessions
            extra, _ = signed_in(lone_ui)
            extra.close()
            assert user.get("/agent/v1/state").status_code == 200  # the user keeps working


def test_enter_in_the_terminal_prints_a_fresh_address(tmp_path: Path) -> None:
    home = tmp_path / "host"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0",
               INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
    dead = f"http://127.0.0.1:{free_port()}"
    HostConfig(home).set_local(LocalApp(dead, "ia_client", dead))
    ui = launch_ui(tmp_path, env, stdin=subprocess.PIPE)
    try:
        assert "press Enter here" in ui.output()

        def enter() -> None:
            assert ui.proc.stdin is not None
            ui.proc.stdin.write("\n")
            ui.proc.stdin.flush()

        with httpx.Client(base_url=ui.base, timeout=10) as client:
            assert client.get(f"/?k={ui.secret}").status_code == 303
        fresh = next_address(ui, enter)
        assert fresh != ui.secret
        with httpx.Client(base_url=ui.base, timeout=10) as client:
            assert client.get(f"/?k={ui.secret}").status_code == 403
            assert client.get(f"/?k={fresh}").status_code == 303
    finally:
        stop_ui(ui)
