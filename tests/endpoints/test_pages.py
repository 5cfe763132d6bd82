"""The endpoints' pages as a data scientist uses them: deploy from a model version, see the deployment, keys only for
those who may call it, traffic and mirror controls that refuse what cannot be, the history, charts' data."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from endpoints import services
from endpoints.models import Deployment, DeploymentState, Endpoint, RequestRecord, StatsBucket
from tests.conftest import login, text
from tests.endpoints.conftest import IDENTITY, register_files

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


@pytest.fixture
def version(workspace, cast):
    return register_files(workspace, cast["carol"], "digits", {"prefix.txt": b"v1"})


def deploy_form(**fields):
    data = {"model": "digits:1", "endpoint": "__new__", "new_endpoint": "digits", "name": "blue",
            "compute_target": "", "instance_count": 1, "request_timeout_ms": 5000, "max_concurrent_requests": 4,
            "traffic": 0, "script": SimpleUploadedFile("score.py", IDENTITY.encode())}
    data.update(fields)
    return data


def test_deploy_from_the_model_version_page_makes_the_endpoint_and_shows_it_building(client, cast, workspace,
                                                                                      version):
    login(client, cast["carol"])
    page = text(client.get("/w/lab/models/digits/1/"))
    assert "/w/lab/endpoints/_deploy/?model=digits:1" in page
    form = client.get("/w/lab/endpoints/_deploy/?model=digits:1")
    assert form.status_code == 200 and 'value="digits:1"' in form.content.decode()
    local = workspace.compute_targets.get(name="local")
    response = client.post("/w/lab/endpoints/_deploy/", deploy_form(compute_target=local.pk), follow=True)
    assert response.redirect_chain[-1][0] == "/w/lab/endpoints/digits/"
    body = text(response)
    assert "Deploying digits:1 as blue" in body
    assert "Building" in body and "http://127.0.0.1" in body and "/endpoints/lab/digits/score" in body
    deployment = Deployment.objects.get()
    assert deployment.scoring_source == IDENTITY and deployment.endpoint.traffic == {"blue": 100}
    assert "Deployment created: model digits:1" in body
    assert "deployment blue of endpoint digits" in text(client.get("/w/lab/models/digits/1/"))


def test_a_bad_script_or_model_is_said_in_the_form_and_nothing_is_made(client, cast, workspace, version):
    login(client, cast["carol"])
    local = workspace.compute_targets.get(name="local").pk
    broken = client.post("/w/lab/endpoints/_deploy/", deploy_form(
        compute_target=local, script=SimpleUploadedFile("score.py", b"def init(:\n")))
    assert broken.status_code == 400
    assert "The scoring script does not compile (line 1)" in text(broken)
    missing = client.post("/w/lab/endpoints/_deploy/", deploy_form(compute_target=local, model="digits:9"))
    assert "The model digits has no version 9." in text(missing)
    no_script = client.post("/w/lab/endpoints/_deploy/", deploy_form(compute_target=local, script=""))
    assert "is not an MLflow model" in text(no_script)
    rtl = client.post("/w/lab/endpoints/_deploy/", deploy_form(compute_target=local, new_endpoint="evil\u202etxt"))
    assert rtl.status_code == 400
    assert not Endpoint.objects.exists() and not Deployment.objects.exists()


def test_keys_are_shown_on_request_to_writers_and_never_to_readers(client, cast, workspace, version):
    endpoint = services.create_endpoint(workspace, cast["carol"], "digits")
    keys = services.keys(endpoint)
    login(client, cast["bob"])  # reader
    page = text(client.get("/w/lab/endpoints/digits/"))
    assert keys["primary"] not in page and keys["secondary"] not in page
    assert "Keys are shown to the workspace's contributors and owners." in page
    assert client.get("/w/lab/endpoints/digits/keys/").status_code == 403
    login(client, cast["carol"])
    page = text(client.get("/w/lab/endpoints/digits/"))
    assert keys["primary"] not in page and "Show keys" in page
    shown = text(client.get("/w/lab/endpoints/digits/keys/", headers={"HX-Request": "true"}))
    assert keys["primary"] in shown and keys["secondary"] in shown
    regenerated = client.post("/w/lab/endpoints/digits/keys/regenerate/", {"key": "secondary"}, follow=True)
    assert "The secondary key was regenerated" in text(regenerated)
    now = services.keys(Endpoint.objects.get())
    assert now["primary"] == keys["primary"] and now["secondary"] != keys["secondary"]
    assert Endpoint.objects.get().secondary_key_encrypted.find(now["secondary"]) == -1  # stored encrypted


def test_traffic_and_mirror_refuse_what_cannot_be_and_keep_the_split(client, cast, workspace, version):
    register_files(workspace, cast["carol"], "digits", {"prefix.txt": b"v2"})
    endpoint = services.create_endpoint(workspace, cast["carol"], "digits")
    local = workspace.compute_targets.get(name="local")
    for name, model in (("blue", "digits:1"), ("green", "digits:2"), ("shadow", "digits:2")):
        services.create_deployment(endpoint, cast["carol"], name, model=model, compute_target=local,
                                   script=("score.py", IDENTITY.encode()))
    login(client, cast["carol"])
    wrong_sum = client.post("/w/lab/endpoints/digits/traffic/", {"traffic-blue": 80, "traffic-green": 30},
                            follow=True)
    assert "The traffic split adds up to 110 %: it must add up to 100 %." in text(wrong_sum)
    too_much = client.post("/w/lab/endpoints/digits/traffic/", {"traffic-blue": 100, "mirror-green": 30,
                                                               "mirror-shadow": 30}, follow=True)
    assert "Mirroring adds up to 60 %: at most 50 % of requests can be mirrored." in text(too_much)
    both = client.post("/w/lab/endpoints/digits/traffic/", {"traffic-blue": 90, "traffic-green": 10,
                                                           "mirror-green": 20}, follow=True)
    assert "green takes live traffic, so it cannot also get mirrored traffic." in text(both)
    assert Endpoint.objects.get().traffic == {"blue": 100}
    ok = client.post("/w/lab/endpoints/digits/traffic/", {"traffic-blue": 90, "traffic-green": 10,
                                                         "mirror-shadow": 20}, follow=True)
    assert "Traffic updated" in text(ok)
    endpoint.refresh_from_db()
    assert endpoint.traffic == {"blue": 90, "green": 10} and endpoint.mirror == {"shadow": 20}
    assert "Traffic: blue 90 %, green 10 %; mirror: shadow 20 %." in text(client.get("/w/lab/endpoints/digits/"))
    refused = client.post("/w/lab/endpoints/digits/blue/delete/", follow=True)
    assert "blue takes 90 % of the traffic: move it to other deployments first." in text(refused)
    login(client, cast["bob"])
    assert client.post("/w/lab/endpoints/digits/traffic/", {"traffic-blue": 100}).status_code == 403


def test_an_update_makes_a_new_revision_and_says_what_changed(client, cast, workspace, version):
    register_files(workspace, cast["carol"], "digits", {"prefix.txt": b"v2"})
    endpoint = services.create_endpoint(workspace, cast["carol"], "digits")
    deployment = services.create_deployment(endpoint, cast["carol"], "blue", model="digits:1",
                                            compute_target=workspace.compute_targets.get(name="local"),
                                            script=("score.py", IDENTITY.encode()))
    login(client, cast["carol"])
    form = client.get("/w/lab/endpoints/digits/blue/edit/")
    assert 'value="digits:1"' in form.content.decode()
    response = client.post("/w/lab/endpoints/digits/blue/edit/", {
        "model": "digits:2", "instance_count": 2, "request_timeout_ms": 5000, "max_concurrent_requests": 4},
        follow=True)
    assert "Revision 2 of blue is starting" in text(response)
    deployment.refresh_from_db()
    assert deployment.revision == 2 and deployment.model_version.version == 2 and deployment.instance_count == 2
    assert deployment.scoring_source == IDENTITY  # kept when no new script is given
    assert "Revision 2: model digits:2, instance count 2." in text(client.get("/w/lab/endpoints/digits/"))
    same = client.post("/w/lab/endpoints/digits/blue/edit/", {
        "model": "digits:2", "instance_count": 2, "request_timeout_ms": 5000, "max_concurrent_requests": 4},
        follow=True)
    assert "Nothing changed." in text(same)
    assert Deployment.objects.get().revision == 2


def test_a_failed_deployment_shows_its_traceback_and_the_list_its_state(client, cast, workspace, version):
    endpoint = services.create_endpoint(workspace, cast["carol"], "digits")
    deployment = services.create_deployment(endpoint, cast["carol"], "blue", model="digits:1",
                                            compute_target=workspace.compute_targets.get(name="local"),
                                            script=("score.py", IDENTITY.encode()))
    Deployment.objects.filter(pk=deployment.pk).update(
        state=DeploymentState.FAILED, reason="Traceback (most recent call last):\nValueError: no <model> here")
    login(client, cast["bob"])
    page = client.get("/w/lab/endpoints/digits/").content.decode()
    assert "ValueError: no &lt;model&gt; here" in page
    listing = text(client.get("/w/lab/endpoints/"))
    assert re.search(r"digits</a></td>\s*<td><span class=\"badge state-failed\">Failed", listing)


def test_the_charts_data_and_recent_requests_come_from_what_the_gateway_recorded(client, cast, workspace):
    endpoint = services.create_endpoint(workspace, cast["carol"], "digits")
    start = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    StatsBucket.objects.create(endpoint=endpoint, deployment="blue", start=start, count=50, errors=2, p50_ms=3.5,
                               p95_ms=9.0, p99_ms=12.0)
    StatsBucket.objects.create(endpoint=endpoint, deployment="blue", start=start - timedelta(hours=3), count=7,
                               errors=0, p50_ms=1, p95_ms=1, p99_ms=1)
    RequestRecord.objects.create(endpoint=endpoint, deployment="blue", instance="blue-0", at=timezone.now(),
                                 status=504, latency_ms=5001.2, request_id="abc123")
    login(client, cast["bob"])
    data = client.get("/w/lab/endpoints/digits/stats/").json()
    assert data["series"] == [{"deployment": "blue", "mirrored": False, "start": [start.isoformat().replace(
        "+00:00", "Z")], "requests_per_second": [5.0], "errors": [2], "p50_ms": [3.5], "p95_ms": [9.0],
        "p99_ms": [12.0]}]
    assert client.get("/w/lab/endpoints/digits/stats/?minutes=0").status_code == 400
    page = text(client.get("/w/lab/endpoints/digits/"))
    assert "50 requests, 2 errors" in page and "5001.2 ms" in page and "504" in page
    assert "50" in text(client.get("/w/lab/endpoints/"))


def test_deleting_an_endpoint_hides_it_at_once(client, cast, workspace):
    services.create_endpoint(workspace, cast["carol"], "digits")
    login(client, cast["carol"])
    response = client.post("/w/lab/endpoints/digits/delete/", follow=True)
    assert "Endpoint digits deleted" in text(response)
    assert client.get("/w/lab/endpoints/digits/").status_code == 404
    assert Endpoint.objects.get().deleting
