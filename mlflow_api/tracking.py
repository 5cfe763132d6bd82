"""MLflow's experiments and runs, mapped onto the studio's: what the tracking routes do.

- An MLflow experiment is a studio `Experiment` of the workspace; its id is the experiment's primary key, and "0"
  (MLflow's default experiment) is the one named `Default`. Names follow the studio's rule (letters, digits, `-`,
  `_`, `.`), and a name outside it is refused saying so.
- An MLflow run is a studio `Run` with `tracked_by="mlflow"` and an `MlflowRun` holding its 32-hex id: no worker
  executes it (the reaper leaves it alone), its status and start and end times are the client's. Either id, the
  32-hex one or the studio's number, names the run. Runs the studio executes can be read here, not written.
- Parameters are the run's `RunParameter`s (runs/parameters.py), which MLflow never lets change once logged; metrics
  go to the same chunked series the studio SDK fills (one append per metric name and request, so a log-batch of
  1,000 points of one metric is one append); tags MLflow keeps for itself (`mlflow.*`) are kept on the `MlflowRun`,
  the others are the run's own tags, under the studio's rules. Some of MLflow's own tags also fill the run's fields:
  `mlflow.runName` its name, `mlflow.source.name` its entry script, `mlflow.parentRunId` its parent, and
  `mlflow.source.git.*` its git information.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from mlflow_api import errors
from mlflow_api.errors import MlflowError
from mlflow_api.models import LoggedModel, MlflowRun
from runs import gitinfo, live, metrics, parameters
from runs.models import (
    Experiment,
    MetricChunk,
    MetricKind,
    MetricSeries,
    Run,
    RunGitInfo,
    RunParameter,
    RunStatus,
    RunStatusChange,
    Snapshot,
    TrackedBy,
)
from studio.models import NAME_VALIDATOR, ComputeTarget
from studio.parsing import MAX_TAGS, tag_problem
from studio.text import bidi_problem

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
SNAPSHOT_NAME = "(logged by an MLflow client)"
SYSTEM_PREFIX = "mlflow."
MAX_SYSTEM_TAGS = 200
MAX_HISTORY_PAGE = 25_000
MODEL_METRICS_KEPT = 1_000
RUN_UUID = re.compile(r"[0-9a-f]{32}")
STATUS_TO_STUDIO = {
    "RUNNING": RunStatus.RUNNING, "SCHEDULED": RunStatus.NOT_STARTED, "FINISHED": RunStatus.COMPLETED,
    "FAILED": RunStatus.FAILED, "KILLED": RunStatus.CANCELED,
}
STUDIO_TO_STATUS = {
    RunStatus.NOT_STARTED: "SCHEDULED", RunStatus.QUEUED: "SCHEDULED", RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED", RunStatus.CANCELED: "KILLED",
}
REASONS = {RunStatus.FAILED: "Reported FAILED by the MLflow client.", RunStatus.CANCELED: "Reported KILLED by the MLflow client."}


# Small conversions -------------------------------------------------------------------------------------------------


def ms(moment: datetime | None) -> int | None:
    """Milliseconds since the epoch, as MLflow writes times."""
    return None if moment is None else int(moment.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def json_double(value: float):
    """A double for protobuf's JSON: NaN and the infinities as the strings protobuf reads."""
    return metrics.json_number(float(value))


def run_id_of(run: Run) -> str:
    """The id an MLflow client knows the run by: its 32-hex id, or the studio's number for the studio's own runs."""
    mlflow = getattr(run, "mlflow", None) if run.tracked_by else None
    return mlflow.run_uuid if mlflow is not None else str(run.pk)


def artifact_root(run: Run) -> str:
    return f"mlflow-artifacts:/{run.experiment_id}/{run_id_of(run)}/artifacts"


# Experiments -------------------------------------------------------------------------------------------------------


def experiment_json(experiment: Experiment) -> dict:
    created = ms(experiment.created_at)
    return {
        "experiment_id": str(experiment.pk), "name": experiment.name,
        "artifact_location": f"mlflow-artifacts:/{experiment.pk}", "lifecycle_stage": "active",
        "creation_time": created, "last_update_time": created, "tags": [],
    }


def check_experiment_name(name: str) -> str:
    try:
        NAME_VALIDATOR(name)
    except ValidationError:
        problem = bidi_problem(name, "The experiment name")
        raise errors.invalid(problem or (
            f"Invalid experiment name {name[:100]!r}: the studio's experiment names are 1-255 letters, digits, "
            "'-', '_' or '.', starting with a letter or digit (no spaces or slashes).")) from None
    return name


