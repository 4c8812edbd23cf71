"""Security's HTTP glue: the role each route declares and the check that enforces it (``access``),
and the OpenAPI document's security schemes (``openapi``). Who a caller is, what it may do and
what is recorded live in ``tierserve.security``, which knows no HTTP."""
