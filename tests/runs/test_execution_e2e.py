"""End to end through a real Celery worker and a real Redis: submit, execute, watch, collect."""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest
from django.urls import reverse

from runs import storage
from runs.models import Run, RunStatus
from tests.conftest import login, py_upload, zip_upload
from tests.services import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def submit(client, workspace, upload, **fields):
    data = {"experiment": "e2e", "source": upload, "compute_target": "local", **fields}
    response = client.post(reverse("run_submit", args=[workspace.name]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    run = Run.objects.latest("id")
    assert response.url == reverse("run_detail", args=[workspace.name, run.pk])
    return run


def wait_final(run: Run, timeout: float = 60) -> Run:
    def final():
        run.refresh_from_db()
        return run.is_final

    wait_until(final, timeout, f"run {run.pk} to end (status {run.status})", interval=0.1)
    return run


def test_the_example_completes_with_its_model_in_outputs(client, cast, workspace, worker, examples_dir,
                                                        sklearn_environment):
    login(client, cast["carol"])
    source = (examples_dir / "digits" / "train.py").read_text()
    run = submit(client, workspace, py_upload(source), arguments="--epochs 3", environment="Studio-sklearn")
    wait_final(run, timeout=300)  # the first run of the environment installs its packages
    assert run.status == RunStatus.COMPLETED, run.reason
    assert run.exit_code == 0
    files = {f["path"] for f in storage.list_stored_files(run.pk)}
    assert "outputs/model.pkl" in files and "logs/std_log.txt" in files
    page = client.get(reverse("run_detail", args=[workspace.name, run.pk])).content.decode()
    assert "epoch   3" in page and "outputs/model.pkl" in page
    statuses = list(run.status_changes.values_list("status", flat=True))
    assert statuses == ["Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed"]


def test_a_failing_script_ends_failed_with_its_exit_code_and_stderr(client, cast, workspace, worker):
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("import sys\nprint('about to fail')\nraise SystemExit('bad input: 42')\n"))
    wait_final(run)
    assert run.status == RunStatus.FAILED
    assert run.exit_code == 1
    assert "Exit code 1." in run.reason and "bad input: 42" in run.reason


def test_cancel_ends_every_process_of_the_run(client, cast, workspace, worker):
    login(client, cast["carol"])
    token = f"{time.time_ns()}"  # names the run's processes, seen from outside its sandbox
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600) # {token}'])\n"
        "print('started child', flush=True)\n"
        "time.sleep(600)\n"
    )
    run = submit(client, workspace, py_upload(script))
    wait_until(lambda: _processes_named(token), 30, "the child process to start")
    response = client.post(reverse("run_cancel", args=[workspace.name, run.pk]))
    assert response.status_code == 302
    wait_final(run, timeout=30)
    assert run.status == RunStatus.CANCELED
    assert "Canceled by carol" in run.reason
    wait_until(lambda: not _processes_named(token), 10, "the child process to end")


def _processes_named(token: str) -> list[int]:
    """Live processes whose command line holds `token`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if token.encode() not in handle.read():
                    continue
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_the_maximum_duration_is_enforced(client, cast, workspace, worker):
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("import time\nprint('sleeping')\ntime.sleep(600)\n"),
                 max_duration_seconds="2")
    wait_final(run, timeout=30)
    assert run.status == RunStatus.CANCELED
    assert "Maximum duration of 2 s reached" in run.reason
    assert (run.ended_at - run.started_at).total_seconds() < 10


def test_a_script_printing_100000_lines_keeps_every_line(client, cast, workspace, worker):
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("for i in range(100000):\n    print(f'line {i}')\n"))
    wait_final(run, timeout=120)
    assert run.status == RunStatus.COMPLETED, run.reason
    lines = storage.console_log_path(run.pk).read_text().splitlines()
    assert lines == [f"line {i}" for i in range(100000)]
    full = client.get(reverse("run_log", args=[workspace.name, run.pk]))
    assert b"".join(full.streaming_content).count(b"\n") == 100000


def test_the_script_sees_its_variables_and_arguments_but_none_of_the_studios_secrets(client, cast, workspace, worker, settings):
    login(client, cast["carol"])
    script = "import os, sys\nprint('ARGS', sys.argv[1:])\nfor k, v in sorted(os.environ.items()):\n    print(f'{k}={v}')\n"
    run = submit(client, workspace, py_upload(script), arguments="--name 'two words' $HOME",
                 env_vars="GREETING=hello world\nLR=0.1")
    wait_final(run)
    log = storage.console_log_path(run.pk).read_text()
    assert "ARGS ['--name', 'two words', '$HOME']" in log
    assert "GREETING=hello world" in log and "LR=0.1" in log
    assert f"STUDIO_RUN_ID={run.pk}" in log
    for secret in ("DATABASE_URL", "STUDIO_REDIS_URL", "STUDIO_SECRET_KEY", "DJANGO_SETTINGS_MODULE"):
        assert f"{secret}=" not in log
    assert settings.SECRET_KEY not in log


def test_a_zip_source_runs_its_entry_script_with_its_modules(client, cast, workspace, worker):
    login(client, cast["carol"])
    upload = zip_upload({"project/src/helper.py": "VALUE = 7\n",
                         "project/src/main.py": "from helper import VALUE\nprint('value', VALUE)\n"
                                                "import os\nos.makedirs('logs', exist_ok=True)\nopen('logs/extra.txt','w').write('x')\n"})
    run = submit(client, workspace, upload, entry_script="src/main.py")
    wait_final(run)
    assert run.status == RunStatus.COMPLETED, run.reason
    assert "value 7" in storage.console_log_path(run.pk).read_text()
    response = client.get(reverse("run_files_zip", args=[workspace.name, run.pk]))
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert sorted(names) == ["logs/extra.txt", "logs/std_log.txt"]


def test_a_duplicate_delivery_never_starts_a_second_process(client, cast, workspace, worker):
    from runs.tasks import execute_run

    login(client, cast["carol"])
    script = "print('started', flush=True)\nimport time\ntime.sleep(1)\n"
    run = submit(client, workspace, py_upload(script))
    execute_run.apply_async(args=[run.pk], queue="local")  # the same message again
    wait_final(run)
    assert run.status == RunStatus.COMPLETED
    time.sleep(1.5)
    assert storage.console_log_path(run.pk).read_text().count("started") == 1
