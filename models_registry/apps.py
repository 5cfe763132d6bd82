from django.apps import AppConfig
from django.conf import settings

from studio import limits

MULTIPART_OVERHEAD = 1024 * 1024


class ModelsRegistryConfig(AppConfig):
    name = "models_registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        """Model uploads accept bodies up to the model size limit (studio/limits.py)."""
        size = lambda: settings.STUDIO_MODEL_MAX_BYTES + MULTIPART_OVERHEAD  # noqa: E731
        for route in ("model_upload", "api:upload_model_version", "api:upload_model_archive"):
            limits.register(route, size)
