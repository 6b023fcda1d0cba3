"""WSGI entry point, for servers that do not speak ASGI; production runs project.asgi."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()

from project.startup import refuse_unsafe_production  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_production()

from project.middleware.load_shedding import with_load_shedding  # noqa: E402

application = with_load_shedding(application, asgi=False)
