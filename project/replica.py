"""Reads on the streaming replica, writes and migrations on the primary: the database router, the replica's health
as this process last sampled it, and the fallback to the primary (docs/decisions/010-read-replica.md).

A read goes to the replica (the "replica" alias, REPLICA_DATABASE_URL) only while its last sample, at most
CHECK_INTERVAL_S old, found it up and no more than REPLICA_MAX_LAG_S behind; otherwise to the primary ("default")
at once. A read that fails on the replica is retried on the primary within the same request. Each choice of the
primary while a replica is configured is counted in items_replica_fallback_total by reason:

- unavailable: the last sample (or the last query) could not reach the replica;
- lagging: the replica is more than REPLICA_MAX_LAG_S behind the primary;
- behind: the page about to be cached needs a commit the replica has not replayed within CATCHUP_WAIT_S
  (app/cache.py passes the commit LSN recorded with the cache version);
- error: a query on the replica failed; it was run again on the primary.

Lag: each sample reads the primary's pg_current_wal_lsn(), then the replica's pg_last_wal_replay_lsn(). A replica
that has replayed every primary position this process has seen has lag 0, however old its last replayed commit
(pg_last_xact_replay_timestamp() alone would make an idle primary look like a stalled replica). One that has not
is as far behind as the larger of: the time since this process first saw a position it has not replayed, and the
age of the last commit it replayed (an upper bound, which also covers a stall that began before this process
sampled).
Samples are per process (a gunicorn worker, the Celery worker) and taken by the request that finds the last one
too old, never by more than one thread at a time, on the process's own probe connections (not Django's); the
others use the previous answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg2
import psycopg2.extensions
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections

from project import metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")

PRIMARY, REPLICA = "default", "replica"
# How old a health sample may get before a read takes a new one: two small queries per process per interval.
# Shorter reacts faster to a replica that dies or stalls (a dead one is also caught by the failing query itself,
# retried on the primary); longer costs fewer queries. Lag below this resolution reads as about 0.
CHECK_INTERVAL_S = 0.5
# How long a page rebuild waits for the replica to replay the commit its cache version was bumped for, before it
# reads that page from the primary. Streaming replay on one host or network takes milliseconds; a replica that
# needs longer is behind, and the primary answers at once rather than adding this to every miss.
CATCHUP_WAIT_S = 0.2
# Polled from 1 ms doubling to 5 ms: the replica replays a commit within a millisecond or two, and each rebuild after
# a bump waits for the poll that sees it. Side by side under 2,300 writes a second, page rebuilds took p90 7.2 ms
# and p99 21.7 ms with these, 8.8 and 29.5 ms from 5 ms doubling to 40 (the median the same, ~4 ms).
_CATCHUP_POLL_FIRST_S, _CATCHUP_POLL_MAX_S = 0.001, 0.005
# The longest a query on the replica may take before it is cut off (its socket shut down) and the read goes to the
# primary. Needed because PgBouncer keeps a query whose server has just died waiting for a new server connection
# for its whole query_wait_timeout (10 s), and ignores a cancel meanwhile (measured with PgBouncer 1.18). Far above
# a healthy read (milliseconds) and above a wait for a pool slot under load, so a busy replica is not taken for a
# dead one.
QUERY_TIMEOUT_S = 2.0
# Primary positions remembered for the lag estimate (one per sample with a new LSN, dropped once replayed): at
# CHECK_INTERVAL_S that is minutes of a stalled replica; past it the oldest is kept, so the lag only grows.
_MAX_POSITIONS = 512

_PRIMARY_LSN_SQL = "SELECT (pg_current_wal_lsn() - '0/0')::bigint"
# On a standby: whether it is one, and how far it has replayed. NULL replay LSN: not a standby.
_REPLICA_SQL = (
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0')::bigint,"
    " extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
)
_REPLAY_LSN_SQL = "SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint"

# The LSN recorded with a version bump when the primary could not be asked (app/cache.py): pages of that version
# are read from the primary until the next bump records a known one.
UNKNOWN_LSN = -1


def configured() -> bool:
    return REPLICA in settings.DATABASES


@dataclass(frozen=True)
class Sample:
    up: bool
    lag_s: float | None  # None: never measured
    replayed_lsn: int  # 0: unknown
    taken_at: float  # time.monotonic()


_NEVER = Sample(up=False, lag_s=None, replayed_lsn=0, taken_at=float("-inf"))


class _Watchdog:
    """Cuts replica queries off after QUERY_TIMEOUT_S: one thread per process shuts down the socket of a query
    past its deadline, so libpq returns at once with an error (OperationalError) that read() retries on the
    primary. Shutting down a dup of the descriptor reaches the connection's socket without closing the number."""

    def __init__(self) -> None:
        self.wake = threading.Condition(threading.Lock())
        self.deadlines: dict[int, tuple[float, int]] = {}  # thread -> (deadline, socket descriptor)
        self.pid = 0  # the thread does not survive a fork (gunicorn's workers): started again in each process

    @contextlib.contextmanager
    def limit(self, alias: str) -> Iterator[None]:
        """Around a query on Django's connection to `alias`."""
        wrapper = connections[alias]
        wrapper.ensure_connection()  # to PgBouncer: it answers a login itself, without the server
        with self.limit_fd(wrapper.connection.fileno()):
            yield

    @contextlib.contextmanager
    def limit_fd(self, fd: int) -> Iterator[None]:
        key = threading.get_ident()
        with self.wake:
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="replica-watchdog", daemon=True).start()
            self.deadlines[key] = (time.monotonic() + QUERY_TIMEOUT_S, fd)
            self.wake.notify()
        try:
            yield
        finally:
            with self.wake:
                self.deadlines.pop(key, None)

    def _run(self) -> None:
        with self.wake:
            while True:
                now = time.monotonic()
                for key, (deadline, fd) in list(self.deadlines.items()):
                    if deadline <= now:
                        del self.deadlines[key]
                        _shut_down(fd)
                earliest = min((deadline for deadline, _ in self.deadlines.values()), default=None)
                self.wake.wait(None if earliest is None else max(0.0, earliest - now))


