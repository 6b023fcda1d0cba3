"""WSGI entry point, for servers that do not speak ASGI. Production runs project.asgi: the wrappers in front of
Django (load shedding, the cache fast path, the access log) are ASGI only."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()

from project.startup import refuse_misconfiguration  # noqa: E402  (needs the apps loaded above)

refuse_misconfiguration()
