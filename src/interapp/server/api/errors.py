"""Storage and domain errors as the HTTP layer answers them.

The storage layer raises storage errors (:class:`~interapp.errors.ValueRefused`,
:class:`~interapp.errors.ConcurrentChange`, :class:`~interapp.errors.UnavailableError`) and knows
nothing of HTTP; every face that renders an error (the HTTP handlers, the event stream, its
``send`` frames) passes it through :func:`to_http` first, so a client sees the one ``/v1`` error
vocabulary of :data:`interapp.errors.REGISTRY`.
"""

from __future__ import annotations

from interapp.errors import (
    ApiError,
    BadRequest,
    ConcurrentChange,
    Conflict,
    InterappError,
    ValueRefused,
)

__all__ = ["to_http"]

_MAPPED: dict[type[InterappError], type[ApiError]] = {
    ValueRefused: BadRequest,
    ConcurrentChange: Conflict,
}


def to_http(exc: InterappError) -> InterappError:
    """The error a client is answered with for ``exc`` (``exc`` itself when it is a wire error)."""
    for storage, api in _MAPPED.items():
        if isinstance(exc, storage):
            mapped = api(exc.message, retry_after=exc.retry_after)
            mapped.__cause__ = exc
            return mapped
    return exc
