"""OAuth 2.0 for the application server, one module per RFC.

``rfc6749`` (token endpoint, password and refresh grants), ``rfc7523`` (JWT bearer assertions:
the same-account-system login), ``rfc8693`` (token exchange: minting assertions for other apps),
``rfc7009`` (revocation), ``rfc7662`` (introspection), ``rfc8414`` (metadata). JOSE work (JWK,
JWS, JWT) is done by joserfc; ``issue`` keeps the token rows.
"""
