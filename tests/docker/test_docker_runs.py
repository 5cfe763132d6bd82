"""Runs in containers on a real Docker engine, with environments built into cached images."""

from __future__ import annotations

import contextlib
import time

import docker as docker_sdk
import pytest

from environments.models import BuildStatus, Environment, EnvironmentImage, EnvironmentKind
from runs import metrics, storage
from runs.compute.docker import container_name
from runs.models import MetricSeries, Run, RunStatus
from tests.conftest import login, py_upload
from tests.runs.test_execution_e2e import submit, wait_final
from tests.services import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def environment(workspace, name: str, packages: str) -> Environment:
    env = Environment(workspace=workspace, name=name, kind=EnvironmentKind.SYSTEM_MANAGED, python_packages=packages)
    return env.save_new_version()


@pytest.fixture(scope="module")
def cleanup_images():
    made: list[str] = []
    yield made
    client = docker_sdk.from_env()
    for name in made:
        with contextlib.suppress(docker_sdk.errors.DockerException):
            client.images.remove(name, force=True)


def test_a_run_imports_a_package_its_environment_installed_and_its_outputs_come_out(
    client, cast, workspace, docker_target, docker_worker, cleanup_images
):
    env = environment(workspace, "with-six", "six==1.16.0")
    cleanup_images.append(env.image_name)
    login(client, cast["carol"])
    script = (
        "import os, six, sys\n"
        "print('six', six.__version__, 'in', sys.executable, flush=True)\n"
        "print('socket', os.path.exists('/var/run/docker.sock'), 'secrets', "
        "[k for k in os.environ if k in ('DATABASE_URL', 'STUDIO_REDIS_URL', 'STUDIO_SECRET_KEY')], flush=True)\n"
        "from studio_sdk import Run\n"
        "run = Run.get_context()\n"
        "for step in range(3):\n"
        "    run.log('loss', 1.0 / (step + 1))\n"
        "os.makedirs('outputs/nested', exist_ok=True)\n"
        "open('outputs/nested/result.txt', 'w').write('from the container')\n"
    )
    run = submit(client, workspace, py_upload(script), compute_target="docker", environment="with-six")
    wait_final(run, timeout=300)
    log = storage.console_log_path(run.pk).read_text()
    assert run.status == RunStatus.COMPLETED, run.reason + log
    assert "six 1.16.0 in /opt/studio/venv/bin/python" in log
    assert "socket False secrets []" in log
    assert (storage.run_dir(run.pk) / "outputs" / "nested" / "result.txt").read_text() == "from the container"
    points, total = metrics.read_scalars(MetricSeries.objects.get(run=run, name="loss"))
    assert total == 3 and points.values.tolist()[0] == 1.0
    image = EnvironmentImage.objects.get(definition_hash=env.definition_hash)
    assert image.status == BuildStatus.SUCCEEDED and "six==1.16.0" in image.resolved_packages
    with pytest.raises(docker_sdk.errors.NotFound):
        docker_sdk.from_env().containers.get(container_name(run.pk))


def test_an_identical_definition_under_another_name_reuses_the_image(
    client, cast, workspace, docker_target, docker_worker, cleanup_images
):
    first = environment(workspace, "six-a", "six==1.16.0")
    second = environment(workspace, "six-b", "six==1.16.0")
    assert first.definition_hash == second.definition_hash
    cleanup_images.append(first.image_name)
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("import six\nprint('ok', six.__version__)\n"), compute_target="docker",
                 environment="six-a")
    wait_final(run, timeout=300)
    assert run.status == RunStatus.COMPLETED, run.reason
    builds_before = EnvironmentImage.objects.get(definition_hash=first.definition_hash).build_count
    run = submit(client, workspace, py_upload("import six\nprint('ok', six.__version__)\n"), compute_target="docker",
                 environment="six-b")
    wait_final(run, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.reason
    assert EnvironmentImage.objects.filter(definition_hash=first.definition_hash).count() == 1
    assert EnvironmentImage.objects.get(definition_hash=first.definition_hash).build_count == builds_before == 1


def test_cancel_stops_the_container(client, cast, workspace, docker_target, docker_worker):
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"),
                 compute_target="docker")
    wait_until(lambda: "sleeping" in _log(run), 120, "the container to start")
    client.post(f"/w/{workspace.name}/runs/{run.pk}/cancel/")
    wait_final(run, timeout=60)
    assert run.status == RunStatus.CANCELED and "Canceled by carol" in run.reason
    with pytest.raises(docker_sdk.errors.NotFound):
        docker_sdk.from_env().containers.get(container_name(run.pk))


def test_a_run_over_its_memory_limit_is_reported_as_killed(client, cast, workspace, docker_target, docker_worker):
    login(client, cast["carol"])
    script = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    run = submit(client, workspace, py_upload(script), compute_target="docker", memory_limit_mb="64")
    wait_final(run, timeout=120)
    assert run.status == RunStatus.FAILED
    assert run.exit_code == 137 and "out of memory" in run.reason
    assert run.resources == {"memory_limit_mb": 64}


