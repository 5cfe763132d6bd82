"""People: an owner invites a colleague with a one-time link; passwords are changed in the studio; every page keeps
its navigation; error pages say what to do next; the favicon is served."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.test import Client
from django.urls import reverse

from studio.models import Membership, Role
from tests.conftest import PASSWORD, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
NEW_PASSWORD = "plum-orbit-lantern-42"


def invite(client, username="dave", role=Role.CONTRIBUTOR, workspace="lab"):
    return client.post(reverse("invite_member", args=[workspace]), {"invite-username": username, "invite-role": role})


def link_in(response) -> str:
    match = re.search(r'<pre class="code" id="invite-url">(http://testserver(/accounts/welcome/[^<]+/))</pre>',
                      response.content.decode())
    assert match, "the invitation link is shown to copy"
    return match.group(2)


@pytest.fixture
def invited(client, cast):
    """alice invites dave as a contributor; the path of the link she is shown."""
    login(client, cast["alice"])
    response = invite(client)
    assert response.status_code == 200
    client.logout()
    return link_in(response)


def set_password(client, path, password=NEW_PASSWORD, again=None):
    return client.post(path, {"new_password1": password, "new_password2": again or password})


def test_an_owner_invites_a_colleague_and_is_shown_the_link_to_pass_on(client, cast):
    login(client, cast["alice"])
    response = invite(client, "dave", Role.CONTRIBUTOR)
    page = text(response)
    assert response.status_code == 200
    assert "dave is now a contributor of lab" in page
    assert "works once, and expires in 7 days" in page
    assert link_in(response).startswith("/accounts/welcome/")
    dave = get_user_model().objects.get(username="dave")
    assert not dave.has_usable_password(), "nobody can sign in as dave until he chooses a password"
    assert Membership.objects.get(user=dave).role == Role.CONTRIBUTOR
    members = text(client.get(reverse("members", args=["lab"])))
    assert "invited</span></td><td>Contributor</td>" in members
    assert ">New invitation link</button>" in members


def test_the_invite_refuses_a_name_that_is_taken_and_says_what_to_do(client, cast):
    login(client, cast["alice"])
    response = invite(client, "Carol")
    assert response.status_code == 400
    assert "There is already a user named 'Carol': add them with 'Add a member' instead." in text(response)
    assert get_user_model().objects.filter(username__iexact="carol").count() == 1


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_only_owners_invite(client, cast, who):
    login(client, cast[who])
    response = invite(client, "dave")
    assert response.status_code == 403
    assert "Only owners of this workspace can do that." in text(response)
    assert not get_user_model().objects.filter(username="dave").exists()
    assert "Invite someone new" not in text(client.get(reverse("members", args=["lab"])))


def test_the_link_sets_a_password_once_and_the_colleague_signs_in_and_can_submit(client, invited):
    page = client.get(invited)
    assert page.status_code == 200
    assert "Welcome, dave" in text(page) and "(lab)" in text(page)

    response = set_password(client, invited)
    assert response.status_code == 302 and response.url == f"{reverse('login')}?username=dave"
    sign_in = client.get(response.url)
    assert "Your password is set. Sign in as dave to start." in text(sign_in)
    assert 'value="dave"' in sign_in.content.decode()

    response = client.post(reverse("login"), {"username": "dave", "password": NEW_PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("home")).url == reverse("dashboard", args=["lab"])
    assert client.get(reverse("run_submit", args=["lab"])).status_code == 200  # a contributor

    used = Client().get(invited)
    assert used.status_code == 400
    assert "already used to set a password: it works only once. Sign in as dave" in text(used)
    again = set_password(Client(), invited, "another-password-77")
    assert again.status_code == 400
    assert Client().login(username="dave", password=NEW_PASSWORD), "the second use changed nothing"


def test_the_link_checks_the_password_like_everywhere_else(client, invited):
    response = set_password(client, invited, "short", "short")
    assert response.status_code == 400
    assert "This password is too short." in text(response)
    response = set_password(client, invited, NEW_PASSWORD, NEW_PASSWORD + "x")
    assert response.status_code == 400
    assert "The two password fields didn’t match." in text(response)
    assert client.get(invited).status_code == 200, "a refused attempt does not use the link up"


def test_an_expired_link_is_refused_and_says_what_to_do(client, invited, monkeypatch):
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + timedelta(days=7, minutes=1).total_seconds())
    response = client.get(invited)
    assert response.status_code == 400
    assert "This invitation link has expired (links last 7 days). Ask an owner of your workspace for a new link" in text(
        response)
    assert set_password(client, invited).status_code == 400
    assert not get_user_model().objects.get(username="dave").has_usable_password()


def test_a_damaged_link_is_refused(client, invited):
    response = client.get(invited.replace("/welcome/", "/welcome/x"))
    assert response.status_code == 400
    assert "This invitation link is not valid: check it was copied whole." in text(response)


def test_a_new_link_replaces_the_old_one(client, cast, invited):
    login(client, cast["alice"])
    membership = Membership.objects.get(user__username="dave")
    response = client.post(reverse("renew_invite", args=["lab", membership.pk]))
    fresh = link_in(response)
    assert fresh != invited
    assert "A newer invitation link replaced this one." in text(Client().get(invited))
    assert Client().get(fresh).status_code == 200


def test_no_new_link_for_someone_who_has_a_password(client, cast):
    login(client, cast["alice"])
    membership = Membership.objects.get(user=cast["carol"])
    response = client.post(reverse("renew_invite", args=["lab", membership.pk]), follow=True)
    assert "carol has already set a password: they sign in with it." in text(response)
    assert 'id="invite-url"' not in response.content.decode()


def test_change_password_needs_the_old_one(client, cast):
    login(client, cast["carol"])
    page = client.get(reverse("password_change"))
    assert page.status_code == 200 and "Change your password" in text(page)
    wrong = client.post(reverse("password_change"), {"old_password": "not-it", "new_password1": NEW_PASSWORD,
                                                     "new_password2": NEW_PASSWORD})
    assert wrong.status_code == 400
    assert "Your old password was entered incorrectly. Please enter it again." in text(wrong)
    assert password_is("carol", PASSWORD)

    right = client.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": NEW_PASSWORD,
                                                     "new_password2": NEW_PASSWORD}, follow=True)
    assert "Your password was changed." in text(right)
    assert client.get(reverse("dashboard", args=["lab"])).status_code == 200, "this session stays signed in"
    assert password_is("carol", NEW_PASSWORD) and not password_is("carol", PASSWORD)


def password_is(username, password) -> bool:
    """Checked without signing in (which would upgrade the cast's fast hash and end the test client's session)."""
    return check_password(password, get_user_model().objects.get(username=username).password)


def nav_links(response) -> str:
    return text(response).split('<nav class="main-nav">', 1)[1].split("</nav>", 1)[0]


def test_account_pages_keep_the_workspace_navigation_of_the_workspace_used_last(client, cast, workspace):
    Membership.objects.create(workspace=workspace.__class__.objects.get(name="elsewhere"), user=cast["alice"],
                              role=Role.READER)
    login(client, cast["alice"])
    client.get(reverse("experiment_list", args=["elsewhere"]))
    for name in ("api_tokens", "password_change"):
        page = client.get(reverse(name))
        assert f'href="{reverse("dashboard", args=["elsewhere"])}"' in nav_links(page)
        assert "Workspace: <strong>elsewhere</strong>" in text(page)
        assert "Workspace: <strong>choose</strong>" not in text(page)
    assert client.get(reverse("home")).url == reverse("dashboard", args=["elsewhere"])
    client.get(reverse("dashboard", args=["lab"]))
    assert "Workspace: <strong>lab</strong>" in text(client.get(reverse("api_tokens")))


def test_the_api_tokens_page_has_the_navigation_even_on_a_fresh_sign_in(client, cast):
    login(client, cast["carol"])
    page = client.get(reverse("api_tokens"))
    assert ">Dashboard</a>" in nav_links(page)
    assert "Workspace: <strong>lab</strong>" in text(page)


def test_the_admin_is_linked_for_staff_only(client, cast):
    login(client, cast["alice"])
    assert ">Admin</a>" not in text(client.get(reverse("api_tokens")))
    cast["alice"].is_staff = True
    cast["alice"].save()
    assert f'href="{reverse("admin:index")}"' in text(client.get(reverse("api_tokens")))


def test_a_missing_run_shows_a_styled_page_that_says_what_to_do_next(client, cast, workspace):
    login(client, cast["bob"])
    response = client.get(reverse("run_detail", args=["lab", 999999]))
    page = text(response)
    assert response.status_code == 404
    assert 'class="card narrow error-page"' in page and "studio.css" in page
    assert "No run 999999 in this workspace." in page
    assert "What to do next" in page
    assert f'<a class="button primary" href="{reverse("home")}" id="error-home">Go to the start page</a>' in page
    assert f'href="{reverse("experiment_list", args=["lab"])}">experiments</a>' in page
    assert ">Dashboard</a>" in nav_links(response), "the navigation stays"


def test_an_unknown_address_shows_the_styled_page_to_anyone(client, db):
    response = client.get("/no/such/page/")
    page = text(response)
    assert response.status_code == 404
    assert "There is nothing at <code>/no/such/page/</code>." in page
    assert "Sign in</a>: pages of a workspace are shown to its members only." in page


def test_a_reader_refused_sees_why_and_what_to_do(client, cast, workspace):
    run = make_run(workspace, cast["carol"])
    login(client, cast["bob"])
    response = client.post(reverse("run_cancel", args=["lab", run.pk]))
    page = text(response)
    assert response.status_code == 403
    assert "Readers cannot change anything in this workspace." in page
    assert "Ask an owner of the workspace to change your role on its Members page." in page
    assert f'href="{reverse("members", args=["lab"])}"' in page


def test_the_500_page_is_styled_and_says_what_to_do_next():
    from django.template.loader import get_template

    page = get_template("500.html").render()
    assert "Something went wrong on the studio's side" in page and "What to do next" in page
    assert '<a class="button" href="/">Go to the start page</a>' in page and "<style>" in page


def test_the_favicon_is_linked_and_served_and_favicon_ico_finds_it(client, cast):
    login(client, cast["alice"])
    page = client.get(reverse("api_tokens")).content.decode()
    assert '<link rel="icon" href="/static/studio/favicon.svg" type="image/svg+xml">' in page
    response = Client().get("/favicon.ico")
    assert response.status_code == 302 and response.url == "/static/studio/favicon.svg"
    icon = Client().get(response.url)
    assert icon.status_code == 200 and b"<svg" in b"".join(icon.streaming_content)


def test_fields_give_their_help_text_the_id_the_widget_points_at(client, cast):
    login(client, cast["alice"])
    page = client.get(reverse("api_tokens")).content.decode()
    assert 'aria-describedby="id_name_helptext"' in page
    assert '<small class="help" id="id_name_helptext">' in page
