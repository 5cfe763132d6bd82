"""Removing a member: owners only, POST only, and a workspace always keeps an owner."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studio.models import Membership, Role, Workspace
from tests.conftest import login, text

pytestmark = pytest.mark.django_db


def url(membership, workspace="lab") -> str:
    return reverse("remove_member", args=[workspace, membership.pk])


def roster(workspace) -> list[tuple[str, str]]:
    return sorted(workspace.memberships.values_list("user__username", "role"))


def member(workspace, user) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def test_an_owner_removes_a_member(client, cast, workspace):
    login(client, cast["alice"])
    response = client.post(url(member(workspace, cast["bob"])), follow=True)
    assert response.redirect_chain == [(reverse("members", args=["lab"]), 302)]
    assert "bob was removed from lab." in text(response)
    assert roster(workspace) == [("alice", Role.OWNER), ("carol", Role.CONTRIBUTOR)]
    login(client, cast["bob"])
    assert client.get(reverse("dashboard", args=["lab"])).status_code == 404


def test_it_cannot_remove_the_last_owner(client, cast, workspace):
    login(client, cast["alice"])
    before = roster(workspace)
    response = client.post(url(member(workspace, cast["alice"])), follow=True)
    assert response.redirect_chain == [(reverse("members", args=["lab"]), 302)]
    assert "A workspace needs at least one owner" in text(response)
    assert roster(workspace) == before


def test_an_owner_may_leave_when_another_owner_remains(client, cast, workspace):
    Membership.objects.filter(workspace=workspace, user=cast["carol"]).update(role=Role.OWNER)
    login(client, cast["alice"])
    response = client.post(url(member(workspace, cast["alice"])))
    assert response.status_code == 302
    assert response.url == reverse("home")
    assert roster(workspace) == [("bob", Role.READER), ("carol", Role.OWNER)]


def test_an_owner_may_remove_another_owner(client, cast, workspace):
    Membership.objects.filter(workspace=workspace, user=cast["carol"]).update(role=Role.OWNER)
    login(client, cast["alice"])
    client.post(url(member(workspace, cast["carol"])))
    assert roster(workspace) == [("alice", Role.OWNER), ("bob", Role.READER)]


def test_it_answers_404_for_a_membership_of_another_workspace(client, cast, workspace):
    elsewhere = Workspace.objects.get(name="elsewhere")
    foreign = member(elsewhere, cast["charlie"])
    login(client, cast["alice"])
    assert client.post(url(foreign)).status_code == 404
    assert Membership.objects.filter(pk=foreign.pk).exists()


@pytest.mark.parametrize("who", ["carol", "bob"])
def test_it_refuses_a_non_owner_and_removes_nothing(client, cast, workspace, who):
    login(client, cast[who])
    before = roster(workspace)
    for target in ("alice", "bob", "carol"):
        assert client.post(url(member(workspace, cast[target]))).status_code == 403
    assert roster(workspace) == before


def test_it_hides_the_workspace_from_an_outsider_and_removes_nothing(client, cast, workspace):
    login(client, cast["charlie"])
    before = roster(workspace)
    assert client.post(url(member(workspace, cast["alice"]))).status_code == 404
    assert roster(workspace) == before


def test_it_sends_an_anonymous_visitor_to_sign_in_and_removes_nothing(client, cast, workspace):
    before = roster(workspace)
    target = url(member(workspace, cast["bob"]))
    response = client.post(target)
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={target}"
    assert roster(workspace) == before


def test_it_refuses_a_get_and_removes_nothing(client, cast, workspace):
    login(client, cast["alice"])
    before = roster(workspace)
    assert client.get(url(member(workspace, cast["bob"]))).status_code == 405
    assert roster(workspace) == before
