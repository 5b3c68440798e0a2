"""``interapp serve`` and the offline ``interapp admin`` commands of an application server."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from interapp.cli.output import JSON_OPTION, ask_password, emit, read_secret_line
from interapp.errors import ConfigError, NotFoundError, UnavailableError
from interapp.secret import Secret
from interapp.server.settings import check_app_name, default_db_url

if TYPE_CHECKING:  # keeps `--help` and usage errors from importing SQLAlchemy
    from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

AppOpt = Annotated[str, typer.Option("--app", help="Application name, e.g. arena or chatter.")]
DbOpt = Annotated[str | None, typer.Option(
    "--db", help="Database URL (default: a SQLite file in the data folder); "
                 "postgresql+psycopg://… works too.")]
JsonOpt = Annotated[bool, JSON_OPTION]

admin = typer.Typer(no_args_is_help=True, help="Manage an application's accounts, clients and "
                    "trusted issuers, offline, on its database.")


@admin.callback()
def _admin_needs_the_server() -> None:
    from interapp.extras import require

    require("server", "interapp admin")


def _db_url(app: str, db: str | None, *, must_exist: bool) -> str:
    check_app_name(app)
    if db:
        return db
    url = default_db_url(app)
    if must_exist and not Path(url.removeprefix("sqlite:///")).exists():
        raise NotFoundError(f"no app {app!r} here (no database yet): create it with "
                            f"'interapp admin add-user --app {app} …' or 'interapp serve'")
    return url


def _run(app: str, db: str | None, work: Callable[[AsyncConnection], Awaitable[T]], *,
         must_exist: bool = True) -> T:
    from interapp.server.storage import Database

    url = _db_url(app, db, must_exist=must_exist)

    async def go() -> T:
        database = Database.open(url)
        try:
            async with database.begin() as conn:
                return await work(conn)
        finally:
            await database.close()

    return asyncio.run(go())


@admin.command("add-user")
def add_user(app: AppOpt, username: Annotated[str, typer.Argument(help="The new username.")],
             db: DbOpt = None,
             password_stdin: Annotated[bool, typer.Option(
                 "--password-stdin", help="Read the password from standard input.")] = False,
             display_name: Annotated[str | None, typer.Option(
                 "--display-name", help="Name shown to buddies.")] = None,
             issuer: Annotated[str | None, typer.Option(
                 "--issuer", help="The account belongs to this trusted issuer (its public "
                 "URL): its assertions sign in to it, as if its first login had created "
                 "it.")] = None,
             as_json: JsonOpt = False) -> None:
    """Create an account (with a password, or SSO-only when none is given)."""
    from interapp.server import accounts, passwords

    accounts.check_username(username)
    if issuer is not None and not issuer.startswith(("http://", "https://")):
        raise ConfigError("--issuer must be the issuer's http(s) URL")
    bound = issuer.rstrip("/") if issuer else None
    password: Secret | None = None
    if password_stdin:
        password = Secret(read_secret_line("password"))
    elif sys.stdin is not None and sys.stdin.isatty():
        password = Secret(ask_password(f"Password for {username}", confirm=True))
    hashed = passwords.hash_sync(password) if password else None
    user = _run(app, db, lambda c: accounts.create_user(
        c, username, display_name=display_name, password_hash=hashed, external_issuer=bound),
        must_exist=False)
    emit({"app": app, **user.profile(), "has_password": hashed is not None,
          "external_issuer": bound},
         f"created user {user.username} ({user.display_name}) on {app}"
         + (f", signed in by {bound}" if bound else ""), as_json=as_json)


@admin.command("set-password")
def set_password(app: AppOpt, username: Annotated[str, typer.Argument(help="The account.")],
                 db: DbOpt = None,
                 password_stdin: Annotated[bool, typer.Option(
                     "--password-stdin", help="Read the new password from standard input.")
                 ] = False,
                 as_json: JsonOpt = False) -> None:
    """Change a password; every token of the account is revoked."""
    from interapp.server import accounts, passwords
    from interapp.server.oauth import issue

    if password_stdin:
        password = Secret(read_secret_line("password"))
    elif sys.stdin is not None and sys.stdin.isatty():
        password = Secret(ask_password(f"New password for {username}", confirm=True))
    else:
        raise ConfigError("give the new password with --password-stdin")
    hashed = passwords.hash_sync(password)

    async def work(conn: AsyncConnection) -> int:
        user = await accounts.require_user(conn, username)
        await accounts.set_password_hash(conn, user.id, hashed)
        return await issue.revoke_user(conn, user.id)

    revoked = _run(app, db, work)
    emit({"app": app, "username": username, "changed": True, "revoked_logins": revoked},
         f"password of {username} on {app} changed; {revoked} login(s) revoked", as_json=as_json)


@admin.command("revoke")
def revoke(app: AppOpt, username: Annotated[str, typer.Argument(help="The account.")],
           db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke every token of an account (every plug-in must log in again)."""
    from interapp.server import accounts
    from interapp.server.oauth import issue

    async def work(conn: AsyncConnection) -> int:
        user = await accounts.require_user(conn, username)
        return await issue.revoke_user(conn, user.id)

    revoked = _run(app, db, work)
    emit({"app": app, "username": username, "revoked_logins": revoked},
         f"revoked {revoked} login(s) of {username} on {app}", as_json=as_json)


