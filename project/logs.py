"""Log records that carry the request id: the contextvar the outermost ASGI wrapper binds, the filter that copies
it onto every record, and the two line formats settings.LOGGING chooses between (LOG_FORMAT).

JSON lines are formatted by python-json-logger: a formatter for the standard library's logging, so every
`logger.info("... %s", x)` and every library's records (Django, Celery, gunicorn, uvicorn) come out as JSON
unchanged, with fields passed as `extra=`. structlog would bring its own event API and processor chain, worth it
only if we wanted to log structured events everywhere; here one contextvar and one filter are all we add.
"""

import atexit
import collections
import contextlib
import logging
import os
import threading
from contextvars import ContextVar

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# The id of the request being served on this task (and on the thread running its sync code: asgiref copies the
# context); None outside a request, e.g. in the worker, which logs the id of each message explicitly.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# An id is a correlation key, not a secret: anyone's is accepted, within these bounds (one header's worth of
# printable ASCII, so no id can break a log line or a header).
REQUEST_ID_MAX_CHARS = 128


def sane_request_id(value: object) -> str | None:
    """The value as a request id if it is 1-128 printable ASCII characters, else None."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str) or not 0 < len(value) <= REQUEST_ID_MAX_CHARS:
        return None
    return value if all(" " <= c <= "~" for c in value) else None


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record emitted while a request is served, unless the record names its own
    (the worker passes each message's with `extra=`). Set on the handlers, so that records propagated from any
    logger get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            current = request_id.get()
            if current is not None:
                record.request_id = current
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, then every `extra` field
    (request_id among them) and exc_info. json.dumps escapes control characters: no value can start a line."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        timestamp="time",
        rename_fields={"levelname": "level", "name": "logger"},
        reserved_attrs=[*RESERVED_ATTRS, *NOT_LOGGED],
    )


# uvicorn's copy of its message with terminal colour codes.
NOT_LOGGED = ("color_message",)
_STANDARD = {*RESERVED_ATTRS, *NOT_LOGGED, "message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """The development line, `time LEVEL logger message`, followed by the record's extra fields as
    ` key=value` (request_id, item_id, ...), control characters escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f" {key}={_printable(value)}" for key, value in record.__dict__.items() if key not in _STANDARD]
        if not extras:
            return line
        head, newline, rest = line.partition("\n")  # after the message, before any traceback
        return head + "".join(extras) + newline + rest


def _printable(value: object) -> str:
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class BackgroundStreamHandler(logging.StreamHandler):
    """A StreamHandler whose writes happen on a thread of its own, many lines per write.

    For the access log, emitted once per request on the event loop: a write there is a syscall that releases the
    GIL, and under load a request thread takes it for a switch interval before the loop gets it back. The record
    is formatted where it is emitted (the request id and the contextvars are there); only the line travels, onto
    a deque the writer empties every FLUSH_INTERVAL_S. Polled, not signalled: waking the writer for each line
    cost the event loop a futex call per request and handed the GIL to the writer as often (a few percent of a
    worker's CPU at 1,500 requests/s). The writer is started on first use in each process (gunicorn workers
    fork) and drains the deque at exit.
    """

    FLUSH_INTERVAL_S = 0.05

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        self.lines: collections.deque[str] = collections.deque()  # append and popleft are thread-safe
        self.writer_pid: int | None = None
        self.writer: threading.Thread | None = None
        self.stop = threading.Event()
        self.start_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        if self.writer_pid != os.getpid():
            self._start_writer()
        self.lines.append(line)

    def _start_writer(self) -> None:
        with self.start_lock:
            if self.writer_pid == os.getpid():
                return
            self.lines = collections.deque()  # lines inherited over fork are the parent's to write
            self.stop = threading.Event()
            writer = threading.Thread(target=self._write, args=(self.lines, self.stop), name="log-writer", daemon=True)
            writer.start()
            self.writer, self.writer_pid = writer, os.getpid()
            atexit.register(self._drain, self.stop, writer)

    def _write(self, lines: "collections.deque[str]", stop: threading.Event) -> None:
        while True:
            stopping = stop.wait(self.FLUSH_INTERVAL_S)
            batch = []
            with contextlib.suppress(IndexError):
                while True:
                    batch.append(lines.popleft())
            if batch:
                with contextlib.suppress(Exception):  # a closed stream at exit: nothing left to tell
                    self.stream.write("".join(batch))
                    self.flush()
            if stopping:
                return

    def _drain(self, stop: threading.Event, writer: threading.Thread) -> None:
        stop.set()
        writer.join(timeout=2)
