"""App-level response cache in Redis: the exact bytes of GET /items pages and items, ready to send.

Entries are `b"<version>\\n<etag>\\n" + body`. A page entry is valid while its version equals `items:version`,
which the worker increments after each committed batch: invalidation is one INCR, never a key scan. An item
never changes once stored, so item entries carry version 0 and are valid until they expire.

With a read replica (project/replica.py) each bump also records the primary's WAL position after the commit
(`items:version:lsn`, the highest recorded), and a page is built from the replica only once it has replayed that
position, else from the primary: a page built from a lagging replica is never cached under a version whose rows
it lacks.

A missing or stale entry is rebuilt by one request holding a short Redis lock; meanwhile the others get the stale
bytes when there are some, or wait briefly for the new ones, so N concurrent misses cost one database query.
When Redis fails, reads go to the database and the failure is counted; a short circuit breaker keeps a dead Redis
from adding its timeout to every request.

The sync functions serve the Django views (a worker thread); `AsyncLookup` serves app.fast_path on the event loop.
"""

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable

import redis
import redis.asyncio
from django.conf import settings

from app import metrics
from project import replica

logger = logging.getLogger(__name__)

VERSION_KEY = "items:version"
# The primary's WAL position recorded with the bumps (the highest so far; replica.UNKNOWN_LSN when the last bump
# could not read it): a page of the current version needs a replica that has replayed it.
VERSION_LSN_KEY = "items:version:lsn"
# INCR and the LSN in one step, so that a reader's MGET never pairs a version with an older bump's LSN. The highest
# LSN wins (two workers may bump out of order); an unknown one wins too, until a known one replaces it (read
# later than the commit that left it unknown, it covers that commit).
_BUMP_WITH_LSN = """
local version = redis.call('INCR', KEYS[1])
local lsn = tonumber(ARGV[1])
local stored = tonumber(redis.call('GET', KEYS[2]) or '0')
if lsn < 0 or stored < 0 or lsn > stored then redis.call('SET', KEYS[2], ARGV[1]) end
return version
"""
# How long a rebuilding request may hold the lock; past it another request may rebuild.
LOCK_TTL_MS = 2000
# How long a request with nothing to serve waits for the rebuild of another before querying itself
# (within LOCK_TTL_MS, so a crashed rebuilder is replaced by a waiter, not by everyone at once).
WAIT_FOR_REBUILD_S = 1.5
# Waiters poll from 5 ms, doubling to 50 ms: a hundred of them must not starve the rebuilder of CPU.
_POLL_FIRST_S, _POLL_MAX_S = 0.005, 0.05
# After a Redis error, skip Redis for this long: reads go straight to the database.
BREAKER_OPEN_S = 1.0
# Redis is on the same host or network, so an answer slower than this means trouble. Not lower: a burst of
# threads contending for the GIL can delay a healthy answer by a tenth of a second (measured), which would
# trip the breaker and send the burst to the database.
REDIS_TIMEOUT_S = 0.5


def etag_for(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def encode(version: int, etag: str, body: bytes) -> bytes:
    return b"%d\n%s\n" % (version, etag.encode()) + body


def decode(entry: bytes | str) -> tuple[int, str, bytes]:
    """Raises ValueError for anything that is not an entry we wrote (a str one included: our clients never
    decode responses)."""
    if not isinstance(entry, bytes):
        raise ValueError("not a cache entry of ours")
    version, etag, body = entry.split(b"\n", 2)
    return int(version), etag.decode(), body


def enabled() -> bool:
    return bool(settings.REDIS_URL) and settings.RESPONSE_CACHE_ENABLED


class _Breaker:
    def __init__(self) -> None:
        self.open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self, exc: Exception) -> None:
        if not self.is_open():
            logger.warning("response cache: Redis failed (%r); serving from the database for %g s", exc, BREAKER_OPEN_S)
        self.open_until = time.monotonic() + BREAKER_OPEN_S
        metrics.response_cache_results.labels(result="error").inc()


breaker = _Breaker()
_client_lock = threading.Lock()
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
        return _client


# The version bump after a commit (bump_version, called by the worker before it acks the batch). A Redis blip
# must not leave every cached page valid for RESPONSE_CACHE_TTL_S, so a failed INCR is retried: BUMP_ATTEMPTS
# tries, BUMP_BACKOFF_S doubling in between (at most ~0.15 s of waiting plus the tries' own REDIS_TIMEOUT_S).
# If Redis still fails, the bump is owed: every batch tries once more (no backoff: an outage must not slow every
# batch down) and the worker's flush tick retries every OWED_RETRY_INTERVAL_S, so pages are stale for as long as
# the worker cannot reach Redis plus at most that interval. A worker owes one bump from its start, which covers
# one that died owing.
BUMP_ATTEMPTS = 3
BUMP_BACKOFF_S = 0.05
OWED_RETRY_INTERVAL_S = 0.5


