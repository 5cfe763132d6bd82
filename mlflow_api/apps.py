from django.apps import AppConfig
from django.conf import settings

from studio import limits


class MlflowApiConfig(AppConfig):
    name = "mlflow_api"
    verbose_name = "MLflow API"

    def ready(self) -> None:
        """Artifact uploads accept a file as large as a script may upload; refusals there speak MLflow's shape."""
        from mlflow_api import errors

        limits.register("mlflow:artifact", lambda: settings.STUDIO_UPLOAD_MAX_BYTES)
        limits.register_refusal(errors.PREFIX, errors.refusal_body)
