"""A system-managed environment on local compute: a virtualenv made once per definition hash and reused."""

from __future__ import annotations

import pytest

from environments import venvs
from environments.models import Environment, EnvironmentKind
from runs import storage
from runs.models import RunStatus
from tests.conftest import login, py_upload
from tests.runs.test_execution_e2e import submit, wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_local_run_gets_its_environments_packages_from_a_cached_virtualenv(client, cast, workspace, worker):
    env = Environment(workspace=workspace, name="six-local", kind=EnvironmentKind.SYSTEM_MANAGED,
                      python_packages="six==1.16.0").save_new_version()
    login(client, cast["carol"])
    script = "import six, sys\nprint('six', six.__version__, sys.prefix, flush=True)\n"
    first = submit(client, workspace, py_upload(script), environment="six-local")
    wait_final(first, timeout=180)
    log = storage.console_log_path(first.pk).read_text()
    assert first.status == RunStatus.COMPLETED, first.reason + log
    from studio.sandbox import run_python

    venv = venvs.venv_dir(env.definition_hash, run_python())
    assert f"six 1.16.0 {venv}" in log
    assert "six==1.16.0" in (venv / "frozen.txt").read_text()
    made_at = (venv / venvs.MARKER).stat().st_mtime
    second = submit(client, workspace, py_upload(script), environment="six-local")
    wait_final(second, timeout=60)
    assert second.status == RunStatus.COMPLETED
    assert (venv / venvs.MARKER).stat().st_mtime == made_at  # reused, not made again


def test_a_package_that_cannot_install_fails_the_run_with_the_installers_words(client, cast, workspace, worker):
    Environment(workspace=workspace, name="broken", kind=EnvironmentKind.SYSTEM_MANAGED,
                python_packages="this-package-does-not-exist-studio==1.0").save_new_version()
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("print('never')\n"), environment="broken")
    wait_final(run, timeout=120)
    assert run.status == RunStatus.FAILED
    assert run.reason.startswith("Installing the packages failed") and "this-package-does-not-exist-studio" in run.reason
