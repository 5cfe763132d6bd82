"""Editing an environment saves its next version; a saved version never changes. Curated ones are never edited."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import reverse

from environments import builds
from environments.models import BuildStatus, Environment, EnvironmentImage
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.environments.conftest import form_data, image_for, make_env, plain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/w/lab/environments/torch-env/edit/"


@pytest.fixture
def env(cast, workspace):
    return make_env(workspace, cast["alice"], "torch-env", python_packages="six==1.16.0\nnumpy==2.3.4",
                    description="Hello", env_vars={"EPOCHS": "3"})


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(builds, "_enqueue", calls.append)
    return calls


def stored(env) -> dict:
    return model_to_dict(Environment.objects.get(pk=env.pk))


def test_it_is_at_the_expected_urls(env):
    assert reverse("environment_edit", args=["lab", "torch-env"]) == URL
    assert reverse("environment_version_edit", args=["lab", "torch-env", 1]) == "/w/lab/environments/torch-env/1/edit/"


def test_the_form_opens_prefilled_with_the_name_fixed(client, cast, env):
    login(client, cast["carol"])
    response = client.get(URL)
    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="name" value="torch-env"' in page and "disabled" in page.split('name="name"', 1)[1].split(">", 1)[0]
    assert "six==1.16.0\nnumpy==2.3.4</textarea>" in page and "EPOCHS=3</textarea>" in page
    assert "Save as version 2" in page


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_saving_makes_version_2_and_version_1_never_changes(client, cast, workspace, env, who, enqueued,
                                                            django_capture_on_commit_callbacks):
    before = stored(env)
    login(client, cast[who])
    data = form_data(name="renamed-ignored", python_packages="six==1.17.0\nnumpy==2.3.4", description="Hello",
                     env_vars="EPOCHS=3")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, data)
    assert response.status_code == 302 and response.url == "/w/lab/environments/torch-env/2/"
    assert stored(env) == before
    new = Environment.objects.get(workspace=workspace, name="torch-env", version=2)
    assert new.python_packages == "six==1.17.0\nnumpy==2.3.4" and new.created_by == cast[who]
    assert new.definition_hash != env.definition_hash
    assert not Environment.objects.filter(name="renamed-ignored").exists()
    assert enqueued == [] and not EnvironmentImage.objects.filter(definition_hash=new.definition_hash).exists()
    page = plain(client.get("/w/lab/environments/torch-env/", {"diff": "1..2"}))
    assert "Saved torch-env version 2." in page
    assert "torch-env version 2" in page and "the latest" not in page
    assert "\n-six==1.16.0\n+six==1.17.0\n" in page
    history = client.get("/w/lab/environments/torch-env/2/").content.decode().split('id="history"', 1)[1]
    assert 'href="/w/lab/environments/torch-env/1/"' in history and 'href="/w/lab/environments/torch-env/2/"' in history


def test_editing_an_older_version_starts_from_it(client, cast, workspace, env):
    make_env(workspace, cast["alice"], "torch-env", python_packages="pandas==2.3.3")
    login(client, cast["alice"])
    page = client.get("/w/lab/environments/torch-env/1/edit/").content.decode()
    assert "six==1.16.0\nnumpy==2.3.4</textarea>" in page and "Save as version 3" in page


def test_changing_only_what_the_hash_ignores_shares_the_image(client, cast, env, enqueued, django_capture_on_commit_callbacks):
    image = image_for(env, status=BuildStatus.SUCCEEDED, build_count=1)
    login(client, cast["carol"])
    data = form_data(python_packages="six==1.16.0\nnumpy==2.3.4", description="New words", env_vars="EPOCHS=10")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(URL, data, follow=True)
    new = Environment.objects.get(name="torch-env", version=2)
    assert new.definition_hash == env.definition_hash and new.env_vars == {"EPOCHS": "10"}
    assert list(EnvironmentImage.objects.all()) == [image] and enqueued == []
    assert "Image already built: shared with 2 environment versions." in text(response)


def test_a_workspace_environment_with_a_reserved_name_cannot_be_edited(client, cast, workspace):
    legacy = make_env(workspace, cast["alice"], "Studio-legacy")
    login(client, cast["alice"])
    response = client.post("/w/lab/environments/Studio-legacy/edit/", form_data(name="Studio-legacy"))
    assert response.status_code == 400
    assert "Names starting with Studio- are reserved for curated environments: save it under another name." in text(response)
    assert list(Environment.objects.filter(name="Studio-legacy")) == [legacy]


def test_a_curated_environment_cannot_be_edited_but_the_way_to_copy_it_is_shown(client, cast, workspace, curated):
    before = stored(curated)
    versions = Environment.objects.filter(name="Studio-sklearn").count()
    latest = Environment.objects.filter(workspace__isnull=True, name="Studio-sklearn").latest("version").version
    login(client, cast["alice"])
    response = client.post("/w/lab/environments/Studio-sklearn/edit/", form_data(name="Studio-sklearn"), follow=True)
    assert response.redirect_chain == [(f"/w/lab/environments/Studio-sklearn/{latest}/save-as/", 302)]
    assert "A curated environment never changes: save a copy of it under a new name instead." in text(response)
    assert stored(curated) == before
    assert Environment.objects.filter(name="Studio-sklearn").count() == versions
    get = client.get("/w/lab/environments/Studio-sklearn/edit/")
    assert get.status_code == 302 and get.url == f"/w/lab/environments/Studio-sklearn/{latest}/save-as/"


def test_it_refuses_a_reader_and_changes_nothing(client, cast, env):
    login(client, cast["bob"])
    assert client.get(URL).status_code == 200
    assert client.post(URL, form_data()).status_code == 403
    assert Environment.objects.filter(name="torch-env").count() == 1


def test_it_hides_the_workspace_from_an_outsider_and_changes_nothing(client, cast, env):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404
    assert client.post(URL, form_data()).status_code == 404
    assert Environment.objects.filter(name="torch-env").count() == 1


def test_an_unknown_environment_or_version_is_not_found(client, cast, env):
    login(client, cast["alice"])
    assert client.get("/w/lab/environments/nothing/edit/").status_code == 404
    assert client.post("/w/lab/environments/torch-env/7/edit/", form_data()).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in_and_changes_nothing(client, env):
    assert_sent_to_sign_in(client.get(URL), URL)
    assert_sent_to_sign_in(client.post(URL, form_data()), URL)
    assert Environment.objects.filter(name="torch-env").count() == 1


@pytest.mark.parametrize("method", ["put", "delete"])
def test_it_refuses_other_methods(client, cast, env, method):
    login(client, cast["alice"])
    assert getattr(client, method)(URL).status_code == 405


def test_it_refuses_a_cross_site_post_without_the_csrf_token(cast, env):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["alice"])
    assert strict.post(URL, form_data()).status_code == 403
    assert Environment.objects.filter(name="torch-env").count() == 1
