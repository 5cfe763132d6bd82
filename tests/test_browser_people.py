"""People, in a real browser: an owner invites a colleague, who opens the link, chooses a password, signs in and
reaches the workspace's dashboard (and may submit); a missing page is the styled 404 that says what to do next.

Drives Debian's headless Chromium through playwright against the real ASGI server (`web`); skipped, with the reason,
when Chromium is not installed or playwright cannot launch it.
"""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
NEW_PASSWORD = "plum-orbit-lantern-42"


def sign_in(page, web, username, password):
    from playwright.sync_api import expect

    page.goto(f"{web}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]:has-text('Sign in')")
    expect(page.locator(".who")).to_contain_text(username)


def test_an_owner_invites_a_colleague_who_sets_a_password_signs_in_and_reaches_the_dashboard(
    cast, workspace, web, browser, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # playwright's loop on this thread vs Django's ORM guard
    owner = browser.new_context(viewport={"width": 1280, "height": 1000})
    colleague = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = owner.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, web, "alice", PASSWORD)
        page.click(".main-nav a:has-text('Members')")
        page.fill("#id_invite-username", "dave")
        page.select_option("#id_invite-role", "contributor")
        page.click("#invite button[type=submit]")
        expect(page.locator("#invite-link")).to_contain_text("dave is now a contributor of lab")
        link = page.locator("#invite-url").inner_text().strip()
        assert link.startswith(f"{web}/accounts/welcome/"), link
        page.screenshot(path=str(tmp_path / "invited.png"), full_page=True)

        them = colleague.new_page()
        them.set_default_timeout(20_000)
        them.goto(link)
        expect(them.locator("h1")).to_have_text("Welcome, dave")
        them.fill("#id_new_password1", NEW_PASSWORD)
        them.fill("#id_new_password2", NEW_PASSWORD)
        them.click("button[type=submit]:has-text('Set my password')")
        expect(them.locator(".messages")).to_contain_text("Your password is set. Sign in as dave to start.")
        expect(them.locator("#id_username")).to_have_value("dave")
        them.fill("#id_password", NEW_PASSWORD)
        them.click("button[type=submit]:has-text('Sign in')")
        them.wait_for_url(f"{web}/w/lab/")
        expect(them.locator(".who")).to_contain_text("dave · Contributor")
        expect(them.locator(".main-nav a[aria-current=page]")).to_have_text("Dashboard")
        them.goto(f"{web}/w/lab/runs/new/")
        expect(them.locator("button[type=submit]:has-text('Submit run')")).to_be_visible()

        # The link worked once.
        them.goto(link)
        expect(them.locator("#invite-problem")).to_contain_text("it works only once")
        them.screenshot(path=str(tmp_path / "used-link.png"), full_page=True)
    finally:
        owner.close()
        colleague.close()


def test_a_missing_run_is_the_styled_404_that_says_what_to_do_next(cast, workspace, web, browser, tmp_path,
                                                                   monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    failed = []
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        missing = f"{web}/w/lab/runs/999999/"
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and r.url != missing else None)
        sign_in(page, web, "bob", PASSWORD)
        response = page.goto(missing)
        assert response.status == 404
        card = page.locator("#error-page")
        expect(card).to_be_visible()
        expect(card.locator("h1")).to_have_text("Not found")
        expect(card).to_contain_text("No run 999999 in this workspace.")
        expect(card).to_contain_text("What to do next")
        # Styled: the studio's stylesheet applies (a card with a border and a background), the navigation stays.
        assert card.evaluate("e => getComputedStyle(e).borderTopStyle") == "solid"
        expect(page.locator(".main-nav a:has-text('Dashboard')")).to_be_visible()
        page.screenshot(path=str(tmp_path / "404.png"), full_page=True)
        page.click("#error-home")
        page.wait_for_url(f"{web}/w/lab/")
        assert not failed, f"resources that failed to load: {failed}"  # no favicon 404 either
        assert page.request.get(f"{web}/favicon.ico").ok
    finally:
        context.close()
