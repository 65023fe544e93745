"""Single sign-on with any OpenID Connect provider.

- ``provider``: the issuer's discovery document (endpoints, JWKS address), read once an hour.
- ``tokens``: validates a provider's JWT (ID token or JWT access token) against the issuer's JWKS:
  signature, algorithm, issuer, audience, expiry. Used by the browser sign-in and by API bearer tokens.
- ``users``: the Fleetgate user of a provider account (made on first sign-in) and its Django groups,
  set from the groups claim on every sign-in.
- ``backend`` and ``views``: mozilla-django-oidc's authorization code flow with PKCE, configured from
  Fleetgate's settings and the discovery document; ``authentication``: DRF bearer tokens.

The settings are described in docs/operations.md ("Single sign-on") and .env.example.
"""
