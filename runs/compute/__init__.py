"""Compute drivers: one small interface, one module per kind of target.

A driver launches the user's script for a prepared working directory and returns a handle the
execution loop can poll, cancel and wait on. Console lines go to a `LineSink` as they come.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from studio.models import ComputeTarget


@dataclass(frozen=True)
class Placement:
    """Where the script runs: the interpreter, and for containers the image."""

    python: str
    image: str = ""


@dataclass(frozen=True)
class LaunchSpec:
    run_id: int
    image: str = ""
    sdk_path: Path | None = None
    resources: dict = field(default_factory=dict)


class LineSink(Protocol):
    def feed(self, source: str, chunk: bytes) -> None: ...


class ProcessHandle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def terminate(self, grace_seconds: float) -> int: ...

    def wait(self) -> int: ...


class ComputeDriver(Protocol):
    def launch(
        self, *, argv: list[str], workdir, env: dict[str, str], sink: LineSink, user: str = "", spec: LaunchSpec
    ) -> ProcessHandle: ...


def driver_for(target: ComputeTarget) -> ComputeDriver:
    from runs.compute.docker import DockerDriver
    from runs.compute.local import LocalProcessDriver

    if target.kind == ComputeTarget.Kind.LOCAL:
        return LocalProcessDriver()
    if target.kind == ComputeTarget.Kind.DOCKER:
        return DockerDriver(target)
    raise ValueError(f"No driver for compute target kind {target.kind!r}.")
