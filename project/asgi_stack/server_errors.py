"""uvicorn's own answers in our envelope: a request its HTTP parser refuses (a control byte in a header, a raw
non-ASCII target, an unknown method) never reaches the ASGI app, and uvicorn answers it in plain text. Used as
uvicorn's `http` protocol class, by the gunicorn worker (deploy/web/gunicorn.conf.py) and `make run`.

Written here, not configured: uvicorn has no setting for the body of these answers. The override is one method
of its httptools protocol, whose signature tests/unit/project/asgi_stack/test_server_errors.py pins.
"""

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

BAD_REQUEST_BODY = json.dumps(
    {"error": "bad_request", "detail": "The request is not valid HTTP/1.1 (a malformed request line or header)."},
    separators=(",", ":"),
).encode()


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
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
