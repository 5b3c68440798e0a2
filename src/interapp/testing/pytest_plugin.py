"""The pytest plug-in of the conformance kit: the ``interapp_home`` fixture.

``interapp_home`` is a real interapp application server (SQLite, in a thread, on 127.0.0.1),
started once per test session and stopped at its end. It plays the *local application*: the
kit's hosts log in to it, and same-account targets trust its issuer.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from interapp.secret import Secret
from interapp.testing.kit import HomeApp
from interapp.testing.servers import ThreadedServer


@pytest.fixture(scope="session")
def interapp_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeApp]:
    """A running local application with a host client; ``new_user()`` makes a local user."""
    from interapp.server import accounts, passwords
    from interapp.server.storage import Database

    folder = tmp_path_factory.mktemp("interapp-home")
    server = ThreadedServer("home", folder / "home.db").start()
    db_url = server.db_url

    async def make_client() -> tuple[str, Secret | None]:
        db = Database.open(db_url)
        try:
            async with db.begin() as conn:
                return await accounts.create_client(conn, "conformance-host", public=False)
        finally:
            await db.close()

    client_id, client_secret = server.call(make_client)
    assert client_secret is not None

    def new_user() -> tuple[str, str]:
        username = f"u{secrets.token_hex(5)}"
        password = secrets.token_urlsafe(12)

        async def make() -> None:
            db = Database.open(db_url)
            try:
                async with db.begin() as conn:
                    await accounts.create_user(conn, username, password_hash=passwords.hash_sync(
                        Secret(password)))
            finally:
                await db.close()

        server.call(make)
        return username, password

    try:
        yield HomeApp(server.url, client_id, client_secret, new_user)
    finally:
        server.stop()
