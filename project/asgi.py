"""ASGI entry point: gunicorn with uvicorn workers in production, uvicorn alone for `make run`."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from project.request_threads import get_asgi_application  # Django's, with kept threads

application = get_asgi_application()

from project.startup import refuse_unsafe_production  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_production()

from app import response_cache  # noqa: E402
from app.fast_path import FastPath  # noqa: E402
from project.middleware.load_shedding import with_load_shedding  # noqa: E402

# Outermost first: cache hits (cheapest of all, never shed), then load shedding, then Django.
application = with_load_shedding(application, asgi=True)
if response_cache.enabled():
    # Cache hits are answered before Django's request cycle; everything else reaches Django as before.
    application = FastPath(application)
