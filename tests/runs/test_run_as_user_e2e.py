"""With STUDIO_LOCAL_RUN_USER, local user code runs as another OS user and cannot read the studio's files."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from runs import storage
from runs.models import RunStatus
from studio.models import ComputeTarget
from tests import services
from tests.conftest import login, py_upload
from tests.runs.test_execution_e2e import submit, wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _can_run_as_nobody() -> str:
    if os.geteuid() != 0:
        return "the worker must run as root to switch users"
    if SYSTEM_PYTHON is None:
        return "no system python3 that the user nobody can execute"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "there is no user nobody"
    return ""


@pytest.mark.skipif(bool(_can_run_as_nobody()), reason=_can_run_as_nobody() or "ok")
def test_a_sandboxed_run_cannot_read_the_studios_secret_key_or_database(client, cast, workspace, e2e_env, tmp_path, settings):
    work_dir = Path(tempfile.mkdtemp(prefix="studio-work-"))  # outside pytest's private (0700) temp folders
    os.chmod(work_dir, 0o755)
    ComputeTarget.objects.create(workspace=workspace, name="sandboxed", queue="sandboxed", python_path=SYSTEM_PYTHON)
    env = {**e2e_env, "STUDIO_LOCAL_RUN_USER": "nobody", "STUDIO_WORK_DIR": str(work_dir)}
    worker = services.start_worker(env, tmp_path, queues="sandboxed", concurrency=1)
    data_dir = env["STUDIO_DATA_DIR"]
    secret_file = os.path.join(data_dir, "secret_key")
    os.makedirs(data_dir, exist_ok=True)
    if not os.path.exists(secret_file):
        with open(secret_file, "w") as handle:
            handle.write("not-for-user-code")
    script = (
        "import os\n"
        "print('uid', os.getuid())\n"
        f"for path in [{secret_file!r}, {data_dir!r}]:\n"
        "    try:\n"
        "        print(path, 'READABLE', open(path).read()[:5] if os.path.isfile(path) else os.listdir(path))\n"
        "    except OSError:\n"
        "        print(path, 'denied')\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/result.txt', 'w').write('ok')\n"
    )
    try:
        login(client, cast["carol"])
        run = submit(client, workspace, py_upload(script), compute_target="sandboxed")
        wait_final(run)
    finally:
        worker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    log = storage.console_log_path(run.pk).read_text()
    assert run.status == RunStatus.COMPLETED, run.reason + log
    assert f"uid {pwd.getpwnam('nobody').pw_uid}" in log
    assert "READABLE" not in log
    assert log.count("denied") == 2
    assert (storage.run_dir(run.pk) / "outputs" / "result.txt").read_text() == "ok"
