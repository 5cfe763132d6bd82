"""The API tokens page: a token is shown once, stored as a hash, revoked by its owner only."""

from __future__ import annotations

import pytest

from studio.models import ApiToken
from tests.conftest import assert_sent_to_sign_in, login, text

pytestmark = pytest.mark.django_db


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(client, cast):
    login(client, cast["bob"])
    response = client.post("/account/tokens/", {"name": "laptop"})
    secret = text(response).split('id="token-secret">')[1].split("<")[0]
    token = ApiToken.objects.get(user=cast["bob"])
    assert secret.startswith(f"stu_{token.prefix}_") and secret not in token.key_hash
    assert ApiToken.authenticate(secret) == cast["bob"]
    assert secret not in text(client.get("/account/tokens/"))


def test_a_name_is_required(client, cast):
    login(client, cast["bob"])
    response = client.post("/account/tokens/", {"name": ""})
    assert response.status_code == 400 and not ApiToken.objects.exists()


def test_only_the_owner_revokes_a_token(client, cast):
    token, _ = ApiToken.issue(cast["bob"], "laptop")
    login(client, cast["charlie"])
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()
    login(client, cast["bob"])
    assert client.get(f"/account/tokens/{token.pk}/revoke/").status_code == 405
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_anonymous_is_sent_to_sign_in(client, cast):
    assert_sent_to_sign_in(client.get("/account/tokens/"), "/account/tokens/")
    assert_sent_to_sign_in(client.post("/account/tokens/", {"name": "x"}), "/account/tokens/")
    token, _ = ApiToken.issue(cast["bob"], "laptop")
    assert_sent_to_sign_in(client.post(f"/account/tokens/{token.pk}/revoke/"), f"/account/tokens/{token.pk}/revoke/")
    assert ApiToken.objects.filter(pk=token.pk).exists()
