"""``interapp admin …`` as a person or a script uses it: the real executable in a subprocess,
on the real database a server uses; effects are checked through a real running server."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from server_kit import (
    ACCESS_TOKEN_TYPE,
    JWT_BEARER,
    TOKEN_EXCHANGE,
    Client,
    RunningServer,
    assert_oauth_error,
    bearer,
    make_client,
    make_user,
    password_login,
)

Cli = Callable[..., subprocess.CompletedProcess[str]]
Many = Callable[[list[list[str]]], list[subprocess.CompletedProcess[str]]]

COMMANDS = {
    "add-user": ["--app", "--db", "--password-stdin", "--display-name", "--issuer", "--json"],
    "set-password": ["--app", "--db", "--password-stdin", "--json"],
    "revoke": ["--app", "--db", "--json"],
    "add-client": ["--app", "--db", "--public", "--json"],
    "trust-issuer": ["--app", "--db", "--jwks-file", "--jwks-url",
                     "--may-sign-in-local-accounts", "--json"],
    "add-contact": ["--app", "--db", "--json"],
}


def ok(res: subprocess.CompletedProcess[str]) -> str:
    """A success: exit 0, nothing on stderr, exactly one line on stdout."""
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    return lines[0]


def ok_json(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    value = json.loads(ok(res))
    assert isinstance(value, dict)
    return value


def fails(res: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    """A failure: exit ≠ 0, nothing on stdout, one ``interapp: error:`` line on stderr."""
    assert res.returncode != 0
    if code is not None:
        assert res.returncode == code, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("interapp: error: ")
    assert "Traceback" not in res.stderr
    return lines[0]


def db_of(home: Path, app: str) -> str:
    """The default database of ``app`` in the data folder (what the commands use without --db)."""
    return f"sqlite:///{home / 'apps' / app / 'server.db'}"


def test_help(cli_many: Many) -> None:
    commands = ["", *COMMANDS]
    results = cli_many([["admin", c, "--help"] if c else ["admin", "--help"] for c in commands])
    for command, res in zip(commands, results, strict=True):
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("Usage: interapp admin"), command
        for option in COMMANDS.get(command, []):
            assert option in res.stdout, (command, option)
        if not command:
            for name in COMMANDS:
                assert name in res.stdout


def test_add_user_line_json_and_login(cli: Cli, home: Path) -> None:
    line = ok(cli("admin", "add-user", "--app", "arena", "alice", "--password-stdin",
                  "--display-name", "Alice A", input="s3cret-pw\n"))
    assert line == "created user alice (Alice A) on arena"
    data = ok_json(cli("admin", "add-user", "--app", "arena", "bob", "--json"))
    assert set(data) == {"app", "id", "username", "display_name", "presence", "status_text",
                         "has_password", "external_issuer", "activity"}
    assert data["external_issuer"] is None and data["activity"] is None  # (issue 15)
    assert data["app"] == "arena" and data["username"] == "bob"
    assert data["has_password"] is False and re.fullmatch(r"[0-9a-f]{32}", data["id"])
    with RunningServer("arena", db_of(home, "arena")) as srv, srv.client() as http:
        client = make_client(srv.db_url)
        tokens = password_login(http, client, "alice", "s3cret-pw")
        me = http.get("/v1/me", headers=bearer(tokens["access_token"])).json()
        assert (me["username"], me["display_name"]) == ("alice", "Alice A")
        # bob has no password (an SSO-only account): the password grant refuses him.
        resp = http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "password", "username": "bob", "password": "anything"})
        assert_oauth_error(resp, 400, "invalid_grant")


def test_add_client_confidential_and_public(cli: Cli, cli_inproc: Cli, home: Path) -> None:
    ok(cli_inproc("admin", "add-user", "--app", "arena", "carol", "--password-stdin",
                  input="pw-carol\n"))
    line = ok(cli("admin", "add-client", "--app", "arena", "desktop"))
    match = re.fullmatch(r"client_id=(ia_\w+) client_secret=(ia_cs_\S+)", line)
    assert match, line
    data = ok_json(cli("admin", "add-client", "--app", "arena", "browser", "--public", "--json"))
    assert data == {"app": "arena", "name": "browser", "client_id": data["client_id"],
                    "client_secret": None, "public": True, "redirect_uris": [],
                    "grant_types": ["password", "refresh_token",
                                    "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                    "urn:ietf:params:oauth:grant-type:token-exchange"],
                    "id_token_alg": "ES256"}
    public_line = ok(cli_inproc("admin", "add-client", "--app", "arena", "phone", "--public"))
    assert re.fullmatch(r"client_id=ia_\w+ \(public\)", public_line)
    secret_json = ok_json(cli_inproc("admin", "add-client", "--app", "arena", "cli", "--json"))
    assert secret_json["public"] is False and secret_json["client_secret"].startswith("ia_cs_")
    fails(cli_inproc("admin", "add-client", "--app", "arena", "desktop"), 1)  # name taken
    with RunningServer("arena", db_of(home, "arena")) as srv, srv.client() as http:
        confidential = Client(match.group(1), match.group(2))
        assert password_login(http, confidential, "carol", "pw-carol")["token_type"] == "Bearer"
        resp = http.post("/oauth/token", data={"grant_type": "password", "username": "carol",
                                               "password": "pw-carol",
                                               "client_id": data["client_id"]})
        assert resp.status_code == 200, resp.text


def test_add_contact(cli: Cli, cli_inproc: Cli, home: Path) -> None:
    for name in ("dan", "eve"):
        ok(cli_inproc("admin", "add-user", "--app", "arena", name, "--password-stdin",
                      input="pw-x\n"))
    assert ok(cli("admin", "add-contact", "--app", "arena", "dan", "eve")) == \
        "dan and eve are buddies on arena"
    again = ok_json(cli("admin", "add-contact", "--app", "arena", "eve", "dan", "--json"))
    assert again == {"app": "arena", "users": ["eve", "dan"], "state": "accepted",
                     "created": False}
    assert ok(cli_inproc("admin", "add-contact", "--app", "arena", "dan", "eve")).endswith(
        "(already)")
    with RunningServer("arena", db_of(home, "arena")) as srv, srv.client() as http:
        tokens = password_login(http, make_client(srv.db_url), "dan", "pw-x")
        contacts = http.get("/v1/contacts", headers=bearer(tokens["access_token"])).json()
        assert [c["username"] for c in contacts["contacts"]] == ["eve"]
    fails(cli_inproc("admin", "add-contact", "--app", "arena", "dan", "dan"), 1)
    fails(cli("admin", "add-contact", "--app", "arena", "dan", "nobody"), 1)


def test_set_password_revokes_every_token(cli: Cli, cli_inproc: Cli, home: Path) -> None:
    ok(cli_inproc("admin", "add-user", "--app", "arena", "fay", "--password-stdin",
                  input="old-pw\n"))
    with RunningServer("arena", db_of(home, "arena")) as srv, srv.client() as http:
        client = make_client(srv.db_url)
        logins = [password_login(http, client, "fay", "old-pw") for _ in range(2)]
        line = ok(cli("admin", "set-password", "--app", "arena", "fay", "--password-stdin",
                      input="new-pw\n"))
        assert line == "password of fay on arena changed; 2 login(s) revoked"
        for tokens in logins:
            assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
            resp = http.post("/oauth/token", auth=client.basic(), data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
            assert_oauth_error(resp, 400, "invalid_grant")
        resp = http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "password", "username": "fay", "password": "old-pw"})
        assert_oauth_error(resp, 400, "invalid_grant")
        fresh = password_login(http, client, "fay", "new-pw")
        data = ok_json(cli("admin", "set-password", "--app", "arena", "fay", "--password-stdin",
                           "--json", input="newer-pw\n"))
        assert data == {"app": "arena", "username": "fay", "changed": True, "revoked_logins": 1}
        assert http.get("/v1/me", headers=bearer(fresh["access_token"])).status_code == 401
    fails(cli("admin", "set-password", "--app", "arena", "fay"), 1)  # no password given
    fails(cli_inproc("admin", "set-password", "--app", "arena", "fay", "--password-stdin"),
          1)  # empty standard input
    fails(cli_inproc("admin", "set-password", "--app", "arena", "ghost", "--password-stdin",
                     input="pw\n"), 1)


def test_revoke(cli: Cli, cli_inproc: Cli, home: Path) -> None:
    ok(cli_inproc("admin", "add-user", "--app", "arena", "gus", "--password-stdin",
                  input="pw-gus\n"))
    with RunningServer("arena", db_of(home, "arena")) as srv, srv.client() as http:
        client = make_client(srv.db_url)
        tokens = password_login(http, client, "gus", "pw-gus")
        assert ok(cli("admin", "revoke", "--app", "arena", "gus")) == \
            "revoked 1 login(s) of gus on arena"
        assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
        # The password still works: revoke ends sessions, it does not lock the account.
        password_login(http, client, "gus", "pw-gus")
        assert ok_json(cli("admin", "revoke", "--app", "arena", "gus", "--json")) == {
            "app": "arena", "username": "gus", "revoked_logins": 1}
        assert ok_json(cli_inproc("admin", "revoke", "--app", "arena", "gus", "--json"))[
            "revoked_logins"] == 0


def test_trust_issuer_with_a_jwks_file(cli: Cli, cli_inproc: Cli, home: Path,
                                       tmp_path: Path) -> None:
    """arena-chat trusts arena through the CLI; then arena's users log in to it by SSO."""
    with RunningServer("arena", db_of(home, "arena")) as arena:
        jwks_file = tmp_path / "arena-jwks.json"
        jwks_file.write_text(httpx.get(f"{arena.url}/.well-known/jwks.json").text)
        ok(cli_inproc("admin", "add-user", "--app", "arena-chat", "zed"))  # creates the db
        line = ok(cli("admin", "trust-issuer", "--app", "arena-chat", arena.issuer + "/",
                      "--jwks-file", str(jwks_file)))
        assert line == f"arena-chat now trusts {arena.issuer} (keys from file)"
        with RunningServer("arena-chat", db_of(home, "arena-chat")) as chat:
            user = make_user(arena.db_url)
            arena_client, chat_client = make_client(arena.db_url), make_client(chat.db_url)
            with arena.client() as http:
                access = password_login(http, arena_client, user.username)["access_token"]
                assertion = http.post("/oauth/token", auth=arena_client.basic(), data={
                    "grant_type": TOKEN_EXCHANGE, "subject_token": access,
                    "subject_token_type": ACCESS_TOKEN_TYPE, "audience": chat.issuer,
                }).json()["access_token"]
            with chat.client() as http:
                resp = http.post("/oauth/token", auth=chat_client.basic(), data={
                    "grant_type": JWT_BEARER, "assertion": assertion})
                assert resp.status_code == 200, resp.text
                me = http.get("/v1/me", headers=bearer(resp.json()["access_token"])).json()
                assert me["username"] == user.username


