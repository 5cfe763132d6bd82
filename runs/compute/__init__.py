"""Compute drivers: one small interface, one module per kind of target.

A driver launches the user's script for a prepared working directory and returns a handle the
execution loop can poll, cancel and wait on. Console lines go to a `LineSink` as they come.
"""

from __future__ import annotations

from typing import Protocol

from studio.models import ComputeTarget


class LineSink(Protocol):
    def feed(self, source: str, chunk: bytes) -> None: ...


class ProcessHandle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def terminate(self, grace_seconds: float) -> int: ...

    def wait(self) -> int: ...


class ComputeDriver(Protocol):
    def launch(
        self, *, argv: list[str], workdir, env: dict[str, str], sink: LineSink, user: str = ""
    ) -> ProcessHandle: ...


def driver_for(target: ComputeTarget) -> ComputeDriver:
    from runs.compute.local import LocalProcessDriver

    if target.kind == ComputeTarget.Kind.LOCAL:
        return LocalProcessDriver()
    raise ValueError(f"No driver for compute target kind {target.kind!r}.")
