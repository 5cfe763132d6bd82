"""The members page: everyone in the workspace sees it; only owners add members."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from studio.models import Membership, Role
from tests.conftest import PASSWORD, login, text

pytestmark = pytest.mark.django_db
URL = "/w/lab/members/"


@pytest.fixture
def dave(db):
    return get_user_model().objects.create_user("dave", password=PASSWORD)


def roster(workspace) -> list[tuple[str, str]]:
    return sorted(workspace.memberships.values_list("user__username", "role"))


def test_it_is_at_the_expected_url():
    assert reverse("members", args=["lab"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_lists_the_members_and_their_roles_to_every_member(client, cast, who):
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    for name, role in (("alice", "Owner"), ("bob", "Reader"), ("carol", "Contributor")):
        assert f"<td>{name}</td><td>{role}</td>" in page
    assert "charlie" not in page.split("<table", 1)[1]


def test_it_shows_the_add_form_and_remove_buttons_to_an_owner(client, cast):
    login(client, cast["alice"])
    page = text(client.get(URL))
    assert "Add a member" in page
    assert page.count(">Remove</button>") == 3


@pytest.mark.parametrize("who", ["carol", "bob"])
def test_it_shows_no_add_form_nor_remove_buttons_to_others(client, cast, who):
    login(client, cast[who])
    page = text(client.get(URL))
    assert "Add a member" not in page
    assert ">Remove</button>" not in page


def test_it_hides_the_workspace_from_an_outsider(client, cast):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, workspace):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"


def test_it_refuses_other_methods(client, cast):
    login(client, cast["alice"])
    assert client.delete(URL).status_code == 405
    assert client.put(URL).status_code == 405


def test_an_owner_adds_a_member_by_username_with_a_role(client, cast, workspace, dave):
    login(client, cast["alice"])
    response = client.post(URL, {"username": " dave ", "role": "reader"}, follow=True)
    assert response.redirect_chain == [(URL, 302)]
    assert "dave is now a reader of lab." in text(response)
    assert Membership.objects.get(workspace=workspace, user=dave).role == Role.READER
    assert "<td>dave</td><td>Reader</td>" in text(response)


def test_an_owner_can_add_another_owner(client, cast, workspace, dave):
    login(client, cast["alice"])
    client.post(URL, {"username": "dave", "role": "owner"})
    assert Membership.objects.get(workspace=workspace, user=dave).role == Role.OWNER


def test_it_shows_an_error_for_an_unknown_username(client, cast, workspace):
    login(client, cast["alice"])
    before = roster(workspace)
    response = client.post(URL, {"username": "zed", "role": "contributor"})
    assert response.status_code == 400
    page = text(response)
    assert "id=\"id_username_error\">There is no user named 'zed'.</p>" in page
    assert 'value="zed"' in page
    assert roster(workspace) == before


def test_it_shows_an_error_for_someone_already_a_member(client, cast, workspace):
    login(client, cast["alice"])
    before = roster(workspace)
    response = client.post(URL, {"username": "bob", "role": "owner"})
    assert response.status_code == 400
    assert "bob is already a member; remove them first to change the role." in text(response)
    assert roster(workspace) == before


def test_it_shows_an_error_for_an_unknown_role(client, cast, workspace, dave):
    login(client, cast["alice"])
    response = client.post(URL, {"username": "dave", "role": "admin"})
    assert response.status_code == 400
    assert 'id="id_role_error"' in text(response)
    assert not Membership.objects.filter(user=dave).exists()


def test_it_does_not_add_an_inactive_user(client, cast, workspace, dave):
    dave.is_active = False
    dave.save()
    login(client, cast["alice"])
    assert client.post(URL, {"username": "dave", "role": "reader"}).status_code == 400
    assert not Membership.objects.filter(user=dave).exists()


@pytest.mark.parametrize("who", ["carol", "bob"])
def test_it_refuses_adding_members_to_a_non_owner_and_changes_nothing(client, cast, workspace, dave, who):
    login(client, cast[who])
    before = roster(workspace)
    response = client.post(URL, {"username": "dave", "role": "owner"})
    assert response.status_code == 403
    assert roster(workspace) == before


def test_it_hides_the_workspace_from_an_outsider_who_posts_and_changes_nothing(client, cast, workspace, dave):
    login(client, cast["charlie"])
    before = roster(workspace)
    assert client.post(URL, {"username": "charlie", "role": "owner"}).status_code == 404
    assert roster(workspace) == before


def test_it_sends_an_anonymous_post_to_sign_in_and_changes_nothing(client, workspace, dave):
    before = roster(workspace)
    response = client.post(URL, {"username": "dave", "role": "owner"})
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert roster(workspace) == before