def _shut_down(fd: int) -> None:
    logger.warning("replica: a query took over %g s; cutting it off", QUERY_TIMEOUT_S)
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


class _Probes:
    """The process's own connections for the health samples, the catch-up polls and the bump's LSN: one kept per
    alias, apart from Django's, so that they are never a request's connection and never counted as its queries
    (django_db_* metrics, the query-count tests). One query at a time per process; a failed one drops its
    connection, the next opens a new one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: dict[str, psycopg2.extensions.connection] = {}
        self.pid = os.getpid()
        self.inherited: list = []  # a parent's connections after a fork: kept unclosed, they are the parent's

    def scalar(self, alias: str, sql: str) -> tuple:
        with self.lock:
            if self.pid != os.getpid():
                self.inherited.extend(self.conns.values())
                self.conns, self.pid = {}, os.getpid()
            try:
                conn = self.conns.get(alias)
                if conn is None or conn.closed:
                    conn = self.conns[alias] = _connect(alias)
                limit = _watchdog.limit_fd(conn.fileno()) if alias == REPLICA else contextlib.nullcontext()
                with limit, conn.cursor() as cursor:
                    cursor.execute(sql)
                    row = cursor.fetchone()
                    assert row is not None  # each of these SELECTs returns one row
                    return row
            except psycopg2.Error:
                self.drop(alias)
                raise

    def drop(self, alias: str) -> None:
        conn = self.conns.pop(alias, None)
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()


def _connect(alias: str) -> psycopg2.extensions.connection:
    db = settings.DATABASES[alias]
    conn = psycopg2.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db["PASSWORD"],
        host=db["HOST"],
        port=db["PORT"],
        connect_timeout=db.get("OPTIONS", {}).get("connect_timeout", 3),
        application_name="items-replica-probe",
    )
    conn.autocommit = True
    return conn


_probes = _Probes()
# What a probe or a read may raise when a server is down or cut off: libpq's errors and Django's wrapping of them.
_DB_ERRORS = (psycopg2.Error, DatabaseError)


def _scalar(alias: str, sql: str) -> tuple:
    return _probes.scalar(alias, sql)


def _discard_connection(alias: str) -> None:
    """After a read failed on Django's connection to `alias`: the next one opens a new connection."""
    with contextlib.suppress(DatabaseError):
        connections[alias].close()


