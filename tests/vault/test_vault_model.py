"""Value types: Credential hides its values, round-trips through JSON, refuses pickling."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interapp.errors import VaultError
from interapp.vault import Credential, LinkState
from interapp.vault.audit import GENESIS, canonical, clean_detail, entry_hash

names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=12)
values = st.text(max_size=40).map(lambda s: "VALUE<" + s + ">")


@given(kind=names, fields=st.dictionaries(names, values, max_size=5))
def test_credential_json_round_trip_and_hidden_repr(kind: str, fields: dict[str, str]) -> None:
    cred = Credential(kind, fields)
    again = Credential.from_json(cred.to_json())
    assert again == cred and dict(again.fields) == fields
    for text in (repr(cred), str(cred), repr(cred.fields), f"{cred}"):
        assert "VALUE<" not in text
    for name, value in fields.items():
        assert cred.get(name) == value
        secret = cred.secret(name)
        assert secret is not None and secret.reveal() == value


def test_credential_basics() -> None:
    cred = Credential("scram", {"salted_password": "abc", "user": "u"})
    assert repr(cred) == "Credential(kind='scram', fields=[salted_password, user])"
    assert cred.get("missing") is None and cred.secret("missing") is None
    assert cred != Credential("scram", {"salted_password": "abd", "user": "u"})
    assert hash(cred) == hash(Credential("scram", {"salted_password": "zzz", "user": "u"}))
    with pytest.raises(TypeError):
        pickle.dumps(cred)
    with pytest.raises(TypeError):
        pickle.dumps(cred.fields)
    with pytest.raises(VaultError):
        Credential("", {})
    with pytest.raises(VaultError):
        Credential("x", {"n": 1})  # type: ignore[dict-item]
    with pytest.raises(VaultError):
        Credential.from_json(b"not json")


def test_one_link_state_vocabulary() -> None:
    from interapp.host import lifecycle
    from interapp.plugins import contract

    assert LinkState is lifecycle.LinkState  # defined once, in the core
    assert Credential is contract.Credential
    assert [s.value for s in LinkState] == ["linked", "degraded", "needs_reauth", "revoked",
                                            "unlinked"]
    assert set(LinkState) - {LinkState.UNLINKED} == lifecycle.STORED_STATES


def test_entry_hash_is_canonical() -> None:
    a = entry_hash(GENESIS, 1, "t", "prompt", None, None, {"b": "1", "a": "2"})
    b = entry_hash(GENESIS, 1, "t", "prompt", None, None, {"a": "2", "b": "1"})
    assert a == b and len(a) == 64
    assert a != entry_hash(GENESIS, 2, "t", "prompt", None, None, {"a": "2", "b": "1"})
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_clean_detail_limits() -> None:
    assert clean_detail(None) == {}
    with pytest.raises(VaultError):
        clean_detail({"k": "x" * 5000})
    with pytest.raises(VaultError):
        clean_detail({"": "x"})
