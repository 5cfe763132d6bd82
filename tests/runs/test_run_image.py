"""One image a run logged: PNG and JPEG shown inline, SVG only ever downloaded, the file found from the stored entry."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs import metrics, storage
from runs.models import MetricEntry, Run
from tests.conftest import assert_sent_to_sign_in, login, make_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 40
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.fixture
def run(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist")


def log_image(run, name: str, content: bytes, fmt: str, *, relative: str | None = None) -> MetricEntry:
    series = metrics.MetricSeries.objects.filter(run=run, name=name).first()
    seq = series.count if series else 0
    relative = relative or f"images/{name}/{seq}.{'jpg' if fmt == 'jpeg' else fmt}"
    target = storage.run_dir(run.pk) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    metrics.append_entries(run, name, "image", [{"file": relative, "format": fmt, "size": len(content)}])
    return MetricEntry.objects.get(series__run=run, series__name=name, seq=seq)


@pytest.fixture
def png(run) -> MetricEntry:
    return log_image(run, "samples", PNG, "png")


def url(run, entry) -> str:
    return f"/w/lab/runs/{run.pk}/images/{entry.pk}/"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_it_is_at_the_expected_url(run, png):
    assert reverse("run_image", args=["lab", run.pk, png.pk]) == url(run, png)


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_shows_a_png_inline_to_every_member(client, cast, run, png, who):
    login(client, cast[who])
    response = client.get(url(run, png))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response.get("Content-Disposition", "").startswith("attachment")
    assert body(response) == PNG


def test_it_shows_a_jpeg_inline(client, cast, run):
    entry = log_image(run, "photos", JPEG, "jpeg")
    login(client, cast["bob"])
    response = client.get(url(run, entry))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert not response.get("Content-Disposition", "").startswith("attachment")
    assert body(response) == JPEG


def test_an_svg_is_always_a_download(client, cast, run):
    entry = log_image(run, "diagram", SVG, "svg")
    login(client, cast["bob"])
    response = client.get(url(run, entry))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response["Content-Disposition"] == 'attachment; filename="diagram-0.svg"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert body(response) == SVG


def test_it_hides_the_workspace_from_an_outsider(client, cast, run, png):
    login(client, cast["charlie"])
    response = client.get(url(run, png))
    assert response.status_code == 404
    assert PNG not in body(response)


def test_it_answers_404_for_a_run_of_another_workspace(client, cast, run, png):
    from studio.models import Workspace

    foreign = make_run(Workspace.objects.get(name="elsewhere"), cast["charlie"], experiment="secret")
    secret = log_image(foreign, "secret", PNG, "png")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{foreign.pk}/images/{secret.pk}/").status_code == 404
    assert client.get(f"/w/elsewhere/runs/{foreign.pk}/images/{secret.pk}/").status_code == 404
    login(client, cast["charlie"])
    assert client.get(f"/w/elsewhere/runs/{run.pk}/images/{png.pk}/").status_code == 404


def test_it_answers_404_for_an_entry_of_another_run(client, cast, workspace, run, png):
    other = make_run(workspace, cast["alice"], experiment="mnist")
    login(client, cast["alice"])
    assert client.get(f"/w/lab/runs/{other.pk}/images/{png.pk}/").status_code == 404


def test_it_answers_404_for_an_entry_that_is_not_an_image(client, cast, run):
    metrics.append_entries(run, "weights", "list", [[1, 2, 3]])
    entry = MetricEntry.objects.get(series__run=run, series__name="weights")
    login(client, cast["bob"])
    assert client.get(url(run, entry)).status_code == 404


def test_it_answers_404_for_an_unknown_entry_or_a_missing_file(client, cast, run, png):
    login(client, cast["bob"])
    assert client.get(f"/w/lab/runs/{run.pk}/images/{png.pk + 1000}/").status_code == 404
    (storage.run_dir(run.pk) / png.data["file"]).unlink()
    assert client.get(url(run, png)).status_code == 404


def test_the_file_comes_only_from_the_entry_and_stays_in_the_runs_images(client, cast, run):
    outputs = storage.run_dir(run.pk) / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "secret.png").write_bytes(PNG)
    metrics.append_entries(run, "odd", "image", [{"file": "outputs/secret.png", "format": "png", "size": 1}])
    metrics.append_entries(run, "odd", "image", [{"file": "images/../../../etc/passwd", "format": "png", "size": 1}])
    login(client, cast["bob"])
    for entry in MetricEntry.objects.filter(series__run=run, series__name="odd"):
        assert client.get(url(run, entry)).status_code == 404
    png = log_image(run, "samples", PNG, "png")
    response = client.get(url(run, png), {"file": "outputs/secret.png", "path": "../outputs/secret.png"})
    assert response.status_code == 200 and body(response) == PNG


def test_it_sends_an_anonymous_visitor_to_sign_in(client, run, png):
    assert_sent_to_sign_in(client.get(url(run, png)), url(run, png))


def test_it_refuses_a_post(client, cast, run, png):
    login(client, cast["alice"])
    assert client.post(url(run, png)).status_code == 405
