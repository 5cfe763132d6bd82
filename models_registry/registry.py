"""What the registry does, for the pages, the REST API and the run's SDK alike: register a version (from a run's
outputs, or from staged uploads), resolve `name`, `name:3`, `name@alias`, `name:latest`, move aliases, edit tags,
archive, and delete a version (only when nothing serves it), freeing the bytes nothing else references.

Version numbers come from one row update (`latest_version + 1`) inside the registering transaction: concurrent
registrations of one model are serialised by that row's lock, so two at once get consecutive numbers, never the same.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, ProtectedError, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from models_registry import frameworks
from models_registry.models import (
    ALIAS_VALIDATOR,
    RESERVED_ALIASES,
    AliasChange,
    ModelAlias,
    ModelFile,
    ModelVersion,
    RegisteredModel,
    Source,
)
from runs import storage
from runs.models import MetricKind, Run, RunOutput, Snapshot
from runs.snapshots import SnapshotError, clean_path
from studio import blobs
from studio.models import NAME_VALIDATOR
from studio.parsing import MAX_TAGS, tag_problem
from studio.text import bidi_problem

MAX_DESCRIPTION = 10_000
MAX_PROPERTIES = 100
LINEAGE_METRICS = 50


class RegistryError(ValueError):
    """A request the registry refuses; the message says why and what to do."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


# Checking what users give ----------------------------------------------------------------------------------------


def check_model_name(name: str) -> str:
    name = (name or "").strip()
    try:
        NAME_VALIDATOR(name)
    except ValidationError:
        raise RegistryError(f"{name[:80]!r} cannot be a model name: use 1-255 letters, digits, '-', '_' or '.', "
                            "starting with a letter or digit.") from None
    return name


def check_tags(tags, what: str = "tag") -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise RegistryError(f"Give {what}s as an object of names to text values.")
    limit, plural = (MAX_TAGS, "tags") if what == "tag" else (MAX_PROPERTIES, "properties")
    if len(tags) > limit:
        raise RegistryError(f"At most {limit} {plural}.")
    clean = {}
    for key, value in tags.items():
        value = "" if value is None else str(value)
        problem = tag_problem(str(key), value)
        if problem:
            raise RegistryError(f"The {what} {str(key)[:64]!r}: {problem}")
        clean[str(key)] = value
    return clean


def check_description(text: str | None) -> str:
    text = (text or "").strip()
    if len(text) > MAX_DESCRIPTION:
        raise RegistryError(f"The description is at most {MAX_DESCRIPTION:,} characters.")
    problem = bidi_problem(text, "The description")
    if problem:
        raise RegistryError(problem)
    return text


# Registering ---------------------------------------------------------------------------------------------------


def register(workspace, user, name: str, files: list[dict], *, source: str, run: Run | None = None,
             description: str = "", tags=None, properties=None, framework: str = "",
             framework_version: str = "") -> ModelVersion:
    """A new version of the model `name` (made when new) holding `files` ({"path", "sha256", "size"}, their blobs
    already stored). Hold `blobs.gc_lock(exclusive=False)` from storing the blobs to this call's return."""
    name = check_model_name(name)
    description = check_description(description)
    tags, properties = check_tags(tags), check_tags(properties, "property")
    framework, framework_version = (framework or "").strip()[:64], (framework_version or "").strip()[:64]
    for value, what in ((framework, "framework"), (framework_version, "framework version")):
        if bidi_problem(value):
            raise RegistryError(bidi_problem(value, f"The {what}"))
    if not files:
        raise RegistryError("A model version needs at least one file.")
    sizes = {entry["path"]: entry["size"] for entry in files}
    found, found_version, details = frameworks.detect(sizes, lambda path: blobs.open_blob(_sha_of(files, path)))
    if not framework:
        framework, framework_version = found, framework_version or found_version
    lineage = run_lineage(run) if run is not None else {}
    for _attempt in range(3):
        try:
            with transaction.atomic():
                model = _model_for_registering(workspace, user, name)
                now = timezone.now()
                RegisteredModel.objects.filter(pk=model.pk).update(latest_version=F("latest_version") + 1,
                                                                   last_registered_at=now)
                number = RegisteredModel.objects.values_list("latest_version", flat=True).get(pk=model.pk)
                version = ModelVersion.objects.create(
                    model=model, version=number, description=description, tags=tags, properties=properties,
                    framework=framework or "custom", framework_version=framework_version, details=details,
                    size_bytes=sum(entry["size"] for entry in files), file_count=len(files), source=source, run=run,
                    lineage=lineage, created_by=_user(user),
                )
                ModelFile.objects.bulk_create(
                    [ModelFile(version=version, path=entry["path"], size=entry["size"], sha256=entry["sha256"])
                     for entry in files], batch_size=1000)
            return version
        except IntegrityError:  # the model was created by a concurrent registration: register into it
            continue
    raise RegistryError("The model could not be registered (too many concurrent registrations): try again.",
                        status=409)


