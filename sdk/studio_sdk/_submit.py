"""What `Experiment.submit` and `studio experiment submit` send: the source folder as a snapshot (only the files the
studio lacks: `_snapshot`, with `.amlignore` winning over `.gitignore` as on the server), the run's configuration,
and git information when the folder is in a repository (`_git`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from studio_sdk._api import StudioError


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
    fields["snapshot_id"] = str(_sync(workspace, folder))
    return workspace.api.multipart(workspace.path("/runs"), fields, [])


def _sync(workspace, folder: Path):
    """The snapshot id after sending only the files the studio lacks (resumable, in parallel: `_snapshot`)."""
    from studio_sdk import _snapshot

    try:
        snapshot_id, stats = _snapshot.upload_folder(_snapshot.Http(workspace.api.url, workspace.api.token),
                                                     workspace.name, folder)
    except _snapshot.SnapshotError as error:
        raise StudioError(str(error), error.status) from None
    workspace.last_upload = stats
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
