"""Experiment page server time with 100,000 runs: first page, a deep page, and a status filter.

    .venv/bin/python bench/experiment_page.py [--runs 100000]

Uses a throwaway SQLite database (WAL) and Django's test client in-process, so the figure is server time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"$ .venv/bin/python bench/experiment_page.py --runs {args.runs}")
    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    os.environ.update({"STUDIO_DATA_DIR": str(tmp), "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
                       "DJANGO_SETTINGS_MODULE": "studio.settings", "STUDIO_LOG_LEVEL": "WARNING"})
    sys.path.insert(0, str(ROOT))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client
    from django.utils import timezone

    from runs import snapshots
    from runs.models import Experiment, Run, RunStatus
    from studio.models import Workspace

    user = get_user_model().objects.create_user("bench", password="x")
    workspace = Workspace.create_with_owner("bench", user)
    experiment = Experiment.objects.create(workspace=workspace, name="big")
    snapshot = snapshots.stage_upload(SimpleUploadedFile("t.py", b"print(1)\n")).commit(workspace, user)
    target = workspace.compute_targets.get()
    statuses = [RunStatus.COMPLETED] * 8 + [RunStatus.FAILED, RunStatus.CANCELED]
    started = time.perf_counter()
    now = timezone.now()
    batch = []
    for i in range(args.runs):
        batch.append(Run(workspace=workspace, experiment=experiment, snapshot=snapshot, entry_script="t.py",
                         compute_target=target, status=statuses[i % len(statuses)], started_at=now, ended_at=now,
                         tags={"i": str(i)}))
        if len(batch) == 5000:
            Run.objects.bulk_create(batch)
            batch = []
    Run.objects.bulk_create(batch)
    print(f"created {args.runs} runs in {time.perf_counter() - started:.1f} s")

    client = Client()
    client.force_login(user)
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
