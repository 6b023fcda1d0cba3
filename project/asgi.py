"""ASGI entry point: gunicorn with uvicorn workers in production, uvicorn alone for `make run`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_asgi_application()

from project.startup import refuse_unsafe_production  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_production()
