"""The ASGI application: Django with per-route body limits and request bodies streamed to views (studio/limits.py).

The URL configuration (every app's views and API schemas) is loaded here, before the server accepts a connection,
so the first request does not pay for it.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django.setup(set_prefix=False)

from django.urls import get_resolver  # noqa: E402  (needs the settings and apps loaded)

from studio.limits import StreamingASGIHandler  # noqa: E402

get_resolver().url_patterns  # noqa: B018 - imports every view and builds the API's schemas now
application = StreamingASGIHandler()
