"""Testing a Docker target's connection from the Compute page (POST, htmx fragment or a message).

The "tests OK" case needs the engine at unix:///var/run/docker.sock and is skipped, with the reason, without one;
the failure cases need no engine.
"""

from __future__ import annotations

import docker
import pytest
from django.urls import reverse

from studio.crypto import encrypt
from studio.models import ComputeTarget, Workspace
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.studio.test_docker_engine import make_pki

pytestmark = pytest.mark.django_db
LIST = "/w/lab/compute/"
ENGINE_SOCKET = "unix:///var/run/docker.sock"
HTMX = {"HTTP_HX_REQUEST": "true"}
REFUSED = (
    "Cannot reach the Docker engine at tcp://127.0.0.1:1: connection refused on 127.0.0.1:1. "
    "Is the engine running and listening on that address and port?"
)


@pytest.fixture(scope="module")
def engine_version() -> str:
    """The version of the engine at the local socket; skips the test when none answers."""
    try:
        client = docker.from_env()
        client.ping()
        return client.version()["Version"]
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine here
        pytest.skip(f"no Docker engine answers at {ENGINE_SOCKET}: {str(exc).splitlines()[0]}")


@pytest.fixture
def unreachable(workspace):
    return ComputeTarget.objects.create(
        workspace=workspace,
        name="nowhere",
        kind=ComputeTarget.Kind.DOCKER,
        docker_url="tcp://127.0.0.1:1",
        queue="docker-nowhere",
    )


def url(target) -> str:
    return reverse("compute_test", args=[target.workspace.name, target.pk])


def snapshot() -> list[dict]:
    return list(ComputeTarget.objects.order_by("pk").values())


def test_it_is_at_the_expected_url(unreachable):
    assert url(unreachable) == f"/w/lab/compute/{unreachable.pk}/test/"


def test_a_target_on_the_local_engine_tests_ok_and_shows_the_engine_version(client, cast, workspace, engine_version):
    target = ComputeTarget.objects.create(
        workspace=workspace, name="here", kind=ComputeTarget.Kind.DOCKER, docker_url=ENGINE_SOCKET, queue="docker-here"
    )
    login(client, cast["alice"])
    response = client.post(url(target), **HTMX)
    assert response.status_code == 200
    page = text(response).strip()
    assert page.startswith('<p class="test-ok"><strong>Connected.</strong> Docker ')
    assert f"Docker {engine_version} on linux/" in page and " image" in page
    assert "<html" not in page  # a fragment, not a page


def test_an_unreachable_engine_shows_the_owner_a_clear_failure(client, cast, unreachable):
    login(client, cast["alice"])
    before = snapshot()
    response = client.post(url(unreachable), **HTMX)
    assert response.status_code == 200  # htmx swaps 2xx answers only
    assert text(response).strip() == (
        f'<p class="test-failed" role="alert"><strong>Connection failed.</strong> {REFUSED}</p>'
    )
    assert snapshot() == before


def test_a_contributor_only_learns_that_the_connection_failed_not_what_answered(client, cast, unreachable):
    """A contributor could point a target at any host:port; what the connection found would be a port scan."""
    login(client, cast["carol"])
    page = text(client.post(url(unreachable), **HTMX)).strip()
    assert page == ('<p class="test-failed" role="alert"><strong>Connection failed.</strong> Could not connect to '
                    "the target's Docker engine. An owner of this workspace can test it to see why.</p>")
    assert "refused" not in page and "127.0.0.1" not in page


def test_a_contributor_reads_that_a_working_engine_answered_without_its_details(client, cast, workspace, engine_version):
    target = ComputeTarget.objects.create(
        workspace=workspace, name="here", kind=ComputeTarget.Kind.DOCKER, docker_url=ENGINE_SOCKET, queue="docker-here"
    )
    login(client, cast["carol"])
    page = text(client.post(url(target), **HTMX)).strip()
    assert page == '<p class="test-ok"><strong>Connected.</strong> The engine answered.</p>'


