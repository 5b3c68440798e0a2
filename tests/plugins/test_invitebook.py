"""The book of message-carried invites (xmpp, matrix): claims in the JSON are checked against
the real sender and recipient, taking in a message twice changes nothing, expiry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from interapp.errors import ApiNotFound, InvalidInvite, InviteClosed
from interapp.plugins.contract import InviteState
from interapp.plugins.invitebook import InviteBook, answer_body, derive_invite_id
from interapp.presence import Activity

ME, BOB, EVE = "alice@x", "bob@x", "eve@x"


def test_an_invite_needs_an_activity_or_a_link() -> None:
    with pytest.raises(InvalidInvite):
        InviteBook().new(ME, BOB, "i-0", activity=None, join_url=None, message="hi")


def test_ids_are_per_sender_and_stable() -> None:
    assert derive_invite_id("xi-", ME, "c1") == derive_invite_id("xi-", ME, "c1")
    assert derive_invite_id("xi-", ME, "c1") != derive_invite_id("xi-", BOB, "c1")


def test_a_received_invite_is_from_its_real_sender() -> None:
    book = InviteBook()
    forged = book.new(EVE, "someone@else", "i-1", activity=None, join_url="https://a.example",
                      message="")
    kind, got = book.absorb("invite", forged, me=ME, sender=BOB, recipient=ME) or ("", None)
    assert kind == "invite" and got is not None
    assert (got.from_user, got.to_user, got.state) == (BOB, ME, InviteState.PENDING)
    # the same again: the same invite; another sender cannot take the id over
    assert book.absorb("invite", forged, me=ME, sender=BOB, recipient=ME) == ("invite", got)
    assert book.absorb("invite", forged, me=ME, sender=EVE, recipient=ME) is None
    assert book.received["i-1"].from_user == BOB
    # not addressed to me: nothing
    assert book.absorb("invite", forged, me=ME, sender=BOB, recipient=EVE) is None


def test_only_the_invitee_answers() -> None:
    book = InviteBook()
    sent = book.new(ME, BOB, "i-2", activity=None, join_url="https://a.example", message="")
    book.record_sent(sent)
    yes = dataclasses.replace(sent, state=InviteState.ACCEPTED)
    assert book.absorb("answer", yes, me=ME, sender=EVE, recipient=ME) is None
    assert book.sent["i-2"].state is InviteState.PENDING
    found = book.absorb("answer", yes, me=ME, sender=BOB, recipient=ME)
    assert found is not None and found[1].state is InviteState.ACCEPTED
    # the same answer again (the archive after a reconnect) is the same event
    assert book.absorb("answer", yes, me=ME, sender=BOB, recipient=ME) == found
    # a contradicting later answer does not count
    no = dataclasses.replace(sent, state=InviteState.DECLINED)
    assert book.absorb("answer", no, me=ME, sender=BOB, recipient=ME) is None
    # a "pending" answer is no answer
    assert book.absorb("answer", sent, me=ME, sender=BOB, recipient=ME) is None


def test_answer_to_an_invite_another_session_sent() -> None:
    book = InviteBook()
    other = book.new(ME, BOB, "i-3", activity=None, join_url="https://a.example", message="")
    yes = dataclasses.replace(other, state=InviteState.ACCEPTED)
    found = book.absorb("answer", yes, me=ME, sender=BOB, recipient=ME)
    assert found is not None and found[0] == "invite_answer"
    # but only when the JSON says it was mine, to that sender
    spoof = dataclasses.replace(yes, id="i-4", from_user=EVE)
    assert book.absorb("answer", spoof, me=ME, sender=BOB, recipient=ME) is None


def test_answering_and_expiry() -> None:
    book = InviteBook()
    with pytest.raises(ApiNotFound):
        book.to_answer("nope", True)
    inv = book.new(BOB, ME, "i-5", activity=Activity(name="Arena"), join_url=None, message="")
    book.absorb("invite", inv, me=ME, sender=BOB, recipient=ME)
    answered = book.to_answer("i-5", True)
    assert answer_body(answered) == "Accepted your invite to Arena"
    book.record_answer(answered)
    with pytest.raises(InviteClosed):
        book.to_answer("i-5", False)
    old = dataclasses.replace(inv, id="i-6", expires_at=datetime.now(UTC) - timedelta(1))
    book.absorb("invite", old, me=ME, sender=BOB, recipient=ME)
    with pytest.raises(InviteClosed):
        book.to_answer("i-6", True)
    assert book.received["i-6"].state is InviteState.EXPIRED
    # a sent invite past its time: expired once, then no more
    mine = book.new(ME, BOB, "i-7", activity=None, join_url="https://a.example", message="")
    book.record_sent(dataclasses.replace(mine, expires_at=datetime.now(UTC)))
    assert book.wait(60) <= 0.05 + 1e-9
    [gone] = book.expire_due()
    assert gone.state is InviteState.EXPIRED and book.expire_due() == []
    assert book.open() == [] and book.wait(60) == 60


def test_a_received_invite_cannot_stay_open_for_ever() -> None:
    book = InviteBook()
    inv = book.new(BOB, ME, "i-8", activity=None, join_url="https://a.example", message="")
    forever = dataclasses.replace(inv, expires_at=inv.created_at + timedelta(days=3650))
    found = book.absorb("invite", forever, me=ME, sender=BOB, recipient=ME)
    assert found is not None and found[1].expires_at == inv.created_at + timedelta(days=1)
    # one read back from history long after its time comes in expired
    old = dataclasses.replace(inv, id="i-9", created_at=inv.created_at - timedelta(days=2),
                              expires_at=inv.created_at - timedelta(days=2, minutes=-10))
    found = book.absorb("invite", old, me=ME, sender=BOB, recipient=ME)
    assert found is not None and found[1].state is InviteState.EXPIRED
    assert book.open() == [book.received["i-8"]]