def find_experiment(workspace, experiment_id: str) -> Experiment:
    text = (experiment_id or "").strip()
    found = None
    if text == DEFAULT_EXPERIMENT_ID:
        found = Experiment.objects.filter(workspace=workspace, name=DEFAULT_EXPERIMENT_NAME).first()
    elif text.isdigit() and len(text) <= 18:
        found = Experiment.objects.filter(workspace=workspace, pk=int(text)).first()
    if found is None:
        raise errors.not_found(f"No experiment with id={text[:64]!r} in this workspace.")
    return found


def experiment_by_name(workspace, name: str) -> Experiment:
    found = Experiment.objects.filter(workspace=workspace, name=name).first()
    if found is None:
        raise errors.not_found(f"Could not find experiment with name '{name[:500]}'")
    return found


def create_experiment(workspace, user, name: str) -> Experiment:
    check_experiment_name(name)
    try:
        with transaction.atomic():
            return Experiment.objects.create(workspace=workspace, name=name, created_by=user)
    except IntegrityError:
        raise MlflowError(errors.RESOURCE_ALREADY_EXISTS, f"Experiment(name={name}) already exists.") from None


def experiment_for_run(workspace, user, experiment_id: str | None) -> Experiment:
    """The experiment a new run goes to; MLflow's default experiment ("0", or none given) is made when missing."""
    if not experiment_id or experiment_id == DEFAULT_EXPERIMENT_ID:
        experiment, _ = Experiment.objects.get_or_create(workspace=workspace, name=DEFAULT_EXPERIMENT_NAME,
                                                         defaults={"created_by": user})
        return experiment
    return find_experiment(workspace, experiment_id)


# Finding runs ------------------------------------------------------------------------------------------------------


def resolve_run(workspace, ref: str) -> Run:
    """The run named by its MLflow id (32 hex digits) or the studio's number, in this workspace."""
    text = (ref or "").strip()
    runs = Run.objects.select_related("experiment", "mlflow").filter(workspace=workspace).order_by()  # one at most
    found = None
    if RUN_UUID.fullmatch(text):
        found = next(iter(runs.filter(mlflow__run_uuid=text)[:1]), None)
    elif text.isdigit() and len(text) <= 18:
        found = next(iter(runs.filter(pk=int(text))[:1]), None)
    if found is None:
        raise errors.not_found(f"Run with id={text[:64]} not found")
    return found


def writable_run(workspace, ref: str) -> Run:
    """A run an MLflow client may log to: one an MLflow client created (whatever its status, as MLflow allows)."""
    run = resolve_run(workspace, ref)
    if run.tracked_by != TrackedBy.MLFLOW:
        raise MlflowError(errors.INVALID_STATE, (
            f"Run {run.pk} is executed by the studio: its script records through the studio's SDK. An MLflow client "
            "can read it here, and logs to the runs it creates."))
    return run


# Creating and updating runs ----------------------------------------------------------------------------------------


def _placeholder_snapshot(workspace, user) -> Snapshot:
    """Runs need a snapshot; an MLflow client sends none, so its runs share an empty one per workspace."""
    found = Snapshot.objects.filter(workspace=workspace, source_name=SNAPSHOT_NAME, file_count=0).first()
    return found or Snapshot.objects.create(workspace=workspace, created_by=user, source_name=SNAPSHOT_NAME)


def _target(workspace) -> ComputeTarget:
    """Runs need a compute target; an MLflow run names the workspace's built-in one (the page says no worker runs
    it)."""
    found = ComputeTarget.objects.filter(workspace=workspace, kind=ComputeTarget.Kind.LOCAL).order_by("pk").first()
    return found or ComputeTarget.objects.create(workspace=workspace, name="local", kind=ComputeTarget.Kind.LOCAL)


