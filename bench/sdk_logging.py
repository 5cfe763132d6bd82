"""Metric logging throughput: 100,000 `run.log("loss", value)` calls through the studio's SDK, against MLflow.

A throwaway studio (Redis, migrated SQLite, uvicorn; no Celery worker: the run is made through the ORM and moved
Queued -> Preparing -> Starting -> Running here, with a run token from `runs.tokens.issue`). A child process (the
studio's interpreter, PYTHONPATH=sdk, the run context in STUDIO_RUN_ID / STUDIO_API_URL / STUDIO_RUN_TOKEN) times
the log calls plus the final `run.flush()` with `time.perf_counter`; afterwards the ORM must hold every point, with
the values and steps in order. Target: under 0.25 s, and at least 40 times faster than MLflow's `log_batch` measured
in the same run. The SDK sends each series as packed float64 columns and the server appends them as arrays.

Then the same points through MLflow (its own venv, bench/.mlflow-venv, from bench/requirements-mlflow.txt; made
here when missing) against `mlflow server` with a SQLite backend in the temporary folder, started with MLflow's
defaults. Three ways, each in its own MLflow run and child process, each timed from the first call to the last
point being written, and each checked with `get_metric_history`:

- `mlflow.log_metric("loss", value, step=i)`: MLflow's default, one HTTP request per call. When a 5,000-call probe
  says 100,000 would take longer than --mlflow-sync-limit seconds, the figure is that probe extrapolated
  linearly, and the output says so.
- `mlflow.log_metric(..., synchronous=False)` plus `mlflow.flush_async_logging()`: MLflow's background batching.
- `MlflowClient().log_batch(run_id, metrics=[...])` with 1,000 `Metric`s per call: MLflow's fastest path (the
  `Metric` objects and their timestamps are made inside the timing, as the SDK takes a timestamp per point).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402
from _services import services  # noqa: E402  (tests/services.py: free_port, wait_until)

TARGET_SECONDS = 0.25
TARGET_BATCH_RATIO = 40  # MLflow's log_batch, in the same bench run, takes at least this many times longer
ROOT = _services.ROOT
MLFLOW_VENV = ROOT / "bench" / ".mlflow-venv"
MLFLOW_REQUIREMENTS = ROOT / "bench" / "requirements-mlflow.txt"
PROBE_POINTS = 5_000
BATCH = 1_000


def value_of(i: int) -> float:
    """The i-th logged value, computed the same way in the child and here (exact after the JSON round trip)."""
    return 1.0 / (i + 1) + (i % 7) * 0.125


# The child processes. Their values list is built before the clock starts.
STUDIO_CHILD = """
import json, sys, time
from studio_sdk import Run
n = int(sys.argv[1])
values = [1.0 / (i + 1) + (i % 7) * 0.125 for i in range(n)]
run = Run.get_context()
assert not run.offline, "the SDK is offline: the run context did not reach it"
log = run.log
started = time.perf_counter()
for value in values:
    log("loss", value)