def test_trust_issuer_variants_and_errors(cli: Cli, cli_inproc: Cli, tmp_path: Path) -> None:
    ok(cli_inproc("admin", "add-user", "--app", "chat", "x1"))
    data = ok_json(cli("admin", "trust-issuer", "--app", "chat", "https://arena.example/",
                       "--jwks-url", "https://arena.example/keys.json", "--json"))
    assert data == {"app": "chat", "issuer": "https://arena.example", "keys": "url",
                    "may_sign_in_local_accounts": False}
    data = ok_json(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://other.example",
                              "--json"))
    assert data["keys"] == "well-known"
    from joserfc.jwk import ECKey

    private = ECKey.generate_key("P-256", private=True, auto_kid=True)
    (tmp_path / "private.json").write_text(json.dumps({"keys": [private.as_dict(private=True)]}))
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "public.json").write_text(json.dumps(private.as_dict(private=False)))
    assert "private" in fails(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://a.example",
                                  "--jwks-file", str(tmp_path / "private.json")), 1)
    fails(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://a.example",
              "--jwks-file", str(tmp_path / "garbage.json")), 1)
    fails(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://a.example",
              "--jwks-file", str(tmp_path / "missing.json")), 1)
    fails(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://a.example",
              "--jwks-file", str(tmp_path / "public.json"), "--jwks-url", "https://a.example/k"),
          1)
    fails(cli_inproc("admin", "trust-issuer", "--app", "chat", "arena.example"), 1)
    fails(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://a.example",
              "--jwks-url", "file:///etc/passwd"), 1)
    # A single public JWK (not a set) is accepted.
    assert ok(cli_inproc("admin", "trust-issuer", "--app", "chat", "https://a.example",
                  "--jwks-file", str(tmp_path / "public.json"))).endswith("(keys from file)")


