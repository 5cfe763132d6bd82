"""The run page in a real browser: it moves with the run (duration ticking, the first metric point and tags pushed
over the page's one live connection), its tabs keep their state in the URL, and charts are chosen by the data (one
value as a number, a square table as a heatmap, rows as lines or bars, one value per run as bars in compare).

Drives Debian's headless Chromium through playwright against the real ASGI server (`web`) and worker (`worker`).
Skipped, with the reason, when Chromium is not installed or playwright cannot launch it.
"""

from __future__ import annotations

import re
import time

import pytest

from runs import metrics
from runs.models import Run, RunStatus
from tests.conftest import PASSWORD, make_run

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIVE_SCRIPT = """\
import time
from studio_sdk import Run
run = Run.get_context()
print("started", flush=True)
time.sleep(6)
run.log("first_loss", 0.25)
print("LOGGED_AT %.3f" % time.time(), flush=True)
run.set_tags({"phase": "training"})
time.sleep(30)
"""


def _signed_in_page(browser, web, user="bob"):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web)
    page.fill("#id_username", user)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]:has-text('Sign in')")
    expect(page.locator(".who")).to_contain_text(user)
    return context, page, errors


def _finished_run(workspace, user, experiment: str, name: str) -> Run:
    """A Completed run (the worker takes its queued message; whichever moves it first, it ends Completed)."""
    run = make_run(workspace, user, experiment=experiment, display_name=name)
    if run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,)):
        assert run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    deadline = time.monotonic() + 30
    while not run.is_final and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, (run.status, run.reason)
    return run


