"""The persons part of :class:`~interapp.host.blocking.BlockingHost`: each method runs the
:class:`~interapp.host.Host` method of the same name on the background loop (see
:mod:`interapp.host._people`)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from interapp.host._people import AccountRef, PersonRef
from interapp.host.model import Message
from interapp.host.persons import (
    Contacts,
    Person,
    PersonAccount,
    PersonHistory,
    PersonSuggestions,
)

if TYPE_CHECKING:
    from interapp.host.facade import Host

T = TypeVar("T")


class BlockingPeopleMixin:
    """``people``, ``merge_people``, ``split_person`` … as blocking calls."""

    if TYPE_CHECKING:  # defined by BlockingHost
        host: Host

        def run(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def people(self) -> list[Person]:
        """See :meth:`Host.people`."""
        return self.run(self.host.people())

    def person(self, ref: PersonRef) -> Person:
        """See :meth:`Host.person`."""
        return self.run(self.host.person(ref))

    def merge_people(self, *accounts: AccountRef, name: str | None = None,
                     verify: bool = True) -> Person:
        """See :meth:`Host.merge_people`."""
        return self.run(self.host.merge_people(*accounts, name=name, verify=verify))

    def rename_person(self, person: PersonRef, name: str) -> Person:
        """See :meth:`Host.rename_person`."""
        return self.run(self.host.rename_person(person, name))

    def split_person(self, *what: PersonRef | tuple[str, str]) -> list[PersonAccount]:
        """See :meth:`Host.split_person`."""
        return self.run(self.host.split_person(*what))

    def suggest_people(self) -> PersonSuggestions:
        """See :meth:`Host.suggest_people`."""
        return self.run(self.host.suggest_people())

    def contacts(self, *, merged: bool = True) -> Contacts:
        """See :meth:`Host.contacts`."""
        return self.run(self.host.contacts(merged=merged))

    def person_route(self, person: PersonRef, target: str | None = None) -> PersonAccount:
        """See :meth:`Host.person_route`."""
        return self.run(self.host.person_route(person, target))

    def send_to_person(self, person: PersonRef, body: str, target: str | None = None, *,
                       client_msg_id: str | None = None) -> Message:
        """See :meth:`Host.send_to_person`."""
        return self.run(self.host.send_to_person(person, body, target,
                                                 client_msg_id=client_msg_id))

    def person_history(self, person: PersonRef, *, limit: int = 50) -> PersonHistory:
        """See :meth:`Host.person_history`."""
        return self.run(self.host.person_history(person, limit=limit))
