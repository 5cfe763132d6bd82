"""Experiment page server time with 100,000 runs: first page, a deep page, and a status filter.

    .venv/bin/python bench/experiment_page.py [--runs 100000]

Uses a throwaway SQLite database (WAL) and Django's test client in-process, so the figure is server time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"$ .venv/bin/python bench/experiment_page.py --runs {args.runs}")
    _services.django_in_process(Path(tempfile.mkdtemp(prefix="studio-bench-")))
    from runs.models import Run

    user, experiment, snapshot = _services.bench_experiment()
    started = time.perf_counter()
    _services.bulk_runs(experiment, snapshot, args.runs)
    print(f"created {args.runs} runs in {time.perf_counter() - started:.1f} s")

    client = _services.django_client(user)
    url = "/w/bench/experiments/big/"
    deep = Run.objects.order_by("id").values_list("id", flat=True)[100]
    cases = {"first page": url, "deep page (before the 100th oldest run)": f"{url}?before={deep}",
             "status filter (Failed)": f"{url}?status=Failed", "experiment list": "/w/bench/experiments/"}
    print(f"{'page':45} {'median ms':>10} {'max ms':>8}")
    for name, path in cases.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, response.status_code
        print(f"{name:45} {statistics.median(times):10.1f} {max(times):8.1f}")


if __name__ == "__main__":
    main()
