"""Experiments, runs, their snapshots and status history."""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from studio.models import NAME_VALIDATOR, ComputeTarget, Workspace


class RunStatus(models.TextChoices):
    NOT_STARTED = "NotStarted", "Not started"
    QUEUED = "Queued", "Queued"
    PREPARING = "Preparing", "Preparing"
    STARTING = "Starting", "Starting"
    RUNNING = "Running", "Running"
    FINALIZING = "Finalizing", "Finalizing"
    COMPLETED = "Completed", "Completed"
    FAILED = "Failed", "Failed"
    CANCELED = "Canceled", "Canceled"
    NOT_RESPONDING = "NotResponding", "Not responding"


FINAL_STATES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)
# States in which a worker owns the run (and heartbeats it).
ACTIVE_STATES = (
    RunStatus.PREPARING,
    RunStatus.STARTING,
    RunStatus.RUNNING,
    RunStatus.FINALIZING,
    RunStatus.NOT_RESPONDING,
)


class ExperimentQuerySet(models.QuerySet):
    def for_workspace(self, workspace: Workspace) -> ExperimentQuerySet:
        return self.filter(workspace=workspace)

    def with_summary(self) -> ExperimentQuerySet:
        """Run count and the latest run's status, in the same query."""
        latest = Run.objects.filter(experiment=models.OuterRef("pk")).order_by("-id")
        return self.annotate(
            run_count=models.Count("runs"),
            latest_status=models.Subquery(latest.values("status")[:1]),
            latest_run_at=models.Subquery(latest.values("created_at")[:1]),
        ).order_by("name")  # GROUP BY drops Meta.ordering


class Experiment(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=255, validators=[NAME_VALIDATOR])
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_experiment_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def set_archived(self, archived: bool) -> None:
        self.archived = archived
        self.save(update_fields=["archived"])


class Snapshot(models.Model):
    """An immutable copy of a run's source folder.

    The files themselves are content-addressed blobs under DATA_DIR/blobs (see runs/snapshots.py);
    the manifest lists `{"path", "sha256", "size"}` per file, sorted by path.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="snapshots")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    source_name = models.CharField(max_length=255, help_text="The uploaded file's name.")
    ignore_file = models.CharField(max_length=32, blank=True, help_text="Which ignore file filtered the source.")
    ignored_count = models.PositiveIntegerField(default=0)
    file_count = models.PositiveIntegerField(default=0)
    total_bytes = models.PositiveBigIntegerField(default=0)
    manifest = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"snapshot {self.pk} ({self.file_count} files)"

    def entry(self, path: str) -> dict | None:
        for item in self.manifest:
            if item["path"] == path:
                return item
        return None


class RunQuerySet(models.QuerySet):
    def for_workspace(self, workspace: Workspace) -> RunQuerySet:
        return self.filter(workspace=workspace)


class Run(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="runs")
    experiment = models.ForeignKey(Experiment, on_delete=models.PROTECT, related_name="runs")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    display_name = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    # Configuration, fixed at submission.
    snapshot = models.ForeignKey(Snapshot, on_delete=models.PROTECT, related_name="runs")
    entry_script = models.CharField(max_length=1024)
    arguments = models.JSONField(default=list)
    env_vars = models.JSONField(default=dict)
    compute_target = models.ForeignKey(ComputeTarget, on_delete=models.PROTECT, related_name="runs")
    max_duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    tags = models.JSONField(default=dict)

    # Lifecycle.
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.NOT_STARTED)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why the run ended the way it did.")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["experiment", "-id"], name="run_experiment_recent"),
            models.Index(fields=["experiment", "status", "-id"], name="run_experiment_status"),
            models.Index(fields=["workspace", "-id"], name="run_workspace_recent"),
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat"),
        ]

    def __str__(self) -> str:
        return self.display_name or f"Run {self.pk}"

    @property
    def title(self) -> str:
        return str(self)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def duration(self):
        if self.started_at is None:
            return None
        end = self.ended_at or timezone.now()
        return end - self.started_at

    def transition(self, to: str, *, from_states, **fields) -> bool:
        """Move to `to` only from one of `from_states`; a late or duplicate message changes nothing.

        Returns True when this call made the change.
        """
        from runs import live

        now = timezone.now()
        updates = {"status": to, **fields}
        if to == RunStatus.RUNNING:
            updates.setdefault("started_at", now)
        if to in FINAL_STATES:
            updates["ended_at"] = now
        with transaction.atomic():
            changed = Run.objects.filter(pk=self.pk, status__in=list(from_states)).update(**updates)
            if changed:
                RunStatusChange.objects.create(run_id=self.pk, status=to, at=now)
        if not changed:
            return False
        for key, value in updates.items():
            setattr(self, key, value)
        live.publish_status(self.pk, to)
        return True

    def request_cancel(self, reason: str = "Canceled by user.") -> bool:
        """Cancel a run. A queued run ends at once; a running one is stopped by its worker."""
        if self.transition(RunStatus.CANCELED, from_states=(RunStatus.NOT_STARTED, RunStatus.QUEUED), reason=reason):
            return True
        if self.is_final:
            return False
        from runs import live

        Run.objects.filter(pk=self.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=timezone.now())
        live.request_cancel(self.pk, reason)
        return True


class RunStatusChange(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="status_changes")
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]