@admin.command("add-client")
def add_client(app: AppOpt, client_name: Annotated[str, typer.Argument(
                   help="A name for the client, e.g. the local application using it.")],
               db: DbOpt = None,
               public: Annotated[bool, typer.Option(
                   "--public", help="A public client (no secret): native apps, devices.")
               ] = False,
               redirect_uri: Annotated[list[str] | None, typer.Option(
                   "--redirect-uri", help="A redirect URI for the authorization code grant, "
                   "matched exactly (a loopback http://127.0.0.1/… one matches any port); "
                   "repeat for several.")] = None,
               grant: Annotated[list[str] | None, typer.Option(
                   "--grant", help="A grant type the client may use; repeat for several. "
                   "Default: password, refresh_token, jwt-bearer, token-exchange, and "
                   "authorization_code when a --redirect-uri is given.")] = None,
               id_token_alg: Annotated[str | None, typer.Option(
                   "--id-token-alg", help="ES256 (default, the app's key) or RS256.")] = None,
               as_json: JsonOpt = False) -> None:
    """Register an OAuth client; its secret is printed once and never stored in clear."""
    from interapp.server import accounts

    uris = redirect_uri or []
    for uri in uris:
        accounts.check_redirect_uri(uri)
    grants = [_grant_name(g) for g in grant] if grant else None

    async def work(conn: AsyncConnection) -> tuple[Any, Any, Any]:
        client_id, secret = await accounts.create_client(
            conn, client_name, public=public, redirect_uris=uris, grant_types=grants,
            id_token_alg=id_token_alg)
        info = await accounts.get_client(conn, client_id)
        return client_id, secret, info

    client_id, secret, info = _run(app, db, work, must_exist=False)
    shown = secret.reveal() if secret else None
    line = f"client_id={client_id}" + (f" client_secret={shown}" if shown else " (public)")
    emit({"app": app, "name": client_name, "client_id": client_id, "client_secret": shown,
          "public": public, "redirect_uris": list(info.redirect_uris),
          "grant_types": sorted(info.grant_types), "id_token_alg": info.id_token_alg},
         line, as_json=as_json)


#: Short names accepted by ``--grant`` for the long URNs.
GRANT_ALIASES = {"device_code": "urn:ietf:params:oauth:grant-type:device_code",
                 "jwt-bearer": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                 "token-exchange": "urn:ietf:params:oauth:grant-type:token-exchange"}


def _grant_name(name: str) -> str:
    return GRANT_ALIASES.get(name, name)


