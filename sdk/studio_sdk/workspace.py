"""A workspace of a studio, as Azure ML's `Workspace` is one: found from `.studio/config.json` (searched upward from
the current folder, as Azure's `config.json`), or given. The token comes from `STUDIO_TOKEN`, else from the
credentials `studio login` wrote (`~/.studio/credentials.json`, mode 0600), never from the project's config file (which
is meant to be committed).

    .studio/config.json: {"url": "http://127.0.0.1:8000", "workspace": "default"}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio_sdk._api import Api, StudioError, quote

CONFIG_DIR = ".studio"
CONFIG_FILE = "config.json"
TOKEN_ENV = "STUDIO_TOKEN"
URL_ENV = "STUDIO_URL"
WORKSPACE_ENV = "STUDIO_WORKSPACE"


def credentials_path() -> Path:
    home = os.environ.get("STUDIO_HOME") or os.path.join(os.path.expanduser("~"), CONFIG_DIR)
    return Path(home) / "credentials.json"


def read_credentials() -> dict:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_credentials(url: str, token: str, workspace: str | None = None) -> Path:
    """Keep the URL, token and default workspace for this user (0600: the token is a password)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    data = read_credentials()
    data.update({"url": url.rstrip("/"), "token": token})
    if workspace:
        data["workspace"] = workspace
    partial = path.with_name(path.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(partial, path)
    os.chmod(path, 0o600)
    return path


def find_config(start: str | os.PathLike | None = None) -> Path | None:
    folder = Path(start or os.getcwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_DIR / CONFIG_FILE
        if path.is_file():
            return path
    return None


class Workspace:
    """`Workspace(url, name, token)`, or `Workspace.from_config()`."""

    def __init__(self, url: str | None = None, name: str | None = None, token: str | None = None):
        saved = read_credentials()
        self.url = (url or os.environ.get(URL_ENV) or saved.get("url") or "").rstrip("/")
        self.name = name or os.environ.get(WORKSPACE_ENV) or saved.get("workspace") or ""
        if not self.name:
            raise StudioError("No workspace: pass one, run `studio workspace use NAME`, or write .studio/config.json.")
        token = token or os.environ.get(TOKEN_ENV) or (saved.get("token") if saved.get("url", "").rstrip("/")
                                                      == self.url else "")
        self.api = Api(self.url, token or "")

    @classmethod
    def from_config(cls, path: str | os.PathLike | None = None, token: str | None = None) -> Workspace:
        """The workspace `.studio/config.json` names (searched from `path` or the current folder upward); the URL,
        workspace and token may also come from STUDIO_URL, STUDIO_WORKSPACE and STUDIO_TOKEN or `studio login`."""
        found = Path(path) if path and Path(path).is_file() else find_config(path)
        config = {}
        if found is not None:
            try:
                config = json.loads(found.read_text())
            except ValueError as error:
                raise StudioError(f"{found} is not JSON: {error}") from None
            if not isinstance(config, dict):
                raise StudioError(f"{found} must hold an object with url and workspace.")
        elif not (os.environ.get(URL_ENV) or read_credentials().get("url")):
            raise StudioError("No .studio/config.json here or above, and no `studio login`: write "
                              '{"url": "http://127.0.0.1:8000", "workspace": "default"} into .studio/config.json.')
        return cls(config.get("url") or None, config.get("workspace") or None, token)

    def write_config(self, folder: str | os.PathLike = ".") -> Path:
        path = Path(folder) / CONFIG_DIR / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"url": self.url, "workspace": self.name}, indent=2) + "\n")
        return path

    def path(self, rest: str = "") -> str:
        return f"/workspaces/{quote(self.name)}{rest}"

    def get_details(self) -> dict:
        return self.api.get(self.path())

    @staticmethod
    def list(url: str | None = None, token: str | None = None) -> list[dict]:
        saved = read_credentials()
        api = Api((url or os.environ.get(URL_ENV) or saved.get("url") or ""),
                  token or os.environ.get(TOKEN_ENV) or saved.get("token") or "")
        return api.get("/workspaces")

    @property
    def experiments(self) -> dict:
        from studio_sdk.experiment import Experiment

        page = self.api.get(self.path("/experiments"))
        return {item["name"]: Experiment(self, item["name"]) for item in page["items"]}

    @property
    def compute_targets(self) -> dict:
        from studio_sdk.compute import ComputeTarget

        return {item["name"]: ComputeTarget(self, item["name"], item) for item in self.api.get(self.path("/compute"))}

    @property
    def environments(self) -> dict:
        from studio_sdk.environment import Environment

        return {item["name"]: Environment._from_json(item) for item in self.api.get(self.path("/environments"))}

    @property
    def models(self) -> dict:
        from studio_sdk.model import Model

        page = self.api.get(self.path("/models"))
        return {item["name"]: Model(self, item["name"]) for item in page["models"]}

    @property
    def webservices(self) -> dict:
        from studio_sdk.webservice import Webservice

        return {item["name"]: Webservice(self, item["name"], item)
                for item in self.api.get(self.path("/endpoints"))["endpoints"]}

    def __repr__(self) -> str:
        return f"Workspace(url={self.url!r}, name={self.name!r})"