class ReplicaHealth:
    """This process's view of the replica: the last sample, and the primary positions it has yet to replay."""

    def __init__(self) -> None:
        self.sample = _NEVER
        self.lock = threading.Lock()
        self.positions: deque[tuple[int, float]] = deque()  # (primary LSN, when seen), oldest first
        self._positions_lock = threading.Lock()  # readyz samples in a thread of its own, outside self.lock
        self.was_up: bool | None = None

    # --- sampling ----------------------------------------------------------------------------------------------

    def current(self) -> Sample:
        """The last sample, taken anew when older than CHECK_INTERVAL_S (by one thread; the others go on with the
        previous one, except before the very first, which they wait for)."""
        sample = self.sample
        if time.monotonic() - sample.taken_at < CHECK_INTERVAL_S:
            return sample
        if not self.lock.acquire(blocking=sample is _NEVER):
            return sample
        try:
            if time.monotonic() - self.sample.taken_at >= CHECK_INTERVAL_S:
                self.take_sample()
            return self.sample
        finally:
            self.lock.release()

    def take_sample(self) -> Sample:
        """Ask the primary, then the replica (in this order: the replica's replay position read second can only
        have moved on), on the probe connections."""
        now = time.monotonic()
        try:
            (primary_lsn,) = _scalar(PRIMARY, _PRIMARY_LSN_SQL)
            self._remember(int(primary_lsn), now)
        except _DB_ERRORS as exc:  # the primary down: the lag grows from what was last seen of it
            logger.debug("replica health: the primary's LSN could not be read: %r", exc)
        try:
            in_recovery, replayed, replay_age_s = _scalar(REPLICA, _REPLICA_SQL)
        except _DB_ERRORS as exc:
            return self._record(False, self.sample.replayed_lsn, now, reason=repr(exc))
        if not in_recovery or replayed is None:
            return self._record(False, 0, now, reason="REPLICA_DATABASE_URL is not a standby (not in recovery)")
        return self._record(True, int(replayed), now, replay_age_s=replay_age_s)

    def _remember(self, primary_lsn: int, now: float) -> None:
        with self._positions_lock:
            if self.positions and primary_lsn <= self.positions[-1][0]:
                return  # the same position, first seen earlier: that earlier time is what the lag counts from
            if len(self.positions) >= _MAX_POSITIONS:
                self.positions.pop()
            self.positions.append((primary_lsn, now))

    def _lag_s(self, replayed_lsn: int, now: float, replay_age_s: float | None) -> float:
        with self._positions_lock:
            while self.positions and self.positions[0][0] <= replayed_lsn:
                self.positions.popleft()
            if not self.positions:
                return 0.0
            seen_behind_s = max(0.0, now - self.positions[0][1])
        return max(seen_behind_s, replay_age_s or 0.0)

    def _record(
        self, up: bool, replayed_lsn: int, now: float, *, reason: str = "", replay_age_s: float | None = None
    ) -> Sample:
        lag_s = self._lag_s(replayed_lsn, now, replay_age_s) if replayed_lsn else None
        self.sample = Sample(up=up, lag_s=lag_s, replayed_lsn=replayed_lsn, taken_at=now)
        if lag_s is not None:
            metrics.replica_lag_seconds.set(lag_s)
        if up != self.was_up:
            if up:
                logger.info("replica: up (lag %.2f s); reads go to it", lag_s or 0.0)
            elif self.was_up is not None or reason:
                logger.warning("replica: unavailable (%s); reads go to the primary", reason)
            self.was_up = up
        return self.sample

    def failed(self, exc: Exception) -> None:
        """A read on the replica failed: it counts as down until the next sample says otherwise."""
        now = time.monotonic()
        self._record(False, self.sample.replayed_lsn, now, reason=repr(exc))

    # --- routing -----------------------------------------------------------------------------------------------

    def alias_for(self, min_lsn: int | None = None) -> str:
        """Where a read goes: REPLICA when it is up, within REPLICA_MAX_LAG_S and (with `min_lsn`) has replayed
        that commit, waiting up to CATCHUP_WAIT_S for it; else PRIMARY, counted by reason."""
        if not configured():
            return PRIMARY
        sample = self.current()
        if not sample.up:
            return _fallback("unavailable")
        if sample.lag_s is None or sample.lag_s > settings.REPLICA_MAX_LAG_S:
            return _fallback("lagging")
        if min_lsn is not None and (min_lsn < 0 or (min_lsn > sample.replayed_lsn and not self._catch_up(min_lsn))):
            return _fallback("behind")
        return REPLICA

    def _catch_up(self, min_lsn: int) -> bool:
        """Whether the replica replays `min_lsn` within CATCHUP_WAIT_S (polled, from 1 ms doubling to 5 ms)."""
        deadline = time.monotonic() + CATCHUP_WAIT_S
        poll_s = _CATCHUP_POLL_FIRST_S
        while True:
            try:
                (replayed,) = _scalar(REPLICA, _REPLAY_LSN_SQL)
            except _DB_ERRORS as exc:
                self.failed(exc)
                return False
            if replayed is not None and int(replayed) >= min_lsn:
                if int(replayed) > self.sample.replayed_lsn:
                    self.sample = Sample(self.sample.up, self.sample.lag_s, int(replayed), self.sample.taken_at)
                return True
            if time.monotonic() + poll_s > deadline:
                return False
            time.sleep(poll_s)
            poll_s = min(poll_s * 2, _CATCHUP_POLL_MAX_S)


