"""Names a user or a script chose are text in charts, never markup: in a real browser, a run named
`<a href=...>` makes no link in the compare chart's hover label, and a parameter named `<b>lr</b>` (stored directly:
the API refuses such names) is drawn as written in the parallel-coordinates chart; a series named with `<br>` keeps it as text in the run page's chart."""

from __future__ import annotations

import time

import pytest

from runs import metrics, parameters
from runs.models import RunStatus
from tests.conftest import PASSWORD, make_run

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
LINK_NAME = '<a href="https://evil.example/">click me</a>'


def finished(run):
    if run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,)):
        run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    deadline = time.monotonic() + 60
    while not run.is_final and time.monotonic() < deadline:
        time.sleep(0.2)
        run.refresh_from_db()
    return run


def test_names_are_shown_as_written_in_every_chart(cast, workspace, worker, web, browser, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    runs = [
        finished(make_run(workspace, cast["carol"], experiment="markup", display_name=LINK_NAME)),
        finished(make_run(workspace, cast["carol"], experiment="markup", display_name="plain")),
    ]
    for run, rate in zip(runs, ("0.1", "0.01"), strict=True):
        parameters.row(run, "<b>lr</b>", rate, "script").save()
    for index, run in enumerate(runs):
        metrics.append_points(run, "loss<br>val", [(step, 1.0 / (step + 1 + index), float(step)) for step in range(20)])
    page = browser.new_context(viewport={"width": 1280, "height": 1200}).new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web)
    page.fill("#id_username", "bob")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]:has-text('Sign in')")
    expect(page.locator(".who")).to_contain_text("bob")

    page.goto(f"{web}/w/lab/experiments/markup/compare/?run={runs[0].pk}&run={runs[1].pk}")
    parcoords = page.locator("#parcoords-chart")
    expect(parcoords.locator("text", has_text="<b>lr</b>").first).to_be_attached()
    assert parcoords.locator("a").count() == 0

    chart = page.locator("[data-chart='0']")
    expect(chart.locator(".gtitle")).to_have_text("loss<br>val")
    chart.evaluate("el => Plotly.Fx.hover(el, [{curveNumber: 0, pointNumber: 3}])")
    hover = chart.locator(".hoverlayer")
    expect(hover).to_contain_text(LINK_NAME)
    assert hover.locator("a").count() == 0
    assert page.locator("a[href='https://evil.example/']").count() == 0

    page.goto(f"{web}/w/lab/runs/{runs[0].pk}/metrics/")
    card = page.locator("[data-chart][data-key='scalar:loss<br>val']")
    expect(card.locator(".scatterlayer .trace path").first).to_be_attached()
    assert card.locator(".js-plotly-plot a").count() == 0
    assert errors == []
