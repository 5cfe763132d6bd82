"""MLflow's model registry over the studio's (models_registry/registry.py): registered models are the workspace's
models, versions its versions (numbered, files as shared blobs), aliases its aliases. Names and aliases follow the
studio's rules, and a name outside them is refused saying so.

`create-model-version` takes what MLflow 3 sends (`models:/<logged model id>`), a run's artifact folder
(`runs:/<run id>/<path>` or `mlflow-artifacts:/<exp>/<run id>/artifacts/<path>`): a model logged in a run is
registered from the run's outputs without copying a byte; one logged outside a run from its folder, into the blob
store. Every version, whatever registered it, is downloadable through the artifact routes
(`mlflow-artifacts:/registry/<name>/<version>`), which is what `get-download-uri` answers.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction

from mlflow_api import artifacts, errors, logged_models, tracking
from mlflow_api.errors import MlflowError
from mlflow_api.models import LoggedModel, VersionSource
from models_registry import registry
from models_registry.models import ModelAlias, ModelVersion, RegisteredModel, Source
from studio import blobs

STATUS_BY_HTTP = {404: errors.RESOURCE_DOES_NOT_EXIST, 409: errors.INVALID_STATE}


def registry_error(error: registry.RegistryError) -> MlflowError:
    return MlflowError(STATUS_BY_HTTP.get(error.status, errors.INVALID_PARAMETER_VALUE), str(error))


def get_model(workspace, name: str) -> RegisteredModel:
    found = RegisteredModel.objects.filter(workspace=workspace, name=name).first()
    if found is None:
        raise errors.not_found(f"Registered Model with name={name[:255]} not found")
    return found


def get_version(workspace, name: str, version: str) -> ModelVersion:
    if not version.isdigit():
        raise errors.invalid(f"Invalid model version {version[:20]!r}: a version is a number.")
    try:
        return registry.resolve(workspace, f"{name}:{version}")
    except registry.RegistryError as error:
        raise registry_error(error) from None


def download_uri(version: ModelVersion) -> str:
    return f"mlflow-artifacts:/{artifacts.REGISTRY}/{version.model.name}/{version.version}"


# What MLflow sees --------------------------------------------------------------------------------------------------


def version_json(version: ModelVersion) -> dict:
    source = VersionSource.objects.filter(version=version).select_related("logged_model").first()
    aliases = list(ModelAlias.objects.filter(version=version).order_by("name").values_list("name", flat=True))
    created = tracking.ms(version.created_at)
    data = {
        "name": version.model.name, "version": str(version.version), "creation_timestamp": created,
        "last_updated_timestamp": created, "current_stage": "None", "description": version.description,
        "source": source.source if source is not None else download_uri(version),
        "run_id": tracking.run_id_of(version.run) if version.run_id else "", "status": "READY",
        "status_message": "", "run_link": "", "aliases": aliases,
        "tags": [{"key": key, "value": value} for key, value in sorted(version.tags.items())],
        "user_id": version.created_by.username if version.created_by else "",
    }
    if source is not None and source.logged_model is not None:
        data["model_id"] = source.logged_model.model_id
    return data


def model_json(model: RegisteredModel) -> dict:
    newest = model.versions.select_related("model", "run__mlflow", "created_by").order_by("-version").first()
    aliases = ModelAlias.objects.filter(model=model).select_related("version").order_by("name")
    return {
        "name": model.name, "creation_timestamp": tracking.ms(model.created_at),
        "last_updated_timestamp": tracking.ms(model.last_registered_at or model.created_at),
        "description": model.description, "latest_versions": [version_json(newest)] if newest else [],
        "tags": [], "aliases": [{"alias": alias.name, "version": str(alias.version.version)} for alias in aliases],
    }


# Changing ------------------------------------------------------------------------------------------------------------


def create_model(workspace, user, name: str, description: str | None) -> RegisteredModel:
    try:
        name = registry.check_model_name(name)
        description = registry.check_description(description)
    except registry.RegistryError as error:
        raise registry_error(error) from None
    try:
        with transaction.atomic():
            return RegisteredModel.objects.create(workspace=workspace, name=name, description=description,
                                                  created_by=user)
    except IntegrityError:
        raise MlflowError(errors.RESOURCE_ALREADY_EXISTS, f"Registered Model (name={name}) already exists.") from None


def describe(target, description: str | None):
    try:
        target.description = registry.check_description(description)
    except registry.RegistryError as error:
        raise registry_error(error) from None
    target.save(update_fields=["description"])
    return target


def create_version(workspace, user, payload) -> ModelVersion:
    model = get_model(workspace, payload.name)
    fields = {"tags": {tag.key: tag.value for tag in payload.tags}, "description": payload.description or ""}
    logged = _logged_model(workspace, payload)
    try:
        if logged is not None:
            version = _register_logged(workspace, user, model.name, logged, fields)
        else:
            run, relative = _run_folder(workspace, payload.source)
            version = _register_run_folder(run, user, model.name, relative, fields)
    except registry.RegistryError as error:
        raise registry_error(error) from None
    VersionSource.objects.create(version=version, source=payload.source[:1024], logged_model=logged)
    return version


def _logged_model(workspace, payload) -> LoggedModel | None:
    model_id = payload.model_id
    if not model_id and payload.source.startswith("models:/m-"):
        model_id = payload.source.removeprefix("models:/").split("/", 1)[0]
    return logged_models.get(workspace, model_id) if model_id else None


def _register_logged(workspace, user, name: str, logged: LoggedModel, fields: dict) -> ModelVersion:
    run, where = logged_models.registrable_files(logged)
    if run is not None:
        return _register_run_folder(run, user, name, where, fields)
    with blobs.gc_lock(exclusive=False):
        files = []
        for path in sorted(where.rglob("*")) if where.is_dir() else []:
            if path.is_symlink() or not path.is_file() or path.name.endswith(artifacts.TEMPORARY):
                continue
            sha256 = blobs.hash_file(path)
            blobs.link(path, sha256)
            files.append({"path": path.relative_to(where).as_posix(), "sha256": sha256, "size": os.path.getsize(path)})
        return registry.register(workspace, user, name, files, source=Source.UPLOADED, **fields)


def _register_run_folder(run, user, name: str, relative: str, fields: dict) -> ModelVersion:
    """A version made of the run's outputs under `relative` (a folder or a file), named as MLflow names a model's
    files: relative to that folder (`MLmodel` at the top), their blobs linked to the outputs (no byte copied)."""
    with blobs.gc_lock(exclusive=False):
        files = registry.run_output_files(run, [f"outputs/{relative}" if relative else "outputs"])
        prefix = f"{relative}/" if relative else ""
        files = [{**entry, "path": entry["path"].removeprefix(prefix)} for entry in files]
        return registry.register(run.workspace, user, name, files, source=Source.RUN, run=run, **fields)


def _run_folder(workspace, source: str):
    """(run, path under its outputs) of `runs:/<run id>/<path>` or an `mlflow-artifacts:` URI of a run's artifacts."""
    if source.startswith("runs:/"):
        run_ref, _, relative = source.removeprefix("runs:/").strip("/").partition("/")
        location = artifacts.locate(workspace, f"0/{run_ref}/artifacts/{relative}")
    elif source.startswith("mlflow-artifacts:"):
        location = artifacts.locate(workspace, urlsplit(source).path)
    else:
        raise errors.invalid(
            f"Cannot register {source[:200]!r}: the studio registers a logged model (models:/<model id>), or a "
            "folder of a run's artifacts (runs:/<run id>/<path>, or the mlflow-artifacts: URI of one).")
    if location.run is None:
        raise errors.invalid(f"Cannot register {source[:200]!r}: it is not a folder of a run's artifacts.")
    return location.run, location.relative


