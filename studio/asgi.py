"""The ASGI application: Django with per-route body limits and request bodies streamed to views (studio/limits.py)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django.setup(set_prefix=False)

from studio.limits import StreamingASGIHandler  # noqa: E402  (needs the settings and apps loaded)

application = StreamingASGIHandler()
