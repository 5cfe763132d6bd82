"""The workspace list and creating a workspace."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studio.models import ComputeTarget, Membership, Role, Workspace
from tests.conftest import login, text

pytestmark = pytest.mark.django_db
URL = "/workspaces/"


def test_it_is_at_the_expected_url():
    assert reverse("workspace_list") == URL


@pytest.mark.parametrize("who, role", [("alice", "Owner"), ("carol", "Contributor"), ("bob", "Reader")])
def test_it_lists_the_users_workspaces_with_their_role(client, cast, who, role):
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert f'<a href="/w/lab/">lab</a></td><td>{role}</td>' in page
    assert "/w/elsewhere/" not in page


def test_it_shows_an_outsider_only_their_own_workspace(client, cast):
    login(client, cast["charlie"])
    page = text(client.get(URL))
    assert "/w/elsewhere/" in page
    assert "/w/lab/" not in page


def test_it_creates_a_workspace_whose_creator_is_the_owner(client, cast):
    login(client, cast["bob"])
    response = client.post(URL, {"name": "vision", "description": "Image models"}, follow=True)
    assert response.redirect_chain == [(reverse("dashboard", args=["vision"]), 302)]
    assert "Workspace vision created. You are its owner." in text(response)
    workspace = Workspace.objects.get(name="vision")
    assert workspace.description == "Image models"
    assert list(workspace.memberships.values_list("user__username", "role")) == [("bob", Role.OWNER)]
    target = workspace.compute_targets.get()
    assert (target.name, target.kind) == ("local", ComputeTarget.Kind.LOCAL)


def test_it_shows_an_error_for_an_invalid_name_and_creates_nothing(client, cast):
    login(client, cast["alice"])
    before = Workspace.objects.count()
    response = client.post(URL, {"name": "not a slug!", "description": "kept"})
    assert response.status_code in (200, 400)
    page = text(response)
    assert 'id="id_name_error"' in page
    assert "Enter a valid “slug”" in page
    assert 'value="not a slug!"' in page and "kept</textarea>" in page
    assert Workspace.objects.count() == before


def test_it_shows_an_error_for_a_name_already_taken(client, cast):
    login(client, cast["alice"])
    response = client.post(URL, {"name": "elsewhere"})
    assert 'id="id_name_error"' in text(response)
    assert not Membership.objects.filter(workspace__name="elsewhere", user=cast["alice"]).exists()


def test_it_sends_an_anonymous_visitor_to_sign_in_and_creates_nothing(client, db):
    for response in (client.get(URL), client.post(URL, {"name": "anon"})):
        assert response.status_code == 302
        assert response.url == f"{reverse('login')}?next={URL}"
    assert not Workspace.objects.filter(name="anon").exists()


def test_it_refuses_other_methods(client, cast):
    login(client, cast["alice"])
    assert client.delete(URL).status_code == 405
    assert client.put(URL).status_code == 405


@pytest.mark.parametrize("name", ["Lab", "my_ws"])
def test_it_refuses_a_name_its_help_text_does_not_allow(client, cast, name):
    login(client, cast["charlie"])
    response = client.post(URL, {"name": name})
    assert 'id="id_name_error"' in text(response)
    assert not Workspace.objects.filter(name=name).exists()
