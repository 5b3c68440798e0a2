"""``Secret``: a value that never shows itself in reprs, logs or exceptions."""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping
from typing import Final

_MASK: Final = "**********"


class Secret:
    """Wraps a secret string; ``repr``/``str`` hide it, ``reveal()`` returns it.

    Equality is constant-time (``hmac.compare_digest``) so comparing secrets leaks no timing.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value. Call only where the value must leave the process."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values are not picklable")


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two strings or byte strings in constant time."""
    ab = a.encode() if isinstance(a, str) else a
    bb = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(ab, bb)


class HiddenMapping(Mapping[str, str]):
    """A read-only mapping of secret strings whose ``repr`` shows the keys only (a credential's
    fields, a pending sign-in's state); it refuses to be pickled."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: '***'" for k in sorted(self._data)) + "}"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secret fields are not picklable")
