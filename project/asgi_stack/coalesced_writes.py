"""One socket write per response instead of two: uvicorn writes the status line and headers as soon as the app
sends `http.response.start` and the body on `http.response.body`, each straight to the socket. Our answers are
small and sent in one go, so that is two send() calls, two TCP segments and two wake-ups of the reader (Nginx,
or the load tool) per request; on loopback each send also runs the receiver's side of TCP on our core.

The wrapper collects what one turn of the event loop writes to a connection and hands it to the real transport
once, at the end of that turn (`loop.call_soon`). Nothing waits longer than the rest of the current turn, and
close() writes what is pending first, so bytes and their order are unchanged. Every other transport method is
the real transport's.
"""

import asyncio


class CoalescingTransport:
    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str):
        return getattr(self._transport, name)