def test_a_live_run_page_ticks_and_shows_the_first_metric_point_within_a_second(
    cast, workspace, worker, web, browser, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    context, page, errors = _signed_in_page(browser, web)
    run = make_run(workspace, cast["carol"], LIVE_SCRIPT, experiment="live-page")
    try:
        page.goto(f"{web}/w/{workspace.name}/runs/{run.pk}/?tab=metrics")
        expect(page.locator("#run-summary .badge")).to_have_attribute("data-status", "Running", timeout=20_000)
        expect(page.locator("#metrics-empty")).to_be_visible()

        # The duration counts up while the run goes, without a reload.
        duration = page.locator("#run-duration")
        expect(duration).to_have_text(re.compile(r"^\d+\.\ds$"))
        first = float(duration.text_content().rstrip("s"))
        page.wait_for_timeout(1_200)
        later = float(duration.text_content().rstrip("s"))
        assert 0.8 <= later - first <= 2.0, (first, later)

        # The point is on screen within a second of the script logging it (no reload, no 2 s or 5 s poll).
        number = page.locator("#metrics [data-key='scalar:first_loss'] .stat-number")
        page.wait_for_function(
            "() => !!document.querySelector(\"#metrics [data-key='scalar:first_loss'] .stat-number\")",
            timeout=20_000, polling=20,
        )
        shown_at = time.time()
        expect(number).to_have_text("0.25")
        expect(page.locator("#console")).to_contain_text("LOGGED_AT")
        logged_at = float(re.search(r"LOGGED_AT (\d+\.\d+)", page.locator("#console").text_content()).group(1))
        assert shown_at - logged_at < 1.0, f"the first point took {shown_at - logged_at:.2f} s to appear"
        print(f"first point on screen {shown_at - logged_at:.2f} s after it was logged")

        # Tags arrive the same way; the Overview tab shows them.
        page.click("nav.tabs a[data-tab=overview]")
        expect(page.locator("#run-tags")).to_contain_text("phase: training", timeout=5_000)
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        assert errors == [], errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        run.refresh_from_db()
        if not run.is_final:
            run.request_cancel(reason="test over")
        context.close()


def test_the_tabs_keep_their_state_in_the_url_and_load_their_panes_when_opened(
    cast, workspace, worker, web, browser, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    run = _finished_run(workspace, cast["carol"], "tabs", "tabbed")
    t0 = run.started_at.timestamp()
    metrics.append_points(run, "loss", [(s, 1.0 / (s + 1), t0 + s) for s in range(50)])
    context, page, errors = _signed_in_page(browser, web)
    outputs: list[str] = []
    page.on("request", lambda request: outputs.append(request.url) if "pane=outputs" in request.url else None)
    try:
        page.goto(f"{web}/w/{workspace.name}/runs/{run.pk}/")
        expect(page.locator("#tab-overview")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#overview")).to_be_visible()
        expect(page.locator("#metrics")).to_be_hidden()
        assert outputs == []  # a pane loads when its tab is first opened

        page.click("nav.tabs a[data-tab=metrics]")
        assert page.url.endswith("?tab=metrics"), page.url
        expect(page.locator("#metrics .js-plotly-plot .scatterlayer .trace path").first).to_be_attached()
        expect(page.locator("#overview")).to_be_hidden()

        page.click("nav.tabs a[data-tab=outputs]")
        assert page.url.endswith("?tab=outputs"), page.url
        # the pane, loaded: files when the worker ran the script first, else the note that it wrote none
        expect(page.locator("#outputs")).to_contain_text(re.compile(r"The script wrote nothing|Download all \(zip\)"))
        assert len(outputs) == 1, outputs

        page.go_back()
        expect(page.locator("#tab-metrics")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#metrics")).to_be_visible()
        page.reload()
        expect(page.locator("#tab-metrics")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#metrics .js-plotly-plot").first).to_be_visible()
        expect(page.locator("#console")).to_be_hidden()

        page.goto(f"{web}/w/{workspace.name}/runs/{run.pk}/#logs")  # an old link to a section opens its tab
        expect(page.locator("#tab-console")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#console")).to_be_visible()
        assert page.url.endswith("?tab=console"), page.url
        assert errors == [], errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        context.close()


def test_charts_are_chosen_by_the_data(cast, workspace, worker, web, browser, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    runs = [_finished_run(workspace, cast["carol"], "digits-charts", name) for name in ("a", "b")]
    for index, run in enumerate(runs):
        t0 = run.started_at.timestamp()
        metrics.append_points(run, "final_accuracy", [(0, 0.9533 - index / 10, t0)])
    run = runs[0]
    matrix = [[(17 if row == col else (row + col) % 3) for col in range(10)] for row in range(10)]
    metrics.append_entries(run, "confusion_matrix", "table",
                           [{f"pred_{c}": [matrix[r][c] for r in range(10)] for c in range(10)}])
    metrics.append_entries(run, "per_class", "row",
                           [{"digit": d, "support": 30 + d, "accuracy": 0.9 + d / 200} for d in range(10)])
    context, page, errors = _signed_in_page(browser, web)
    try:
        page.goto(f"{web}/w/{workspace.name}/runs/{run.pk}/?tab=metrics")
        # One value: a number, not a line chart.
        single = page.locator("#metrics [data-key='scalar:final_accuracy']")
        expect(single.locator(".stat-number")).to_have_text("0.9533")
        expect(single.locator(".js-plotly-plot")).to_have_count(0)

        # The confusion matrix: a heatmap with its columns along x and the rows along y, every column named.
        heatmap = page.locator("#metrics [data-key='table:confusion_matrix']")
        expect(heatmap.locator(".chart-title")).to_have_text("Heatmap")
        expect(heatmap.locator(".heatmaplayer image, .heatmaplayer .hm").first).to_be_attached()
        ticks = heatmap.locator(".xtick text").all_text_contents()
        assert ticks == [f"pred_{c}" for c in range(10)], ticks
        expect(heatmap.locator(".ytick text")).to_have_count(10)
        expect(heatmap.locator(".g-xtitle")).to_have_text("column")
        expect(heatmap.locator(".g-ytitle")).to_have_text("row")

        # Rows: lines by default, bars on request; the legend fits.
        rows = page.locator("#metrics [data-key='table:per_class']")
        expect(rows.locator(".scatterlayer .trace").first).to_be_attached()
        rows.locator("[data-role=type]").select_option("bar")
        expect(rows.locator(".barlayer .point").first).to_be_attached()
        legend = rows.locator(".legend").bounding_box()
        plot = rows.locator(".main-svg").first.bounding_box()
        assert legend["y"] + legend["height"] <= plot["y"] + plot["height"] + 1, (legend, plot)
        assert legend["x"] + legend["width"] <= plot["x"] + plot["width"] + 1, (legend, plot)
        page.screenshot(path=str(tmp_path / "charts.png"), full_page=True)

        # In compare, one value per run is bars across the runs.
        page.goto(f"{web}/w/{workspace.name}/experiments/digits-charts/compare/?run={runs[0].pk}&run={runs[1].pk}"
                  "&metric=final_accuracy")
        bars = page.locator("#metrics [data-chart][data-kind=bars]")
        expect(bars.locator(".barlayer .point")).to_have_count(2)
        assert errors == [], errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        context.close()
