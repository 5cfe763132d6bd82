"""Experiments, runs, their snapshots and status history."""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from runs import live
from runs.fields import OrderedJSONField
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
        """Run counts (top-level runs and all runs) and the latest run's status, in the same query."""
        latest = Run.objects.filter(experiment=models.OuterRef("pk")).order_by("-id")
        return self.annotate(
            run_count=models.Count("runs"),
            top_run_count=models.Count("runs", filter=models.Q(runs__parent__isnull=True)),
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


class TrackedBy(models.TextChoices):
    """Who runs a run. The studio's own runs are executed by a worker; a run an external client tracks (an MLflow
    script logging to the studio's MLflow API) has no worker, script or heartbeat here: the reaper and the workers leave
    it alone, and its status and times are what the client reports."""

    STUDIO = "", "the studio"
    MLFLOW = "mlflow", "an MLflow client"


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
    environment = models.ForeignKey(
        "environments.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    # Per-run overrides of the target's limits: {"cpu_limit": 2.0, "memory_limit_mb": 4096, "gpus": "all"}.
    resources = models.JSONField(default=dict, blank=True)

    # Lifecycle.
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.NOT_STARTED)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why the run ended the way it did.")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    # SHA-256 of the run-scoped token handed to the script (see runs/tokens.py); empty when none was issued.
    token_hash = models.CharField(max_length=64, blank=True)
    # Set by the script's SDK with run.fail(reason): the run ends Failed with this reason even if it exits 0.
    reported_failure = models.TextField(blank=True)
    # Empty for the studio's own runs; who tracks the run otherwise (no worker executes it: see TrackedBy).
    tracked_by = models.CharField(max_length=16, choices=TrackedBy.choices, default=TrackedBy.STUDIO, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["experiment", "-id"], name="run_experiment_recent"),
            models.Index(fields=["experiment", "status", "-id"], name="run_experiment_status"),
            # Top-level runs of an experiment by status (the experiment page lists children under their parent).
            models.Index(fields=["experiment", "parent", "status", "-id"], name="run_experiment_top_status"),
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
        now = timezone.now()
        updates = {"status": to, **fields}
        if to == RunStatus.RUNNING and "started_at" not in fields:
            # Back from NotResponding, a run keeps the start it had: its duration stays true.
            updates["started_at"] = Coalesce(models.F("started_at"), models.Value(now))
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
        if to == RunStatus.RUNNING and "started_at" not in fields:
            self.started_at = Run.objects.filter(pk=self.pk).values_list("started_at", flat=True).first()
        live.publish_status(self.pk, to)
        live.publish_child(self.parent_id, self.pk)
        return True

    def create_child(self, name: str = "") -> Run:
        """A child run, created by the parent's script through the SDK; it is Running at once."""
        now = timezone.now()
        with transaction.atomic():
            child = Run.objects.create(
                workspace_id=self.workspace_id,
                experiment_id=self.experiment_id,
                parent=self,
                display_name=name,
                created_by_id=self.created_by_id,
                snapshot_id=self.snapshot_id,
                entry_script=self.entry_script,
                compute_target_id=self.compute_target_id,
                status=RunStatus.RUNNING,
                started_at=now,
            )
            RunStatusChange.objects.create(run=child, status=RunStatus.RUNNING, at=now)
        live.publish_child(self.pk, child.pk)
        return child

    def end_with_descendants(self, status: str, reason: str = "", **fields) -> None:
        """End this run and every descendant still going (children end with their parent)."""
        self.transition(status, from_states=ACTIVE_STATES, reason=reason, **fields)
        level = [self.pk]
        while level:
            children = list(Run.objects.filter(parent_id__in=level, status__in=ACTIVE_STATES))
            for child in children:
                child.transition(status, from_states=ACTIVE_STATES, reason=f"Ended with its parent run {self.pk}.")
            level = [child.pk for child in Run.objects.filter(parent_id__in=level).only("pk")]

    def request_cancel(self, reason: str = "Canceled by user.") -> bool:
        """Cancel a run. A queued run ends at once; a running one is stopped by its worker. A run an external client
        tracks has no worker to stop: it is marked Canceled at once (the client is not told)."""
        waiting = (RunStatus.NOT_STARTED, RunStatus.QUEUED)
        if self.transition(RunStatus.CANCELED, from_states=waiting + (ACTIVE_STATES if self.tracked_by else ()),
                           reason=reason):
            return True
        if self.is_final:
            return False
        Run.objects.filter(pk=self.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=timezone.now())
        live.request_cancel(self.pk, reason)
        return True


class RunStatusChange(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="status_changes")
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]


