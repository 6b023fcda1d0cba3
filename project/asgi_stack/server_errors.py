"""uvicorn's HTTP protocol as we run it: used as uvicorn's `http` class by the gunicorn worker
(deploy/web/gunicorn.conf.py) and `make run`, with two changes:
- its own answers in our envelope: a request its HTTP parser refuses (a control byte in a header, a raw
  non-ASCII target, an unknown method) never reaches the ASGI app, and uvicorn answers it in plain text;
- one socket write per response (project/asgi_stack/coalesced_writes.py).

Written here, not configured: uvicorn has no setting for either. The overrides are two methods of its httptools
protocol, which tests/unit/project/asgi_stack/test_server_errors.py exercises on a real uvicorn server.
"""

import asyncio
import json
from typing import cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from project.asgi_stack.coalesced_writes import CoalescingTransport

BAD_REQUEST_BODY = json.dumps(
    {"error": "bad_request", "detail": "The request is not valid HTTP/1.1 (a malformed request line or header)."},
    separators=(",", ":"),
).encode()


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))

    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content += [
            b"content-type: application/json; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(BAD_REQUEST_BODY),
            b"connection: close\r\n\r\n",
            BAD_REQUEST_BODY,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()