logged = time.perf_counter()
flushed = run.flush(timeout=600)
done = time.perf_counter()
print(json.dumps({"seconds": done - started, "log": logged - started, "flush": done - logged, "flushed": flushed}))
"""

MLFLOW_CHILD = """
import json, sys, time
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
mode, n = sys.argv[1], int(sys.argv[2])
values = [1.0 / (i + 1) + (i % 7) * 0.125 for i in range(n)]
with mlflow.start_run() as active:
    run_id = active.info.run_id
    started = time.perf_counter()
    if mode == "sync":
        for i, value in enumerate(values):
            mlflow.log_metric("loss", value, step=i)
    elif mode == "async":
        for i, value in enumerate(values):
            mlflow.log_metric("loss", value, step=i, synchronous=False)
        mlflow.flush_async_logging()
    elif mode == "batch":
        client = MlflowClient()
        for start in range(0, n, BATCH):
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric("loss", values[i], now, i) for i in range(start, min(n, start + BATCH))])
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - started
history = MlflowClient().get_metric_history(run_id, "loss")
ordered = sorted(history, key=lambda m: m.step)
stored_ok = [m.step for m in ordered] == list(range(n)) and [m.value for m in ordered] == values
print(json.dumps({"seconds": seconds, "stored": len(history), "stored_ok": stored_ok, "version": mlflow.__version__}))
""".replace("BATCH", str(BATCH))


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the studio's settings (Django is set up in here), plus `extra`."""
    drop = ("STUDIO_", "DJANGO_", "DATABASE_URL", "MLFLOW_", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def child_json(argv: list[str], env: dict[str, str], timeout: float) -> dict:
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result from {argv[:3]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if done.stderr.strip():
        print("# child stderr: " + done.stderr.strip().replace("\n", "\n#   ")[:2000], flush=True)
    return json.loads(lines[-1])


# The studio ----------------------------------------------------------------------------------------------------
def studio_once(stack: _services.Stack, points: int) -> tuple[dict, str]:
    import numpy as np

    from runs import tokens
    from runs.metrics import Points
    from runs.models import MetricChunk, MetricSeries

    run = stack.running_run()
    env = clean_env(
        PYTHONPATH=str(ROOT / "sdk"),
        STUDIO_RUN_ID=str(run.pk),
        STUDIO_API_URL=stack.url,
        STUDIO_RUN_TOKEN=tokens.issue(run),
    )
    result = child_json([sys.executable, "-c", STUDIO_CHILD, str(points)], env, timeout=900)

    series = MetricSeries.objects.filter(run=run, name="loss").first()
    count = series.count if series else 0
    blobs = MetricChunk.objects.filter(series=series).order_by("seq").values_list("data", flat=True)
    stored = Points.concat([Points.decode(blob) for blob in blobs])
    expected = np.array([value_of(i) for i in range(points)], dtype=np.float64)
    in_order = (
        len(stored) == points
        and np.array_equal(stored.values, expected)
        and np.array_equal(stored.steps, np.arange(points, dtype=np.float64))
    )
    result.update(run=run.pk, count=count, chunk_points=len(stored), in_order=bool(in_order))
    verdict = "yes" if in_order and count == points else "NO"
    return result, verdict


# MLflow --------------------------------------------------------------------------------------------------------
def mlflow_python() -> Path:
    """The MLflow venv's interpreter; the venv is made (and the pinned MLflow installed) when it is missing."""
    python = MLFLOW_VENV / "bin" / "python"
    pinned = next(
        line.strip() for line in MLFLOW_REQUIREMENTS.read_text().splitlines() if line.strip().startswith("mlflow==")
    )
    check = [str(python), "-c", "import importlib.metadata as m; print('mlflow==' + m.version('mlflow'))"]
    if python.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == pinned:
        return python
    print(f"# installing {pinned} into {MLFLOW_VENV.relative_to(ROOT)} (first run only; about a minute)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=False).create(MLFLOW_VENV)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(MLFLOW_REQUIREMENTS)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return python


def start_mlflow(stack: _services.Stack, python: Path, workers: int | None) -> str:
    folder = stack.base / "mlflow"
    folder.mkdir()
    port = services.free_port()
    argv = [
        str(python), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
    ] + ([] if workers is None else ["--workers", str(workers)])  # fmt: skip
    server = _services.ChildService("mlflow", argv, clean_env(), folder)
    stack.services.append(server)  # stopped (with its worker processes) by the stack on the way out
    url = f"http://127.0.0.1:{port}"
    import httpx

    def answers():
        if server.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited {server.process.returncode}:\n{server.log()}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    started = time.monotonic()
    try:
        services.wait_until(answers, 180, "mlflow server to answer /health", interval=0.25)
    except TimeoutError:
        raise RuntimeError(f"mlflow server did not answer within 180 s:\n{server.log()}") from None
    how = "MLflow's default workers (4)" if workers is None else f"--workers {workers}"
    answered = time.monotonic() - started
    settled = _services.wait_settled(server.process.pid)  # its own session: the group is its workers
    print(f"# mlflow server {url} answered after {answered:.1f} s ({how}); its workers settled {settled:.1f} s later",
          flush=True)
    return url


def mlflow_mode(python: Path, url: str, mode: str, points: int) -> dict:
    env = clean_env(MLFLOW_TRACKING_URI=url)
    return child_json([str(python), "-c", MLFLOW_CHILD, mode, str(points)], env, timeout=3600)


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="studio measurements (a fresh run each); median judged")
    parser.add_argument("--batch-only", action="store_true",
                        help="of MLflow's three ways, measure only log_batch (the one the target names)")
    parser.add_argument("--mlflow-sync-limit", type=float, default=600, metavar="SECONDS",
                        help="extrapolate synchronous log_metric from a 5,000-call probe when the full count would "
                        "take longer than this")  # fmt: skip
    parser.add_argument("--mlflow-workers", type=int, metavar="N",
                        help="mlflow server --workers (default: MLflow's own, 4)")  # fmt: skip
    parser.add_argument("--no-mlflow", action="store_true", help="measure the studio only")
    args = _services.parse(parser, concurrency=False, keep="keep the temporary folder (service logs, databases)")
    n = args.points
    summary: list[str] = []

    with _services.Stack(keep=args.keep, worker=False) as stack:
        studio_times = []
        for _ in range(args.repeat):
            result, verdict = studio_once(stack, n)
            studio_times.append(result["seconds"])
            print(
                f"# studio run {result['run']}: {result['seconds']:.3f} s (log calls {result['log']:.3f} s, "
                f"flush {result['flush']:.3f} s, flush returned {result['flushed']}); series count {result['count']}, "
                f"chunk points {result['chunk_points']}, values and steps in order: {verdict}",
                flush=True,
            )
            if verdict != "yes":
                raise RuntimeError(f"run {result['run']}: the studio did not store all {n} points in order")
        studio = sorted(studio_times)[len(studio_times) // 2]
        label = "" if args.repeat == 1 else f" (median of {args.repeat}: {', '.join(f'{t:.2f}' for t in studio_times)})"
        summary.append(
            f"studio SDK: {n:,} run.log() calls + run.flush() in {studio:.2f} s{label}; "
            f"target < {TARGET_SECONDS:g} s: {'PASS' if studio < TARGET_SECONDS else 'FAIL'}"
        )
        summary.append(f"studio stored: {result['count']:,} of {n:,} points, values and steps in order: {verdict}")

        batch_ratio = None
        if not args.no_mlflow:
            python = mlflow_python()
            url = start_mlflow(stack, python, args.mlflow_workers)
            version = None
            if args.batch_only:
                batch = mlflow_mode(python, url, "batch", n)
                version = batch["version"]
                modes = [(f"MlflowClient().log_batch, {BATCH:,} metrics per call", batch,
                          f"measured, {batch['stored']:,} stored")]
                batch_ratio = batch["seconds"] / studio
        if not args.no_mlflow and not args.batch_only:
            probe = mlflow_mode(python, url, "sync", min(PROBE_POINTS, n))
            version = probe["version"]
            estimate = probe["seconds"] * n / min(PROBE_POINTS, n)
            print(f"# mlflow sync probe: {min(PROBE_POINTS, n):,} calls in {probe['seconds']:.2f} s "
                  f"-> {estimate:.0f} s for {n:,}", flush=True)  # fmt: skip
            if estimate > args.mlflow_sync_limit:
                sync = {"seconds": estimate, "stored": probe["stored"], "stored_ok": probe["stored_ok"]}
                sync_note = (
                    f"EXTRAPOLATED linearly from {min(PROBE_POINTS, n):,} calls in {probe['seconds']:.2f} s "
                    f"(> {args.mlflow_sync_limit:.0f} s limit), {probe['stored']:,} of those stored"
                )
            else:
                sync = mlflow_mode(python, url, "sync", n)
                sync_note = f"measured, {sync['stored']:,} stored"
            modes = [
                ("log_metric(step=i) synchronous (MLflow's default)", sync, sync_note),
            ]
            for mode, label in (
                ("async", "log_metric(step=i, synchronous=False) + flush_async_logging()"),
                ("batch", f"MlflowClient().log_batch, {BATCH:,} metrics per call"),
            ):
                measured = mlflow_mode(python, url, mode, n)
                print(f"# mlflow {mode}: {measured['seconds']:.2f} s, stored {measured['stored']}", flush=True)
                modes.append((label, measured, f"measured, {measured['stored']:,} stored"))
                if mode == "batch":
                    batch_ratio = measured["seconds"] / studio
        if not args.no_mlflow:
            for label, measured, note in modes:
                ok = "" if measured["stored_ok"] else "; NOT all stored in order"
                summary.append(
                    f"MLflow {version} {label}: {measured['seconds']:.2f} s for {n:,} points ({note}{ok}); "
                    f"MLflow/studio = {measured['seconds'] / studio:.1f}x"
                )

    if batch_ratio is not None:
        summary.append(f"MLflow log_batch / studio = {batch_ratio:.1f}x; target >= {TARGET_BATCH_RATIO}x: "
                       f"{'PASS' if batch_ratio >= TARGET_BATCH_RATIO else 'FAIL'}")
    print("\n".join(summary))
    ratio_ok = batch_ratio is None or batch_ratio >= TARGET_BATCH_RATIO
    return 0 if studio < TARGET_SECONDS and verdict == "yes" and ratio_ok else 1


if __name__ == "__main__":
    sys.exit(main())
