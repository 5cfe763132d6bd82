"""Experiment page server time with 100,000 runs: first page, a deep page, and a status filter; with two parameters
per run (`lr`, a number, and `optimizer`, text; shown as columns), also sorted and filtered by a parameter.

    .venv/bin/python bench/experiment_page.py [--runs 100000] [--no-parameters]

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
    parser.add_argument("--no-parameters", action="store_true", help="runs without parameters (as before they existed)")
    args = parser.parse_args()
    print(f"$ .venv/bin/python bench/experiment_page.py --runs {args.runs}{' --no-parameters' * args.no_parameters}")
    _services.django_in_process(Path(tempfile.mkdtemp(prefix="studio-bench-")))
    from runs.models import Run

    user, experiment, snapshot = _services.bench_experiment()
    started = time.perf_counter()
    _services.bulk_runs(experiment, snapshot, args.runs)
    print(f"created {args.runs} runs in {time.perf_counter() - started:.1f} s")
    if not args.no_parameters:
        started = time.perf_counter()
        add_parameters(experiment)
        print(f"gave each run 2 parameters in {time.perf_counter() - started:.1f} s")

    client = _services.django_client(user)
    url = "/w/bench/experiments/big/"
    deep = Run.objects.order_by("id").values_list("id", flat=True)[100]
    cases = {"first page": url, "deep page (before the 100th oldest run)": f"{url}?before={deep}",
             "status filter (Failed)": f"{url}?status=Failed", "experiment list": "/w/bench/experiments/"}
    if not args.no_parameters:
        middle = Run.objects.order_by("id").values_list("id", flat=True)[args.runs // 2]
        cases.update({
            "sorted by parameter lr": f"{url}?sort=param:lr",
            "sorted by parameter lr, a middle page": f"{url}?sort=param:lr&below={middle}",
            "parameter filter optimizer=sgd": f"{url}?param_filter=optimizer%3Dsgd",
            "parameter range lr:0:0.001, sorted by it": f"{url}?param_filter=lr:0:0.001&sort=-param:lr",
        })
    print(f"{'page':45} {'median ms':>10} {'max ms':>8}")
    for name, path in cases.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, response.status_code
        print(f"{name:45} {statistics.median(times):10.1f} {max(times):8.1f}")


def add_parameters(experiment) -> None:
    """`lr` (one of 1,000 numbers) and `optimizer` (one of three words) for every run, 10,000 rows at a time."""
    from runs.models import Run, RunParameter
    from runs.parameters import row

    optimizers = ["adam", "sgd", "rmsprop"]
    batch = []
    for run in Run.objects.filter(experiment=experiment).only("id", "experiment_id").iterator(5000):
        batch += [row(run, "lr", (run.pk % 1000) / 100_000, "script"),
                  row(run, "optimizer", optimizers[run.pk % 3], "arguments")]
        if len(batch) >= 10_000:
            RunParameter.objects.bulk_create(batch)
            batch = []
    RunParameter.objects.bulk_create(batch)


if __name__ == "__main__":
    main()
