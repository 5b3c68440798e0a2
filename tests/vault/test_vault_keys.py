"""Master-key sources: raw env key, env passphrase, passphrase callback, keyring fall-through."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from vault_helpers import make_link_factory, refresh_credential

from interapp.errors import VaultLocked
from interapp.vault import KdfParams, Vault, derive_key, resolve_master_key
from interapp.vault import keys as keys_module
from interapp.vault.crypto import Cipher, unwrap_data_key, wrap_data_key
from interapp.vault.keys import KeyRequest, KeyringKey, decode_raw_key, encode_key

NO_KEYRING = {"INTERAPP_VAULT_KEYRING": "0"}


def test_raw_key_in_both_base64_alphabets(tmp_path: Path) -> None:
    key = bytes(range(200, 232))  # encodes with '+', '/' and their url-safe twins
    std = base64.b64encode(key).decode()
    url = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert decode_raw_key(std) == key and decode_raw_key(url) == key
    assert decode_raw_key(encode_key(key)) == key
    assert decode_raw_key("not a key") is None
    assert decode_raw_key(base64.b64encode(b"x" * 31).decode()) is None

    path = tmp_path / "vault.db"
    with Vault.open(path, env={"INTERAPP_VAULT_KEY": std, **NO_KEYRING}) as v:
        assert v.key_source == "env-raw"
        link = make_link_factory(v)()
    with Vault.open(path, env={"INTERAPP_VAULT_KEY": url, **NO_KEYRING}) as v:
        assert v.read_credential(link.id) == refresh_credential()


def test_env_passphrase_is_stretched(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    env = {"INTERAPP_VAULT_KEY": "correct horse battery staple", **NO_KEYRING}
    with Vault.open(path, env=env) as v:
        assert v.key_source == "env-passphrase"
        link = make_link_factory(v)()
    with Vault.open(path, env=env) as v:
        assert v.read_credential(link.id) == refresh_credential()
    with pytest.raises(VaultLocked, match="does not open"):
        Vault.open(path, env={"INTERAPP_VAULT_KEY": "Correct horse battery staple", **NO_KEYRING})


def test_passphrase_callback_works_and_is_cached(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    asked: list[int] = []
    phrase = f"passphrase-{uuid.uuid4()}"

    def ask() -> str:
        asked.append(1)
        return phrase

    before = len(keys_module._kdf_cache)
    with Vault.open(path, env=NO_KEYRING, passphrase=ask) as v:
        assert v.key_source == "passphrase"
        make_link_factory(v)()
    assert len(keys_module._kdf_cache) == before + 1
    with Vault.open(path, env=NO_KEYRING, passphrase=ask) as v:
        assert len(v.list_links()) == 1
    assert len(asked) == 2
    assert len(keys_module._kdf_cache) == before + 1  # second open reused the derivation

    with pytest.raises(VaultLocked, match="does not open"):
        Vault.open(path, env=NO_KEYRING, passphrase=lambda: "wrong")
    with pytest.raises(VaultLocked, match="no vault key"):
        Vault.open(path, env=NO_KEYRING, passphrase=lambda: "")


def test_env_key_wins_over_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    env = {"INTERAPP_VAULT_KEY": encode_key(os.urandom(32)), **NO_KEYRING}

    def never() -> str:
        raise AssertionError("the passphrase should not be asked for")

    with Vault.open(path, env=env, passphrase=never) as v:
        assert v.key_source == "env-raw"


def test_derive_key_is_deterministic_per_salt() -> None:
    p1, p2 = KdfParams.new(), KdfParams.new()
    assert derive_key("pw", p1) == derive_key("pw", p1)
    assert derive_key("pw", p1) != derive_key("pw", p2)
    assert len(derive_key("pw", p1)) == 32
    again = KdfParams.from_json(p1.to_json())
    assert again == p1 and again.memory_cost == 65536 and again.time_cost == 3


def test_resolve_master_key_order_and_failure() -> None:
    meta = {"kdf": KdfParams.new().to_json()}
    raw = os.urandom(32)
    assert resolve_master_key(meta, {"INTERAPP_VAULT_KEY": encode_key(raw)}, None) == raw
    assert resolve_master_key(meta, NO_KEYRING, lambda: "pw") == derive_key(
        "pw", KdfParams.from_json(meta["kdf"]))
    with pytest.raises(VaultLocked, match="no vault key: set INTERAPP_VAULT_KEY"):
        resolve_master_key(meta, NO_KEYRING, None)


def test_keyring_falls_through_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    request = KeyRequest(KdfParams.new(), f"/nonexistent/{uuid.uuid4()}.db", creating=False)
    assert KeyringKey({}).get(request) is None
    assert KeyringKey(NO_KEYRING).get(request) is None
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_wrapping() -> None:
    master, data = os.urandom(32), os.urandom(32)
    wrapped = wrap_data_key(master, data)
    assert unwrap_data_key(master, wrapped) == data
    with pytest.raises(VaultLocked, match="does not open this vault"):
        unwrap_data_key(os.urandom(32), wrapped)
    cipher = Cipher(data)
    blob = cipher.seal(b"hello", b"link:1")
    assert cipher.open(blob, b"link:1") == b"hello"
    assert b"hello" not in blob and "data key" in repr(cipher)
