from django.apps import AppConfig
from django.conf import settings

from studio import limits

MULTIPART_OVERHEAD = 1024 * 1024  # form fields and part headers around an uploaded file


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        """Routes that take uploads accept bodies of their own size (studio/limits.py)."""
        limits.register("run_submit", lambda: settings.STUDIO_SNAPSHOT_MAX_BYTES + MULTIPART_OVERHEAD)
        limits.register("api:submit_run", lambda: settings.STUDIO_SNAPSHOT_MAX_BYTES + MULTIPART_OVERHEAD)
        limits.register("api:ingest_file", lambda: settings.STUDIO_UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD)
        limits.register("api:ingest_image", lambda: settings.STUDIO_IMAGE_MAX_BYTES + MULTIPART_OVERHEAD)
