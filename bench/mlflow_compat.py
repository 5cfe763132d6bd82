"""An unmodified MLflow script against `mlflow server` and against the studio's MLflow API, side by side.

Both servers are started here: a throwaway studio (Redis, migrated SQLite, uvicorn; no Celery worker: an MLflow run
needs none) with a personal token, and `mlflow server` from bench/.mlflow-venv (as bench/sdk_logging.py starts it:
SQLite backend and artifacts in the temporary folder, MLflow's default workers unless --mlflow-workers). The client
is the same for both: the MLflow of bench/.mlflow-venv, in a child process, pointed at the server by
MLFLOW_TRACKING_URI (and, for the studio, MLFLOW_TRACKING_TOKEN), with MLflow's telemetry off.

- script: `set_experiment`, `start_run`, 10 `log_param`, 1,000 `log_metric(step=i)` (synchronous, MLflow's
  default: one request each), one 10 MB `log_artifact`, end of run; timed from set_experiment to the end of the run,
  with the time of each part. Run --repeat times on each server, alternating; the medians are compared, and the
  client's own work in the log_metric calls is timed (each HTTP request answered at once). Target: the studio at
  least as fast.
- log_batch: 1,000,000 points through `MlflowClient().log_batch`, 1,000 metrics per call (the `Metric` objects made
  inside the timing, as a script makes them), into one run and series per server, in --batch-rounds rounds with the
  servers alternating, so other load on the machine falls on both alike. The client's own work for the same calls
  (the same `log_batch` calls with MLflow's `http_request` answering at once: `Metric` objects, the client's checks,
  the request's JSON) is timed too, and the ratio given without it. Target: the studio at least 5 times faster.

Afterwards each run is read back through the same client (`get_metric_history`, `get_run`, `list_artifacts`): every
point in order, the 10 parameters, the artifact's size.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402
import sdk_logging  # noqa: E402  (its MLflow venv, `mlflow server` start and child-process helpers)

TARGET_SCRIPT_RATIO = 1.0  # MLflow's time / the studio's, at least
TARGET_BATCH_RATIO = 5.0
ARTIFACT_BYTES = 10 * 1024 * 1024

CHILD = """
import json, os, sys, time
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
mode, n, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3]
values = [1.0 / (i + 1) + (i % 7) * 0.125 for i in range(n)]
result = {"version": mlflow.__version__}
client = MlflowClient()
if mode == "script":
    started = time.perf_counter()
    mlflow.set_experiment("bench-script")
    with mlflow.start_run() as run:
        marks = [time.perf_counter()]
        for i in range(10):
            mlflow.log_param(f"param_{i}", i * 0.5)
        marks.append(time.perf_counter())
        for i, value in enumerate(values):
            mlflow.log_metric("loss", value, step=i)
        marks.append(time.perf_counter())
        mlflow.log_artifact(extra)
        marks.append(time.perf_counter())
    done = time.perf_counter()
    result.update(seconds=done - started, start=marks[0] - started, params_s=marks[1] - marks[0],
                  metrics=marks[2] - marks[1], artifact=marks[3] - marks[2], end=done - marks[3])
    run_id = run.info.run_id
elif mode == "script-client":  # the script's log_metric calls with each HTTP request answered at once
    import mlflow.utils.rest_utils as rest_utils

    class Answered:
        status_code, text = 200, "{}"

    rest_utils.http_request = lambda *args, **kwargs: Answered()
    started = time.perf_counter()
    for i, value in enumerate(values):
        mlflow.log_metric("loss", value, step=i, run_id="0" * 32)
    print(json.dumps({"seconds": time.perf_counter() - started}))
    sys.exit(0)
