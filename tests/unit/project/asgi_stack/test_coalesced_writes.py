"""What one turn of the event loop writes to a connection reaches the socket as one write, bytes and order
unchanged; close() and write_eof() send what is pending first, abort() drops it."""

import asyncio

from project.asgi_stack.coalesced_writes import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def write_eof(self) -> None:
        self.calls.append(("write_eof", b""))

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1234) if name == "peername" else default


async def _one_turn() -> None:
    await asyncio.sleep(0)


def test_the_writes_of_one_turn_are_one_write_in_order():
    async def scenario() -> list:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"")
        transport.write(b"ok")
        assert real.calls == []  # not before the turn ends
        assert transport.get_write_buffer_size() == 40
        await _one_turn()
        transport.write(b"next")
        await _one_turn()
        return real.calls

    assert asyncio.run(scenario()) == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"), ("write", b"next")]


def test_close_and_write_eof_send_what_is_pending_first_and_abort_drops_it():
    async def scenario() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        closed, aborted = RecordingTransport(), RecordingTransport()
        transport = CoalescingTransport(closed, loop)
        transport.write(b"last words")
        transport.write_eof()
        transport.write(b"bye")
        transport.close()
        dropped = CoalescingTransport(aborted, loop)
        dropped.write(b"never sent")
        dropped.abort()
        await _one_turn()  # the scheduled flushes find nothing left (and a closed transport)
        return closed.calls, aborted.calls

    closed, aborted = asyncio.run(scenario())
    assert closed == [("write", b"last words"), ("write_eof", b""), ("write", b"bye"), ("close", b"")]
    assert aborted == [("abort", b"")]


def test_everything_else_is_the_real_transports():
    async def scenario():
        return CoalescingTransport(RecordingTransport(), asyncio.get_running_loop()).get_extra_info("peername")

    assert asyncio.run(scenario()) == ("127.0.0.1", 1234)
