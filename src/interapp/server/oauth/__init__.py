"""OAuth 2.0 for the application server, one module per RFC.

``base`` (what every endpoint and grant shares: the parsed request, client authentication,
grant-type URNs, the §5.2 error response), ``grants`` (the one table grant_type → handler),
``token`` (the token endpoint, dispatching on that table), ``rfc6749`` (password and refresh
grants), ``rfc7523`` (JWT bearer assertions: the same-account-system login), ``rfc8693`` (token
exchange: minting assertions for other apps), ``rfc7009`` (revocation), ``rfc7662``
(introspection), ``rfc8414`` (metadata). Grant modules import ``base``, never each other. JOSE
work (JWK, JWS, JWT) is done by joserfc; ``issue`` keeps the token rows.
"""