def test_trust_issuer_binds_accounts_and_local_ones_need_the_flag(
        cli: Cli, cli_inproc: Cli, home: Path, tmp_path: Path) -> None:
    """Two trusted issuers: each signs in to its own accounts only; a local account (with a
    password) is reached only by an issuer given --may-sign-in-local-accounts."""
    with RunningServer("north", db_of(home, "north")) as north, \
            RunningServer("south", db_of(home, "south")) as south:
        ok(cli_inproc("admin", "add-user", "--app", "hub", "lou", "--password-stdin",
                      input="pw-lou\n"))
        line = ok(cli("admin", "add-user", "--app", "hub", "nia", "--issuer", north.issuer + "/"))
        assert line == f"created user nia (nia) on hub, signed in by {north.issuer}"
        for srv in (north, south):
            (tmp_path / f"{srv.settings.app}.json").write_text(
                httpx.get(f"{srv.url}/.well-known/jwks.json").text)
            data = ok_json(cli("admin", "trust-issuer", "--app", "hub", srv.issuer, "--jwks-file",
                               str(tmp_path / f"{srv.settings.app}.json"), "--json"))
            assert data["may_sign_in_local_accounts"] is False
        with RunningServer("hub", db_of(home, "hub")) as hub:
            hub_client = make_client(hub.db_url)

            for srv in (north, south):  # both issuers have a nia and a lou of their own
                for name in ("nia", "lou"):
                    make_user(srv.db_url, name)

            def sso(issuer: RunningServer, username: str) -> httpx.Response:
                client = make_client(issuer.db_url)
                with issuer.client() as http:
                    access = password_login(http, client, username)["access_token"]
                    assertion = http.post("/oauth/token", auth=client.basic(), data={
                        "grant_type": TOKEN_EXCHANGE, "subject_token": access,
                        "subject_token_type": ACCESS_TOKEN_TYPE, "audience": hub.issuer,
                    }).json()["access_token"]
                with hub.client() as http:
                    return http.post("/oauth/token", auth=hub_client.basic(), data={
                        "grant_type": JWT_BEARER, "assertion": assertion})

            assert sso(north, "nia").status_code == 200  # pre-provisioned for north
            assert_oauth_error(sso(south, "nia"), 400, "invalid_grant")
            assert_oauth_error(sso(north, "lou"), 400, "invalid_grant")
            assert_oauth_error(sso(south, "lou"), 400, "invalid_grant")
            line = ok(cli("admin", "trust-issuer", "--app", "hub", south.issuer, "--jwks-file",
                          str(tmp_path / "south.json"), "--may-sign-in-local-accounts"))
            assert line.endswith("(keys from file); it may sign in to local accounts")
            assert sso(south, "lou").status_code == 200
            assert_oauth_error(sso(north, "lou"), 400, "invalid_grant")
            assert_oauth_error(sso(south, "nia"), 400, "invalid_grant")  # still north's
    fails(cli_inproc("admin", "add-user", "--app", "hub", "x2", "--issuer", "north"), 1)


