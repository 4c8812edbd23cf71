"""Security's domain and storage: API keys and JWTs, roles, tenants, per-key and per-tenant limits,
the audit log. It knows no HTTP (that is ``tierserve.api.auth``) and no command line (that is
``tierserve.commands.security``). Nothing is imported here, so that the CLI starts fast.

Pure (no I/O, no clock of their own; ``tests/security`` checks them without a server):
  ``identity``       who a request comes from; tenant names
  ``roles``          reader < user < operator < admin
  ``keys``           what an API key is: its secret, hash and record; ``KeySpec``, a request for one
  ``rates``          rate and concurrency limits as declared (``Limits``, ``Window``)
  ``tokens``         JWT verification (HS256, RS256, JWKS) to an identity
  ``audit_records``  what the audit log holds and how it is queried

Runtime (state of a running server):
  ``guard``          credentials to an identity, role check, admission against the limits
  ``rate_limiter``   where limits are counted: in process or in Redis
  ``audit_log``      the bounded queue that writes audit records in batches
  ``key_admin``      making and revoking keys in the store
  ``usage``          budget usage synchronised through the store
  ``service``        one server's ``SecurityService``: all of the above, opened and closed with the app

Storage:
  ``store``          the ``SecurityStore`` protocol, schema and ``open_security_store``
  ``sqlite_store``, ``postgres_store``  its two implementations
"""
