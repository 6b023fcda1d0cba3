"""How 503s go out under overload: paced past a rate, and held for connections that ignore Retry-After.

A rejection is cheap, not free, and a client that re-sends it at once comes straight back; see
docs/decisions/001-load-shedding.md for what was measured.
"""

from project.net import is_trusted_proxy

# Rejections answered at once beyond the pace: this many seconds' worth of the rate. Clients that honour
# Retry-After come back in waves (all told "1" at about the same time); the burst lets a wave through unheld.
REJECTION_BURST_S = 0.5
# The client's own connection, as the front Nginx numbers it ($connection): believed from trusted proxies only.
CLIENT_CONNECTION_HEADER = b"x-client-connection"


class RejectionPacer:
    """Paces 503s past `per_s` a second (a GCRA: the rate plus a burst of REJECTION_BURST_S worth).

    Clients that re-send at once (no back-off, no Retry-After) come back as fast as they are answered, so
    answering them faster only buys more of them, each costing CPU under the same GIL as the requests being
    served. Past the pace a 503 is held back (a timer on the loop, no CPU) for at most `max_delay_s`, the
    Retry-After it carries. Clients that back off stay under the pace and are answered at once.
    """

    def __init__(self, per_s: int, *, max_delay_s: float, burst_s: float = REJECTION_BURST_S) -> None:
        self.interval_s = 1.0 / per_s if per_s > 0 else 0.0
        self.burst_s = burst_s
        self.max_delay_s = max_delay_s
        self._tat = 0.0  # theoretical arrival time of the next rejection at the pace

    def delay_s(self, now: float) -> float:
        """How long the rejection arriving at `now` should be held back (0: answer at once)."""
        if not self.interval_s:
            return 0.0
        tat = max(self._tat, now)
        delay = min(max(0.0, tat - self.burst_s - now), self.max_delay_s)
        self._tat = min(tat, now + self.burst_s + self.max_delay_s) + self.interval_s
        return delay


class RetryTarpit:
    """Holds the 503 of a client connection that re-sent within Retry-After of its last 503, until that time.

    A client that honours Retry-After is never held here, however many others storm. One that re-sends at once
    gets its next 503 when it should have come back: one rejection per Retry-After per connection, instead of
    as many as the pace lets through, each costing CPU the admitted requests need.
    A connection is keyed as `client_connection` says; entries live one Retry-After.
    """

    # A client that waited its Retry-After (counted from when it read the 503, a little after we sent it) may
    # come back a hair early by our clock: not held.
    SLACK_S = 0.1

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.last_sent: dict[object, float] = {}  # connection -> when its last 503 went out, oldest first

    def delay_s(self, connection: object, now: float) -> float:
        sent = self.last_sent.get(connection)
        if sent is None or now - sent >= self.retry_after_s - self.SLACK_S:
            return 0.0
        return sent + self.retry_after_s - now

    def answered(self, connection: object, now: float) -> None:
        self.last_sent.pop(connection, None)
        self.last_sent[connection] = now  # re-inserted: the dict stays in the order the 503s went out
        while self.last_sent:
            oldest = next(iter(self.last_sent))
            if now - self.last_sent[oldest] < self.retry_after_s:
                break
            del self.last_sent[oldest]


def client_connection(scope) -> object:
    """The client's connection: the front Nginx's number for it (X-Client-Connection) when the peer is a trusted
    proxy, else the peer's own address and port (a client talking to gunicorn directly)."""
    peer = tuple(scope.get("client") or ("", 0))
    if is_trusted_proxy(peer[0]):
        number = next((v for k, v in scope["headers"] if k == CLIENT_CONNECTION_HEADER), None)
        if number:
            return number
    return peer