class _VersionBump:
    """Whether this process owes an INCR of VERSION_KEY, and when to try it next (per process: the worker)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owed = False
        self.next_try_at = 0.0
        self.last_error: Exception | None = None

    def incr(self) -> bool:
        try:
            # Read now, after every commit this bump stands for (an owed bump's included), not at the commit.
            lsn = replica.primary_lsn()
            if lsn is None:
                _redis().incr(VERSION_KEY)
            else:
                _redis().eval(_BUMP_WITH_LSN, 2, VERSION_KEY, VERSION_LSN_KEY, lsn)
        except redis.RedisError as exc:
            metrics.cache_version_bump_failures.inc()
            self.last_error = exc
            return False
        if self.owed:
            logger.info("response cache: %s bumped again; cached pages are fresh", VERSION_KEY)
        self.owed = False
        metrics.cache_version_bump_owed.set(0)
        return True

    def owe(self) -> None:
        if not self.owed:
            logger.warning(
                "response cache: could not bump %s (%r); cached pages may be stale until Redis answers",
                VERSION_KEY,
                self.last_error,
            )
        self.owed = True
        self.next_try_at = time.monotonic() + OWED_RETRY_INTERVAL_S
        metrics.cache_version_bump_owed.set(1)


_bump = _VersionBump()


def bump_version() -> bool:
    """Called by the worker after a commit, before it acks: every cached page becomes stale at once.

    False when Redis did not take it; the bump is then owed, and settle_version pays it as soon as it can.
    """
    if not enabled():
        return True
    with _bump.lock:
        attempts = 1 if _bump.owed else BUMP_ATTEMPTS
        for attempt in range(attempts):
            if attempt:
                time.sleep(BUMP_BACKOFF_S * 2 ** (attempt - 1))
            if _bump.incr():
                return True
        _bump.owe()
        metrics.response_cache_results.labels(result="error").inc()
        return False


def settle_version() -> None:
    """Pay an owed bump, trying at most every OWED_RETRY_INTERVAL_S; the worker calls this on every flush tick."""
    if not enabled() or not _bump.owed or time.monotonic() < _bump.next_try_at:
        return
    with _bump.lock:
        if _bump.owed and not _bump.incr():
            _bump.next_try_at = time.monotonic() + OWED_RETRY_INTERVAL_S


def owe_version_bump() -> None:
    """A worker starting up owes a bump: its predecessor may have died after a commit but before its bump."""
    if enabled():
        with _bump.lock:
            _bump.owed, _bump.next_try_at = True, 0.0


# build(min_lsn): the response bytes (None: nothing to cache, e.g. a 404). min_lsn is the WAL position the data must
# include to be cached under the version read (None: no requirement, nothing versioned is cached from it).
Build = Callable[[int | None], bytes | None]


def get_or_build(key: str, build: Build, *, versioned: bool) -> tuple[str, bytes] | None:
    """The (etag, body) for `key`, from Redis or from `build(min_lsn)`."""
    if not enabled():
        return _built(build(None))
    if breaker.is_open():
        metrics.response_cache_results.labels(result="off").inc()
        return _built(build(None))
    try:
        return _get_or_build(_redis(), key, build, versioned=versioned)
    except redis.RedisError as exc:
        breaker.trip(exc)
        return _built(build(None))


def _built(body: bytes | None) -> tuple[str, bytes] | None:
    return (etag_for(body), body) if body is not None else None


def _decoded(entry: bytes | str | None) -> tuple[int, str, bytes] | None:
    """The entry decoded; None when there is none or it is not one of ours (then rebuilt like a missing one)."""
    try:
        return decode(entry) if entry is not None else None
    except ValueError:
        return None


def _rebuild(
    client: redis.Redis, key: str, lock_key: str, build: Callable[[], tuple[str, bytes] | None], version: int
) -> tuple[str, bytes] | None:
    """Build under the lock this request holds, store the entry and release the lock."""
    try:
        fresh = build()
        # The entry and the lock's release in one round trip, in this order (a waiter that sees the lock gone
        # finds the entry): Redis runs one connection's commands in the order they were sent.
        pipeline = client.pipeline(transaction=False)
        if fresh is not None:
            pipeline.set(key, encode(version, *fresh), ex=settings.RESPONSE_CACHE_TTL_S)
        pipeline.delete(lock_key)
        pipeline.execute()
    except BaseException:
        with contextlib.suppress(redis.RedisError):
            client.delete(lock_key)  # best effort: else it expires after LOCK_TTL_MS
        raise
    return fresh


def _looked_up(
    raw_version: bytes | str | None, raw_lsn: bytes | str | None, entry: bytes | str | None, *, versioned: bool
) -> tuple[int, int | None, tuple[int, str, bytes] | None]:
    """The version an entry must carry to be fresh, the LSN a build must include, and the entry decoded."""
    version = int(raw_version or 0) if versioned else 0
    min_lsn = int(raw_lsn or 0) if versioned else None
    return version, min_lsn, _decoded(entry)


def _get_or_build(client: redis.Redis, key: str, build: Build, *, versioned: bool) -> tuple[str, bytes] | None:
    # Plain reads first, not a script that would also take the lock: Redis holds every EVAL during CLIENT PAUSE
    # WRITE, which is how a failover hands over, and a fresh entry must be served meanwhile (docs/decisions/008).
    # Read before building: if the worker bumps during the build, the entry is born stale, never wrong.
    version, min_lsn, decoded = _looked_up(*client.mget(VERSION_KEY, VERSION_LSN_KEY, key), versioned=versioned)
    if decoded is not None and decoded[0] == version:
        metrics.response_cache_results.labels(result="hit").inc()
        return decoded[1], decoded[2]
    lock_key = "lock:" + key  # a prefix, so no page key (cursors are client-supplied text) can equal it
    # The lock, and a second look in the same round trip: a rebuild that ended since the first look has released
    # the lock only after storing its entry, so whoever gets the lock now also sees that entry, and 100 concurrent
    # misses still cost one query.
    pipeline = client.pipeline(transaction=False)
    pipeline.set(lock_key, b"1", nx=True, px=LOCK_TTL_MS)
    pipeline.mget(VERSION_KEY, VERSION_LSN_KEY, key)
    locked, looked = pipeline.execute()
    version, min_lsn, decoded = _looked_up(*looked, versioned=versioned)
    if decoded is not None and decoded[0] == version:
        if locked:
            client.delete(lock_key)
        metrics.response_cache_results.labels(result="hit").inc()
        return decoded[1], decoded[2]
    if locked:
        fresh = _rebuild(client, key, lock_key, lambda: _built(build(min_lsn)), version)
        metrics.response_cache_results.labels(result="miss").inc()
        return fresh
    if decoded is not None:
        metrics.response_cache_results.labels(result="stale").inc()
        return decoded[1], decoded[2]
    deadline = time.monotonic() + WAIT_FOR_REBUILD_S
    poll_s = _POLL_FIRST_S
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        poll_s = min(poll_s * 2, _POLL_MAX_S)
        # Lock checked before the entry: the rebuilder writes the entry before it releases the lock, so a lock
        # seen gone and then no entry means there is nothing to wait for (a 404, or a rebuilder that died).
        lock_gone = not client.exists(lock_key)
        if (decoded := _decoded(client.get(key))) is not None:
            metrics.response_cache_results.labels(result="waited").inc()
            return decoded[1], decoded[2]
        if lock_gone:
            break
    metrics.response_cache_results.labels(result="miss").inc()
    return _built(build(min_lsn))  # not cached by us, but Nginx's micro-cache may keep it: as fresh as a rebuild


# The fast path keeps what Redis just confirmed fresh for this long in the worker's own memory: at thousands of
# hits a second the Redis round trip is most of a hit's cost. It adds at most this much to staleness.
LOCAL_TTL_S = 0.05
_LOCAL_MAX_ENTRIES = 1024
# And a byte budget: a page of 100 long items is up to ~800 KB, and clients choose which pages exist.
_LOCAL_MAX_BYTES = 32 * 1024 * 1024


class AsyncLookup:
    """The fast path's read-only view of the cache: a fresh entry or None, never a database query."""

    def __init__(self) -> None:
        self.client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self.local: dict[str, tuple[float, str, bytes]] = {}  # key -> (confirmed at, etag, body)
        self.local_bytes = 0

    async def fresh(self, key: str, *, versioned: bool) -> tuple[str, bytes] | None:
        now = time.monotonic()
        local = self.local.get(key)
        if local is not None and now - local[0] < LOCAL_TTL_S:
            metrics.response_cache_results.labels(result="hit").inc()
            return local[1], local[2]
        if breaker.is_open():
            return None
        try:
            raw_version, entry = await self.client.mget(VERSION_KEY, key)
        except (redis.RedisError, OSError) as exc:
            breaker.trip(exc)
            return None
        if entry is None:
            return None
        try:
            entry_version, etag, body = decode(entry)
        except ValueError:
            return None  # not an entry (a foreign or corrupted value): Django rebuilds it
        if entry_version != (int(raw_version or 0) if versioned else 0):
            return None  # stale: Django serves it or rebuilds, with the stampede control above
        if len(self.local) >= _LOCAL_MAX_ENTRIES or self.local_bytes + len(body) > _LOCAL_MAX_BYTES:
            self.local.clear()  # a crude bound: entries live 50 ms anyway
            self.local_bytes = 0
        previous = self.local.get(key)
        self.local_bytes += len(body) - (len(previous[2]) if previous else 0)
        self.local[key] = (now, etag, body)
        metrics.response_cache_results.labels(result="hit").inc()
        return etag, body


def page_key(limit: int, cursor: str | None) -> str:
    # No cursor ("-") and an empty one ("c", which Django refuses with a 400) must never share an entry.
    return f"items:page:{limit}:" + ("-" if cursor is None else "c" + cursor)


def item_key(item_id: str) -> str:
    return f"items:item:{item_id}"
