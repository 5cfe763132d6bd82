"""MLflow 3's logged models (`mlflow.<flavor>.log_model` creates one, uploads its files to its artifact location,
then marks it ready).

A model logged in a run keeps its files in a folder of the run's outputs, `outputs/<name>/` (`outputs/<name>-<id>/`
when the run already has a folder of that name), so the run page lists them and the registry registers them from
the run without copying a byte. A model logged outside a run has a folder of its own (artifacts.model_folder).
"""

from __future__ import annotations

from django.db import transaction

from mlflow_api import errors, tracking
from mlflow_api.artifacts import model_folder
from mlflow_api.models import LoggedModel, LoggedModelStatus
from runs import storage
from runs.models import RunOutput
from studio.text import bidi_problem

DEFAULT_NAME = "model"
MAX_PARAMS = 500


def _folder_for(run, name: str, model_id: str) -> str:
    """The folder of the run's outputs the model's files go to: its name, or its name and id when that is taken."""
    try:
        folder = storage.output_path(name)
    except Exception as error:  # ValidationError: a name that could leave outputs/
        raise errors.invalid(f"Invalid model name {name[:100]!r}: " + " ".join(getattr(error, "messages", []))) from None
    if "/" in folder:
        raise errors.invalid(f"Invalid model name {name[:100]!r}: a model's name is one folder name, without '/'.")
    taken = set(LoggedModel.objects.filter(run=run).values_list("folder", flat=True))
    if folder in taken or (storage.run_dir(run.pk) / "outputs" / folder).exists() or RunOutput.objects.filter(
            run=run, path__startswith=f"outputs/{folder}/").exists():
        return f"{folder}-{model_id[2:10]}"
    return folder


def create(workspace, user, payload) -> LoggedModel:
    experiment = tracking.find_experiment(workspace, payload.experiment_id)
    name = (payload.name or DEFAULT_NAME).strip() or DEFAULT_NAME
    problem = bidi_problem(name, "The model name")
    if problem:
        raise errors.invalid(problem)
    run = tracking.writable_run(workspace, payload.source_run_id) if payload.source_run_id else None
    if run is not None and run.experiment_id != experiment.pk:
        raise errors.invalid(f"Run {payload.source_run_id} is in another experiment than {payload.experiment_id}.")
    params = _params({}, payload.params)
    tags = _tags({}, payload.tags)
    with transaction.atomic():
        model = LoggedModel(workspace=workspace, experiment=experiment, run=run, name=name,
                            model_type=(payload.model_type or "")[:255], params=params, tags=tags, created_by=user)
        if run is not None:
            model.folder = _folder_for(run, name, model.model_id)
        model.save()
    return model


def _params(current: dict, items) -> dict:
    merged = dict(current)
    for item in items:
        problem = bidi_problem(item.key, "The parameter name") or bidi_problem(item.value, "The parameter value")
        if problem:
            raise errors.invalid(problem)
        merged[item.key] = item.value
    if len(merged) > MAX_PARAMS:
        raise errors.invalid(f"A logged model holds at most {MAX_PARAMS} parameters.")
    return merged


def _tags(current: dict, items) -> dict:
    merged = dict(current)
    for item in items:
        problem = bidi_problem(item.key, "The tag key") or bidi_problem(item.value, f"The value of tag {item.key!r}")
        if problem:
            raise errors.invalid(problem)
        merged[item.key] = item.value
    if len(merged) > tracking.MAX_SYSTEM_TAGS:
        raise errors.invalid(f"A logged model holds at most {tracking.MAX_SYSTEM_TAGS} tags.")
    return merged


def get(workspace, model_id: str) -> LoggedModel:
    found = LoggedModel.objects.select_related("run__mlflow", "experiment").filter(
        workspace=workspace, model_id=model_id).first()
    if found is None:
        raise errors.not_found(f"Logged model with ID '{model_id[:40]}' not found.")
    return found


def artifact_location(model: LoggedModel) -> str:
    if model.run is not None:
        return f"{tracking.artifact_root(model.run)}/{model.folder}"
    return f"mlflow-artifacts:/{model.experiment_id}/models/{model.model_id}/artifacts"


def model_json(model: LoggedModel) -> dict:
    info = {
        "model_id": model.model_id, "experiment_id": str(model.experiment_id), "name": model.name,
        "creation_timestamp_ms": tracking.ms(model.created_at), "last_updated_timestamp_ms": tracking.ms(model.updated_at),
        "artifact_uri": artifact_location(model), "status": model.status, "model_type": model.model_type,
        "tags": [{"key": key, "value": value} for key, value in sorted(model.tags.items())],
    }
    if model.status_message:
        info["status_message"] = model.status_message
    if model.run is not None:
        info["source_run_id"] = tracking.run_id_of(model.run)
    return {"info": info, "data": {
        "params": [{"key": key, "value": value} for key, value in sorted(model.params.items())],
        "metrics": [{**point, "model_id": model.model_id} for point in model.metrics],
    }}


def finalize(model: LoggedModel, status: str) -> LoggedModel:
    model.status = status
    model.status_message = "" if status == LoggedModelStatus.READY else model.status_message
    model.save(update_fields=["status", "status_message", "updated_at"])
    return model


def set_tags(model: LoggedModel, items) -> LoggedModel:
    with transaction.atomic():
        locked = LoggedModel.objects.select_for_update().get(pk=model.pk)
        locked.tags = _tags(locked.tags, items)
        locked.save(update_fields=["tags", "updated_at"])
    model.tags = locked.tags
    return model


def delete_tag(model: LoggedModel, key: str) -> None:
    with transaction.atomic():
        locked = LoggedModel.objects.select_for_update().get(pk=model.pk)
        if key not in locked.tags:
            raise errors.not_found(f"No tag with key {key[:250]!r} on logged model {model.model_id}.")
        locked.tags.pop(key)
        locked.save(update_fields=["tags", "updated_at"])


def log_params(model: LoggedModel, items) -> None:
    with transaction.atomic():
        locked = LoggedModel.objects.select_for_update().get(pk=model.pk)
        locked.params = _params(locked.params, items)
        locked.save(update_fields=["params", "updated_at"])


def registrable_files(model: LoggedModel):
    """(run, its folder under the run's outputs) for a model logged in a run; (None, its own folder) for one logged
    outside any run."""
    if model.run is not None:
        return model.run, model.folder
    return None, model_folder(model)
