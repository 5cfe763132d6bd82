import contextlib
import os

from django.apps import AppConfig
from django.conf import settings


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Studio"

    def ready(self) -> None:
        from studio import queues  # noqa: F401 - connects the worker_ready handler

        # Uploads larger than FILE_UPLOAD_MAX_MEMORY_SIZE are written here while they arrive.
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, mode=0o700, exist_ok=True)
        # collectstatic's target, which the static files middleware reads (and warns about when it is missing).
        with contextlib.suppress(OSError):
            os.makedirs(settings.STATIC_ROOT, exist_ok=True)
