"""Compute targets: list them, attach a Docker engine (local socket or a remote engine), test the connection."""

from __future__ import annotations

from studio_sdk._api import quote


class ComputeTarget:
    def __init__(self, workspace, name: str, data: dict | None = None):
        self.workspace = workspace
        self.name = name
        self.details = data if data is not None else workspace.api.get(workspace.path(f"/compute/{quote(name)}"))

    @staticmethod
    def list(workspace) -> list[ComputeTarget]:
        return [ComputeTarget(workspace, item["name"], item) for item in workspace.api.get(workspace.path("/compute"))]

    @staticmethod
    def attach_docker(workspace, name: str, docker_url: str = "unix:///var/run/docker.sock", **fields) -> ComputeTarget:
        """Attach a Docker engine; `fields` are the API's (queue, tls_ca, tls_cert, tls_key, ...)."""
        data = workspace.api.post(workspace.path("/compute"), {"name": name, "kind": "docker",
                                                               "docker_url": docker_url, **fields})
        return ComputeTarget(workspace, data["name"], data)

    def test(self) -> dict:
        return self.workspace.api.post(self.workspace.path(f"/compute/{quote(self.name)}/test"))

    def delete(self) -> None:
        self.workspace.api.delete(self.workspace.path(f"/compute/{quote(self.name)}"))

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, kind={self.details.get('kind')!r})"
