"""A bare ASGI app answering every request with the captured bytes of GET /items: the ceiling of the app tier.

Run under the same gunicorn settings as the service (same workers, same worker class), so the only difference
to get-app-hit is Django and the app's own work:
    LOADTEST_BODY_FILE=items.json gunicorn -c deploy/web/gunicorn.conf.py loadtest.baseline_asgi:app
"""

import os
from pathlib import Path

# Read once per process: the point is to measure the server, not file I/O.
_BODY = Path(os.environ["LOADTEST_BODY_FILE"]).read_bytes() if os.environ.get("LOADTEST_BODY_FILE") else b"{}"
_HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"content-length", str(len(_BODY)).encode()),
]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