def set_alias(workspace, user, name: str, alias: str, version: str) -> None:
    found = get_version(workspace, name, version)
    try:
        registry.set_alias(found, alias, user)
    except registry.RegistryError as error:
        raise registry_error(error) from None


def delete_alias(workspace, user, name: str, alias: str) -> None:
    model = get_model(workspace, name)
    try:
        registry.remove_alias(model, alias, user)
    except registry.RegistryError as error:
        raise registry_error(error) from None


def by_alias(workspace, name: str, alias: str) -> ModelVersion:
    try:
        return registry.resolve(workspace, f"{name}@{alias}")
    except registry.RegistryError as error:
        raise registry_error(error) from None


def latest_versions(workspace, name: str, stages: list[str]) -> list[ModelVersion]:
    """The newest version (stage "None" or none given); other stages are read as aliases (`Production` is the alias
    `production`), which is what the studio has instead of stages."""
    model = get_model(workspace, name)
    found = []
    for stage in stages or ["None"]:
        if stage.lower() in ("none", ""):
            newest = model.versions.order_by("-version").first()
        else:
            alias = ModelAlias.objects.filter(model=model, name=stage.lower()).select_related("version").first()
            newest = alias.version if alias else None
        if newest is not None and newest not in found:
            found.append(newest)
    return found


def set_version_tag(version: ModelVersion, key: str, value: str) -> None:
    try:
        registry.set_tags(version, {**version.tags, key: value})
    except registry.RegistryError as error:
        raise registry_error(error) from None


def delete_version_tag(version: ModelVersion, key: str) -> None:
    if key not in version.tags:
        raise errors.not_found(f"No tag {key[:250]!r} on {version.model.name} version {version.version}.")
    tags = dict(version.tags)
    tags.pop(key)
    registry.set_tags(version, tags)
