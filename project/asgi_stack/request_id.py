"""The request id, bound by the outermost ASGI wrapper so that every request has one, fast-path hits and shed 503s
included: taken from `X-Request-ID` (Nginx sets it: the client's when sane, else its own) or made here, put in
the logging context (project/logs.py: every record of the request carries it) and sent back on the response.

Anyone's id is accepted: it only correlates lines, and a client that sends its own can find its request in the
logs. It is bounded (1-128 printable ASCII, else replaced) so that it can neither break a log line nor a header.
"""

import random
import uuid

from project import logs

_HEADER = b"x-request-id"


class RequestId:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = next((value for name, value in scope["headers"] if name == _HEADER), None)
        # Not uuid4 (os.urandom): a call that releases the GIL on the event loop hands it to a request thread for a
        # switch interval. A request id is a label, not a secret; `random` is reseeded in each forked worker.
        request_id = logs.sane_request_id(sent) or uuid.UUID(int=random.getrandbits(128), version=4).hex
        header = (_HEADER, request_id.encode("ascii"))

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = logs.request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)
        return None