def create_run(workspace, user, *, experiment_id, user_id, run_name, start_time, tags) -> Run:
    experiment = experiment_for_run(workspace, user, experiment_id)
    name = (run_name or "").strip() or next((tag.value for tag in tags if tag.key == "mlflow.runName"), "")
    problem = bidi_problem(name, "The run name")
    if problem:
        raise errors.invalid(problem)
    started = from_ms(start_time) if start_time is not None else timezone.now()
    system, user_tags = _split_tags({tag.key: tag.value for tag in tags})
    if name:
        system["mlflow.runName"] = name
    _check_user_tags({}, user_tags)
    _check_system_tags({}, system)
    with transaction.atomic():
        run = Run.objects.create(
            workspace=workspace, experiment=experiment, display_name=name[:255], created_by=user,
            snapshot=_placeholder_snapshot(workspace, user), entry_script=system.get("mlflow.source.name", "")[:1024],
            compute_target=_target(workspace), tags=user_tags, status=RunStatus.RUNNING, started_at=started,
            tracked_by=TrackedBy.MLFLOW, parent=_parent(workspace, system.get("mlflow.parentRunId")),
        )
        RunStatusChange.objects.create(run=run, status=RunStatus.RUNNING, at=timezone.now())
        run.mlflow = MlflowRun.objects.create(run=run, user_id=(user_id or system.get("mlflow.user", ""))[:255],
                                              system_tags=system)
        _git_from_tags(run, system)
        live.publish_child(run.parent_id, run.pk)  # a nested run: its parent's Children tab
    return run


def update_run(run: Run, *, status: str | None, end_time: int | None, run_name: str | None) -> Run:
    """The client's status, end time and name. MLflow lets a client resume a finished run (`start_run(run_id=...)`),
    so any status may follow any other here: the client is the authority on a run only it executes."""
    if run_name is not None and run_name.strip():
        rename(run, run_name.strip())
    if status is not None:
        to = STATUS_TO_STUDIO[status]
        if to != run.status:
            others = [state for state in RunStatus.values if state != to]
            fields = {"reason": REASONS.get(to, "")}
            if to not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED):
                fields["ended_at"] = None
            run.transition(to, from_states=others, **fields)
    if end_time is not None or (status is not None and run.is_final):
        ended = from_ms(end_time) if end_time is not None else run.ended_at or timezone.now()
        if run.started_at is not None and ended < run.started_at:
            ended = run.started_at
        Run.objects.filter(pk=run.pk).update(ended_at=ended)
        run.ended_at = ended
    return run


def rename(run: Run, name: str) -> None:
    problem = bidi_problem(name, "The run name")
    if problem:
        raise errors.invalid(problem)
    with transaction.atomic():
        mlflow = MlflowRun.objects.select_for_update().get(pk=run.pk)
        mlflow.system_tags["mlflow.runName"] = name
        mlflow.save(update_fields=["system_tags"])
        Run.objects.filter(pk=run.pk).update(display_name=name[:255])
    run.display_name, run.mlflow = name[:255], mlflow


def _parent(workspace, ref: str | None) -> Run | None:
    if not ref:
        return None
    try:
        return resolve_run(workspace, ref)
    except MlflowError:
        raise errors.invalid(f"The parent run {ref[:64]!r} (tag mlflow.parentRunId) is not in this workspace.") from None


def _git_from_tags(run: Run, system: dict) -> None:
    """MLflow's git tags as the run's git information (the run page's Source section)."""
    found = {"commit": system.get("mlflow.source.git.commit", ""), "branch": system.get("mlflow.source.git.branch", ""),
             "remote_url": system.get("mlflow.source.git.repoURL", "")}
    if not any(found.values()):
        return
    try:
        info = gitinfo.check(found)
    except gitinfo.GitInfoError as error:
        raise errors.invalid(f"The run's git tags: {error}") from None
    RunGitInfo.objects.update_or_create(run=run, defaults={key: info[key] for key in gitinfo.FIELDS})


# Tags ----------------------------------------------------------------------------------------------------------------


def _split_tags(tags: dict[str, str]) -> tuple[dict, dict]:
    system = {key: value for key, value in tags.items() if key.startswith(SYSTEM_PREFIX)}
    return system, {key: value for key, value in tags.items() if not key.startswith(SYSTEM_PREFIX)}


def _check_user_tags(current: dict, new: dict) -> None:
    for key, value in new.items():
        problem = bidi_problem(key, "The tag key") or tag_problem(key, value)
        if problem:
            raise errors.invalid(f"Tag {key[:128]!r}: {problem} (the studio's rule for a run's tags).")
    if len(set(current) | set(new)) > MAX_TAGS:
        raise errors.invalid(f"A run holds at most {MAX_TAGS} tags (besides MLflow's own mlflow.* tags).")


def _check_system_tags(current: dict, new: dict) -> None:
    for key, value in new.items():
        problem = bidi_problem(key, "The tag key") or bidi_problem(value, f"The value of tag {key[:100]!r}")
        if problem:
            raise errors.invalid(problem)
        if "\x00" in key or "\x00" in value:
            raise errors.invalid(f"Tag {key[:100]!r}: NUL characters cannot be stored.")
    if len(set(current) | set(new)) > MAX_SYSTEM_TAGS:
        raise errors.invalid(f"A run holds at most {MAX_SYSTEM_TAGS} of MLflow's own mlflow.* tags.")


