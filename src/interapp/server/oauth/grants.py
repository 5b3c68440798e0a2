"""The one table of grant types this server accepts: ``grant_type`` → handler.

The token endpoint (:mod:`interapp.server.oauth.token`) dispatches on it and the RFC 8414
metadata reads ``grant_types_supported`` from it, so the two can never disagree. To add a grant
(``authorization_code``, RFC 8628 ``device_code``, …): write its handler in a module of its own
that imports :mod:`interapp.server.oauth.base` (never another grant module) and add one row
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from interapp.server.oauth import rfc6749, rfc7523, rfc8693
from interapp.server.oauth.base import (
    JWT_BEARER,
    PASSWORD,
    REFRESH_TOKEN,
    TOKEN_EXCHANGE,
    GrantHandler,
)


@dataclass(frozen=True)
class Grant:
    """One supported grant type: its handler and the label its metrics carry."""

    grant_type: str
    label: str  # interapp_logins_total{grant=…}
    handle: GrantHandler


GRANTS: Mapping[str, Grant] = MappingProxyType({g.grant_type: g for g in (
    Grant(PASSWORD, "password", rfc6749.password_grant),
    Grant(REFRESH_TOKEN, "refresh_token", rfc6749.refresh_grant),
    Grant(JWT_BEARER, "jwt_bearer", rfc7523.jwt_bearer_grant),
    Grant(TOKEN_EXCHANGE, "token_exchange", rfc8693.token_exchange_grant),
)})


def grant_types_supported() -> list[str]:
    """The RFC 8414 ``grant_types_supported`` list, in table order."""
    return list(GRANTS)