def _sha_of(files: list[dict], path: str) -> str:
    return next(entry["sha256"] for entry in files if entry["path"] == path)


def _user(user):
    return user if getattr(user, "is_authenticated", False) else None


def _model_for_registering(workspace, user, name: str) -> RegisteredModel:
    model = RegisteredModel.objects.filter(workspace=workspace, name=name).first()
    if model is None:
        model = RegisteredModel.objects.create(workspace=workspace, name=name, created_by=_user(user))
    if model.archived:
        raise RegistryError(f"The model {name} is archived: unarchive it on its page to register new versions.",
                            status=409)
    return model


def run_lineage(run: Run) -> dict:
    """What the version came from, as it was at registration."""
    summary = {}
    series = run.metric_series.filter(kind=MetricKind.SCALAR).exclude(name__startswith="sys/").order_by("name")
    for item in series[:LINEAGE_METRICS]:
        summary[item.name] = item.last_display
    environment = run.environment
    return {
        "run": run.pk, "run_name": run.display_name or f"Run {run.pk}", "experiment": run.experiment.name,
        "status": run.status, "snapshot": run.snapshot_id,
        "environment": f"{environment.name}:{environment.version}" if environment is not None else "",
        "compute_target": run.compute_target.name if run.compute_target_id else "", "metrics": summary,
    }


def run_output_files(run: Run, paths: list[str]) -> list[dict]:
    """The run's stored outputs under `paths` (files or folders under outputs/), as version files named relative to
    outputs/, their blobs present (a hard link to the output: no byte is copied)."""
    if not paths:
        raise RegistryError("Pick at least one file or folder under outputs/.")
    chosen: dict[str, RunOutput] = {}
    for raw in paths:
        try:
            wanted = clean_path(str(raw).strip().rstrip("/"))
        except SnapshotError as error:
            raise RegistryError(str(error)) from None
        if wanted != "outputs" and not wanted.startswith("outputs/"):
            raise RegistryError(f"{wanted!r} is not under outputs/: a model is made of files the run stored in "
                                "./outputs.")
        rows = list(RunOutput.objects.filter(run=run, path=wanted)) or list(
            RunOutput.objects.filter(run=run, path__startswith=f"{wanted}/" if wanted != "outputs" else "outputs/"))
        if not rows:
            rows = _index_unindexed(run, wanted)
        if not rows:
            raise RegistryError(f"Run {run.pk} has no stored file or folder {wanted!r}.", status=404)
        for row in rows:
            chosen[row.path] = row
    files = []
    for path, row in sorted(chosen.items()):
        if not blobs.exists(row.sha256):
            blobs.link(storage.run_dir(run.pk) / path, row.sha256)
        files.append({"path": path.removeprefix("outputs/"), "sha256": row.sha256, "size": row.size})
    return files


def _index_unindexed(run: Run, wanted: str) -> list[RunOutput]:
    """Outputs stored before the studio recorded their hashes: hashed and recorded now (once)."""
    root = storage.run_dir(run.pk)
    target = storage.resolve_stored_file(run.pk, wanted)
    candidates = [target] if target is not None else []
    folder = root / wanted
    if not candidates and folder.is_dir() and not folder.is_symlink():
        candidates = [path for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()]
    rows = []
    for path in candidates:
        relative = path.relative_to(root).as_posix()
        sha256 = blobs.hash_file(path)
        blobs.link(path, sha256)
        rows.append(RunOutput(run=run, path=relative, size=path.stat().st_size, sha256=sha256))
    RunOutput.objects.bulk_create(rows, ignore_conflicts=True)
    return rows


def register_from_run(run: Run, user, name: str, paths: list[str], **fields) -> ModelVersion:
    with blobs.gc_lock(exclusive=False):
        files = run_output_files(run, paths)
        return register(run.workspace, user, name, files, source=Source.RUN, run=run, **fields)


def register_staged(workspace, user, name: str, staged, **fields) -> ModelVersion:
    with blobs.gc_lock(exclusive=False):
        files = staged.commit()
        return register(workspace, user, name, files, source=Source.UPLOADED, **fields)


# Finding ---------------------------------------------------------------------------------------------------------