def set_tags(run: Run, tags: dict[str, str]) -> None:
    system, user_tags = _split_tags(tags)
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        mlflow = MlflowRun.objects.get(pk=run.pk)
        _check_user_tags(locked.tags, user_tags)
        _check_system_tags(mlflow.system_tags, system)
        if user_tags:
            locked.tags.update(user_tags)
            Run.objects.filter(pk=run.pk).update(tags=locked.tags)
            run.tags = locked.tags
            live.publish_tags(run)
        if system:
            if "mlflow.runName" in system and system["mlflow.runName"].strip():
                Run.objects.filter(pk=run.pk).update(display_name=system["mlflow.runName"].strip()[:255])
            if "mlflow.source.name" in system:
                Run.objects.filter(pk=run.pk).update(entry_script=system["mlflow.source.name"][:1024])
            mlflow.system_tags.update(system)
            mlflow.save(update_fields=["system_tags"])
            run.mlflow = mlflow
            _git_from_tags(run, mlflow.system_tags)


def delete_tag(run: Run, key: str) -> None:
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        mlflow = MlflowRun.objects.get(pk=run.pk)
        if key in locked.tags:
            locked.tags.pop(key)
            Run.objects.filter(pk=run.pk).update(tags=locked.tags)
            live.publish_tags(locked)
        elif key in mlflow.system_tags:
            mlflow.system_tags.pop(key)
            mlflow.save(update_fields=["system_tags"])
        else:
            raise errors.not_found(f"No tag with name: {key[:250]} in run with id {run_id_of(run)}")


# Parameters ----------------------------------------------------------------------------------------------------------


def log_params(run: Run, params: dict[str, str]) -> None:
    """MLflow's rule: a parameter, once logged, keeps its value (logging the same value again is fine)."""
    if not params:
        return
    for name, value in params.items():
        problem = parameters.name_problem(name) or parameters.value_problem(name, value)
        if problem:
            raise errors.invalid(problem)
    with transaction.atomic():
        known = dict(RunParameter.objects.filter(run_id=run.pk, name__in=list(params)).values_list("name", "text"))
        for name, value in params.items():
            if name in known and known[name] != value:
                raise errors.invalid(
                    f"Changing param values is not allowed. Param with key='{name}' was already logged with "
                    f"value='{known[name][:200]}' for run ID='{run_id_of(run)}'. Attempted logging new value "
                    f"'{value[:200]}'.")
        new = {name: value for name, value in params.items() if name not in known}
        try:
            parameters.store(run, new)
        except parameters.ParameterError as error:
            raise errors.invalid(str(error)) from None


# Metrics -------------------------------------------------------------------------------------------------------------