def test_trust_issuer_fetches_keys_over_https_only(cli_inproc: Cli) -> None:
    """Keys that would be fetched over plain http off loopback could be swapped on the way."""
    ok(cli_inproc("admin", "add-user", "--app", "chat", "x1"))
    assert "https" in fails(cli_inproc("admin", "trust-issuer", "--app", "chat",
                                       "http://arena.example"), 1)
    assert "https" in fails(cli_inproc("admin", "trust-issuer", "--app", "chat",
                                       "https://arena.example", "--jwks-url",
                                       "http://arena.example/jwks.json"), 1)
    for fine in (["http://127.0.0.1:8400"], ["http://localhost:8400"], ["http://[::1]:8400"],
                 ["http://arena.example", "--jwks-url", "https://keys.example/jwks.json"]):
        ok(cli_inproc("admin", "trust-issuer", "--app", "chat", *fine))


def test_errors_are_one_line_with_nonzero_exit(cli: Cli, cli_many: Many,
                                               cli_inproc: Cli) -> None:
    ok(cli("admin", "add-user", "--app", "arena", "hal"))
    cases: list[tuple[list[str], int, str]] = [
        # Wrong arguments: usage errors, exit 2.
        (["admin", "add-user", "--app", "arena", "x", "--bogus"], 2, "--bogus"),
        (["admin", "add-user", "x"], 2, "--app"),
        (["admin", "revoke", "--app", "arena"], 2, "username"),
        (["admin", "add-contact", "--app", "arena", "only-one"], 2, "user_b"),
        (["admin", "no-such-command"], 2, "no-such-command"),
        # A missing app (no database yet), a missing user, bad values: exit 1.
        (["admin", "revoke", "--app", "nowhere", "x"], 1, "nowhere"),
        (["admin", "set-password", "--app", "nowhere", "x", "--password-stdin"], 1, ""),
        (["admin", "add-contact", "--app", "nowhere", "a", "b"], 1, "nowhere"),
        (["admin", "revoke", "--app", "arena", "ghost"], 1, "ghost"),
        (["admin", "add-contact", "--app", "arena", "hal", "ghost"], 1, "ghost"),
        (["admin", "add-user", "--app", "arena", "hal"], 1, "already exists"),
        (["admin", "add-user", "--app", "arena", "Not Valid"], 1, "invalid username"),
        (["admin", "add-user", "--app", "Bad App", "x"], 1, "invalid app name"),
        (["admin", "add-user", "--app", "arena", "ivy", "--db", "mysql://h/db"], 1, "mysql"),
        (["admin", "add-user", "--app", "arena", "ivy", "--password-stdin"], 1, "stdin"),
        (["admin", "add-user", "--app", "arena", "ivy", "--db",
          "postgresql+psycopg://postgres@127.0.0.1:1/none"], 1, "unavailable"),
    ]
    # A few as real subprocesses (exit status, stderr as a shell sees them), all in-process.
    real = [0, 5, 8, 12]
    results = dict(zip(real, cli_many([cases[i][0] for i in real]), strict=True))
    for i, (args, code, words) in enumerate(cases):
        for res in filter(None, (results.get(i), cli_inproc(*args))):
            line = fails(res, code)
            assert words.lower() in line.lower(), (args, line)


