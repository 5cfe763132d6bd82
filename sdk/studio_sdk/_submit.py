"""What `Experiment.submit` and `studio experiment submit` send: the source folder as a snapshot (only the files the
studio lacks, when it can say which; else the folder as one archive, ignore files applied by the server), the run's
configuration, and git information when the folder is in a repository."""

from __future__ import annotations

import io
import json
import os
import shlex
import zipfile
from pathlib import Path

from studio_sdk._api import StudioError

MAX_ARCHIVE_BYTES = 300 * 1024 * 1024


def configuration(config, tags: dict | None = None) -> dict:
    fields = {
        "entry_script": config.script or "",
        "arguments": shlex.join(config.arguments),
        "compute_target": config._target_name(),
        "env_vars": "\n".join(f"{k}={v}" for k, v in config.environment_variables.items()),
        "max_duration_seconds": str(config.max_run_duration_seconds or ""),
        "display_name": config.display_name or "",
        "tags": "\n".join(f"{k}={v}" for k, v in {**config.tags, **(tags or {})}.items()),
    }
    environment = config.environment
    if environment is not None:
        if isinstance(environment, str):
            fields["environment"] = environment
        elif environment.version is not None:
            fields["environment"] = f"{environment.name}:{environment.version}"
        elif environment.python.conda_dependencies or environment.docker.base_image or \
                environment.python.user_managed_dependencies:
            registered = environment.register(config._workspace)
            fields["environment"] = f"{registered.name}:{registered.version}"
        else:
            fields["packages"] = "\n".join(environment.python.pip_requirements)
    return fields


def _archive(folder: Path) -> bytes:
    """The folder as a zip (the server applies .amlignore / .gitignore and the snapshot limits)."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__") and not
                             os.path.islink(os.path.join(root, d)))
            for name in sorted(files):
                path = Path(root) / name
                if path.is_symlink() or not path.is_file():
                    continue
                total += path.stat().st_size
                if total > MAX_ARCHIVE_BYTES:
                    raise StudioError(f"{folder} holds more than {MAX_ARCHIVE_BYTES:,} bytes: list what is not "
                                      "source in .amlignore.")
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def submit(workspace, experiment: str, config, *, tags: dict | None = None) -> dict:
    config._workspace = workspace
    folder = Path(config.source_directory)
    fields = {"experiment": experiment, **configuration(config, tags)}
    git = _git_info(folder if folder.is_dir() else folder.parent)
    if git:
        fields["git"] = json.dumps(git)
    if folder.is_file():  # a single script
        return workspace.api.multipart(workspace.path("/runs"), fields, [("source", folder.name,
                                                                              folder.read_bytes())])
    if not folder.is_dir():
        raise StudioError(f"{folder} is not a folder or a file.")
    if not config.script:
        raise StudioError("Name the script to run (ScriptRunConfig(script=...)).")
    if not (folder / config.script).is_file():
        raise StudioError(f"{config.script} is not a file of {folder}.")
    snapshot = _sync(workspace, folder)
    if snapshot is not None:
        fields["snapshot_id"] = str(snapshot)
        return workspace.api.multipart(workspace.path("/runs"), fields, [])
    return workspace.api.multipart(workspace.path("/runs"), fields,
                                   [("source", f"{folder.resolve().name or 'source'}.zip", _archive(folder))])


def _sync(workspace, folder: Path):
    """The snapshot id after sending only what the studio lacks; None when this SDK or server cannot."""
    try:
        from studio_sdk import _snapshot
    except ImportError:
        return None
    snapshot_id, _stats = _snapshot.upload_folder(workspace.api, workspace.name, folder)
    return snapshot_id


def _git_info(folder: Path) -> dict | None:
    try:
        from studio_sdk import _git
    except ImportError:
        return None
    try:
        return _git.collect(folder)
    except Exception:  # git information is a courtesy: never a reason not to submit
        return None
