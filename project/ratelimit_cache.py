"""The cache django-ratelimit counts in (RATELIMIT_USE_CACHE): Redis, failing open when Redis is unreachable.

django-ratelimit catches only socket.gaierror around its cache calls, while django-redis raises the redis
client's ConnectionError/TimeoutError (ConnectionInterrupted inside), so a dead Redis would turn every POST into
a 500. Here a failed count reads as "no count" (None), which django-ratelimit answers with RATELIMIT_FAIL_OPEN:
the POST goes through, unlimited by this layer (Nginx's limit_req still applies), and is counted in
items_ratelimit_fail_open_total so the lapse is visible.
"""

import logging

from django_prometheus.cache.backends.redis import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from project import metrics

logger = logging.getLogger(__name__)

_UNREACHABLE = (ConnectionInterrupted, RedisError, OSError)


class FailOpenRedisCache(RedisCache):
    def add(self, *args, **kwargs):
        try:
            return super().add(*args, **kwargs)
        except _UNREACHABLE:
            return False  # django-ratelimit goes on to incr/get, which fail (and are counted) below

    def incr(self, *args, **kwargs):
        try:
            return super().incr(*args, **kwargs)
        except _UNREACHABLE as exc:
            return self._fail_open(exc)

    def get(self, *args, **kwargs):
        try:
            return super().get(*args, **kwargs)
        except _UNREACHABLE as exc:
            return self._fail_open(exc)

    def _fail_open(self, exc: Exception) -> None:
        metrics.ratelimit_fail_open_total.inc()
        logger.warning("rate-limit counter store unreachable, failing open: %r", exc)
        return None
