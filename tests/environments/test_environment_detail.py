"""An environment version's page: definition, hash, Dockerfile, warnings, image, versions and their diff."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from environments.models import BuildStatus
from studio.models import Workspace
from tests.conftest import assert_sent_to_sign_in, login
from tests.environments.conftest import image_for, make_env, plain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/w/lab/environments/torch-env/"


@pytest.fixture
def env(cast, workspace):
    return make_env(workspace, cast["alice"], "torch-env", python_packages="six==1.16.0\nrequests", description="Hello")


def test_it_is_at_the_expected_urls(env):
    assert reverse("environment_detail", args=["lab", "torch-env"]) == URL
    assert reverse("environment_version", args=["lab", "torch-env", 1]) == URL + "1/"


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_sees_the_definition_its_hash_and_the_generated_dockerfile(client, cast, env, who, settings):
    settings.STUDIO_BUILD_CA_BUNDLE = ""
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    page = plain(response)
    assert "torch-env version 1" in page and "Hello" in page
    assert env.definition_hash in page
    assert env.definition().dockerfile(ca_bundle=False) in page
    assert "six==1.16.0\nrequests" in page


def test_the_dockerfile_copies_the_ca_bundle_when_one_is_configured(client, cast, env, settings):
    settings.STUDIO_BUILD_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
    login(client, cast["bob"])
    assert "COPY studio-ca-bundle.crt /etc/studio/ca-bundle.crt" in plain(client.get(URL))


def test_the_bare_url_shows_the_latest_version_and_a_numbered_one_stays(client, cast, workspace, env):
    make_env(workspace, cast["alice"], "torch-env", python_packages="six==1.17.0")
    login(client, cast["bob"])
    latest = plain(client.get(URL))
    assert "torch-env version 2" in latest and "six==1.17.0" in latest
    old = plain(client.get(URL + "1/"))
    assert "torch-env version 1" in old and "six==1.16.0" in old
    assert "This is version 1; the latest is version 2." in old


def test_it_warns_about_unpinned_packages_frozen_at_first_build(client, cast, env):
    login(client, cast["bob"])
    page = plain(client.get(URL))
    assert "Unpinned packages: frozen at first build." in page
    assert "requests (not built yet)" in " ".join(page.split())


def test_it_shows_what_the_build_froze_unpinned_packages_at(client, cast, env):
    image_for(env, status=BuildStatus.SUCCEEDED, resolved_packages="certifi==2025.1.1\nRequests==2.32.3\nsix==1.16.0\n")
    login(client, cast["bob"])
    page = " ".join(plain(client.get(URL)).split())
    assert "requests → resolved to Requests==2.32.3" in page


def test_pinned_packages_and_a_fixed_base_give_no_warnings(client, cast, workspace):
    make_env(workspace, cast["alice"], "pinned", python_packages="six==1.16.0")
    login(client, cast["bob"])
    page = plain(client.get("/w/lab/environments/pinned/"))
    assert "Unpinned" not in page and "Floating base image" not in page


@pytest.mark.parametrize("base", ["python", "python:latest", "registry.example.com:5000/team/py"])
def test_it_warns_about_a_floating_base_image(client, cast, workspace, base):
    make_env(workspace, cast["alice"], "floating", base_image=base)
    login(client, cast["bob"])
    page = plain(client.get("/w/lab/environments/floating/"))
    assert f"Floating base image: {base}." in page


def test_it_shows_the_image_status_with_a_link_to_the_image_page(client, cast, env):
    image = image_for(env, status=BuildStatus.FAILED, failed_step="Step 5/7 : RUN pip install")
    login(client, cast["bob"])
    response = client.get(URL)
    page = response.content.decode()
    assert f'href="/w/lab/environments/images/{image.pk}/" id="image-link"' in page
    assert 'data-status="Failed"' in page and "RUN pip install" in page


def test_it_says_when_the_image_is_shared(client, cast, workspace, env):
    image_for(env, status=BuildStatus.SUCCEEDED)
    make_env(workspace, cast["alice"], "twin", python_packages="six==1.16.0\nrequests", env_vars={"X": "1"})
    login(client, cast["bob"])
    assert "Image already built: shared with 2 environment versions" in plain(client.get(URL))


def test_an_unbuilt_image_offers_a_build_to_writers_only(client, cast, env):
    login(client, cast["carol"])
    assert 'id="build-button"' in client.get(URL).content.decode()
    login(client, cast["bob"])
    page = client.get(URL).content.decode()
    assert 'id="build-button"' not in page and "Not built yet" in page


def test_an_image_being_built_is_polled_until_it_ends(client, cast, env):
    image = image_for(env, status=BuildStatus.BUILDING)
    login(client, cast["bob"])
    assert f'hx-get="{URL}1/"' in client.get(URL).content.decode()
    part = client.get(URL + "1/", headers={"HX-Request": "true", "HX-Target": "image-card"})
    assert part.status_code == 200 and "<h2>Image</h2>" in part.content.decode()
    assert "<html" not in part.content.decode()
    image.transition(BuildStatus.SUCCEEDED, from_states=(BuildStatus.BUILDING,))
    assert client.get(URL + "1/", headers={"HX-Request": "true", "HX-Target": "image-card"}).status_code == 286


def test_writers_get_edit_and_save_as_and_readers_neither(client, cast, env):
    login(client, cast["carol"])
    page = client.get(URL).content.decode()
    assert 'href="/w/lab/environments/torch-env/1/edit/"' in page
    assert 'href="/w/lab/environments/torch-env/1/save-as/"' in page
    login(client, cast["bob"])
    page = client.get(URL).content.decode()
    assert "/edit/" not in page and "/save-as/" not in page


def test_a_curated_environment_has_save_as_but_no_edit(client, cast, workspace):
    login(client, cast["alice"])
    response = client.get("/w/lab/environments/Studio-sklearn/")
    page = response.content.decode()
    assert response.status_code == 200 and "curated" in page
    assert 'id="save-as-link"' in page and 'id="edit-link"' not in page
    assert "scikit-learn==1.7.2" in page


def test_the_history_lists_every_version_and_the_diff_shows_the_changed_line(client, cast, workspace, env):
    make_env(workspace, cast["carol"], "torch-env", python_packages="six==1.17.0\nrequests", description="Hello")
    login(client, cast["bob"])
    response = client.get(URL, {"diff": "1..2"})
    page = plain(response)
    assert 'href="/w/lab/environments/torch-env/1/"' in response.content.decode()
    assert 'href="/w/lab/environments/torch-env/2/"' in response.content.decode()
    assert "Changes from version 1 to version 2" in page
    assert "--- torch-env version 1\n+++ torch-env version 2" in page
    assert "\n-six==1.16.0\n" in page and "\n+six==1.17.0\n" in page
    assert "\n requests\n" in page  # unchanged context
    assert 'href="?diff=1..2"' in response.content.decode()


def test_a_diff_is_shown_as_text_never_markup(client, cast, workspace, env):
    make_env(workspace, cast["alice"], "torch-env", python_packages="numpy<2 # <script>alert(1)</script>")
    login(client, cast["bob"])
    page = client.get(URL, {"diff": "1..2"}).content.decode()
    assert "<script>alert(1)" not in page
    assert "+numpy&lt;2 # &lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_diff_never_shows_the_registry_password(client, cast, workspace, env):
    make_env(workspace, cast["alice"], "torch-env", registry_username="me", password="hunter2-secret")
    login(client, cast["alice"])
    page = plain(client.get(URL, {"diff": "1..2"}))
    assert "+registry password: stored" in page and "hunter2-secret" not in page


@pytest.mark.parametrize("diff", ["1", "1..", "a..b", "1...2", "-1..2"])
def test_a_malformed_diff_is_refused(client, cast, env, diff):
    login(client, cast["bob"])
    response = client.get(URL, {"diff": diff})
    assert response.status_code == 400


def test_a_diff_with_a_missing_version_is_not_found(client, cast, env):
    login(client, cast["bob"])
    assert client.get(URL, {"diff": "1..9"}).status_code == 404


def test_unknown_versions_anonymous_and_foreign_environments_are_not_found(client, cast, workspace, env):
    make_env(workspace, cast["alice"], "inline-abc", anonymous=True)
    make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env")
    login(client, cast["alice"])
    assert client.get(URL + "2/").status_code == 404
    assert client.get("/w/lab/environments/nothing/").status_code == 404
    assert client.get("/w/lab/environments/inline-abc/").status_code == 404
    assert client.get("/w/lab/environments/secret-env/").status_code == 404


def test_it_hides_the_workspace_from_an_outsider(client, cast, env):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404
    assert client.get(URL + "1/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, env):
    assert_sent_to_sign_in(client.get(URL), URL)
    assert_sent_to_sign_in(client.get(URL + "1/"), URL + "1/")


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_refuses_other_methods(client, cast, env, method):
    login(client, cast["alice"])
    assert getattr(client, method)(URL).status_code == 405
    assert getattr(client, method)(URL + "1/").status_code == 405


def test_it_needs_no_csrf_token_to_read(cast, env):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["bob"])
    assert strict.get(URL).status_code == 200
