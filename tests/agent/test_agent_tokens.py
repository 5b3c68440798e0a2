"""Agent tokens: printed once, stored hashed (0600), listed by name, revoked."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from interapp.agent.tokens import TokenStore
from interapp.errors import ConfigError, NotFoundError


def test_create_check_list_revoke(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token = store.create("my-game")
    assert token.startswith("iat_") and len(token) > 40
    text = store.path.read_text()
    assert token not in text  # only the hash is kept
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    running = TokenStore(tmp_path)  # the agent's copy
    assert running.check(token) is None  # not read yet
    assert running.refresh() is True
    assert running.check(token) == "my-game"
    assert running.check(token + "x") is None
    assert running.refresh() is False  # unchanged: nothing read
    with pytest.raises(ConfigError, match="exists already"):
        store.create("my-game")
    with pytest.raises(ConfigError, match="token name"):
        store.create("no spaces")
    other = store.create("launcher")
    assert [t.name for t in store.list()] == ["launcher", "my-game"]
    store.revoke("my-game")
    running.refresh()
    assert running.check(token) is None
    assert running.check(other) == "launcher"
    with pytest.raises(NotFoundError):
        store.revoke("my-game")
