"""Adding and editing compute targets: owners and contributors; every input validated; the TLS key write-only."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from django.urls import reverse

from studio.crypto import decrypt, encrypt
from studio.models import ComputeTarget, Workspace
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.studio.test_docker_engine import make_pki

pytestmark = pytest.mark.django_db
NEW = "/w/lab/compute/new/"
LIST = "/w/lab/compute/"


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def gpu(workspace, pki):
    return ComputeTarget.objects.create(
        workspace=workspace,
        name="gpu",
        kind=ComputeTarget.Kind.DOCKER,
        docker_url="tcp://gpu-box:2376",
        queue="docker-gpu",
        tls_ca_cert=pki.ca_cert,
        tls_client_cert=pki.client_cert,
        tls_client_key_encrypted=encrypt(pki.client_key),
    )


def edit_url(target) -> str:
    return reverse("compute_edit", args=[target.workspace.name, target.pk])


def snapshot() -> list[dict]:
    return list(ComputeTarget.objects.order_by("pk").values())


def docker_form(**fields) -> dict:
    return {"name": "gpu2", "kind": "docker", "docker_url": "unix:///var/run/docker.sock", **fields}


def tls_form(pki, **fields) -> dict:
    tls = {
        "docker_url": "tcp://gpu-box:2376",
        "tls_ca_cert": pki.ca_cert,
        "tls_client_cert": pki.client_cert,
        "tls_client_key": pki.client_key,
    }
    return docker_form(**{**tls, **fields})


def assert_no_key(page: str, key: str) -> None:
    assert "PRIVATE KEY-----\n" not in page.replace('placeholder="-----BEGIN PRIVATE KEY-----"', "")
    for line in key.strip().splitlines()[1:-1]:
        assert line not in page


def field_error(page: str, field: str) -> str:
    return page.split(f'id="id_{field}_error">', 1)[1].split("</p>", 1)[0]


# Where and who ------------------------------------------------------------------------------------------------------


def test_it_is_at_the_expected_urls(gpu):
    assert reverse("compute_new", args=["lab"]) == NEW
    assert edit_url(gpu) == f"/w/lab/compute/{gpu.pk}/edit/"


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_shows_the_forms_to_owners_and_contributors(client, cast, gpu, who):
    login(client, cast[who])
    page = text(client.get(NEW))
    assert "<h1>Add a compute target</h1>" in page and 'name="docker_url"' in page
    page = text(client.get(edit_url(gpu)))
    assert "<h1>Edit gpu</h1>" in page and 'value="tcp://gpu-box:2376"' in page


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_owners_and_contributors_add_a_target(client, cast, workspace, who):
    login(client, cast[who])
    response = client.post(
        NEW,
        docker_form(
            cpu_limit="1.5",
            memory_limit_mb="2048",
            gpus="2",
            shm_size_mb="128",
            callback_url="http://studio.internal:8000",
        ),
        follow=True,
    )
    assert response.redirect_chain == [(LIST, 302)]
    assert "Compute target gpu2 added. Its runs go to the queue docker-gpu2." in text(response)
    target = workspace.compute_targets.get(name="gpu2")
    assert (target.kind, target.docker_url, target.queue) == ("docker", "unix:///var/run/docker.sock", "docker-gpu2")
    assert (target.cpu_limit, target.memory_limit_mb, target.gpus, target.shm_size_mb) == (1.5, 2048, "2", 128)
    assert target.callback_url == "http://studio.internal:8000"


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_owners_and_contributors_edit_a_target(client, cast, gpu, who):
    login(client, cast[who])
    response = client.post(
        edit_url(gpu),
        {
            "name": "big-gpu",
            "kind": "docker",
            "queue": "gpus",
            "docker_url": "tcp://gpu-box:2376",
            "tls_ca_cert": gpu.tls_ca_cert,
            "tls_client_cert": gpu.tls_client_cert,
            "gpus": "ALL",
        },
    )
    assert response.status_code == 302 and response.url == LIST
    gpu.refresh_from_db()
    assert (gpu.name, gpu.queue, gpu.gpus) == ("big-gpu", "gpus", "all")


def test_it_refuses_a_reader_and_changes_nothing(client, cast, gpu):
    login(client, cast["bob"])
    before = snapshot()
    assert client.get(NEW).status_code == 403
    assert client.get(edit_url(gpu)).status_code == 403
    assert client.post(NEW, docker_form()).status_code == 403
    assert client.post(edit_url(gpu), docker_form(name="renamed")).status_code == 403
    assert snapshot() == before


def test_it_hides_the_workspace_from_an_outsider_and_changes_nothing(client, cast, gpu):
    login(client, cast["charlie"])
    before = snapshot()
    assert client.get(NEW).status_code == 404
    assert client.get(edit_url(gpu)).status_code == 404
    assert client.post(NEW, docker_form()).status_code == 404
    assert client.post(edit_url(gpu), docker_form(name="renamed")).status_code == 404
    assert snapshot() == before


def test_it_sends_an_anonymous_visitor_to_sign_in_and_changes_nothing(client, gpu):
    before = snapshot()
    assert_sent_to_sign_in(client.get(NEW), NEW)
    assert_sent_to_sign_in(client.post(NEW, docker_form()), NEW)
    assert_sent_to_sign_in(client.post(edit_url(gpu), docker_form(name="renamed")), edit_url(gpu))
    assert snapshot() == before


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_it_refuses_other_methods_and_changes_nothing(client, cast, gpu, method):
    login(client, cast["alice"])
    before = snapshot()
    assert getattr(client, method)(NEW).status_code == 405
    assert getattr(client, method)(edit_url(gpu)).status_code == 405
    assert snapshot() == before


def test_it_answers_404_for_a_target_of_another_workspace(client, cast, workspace):
    theirs = ComputeTarget.objects.get(workspace=Workspace.objects.get(name="elsewhere"), name="local")
    login(client, cast["alice"])
    before = snapshot()
    assert client.get(f"/w/lab/compute/{theirs.pk}/edit/").status_code == 404
    assert client.post(f"/w/lab/compute/{theirs.pk}/edit/", {"name": "x", "kind": "local"}).status_code == 404
    assert client.get("/w/lab/compute/999999/edit/").status_code == 404
    assert snapshot() == before


# Defaults -----------------------------------------------------------------------------------------------------------


def test_a_local_target_defaults_to_the_local_queue(client, cast, workspace):
    login(client, cast["alice"])
    client.post(NEW, {"name": "venv", "kind": "local", "python_path": "/opt/venv/bin/python"})
    target = workspace.compute_targets.get(name="venv")
    assert (target.kind, target.queue, target.python_path) == ("local", "local", "/opt/venv/bin/python")


def test_a_named_queue_wins_over_the_default(client, cast, workspace):
    login(client, cast["alice"])
    client.post(NEW, docker_form(queue="gpu-box"))
    assert workspace.compute_targets.get(name="gpu2").queue == "gpu-box"


def test_the_new_form_leaves_the_queue_empty_and_explains_the_default(client, cast, workspace):
    login(client, cast["alice"])
    page = text(client.get(NEW))
    assert 'placeholder="local, or docker-NAME for a Docker target"' in page
    assert 'name="queue" value=' not in page
    assert "Empty: local for a local target, docker-NAME for a Docker target." in page


def test_the_local_target_can_be_edited_but_stays_a_local_target_named_local(client, cast, workspace):
    local = workspace.compute_targets.get(name="local")
    login(client, cast["carol"])
    page = text(client.get(edit_url(local)))
    assert '<select name="kind" disabled' in page
    assert 'name="name" value="local" maxlength="64" required disabled' in page
    response = client.post(
        edit_url(local), {"name": "renamed", "kind": "docker", "queue": "cpu", "python_path": "/opt/py/bin/python3"}
    )
    assert response.status_code == 302
    local.refresh_from_db()
    assert (local.name, local.kind, local.queue, local.python_path) == ("local", "local", "cpu", "/opt/py/bin/python3")


# Validation: errors next to the field, typed values kept, nothing saved ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "local"}, "name", "There is already a target named local in this workspace: choose another name."),
        ({"name": "LOCAL"}, "name", "There is already a target named LOCAL in this workspace"),
        ({"name": "bad name!"}, "name", "Use 1-255 letters, digits"),
        ({"docker_url": ""}, "docker_url", "A Docker target needs its engine's URL, e.g. unix:///var/run/docker.sock."),
        ({"docker_url": "http://gpu-box:2375"}, "docker_url", "Start with unix://, tcp:// or ssh://"),
        ({"docker_url": "tcp://:2376"}, "docker_url", "Name the engine's host"),
        ({"docker_url": "tcp://gpu-box:99999"}, "docker_url", "The port is not a number from 1 to 65535."),
        ({"docker_url": "unix://docker.sock"}, "docker_url", "Give the socket's absolute path"),
        ({"cpu_limit": "0"}, "cpu_limit", "Give a number of CPU cores above 0 and at most 4,096, e.g. 0.5 or 2."),
        ({"cpu_limit": "-1"}, "cpu_limit", "Give a number of CPU cores above 0"),
        ({"cpu_limit": "lots"}, "cpu_limit", "Enter a number."),
        ({"memory_limit_mb": "5"}, "memory_limit_mb", "Docker needs at least 6 MB of memory for a container."),
        ({"shm_size_mb": "0"}, "shm_size_mb", "Give 1 to 1,073,741,824 MB"),
        ({"gpus": "two"}, "gpus", "Use all, a number of GPUs (1, 2, …), or leave it empty for none."),
        ({"gpus": "0"}, "gpus", "Use all, a number of GPUs"),
        ({"callback_url": "ftp://studio:21"}, "callback_url", "Give an http:// or https:// URL"),
        ({"callback_url": "studio:8000"}, "callback_url", "Give an http:// or https:// URL"),
        ({"queue": "no spaces"}, "queue", "Use 1-255 letters, digits"),
        ({"python_path": "/usr/bin/python3"}, "python_path", "Docker targets run in the environment's image"),
        ({"tls_ca_cert": "not a certificate"}, "tls_ca_cert", "Paste a PEM certificate: the text from -----BEGIN"),
        (
            {"tls_ca_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"},
            "tls_ca_cert",
            "This is not a readable PEM certificate",
        ),
        ({"kind": "kubernetes"}, "kind", "Select a valid choice."),
    ],
)
def test_it_shows_an_error_next_to_the_field_and_keeps_the_typed_values(
    client, cast, workspace, fields, field, message
):
    login(client, cast["alice"])
    before = snapshot()
    data = docker_form(
        **{"name": "typed-name", "cpu_limit": "2", "callback_url": "http://studio.internal:8000", **fields}
    )
    response = client.post(NEW, data)
    assert response.status_code == 400
    page = text(response)
    assert message in field_error(page, field)
    assert 'class="field has-error"' in page
    if field != "name":
        assert 'value="typed-name"' in page
    if field != "docker_url":
        assert f'value="{data["docker_url"]}"' in page
    assert snapshot() == before


def test_a_local_target_refuses_docker_settings(client, cast, workspace):
    login(client, cast["alice"])
    before = snapshot()
    response = client.post(
        NEW, {"name": "cpu", "kind": "local", "docker_url": "unix:///var/run/docker.sock", "memory_limit_mb": "512"}
    )
    assert response.status_code == 400
    page = text(response)
    for field in ("docker_url", "memory_limit_mb"):
        assert field_error(page, field) == (
            "Only Docker targets use this: choose Docker engine as the kind, or leave it empty."
        )
    assert 'value="512"' in page
    assert snapshot() == before


def test_a_queue_name_that_would_be_too_long_must_be_given(client, cast, workspace):
    login(client, cast["alice"])
    response = client.post(NEW, docker_form(name="g" * 60))
    assert response.status_code == 400
    assert "is longer than 64 characters: name a queue." in field_error(text(response), "queue")


# TLS ----------------------------------------------------------------------------------------------------------------


def test_it_stores_the_key_encrypted_and_never_shows_it(client, cast, workspace, pki):
    login(client, cast["alice"])
    response = client.post(NEW, tls_form(pki), follow=True)
    assert response.status_code == 200
    assert_no_key(text(response), pki.client_key)
    target = workspace.compute_targets.get(name="gpu2")
    assert "PRIVATE KEY" not in target.tls_client_key_encrypted
    assert pki.client_key.strip().splitlines()[1] not in target.tls_client_key_encrypted
    assert decrypt(target.tls_client_key_encrypted).strip() == pki.client_key.strip()
    assert target.tls_ca_cert.strip() == pki.ca_cert.strip()
    page = text(client.get(edit_url(target)))
    assert_no_key(page, pki.client_key)
    assert target.tls_client_key_encrypted not in page
    assert "A key is stored; leave empty to keep it." in page
    assert '<input type="checkbox" name="remove_tls_client_key"' in page
    assert_no_key(text(client.get(LIST)), pki.client_key)


def test_the_new_form_offers_no_remove_checkbox(client, cast, workspace):
    login(client, cast["alice"])
    page = text(client.get(NEW))
    assert "remove_tls_client_key" not in page
    assert 'class="secret"' in page and 'autocomplete="off"' in page


def test_an_empty_key_field_keeps_the_stored_key(client, cast, gpu, pki):
    login(client, cast["alice"])
    stored = gpu.tls_client_key_encrypted
    response = client.post(edit_url(gpu), tls_form(pki, name="gpu", tls_client_key=""))
    assert response.status_code == 302
    gpu.refresh_from_db()
    assert gpu.tls_client_key_encrypted == stored


def test_a_new_key_replaces_the_stored_one(client, cast, gpu):
    other = make_pki()
    login(client, cast["alice"])
    response = client.post(edit_url(gpu), tls_form(other, name="gpu"))
    assert response.status_code == 302
    gpu.refresh_from_db()
    assert decrypt(gpu.tls_client_key_encrypted).strip() == other.client_key.strip()


def test_the_checkbox_removes_the_stored_key(client, cast, gpu, pki):
    login(client, cast["alice"])
    response = client.post(
        edit_url(gpu), tls_form(pki, name="gpu", tls_client_cert="", tls_client_key="", remove_tls_client_key="on")
    )
    assert response.status_code == 302
    gpu.refresh_from_db()
    assert (gpu.tls_client_key_encrypted, gpu.tls_client_cert) == ("", "")
    assert gpu.tls_ca_cert.strip() == pki.ca_cert.strip()


def test_it_never_echoes_a_typed_key_after_an_error_and_asks_for_it_again(client, cast, workspace, pki):
    login(client, cast["alice"])
    response = client.post(NEW, tls_form(pki, cpu_limit="0"))
    assert response.status_code == 400
    page = text(response)
    assert_no_key(page, pki.client_key)
    assert (
        field_error(page, "tls_client_key") == "Paste the key again: for safety it is never sent back to the browser."
    )
    assert pki.client_cert.strip().splitlines()[1] in page  # the certificates are kept like any typed value
    assert not workspace.compute_targets.filter(name="gpu2").exists()


def test_it_never_echoes_a_key_pasted_into_a_certificate_field(client, cast, workspace, pki):
    login(client, cast["alice"])
    response = client.post(NEW, tls_form(pki, tls_ca_cert=pki.client_key))
    assert response.status_code == 400
    page = text(response)
    assert field_error(page, "tls_ca_cert") == (
        "This is a private key, not a certificate: paste it in the TLS client key field."
    )
    assert_no_key(page, pki.client_key)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"tls_client_key": ""}, "tls_client_key", "The client certificate needs its key: paste it here."),
        ({"tls_client_cert": ""}, "tls_client_cert", "The client key needs its certificate: paste it here."),
        ({"docker_url": "unix:///var/run/docker.sock"}, "tls_ca_cert", "TLS applies to tcp:// engines only"),
        (
            {"tls_client_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
            "tls_client_key",
            "This is not a readable PEM private key: paste the whole key file.",
        ),
        ({"tls_client_key": "secret"}, "tls_client_key", "Paste a PEM private key"),
    ],
)
def test_it_checks_the_tls_settings_belong_together(client, cast, workspace, pki, fields, field, message):
    login(client, cast["alice"])
    response = client.post(NEW, tls_form(pki, **fields))
    assert response.status_code == 400
    assert message in field_error(text(response), field)
    assert not workspace.compute_targets.filter(name="gpu2").exists()


def test_it_refuses_a_key_that_does_not_belong_to_the_certificate(client, cast, workspace, pki):
    other = make_pki()
    login(client, cast["alice"])
    response = client.post(NEW, tls_form(pki, tls_client_key=other.client_key))
    assert response.status_code == 400
    assert (
        field_error(text(response), "tls_client_key") == "This key and the client certificate do not belong together."
    )
    assert_no_key(text(response), other.client_key)


def test_it_refuses_a_key_protected_by_a_passphrase(client, cast, workspace, pki):
    key = serialization.load_pem_private_key(pki.client_key.encode(), password=None)
    locked = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"hunter2")
    ).decode()
    login(client, cast["alice"])
    response = client.post(NEW, tls_form(pki, tls_client_key=locked))
    assert response.status_code == 400
    assert "protected by a passphrase, which Docker cannot use" in field_error(text(response), "tls_client_key")
    assert locked.splitlines()[1] not in text(response)


def test_removing_the_key_while_keeping_the_certificate_is_refused(client, cast, gpu, pki):
    login(client, cast["alice"])
    before = snapshot()
    response = client.post(edit_url(gpu), tls_form(pki, name="gpu", tls_client_key="", remove_tls_client_key="on"))
    assert response.status_code == 400
    assert field_error(text(response), "tls_client_key") == (
        "The client certificate needs its key: keep the stored key, or remove the certificate too."
    )
    assert snapshot() == before