def resolve(workspace, reference: str) -> ModelVersion:
    """`name` or `name:latest` (the newest version), `name:3`, `name@alias` (`@latest` too)."""
    text = (reference or "").strip()
    name, version, alias = text, None, None
    if "@" in text:
        name, alias = text.rsplit("@", 1)
    elif ":" in text:
        name, version = text.rsplit(":", 1)
    model = RegisteredModel.objects.filter(workspace=workspace, name=name).first()
    if model is None:
        raise RegistryError(f"No model named {name[:255]!r} in this workspace.", status=404)
    versions = model.versions.select_related("model")
    if alias is not None and alias != "latest":
        found = ModelAlias.objects.filter(model=model, name=alias).select_related("version__model").first()
        if found is None:
            raise RegistryError(f"The model {model.name} has no alias {alias[:64]!r}.", status=404)
        return found.version
    if version is None or version == "latest" or alias == "latest":
        newest = versions.order_by("-version").first()
        if newest is None:
            raise RegistryError(f"The model {model.name} has no versions.", status=404)
        return newest
    if not version.isdigit() or len(version) > 9:
        raise RegistryError(f"{version[:20]!r} is not a version: use a number, 'latest', or @alias.")
    found = versions.filter(version=int(version)).first()
    if found is None:
        raise RegistryError(f"The model {model.name} has no version {version}.", status=404)
    return found


# Changing --------------------------------------------------------------------------------------------------------


def set_alias(version: ModelVersion, alias: str, user) -> ModelAlias:
    """Point `alias` at `version` (moving it from another version of the model), recorded with who and when."""
    alias = (alias or "").strip()
    try:
        ALIAS_VALIDATOR(alias)
    except ValidationError as error:
        raise RegistryError(f"{alias[:64]!r} cannot be an alias: {error.messages[0]}") from None
    if alias in RESERVED_ALIASES:
        raise RegistryError(f"'{alias}' always means the newest version; it cannot be set.")
    now = timezone.now()
    with transaction.atomic():
        current = ModelAlias.objects.select_for_update().filter(model=version.model, name=alias).first()
        previous = current.version.version if current is not None else None
        if current is not None and current.version_id == version.pk:
            return current
        if current is None:
            current = ModelAlias(model=version.model, name=alias)
        current.version, current.updated_at, current.updated_by = version, now, _user(user)
        current.save()
        AliasChange.objects.create(model=version.model, alias=alias, from_version=previous,
                                   to_version=version.version, at=now, by=_user(user))
    return current


def remove_alias(model: RegisteredModel, alias: str, user) -> None:
    with transaction.atomic():
        current = ModelAlias.objects.select_for_update().filter(model=model, name=alias).select_related("version")
        current = current.first()
        if current is None:
            raise RegistryError(f"The model {model.name} has no alias {alias[:64]!r}.", status=404)
        AliasChange.objects.create(model=model, alias=alias, from_version=current.version.version, to_version=None,
                                   at=timezone.now(), by=_user(user))
        current.delete()


def set_tags(version: ModelVersion, tags) -> ModelVersion:
    version.tags = check_tags(tags)
    version.save(update_fields=["tags"])
    return version


def set_archived(model: RegisteredModel, archived: bool) -> RegisteredModel:
    model.archived = archived
    model.save(update_fields=["archived"])
    return model


def delete_version(version: ModelVersion, user) -> int:
    """Delete a version nothing serves; returns the bytes freed (blobs no other version, snapshot or output still
    references). A version in use is refused, naming what uses it."""
    shas = set(version.files.values_list("sha256", flat=True))
    model = version.model
    try:
        with transaction.atomic():
            for alias in version.aliases.all():
                AliasChange.objects.create(model=model, alias=alias.name, from_version=version.version,
                                           to_version=None, at=timezone.now(), by=_user(user))
            version.delete()
    except ProtectedError as error:
        users = sorted({_usage(item) for item in error.protected_objects})
        raise RegistryError(f"{model.name}:{version.version} cannot be deleted: it is in use by "
                            f"{', '.join(users)}. Delete or move that deployment first.", status=409) from None
    return release_unreferenced(shas)


def _usage(item) -> str:
    label = getattr(item, "usage_label", None)
    return label() if callable(label) else str(item)


def release_unreferenced(shas: set[str]) -> int:
    freed = 0
    with blobs.gc_lock(exclusive=True):
        for sha in shas:
            if ModelFile.objects.filter(sha256=sha).exists() or RunOutput.objects.filter(sha256=sha).exists():
                continue
            if Snapshot.objects.annotate(text=Cast("manifest", TextField())).filter(text__contains=sha).exists():
                continue
            freed += blobs.release(sha)
    return freed