@admin.command("set-policy")
def set_policy(app: AppOpt, db: DbOpt = None,
               password_grant: Annotated[str, typer.Option(
                   "--password-grant", help="on or off: may the password grant be used?")
               ] = "",
               client: Annotated[str | None, typer.Option(
                   "--client", help="Only for this client (by name); default: the whole app.")
               ] = None,
               as_json: JsonOpt = False) -> None:
    """Switch the password grant off (or on) for the whole application or for one client."""
    from interapp.server import accounts

    if password_grant not in ("on", "off"):
        raise ConfigError("give --password-grant on or --password-grant off")

    async def work(conn: AsyncConnection) -> str:
        if client is None:
            await accounts.set_policy(conn, accounts.POLICY_PASSWORD_GRANT, password_grant)
            return "app"
        info = await accounts.require_client_named(conn, client)
        grants = set(info.grant_types)
        if password_grant == "on":
            grants.add(accounts.PASSWORD_GRANT)
        else:
            grants.discard(accounts.PASSWORD_GRANT)
        await accounts.set_client_grants(conn, info.client_id, grants)
        return "client"

    scope = _run(app, db, work)
    where = f"client {client}" if client else "the whole app"
    emit({"app": app, "client": client, "password_grant": password_grant, "scope": scope},
         f"password grant {password_grant} for {where} on {app}", as_json=as_json)


@admin.command("trust-issuer")
def trust_issuer(app: AppOpt, issuer_url: Annotated[str, typer.Argument(
                     help="The other application's issuer identifier (its public URL).")],
                 db: DbOpt = None,
                 jwks_file: Annotated[Path | None, typer.Option(
                     "--jwks-file", help="The issuer's public keys (JWKS JSON).")] = None,
                 jwks_url: Annotated[str | None, typer.Option(
                     "--jwks-url", help="Where to fetch the issuer's keys (https; http only "
                     "on a loopback address).")] = None,
                 may_sign_in_local_accounts: Annotated[bool, typer.Option(
                     "--may-sign-in-local-accounts",
                     help="Also let this issuer sign in to this app's own accounts (same "
                     "username), not only to the accounts its logins created. Off by "
                     "default; running the command again without it turns it off.")] = False,
                 as_json: JsonOpt = False) -> None:
    """Share the account system of another application: accept its signed assertions.

    The issuer signs in to the accounts its own logins create here; another trusted issuer
    cannot reach them, and no issuer reaches this app's local accounts unless given
    --may-sign-in-local-accounts.
    """
    from interapp.server import accounts

    if jwks_file and jwks_url:
        raise ConfigError("give --jwks-file or --jwks-url, not both")
    jwks = None
    if jwks_file:
        try:
            jwks = jwks_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {jwks_file}: {exc.strerror}") from exc
    source = "file" if jwks else ("url" if jwks_url else "well-known")
    _run(app, db, lambda c: accounts.trust_issuer(
        c, issuer_url, jwks=jwks, jwks_url=jwks_url,
        may_sign_in_local_accounts=may_sign_in_local_accounts), must_exist=False)
    local = "; it may sign in to local accounts" if may_sign_in_local_accounts else ""
    emit({"app": app, "issuer": issuer_url.rstrip("/"), "keys": source,
          "may_sign_in_local_accounts": may_sign_in_local_accounts},
         f"{app} now trusts {issuer_url.rstrip('/')} (keys from {source}){local}",
         as_json=as_json)


