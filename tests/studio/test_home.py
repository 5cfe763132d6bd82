"""The home page sends a signed-in user to a workspace of theirs."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import PASSWORD, login

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_sends_every_member_to_the_dashboard_of_lab(client, cast, who):
    login(client, cast[who])
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response.url == reverse("dashboard", args=["lab"])


def test_it_sends_an_outsider_to_their_own_workspace_never_to_lab(client, cast):
    login(client, cast["charlie"])
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response.url == reverse("dashboard", args=["elsewhere"])


def test_it_sends_a_user_without_workspaces_to_the_workspace_list(client, db):
    dave = get_user_model().objects.create_user("dave", password=PASSWORD)
    login(client, dave)
    response = client.get(reverse("home"), follow=True)
    assert response.redirect_chain == [(reverse("workspace_list"), 302)]
    assert "You are not a member of any workspace yet" in response.content.decode()


def test_it_sends_an_anonymous_visitor_to_sign_in(client, db):
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next=/"


def test_it_refuses_a_post(client, cast):
    login(client, cast["alice"])
    assert client.post(reverse("home")).status_code == 405
