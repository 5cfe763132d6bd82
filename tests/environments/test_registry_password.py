"""The registry password is write-only: stored encrypted, never rendered in a page, a form, a message or an error."""

from __future__ import annotations

import pytest

from environments.models import BuildStatus, Environment, EnvironmentImage
from studio.crypto import decrypt
from tests.conftest import login
from tests.environments.conftest import form_data

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
PASSWORD = "pw-Zq8!never-show-me"
WITH_REGISTRY = {"registry_address": "registry.example.com:5000", "registry_username": "robot", "registry_password": PASSWORD}


@pytest.fixture
def created(client, cast, workspace):
    login(client, cast["carol"])
    response = client.post("/w/lab/environments/new/", form_data(**WITH_REGISTRY), follow=True)
    return response


def body(response) -> str:
    return response.content.decode()


def test_it_is_stored_encrypted_and_decrypts_back(created):
    env = Environment.objects.get(name="torch-env")
    assert env.registry_password_encrypted and PASSWORD not in env.registry_password_encrypted
    assert decrypt(env.registry_password_encrypted) == PASSWORD
    assert env.registry_auth() == {"username": "robot", "password": PASSWORD, "registry": "registry.example.com:5000"}


def test_it_appears_in_no_page(client, created):
    assert created.status_code == 200 and PASSWORD not in body(created)
    image = EnvironmentImage.objects.create(definition_hash=Environment.objects.get(name="torch-env").definition_hash)
    image.transition(BuildStatus.FAILED, from_states=(BuildStatus.QUEUED,), error="pull access denied")
    pages = [
        "/w/lab/environments/",
        "/w/lab/environments/torch-env/",
        "/w/lab/environments/torch-env/1/",
        "/w/lab/environments/torch-env/edit/",
        "/w/lab/environments/torch-env/save-as/",
        f"/w/lab/environments/images/{image.pk}/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert PASSWORD not in body(response), url
    edit = body(client.get("/w/lab/environments/torch-env/edit/"))
    assert "A password is stored; leave empty to keep it." in edit
    assert 'name="registry_password"' in edit and 'type="password"' in edit


def test_a_form_with_errors_never_sends_it_back(client, cast, workspace):
    login(client, cast["alice"])
    response = client.post("/w/lab/environments/new/", form_data(name="Studio-x", **WITH_REGISTRY))
    assert response.status_code == 400 and PASSWORD not in body(response)
    response = client.post("/w/lab/environments/new/", form_data(**{**WITH_REGISTRY, "registry_username": ""}))
    assert response.status_code == 400 and PASSWORD not in body(response)


def test_an_edit_keeps_it_when_left_empty(client, created):
    client.post("/w/lab/environments/torch-env/edit/", form_data(python_packages="six==1.17.0", registry_username="robot"))
    new = Environment.objects.get(name="torch-env", version=2)
    assert decrypt(new.registry_password_encrypted) == PASSWORD
    response = client.get("/w/lab/environments/torch-env/", {"diff": "1..2"})
    assert PASSWORD not in body(response)


def test_an_edit_replaces_it_or_forgets_it(client, created):
    client.post("/w/lab/environments/torch-env/edit/", form_data(registry_username="robot", registry_password="other-pass"))
    assert Environment.objects.get(name="torch-env", version=2).registry_auth()["password"] == "other-pass"
    client.post("/w/lab/environments/torch-env/edit/", form_data(forget_registry_password="on"))
    assert Environment.objects.get(name="torch-env", version=3).registry_password_encrypted == ""
    assert decrypt(Environment.objects.get(name="torch-env", version=1).registry_password_encrypted) == PASSWORD
