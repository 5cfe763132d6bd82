"""Who the token belongs to and the workspaces they are a member of, through the REST API."""

from __future__ import annotations

import pytest

from studio.models import ApiToken, Membership, Role, Workspace

pytestmark = pytest.mark.django_db


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def test_me_names_the_tokens_user_and_their_workspaces_with_their_roles(client, cast):
    Membership.objects.create(workspace=Workspace.objects.get(name="elsewhere"), user=cast["bob"], role=Role.CONTRIBUTOR)
    response = client.get("/api/v1/me", headers=token_for(cast["bob"]))
    assert response.status_code == 200
    assert response.json() == {"username": "bob", "workspaces": [{"name": "elsewhere", "role": "contributor"},
                                                                 {"name": "lab", "role": "reader"}]}


def test_me_takes_the_token_as_a_bearer_token_too(client, cast):
    secret = ApiToken.issue(cast["alice"], "cli")[1]
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert response.json() == {"username": "alice", "workspaces": [{"name": "lab", "role": "owner"}]}


def test_me_lists_no_workspaces_for_a_user_without_any(client, cast, django_user_model):
    loner = django_user_model.objects.create_user("dave")
    assert client.get("/api/v1/me", headers=token_for(loner)).json() == {"username": "dave", "workspaces": []}


def test_me_without_a_token_is_a_401_saying_how_to_send_one(client, cast):
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="studio"'
    assert response.json() == {"error": "Send a personal API token as 'Authorization: Token <token>' or "
                                        "'Authorization: Bearer <token>' (make one on the API tokens page)."}


def test_a_revoked_token_is_a_401(client, cast):
    token, secret = ApiToken.issue(cast["alice"], "old laptop")
    token.delete()
    assert client.get("/api/v1/me", headers={"Authorization": f"Token {secret}"}).status_code == 401


def test_it_lists_the_users_workspaces_with_description_and_role(client, cast, workspace):
    workspace.description = "Vision experiments."
    workspace.save()
    response = client.get("/api/v1/workspaces", headers=token_for(cast["carol"]))
    assert response.status_code == 200
    assert response.json() == [{"name": "lab", "description": "Vision experiments.", "role": "contributor"}]
    owned = client.get("/api/v1/workspaces", headers=token_for(cast["charlie"])).json()
    assert [item["name"] for item in owned] == ["elsewhere"] and owned[0]["role"] == "owner"


def test_it_gets_one_workspace_with_the_users_role(client, cast, workspace):
    response = client.get("/api/v1/workspaces/lab", headers=token_for(cast["bob"]))
    assert response.status_code == 200
    assert response.json() == {"name": "lab", "description": workspace.description, "role": "reader"}


@pytest.mark.parametrize("name", ["elsewhere", "nope"])
def test_a_workspace_the_user_is_not_a_member_of_is_a_404_like_one_that_does_not_exist(client, cast, name):
    response = client.get(f"/api/v1/workspaces/{name}", headers=token_for(cast["bob"]))
    assert response.status_code == 404 and response.json() == {"error": "No such workspace."}
