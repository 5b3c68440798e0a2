"""Clients and policy: ``interapp admin add-client … --redirect-uri … --grant …`` and
``interapp admin set-policy --password-grant off`` against a real ``interapp serve``; clients
made before migration 0006 keep exactly what they could do; the migrated schema is the one
``schema.py`` declares."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from oauth_kit import Agent, auth_params, pkce, query_of
from server_kit import (
    INTERAPP,
    PASSWORD,
    RunningServer,
    app_name,
    assert_oauth_error,
    bearer,
    db_run,
    make_user,
    serve,
)

from interapp.server import accounts
from interapp.server.storage.db import MIGRATIONS, migrate, normalize_url
from interapp.server.storage.schema import metadata


def admin(home: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([INTERAPP, "admin", *args, "--json"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "INTERAPP_HOME": str(home)},
                         check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def admin_fails(home: Path, *args: str) -> str:
    out = subprocess.run([INTERAPP, "admin", *args], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "INTERAPP_HOME": str(home)},
                         check=False)
    assert out.returncode != 0 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr


def test_cli_clients_and_policy_against_interapp_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = app_name("cli")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    subprocess.run([INTERAPP, "admin", "add-user", "--app", app, "--db", db, "ann",
                    "--password-stdin"], input=PASSWORD + "\n", text=True, check=True,
                   env={**os.environ, "INTERAPP_HOME": str(home)}, capture_output=True)
    native = admin(home, "add-client", "--app", app, "--db", db, "desktop", "--public",
                   "--redirect-uri", "http://127.0.0.1/callback", "--grant",
                   "authorization_code", "--grant", "device_code")
    assert native["public"] is True and native["client_secret"] is None
    assert native["redirect_uris"] == ["http://127.0.0.1/callback"]
    assert native["grant_types"] == ["authorization_code",
                                     "urn:ietf:params:oauth:grant-type:device_code"]
    legacy = admin(home, "add-client", "--app", app, "--db", db, "host")
    assert "password" in legacy["grant_types"] and "authorization_code" not in \
        legacy["grant_types"]
    assert "http is allowed only on loopback" in admin_fails(
        home, "add-client", "--app", app, "--db", db, "x", "--redirect-uri", "http://a.example/")
    assert "needs at least one --redirect-uri" in admin_fails(
        home, "add-client", "--app", app, "--db", db, "y", "--grant", "authorization_code")
    assert "unknown grant type" in admin_fails(
        home, "add-client", "--app", app, "--db", db, "z", "--grant", "implicit")

    with serve(app, db, None, None, tmp_path / "serve.log", home) as proc:
        verifier, challenge = pkce()
        port_uri = "http://127.0.0.1:49152/callback"  # any port: RFC 8252 §7.3
        agent = Agent(proc.url)
        params = {**auth_params(type("C", (), {"client_id": native["client_id"]})(), challenge),
                  "redirect_uri": port_uri, "scope": "interapp"}
        resp = agent.authorize(params, "ann")
        assert resp.status_code == 303, resp.text
        got = query_of(resp.headers["location"])
        assert got["iss"] == proc.issuer
        tokens = httpx.post(f"{proc.url}/oauth/token", timeout=10, data={
            "grant_type": "authorization_code", "code": got["code"], "code_verifier": verifier,
            "redirect_uri": port_uri, "client_id": native["client_id"]})
        assert tokens.status_code == 200, tokens.text
        me = httpx.get(f"{proc.url}/v1/me", headers=bearer(tokens.json()["access_token"]),
                       timeout=10)
        assert me.json()["username"] == "ann"
        agent.close()
        # the native client was not given the password grant
        form = {"grant_type": "password", "username": "ann", "password": PASSWORD}
        resp = httpx.post(f"{proc.url}/oauth/token", timeout=10,
                          data={**form, "client_id": native["client_id"]})
        assert_oauth_error(resp, 400, "unauthorized_client")
        basic = (legacy["client_id"], legacy["client_secret"])
        assert httpx.post(f"{proc.url}/oauth/token", auth=basic, data=form,
                          timeout=10).status_code == 200
        # per client, while the server runs (the policy is read on every request)
        off = admin(home, "set-policy", "--app", app, "--db", db, "--client", "host",
                    "--password-grant", "off")
        assert off == {"app": app, "client": "host", "password_grant": "off",
                       "scope": "client"}
        resp = httpx.post(f"{proc.url}/oauth/token", auth=basic, data=form, timeout=10)
        assert_oauth_error(resp, 400, "unauthorized_client")
        admin(home, "set-policy", "--app", app, "--db", db, "--client", "host",
              "--password-grant", "on")
        assert httpx.post(f"{proc.url}/oauth/token", auth=basic, data=form,
                          timeout=10).status_code == 200
        # for the whole app
        admin(home, "set-policy", "--app", app, "--db", db, "--password-grant", "off")
        resp = httpx.post(f"{proc.url}/oauth/token", auth=basic, data=form, timeout=10)
        body = assert_oauth_error(resp, 400, "unauthorized_client")
        assert "switched off on this application" in body["error_description"]
        # the other grants keep working: a refresh of the earlier login
        refreshed = httpx.post(f"{proc.url}/oauth/token", timeout=10, data={
            "grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"],
            "client_id": native["client_id"]})
        assert refreshed.status_code == 200, refreshed.text
    assert "give --password-grant on or" in admin_fails(home, "set-policy", "--app", app,
                                                         "--db", db)
    assert "no client 'ghost'" in admin_fails(home, "set-policy", "--app", app, "--db", db,
                                               "--client", "ghost", "--password-grant", "off")


def _upgrade_to(url: str, revision: str) -> None:
    engine = sa.create_engine(normalize_url(url)[1], poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()


def test_clients_made_before_0006_keep_their_grants(db_url: str, pg_databases: Any,
                                                    tmp_path: Path) -> None:
    """A database at revision 0003 with a client: after the upgrade it can do what it did
    (password, refresh, jwt-bearer, token exchange) and nothing new."""
    url = (f"sqlite:///{tmp_path / 'old.db'}" if db_url.startswith("sqlite")
           else pg_databases.create("ia_0006"))
    try:
        _upgrade_to(url, "0003")
        engine = sa.create_engine(normalize_url(url)[1], poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO clients (client_id, name, secret_hash, public, created_at) "
                "VALUES ('ia_old', 'old-host', NULL, true, 0)"))
        engine.dispose()
        with RunningServer(app_name("old"), url) as srv:
            client = db_run(url, lambda c: accounts.get_client(c, "ia_old"))
            assert client is not None and client.grant_types == accounts.LEGACY_GRANTS
            assert client.redirect_uris == () and client.id_token_alg == "ES256"
            user = make_user(url)
            with srv.client() as http:
                resp = http.post("/oauth/token", data={
                    "grant_type": "password", "client_id": "ia_old", "username": user.username,
                    "password": PASSWORD})
                assert resp.status_code == 200, resp.text
                resp = http.post("/oauth/device_authorization", data={"client_id": "ia_old"})
                assert_oauth_error(resp, 400, "unauthorized_client")
    finally:
        if not url.startswith("sqlite"):
            pg_databases.drop(url)


def test_the_migrated_schema_is_the_declared_one(db_url: str) -> None:
    """Alembic's autogenerate finds nothing to change: migrations and schema.py agree."""
    sync_url = normalize_url(db_url)[1]
    migrate(sync_url)
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


@pytest.fixture(autouse=True)
def _no_leftover_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERAPP_HOME", str(tmp_path / "home"))