else:  # points [first, first + count) of the series of n, into run_id ("-": a new run)
    size, first, count, run_id = extra.split(":")
    size, first, count = int(size), int(first), int(count)
    if mode == "client":  # the same calls with the HTTP request itself answered at once: the client's own work
        import mlflow.utils.rest_utils as rest_utils

        class Answered:
            status_code, text = 200, "{}"

        rest_utils.http_request = lambda *args, **kwargs: Answered()
        started = time.perf_counter()
        for start in range(first, first + count, size):
            now = int(time.time() * 1000)
            client.log_batch("0" * 32, metrics=[Metric("loss", values[i], now, i)
                                                for i in range(start, min(first + count, start + size))])
        print(json.dumps({"seconds": time.perf_counter() - started}))
        sys.exit(0)
    if run_id == "-":
        run_id = client.create_run(mlflow.set_experiment("bench-batch").experiment_id).info.run_id
    started = time.perf_counter()
    for start in range(first, first + count, size):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric("loss", values[i], now, i)
                                          for i in range(start, min(first + count, start + size))])
    result["seconds"] = time.perf_counter() - started
    result["run_id"] = run_id
    if first + count < n:
        print(json.dumps(result))
        sys.exit(0)
    client.set_terminated(run_id)
history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
result["stored"] = len(history)
result["stored_ok"] = [m.step for m in history] == list(range(n)) and [m.value for m in history] == values
fetched = client.get_run(run_id)
result["params"] = len(fetched.data.params)
result["artifacts"] = {a.path: a.file_size for a in client.list_artifacts(run_id)}
print(json.dumps(result))
"""


def run_child(python: Path, env: dict[str, str], mode: str, n: int, extra: str) -> dict:
    return sdk_logging.child_json([str(python), "-c", CHILD, mode, str(n), extra], env, timeout=7200)


def check(side: str, mode: str, result: dict, n: int, artifact: Path | None) -> None:
    problems = []
    if result["stored"] != n or not result["stored_ok"]:
        problems.append(f"{result['stored']:,} of {n:,} points read back in order: {result['stored_ok']}")
    if mode == "script" and result["params"] != 10:
        problems.append(f"{result['params']} parameters read back")
    if mode == "script" and result["artifacts"].get(artifact.name) != ARTIFACT_BYTES:
        problems.append(f"artifacts read back: {result['artifacts']}")
    if problems:
        raise RuntimeError(f"{side} {mode}: " + "; ".join(problems))


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--calls", type=int, default=1_000, help="log_metric calls in the script")
    parser.add_argument("--repeat", type=int, default=3, help="script runs on each server (medians compared)")
    parser.add_argument("--batch-points", type=int, default=1_000_000, help="points through log_batch (0: skip)")
    parser.add_argument("--batch-size", type=int, default=1_000, help="metrics per log_batch call")
    parser.add_argument("--batch-rounds", type=int, default=4,
                        help="log_batch in this many rounds, the servers alternating (one run and series each)")
    parser.add_argument("--mlflow-workers", type=int, metavar="N", help="mlflow server --workers (default: MLflow's)")
    parser.add_argument("--only", default="script,batch", help="which parts: script, batch (comma-separated)")
    args = _services.parse(parser, concurrency=False, keep="keep the temporary folder (service logs, databases)")
    summary: list[str] = []
    python = sdk_logging.mlflow_python()

    with _services.Stack(keep=args.keep, worker=False) as stack:
        from studio.models import ApiToken

        _, token = ApiToken.issue(stack.user, "mlflow bench")
        mlflow_url = sdk_logging.start_mlflow(stack, python, args.mlflow_workers)
        artifact = stack.base / "weights.bin"
        artifact.write_bytes(bytes(range(256)) * (ARTIFACT_BYTES // 256))
        envs = {
            "studio": sdk_logging.clean_env(MLFLOW_TRACKING_URI=f"{stack.url}/mlflow/{stack.workspace.name}",
                                            MLFLOW_TRACKING_TOKEN=token, MLFLOW_DISABLE_TELEMETRY="true"),
            "mlflow": sdk_logging.clean_env(MLFLOW_TRACKING_URI=mlflow_url, MLFLOW_DISABLE_TELEMETRY="true"),
        }
        scripts: dict[str, list[dict]] = {"studio": [], "mlflow": []}
        version = ""
        parts = {part.strip() for part in args.only.split(",")}
        for round_ in range(args.repeat if "script" in parts else 0):
            for side in ("studio", "mlflow") if round_ % 2 == 0 else ("mlflow", "studio"):
                result = run_child(python, envs[side], "script", args.calls, str(artifact))
                check(side, "script", result, args.calls, artifact)
                version = result["version"]
                scripts[side].append(result)
                print(f"# {side} script: {result['seconds']:.2f} s (start {result['start']:.2f}, 10 params "
                      f"{result['params_s']:.2f}, {args.calls:,} log_metric {result['metrics']:.2f}, 10 MB artifact "
                      f"{result['artifact']:.2f}, end {result['end']:.2f})", flush=True)
        script_ratio = None
        if scripts["studio"]:
            medians = {side: {key: statistics.median(r[key] for r in results)
                              for key in ("seconds", "start", "params_s", "metrics", "artifact", "end")}
                       for side, results in scripts.items()}
            for side, label in (("mlflow", f"mlflow server {version}"), ("studio", "studio")):
                m = medians[side]
                summary.append(
                    f"{label}: script median {m['seconds']:.2f} s over {args.repeat} (10 log_param "
                    f"{m['params_s']:.2f} s, {args.calls:,} log_metric {m['metrics']:.2f} s = "
                    f"{m['metrics'] / args.calls * 1000:.1f} ms a call, 10 MB log_artifact {m['artifact']:.2f} s, "
                    f"set_experiment + start_run {m['start']:.2f} s, end_run {m['end']:.2f} s)")
            floor = run_child(python, envs["studio"], "script-client", args.calls, "-")["seconds"]
            summary.append(f"the client's own work in {args.calls:,} log_metric calls (each HTTP request answered at "
                           f"once, no server): {floor:.2f} s = {floor / args.calls * 1000:.1f} ms a call")
            script_ratio = medians["mlflow"]["seconds"] / medians["studio"]["seconds"]
            summary.append(f"script: mlflow server / studio = {script_ratio:.2f}x; target >= "
                           f"{TARGET_SCRIPT_RATIO:g}x: {'PASS' if script_ratio >= TARGET_SCRIPT_RATIO else 'FAIL'}")

        batch_ratio = None
        if args.batch_points and "batch" in parts:
            # In rounds, the two servers alternating, so load from elsewhere on the machine falls on both alike.
            rounds = max(1, args.batch_rounds)
            per_round = -(-args.batch_points // rounds)
            times = {"studio": 0.0, "mlflow": 0.0, "client": 0.0}
            run_ids = {"studio": "-", "mlflow": "-"}
            results = {}
            for round_ in range(rounds):
                first = round_ * per_round
                count = min(per_round, args.batch_points - first)
                for side in ("studio", "mlflow") if round_ % 2 == 0 else ("mlflow", "studio"):
                    extra = f"{args.batch_size}:{first}:{count}:{run_ids[side]}"
                    result = run_child(python, envs[side], "batch", args.batch_points, extra)
                    run_ids[side] = result["run_id"]
                    times[side] += result["seconds"]
                    results[side] = result
                    print(f"# {side} log_batch round {round_ + 1}/{rounds}: {count:,} points in "
                          f"{result['seconds']:.2f} s", flush=True)
                extra = f"{args.batch_size}:{first}:{count}:-"
                times["client"] += run_child(python, envs["studio"], "client", args.batch_points, extra)["seconds"]
            for side in ("studio", "mlflow"):
                check(side, "batch", results[side], args.batch_points, None)
            version = results["mlflow"]["version"]
            batch_ratio = times["mlflow"] / times["studio"]
            for side, label in (("mlflow", f"mlflow server {version}"), ("studio", "studio")):
                summary.append(f"{label}: {args.batch_points:,} points through log_batch ({args.batch_size:,} a "
                               f"call) in {times[side]:.2f} s, {args.batch_points / times[side]:,.0f} points/s; all "
                               "read back in order")
            summary.append(f"the client's own work in those calls (the same calls with each HTTP request answered "
                           f"at once, no server): {times['client']:.2f} s")
            summary.append(f"log_batch: mlflow server / studio = {batch_ratio:.1f}x; target >= {TARGET_BATCH_RATIO:g}x: "
                           f"{'PASS' if batch_ratio >= TARGET_BATCH_RATIO else 'FAIL'} (without the client's own "
                           f"work: {(times['mlflow'] - times['client']) / (times['studio'] - times['client']):.1f}x)")

    print("\n".join(summary))
    ok = ((script_ratio is None or script_ratio >= TARGET_SCRIPT_RATIO)
          and (batch_ratio is None or batch_ratio >= TARGET_BATCH_RATIO))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
