"""Signing in with the form and signing out (POST only)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD, login, text

pytestmark = pytest.mark.django_db


def test_it_shows_the_sign_in_form_to_an_anonymous_visitor(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    page = text(response)
    assert "Sign in to Studio" in page
    assert 'name="username"' in page and 'name="password"' in page


def test_it_signs_in_with_the_right_password_and_lands_on_the_dashboard(client, cast, workspace):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD}, follow=True)
    assert response.redirect_chain[0] == (reverse("home"), 302)
    assert response.redirect_chain[-1][0] == reverse("dashboard", args=["lab"])
    assert response.status_code == 200
    assert response.wsgi_request.user.username == "alice"
    assert "alice · Owner" in text(response)


def test_it_refuses_a_wrong_password_and_keeps_the_username(client, cast):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    page = text(response)
    assert "Your username and password didn't match" in page
    assert 'value="alice"' in page
    assert "_auth_user_id" not in client.session


def test_it_refuses_an_unknown_user(client, db):
    response = client.post(reverse("login"), {"username": "mallory", "password": PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_it_follows_a_next_link_inside_the_studio(client, cast, workspace):
    target = reverse("experiment_list", args=["lab"])
    response = client.post(reverse("login"), {"username": "bob", "password": PASSWORD, "next": target})
    assert response.status_code == 302
    assert response.url == target


def test_it_ignores_a_next_link_to_another_site(client, cast, workspace):
    response = client.post(
        reverse("login"), {"username": "bob", "password": PASSWORD, "next": "https://evil.example/phish"}
    )
    assert response.status_code == 302
    assert response.url == reverse("home")


def test_it_refuses_a_sign_in_without_the_csrf_token(cast):
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in strict.session


def test_it_refuses_a_delete_on_the_sign_in_page(client, db):
    assert client.delete(reverse("login")).status_code == 405


def test_it_signs_out_with_a_post(client, cast, workspace):
    login(client, cast["alice"])
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response.url == reverse("login")
    assert "_auth_user_id" not in client.session
    dashboard = client.get(reverse("dashboard", args=["lab"]))
    assert dashboard.status_code == 302 and dashboard.url.startswith(reverse("login"))


def test_it_refuses_to_sign_out_with_a_get(client, cast, workspace):
    login(client, cast["alice"])
    response = client.get(reverse("logout"))
    assert response.status_code == 405
    assert client.get(reverse("dashboard", args=["lab"])).status_code == 200


def test_it_offers_sign_out_as_a_form_on_every_page(client, cast, workspace):
    login(client, cast["alice"])
    page = client.get(reverse("dashboard", args=["lab"])).content.decode()
    assert f'<form method="post" action="{reverse("logout")}"' in page
