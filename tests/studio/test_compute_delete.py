"""Removing a compute target: owners and contributors, POST only, and only a target no run uses."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Run
from studio.models import ComputeTarget, Workspace
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = pytest.mark.django_db
LIST = "/w/lab/compute/"


@pytest.fixture
def spare(workspace):
    return ComputeTarget.objects.create(
        workspace=workspace,
        name="spare",
        kind=ComputeTarget.Kind.DOCKER,
        docker_url="unix:///var/run/docker.sock",
        queue="docker-spare",
    )


def url(target) -> str:
    return reverse("compute_delete", args=[target.workspace.name, target.pk])


def names(workspace) -> list[str]:
    return sorted(workspace.compute_targets.values_list("name", flat=True))


def test_it_is_at_the_expected_url(spare):
    assert url(spare) == f"/w/lab/compute/{spare.pk}/delete/"


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_owners_and_contributors_remove_an_unused_target(client, cast, workspace, spare, who):
    login(client, cast[who])
    response = client.post(url(spare), follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert "Compute target spare removed." in text(response)
    assert names(workspace) == ["local"]


@pytest.mark.parametrize(("count", "phrase"), [(1, "1 run uses it"), (2, "2 runs use it")])
def test_it_refuses_to_remove_a_target_runs_use(client, cast, workspace, spare, data_dir, count, phrase):
    runs = [make_run(workspace, cast["alice"]) for _ in range(count)]
    Run.objects.filter(pk__in=[run.pk for run in runs]).update(compute_target=spare)
    login(client, cast["alice"])
    response = client.post(url(spare), follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert (
        f'<li class="msg-error">spare cannot be removed: {phrase}, and runs keep their target. Edit it instead.</li>'
    ) in text(response)
    assert names(workspace) == ["local", "spare"]


def test_it_refuses_to_remove_the_built_in_local_target(client, cast, workspace, spare):
    login(client, cast["alice"])
    response = client.post(url(workspace.compute_targets.get(name="local")), follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert "The built-in local target cannot be removed: new runs use it by default." in text(response)
    assert names(workspace) == ["local", "spare"]


def test_it_refuses_a_reader_and_removes_nothing(client, cast, workspace, spare):
    login(client, cast["bob"])
    assert client.post(url(spare)).status_code == 403
    assert names(workspace) == ["local", "spare"]


def test_it_hides_the_workspace_from_an_outsider_and_removes_nothing(client, cast, workspace, spare):
    login(client, cast["charlie"])
    assert client.post(url(spare)).status_code == 404
    assert names(workspace) == ["local", "spare"]


def test_it_answers_404_for_a_target_of_another_workspace(client, cast, workspace):
    elsewhere = Workspace.objects.get(name="elsewhere")
    theirs = ComputeTarget.objects.create(workspace=elsewhere, name="theirs", kind=ComputeTarget.Kind.LOCAL)
    login(client, cast["alice"])
    assert client.post(f"/w/lab/compute/{theirs.pk}/delete/").status_code == 404
    assert names(elsewhere) == ["local", "theirs"]


def test_it_sends_an_anonymous_visitor_to_sign_in_and_removes_nothing(client, workspace, spare):
    assert_sent_to_sign_in(client.post(url(spare)), url(spare))
    assert names(workspace) == ["local", "spare"]


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_it_refuses_other_methods_and_removes_nothing(client, cast, workspace, spare, method):
    login(client, cast["alice"])
    assert getattr(client, method)(url(spare)).status_code == 405
    assert names(workspace) == ["local", "spare"]
