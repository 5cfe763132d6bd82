"""The flow a person uses most, in a real browser: sign in, submit the example, watch it live, see its model, register
it, find it on the Models page with its lineage, deploy it with the example's scoring script and call it.

Drives Debian's headless Chromium through playwright against the real ASGI server (`web`) and a real Celery
worker (`worker`), both sharing the test database and Redis. Skipped, with the reason, when Chromium is not
installed or playwright cannot launch it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runs.models import Run, RunStatus
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits" / "train.py"
BADGE = "#run-summary .badge"

# What the run page shows: whether the first epoch's line is in the console, and the status badge.
PAGE_STATE = """() => {
  const console = document.querySelector('#console');
  const badge = document.querySelector('#run-summary .badge');
  return [!!console && console.textContent.includes('epoch   1'), badge ? badge.dataset.status : null];
}"""


def test_a_contributor_submits_the_example_and_watches_it_live_until_its_model_is_stored(
    cast, workspace, sklearn_environment, worker, web, gateway, controller, browser, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    # Playwright's sync API keeps an event loop on this thread, which Django's ORM guard mistakes for async code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(web)
        expect(page.locator("#id_username")).to_be_visible()  # anonymous: sent to the sign-in form
        page.fill("#id_username", "carol")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]:has-text('Sign in')")
        expect(page.locator(".who")).to_contain_text("carol")

        page.goto(f"{web}/w/{workspace.name}/runs/new/")
        page.fill("#id_experiment", "digits-browser")
        page.set_input_files("#id_source", str(EXAMPLE))
        page.fill("#id_arguments", "--epochs 8 --pause 0.5")
        page.fill("#id_environment", "Studio-sklearn")
        page.click("button[type=submit]:has-text('Submit run')")
        page.wait_for_url("**/runs/*/")

        run = Run.objects.get(experiment__name="digits-browser")
        assert page.url.rstrip("/").endswith(f"/runs/{run.pk}"), page.url

        # Live: the first epoch is on screen while the run is still Running (about 4 s before it ends).
        assert _line_shown_while_running(page, run), "the console line never appeared while the badge said Running"
        page.screenshot(path=str(tmp_path / "run-live.png"), full_page=True)
        run.refresh_from_db()
        assert not run.is_final, f"run already {run.status} when the live line was checked"

        # The page reloads itself when the stream ends: final log, outputs and the Completed badge.
        expect(page.locator(BADGE)).to_have_attribute("data-status", "Completed", timeout=60_000)
        expect(page.locator(BADGE)).to_have_text("Completed")
        page.click("nav.tabs a[data-tab=outputs]")
        expect(page.locator("#outputs")).to_contain_text("outputs/model.pkl")
        expect(page.locator("#console")).to_contain_text("epoch   8")
        expect(page.locator("#console")).to_contain_text("saved outputs/model.pkl")
        page.screenshot(path=str(tmp_path / "run-completed.png"), full_page=True)
        run.refresh_from_db()
        assert run.status == RunStatus.COMPLETED, run.reason

        # Register its model from the run page, then find it on the Models page with its lineage.
        page.click("nav.tabs a[data-tab=overview]")
        panel = page.locator("#models")
        expect(panel).to_contain_text("Register a model from this run's outputs")
        expect(panel.locator("input[value='outputs/model.pkl']")).to_be_checked()  # offered ticked
        panel.locator("input[name=name]").fill("digits-classifier")
        panel.locator("textarea[name=tags]").fill("team=vision")
        panel.locator("button:has-text('Register model')").click()
        page.wait_for_url("**/models/digits-classifier/1/")
        expect(page.locator(".messages")).to_contain_text("Registered digits-classifier version 1")
        page.click("nav.main-nav a:has-text('Models')")
        row = page.locator("table.models tbody tr", has_text="digits-classifier")
        expect(row).to_contain_text("v1")
        expect(row).to_contain_text("scikit-learn")
        expect(row).to_contain_text("team: vision")
        row.locator("a:has-text('v1')").click()
        lineage = page.locator("#lineage")
        expect(lineage).to_contain_text("digits-browser")
        expect(lineage).to_contain_text(f"#{run.pk}")
        expect(lineage).to_contain_text("final_accuracy")
        page.screenshot(path=str(tmp_path / "model-version.png"), full_page=True)

        # Deploy it with the example's scoring script, watch it become Healthy, then call it from the Test tab.
        page.click("a.button:has-text('Deploy')")
        expect(page.locator("#id_new_endpoint")).to_have_value("digits-classifier")
        page.set_input_files("#id_script", str(EXAMPLE.with_name("score.py")))
        page.select_option("#id_environment", label=_latest_sklearn_label(page))
        page.click("button[type=submit]:has-text('Deploy')")
        page.wait_for_url("**/endpoints/digits-classifier/")
        expect(page.locator("#deployments")).to_contain_text("Healthy", timeout=240_000)  # the run's venv: cached
        expect(page.locator("#keys")).not_to_contain_text("Primary key")
        page.click("button:has-text('Show keys')")
        expect(page.locator("#keys")).to_contain_text("Primary key")
        page.reload()  # the Test tab's sample comes from swagger.json, which needs the instance up
        expect(page.locator("#test-body")).not_to_have_value("", timeout=20_000)
        page.click("#test-form button:has-text('Send')")
        result = page.locator("#test-result")
        expect(result).to_contain_text("200")
        expect(result).to_contain_text('"predictions"')
        expect(result).to_contain_text("from blue")
        expect(page.locator("#recent-requests")).to_contain_text("200", timeout=15_000)
        expect(page.locator("#console-section")).to_contain_text("loaded", timeout=15_000)
        expect(page.locator("#chart-latency .main-svg").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "endpoint.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        if "/endpoints/" in page.url:  # what the endpoint went through, and what its controller said
            print(page.locator("#history").text_content() if page.locator("#history").count() else "")
            print(controller.log())
        raise
    finally:
        print(f"screenshots in {tmp_path}")
        context.close()


def _latest_sklearn_label(page) -> str:
    labels = page.locator("#id_environment option").all_text_contents()
    return max((label for label in labels if label.startswith("Studio-sklearn:")),
               key=lambda label: int(label.split(":")[1].split()[0]))


def _line_shown_while_running(page, run, timeout: float = 30) -> bool:
    """Poll the page until the first epoch's line is shown while the badge says Running.

    Fails with what the page showed instead: a badge stuck at an earlier status, or no line before the run ended.
    """
    from playwright.sync_api import Error

    seen: list[tuple[bool, str | None]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = tuple(page.evaluate(PAGE_STATE))
        except Error:  # the page is navigating (it reloads itself when the run ends)
            state = (False, "reloading")
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == (True, "Running"):
            return True
        run.refresh_from_db()
        if run.is_final and state[1] in ("Completed", "reloading"):
            break
        time.sleep(0.05)
    run.refresh_from_db()
    raise AssertionError(
        f"the first console line was never shown while the badge said Running; (line shown, badge) over time: {seen}; "
        f"run {run.status}, status changes {list(run.status_changes.values_list('status', flat=True))}"
    )
