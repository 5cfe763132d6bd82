"""The compute seam's types: what every driver takes and gives (see `runs/compute/__init__.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class PlacementError(Exception):
    """The run's environment could not be made on its target (a build or an install failed); the user's to fix."""


class LaunchError(Exception):
    """The script could not be started; the message says why."""


@dataclass(frozen=True)
class Placement:
    """Where the script runs: the interpreter, and for containers the image."""

    python: str
    image: str = ""


@dataclass(frozen=True)
class BaseEnvironment:
    """What a run's environment starts from on a kind of compute."""

    variables: dict[str, str]
    sdk_path: str
    api_url: str


@dataclass(frozen=True)
class LaunchSpec:
    run_id: int
    placement: Placement
    argv: list[str]
    workdir: Path
    env: dict[str, str]
    resources: dict = field(default_factory=dict)


class LineSink(Protocol):
    def feed(self, source: str, chunk: bytes) -> None: ...


class OutputSink(Protocol):
    def add(self, relative: str, source, size: int) -> None: ...

    def skip(self, relative: str, why: str) -> None: ...


class RunHandle(Protocol):
    oom_killed: bool

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def terminate(self, grace_seconds: float) -> int: ...

    def sample(self) -> dict[str, float]: ...

    def collect(self, outputs: OutputSink) -> None: ...

    def __enter__(self) -> RunHandle: ...

    def __exit__(self, *exc_info) -> None: ...


class ComputeDriver(Protocol):
    def prepare(self, run, stop_check) -> Placement: ...

    def base_environment(self, placement: Placement, workdir: Path) -> BaseEnvironment: ...

    def launch(self, spec: LaunchSpec, sink: LineSink) -> RunHandle: ...

    def sweep(self, finished) -> int: ...


COLLECTED_DIRS = ("outputs", "logs")
