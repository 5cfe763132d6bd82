"""The Environments page: the workspace's environments (latest version each) and the curated ones."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from environments.models import BuildStatus
from studio.models import Workspace
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
URL = "/w/lab/environments/"


def rows(response) -> dict[str, str]:
    """Each table row's text, by environment name."""
    page = response.content.decode()
    body = page.split('<table class="grid" id="environments">', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        name = re.search(r'<a href="[^"]*">([^<]+)</a>', row).group(1)
        out[name] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
    return out


def test_it_is_at_the_expected_url(workspace):
    assert reverse("environment_list", args=["lab"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_every_member_sees_the_latest_version_of_each_environment_and_the_curated_ones(client, cast, workspace, who):
    make_env(workspace, cast["alice"], "torch-env", python_packages="six==1.16.0")
    make_env(workspace, cast["alice"], "torch-env", python_packages="six==1.17.0")
    make_env(workspace, cast["carol"], "local-py", kind="user", base_image="", interpreter_path="/usr/bin/python3")
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    table = rows(response)
    assert list(table) == ["local-py", "torch-env", "Studio-minimal-python", "Studio-sklearn"]
    assert table["torch-env"].startswith("torch-env 2 System-managed not built")
    assert table["local-py"].startswith("local-py 1 User-managed no image (user-managed)")
    assert "curated" in table["Studio-sklearn"] and "curated" not in table["torch-env"]


def test_it_shows_each_image_status_with_a_link_to_the_image(client, cast, workspace):
    env = make_env(workspace, cast["alice"])
    image = image_for(env, status=BuildStatus.SUCCEEDED)
    login(client, cast["bob"])
    response = client.get(URL)
    assert "Succeeded" in rows(response)["torch-env"]
    assert f'href="/w/lab/environments/images/{image.pk}/"' in response.content.decode()


def test_it_never_lists_anonymous_environments_or_another_workspaces(client, cast, workspace):
    make_env(workspace, cast["alice"], "inline-abc", anonymous=True)
    make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env")
    login(client, cast["alice"])
    page = text(client.get(URL))
    assert "inline-abc" not in page and "secret-env" not in page


def test_it_offers_new_environment_to_writers_only(client, cast, workspace):
    login(client, cast["carol"])
    assert "New environment" in text(client.get(URL))
    login(client, cast["bob"])
    assert "New environment" not in text(client.get(URL))


def test_the_main_navigation_links_to_it(client, cast, workspace):
    login(client, cast["bob"])
    assert f'<a href="{URL}" aria-current="page">Environments</a>' in client.get(URL).content.decode()
    assert f'href="{URL}"' in client.get("/w/lab/").content.decode()


def test_it_hides_the_workspace_from_an_outsider(client, cast):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, workspace):
    assert_sent_to_sign_in(client.get(URL), URL)


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_refuses_other_methods(client, cast, method):
    login(client, cast["alice"])
    assert getattr(client, method)(URL).status_code == 405


def test_it_needs_no_csrf_token_to_read(cast):
    strict = Client(enforce_csrf_checks=True)
    login(strict, cast["bob"])
    assert strict.get(URL).status_code == 200
