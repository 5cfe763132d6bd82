"""Chart data for a 10,000,000-point series: the run page's series_data endpoint over HTTP.

A throwaway studio (Redis, migrated SQLite, uvicorn; no worker) and a run whose `loss` series is a noisy sine with
one spike, stored through `runs.metrics.append_scalars` in batches of 500,000 points (numpy-generated). An httpx
client signed in with a session made in-process then GETs `/w/<ws>/runs/<id>/metrics/<series>/data/?x=step` 20
times after one untimed warm-up, and the same for a 1,000-point series for comparison. Prints median, p95 and max
time per request (client side, keep-alive connection), the payload size, the points returned and whether the
spike is in them. Targets for the big series: p95 under 300 ms and a payload under 200 KB.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

TARGET_MS = 300.0
TARGET_KB = 200.0
BATCH = 500_000
SPIKE_VALUE = 25.0


def make_series(run, name: str, points: int, *, seed: int) -> tuple[int, float]:
    """A noisy sine of `points` points with one spike (SPIKE_VALUE, far above the noise); returns its step and the
    seconds spent storing."""
    import numpy as np

    from runs import metrics

    rng = np.random.default_rng(seed)
    spike = int(points * 0.6543) + 7  # not on a chunk or batch boundary
    started = time.perf_counter()
    t0 = time.time()
    for start in range(0, points, BATCH):
        steps = np.arange(start, min(points, start + BATCH), dtype=np.float64)
        values = np.sin(steps * (2 * np.pi / max(points / 5, 1))) + rng.normal(0.0, 0.2, len(steps))
        if start <= spike < start + len(steps):
            values[spike - start] = SPIKE_VALUE
        times = t0 + steps * 0.001
        metrics.append_scalars(run, name, steps, values, times)
    return spike, time.perf_counter() - started


def measure(client, url: str, repeat: int, spike: int) -> dict:
    client.get(url).raise_for_status()  # warm-up: connection, session, the first read of the chunks
    times, response = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    payload = response.json()
    xs, ys = payload["x"], payload["y"]
    spike_kept = any(x == spike and y == SPIKE_VALUE for x, y in zip(xs, ys, strict=True))
    return {
        "median": statistics.median(times),
        "p95": _services.percentile(times, 95),
        "max": max(times),
        "kb": len(response.content) / 1024,
        "points": len(ys),
        "count": payload.get("count"),
        "spike": spike_kept,
    }


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=1_000, help="points of the comparison series")
    parser.add_argument("--repeat", type=int, default=20)
    args = _services.parse(parser, concurrency=False)

    with _services.Stack(keep=args.keep, worker=False) as stack:
        from django.urls import reverse

        from runs.models import MetricSeries, RunStatus

        run = stack.running_run("charts")
        big_spike, seconds = make_series(run, "loss", args.points, seed=1)
        print(f"# stored {args.points:,} points in {seconds:.1f} s (append_scalars, {BATCH:,} per call)", flush=True)
        small_spike, _ = make_series(run, "small", args.small, seed=2)
        run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))

        results = {}
        with stack.session_client() as client:
            for name, spike in (("loss", big_spike), ("small", small_spike)):
                series = MetricSeries.objects.get(run=run, name=name)
                url = reverse("series_data", args=[_services.WORKSPACE, run.pk, series.pk]) + "?x=step"
                results[name] = measure(client, url, args.repeat, spike)
                r = results[name]
                print(f"# GET {url}: median {r['median']:.1f} ms, p95 {r['p95']:.1f} ms, max {r['max']:.1f} ms, "
                      f"{r['kb']:.1f} KB, {r['points']} points", flush=True)  # fmt: skip

    lines = []
    for name, points in (("loss", args.points), ("small", args.small)):
        r = results[name]
        line = (
            f"series_data for {points:,} points over {args.repeat} GETs: median {r['median']:.1f} ms, "
            f"p95 {r['p95']:.1f} ms, max {r['max']:.1f} ms; payload {r['kb']:.1f} KB, {r['points']:,} points "
            f"returned (count {r['count']:,}), spike in payload: {'yes' if r['spike'] else 'NO'}"
        )
        if name == "loss":
            ok_time, ok_size = r["p95"] < TARGET_MS, r["kb"] < TARGET_KB
            line += (
                f"; targets p95 < {TARGET_MS:.0f} ms: {'PASS' if ok_time else 'FAIL'}, "
                f"payload < {TARGET_KB:.0f} KB: {'PASS' if ok_size else 'FAIL'}"
            )
        lines.append(line)
    print("\n".join(lines))
    big = results["loss"]
    return 0 if big["p95"] < TARGET_MS and big["kb"] < TARGET_KB and big["spike"] else 1


if __name__ == "__main__":
    sys.exit(main())
