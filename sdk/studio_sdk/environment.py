"""Environments as Azure ML's v1 `Environment`: the packages a run needs (pip requirements or a conda specification),
or an interpreter that already has them (`python.user_managed_dependencies`), on a base image or Dockerfile.

    env = Environment.from_pip_requirements("sk", "requirements.txt").register(ws)
    env.build(ws).wait_for_completion(show_output=True)      # like `az ml experiment prepare`
    env = Environment.get(ws, "Studio-sklearn")                # the newest version (or version=3)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from studio_sdk._api import StudioError, quote


class PythonSection:
    def __init__(self):
        self.user_managed_dependencies = False
        self.interpreter_path = ""
        self.pip_requirements: list[str] = []
        self.conda_dependencies = ""  # the YAML text


class DockerSection:
    def __init__(self):
        self.base_image = ""
        self.base_dockerfile = ""
        self.dockerfile_steps = ""
        self.registry_address = ""
        self.registry_username = ""
        self.registry_password = ""


class Environment:
    def __init__(self, name: str):
        self.name = name
        self.version: int | None = None
        self.description = ""
        self.environment_variables: dict[str, str] = {}
        self.python = PythonSection()
        self.docker = DockerSection()
        self.details: dict = {}

    @classmethod
    def from_pip_requirements(cls, name: str, file_path: str) -> Environment:
        env = cls(name)
        env.python.pip_requirements = [line.rstrip() for line in Path(file_path).read_text().splitlines()
                                       if line.strip() and not line.lstrip().startswith("#")]
        return env

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str) -> Environment:
        env = cls(name)
        env.python.conda_dependencies = Path(file_path).read_text()
        return env

    @classmethod
    def get(cls, workspace, name: str, version: int | None = None) -> Environment:
        path = workspace.path(f"/environments/{quote(name)}" + (f"/{int(version)}" if version else ""))
        data = workspace.api.get(path)
        return cls._from_json(data[0] if isinstance(data, list) else data)

    @classmethod
    def _from_json(cls, data: dict) -> Environment:
        env = cls(data["name"])
        env.version = data["version"]
        env.description = data.get("description", "")
        env.environment_variables = dict(data.get("env_vars") or {})
        env.python.user_managed_dependencies = data.get("kind") == "user"
        env.python.interpreter_path = data.get("interpreter_path", "")
        env.python.pip_requirements = [line for line in (data.get("python_packages") or "").splitlines() if line]
        env.python.conda_dependencies = data.get("conda_spec", "")
        env.docker.base_image = data.get("base_image", "")
        env.docker.base_dockerfile = data.get("base_dockerfile", "")
        env.docker.dockerfile_steps = data.get("dockerfile_steps", "")
        env.docker.registry_address = data.get("registry_address", "")
        env.docker.registry_username = data.get("registry_username", "")
        env.details = data
        return env

    @staticmethod
    def list(workspace) -> dict:
        return {item["name"]: Environment._from_json(item) for item in workspace.api.get(
            workspace.path("/environments"))}

    def register(self, workspace) -> Environment:
        """Save this definition as the next version of `name` in the workspace (no build yet)."""
        payload = {
            "kind": "user" if self.python.user_managed_dependencies else "system",
            "description": self.description, "base_image": self.docker.base_image,
            "base_dockerfile": self.docker.base_dockerfile, "dockerfile_steps": self.docker.dockerfile_steps,
            "python_packages": "\n".join(self.python.pip_requirements), "conda_spec": self.python.conda_dependencies,
            "interpreter_path": self.python.interpreter_path, "env_vars": self.environment_variables,
            "registry_address": self.docker.registry_address, "registry_username": self.docker.registry_username,
            "registry_password": self.docker.registry_password,
        }
        data = workspace.api.post(workspace.path(f"/environments/{quote(self.name)}/versions"), payload)
        return self._from_json(data)

    def build(self, workspace) -> ImageBuild:
        """Build its image (registering this definition first when it has no version yet); nothing is rebuilt when
        an image of the same definition exists: images are cached by the definition's hash."""
        env = self if self.version is not None else self.register(workspace)
        data = workspace.api.post(workspace.path(f"/environments/{quote(env.name)}/{env.version}/build"))
        return ImageBuild(workspace, data)

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r})"


class ImageBuild:
    def __init__(self, workspace, data: dict):
        self.workspace = workspace
        self.data = data

    @property
    def status(self) -> str:
        return self.data["status"]

    def wait_for_completion(self, show_output: bool = False, out=None) -> dict:
        out = out or sys.stdout
        path = self.workspace.path(f"/images/{self.data['id']}")
        if show_output:
            for event, _id, payload in self.workspace.api.events(path + "/events"):
                if event == "log":
                    out.write("".join(text + "\n" for _s, text in payload.get("lines", [])))
                    out.flush()
                elif event == "end":
                    break
        while True:
            self.data = self.workspace.api.get(path)
            if self.data["status"] in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        if self.data["status"] == "Failed":
            raise StudioError(f"The image failed to build: {self.data.get('error') or 'see its build log'}")
        return self.data