health = ReplicaHealth()


def _fallback(reason: str) -> str:
    metrics.replica_fallback_total.labels(reason=reason).inc()
    return PRIMARY


def _counted(alias: str) -> str:
    metrics.db_reads_total.labels(database="replica" if alias == REPLICA else "primary").inc()
    return alias


def read(query: Callable[[str], T], *, min_lsn: int | None = None, recheck_empty: bool = False) -> T:
    """`query(alias)` on the replica when it may serve this read, else (or when it fails there) on the primary.

    `min_lsn`: the read will be cached under a version whose commit is at this LSN (UNKNOWN_LSN: not known), so
    the replica must have replayed it. `recheck_empty`: a falsy answer from the replica is asked of the primary
    too (a single item the replica has not replayed yet is a 404 the primary would not give).
    """
    alias = health.alias_for(min_lsn)
    if alias == PRIMARY:
        return query(_counted(PRIMARY))
    try:
        with _watchdog.limit(REPLICA):
            result = query(_counted(REPLICA))
    except (OperationalError, InterfaceError) as exc:
        logger.warning("replica: a read failed (%r); retried on the primary", exc)
        _discard_connection(REPLICA)
        health.failed(exc)
        _fallback("error")
        return query(_counted(PRIMARY))
    if recheck_empty and not result:
        return query(_counted(PRIMARY))
    return result


def primary_lsn() -> int | None:
    """The primary's current WAL position, read after a commit (the worker's version bump records it); None
    without a replica (nothing needs it), UNKNOWN_LSN when the primary does not answer."""
    if not configured():
        return None
    try:
        (lsn,) = _scalar(PRIMARY, _PRIMARY_LSN_SQL)
        return int(lsn)
    except _DB_ERRORS as exc:
        logger.warning("replica: the primary's LSN could not be read after a commit (%r)", exc)
        return UNKNOWN_LSN


class PrimaryReplicaRouter:
    """DATABASE_ROUTERS: writes, migrations and anything not routed explicitly to the primary; ORM reads to the
    replica while it is healthy. The selectors go through read() above, which adds the retry on the primary."""

    def db_for_read(self, model, **hints) -> str:
        return health.alias_for()

    def db_for_write(self, model, **hints) -> str:
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True  # one database, two copies of it

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool:
        return db == PRIMARY  # the replica gets the schema by replaying the primary's WAL
