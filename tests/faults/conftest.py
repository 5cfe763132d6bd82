"""Fault tests: the studio as the start command runs it (supervised), with faults injected into its real processes.

Every test here ends with its runs in their right final state and checks that nothing was lost: each console line
once and in order (in the log file and in the live stream), each metric point, the outputs and the exit code.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings

from runs import metrics, storage
from runs.models import MetricSeries, Run, RunStatus
from studio.models import ApiToken
from tests.services import wait_until
from tests.stack import SupervisedStack

# Prints a line and logs a point every 10 ms (STEPS of them), then writes its model and says "done".
STEADY = """\
import os, time
from studio_sdk import Run
run = Run.get_context()
steps = int(os.environ.get("STEPS", "600"))
for step in range(steps):
    print(f"line {step}", flush=True)
    run.log("loss", 1.0 / (step + 1), step=step)
    time.sleep(0.01)
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as handle:
    handle.write(f"trained for {steps} steps")
print("done", flush=True)
"""
LINE = re.compile(r"^(line \d+|done)$")
# The start of an attacking script: attempt(what, action) prints "GOT what: ..." when the action found something,
# else "REFUSED what: <error>" (an empty result counts as refused: a hidden folder reads as empty).
ATTEMPT = r"""
import os, socket

def attempt(what, action):
    try:
        found = action()
        if not found:
            raise LookupError("nothing there (hidden)")
    except Exception as error:
        print(f"REFUSED {what}: {type(error).__name__}: {str(error)[:120]}", flush=True)
    else:
        print(f"GOT {what}: {str(found)[:200]!r}", flush=True)
"""
# Logs a point, then prints "line N", every 0.2 s for 1000 epochs: canceled tests compare the two.
EPOCHS = """\
import time
from studio_sdk import Run
run = Run.get_context()
for epoch in range(1000):
    run.log("epoch_loss", 1.0 / (epoch + 1), step=epoch)
    print(f"line {epoch}", flush=True)
    time.sleep(0.2)
"""


@pytest.fixture(scope="module")
def stack(e2e_env, studio_services):
    running = SupervisedStack(e2e_env, studio_services["data_dir"], concurrency=2)
    yield running
    running.stop()


@pytest.fixture
def token(cast) -> str:
    return ApiToken.issue(cast["carol"], "faults")[1]


def wait_final(run_id: int, timeout: float = 120, stack: SupervisedStack | None = None) -> Run:
    def final():
        run = Run.objects.get(pk=run_id)
        return run if run.is_final else None

    try:
        return wait_until(final, timeout, f"run {run_id} to end", interval=0.2)
    except TimeoutError:
        run = Run.objects.get(pk=run_id)
        raise AssertionError(f"run {run_id} is still {run.status}\n{stack.logs() if stack else ''}") from None


def console_lines(run_id: int) -> list[str]:
    path = storage.console_log_path(run_id)
    return [line for line in path.read_text().splitlines() if LINE.match(line)] if path.exists() else []


def wait_lines(run_id: int, count: int, timeout: float = 60) -> None:
    wait_until(lambda: len(console_lines(run_id)) >= count, timeout, f"{count} console lines of run {run_id}")


def streamed_lines(stack: SupervisedStack, run_id: int) -> list[str]:
    """Every console line the run's live stream carried, in order."""
    from runs.live import stream_key

    lines = []
    for _, fields in stack.redis().xrange(stream_key(run_id)):
        if fields.get(b"k") == b"log":
            lines += [line for line in fields[b"t"].decode().split("\n") if LINE.match(line)]
    return lines


def expected_lines(steps: int) -> list[str]:
    return [f"line {step}" for step in range(steps)] + ["done"]


def assert_nothing_lost(stack: SupervisedStack, run: Run, steps: int) -> None:
    """Completed with exit code 0, every line once and in order (file and live stream), every point, the output."""
    assert run.status == RunStatus.COMPLETED, f"{run.status}: {run.reason}\n{stack.logs()}"
    assert run.exit_code == 0 and run.reason == ""
    assert console_lines(run.pk) == expected_lines(steps)
    assert streamed_lines(stack, run.pk) == expected_lines(steps)
    series = MetricSeries.objects.get(run=run, name="loss")
    points, _ = metrics.read_scalars(series, max_points=10 * steps)
    assert sorted(points.steps.tolist()) == list(range(steps))
    assert (storage.run_dir(run.pk) / "outputs" / "model.txt").read_text() == f"trained for {steps} steps"
    assert not storage.work_dir(run.pk).exists()
    statuses = list(run.status_changes.values_list("status", flat=True))
    assert statuses[-1] == "Completed" and not set(statuses[:-1]) & {"Completed", "Failed", "Canceled"}


def is_root() -> bool:
    import os

    return os.geteuid() == 0


def database_file() -> str:
    engine = settings.DATABASES["default"]
    return str(engine["NAME"]) if engine["ENGINE"].endswith("sqlite3") else ""
