"""Django's ASGI handler with each request's sync code on a kept thread instead of a new one per request.

Under ASGI, Django runs a request's sync code (middleware, DRF views, the ORM) in a ThreadSensitiveContext. By
default that is a new single-thread executor per request: a new thread per request, plus one more to join it
afterwards. Thread.start() blocks the event loop until the new thread has run, and under load the new thread
first waits for the GIL among those already running, so everything that needs only the loop (a load shedder's
503, a cache hit) waits behind it (docs/decisions/002-kept-request-threads.md).

asgiref (3.13+) lets the caller hand ThreadSensitiveContext an executor that it owns. Here idle single-thread
executors are kept and handed out, one per request. Each request still runs all its sync code on one thread of
its own, which is what thread-sensitive mode guarantees (Django's DB connection is per thread), and the threads
outlive the requests. When `handle()` returns, the request's sync work is over. On a client disconnect Django
awaits `request_finished`, which runs on the same executor after the view has finished.
"""

from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

# Idle threads kept per process. The load shedder keeps the running requests far below this (SHED_LIMIT_MAX);
# without it, a burst past this count is served by threads that end with their request, as Django's own do.
MAX_IDLE_THREADS = 128


class KeptThreadsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        # Only the event loop's thread touches it.
        self.idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # Django's own error
        executor = self.idle.pop() if self.idle else ThreadPoolExecutor(1, thread_name_prefix="django-request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self.idle) < MAX_IDLE_THREADS:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)
        return None


def get_asgi_application() -> KeptThreadsASGIHandler:
    """As django.core.asgi.get_asgi_application, with kept threads."""
    django.setup(set_prefix=False)
    return KeptThreadsASGIHandler()
