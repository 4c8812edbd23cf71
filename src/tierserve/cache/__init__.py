"""Result cache: answers of models that opt in, in this process (LRU) and in Redis (shared).

See ``service.py`` for the request path and invalidation, ``key.py`` for what a key covers.
"""

from tierserve.cache.service import ResultCacheService

__all__ = ["ResultCacheService"]
