"""Security: API keys and JWTs, roles, tenants, per-key and per-tenant limits, the audit log.

Routes declare the role they need with ``tierserve.security.access`` (``dependencies=access.USER``);
``service.SecurityService`` holds one server's state (key table, limiter, audit log);
``command`` is ``tierserve keys``. Nothing is imported here, so that the CLI starts fast.
"""
