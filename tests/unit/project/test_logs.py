"""The access log's background handler: every line, in order, written off the thread that emits it."""

import io
import logging
import threading

from project.logs import BackgroundStreamHandler


class Recording(io.StringIO):
    """A stream that notes which threads wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[int] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.get_ident())
        return super().write(text)


def test_the_background_handler_writes_every_line_in_order_off_the_emitting_thread():
    stream = Recording()
    handler = BackgroundStreamHandler(stream)
    logger = logging.getLogger("test.background")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(500):
            logger.warning("line %d", n)
        assert handler.writer is not None
        handler._drain(handler.stop, handler.writer)  # what atexit does
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(500)]
    assert threading.get_ident() not in stream.writers
