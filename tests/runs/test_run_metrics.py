"""A run's metrics tab: chart cards for scalar series (system ones apart), lists, sortable tables, an image
gallery, child runs, the empty state, and the live poll that swaps the tab only when something new appeared."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from runs import metrics, storage
from runs.models import MetricEntry, MetricSeries, Run, RunStatus
from tests.conftest import assert_sent_to_sign_in, login, make_run, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

HTMX = {"HX-Request": "true"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def run(cast, workspace) -> Run:
    run = make_run(workspace, cast["carol"], experiment="mnist")
    assert run.transition(RunStatus.RUNNING, from_states=(RunStatus.QUEUED,))
    return run


@pytest.fixture
def logged(run) -> Run:
    metrics.append_points(run, "loss", [(0, 0.9, 1.0), (1, 0.5, 2.0)], description="training loss")
    metrics.append_points(run, "accuracy", [(0, 0.1, 1.0), (1, 0.7, 2.0)])
    metrics.append_points(run, "sys/cpu_percent", [(None, 50.0, 1.0), (None, 80.0, 2.0)])
    metrics.append_points(run, "sys/memory_rss_mb", [(None, 120.0, 1.0)])
    return run


def url(run) -> str:
    return f"/w/lab/runs/{run.pk}/metrics/"


def sections(page: str) -> dict[str, str]:
    """The tab's sections by id: each from its opening tag to the next section's."""
    parts = re.split(r'(?=<section id=")', page)
    return {
        re.match(r'<section id="([^"]+)"', part).group(1): part for part in parts if part.startswith("<section id=")
    }


def series_url(run, name: str) -> str:
    series = MetricSeries.objects.get(run=run, name=name)
    return reverse("series_data", args=["lab", run.pk, series.pk])


def test_it_is_at_the_expected_url(run):
    assert reverse("run_metrics", args=["lab", run.pk]) == url(run)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_the_metrics_to_every_member(client, cast, logged, who):
    login(client, cast[who])
    response = client.get(url(logged), headers=HTMX)
    assert response.status_code == 200
    assert series_url(logged, "loss") in response.content.decode()


def test_it_hides_the_workspace_from_an_outsider(client, cast, logged):
    login(client, cast["charlie"])
    response = client.get(url(logged), headers=HTMX)
    assert response.status_code == 404
    assert b"accuracy" not in response.content


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/metrics/").status_code == 404
    login(client, cast["charlie"])
    assert client.get(f"/w/elsewhere/runs/{run.pk}/metrics/").status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run):
    assert_sent_to_sign_in(client.get(url(run)), url(run))


def test_it_refuses_a_post(client, cast, run):
    login(client, cast["alice"])
    assert client.post(url(run)).status_code == 405


def test_for_htmx_it_is_only_the_tab(client, cast, logged):
    login(client, cast["bob"])
    page = client.get(url(logged), headers=HTMX).content.decode()
    assert "<html" not in page and "plotly.min.js" not in page
    assert '<section id="metrics"' in page and '<section id="system"' in page


def test_opened_directly_it_is_a_page_with_the_chart_scripts(client, cast, logged):
    login(client, cast["bob"])
    page = client.get(url(logged)).content.decode()
    assert "<html" in page and '<section id="metrics"' in page
    assert '<script src="/static/plotly/plotly.min.js" defer></script>' in page
    assert '<script src="/static/studio/charts.js" defer></script>' in page
    assert f'href="/w/lab/runs/{logged.pk}/"' in page


def test_each_scalar_series_gets_a_chart_card_and_system_series_their_own_section(client, cast, logged):
    login(client, cast["bob"])
    page = text(client.get(url(logged), headers=HTMX))
    parts = sections(page)
    user, system = parts["metrics"], parts["system"]
    assert user.count("data-chart ") == 2 and system.count("data-chart ") == 2
    assert user.index(f'data-url="{series_url(logged, "accuracy")}"') < user.index(
        f'data-url="{series_url(logged, "loss")}"'
    )
    assert f'data-url="{series_url(logged, "sys/cpu_percent")}"' in system
    assert "sys/" not in user
    assert 'title="training loss">loss</strong>' in user
    assert "last 0.5 · 2 points" in user
    for control in ('data-role="x"', 'data-role="log"', 'data-role="smooth"'):
        assert user.count(control) == 2
    assert '<option value="relative">relative time</option>' in user


def test_a_list_is_a_chart_of_its_latest_entry_with_non_finite_values_as_null(client, cast, run):
    metrics.append_entries(run, "weights", "list", [[9, 9], [1, "NaN", 3, "Infinity"]])
    login(client, cast["bob"])
    page = client.get(url(run), headers=HTMX).content.decode()
    series = MetricSeries.objects.get(run=run, name="weights")
    embedded = re.search(rf'<script id="list-data-{series.pk}" type="application/json">(.*?)</script>', page).group(1)
    data = json.loads(embedded, parse_constant=lambda token: pytest.fail(f"{token} in the JSON"))
    trace = data["traces"][0]
    assert trace["x"] == [0, 1, 2, 3] and trace["y"] == [1.0, None, 3.0, None]
    assert trace["nonfinite"] == [{"x": 1, "value": "NaN"}, {"x": 3, "value": "Infinity"}]
    assert 'data-source="list-data-' in page and "4 values" in page


def test_logged_rows_are_a_sortable_table_with_markup_shown_as_text(client, cast, run):
    metrics.append_entries(
        run, "eval", "row", [{"epoch": 1, "f1": 0.5, "note": "<b>x</b>"}, {"epoch": 2, "f1": 0.75, "extra": True}]
    )
    login(client, cast["bob"])
    raw = client.get(url(run), headers=HTMX).content.decode()
    assert "<b>x</b>" not in raw and "&lt;b&gt;x&lt;/b&gt;" in raw
    table = raw[raw.index('<table class="grid sortable">') :]
    table = table[: table.index("</table>")]
    headers = re.findall(r"<th [^>]*>(.*?)</th>", table)
    assert headers == ["#", "epoch", "f1", "note", "extra"]
    assert table.count("<tr>") == 3  # header and two rows
    assert '<td data-sort="0.75" class="num">0.75</td>' in table and "<td>true</td>" in table
    assert "2 rows logged" in raw
    series = MetricSeries.objects.get(run=run, name="eval")
    chart = json.loads(
        re.search(rf'<script id="table-data-{series.pk}" type="application/json">(.*?)</script>', raw).group(1)
    )
    assert chart["x_title"] == "epoch"  # an increasing first column is the x of the others
    assert [(t["name"], t["x"], t["y"]) for t in chart["traces"]] == [("f1", [1, 2], [0.5, 0.75])]


def test_a_logged_table_shows_its_latest_entry(client, cast, run):
    metrics.append_entries(run, "confusion", "table", [{"old": [1]}, {"label": ["cat", "<dog>"], "count": [3, "NaN"]}])
    login(client, cast["bob"])
    raw = client.get(url(run), headers=HTMX).content.decode()
    assert "old" not in re.sub(r"<script.*?</script>", "", raw, flags=re.S).replace("hold", "")
    assert "<td>cat</td>" in raw and "<td>&lt;dog&gt;</td>" in raw
    assert '<td data-sort="3" class="num">3</td>' in raw and "<td>NaN</td>" in raw
    assert "(latest of 2)" in raw


def test_images_are_a_gallery_and_svg_is_only_a_download_link(client, cast, run):
    images = storage.run_dir(run.pk) / "images"
    (images / "samples").mkdir(parents=True)
    (images / "samples" / "0.png").write_bytes(PNG)
    (images / "plot").mkdir()
    (images / "plot" / "0.svg").write_bytes(b"<svg><script>alert(1)</script></svg>")
    metrics.append_entries(
        run, "samples", "image", [{"file": "images/samples/0.png", "format": "png", "size": len(PNG)}]
    )
    metrics.append_entries(run, "plot", "image", [{"file": "images/plot/0.svg", "format": "svg", "size": 36}])
    png = MetricEntry.objects.get(series__run=run, series__name="samples")
    svg = MetricEntry.objects.get(series__run=run, series__name="plot")
    login(client, cast["bob"])
    raw = client.get(url(run), headers=HTMX).content.decode()
    assert f'<img src="/w/lab/runs/{run.pk}/images/{png.pk}/" alt="samples #0" loading="lazy">' in raw
    assert f'<img src="/w/lab/runs/{run.pk}/images/{svg.pk}/"' not in raw
    assert f'<a class="svg-download" href="/w/lab/runs/{run.pk}/images/{svg.pk}/" download>' in raw
    assert "<svg" not in raw and "alert(1)" not in raw


def test_nothing_logged_yet_says_how_to_log(client, cast, run):
    login(client, cast["bob"])
    page = text(client.get(url(run), headers=HTMX))
    assert "Nothing logged yet" in page
    assert "from studio_sdk import Run" in page
    assert "run = Run.get_context()" in page
    assert 'run.log("loss", 0.5)' in page
    assert "data-chart" not in page


def test_a_final_run_that_logged_nothing_says_so(client, cast, run):
    run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    login(client, cast["bob"])
    page = text(client.get(url(run), headers=HTMX))
    assert "This run logged no metrics." in page and 'run.log("loss", 0.5)' in page
    assert "No system metrics were recorded" in page


def test_system_metrics_alone_still_show_the_empty_state_for_user_metrics(client, cast, run):
    metrics.append_points(run, "sys/cpu_percent", [(None, 5.0, 1.0)])
    login(client, cast["bob"])
    parts = sections(text(client.get(url(run), headers=HTMX)))
    assert "Nothing logged yet" in parts["metrics"] and "data-chart" in parts["system"]


def test_child_runs_are_listed_with_their_latest_metrics(client, cast, logged):
    first, second = logged.create_child("fold-0"), logged.create_child("fold-<1>")
    metrics.append_points(first, "val_loss", [(0, 0.42, 1.0)])
    metrics.append_points(second, "val_loss", [(0, 0.5, 1.0), (1, 0.31, 2.0)])
    metrics.append_points(second, "sys/cpu_percent", [(None, 99.0, 1.0)])
    second.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    login(client, cast["bob"])
    raw = client.get(url(logged), headers=HTMX).content.decode()
    children = sections(raw)["children"]
    assert f'<a href="/w/lab/runs/{first.pk}/">fold-0</a>' in children
    assert f'<a href="/w/lab/runs/{second.pk}/">fold-&lt;1&gt;</a>' in children
    assert "<th>val_loss</th>" in children and "sys/" not in children
    assert '<td class="num">0.42</td>' in children and '<td class="num">0.31</td>' in children
    assert 'data-status="Running"' in children and 'data-status="Completed"' in children


def test_child_runs_cost_the_same_queries_however_many_there_are(client, cast, run, django_assert_max_num_queries):
    def add_children(count):
        for i in range(count):
            child = run.create_child(f"trial-{Run.objects.filter(parent=run).count()}")
            metrics.append_points(child, "score", [(0, float(i), 1.0)])
            metrics.append_points(child, "loss", [(0, float(i), 1.0)])

    login(client, cast["bob"])
    add_children(1)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        client.get(url(run), headers=HTMX)
    add_children(9)
    with django_assert_max_num_queries(len(one.captured_queries)):
        page = client.get(url(run), headers=HTMX).content.decode()
    assert page.count("trial-") == 10


def test_the_live_poll_answers_204_while_nothing_new_appeared(client, cast, logged):
    login(client, cast["bob"])
    page = client.get(url(logged), headers=HTMX).content.decode()
    version = re.search(r'data-version="([^"]+)"', page).group(1)
    assert f'hx-get="/w/lab/runs/{logged.pk}/metrics/?known={version}" hx-trigger="every 5s, studio:layout from:body"' in page
    assert client.get(url(logged), {"known": version}, headers=HTMX).status_code == 204
    metrics.append_points(logged, "loss", [(2, 0.4, 3.0)])  # the charts fetch new points themselves
    assert client.get(url(logged), {"known": version}, headers=HTMX).status_code == 204
    metrics.append_points(logged, "lr", [(0, 0.1, 3.0)])
    response = client.get(url(logged), {"known": version}, headers=HTMX)
    assert response.status_code == 200 and series_url(logged, "lr") in response.content.decode()


def test_the_live_poll_stops_once_the_run_is_final(client, cast, logged):
    login(client, cast["bob"])
    version = re.search(r'data-version="([^"]+)"', client.get(url(logged), headers=HTMX).content.decode()).group(1)
    logged.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    assert client.get(url(logged), {"known": version}, headers=HTMX).status_code == 286
    page = client.get(url(logged), headers=HTMX).content.decode()
    assert "known=" not in page and 'data-run-final="true"' in page


@pytest.mark.parametrize("known", ["abc", "1.2", "1.2.3.4.5", "-1.0.0"])
def test_it_answers_400_for_a_bad_version(client, cast, run, known):
    login(client, cast["bob"])
    assert client.get(url(run), {"known": known}, headers=HTMX).status_code == 400


def test_the_run_page_loads_the_metrics_tab_and_the_chart_scripts(client, cast, run):
    login(client, cast["bob"])
    page = client.get(f"/w/lab/runs/{run.pk}/").content.decode()
    assert 'data-tab="metrics"' in page and 'data-tab="system"' in page
    assert f'hx-get="/w/lab/runs/{run.pk}/metrics/" hx-trigger="studio:show once"' in page  # when its tab opens
    page = client.get(f"/w/lab/runs/{run.pk}/", {"tab": "metrics"}).content.decode()
    assert f'hx-get="/w/lab/runs/{run.pk}/metrics/" hx-trigger="load"' in page
    assert '<script src="/static/plotly/plotly.min.js" defer></script>' in page
    assert '<script src="/static/studio/charts.js" defer></script>' in page
    assert '(<span id="child-count">0</span>)' in page


def test_the_run_page_of_a_parent_links_its_children_and_a_child_links_back(client, cast, run):
    child = run.create_child("fold-0")
    login(client, cast["bob"])
    parent_page = text(client.get(f"/w/lab/runs/{run.pk}/"))
    assert 'Children (<span id="child-count">1</span>)' in parent_page
    child_page = text(client.get(f"/w/lab/runs/{child.pk}/"))
    assert f'<a href="/w/lab/runs/{run.pk}/" id="parent-run">parent: {run.title}' in child_page
