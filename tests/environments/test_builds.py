"""Building images for real: a build through the Docker engine, the shared-image cache, a failing build, and
concurrent requests for one definition.

The Docker tests need the engine at the usual socket and the local base image `studio/base-python:bookworm`; they are
skipped, with the reason, without them. Every image they build is removed at the end (never the base image). Their
definitions carry a LABEL step of their own, so they never share an image with anything outside these tests.
"""

from __future__ import annotations

import contextlib
import threading

import docker
import pytest
from django.db import connection

from environments import builds
from environments.models import BuildStatus, Environment, EnvironmentImage
from studio import live
from tests.conftest import login
from tests.environments.conftest import make_env, plain

BASE_IMAGE = "studio/base-python:bookworm"
TEST_LABEL = "studio.test=tests.environments.test_builds"
STEPS = f"LABEL {TEST_LABEL}"


@pytest.fixture(scope="module")
def engine():
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as error:  # any failure to reach the engine means: no Docker here
        reason = f"no Docker engine answers ({type(error).__name__}: {error})"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        reason = f"the base image {BASE_IMAGE} is missing (build it, or pull an equivalent and tag it so)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return client


@pytest.fixture(scope="module")
def built_images(engine):
    """Image names the tests built; removed at the end of the module, with the layers a failed build left behind
    (found by the tests' own label; never the base image)."""
    names: set[str] = set()
    yield names
    for name in names - {BASE_IMAGE}:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(name, force=True)
    leftovers = engine.images.list(all=True, filters={"label": TEST_LABEL})
    for image in sorted(leftovers, key=lambda i: i.attrs.get("Created", ""), reverse=True):
        if BASE_IMAGE in image.tags:
            continue
        with contextlib.suppress(docker.errors.NotFound):  # removed with a child already
            engine.images.remove(image.id, force=True)


@pytest.fixture
def build_settings(settings, data_dir):
    settings.STUDIO_BUILD_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
    settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE = BASE_IMAGE
    return settings


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """Image ids handed to the `builds` queue (a build task each)."""
    calls: list[int] = []
    monkeypatch.setattr(builds, "_enqueue", calls.append)
    return calls


def ensure(env, capture) -> EnvironmentImage:
    with capture(execute=True):
        return builds.ensure_image(env)


def system_env(workspace, user, name, packages):
    return make_env(workspace, user, name, base_image=BASE_IMAGE, dockerfile_steps=STEPS, python_packages=packages)


@pytest.mark.docker
@pytest.mark.django_db
def test_a_real_build_succeeds_and_a_second_environment_shares_its_image(
    engine, built_images, build_settings, cast, workspace, enqueued, django_capture_on_commit_callbacks, client,
    redis_client,
):
    first = system_env(workspace, cast["alice"], "six-env", "six==1.16.0")
    image = ensure(first, django_capture_on_commit_callbacks)
    assert enqueued == [image.pk]
    built_images.add(image.name)

    assert builds.build(image.pk) == BuildStatus.SUCCEEDED
    image.refresh_from_db()
    assert image.status == BuildStatus.SUCCEEDED, image.error
    assert "six==1.16.0" in image.resolved_packages.splitlines()
    assert image.build_count == 1 and image.image_id.startswith("sha256:") and image.size_bytes > 0
    assert image.image_created and image.started_at and image.ended_at
    assert "COPY studio-ca-bundle.crt" in image.dockerfile and STEPS in image.dockerfile
    assert engine.images.get(image.name).id == image.image_id
    assert "Successfully" in builds.log_path(image).read_text()
    statuses = [f[b"v"] for _, f in redis_client.xrange(builds.stream_key(image.pk)) if f[b"k"] == b"status"]
    assert statuses == [b"Queued", b"Building", b"Succeeded"]

    # The same packages under another name (other variables): the same image, no second build.
    second = make_env(workspace, cast["carol"], "other-name", base_image=BASE_IMAGE, dockerfile_steps=STEPS,
                      python_packages="six==1.16.0", env_vars={"EPOCHS": "3"}, description="Another")
    assert second.definition_hash == first.definition_hash
    assert ensure(second, django_capture_on_commit_callbacks).pk == image.pk
    assert enqueued == [image.pk]  # no new build task
    assert builds.build(image.pk) == "not claimed: Succeeded"
    image.refresh_from_db()
    assert image.build_count == 1
    assert EnvironmentImage.objects.filter(definition_hash=first.definition_hash).count() == 1

    login(client, cast["bob"])
    page = plain(client.get(f"/w/lab/environments/images/{image.pk}/"))
    assert "six-env" in page and "other-name" in page and "six==1.16.0" in page
    assert "Image already built: shared with 2 environment versions" in plain(client.get("/w/lab/environments/other-name/"))


@pytest.mark.docker
@pytest.mark.django_db
def test_a_failing_build_ends_failed_with_its_step_and_error(
    engine, built_images, build_settings, cast, workspace, enqueued, django_capture_on_commit_callbacks, client,
):
    env = system_env(workspace, cast["alice"], "broken", "this-package-does-not-exist-xyz==1")
    image = ensure(env, django_capture_on_commit_callbacks)
    built_images.add(image.name)

    assert builds.build(image.pk) == BuildStatus.FAILED
    image.refresh_from_db()
    assert image.status == BuildStatus.FAILED and image.ended_at is not None
    assert "RUN pip install" in image.failed_step
    assert "returned a non-zero code" in image.error
    assert "this-package-does-not-exist-xyz" in image.error
    assert not image.resolved_packages
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(image.name)
    assert "this-package-does-not-exist-xyz" in builds.log_path(image).read_text()

    login(client, cast["bob"])
    page = plain(client.get(f"/w/lab/environments/images/{image.pk}/"))
    assert "RUN pip install" in page and "this-package-does-not-exist-xyz" in page


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_for_one_definition_make_one_image(cast, workspace, data_dir, monkeypatch):
    monkeypatch.setattr(live, "append_status", lambda key, status: None)  # only the database matters here
    env = make_env(workspace, cast["alice"], "raced", python_packages="six==1.16.0")
    barrier = threading.Barrier(6)
    results, errors = [], []

    def request():
        try:
            barrier.wait(timeout=10)
            results.append(builds.ensure_image(Environment.objects.get(pk=env.pk)).pk)
        except Exception as error:  # reported below, with the thread's error
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == 6 and len(set(results)) == 1
    assert EnvironmentImage.objects.filter(definition_hash=env.definition_hash).count() == 1
