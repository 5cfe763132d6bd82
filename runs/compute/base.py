"""The compute seam's types: what every driver takes and gives (see `runs/compute/__init__.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

COLLECTED_DIRS = ("outputs", "logs")


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
class Console:
    """Where a run's console goes: its log file (kept whole) and its live stream (for pages); `state` is a folder of
    the run's storage where the driver keeps what it needs to find the run again (a keeper's files, say)."""

    log: Path
    stream_key: str
    state: Path


@dataclass(frozen=True)
class LaunchSpec:
    run_id: int
    placement: Placement
    argv: list[str]
    workdir: Path
    env: dict[str, str]
    console: Console
    resources: dict = field(default_factory=dict)
    grace_seconds: float = 5.0


class OutputSink(Protocol):
    def add(self, relative: str, source, size: int) -> None: ...

    def skip(self, relative: str, why: str) -> None: ...


class RunHandle(Protocol):
    """A started script. Leaving the `with` block stops and removes what the driver started, unless `release()` was
    called (another worker took the run over: the script must go on)."""

    oom_killed: bool

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def terminate(self, grace_seconds: float) -> int: ...

    def sample(self) -> dict[str, float]: ...

    def collect(self, outputs: OutputSink) -> None: ...

    def stderr_tail(self) -> list[str]: ...

    def console_note(self) -> str: ...

    def release(self) -> None: ...

    def __enter__(self) -> RunHandle: ...

    def __exit__(self, *exc_info) -> None: ...


class ComputeDriver(Protocol):
    def prepare(self, run, stop_check) -> Placement: ...

    def base_environment(self, placement: Placement, workdir: Path) -> BaseEnvironment: ...

    def launch(self, spec: LaunchSpec) -> RunHandle: ...

    def adopt(self, run_id: int, workdir: Path, console: Console) -> RunHandle | None:
        """A handle on a run's script that a worker started and no longer watches, or None when it is gone without
        a trace. A script that ended meanwhile gives a handle whose poll() returns its exit code at once."""

    def sweep(self, finished) -> int: ...
