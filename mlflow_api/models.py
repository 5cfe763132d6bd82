"""What MLflow's API knows that the studio's own nouns do not: the MLflow id of a run, the tags MLflow keeps for itself
(`mlflow.*`), MLflow 3's logged models, and where a registered version came from.

Everything else lives in the studio's own tables: an MLflow run *is* a `runs.Run` (tracked_by="mlflow"), its
parameters `RunParameter`s, its metrics `MetricSeries` chunks, its artifacts the run's outputs, and a registered
model version a `models_registry.ModelVersion`.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from models_registry.models import ModelVersion
from runs.models import Experiment, Run
from studio.models import Workspace


def new_run_uuid() -> str:
    return uuid.uuid4().hex


def new_model_id() -> str:
    return f"m-{uuid.uuid4().hex}"


class MlflowRun(models.Model):
    """The MLflow side of a run an MLflow client created: its 32-hex id, the user name the client reported, and the
    tags MLflow sets for itself (`mlflow.user`, `mlflow.source.name`, `mlflow.runName`, `mlflow.log-model.history`, ...),
    kept apart from the run's own tags (which the run page shows and the studio's limits apply to)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="mlflow")
    run_uuid = models.CharField(max_length=32, unique=True, default=new_run_uuid)
    user_id = models.CharField(max_length=255, blank=True)
    system_tags = models.JSONField(default=dict, blank=True)
    # The logged models the client linked to the run as its outputs (`log_outputs`): [{"model_id", "step"}].
    model_outputs = models.JSONField(default=list, blank=True)
    # Its inputs (`log_inputs`, which autologging calls): the datasets it read, as MLflow's DatasetInput
    # ({"dataset": {"name", "digest", "source_type", "source", "schema", "profile"}, "tags": [{"key", "value"}]}),
    # and the logged models it used ([{"model_id"}]).
    dataset_inputs = models.JSONField(default=list, blank=True)
    model_inputs = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"MLflow run {self.run_uuid} (run {self.run_id})"


class LoggedModelStatus(models.TextChoices):
    PENDING = "LOGGED_MODEL_PENDING", "Pending"
    READY = "LOGGED_MODEL_READY", "Ready"
    UPLOAD_FAILED = "LOGGED_MODEL_UPLOAD_FAILED", "Upload failed"


class LoggedModel(models.Model):
    """An MLflow 3 logged model (`mlflow.<flavor>.log_model`). Its files are artifacts like any other: for a model
    logged in a run, a folder of the run's outputs (`outputs/<folder>/`, so the run page lists it and the registry
    registers it from there without copying a byte); for a model logged outside a run, a folder of its own under
    DATA_DIR/mlflow/logged-models/<model_id>/."""

    model_id = models.CharField(max_length=40, unique=True, default=new_model_id)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="logged_models")
    name = models.CharField(max_length=255)
    folder = models.CharField(max_length=300, blank=True, help_text="The folder under the run's outputs/.")
    status = models.CharField(max_length=32, choices=LoggedModelStatus.choices, default=LoggedModelStatus.PENDING)
    status_message = models.TextField(blank=True)
    model_type = models.CharField(max_length=255, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=list, blank=True, help_text="Points logged with this model's id.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["workspace", "experiment", "-id"], name="logged_model_recent")]

    def __str__(self) -> str:
        return f"{self.name} ({self.model_id})"


class VersionSource(models.Model):
    """Where an MLflow client said a registered version came from (`source`, e.g. `models:/m-…`), and the logged
    model it was made of."""

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, primary_key=True,
                                   related_name="mlflow_source")
    source = models.CharField(max_length=1024)
    logged_model = models.ForeignKey(LoggedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