@admin.command("add-contact")
def add_contact(app: AppOpt, user_a: Annotated[str, typer.Argument(help="One account.")],
                user_b: Annotated[str, typer.Argument(help="The other account.")],
                db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Make two accounts buddies."""
    from interapp.server import accounts, social

    async def work(conn: AsyncConnection) -> bool:
        a = await accounts.require_user(conn, user_a)
        b = await accounts.require_user(conn, user_b)
        return bool(await social.make_buddies(conn, a, b))

    created = _run(app, db, work)
    emit({"app": app, "users": [user_a, user_b], "state": "accepted", "created": created},
         f"{user_a} and {user_b} are buddies on {app}" + ("" if created else " (already)"),
         as_json=as_json)


TCP_USER_TIMEOUT_MS = 30_000


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket first, so ``--port 0`` can report the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # → TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; inherited by accepted connections
        # A peer that acknowledges nothing for this long is gone: without it, a client that
        # stopped reading keeps its connection (and the kernel's send buffer) until it reads.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: AppOpt, db: DbOpt = None,
          host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 8400,
          public_url: Annotated[str | None, typer.Option(
              "--public-url", help="Public URL = issuer identifier (default http://HOST:PORT).")
          ] = None,
          redis: Annotated[str | None, typer.Option(
              "--redis", help="Redis URL for live events across server processes.")] = None,
          log_level: Annotated[str, typer.Option("--log-level", help="Log level.")] = "warning",
          log_format: Annotated[str, typer.Option(
              "--log-format", help="json (one object per line) or text.")] = "json",
          workers: Annotated[int, typer.Option(
              "--workers", min=1, max=64, help="Server processes sharing the port; more than "
              "one needs PostgreSQL and --redis.")] = 1,
          forwarded_allow_ips: Annotated[str | None, typer.Option(
              "--forwarded-allow-ips", help="Reverse proxies to trust (comma-separated "
              "addresses or networks, e.g. 127.0.0.1): X-Forwarded-For from them names the "
              "client, for logs and per-address login limits. Without it the header is "
              "ignored.")] = None,
          timeout_header: Annotated[float, typer.Option(
              "--timeout-header", help="Seconds a connection may take to send complete request "
              "headers (from connecting, or from the end of the previous response); then it "
              "is closed.")] = 10.0,
          timeout_keep_alive: Annotated[float, typer.Option(
              "--timeout-keep-alive", help="Seconds an idle keep-alive connection stays open "
              "after a response.")] = 5.0,
          limit_concurrency: Annotated[int, typer.Option(
              "--limit-concurrency", help="Open connections (event streams included) or running "
              "requests per process past which new requests and streams get 503.")] = 20_000,
          ) -> None:
    """Run an application server (accounts, verification, tokens, buddies, live events)."""
    from interapp.extras import require

    require("server", "interapp serve")
    # Cheap checks first, so a wrong setting is reported before the heavy imports.
    url = _db_url(app, db, must_exist=False)
    if not 0 <= port <= 65535:
        raise ConfigError("--port must be 0-65535")
    if log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise ConfigError("--public-url (the issuer) must start with http:// or https://")
    if log_format not in ("json", "text"):
        raise ConfigError("--log-format must be json or text")
    if workers > 1 and not redis:
        raise ConfigError("--workers above 1 needs --redis, so that every event stream sees "
                          "events written through any worker")
    if workers > 1 and url.startswith("sqlite"):
        raise ConfigError("--workers above 1 needs a PostgreSQL --db (SQLite has one writer)")
    proxies = _trusted_proxies(forwarded_allow_ips) if forwarded_allow_ips is not None else None
    for flag, seconds in (("--timeout-header", timeout_header),
                          ("--timeout-keep-alive", timeout_keep_alive)):
        if not 0 < seconds <= 3600:
            raise ConfigError(f"{flag} must be a number of seconds in (0, 3600]")
    if limit_concurrency < 1:
        raise ConfigError("--limit-concurrency must be at least 1")
    if redis:
        _check_redis(redis)

    import uvicorn

    from interapp.server.app import create_app
    from interapp.server.observability import configure_logging
    from interapp.server.settings import ServerSettings
    from interapp.server.storage.db import migrate_in_child
    from interapp.server.transport import GuardedConfig

    # the schema migration runs in a child process, so Alembic never loads into the server
    migrate_in_child(url)
    sock = bind_socket(host, port)
    real_port = sock.getsockname()[1]
    where = f"http://{host if ':' not in host else f'[{host}]'}:{real_port}"
    settings = ServerSettings(app=app, db_url=url, issuer=public_url or where, redis_url=redis)
    log_config = configure_logging(log_level.lower(), log_format)
    common: dict[str, Any] = {"log_level": log_level.lower(), "access_log": False,
                              "lifespan": "on", "ws_max_size": 64 * 1024,
                              # events are small JSON frames: permessage-deflate saved little and
                              # cost CPU per frame and a zlib context (~tens of KB) per stream
                              "ws_per_message_deflate": False,
                              "log_config": log_config,
                              # X-Forwarded-For/-Proto only from the proxies named: anyone else
                              # could pick the address its failed logins are counted against
                              "proxy_headers": proxies is not None,
                              "forwarded_allow_ips": proxies or "127.0.0.1",
                              "header_timeout": timeout_header,
                              "timeout_keep_alive": timeout_keep_alive,
                              "limit_concurrency": limit_concurrency}
    if workers > 1:
        _serve_workers(settings, sock, workers, common, where, log_format)
        return
    config = GuardedConfig(create_app(settings), **common)
    server = uvicorn.Server(config)
    _announce({"app": app, "url": where, "issuer": settings.issuer})
    server.run(sockets=[sock])
    if not server.started:
        raise UnavailableError(f"the {app} server could not start (see the messages above)")


def _serve_workers(settings: Any, sock: socket.socket, workers: int, common: dict[str, Any],
                   where: str, log_format: str) -> None:
    """N worker processes on one pre-bound socket (uvicorn's supervisor restarts dead ones)."""
    import dataclasses
    import json
    import os
    import tempfile

    from uvicorn.supervisors import Multiprocess

    from interapp.server.app import SETTINGS_ENV
    from interapp.server.transport import GuardedConfig

    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    os.environ["INTERAPP_LOG"] = f"{common['log_level']}:{log_format}"
    metrics_dir = tempfile.mkdtemp(prefix="interapp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # /metrics sums over the workers
    config = GuardedConfig("interapp.server.app:app_from_env", factory=True, workers=workers,
                            **common)
    _announce({"app": settings.app, "url": where, "issuer": settings.issuer})
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _trusted_proxies(value: str) -> list[str]:
    """The ``--forwarded-allow-ips`` list: IP addresses or networks, no wildcard."""
    import ipaddress

    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ConfigError("--forwarded-allow-ips needs at least one address, e.g. 127.0.0.1")
    trusted = []
    for item in items:
        if item == "*":
            raise ConfigError("--forwarded-allow-ips '*' would trust every client to name its "
                              "own address: give the proxy's address or network")
        try:  # normalised: uvicorn silently ignores a network written with host bits set
            trusted.append(str(ipaddress.ip_network(item, strict=False)) if "/" in item
                           else str(ipaddress.ip_address(item)))
        except ValueError:
            raise ConfigError(f"--forwarded-allow-ips: {item!r} is not an IP address or "
                              "network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return trusted


def _check_redis(url: str) -> None:
    """Fail fast, in one line, when ``--redis`` is malformed or does not answer."""
    import redis as redis_sync
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis_sync.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5,
                                           retry=Retry(NoBackoff(), 0))
    except ValueError as exc:
        raise ConfigError(f"--redis is not a valid Redis URL: {exc}") from exc
    try:
        client.ping()
    except redis_sync.RedisError as exc:
        raise UnavailableError(f"Redis at {url} does not answer: {exc}") from exc
    finally:
        client.close()


def _announce(info: dict[str, Any]) -> None:
    sys.stdout.write(f"interapp: serving {info['app']} on {info['url']} "
                     f"(issuer {info['issuer']})\n")
    sys.stdout.flush()


def register(root: typer.Typer) -> None:
    """Attach ``serve`` and ``admin`` to the root command."""
    root.command("serve")(serve)
    root.add_typer(admin, name="admin")
