"""The model registry from outside a run, as Azure ML's v1 `Model`:

    model = Model.register(ws, model_path="outputs/model.pkl", model_name="digits", tags={"team": "vision"})
    model = Model(ws, "digits")                 # the newest version; version=3, or Model(ws, "digits@production")
    model.download(target_dir="model")
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

from studio_sdk._api import StudioError, quote


class Model:
    def __init__(self, workspace, name: str, version: int | None = None, data: dict | None = None):
        self.workspace = workspace
        reference = name if version is None else f"{name}:{int(version)}"
        self.details = data or workspace.api.get(workspace.path(f"/model-versions/{quote(reference)}"))
        self.name = self.details["model"]
        self.version = self.details["version"]

    @property
    def tags(self) -> dict:
        return self.details.get("tags", {})

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def register(cls, workspace, model_path: str, model_name: str, tags: dict | None = None,
                 properties: dict | None = None, description: str = "") -> Model:
        """Upload a file or a folder (streamed as a tar: any size) as the next version of `model_name`."""
        path = Path(model_path)
        if not path.exists():
            raise StudioError(f"{model_path} does not exist.")
        fields = {"description": description, "tags": json.dumps(tags or {}),
                  "properties": json.dumps(properties or {})}
        with tempfile.TemporaryFile() as spool:  # any size: written once to disk, streamed, never held in memory
            with tarfile.open(fileobj=spool, mode="w") as archive:
                archive.add(str(path), arcname=path.name if path.is_file() else ".",
                            filter=lambda info: info if info.isfile() or info.isdir() else None)
            size = spool.tell()
            spool.seek(0)
            data = workspace.api.upload(workspace.path(f"/models/{quote(model_name)}/versions/archive"), spool, size,
                                        "application/x-tar",
                                        query={k: v for k, v in fields.items() if v and v != "{}"})
        return cls(workspace, data["model"], data["version"], data)

    @staticmethod
    def list(workspace, name: str | None = None, tags: str | None = None) -> list[dict]:
        return workspace.api.get(workspace.path("/models"), q=name or None, tag=tags or None)["models"]

    def download(self, target_dir: str | os.PathLike = ".", exist_ok: bool = False) -> str:
        target = Path(target_dir)
        if target.exists() and any(target.iterdir()) and not exist_ok:
            raise StudioError(f"{target} is not empty (pass exist_ok=True to write into it).")
        target.mkdir(parents=True, exist_ok=True)
        archive = target / f".{self.name}-{self.version}.zip"
        self.workspace.api.download(self.workspace.path(f"/models/{quote(self.name)}/versions/{self.version}/files.zip"),
                                    archive)
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.infolist():
                    destination = (target / member.filename).resolve()
                    if not destination.is_relative_to(target.resolve()):
                        raise StudioError(f"{member.filename} would land outside {target}.")
                bundle.extractall(target)
        finally:
            archive.unlink(missing_ok=True)
        return str(target)

    def set_alias(self, alias: str) -> dict:
        return self.workspace.api.put(self.workspace.path(f"/models/{quote(self.name)}/aliases/{quote(alias)}"),
                                      {"version": self.version})

    def add_tags(self, tags: dict) -> dict:
        data = self.workspace.api.put(self.workspace.path(f"/models/{quote(self.name)}/versions/{self.version}/tags"),
                                      {"tags": tags})
        self.details.update(data if isinstance(data, dict) else {})
        return self.tags

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version})"