class MetricKind(models.TextChoices):
    SCALAR = "scalar", "Scalar series"
    LIST = "list", "List"
    ROW = "row", "Rows"
    TABLE = "table", "Table"
    IMAGE = "image", "Image"


class MetricSeries(models.Model):
    """One named thing a run logged. Scalars keep their points in `MetricChunk`s; the other kinds in `MetricEntry`s.

    The last value, count and extremes are kept here so run tables sort and filter by them without reading points.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_series")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=MetricKind.choices)
    description = models.CharField(max_length=1024, blank=True)
    count = models.PositiveBigIntegerField(default=0)
    last_value = models.FloatField(null=True, blank=True)
    last_nonfinite = models.CharField(max_length=9, blank=True, help_text="NaN, Infinity or -Infinity when the last value was one.")
    last_step = models.FloatField(null=True, blank=True)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_series_per_run")]
        indexes = [models.Index(fields=["experiment", "name", "last_value"], name="series_sort_by_last")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} of run {self.run_id}"

    @property
    def last_display(self) -> str:
        if self.last_nonfinite:
            return self.last_nonfinite
        return "" if self.last_value is None else f"{self.last_value:.6g}"

    @property
    def is_system(self) -> bool:
        return self.name.startswith("sys/")


class MetricChunk(models.Model):
    """Up to CHUNK_POINTS points of a scalar series: float64 arrays of step, value and time, one after the other.

    A full chunk is sealed and gets a `summary`: the same arrays downsampled (min/max preserving), so a chart of
    any length reads summaries of sealed chunks plus the raw points of the open one.
    """

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    count = models.PositiveIntegerField(default=0)
    data = models.BinaryField()
    summary = models.BinaryField(null=True, blank=True)
    sealed = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "seq"], name="unique_chunk_seq")]
        ordering = ["series", "seq"]


class MetricEntry(models.Model):
    """One logged list, row, table or image of a series, in logging order."""

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="entries")
    seq = models.PositiveIntegerField()
    data = OrderedJSONField(help_text="The logged list, row, table or image record, with its keys in logged order.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "seq"], name="unique_entry_seq")]
        ordering = ["series", "seq"]


class ParameterSource(models.TextChoices):
    ARGUMENTS = "arguments", "Parsed from the arguments"
    SCRIPT = "script", "Logged by the script"


class RunParameter(models.Model):
    """One parameter of a run: a name and a JSON scalar (text, a finite number or a boolean), from the submitted
    arguments (`--name value`) or logged by the script (which replaces a parsed value). See runs/parameters.py.

    `text` is the value as shown, `number` the value as a number when it is one ("0.01" too), and `sort_key` orders
    values in one column: numbers first, by value (an order-preserving encoding), then text. The runs table sorts and
    filters by them through the (experiment, name, sort_key) index, as it does metrics.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="parameters")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255)
    value = models.JSONField()
    text = models.TextField()
    number = models.FloatField(null=True, blank=True)
    sort_key = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=ParameterSource.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_parameter_per_run")]
        indexes = [models.Index(fields=["experiment", "name", "sort_key"], name="parameter_sort")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}={self.text} of run {self.run_id}"


class RunGitInfo(models.Model):
    """Where a run's source came from when it was a git working copy, as the client reported it (see runs/gitinfo.py):
    the remote without credentials, branch, commit, whether the working copy had changes, and those changes as a
    diff (bounded; `diff_truncated` when the client cut it, `diff_bytes` the size before the cut)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="git_info")
    remote_url = models.CharField(max_length=2048, blank=True)
    branch = models.CharField(max_length=255, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    dirty = models.BooleanField(default=False)
    diff = models.TextField(blank=True)
    diff_truncated = models.BooleanField(default=False)
    diff_bytes = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"git {self.commit[:12] or '?'} of run {self.run_id}"

    def as_json(self) -> dict:
        return {"remote_url": self.remote_url or None, "branch": self.branch or None, "commit": self.commit or None,
                "dirty": self.dirty, "diff": self.diff, "diff_truncated": self.diff_truncated,
                "diff_bytes": self.diff_bytes}


class RunOutput(models.Model):
    """A file stored with a run (under outputs/ or logs/), with its content's sha256: the file in run storage is also
    the blob of that content (a hard link), so registering it as a model copies no bytes."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stored_outputs")
    path = models.CharField(max_length=1024)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "path"], name="unique_run_output_path")]
        ordering = ["path"]
