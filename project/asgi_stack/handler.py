"""Django's ASGI handler with each request's sync code on a kept thread instead of a new one per request.

Under ASGI, Django runs a request's sync code (middleware, DRF views, the ORM) in a ThreadSensitiveContext. By
default that is a new single-thread executor per request: a new thread per request, plus one more to join it
afterwards. Thread.start() blocks the event loop until the new thread has run, and under load the new thread
first waits for the GIL among those already running, so everything that needs only the loop (a load shedder's
503, a cache hit) waits behind it (docs/decisions/002-kept-request-threads.md).

asgiref (3.13+) lets the caller hand ThreadSensitiveContext an executor that it owns. Here idle single-thread
executors are kept and handed out, one per request. Each request still runs all its sync code on one thread of
its own, which is what thread-sensitive mode guarantees (Django's DB connection is per thread), and the threads
outlive the requests. When `handle()` returns, the request's sync work is over.

And one thread hop per request instead of three. Django's own handler crosses to the request's thread for the
`request_started` signal, again for the view (every view here but the probes is sync: DRF, the ORM), and again
for `response.close()` (`request_finished`); each crossing is a GIL hand-over between the loop and the thread,
which was a quarter of the loop's CPU on a cache-miss GET. Here the whole sync part — the signal, the sync
middleware chain and view, and closing a complete response — runs in one call on that thread, and only the
sending is left to the loop. A client that disconnects meanwhile is not noticed until the send (a sync view
cannot be interrupted anyway). The probes (async views: /healthz, /readyz) keep Django's async path.
"""

from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.urls import set_script_prefix

from project.asgi_stack import PROBE_PATHS, latency

# Idle threads kept per process. The load shedder keeps the running requests far below this (SHED_LIMIT_MAX);
# without it, a burst past this count is served by threads that end with their request, as Django's own do.
MAX_IDLE_THREADS = 128


class KeptThreadsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        # Only the event loop's thread touches it.
        self.idle: list[ThreadPoolExecutor] = []
        # The same MIDDLEWARE as a sync chain, run on the request's thread.
        self.sync_handler = BaseHandler()
        self.sync_handler.load_middleware(is_async=False)

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

    async def handle(self, scope, receive, send) -> None:
        if scope["path"] in PROBE_PATHS:
            await super().handle(scope, receive, send)
            return None
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return None
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await sync_to_async(self.respond, thread_sensitive=True)(scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:  # iterated by the send: closed after it
                    await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()
        return None

    def respond(self, scope, body_file):
        """The request's whole sync part, on its own thread: what Django's handle() does in three hops."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        with latency.excluding_queries():
            response = error_response if request is None else self.sync_handler.get_response(request)
        assert response is not None  # create_request returns one or the other
        if not response.streaming:
            response.close()  # request_finished: the content is all in memory
        return response


def get_asgi_application() -> KeptThreadsASGIHandler:
    """As django.core.asgi.get_asgi_application, with kept threads."""
    django.setup(set_prefix=False)
    return KeptThreadsASGIHandler()
