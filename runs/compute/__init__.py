"""Compute drivers: one small interface, one module per kind of compute target.

A driver owns everything that depends on the kind of compute, so `runs/execution.py` reads as the run's phases only:

- `prepare(run, stop_check)`: the placement, i.e. which interpreter (and image) runs the script, making what is
  missing (a virtualenv, an image on the target's engine). Raises `PlacementError` with a message for the user, or
  `InterruptedError` when `stop_check()` gives a reason to stop waiting.
- `base_environment(placement, workdir)`: the variables the script's environment starts from on this kind (PATH,
  HOME, TMPDIR), where the SDK is, and the URL at which the script reaches the studio.
- `launch(spec)`: start the script, its console going to the run's log and live stream (`spec.console`); raises
  `LaunchError`. The script outlives the worker that started it.
- `adopt(run_id, workdir, console)`: a handle on a script a worker started and no longer watches, or None when it is
  gone; its console resumes where the log stops.
- `sweep(finished)`: remove what ended runs left behind (the beat task's clean-up); `finished(run_ids)` says which
  of the runs it found have ended.

`launch` returns a `RunHandle`, a context manager whose exit always stops and removes what it started: poll, wait,
terminate (the whole process group or container), sample system metrics, and collect `./outputs` and `./logs` into
run storage (streamed, bounded by `storage.OutputCollector`'s limits).

A new kind of compute (a cluster, a remote machine) is one new module and one line in `driver_for`.
"""

from __future__ import annotations

from runs.compute.base import (
    COLLECTED_DIRS,
    BaseEnvironment,
    ComputeDriver,
    Console,
    LaunchError,
    LaunchSpec,
    Placement,
    PlacementError,
    RunHandle,
)
from runs.compute.docker import DockerDriver
from runs.compute.local import LocalProcessDriver
from studio.models import ComputeTarget

__all__ = ["COLLECTED_DIRS", "BaseEnvironment", "ComputeDriver", "Console", "LaunchError", "LaunchSpec", "Placement",
           "PlacementError", "RunHandle", "driver_for"]
DRIVERS = {ComputeTarget.Kind.LOCAL: LocalProcessDriver, ComputeTarget.Kind.DOCKER: DockerDriver}


def driver_for(target: ComputeTarget) -> ComputeDriver:
    if target.kind not in DRIVERS:
        raise ValueError(f"No driver for compute target kind {target.kind!r}.")
    return DRIVERS[target.kind](target)
