"""MLflow's artifact routes (`/api/2.0/mlflow-artifacts/artifacts/<path>`) over the studio's storage.

An artifact URI the studio hands out names one of three roots:

- `<experiment id>/<run id>/artifacts/<path>`: the run's outputs (`outputs/<path>` in its storage, listed on the run
  page and registrable as a model; uploads are hashed and indexed as the SDK's uploads are, so registering them
  copies no byte). A model MLflow 3 logs in a run is a folder there (see logged_models.py).
- `<experiment id>/models/<model id>/artifacts/<path>`: a model logged outside any run, in a folder of its own.
- `registry/<model name>/<version>/<path>`: a registered version's files (read-only), whatever made it: what
  `get-download-uri` answers, so `mlflow.pyfunc.load_model("models:/name/1")` reads the registry's own copy.

Paths are checked as the run's outputs are (no `..`, absolute paths, backslashes or direction control characters).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Sum

from mlflow_api import errors, tracking
from mlflow_api.errors import MlflowError
from mlflow_api.models import LoggedModel
from models_registry import registry
from models_registry.models import ModelFile, ModelVersion
from runs import storage
from runs.models import Run, RunOutput, TrackedBy
from runs.snapshots import SnapshotError, clean_path
from studio import blobs

REGISTRY = "registry"
TEMPORARY = (".partial", ".collecting", ".link")
CHUNK = 1024 * 1024


@dataclass
class Location:
    """Where an artifact path points: a run's outputs, a run-less logged model's folder, or a registered version."""

    relative: str  # inside the root; "" is the root itself
    run: Run | None = None
    model: LoggedModel | None = None
    version: ModelVersion | None = None

    @property
    def root(self) -> Path | None:
        if self.run is not None:
            return storage.run_dir(self.run.pk) / "outputs"
        if self.model is not None:
            return model_folder(self.model)
        return None


def model_folder(model: LoggedModel) -> Path:
    return Path(settings.DATA_DIR) / "mlflow" / "logged-models" / model.model_id


def _clean(parts: list[str]) -> str:
    text = "/".join(part for part in parts if part)
    if not text:
        return ""
    try:
        return clean_path(text)
    except SnapshotError as error:
        raise errors.invalid(str(error).replace("archive member", "artifact path")) from None


def locate(workspace, path: str) -> Location:
    parts = [part for part in (path or "").strip("/").split("/")]
    if len(parts) >= 3 and parts[0] == REGISTRY:
        try:
            version = registry.resolve(workspace, f"{parts[1]}:{parts[2]}")
        except registry.RegistryError as error:
            raise errors.not_found(str(error)) from None
        return Location(_clean(parts[3:]), version=version)
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        model = LoggedModel.objects.filter(workspace=workspace, model_id=parts[2], run__isnull=True).first()
        if model is None:
            raise errors.not_found(f"No logged model {parts[2][:40]!r} in this workspace stores files here.")
        return Location(_clean(parts[4:]), model=model)
    if len(parts) >= 3 and parts[2] == "artifacts":
        run = tracking.resolve_run(workspace, parts[1])
        return Location(_clean(parts[3:]), run=run)
    raise errors.invalid(f"No artifacts at {path[:200]!r}: artifacts are listed inside a run's artifact_uri, a "
                         "logged model's artifact_location or a model version's download URI.")


# Listing -------------------------------------------------------------------------------------------------------------


def listing(location: Location) -> list[dict]:
    """The entries directly under the location (names relative to it), as MLflow lists them: an empty list for a
    file or a folder that does not exist."""
    if location.version is not None:
        return _registry_listing(location.version, location.relative)
    root = location.root
    folder = (root / location.relative) if location.relative else root
    if folder.is_symlink() or not folder.is_dir():
        return []
    entries = []
    with os.scandir(folder) as found:
        for entry in sorted(found, key=lambda item: item.name):
            if entry.is_symlink() or entry.name.endswith(TEMPORARY) and entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                entries.append({"path": entry.name, "is_dir": True})
            elif entry.is_file(follow_symlinks=False):
                entries.append({"path": entry.name, "is_dir": False, "file_size": entry.stat().st_size})
    return entries


def _registry_listing(version: ModelVersion, relative: str) -> list[dict]:
    prefix = f"{relative}/" if relative else ""
    files, folders = {}, set()
    for path, size in ModelFile.objects.filter(version=version).values_list("path", "size"):
        if not path.startswith(prefix):
            continue
        head, slash, _ = path[len(prefix):].partition("/")
        if slash:
            folders.add(head)
        else:
            files[head] = size
    entries = [{"path": name, "is_dir": True} for name in sorted(folders)]
    entries += [{"path": name, "is_dir": False, "file_size": size} for name, size in sorted(files.items())]
    return sorted(entries, key=lambda item: item["path"])


# Downloading ---------------------------------------------------------------------------------------------------------


def open_file(location: Location):
    """(open binary handle, file name) of the file at the location, or RESOURCE_DOES_NOT_EXIST."""
    missing = errors.not_found(f"No artifact at {location.relative[:200]!r}.")
    if not location.relative:
        raise missing
    if location.version is not None:
        row = ModelFile.objects.filter(version=location.version, path=location.relative).first()
        if row is None or not blobs.exists(row.sha256):
            raise missing
        return blobs.open_blob(row.sha256), Path(row.path).name
    if location.run is not None:
        found = storage.resolve_stored_file(location.run.pk, f"outputs/{location.relative}")
    else:
        root = location.root.resolve()
        found = (root / location.relative).resolve()
        found = found if found.is_relative_to(root) and found.is_file() else None
    if found is None:
        raise missing
    return open(found, "rb"), found.name


# Uploading -----------------------------------------------------------------------------------------------------------


class RequestUpload:
    """A request body read in chunks as it arrives (studio/limits.py streams it), as `storage.store_upload` reads an
    uploaded file."""

    def __init__(self, request):
        self.request = request

    def chunks(self):
        while chunk := self.request.read(CHUNK):
            yield chunk


def store(location: Location, request) -> None:
    if location.version is not None:
        raise MlflowError(errors.PERMISSION_DENIED, "A registered model version's files never change: log a new "
                                                    "model and register it as a new version.")
    try:
        relative = storage.output_path(location.relative)
    except Exception as error:  # ValidationError: a name that could leave the folder
        messages = getattr(error, "messages", [str(error)])
        raise errors.invalid(" ".join(messages)) from None
    declared = _declared_length(request)
    if location.run is not None:
        run = location.run
        if run.tracked_by != TrackedBy.MLFLOW:
            raise MlflowError(errors.INVALID_STATE, f"Run {run.pk} is executed by the studio: its outputs are what its "
                                                    "script leaves in ./outputs.")
        used = RunOutput.objects.filter(run=run).exclude(path=f"outputs/{relative}").aggregate(total=Sum("size"))
        if (used["total"] or 0) + declared > settings.STUDIO_OUTPUTS_MAX_BYTES:
            raise MlflowError(errors.RESOURCE_EXHAUSTED, (
                f"Run {run.pk} would hold more than STUDIO_OUTPUTS_MAX_BYTES "
                f"({settings.STUDIO_OUTPUTS_MAX_BYTES:,} bytes) of artifacts."))
        try:
            storage.store_upload(run.pk, relative, RequestUpload(request))
        except OSError as error:
            raise errors.invalid(f"The artifact {relative!r} could not be stored: {error.strerror or error} "
                                 "(a file and a folder of the same name?).") from None
        return
    _store_in_folder(location.root, relative, request)


def _declared_length(request) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def _store_in_folder(root: Path, relative: str, request) -> None:
    target = (root / relative).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not target.is_relative_to(root.resolve()):
        raise errors.invalid("The artifact path must stay inside the model's folder.")
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            for chunk in RequestUpload(request).chunks():
                handle.write(chunk)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise errors.invalid(f"The artifact {relative!r} could not be stored: {error.strerror or error}.") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
