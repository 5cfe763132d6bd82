"""Recovery from a killed worker: kill -9 the worker while a run prints a line and logs a metric point every 10 ms,
then measure how long until the run is watched again, and count what was lost.

The studio runs as `studioctl.py start` runs it (supervisord, embedded Redis with a password, the web server, the run
worker, the control worker, beat), on a throwaway SQLite database. Each round submits a run of --steps steps and,
once it printed --kill-at lines, sends SIGKILL to:

- `main`: the worker's main process (supervisord starts a new one, which adopts the run as soon as it is ready);
- `child`: the pool process watching the run (the main process stays; the reaper sees the dead watcher and another
  pool process adopts the run).

Times: `restart` = the new worker process started (from /proc) -> the run's owner is the new process (target: under
5 s); `kill` = SIGKILL -> watched again. Lost: console lines missing from the log file or from the live stream, and
metric points missing, against what the script printed and logged (target: 0).
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

from tests import services  # noqa: E402

TARGET_SECONDS = 5.0
SCRIPT = """\
import os, time
from studio_sdk import Run
run = Run.get_context()
steps = int(os.environ["STEPS"])
for step in range(steps):
    print(f"line {step}", flush=True)
    run.log("loss", 1.0 / (step + 1), step=step)
    time.sleep(0.01)
print("done", flush=True)
"""
LINE = re.compile(r"^(line \d+|done)$")


def process_start_epoch(pid: int) -> float:
    """When a process started, in epoch seconds (from /proc: boot time + start ticks)."""
    with open(f"/proc/{pid}/stat") as handle:
        ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as handle:
        boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def lost(stack, run_id: int, steps: int) -> tuple[int, int, int]:
    """(lines missing from the log, lines missing or repeated in the live stream, points missing)."""
    from runs import storage
    from runs.live import stream_key
    from runs.models import MetricSeries

    expected = [f"line {i}" for i in range(steps)] + ["done"]
    logged = [line for line in storage.console_log_path(run_id).read_text().splitlines() if LINE.match(line)]
    streamed = []
    for _, fields in stack.redis().xrange(stream_key(run_id)):
        if fields.get(b"k") == b"log":
            streamed += [line for line in fields[b"t"].decode().split("\n") if LINE.match(line)]
    count = MetricSeries.objects.get(run_id=run_id, name="loss").count
    stream_off = len(set(expected) - set(streamed)) + (len(streamed) - len(set(streamed)))
    return len(set(expected) - set(logged)), stream_off, steps - count


def one_round(stack, token: str, mode: str, steps: int, kill_at: int) -> dict:
    from runs import storage
    from runs.models import Run

    run_id = stack.submit(token, SCRIPT, workspace=_services.WORKSPACE, env_vars=f"STEPS={steps}")
    log = storage.console_log_path(run_id)
    services.wait_until(lambda: log.exists() and log.read_text().count("\nline ") >= kill_at, 60, "the run to print")
    owner = Run.objects.get(pk=run_id).worker
    victim = stack.pid_of("worker") if mode == "main" else int(owner.rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    watched_at = services.wait_until(
        lambda: time.time() if Run.objects.get(pk=run_id).worker not in (owner, "") else None, 120,
        "the run to be adopted", interval=0.01)
    new_owner = int(Run.objects.get(pk=run_id).worker.rsplit(":", 1)[1])
    started = process_start_epoch(stack.pid_of("worker")) if mode == "main" else process_start_epoch(new_owner)
    run = stack_wait_final(run_id)
    lines_lost, stream_off, points_lost = lost(stack, run_id, steps)
    return {"run": run_id, "status": run.status, "kill": watched_at - killed_at,
            "restart": watched_at - max(started, killed_at), "lines": lines_lost, "stream": stream_off,
            "points": points_lost}


def stack_wait_final(run_id: int):
    from runs.models import Run

    return services.wait_until(lambda: (lambda r: r if r.is_final else None)(Run.objects.get(pk=run_id)), 300,
                               f"run {run_id} to end", interval=0.1)


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per kind of kill")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--kill-at", type=int, default=300, help="lines printed before the kill")
    parser.add_argument("--modes", default="main,child")
    args = _services.parse(parser, concurrency=True)
    from tests.stack import SupervisedStack

    base = Path(tempfile.mkdtemp(prefix="studio-bench-recovery-"))
    base.chmod(0o711)  # each run's own user reaches its working folder through here
    data_dir = base / "data"
    data_dir.mkdir(mode=0o711)
    data_dir.chmod(0o711)
    env = services.service_env(database_url=f"sqlite:///{base / 'bench.sqlite3'}", redis_url="", data_dir=data_dir)
    env.pop("STUDIO_REDIS_URL")
    env["STUDIO_SECRET_KEY"] = "bench-secret-key-not-secret-" + "x" * 30
    _services.migrate(env)
    stack = SupervisedStack(env, data_dir, concurrency=args.concurrency)
    env["STUDIO_REDIS_URL"] = f"redis://:{stack.password}@127.0.0.1:{stack.redis_port}/0"
    try:
        _services.setup_django(env)
        from django.contrib.auth import get_user_model

        from studio.models import ApiToken, Workspace

        user = get_user_model().objects.create_user(_services.USERNAME, password=_services.PASSWORD)
        Workspace.create_with_owner(_services.WORKSPACE, user)
        token = ApiToken.issue(user, "bench")[1]
        print(f"# supervised studio at {stack.url}, worker -c {args.concurrency}, data {base}", flush=True)
        print(f"{'mode':>5} {'run':>4} {'status':>9} {'kill->watched':>13} {'restart->watched':>16} "
              f"{'lines lost':>10} {'stream off':>10} {'points lost':>11}")
        results = []
        for mode in args.modes.split(","):
            for _ in range(args.rounds):
                row = one_round(stack, token, mode, args.steps, args.kill_at)
                results.append((mode, row))
                print(f"{mode:>5} {row['run']:>4} {row['status']:>9} {row['kill']:13.2f} {row['restart']:16.2f} "
                      f"{row['lines']:>10} {row['stream']:>10} {row['points']:>11}", flush=True)
    finally:
        stack.stop()
    verdict = "PASS"
    for mode in args.modes.split(","):
        rows = [row for m, row in results if m == mode]
        worst = max(row["restart"] for row in rows)
        lost_total = sum(row["lines"] + row["stream"] + row["points"] for row in rows)
        ok = worst < TARGET_SECONDS and lost_total == 0 and all(row["status"] == "Completed" for row in rows)
        verdict = verdict if ok else "FAIL"
        print(f"kill {mode}: restart -> watched median {statistics.median(r['restart'] for r in rows):.2f} s, "
              f"max {worst:.2f} s; kill -> watched median {statistics.median(r['kill'] for r in rows):.2f} s; "
              f"lost {lost_total} lines/points; {'PASS' if ok else 'FAIL'}")
    print(f"target: watched again < {TARGET_SECONDS:.0f} s after the restart, 0 lost: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
