"""RFC 8414: authorization server metadata, and the JWKS it points to."""

from __future__ import annotations

from typing import Any

from interapp.server.oauth.grants import grant_types_supported


def metadata(issuer: str) -> dict[str, Any]:
    """The ``/.well-known/oauth-authorization-server`` document."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth/token",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": grant_types_supported(),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic",
                                                       "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post", "none"],
        "response_types_supported": [],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "interapp_events_endpoint": f"{issuer}/v1/events",
        "interapp_api_base": f"{issuer}/v1",
    }