def test_a_stale_container_of_the_same_run_is_removed_not_doubled(client, cast, workspace, docker_target, docker_worker):
    from runs import execution
    from tests.conftest import TEST_BASE_IMAGE

    login(client, cast["carol"])
    docker_target.queue = "served-by-this-test"  # this test process plays the worker that finds the stale one
    docker_target.save()
    run = submit(client, workspace, py_upload("print('fresh container')\n"), compute_target="docker")
    engine = docker_sdk.from_env()
    from runs.compute.docker import labels

    stale = engine.containers.create(TEST_BASE_IMAGE, ["sleep", "600"], name=container_name(run.pk),
                                     labels=labels(run.pk))
    execution.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.reason
    assert "fresh container" in _log(run)
    with pytest.raises(docker_sdk.errors.NotFound):
        engine.containers.get(stale.id)


def _log(run: Run) -> str:
    path = storage.console_log_path(run.pk)
    return path.read_text() if path.exists() else ""


def test_the_run_waits_in_preparing_while_its_image_builds(client, cast, workspace, docker_target, docker_worker, cleanup_images):
    env = environment(workspace, "slow-build", "six==1.16.0\n# a comment keeps the hash\nsix==1.16.0")
    cleanup_images.append(env.image_name)
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("print('built and running')\n"), compute_target="docker",
                 environment="slow-build")
    seen = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run.refresh_from_db()
        seen.add(run.status)
        if run.is_final:
            break
        time.sleep(0.05)
    assert run.status == RunStatus.COMPLETED, run.reason
    assert RunStatus.PREPARING in seen
    statuses = list(run.status_changes.values_list("status", flat=True))
    assert statuses[:3] == ["Queued", "Preparing", "Starting"]


def test_the_beat_task_removes_containers_of_ended_runs_only(cast, workspace, docker_target, docker_engine):
    from runs.execution import sweep_targets
    from tests.conftest import TEST_BASE_IMAGE, make_run

    ended, going = make_run(workspace, cast["carol"]), make_run(workspace, cast["carol"])
    Run.objects.filter(pk=ended.pk).update(status=RunStatus.COMPLETED)
    Run.objects.filter(pk=going.pk).update(status=RunStatus.RUNNING)
    from runs.compute.docker import labels

    made = [docker_engine.containers.create(TEST_BASE_IMAGE, ["true"], name=f"studio-test-leftover-{run.pk}",
                                            labels=labels(run.pk)) for run in (ended, going)]
    foreign = docker_engine.containers.create(TEST_BASE_IMAGE, ["true"], name=f"another-studios-{ended.pk}",
                                              labels={"studio.run": str(ended.pk), "studio.instance": "another"})
    made.append(foreign)
    try:
        assert sweep_targets() >= 1
        with pytest.raises(docker_sdk.errors.NotFound):
            docker_engine.containers.get(made[0].id)
        assert docker_engine.containers.get(made[1].id).labels["studio.run"] == str(going.pk)
        assert docker_engine.containers.get(foreign.id).labels["studio.instance"] == "another"  # not ours: kept
    finally:
        for container in made:
            with contextlib.suppress(docker_sdk.errors.NotFound):
                container.remove(force=True)


def test_the_maximum_duration_stops_the_container(client, cast, workspace, docker_target, docker_worker):
    login(client, cast["carol"])
    run = submit(client, workspace, py_upload("import time\nprint('long', flush=True)\ntime.sleep(600)\n"),
                 compute_target="docker", max_duration_seconds="3")
    wait_final(run, timeout=120)
    assert run.status == RunStatus.CANCELED and "Maximum duration of 3 s reached" in run.reason
    with pytest.raises(docker_sdk.errors.NotFound):
        docker_sdk.from_env().containers.get(container_name(run.pk))


def test_a_run_rebuilds_its_image_when_the_engine_lost_it(client, cast, workspace, docker_target, docker_worker, cleanup_images):
    env = environment(workspace, "pruned", "six==1.16.0\nidna==3.10")
    cleanup_images.append(env.image_name)
    login(client, cast["carol"])
    first = submit(client, workspace, py_upload("import idna\nprint('idna ok')\n"), compute_target="docker",
                   environment="pruned")
    wait_final(first, timeout=300)
    assert first.status == RunStatus.COMPLETED, first.reason
    docker_sdk.from_env().images.remove(env.image_name, force=True)  # pruned behind the studio's back
    second = submit(client, workspace, py_upload("import idna\nprint('idna again')\n"), compute_target="docker",
                    environment="pruned")
    wait_final(second, timeout=300)
    assert second.status == RunStatus.COMPLETED, second.reason
    assert "idna again" in _log(second)


def test_build_settings_reach_the_build(workspace, docker_engine, settings, cleanup_images):
    from environments import builds

    settings.STUDIO_BUILD_PIP_INDEX_URL = "http://127.0.0.1:9/simple"
    env = Environment(workspace=workspace, name="own-index-2", kind=EnvironmentKind.SYSTEM_MANAGED,
                      python_packages="six==1.16.0", dockerfile_steps="RUN echo private-index").save_new_version()
    cleanup_images.append(env.image_name)
    image = builds.ensure_image(env, enqueue=False)
    builds.build(image.pk)
    image.refresh_from_db()
    assert image.status == BuildStatus.FAILED
    assert "127.0.0.1" in builds.log_path(image).read_text()
    assert "pip install" in image.failed_step
