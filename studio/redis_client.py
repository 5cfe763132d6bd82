"""One Redis connection pool per process and URL (the URL is read at call time so tests can point elsewhere)."""

from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio as aioredis
from django.conf import settings


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


def get_redis() -> redis.Redis:
    return _client_for(settings.STUDIO_REDIS_URL)


def get_async_redis():
    """A fresh asyncio client; the caller closes it (`await client.aclose()`)."""
    return aioredis.Redis.from_url(settings.STUDIO_REDIS_URL, socket_connect_timeout=5)