def test_an_engine_outside_the_allow_list_is_never_contacted(client, cast, unreachable, settings):
    settings.STUDIO_DOCKER_ALLOWED_ENGINES = ["unix:///var/run/docker.sock", "*.gpu.lab", "10.1.0.0/16:2376"]
    login(client, cast["carol"])
    page = text(client.post(url(unreachable), **HTMX))
    assert ("The engine URL 'tcp://127.0.0.1:1' is not one this studio allows: its administrator limits "
            "Docker targets to unix:///var/run/docker.sock, *.gpu.lab, 10.1.0.0/16:2376") in page
    assert "refused" not in page


def test_without_htmx_it_redirects_with_the_result_as_a_message(client, cast, unreachable):
    login(client, cast["alice"])
    response = client.post(url(unreachable), follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert f'<li class="msg-error">nowhere: {REFUSED}</li>' in text(response)


def test_a_url_the_engine_module_cannot_use_is_explained(client, cast, workspace):
    target = ComputeTarget.objects.create(
        workspace=workspace, name="odd", kind=ComputeTarget.Kind.DOCKER, docker_url="tcp://", queue="docker-odd"
    )
    login(client, cast["alice"])
    page = text(client.post(url(target), **HTMX))
    assert "The engine URL 'tcp://' names no host: use e.g. tcp://host:2376 or ssh://user@host." in page


def test_a_local_target_has_no_engine_to_test(client, cast, workspace):
    login(client, cast["alice"])
    page = text(client.post(url(workspace.compute_targets.get(name="local")), **HTMX))
    assert "local is a local target: only Docker targets have an engine to connect to." in page


def test_a_failure_never_shows_the_tls_key(client, cast, workspace):
    pki = make_pki()
    target = ComputeTarget.objects.create(
        workspace=workspace,
        name="tls",
        kind=ComputeTarget.Kind.DOCKER,
        docker_url="tcp://127.0.0.1:1",
        queue="docker-tls",
        tls_ca_cert=pki.ca_cert,
        tls_client_cert=pki.client_cert,
        tls_client_key_encrypted=encrypt(pki.client_key),
    )
    login(client, cast["alice"])
    page = text(client.post(url(target), **HTMX))
    assert "Connection failed." in page and "connection refused" in page
    assert "PRIVATE KEY" not in page
    for line in pki.client_key.strip().splitlines()[1:-1]:
        assert line not in page
    assert target.tls_client_key_encrypted not in page


def test_it_refuses_a_reader_and_changes_nothing(client, cast, unreachable):
    login(client, cast["bob"])
    before = snapshot()
    assert client.post(url(unreachable), **HTMX).status_code == 403
    assert snapshot() == before


def test_it_hides_the_workspace_from_an_outsider_and_changes_nothing(client, cast, unreachable):
    login(client, cast["charlie"])
    before = snapshot()
    assert client.post(url(unreachable), **HTMX).status_code == 404
    assert snapshot() == before


def test_it_answers_404_for_a_target_of_another_workspace(client, cast, workspace):
    theirs = ComputeTarget.objects.create(
        workspace=Workspace.objects.get(name="elsewhere"),
        name="theirs",
        kind=ComputeTarget.Kind.DOCKER,
        docker_url="tcp://127.0.0.1:1",
    )
    login(client, cast["alice"])
    assert client.post(f"/w/lab/compute/{theirs.pk}/test/", **HTMX).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, unreachable):
    before = snapshot()
    assert_sent_to_sign_in(client.post(url(unreachable)), url(unreachable))
    assert snapshot() == before


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_it_refuses_other_methods(client, cast, unreachable, method):
    login(client, cast["alice"])
    before = snapshot()
    assert getattr(client, method)(url(unreachable)).status_code == 405
    assert snapshot() == before


def test_a_run_on_an_unreachable_engine_fails_with_a_reason_every_member_may_read(unreachable):
    """Run pages are for readers too: the reason names the target, not what answered at its address."""
    from runs.compute import LaunchError
    from runs.compute.docker import DockerDriver

    with pytest.raises(LaunchError) as caught:
        DockerDriver(unreachable).launch(spec=None)
    assert str(caught.value) == ("Could not connect to the target's Docker engine (nowhere). An owner of the workspace "
                                 "can test its connection on the Compute page to see why.")
