"""The registry's pages: the run page's panel registers outputs, the upload form, Models, a model, a version."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints.models import Deployment, Endpoint
from models_registry import registry
from models_registry.models import ModelVersion, RegisteredModel
from tests.conftest import assert_sent_to_sign_in, login, text
from tests.models_registry.conftest import MLMODEL, completed_run_with_outputs, sklearn_pickle, tar_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def run(cast, workspace):
    return completed_run_with_outputs(workspace, cast["carol"], {
        "outputs/model/MLmodel": MLMODEL.encode(), "outputs/model/model.pkl": sklearn_pickle(),
        "outputs/report.txt": b"accuracy 0.95",
    })


def test_the_run_page_loads_a_models_panel_offering_the_runs_outputs(client, cast, run):
    login(client, cast["carol"])
    page = text(client.get(f"/w/lab/runs/{run.pk}/"))
    assert f'hx-get="/w/lab/runs/{run.pk}/models/"' in page
    panel = text(client.get(f"/w/lab/runs/{run.pk}/models/", HTTP_HX_REQUEST="true"))
    assert "No model was registered from this run yet." in panel
    for choice in ("outputs/model/", "outputs/model/MLmodel", "outputs/report.txt"):
        assert f'value="{choice}"' in panel
    checked = re.findall(r'<input type="checkbox" name="paths" value="([^"]+)"[^>]*checked', panel)
    assert checked == ["outputs/model/"]  # the model folder is offered ticked


def test_a_contributor_registers_a_folder_from_the_run_page(client, cast, run):
    login(client, cast["carol"])
    response = client.post(f"/w/lab/runs/{run.pk}/models/register/",
                           {"paths": ["outputs/model/"], "name": "digits-classifier", "tags": "team=vision"})
    assert response.status_code == 302 and response.url == "/w/lab/models/digits-classifier/1/"
    page = text(client.get(response.url))
    assert "Registered digits-classifier version 1 from run" in page
    assert "scikit-learn 1.5.2" in page and "pixel_0" in page  # framework and signature
    assert f'href="/w/lab/runs/{run.pk}/"' in page  # lineage to the run
    assert "MLmodel" in page and "model.pkl" in page
    panel = text(client.get(f"/w/lab/runs/{run.pk}/models/"))
    assert "digits-classifier:1" in panel


def test_a_registration_from_htmx_redirects_the_page_or_shows_the_error_in_the_panel(client, cast, run):
    login(client, cast["carol"])
    ok = client.post(f"/w/lab/runs/{run.pk}/models/register/", {"paths": ["outputs/report.txt"], "name": "r"},
                     HTTP_HX_REQUEST="true")
    assert ok.status_code == 200 and ok["HX-Redirect"] == "/w/lab/models/r/1/"
    bad = client.post(f"/w/lab/runs/{run.pk}/models/register/", {"name": "bad name!"}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400
    body = text(bad)
    assert "Tick at least one file or folder under outputs/." in body and "Use 1-255 letters" in body


def test_a_reader_sees_the_panel_without_the_form_and_cannot_register(client, cast, run):
    login(client, cast["bob"])
    panel = text(client.get(f"/w/lab/runs/{run.pk}/models/"))
    assert "Register model" not in panel
    response = client.post(f"/w/lab/runs/{run.pk}/models/register/", {"paths": ["outputs/model/"], "name": "x"})
    assert response.status_code == 403
    assert not RegisteredModel.objects.exists()


def test_uploading_a_model_through_the_form(client, cast, workspace):
    login(client, cast["carol"])
    archive = SimpleUploadedFile("model.tar.gz", tar_bytes({"model/MLmodel": MLMODEL.encode(),
                                                            "model/model.pkl": sklearn_pickle()}))
    response = client.post("/w/lab/models/_upload/", {"name": "digits", "files": archive, "description": "from a laptop"})
    assert response.status_code == 302 and response.url == "/w/lab/models/digits/1/"
    page = text(client.get(response.url))
    assert "Uploaded by carol" in page and "from a laptop" in page


def test_the_upload_form_shows_what_is_wrong_and_stores_nothing(client, cast, workspace):
    login(client, cast["carol"])
    evil = SimpleUploadedFile("model.zip", _zip_with("../escape.txt"))
    response = client.post("/w/lab/models/_upload/", {"name": "digits", "files": evil})
    assert response.status_code == 400
    assert "Refused" in text(response) and "leave the folder" in text(response)
    assert not ModelVersion.objects.exists()


def _zip_with(name: str) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"x")
    return buffer.getvalue()


def test_the_models_page_lists_filters_and_shows_aliases(client, cast, run, workspace):
    first = registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"], tags={"team": "vision"})
    registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"], tags={"team": "vision"})
    registry.register_from_run(run, cast["carol"], "speech", ["outputs/report.txt"], tags={"team": "audio"})
    registry.set_alias(first, "production", cast["carol"])
    login(client, cast["bob"])
    page = text(client.get("/w/lab/models/"))
    assert page.index("speech") < page.index("digits")  # most recently registered first
    assert "production → v1" in page and "scikit-learn" in page
    filtered = text(client.get("/w/lab/models/?tag=team%3Daudio"))
    assert "speech" in filtered and "/w/lab/models/digits/" not in filtered
    assert "No model matches these filters." in text(client.get("/w/lab/models/?alias=staging"))
    assert client.get("/w/lab/models/?after=nope").status_code == 400


def test_the_model_page_compares_versions_and_moves_aliases(client, cast, run, workspace):
    from runs import metrics

    metrics.append_points(run, "accuracy", [(0, 0.91, 1.0)])
    registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"])
    metrics.append_points(run, "accuracy", [(1, 0.97, 2.0)])
    registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"])
    login(client, cast["carol"])
    page = text(client.get("/w/lab/models/digits/"))
    assert "<th class=\"num\">accuracy</th>" in page and "0.91" in page and "0.97" in page
    assert '{"accuracy": {"x": [1, 2], "y": [0.91, 0.97]}}' in page  # the chart's data, version by version
    moved = client.post("/w/lab/models/digits/aliases/", {"alias": "production", "version": "2"}, follow=True)
    assert "digits@production is now version 2." in text(moved)
    assert "@production" in text(moved) and "(new) → v2" in text(moved)
    bad = client.post("/w/lab/models/digits/aliases/", {"alias": "production", "version": "9"}, follow=True)
    assert "The model digits has no version 9." in text(bad)
    assert client.post("/w/lab/models/digits/aliases/", {"alias": "Bad Alias"}).status_code == 400


def test_the_version_page_edits_tags_downloads_and_says_where_it_is_deployed(client, cast, run, workspace):
    version = registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"])
    Deployment.objects.create(endpoint=Endpoint.objects.create(workspace=workspace, name="digits-api"), name="blue",
                              model_version=version, compute_target=workspace.compute_targets.get(name="local"))
    login(client, cast["carol"])
    page = text(client.get("/w/lab/models/digits/1/"))
    assert "deployment blue of endpoint digits-api" in page
    saved = client.post("/w/lab/models/digits/1/tags/", {"tags": "stage=qa"}, follow=True)
    assert "Tags saved." in text(saved)
    assert ModelVersion.objects.get().tags == {"stage": "qa"}
    download = client.get("/w/lab/models/digits/1/files/model/MLmodel")
    assert b"".join(download.streaming_content).decode() == MLMODEL
    assert client.get("/w/lab/models/digits/1/files/model/nope").status_code == 404


def test_only_an_owner_deletes_and_a_served_version_is_kept(client, cast, run, workspace):
    version = registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"])
    login(client, cast["carol"])
    assert client.post("/w/lab/models/digits/1/delete/").status_code == 403
    deployment = Deployment.objects.create(endpoint=Endpoint.objects.create(workspace=workspace, name="api"),
                                           name="blue", model_version=version,
                                           compute_target=workspace.compute_targets.get(name="local"))
    login(client, cast["alice"])
    refused = client.post("/w/lab/models/digits/1/delete/", follow=True)
    assert "in use by deployment blue of endpoint api" in text(refused)
    deployment.delete()
    deleted = client.post("/w/lab/models/digits/1/delete/", follow=True)
    assert "Deleted digits:1" in text(deleted)
    assert not ModelVersion.objects.exists()


def test_archiving_hides_a_model_from_the_list(client, cast, run):
    registry.register_from_run(run, cast["carol"], "digits", ["outputs/model"])
    login(client, cast["carol"])
    client.post("/w/lab/models/digits/archive/", {"archived": "on"})
    assert "/w/lab/models/digits/" not in text(client.get("/w/lab/models/"))
    assert "/w/lab/models/digits/" in text(client.get("/w/lab/models/?archived=on"))


def test_an_anonymous_visitor_is_sent_to_sign_in(client):
    assert_sent_to_sign_in(client.get("/w/lab/models/"), "/w/lab/models/")