def test_admin_on_postgresql(cli: Cli, cli_inproc: Cli, pg_url: str) -> None:
    """The same commands with ``--db`` on PostgreSQL; a server on that database sees them."""
    db = ["--db", pg_url]
    ok(cli_inproc("admin", "add-user", "--app", "arena", "pat", *db, "--password-stdin",
                  input="pw-p\n"))
    ok(cli_inproc("admin", "add-user", "--app", "arena", "quin", *db, "--password-stdin",
                  input="pw-q\n"))
    ok(cli("admin", "add-contact", "--app", "arena", "pat", "quin", *db))
    client = ok_json(cli("admin", "add-client", "--app", "arena", "web", *db, "--json"))
    with RunningServer("arena", pg_url) as srv, srv.client() as http:
        c = Client(client["client_id"], client["client_secret"])
        tokens = password_login(http, c, "pat", "pw-p")
        contacts = http.get("/v1/contacts", headers=bearer(tokens["access_token"])).json()
        assert [x["username"] for x in contacts["contacts"]] == ["quin"]
        assert ok_json(cli("admin", "revoke", "--app", "arena", "pat", *db, "--json"))[
            "revoked_logins"] == 1
        assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
    fails(cli_inproc("admin", "revoke", "--app", "arena", "ghost", *db), 1)