def log_metrics(run: Run, points: list[dict]) -> int:
    """Append metric points ({key, value, timestamp in ms, step, model_id}), in the order given: one append per
    metric name. Points sent again with a model's id (MLflow 3 links a run's metrics to the model it logs by sending
    them once more) are recorded with the model, not stored twice."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for point in points:
        by_key[point["key"]].append(point)
    stored, names = 0, []
    # One metric name is one append, atomic by itself; several (or points of a model) are all stored or none.
    together = len(by_key) > 1 or any(point.get("model_id") for point in points)
    with transaction.atomic() if together else contextlib.nullcontext():
        for key, items in by_key.items():
            try:
                metrics.check_name(key)
            except metrics.MetricError as error:
                raise errors.invalid(str(error)) from None
            model_points = [item for item in items if item.get("model_id")]
            if model_points:
                _record_model_metrics(run, model_points)
                items = _not_stored_yet(run, key, items)
            if not items:
                continue
            steps = np.fromiter((item.get("step", 0) for item in items), dtype=np.float64, count=len(items))
            values = np.fromiter((float(item["value"]) for item in items), dtype=np.float64, count=len(items))
            times = np.fromiter((item["timestamp"] for item in items), dtype=np.float64, count=len(items)) / 1000.0
            try:
                stored += metrics.append_scalars(run, key, steps, values, times)
            except metrics.MetricError as error:
                raise errors.invalid(str(error)) from None
            names.append(key)
        if names:
            live.publish_metrics(run, names)  # the run's page draws them as they come, as for the studio's runs
    return stored


def _record_model_metrics(run: Run, points: list[dict]) -> None:
    by_model: dict[str, list[dict]] = defaultdict(list)
    for point in points:
        by_model[point["model_id"]].append(point)
    for model_id, items in by_model.items():
        model = LoggedModel.objects.select_for_update().filter(model_id=model_id, workspace_id=run.workspace_id).first()
        if model is None:
            raise errors.not_found(f"No logged model with id={model_id[:40]} in this workspace.")
        model.metrics = (model.metrics + [
            {"key": item["key"], "value": json_double(float(item["value"])), "timestamp": item["timestamp"],
             "step": item.get("step", 0), "run_id": run_id_of(run)} for item in items])[-MODEL_METRICS_KEPT:]
        model.save(update_fields=["metrics", "updated_at"])


def _not_stored_yet(run: Run, key: str, items: list[dict]) -> list[dict]:
    """Of `items`, those carrying a model id whose very point (step, value, time) the series does not hold yet."""
    series = MetricSeries.objects.filter(run=run, name=key, kind=MetricKind.SCALAR).first()
    if series is None:
        return items
    stored = metrics.Points.concat([metrics.Points.decode(blob) for blob in
                                    MetricChunk.objects.filter(series=series).order_by("seq").values_list("data", flat=True)])
    known = set(zip(stored.steps.tolist(), np.round(stored.times * 1000).tolist(), stored.values.tolist(), strict=True))
    return [item for item in items if not item.get("model_id") or (
        float(item.get("step", 0)), float(item["timestamp"]), float(item["value"])) not in known]


def metric_history(run: Run, key: str, *, offset: int, limit: int) -> tuple[list[dict], int | None]:
    """Points `offset` to `offset + limit` of the series, as MLflow's Metric objects, and the next offset (or None).
    Only the chunks holding them are read."""
    series = MetricSeries.objects.filter(run=run, name=key, kind=MetricKind.SCALAR).first()
    if series is None:
        return [], None
    parts, start = [], 0
    wanted_end = offset + limit
    for seq, count in MetricChunk.objects.filter(series=series).order_by("seq").values_list("seq", "count"):
        end = start + count
        if end > offset and start < wanted_end:
            blob = MetricChunk.objects.filter(series=series, seq=seq).values_list("data", flat=True).get()
            points = metrics.Points.decode(blob)
            parts.append(points.take(slice(max(0, offset - start), min(count, wanted_end - start))))
        start = end
        if start >= wanted_end:
            break
    points = metrics.Points.concat(parts)
    steps, values = points.steps.tolist(), points.values.tolist()
    stamps = np.round(points.times * 1000).astype(np.int64).tolist()
    history = [{"key": key, "value": value if math.isfinite(value) else json_double(value), "timestamp": stamp,
                "step": int(step)} for step, value, stamp in zip(steps, values, stamps, strict=True)]
    following = offset + len(history)
    return history, following if following < series.count else None


# What a run looks like to MLflow -------------------------------------------------------------------------------------


def runs_json(runs: list[Run]) -> list[dict]:
    """Runs as MLflow's Run objects, read in a few queries whatever their number."""
    ids = [run.pk for run in runs]
    latest: dict[int, list] = defaultdict(list)
    for series in MetricSeries.objects.filter(run_id__in=ids, kind=MetricKind.SCALAR).order_by("run_id", "name"):
        value = series.last_value if series.last_value is not None else (series.last_nonfinite or None)
        if value is None:
            continue
        latest[series.run_id].append({"key": series.name, "value": value, "timestamp": ms(series.updated_at),
                                      "step": int(series.last_step or 0)})
    params: dict[int, list] = defaultdict(list)
    for run_id, name, text in RunParameter.objects.filter(run_id__in=ids).order_by("run_id", "name").values_list(
            "run_id", "name", "text"):
        params[run_id].append({"key": name, "value": text})
    systems = {row.pk: row for row in MlflowRun.objects.filter(run_id__in=ids)}
    models_by_run: dict[int, list] = defaultdict(list)
    for run_id, model_id in LoggedModel.objects.filter(run_id__in=ids).order_by("id").values_list("run_id", "model_id"):
        models_by_run[run_id].append(model_id)
    items = []
    for run in runs:
        mlflow = systems.get(run.pk)
        if mlflow is not None:
            run.mlflow = mlflow
        items.append(run_json(run, latest[run.pk], params[run.pk], mlflow, models_by_run[run.pk]))
    return items


