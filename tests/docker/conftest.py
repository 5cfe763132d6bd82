"""Docker tests run against a real engine. They are skipped, saying why, when none answers or the base image is
missing (`.ci/run` starts an engine and makes the base image with debootstrap)."""

from __future__ import annotations

import pytest

from tests import services
from tests.conftest import TEST_BASE_IMAGE


def _engine_problem() -> str:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as error:  # any failure to reach the engine means: skip, with the reason
        return f"no Docker engine answers ({type(error).__name__}: {error})"
    try:
        client.images.get(TEST_BASE_IMAGE)
    except Exception:
        return f"the base image {TEST_BASE_IMAGE} is missing (run .ci/run, which makes it with debootstrap)"
    return ""


@pytest.fixture(scope="session")
def docker_engine():
    problem = _engine_problem()
    if problem:
        print(f"\nDocker tests skipped: {problem}")
        pytest.skip(problem)
    import docker

    return docker.from_env(timeout=60)


@pytest.fixture(scope="session")
def docker_web(e2e_env, studio_services, docker_engine):
    """The web server listening where containers reach it (host gateway), with the worker telling runs so."""
    service, url = services.start_web(e2e_env, studio_services["base"], host="0.0.0.0")
    yield url
    service.stop()


@pytest.fixture(scope="session")
def docker_worker(e2e_env, studio_services, docker_web):
    port = docker_web.rsplit(":", 1)[1]
    env = {**e2e_env, "STUDIO_CONTAINER_API_URL": f"http://host.docker.internal:{port}",
           "STUDIO_SYSTEM_METRICS_SECONDS": "0.5"}
    service = services.start_worker(env, studio_services["base"], queues="docker-e2e,builds", concurrency=2)
    yield service
    service.stop()


@pytest.fixture
def docker_target(workspace):
    return workspace.compute_targets.create(
        name="docker", kind="docker", docker_url="unix:///var/run/docker.sock", queue="docker-e2e"
    )
