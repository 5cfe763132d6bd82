"""The metrics tab in a real browser: a reader opens a finished run and sees its charts drawn by Plotly.

Drives Debian's headless Chromium through playwright against the real ASGI server (`web`); the run is made through
the ORM (the `worker` takes the submission's queued message, so it never runs in a later test). Skipped, with the
reason, when Chromium is not installed or playwright cannot launch it.
"""

from __future__ import annotations

import math
import time

import pytest

from runs import metrics
from runs.models import Run, RunStatus
from tests.conftest import PASSWORD, make_run

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DRAWN = "#metrics .js-plotly-plot .scatterlayer .trace path"


def finished_run_with_metrics(workspace, user) -> Run:
    """A Completed run with a few kinds of metrics. The submission's queued message goes to the real worker: whichever
    of the test and the worker moves the run first, it ends Completed."""
    run = make_run(workspace, user, experiment="charts-browser", display_name="charted")
    if run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,)):
        assert run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    deadline = time.monotonic() + 60
    while not run.is_final and time.monotonic() < deadline:
        time.sleep(0.2)
        run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, (run.status, run.reason)
    t0 = (run.started_at or run.created_at).timestamp()
    loss = [(step, 2.0 * math.exp(-step / 120) + 0.05 * math.sin(step / 3), t0 + step * 0.05) for step in range(1_000)]
    loss[400] = (400, math.nan, loss[400][2])
    metrics.append_points(run, "loss", loss, description="training loss")
    metrics.append_points(run, "accuracy", [(s, 1 - math.exp(-s / 200), t0 + s * 0.05) for s in range(1_000)])
    metrics.append_points(run, "sys/cpu_percent", [(None, 80 + 15 * math.sin(i / 5), t0 + i) for i in range(50)])
    metrics.append_entries(
        run,
        "eval",
        "row",
        [{"epoch": e, "f1": round(0.5 + e / 20, 3), "note": "<b>x</b>" if e == 2 else "ok"} for e in range(1, 6)],
    )
    metrics.append_entries(run, "weights", "list", [[math.sin(i / 10) for i in range(200)]])
    return run


def test_a_reader_opens_the_metrics_tab_of_a_finished_run_and_sees_the_charts(
    cast, workspace, worker, web, browser, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    # Playwright's sync API keeps an event loop on this thread, which Django's ORM guard mistakes for async code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    run = finished_run_with_metrics(workspace, cast["carol"])
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(web)
        page.fill("#id_username", "bob")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]:has-text('Sign in')")
        expect(page.locator(".who")).to_contain_text("bob")

        page.goto(f"{web}/w/{workspace.name}/runs/{run.pk}/")
        page.click("nav.tabs a[data-tab=metrics]")
        expect(page.locator(DRAWN).first).to_be_attached()
        cards = page.locator("#metrics [data-chart]")
        expect(cards).to_have_count(4)  # loss, accuracy, the weights list, the eval rows' numeric columns
        loss = page.locator("#metrics [data-chart][data-key='scalar:loss']")
        expect(loss.locator("[data-role=note]")).to_contain_text("1 NaN value")
        expect(loss.locator("[data-role=summary]")).to_contain_text("1,000 points")
        path = loss.locator(".scatterlayer .trace path.js-line").first.get_attribute("d")
        assert path and len(path) > 100, path

        # Smoothing draws the smoothed line over the faint raw one; the x axis can switch to wall-clock time.
        loss.locator("[data-role=smooth]").evaluate("el => { el.value = '0.8'; el.dispatchEvent(new Event('input')); }")
        expect(loss.locator(".scatterlayer .trace")).to_have_count(3)  # raw, smoothed, the NaN marker
        expect(loss.locator("[data-role=smooth-value]")).to_have_text("0.80")
        loss.locator("[data-role=log]").check()
        loss.locator("[data-role=x]").select_option("time")
        expect(loss.locator(".xtick text").first).to_be_attached()

        # The rows table sorts on a click on its header; markup in a cell is text.
        table = page.locator("#metrics table.sortable").first
        table.locator("th", has_text="f1").click()
        table.locator("th", has_text="f1").click()
        expect(table.locator("tbody tr").first.locator("td").first).to_have_text("4")
        expect(table.locator("tbody")).to_contain_text("<b>x</b>")

        page.screenshot(path=str(tmp_path / "metrics.png"), full_page=True)
        page.click("nav.tabs a[data-tab=system]")  # its charts are fetched when the tab shows them
        expect(page.locator("#system .js-plotly-plot .scatterlayer .trace path").first).to_be_attached()
        assert errors == [], errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        print(f"screenshots in {tmp_path}")
        context.close()


def test_the_charts_of_a_live_run_refresh_until_it_ends(cast, workspace, worker, web, browser, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    parent = finished_run_with_metrics(workspace, cast["carol"])
    child = parent.create_child("live-child")  # Running, and no worker owns it: the test moves it along
    t0 = child.started_at.timestamp()
    metrics.append_points(child, "loss", [(s, 1.0 / (s + 1), t0 + s) for s in range(10)])
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: requests.append(request.url) if "/metrics/" in request.url else None)
    try:
        page.goto(web)
        page.fill("#id_username", "bob")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]:has-text('Sign in')")
        expect(page.locator(".who")).to_contain_text("bob")

        page.goto(f"{web}/w/{workspace.name}/runs/{child.pk}/?tab=metrics")
        expect(page.locator("#parent-run")).to_have_attribute("href", f"/w/{workspace.name}/runs/{parent.pk}/")
        loss = page.locator("#metrics [data-chart][data-key='scalar:loss']")
        expect(loss.locator(".scatterlayer .trace path").first).to_be_attached()
        expect(loss.locator("[data-role=summary]")).to_contain_text("10 points")

        # New points appear within the 2 s refresh; a new series within the tab's 5 s poll.
        metrics.append_points(child, "loss", [(s, 1.0 / (s + 1), t0 + s) for s in range(10, 25)])
        expect(loss.locator("[data-role=summary]")).to_contain_text("25 points", timeout=10_000)
        metrics.append_points(child, "lr", [(0, 0.1, t0), (1, 0.05, t0 + 1)])
        lr = page.locator("#metrics [data-chart][data-key='scalar:lr']")
        expect(lr.locator(".scatterlayer .trace path").first).to_be_attached(timeout=15_000)
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)

        # The run ends: the page reloads itself as final, draws each chart once and stops refreshing.
        assert child.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
        expect(page.locator("#run-summary .badge")).to_have_attribute("data-status", "Completed", timeout=20_000)
        expect(page.locator(".telemetry[data-run-final=true]")).to_be_attached()
        expect(lr.locator(".scatterlayer .trace path").first).to_be_attached()
        page.wait_for_timeout(500)
        requests.clear()
        page.wait_for_timeout(4_500)
        assert requests == [], f"a final run's page still asked for chart data: {requests}"
        assert errors == [], errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        print(f"screenshots in {tmp_path}")
        context.close()