def run_json(run: Run, latest=None, params=None, mlflow=None, model_ids=None) -> dict:
    if latest is None:
        return runs_json([run])[0]
    status = STUDIO_TO_STATUS.get(run.status, "RUNNING")
    tags = dict(mlflow.system_tags) if mlflow is not None else {}
    tags.update({key: "" if value is None else str(value) for key, value in (run.tags or {}).items()})
    tags.setdefault("mlflow.runName", run.display_name or f"run-{run.pk}")
    tags["studio.run_id"] = str(run.pk)
    outputs = list(mlflow.model_outputs) if mlflow is not None else []
    linked = {item["model_id"] for item in outputs}
    outputs += [{"model_id": model_id, "step": 0} for model_id in model_ids or [] if model_id not in linked]
    info = {
        "run_id": run_id_of(run), "run_uuid": run_id_of(run), "experiment_id": str(run.experiment_id),
        "run_name": run.display_name or f"run-{run.pk}",
        "user_id": (mlflow.user_id if mlflow is not None else "") or (run.created_by.username if run.created_by else ""),
        "status": status, "start_time": ms(run.started_at or run.created_at), "artifact_uri": artifact_root(run),
        "lifecycle_stage": "active",
    }
    if run.ended_at is not None and status != "RUNNING":
        info["end_time"] = ms(run.ended_at)
    return {
        "info": info,
        "data": {"metrics": latest, "params": params or [],
                 "tags": [{"key": key, "value": value} for key, value in tags.items()]},
        "inputs": _inputs_json(mlflow),
        "outputs": {"model_outputs": outputs} if outputs else {},
    }


def _inputs_json(mlflow) -> dict:
    inputs = {}
    if mlflow is not None and mlflow.dataset_inputs:
        inputs["dataset_inputs"] = mlflow.dataset_inputs
    if mlflow is not None and mlflow.model_inputs:
        inputs["model_inputs"] = mlflow.model_inputs
    return inputs


MAX_INPUTS = 1_000  # dataset inputs (and model inputs) a run keeps


def log_inputs(run: Run, datasets, models) -> None:
    """`log_inputs`: the datasets a run read (the same one with the same tags is kept once) and the logged models it
    used. A run holds at most MAX_INPUTS of each: more is refused, never dropped."""
    with transaction.atomic():
        mlflow = MlflowRun.objects.select_for_update().get(pk=run.pk)
        for item in datasets:
            dataset = item.dataset.model_dump(by_alias=True, exclude_none=True)
            tags = [{"key": tag.key, "value": tag.value} for tag in item.tags]
            shown = [(dataset[field], f"The dataset's {field}") for field in ("name", "digest", "source_type")]
            shown += [(text, "An input tag") for tag in tags for text in (tag["key"], tag["value"])]
            problem = next((found for text, what in shown if (found := bidi_problem(text, what))), "")
            if problem:  # what the run page shows
                raise errors.invalid(problem)
            entry = {"dataset": dataset, "tags": tags}
            if entry not in mlflow.dataset_inputs:
                mlflow.dataset_inputs.append(entry)
        for item in models:
            if not LoggedModel.objects.filter(model_id=item.model_id, workspace_id=run.workspace_id).exists():
                raise errors.not_found(f"No logged model with id={item.model_id[:40]} in this workspace.")
            entry = {"model_id": item.model_id}
            if entry not in mlflow.model_inputs:
                mlflow.model_inputs.append(entry)
        if len(mlflow.dataset_inputs) > MAX_INPUTS or len(mlflow.model_inputs) > MAX_INPUTS:
            raise errors.invalid(f"A run holds at most {MAX_INPUTS:,} dataset inputs and {MAX_INPUTS:,} model inputs.")
        mlflow.save(update_fields=["dataset_inputs", "model_inputs"])


def link_outputs(run: Run, outputs) -> None:
    """`log_outputs`: the logged models the run produced."""
    with transaction.atomic():
        mlflow = MlflowRun.objects.select_for_update().get(pk=run.pk)
        for item in outputs:
            if not LoggedModel.objects.filter(model_id=item.model_id, workspace_id=run.workspace_id).exists():
                raise errors.not_found(f"No logged model with id={item.model_id[:40]} in this workspace.")
            entry = {"model_id": item.model_id, "step": item.step}
            if entry not in mlflow.model_outputs:
                mlflow.model_outputs.append(entry)
        mlflow.model_outputs = mlflow.model_outputs[-1000:]
        mlflow.save(update_fields=["model_outputs"])
