"""Save as…: a copy of a version (a curated one too) under a new name, as version 1 of a new environment."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import reverse

from environments.models import Environment, EnvironmentImage
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.environments.conftest import form_data, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/w/lab/environments/Studio-sklearn/save-as/"
RESERVED = "Names starting with Studio- are reserved for curated environments: save it under another name."


def copy_of(curated, **overrides) -> dict:
    fields = {"name": "my-sklearn", "base_image": curated.base_image, "python_packages": curated.python_packages,
              "description": curated.description}
    return form_data(**{**fields, **overrides})


def test_it_is_at_the_expected_urls(workspace):
    assert reverse("environment_save_as", args=["lab", "Studio-sklearn"]) == URL
    assert reverse("environment_version_save_as", args=["lab", "Studio-sklearn", 1]) == "/w/lab/environments/Studio-sklearn/1/save-as/"


def test_the_form_opens_prefilled_from_the_curated_environment_with_an_empty_name(client, cast, curated):
    login(client, cast["carol"])
    response = client.get(URL)
    page = response.content.decode()
    assert response.status_code == 200
    assert "scikit-learn==1.7.2\nnumpy==2.3.4" in page
    assert 'name="name" value=' not in page  # a new name is needed
    assert 'value="system"' in page.split('checked', 1)[0].rsplit("<input", 1)[1]


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_a_writer_saves_a_curated_environment_under_a_new_name(client, cast, workspace, curated, who):
    before = model_to_dict(curated)
    login(client, cast[who])
    response = client.post(URL, copy_of(curated))
    assert response.status_code == 302 and response.url == "/w/lab/environments/my-sklearn/1/"
    copy = Environment.objects.get(workspace=workspace, name="my-sklearn")
    assert (copy.version, copy.kind, copy.python_packages) == (1, "system", curated.python_packages)
    assert copy.definition_hash == curated.definition_hash  # the same image serves both
    assert model_to_dict(Environment.objects.get(pk=curated.pk)) == before


def test_the_copy_cannot_take_a_reserved_name(client, cast, workspace, curated):
    login(client, cast["alice"])
    for name in ("Studio-sklearn", "Studio-sklearn-2"):
        response = client.post(URL, copy_of(curated, name=name))
        assert response.status_code == 400 and RESERVED in text(response)
    assert not Environment.objects.filter(workspace=workspace).exists()


def test_the_copy_cannot_take_an_existing_name(client, cast, workspace, curated):
    make_env(workspace, cast["alice"], "my-sklearn")
    login(client, cast["alice"])
    response = client.post(URL, copy_of(curated))
    assert response.status_code == 400 and "already exists" in text(response)
    assert Environment.objects.filter(workspace=workspace, name="my-sklearn").count() == 1


def test_a_workspace_environment_can_be_copied_too_keeping_its_stored_password(client, cast, workspace):
    source = make_env(workspace, cast["alice"], "private", registry_username="me", password="s3cret-pass")
    login(client, cast["carol"])
    page = client.get("/w/lab/environments/private/save-as/").content.decode()
    assert "A password is stored; leave empty to keep it." in page and "s3cret-pass" not in page
    client.post("/w/lab/environments/private/save-as/", form_data(name="private-copy", registry_username="me"))
    copy = Environment.objects.get(name="private-copy")
    assert copy.registry_auth()["password"] == "s3cret-pass"
    assert source.registry_auth()["password"] == "s3cret-pass"


def test_it_refuses_a_reader_and_creates_nothing(client, cast, curated):
    login(client, cast["bob"])
    assert client.get(URL).status_code == 200
    assert client.post(URL, copy_of(curated)).status_code == 403
    assert not Environment.objects.filter(name="my-sklearn").exists()


def test_it_hides_the_workspace_from_an_outsider_and_creates_nothing(client, cast, curated):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404
    assert client.post(URL, copy_of(curated)).status_code == 404
    assert not Environment.objects.filter(name="my-sklearn").exists()


def test_it_sends_an_anonymous_visitor_to_sign_in_and_creates_nothing(client, workspace, curated):
    assert_sent_to_sign_in(client.get(URL), URL)
    assert_sent_to_sign_in(client.post(URL, copy_of(curated)), URL)
    assert not Environment.objects.filter(name="my-sklearn").exists()


@pytest.mark.parametrize("method", ["put", "delete"])
def test_it_refuses_other_methods(client, cast, method):
    login(client, cast["alice"])
    assert getattr(client, method)(URL).status_code == 405


def test_it_refuses_a_cross_site_post_without_the_csrf_token(cast, curated):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["alice"])
    assert strict.post(URL, copy_of(curated)).status_code == 403
    assert not EnvironmentImage.objects.exists() and not Environment.objects.filter(name="my-sklearn").exists()
