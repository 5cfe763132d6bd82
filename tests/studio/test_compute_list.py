"""The Compute page: every member sees the workspace's targets; owners and contributors get the buttons."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Run
from studio.crypto import encrypt
from studio.models import ComputeTarget
from tests.conftest import assert_sent_to_sign_in, login, make_run, text
from tests.studio.test_docker_engine import make_pki

pytestmark = pytest.mark.django_db
URL = "/w/lab/compute/"


@pytest.fixture(scope="module")
def pki():
    return make_pki()


@pytest.fixture
def gpu(workspace, pki):
    return ComputeTarget.objects.create(
        workspace=workspace,
        name="gpu",
        kind=ComputeTarget.Kind.DOCKER,
        docker_url="tcp://gpu-box:2376",
        queue="docker-gpu",
        cpu_limit=2.5,
        memory_limit_mb=4096,
        gpus="all",
        shm_size_mb=256,
        tls_ca_cert=pki.ca_cert,
        tls_client_cert=pki.client_cert,
        tls_client_key_encrypted=encrypt(pki.client_key),
    )


def row(page: str, target) -> str:
    return page.split(f'<tr id="target-{target.pk}">', 1)[1].split("</tr>", 1)[0]


def test_it_is_at_the_expected_url():
    assert reverse("compute_list", args=["lab"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol", "bob"])
def test_it_lists_the_targets_to_every_member(client, cast, workspace, gpu, who):
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    gpu_row = row(page, gpu)
    assert "<strong>gpu</strong>" in gpu_row
    assert "<td>Docker engine</td>" in gpu_row
    assert "<code>docker-gpu</code>" in gpu_row
    assert "<code>tcp://gpu-box:2376</code>" in gpu_row and ">TLS</span>" in gpu_row
    assert "<td>2.5 CPUs · 4096 MB · GPUs: all · shm 256 MB</td>" in gpu_row
    local_row = row(page, workspace.compute_targets.get(name="local"))
    assert '<strong>local</strong> <span class="tag">built-in</span>' in local_row
    assert "<td>Local process</td>" in local_row and "<code>local</code>" in local_row
    assert "the worker's Python" in local_row and "<td>—</td>" in local_row


def test_it_counts_the_runs_of_each_target(client, cast, workspace, gpu, data_dir):
    for _ in range(2):
        run = make_run(workspace, cast["alice"])
    Run.objects.filter(pk=run.pk).update(compute_target=gpu)
    login(client, cast["bob"])
    page = text(client.get(URL))
    assert "<td>1</td>" in row(page, gpu)
    assert "<td>1</td>" in row(page, workspace.compute_targets.get(name="local"))


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_shows_the_buttons_to_owners_and_contributors(client, cast, workspace, gpu, who):
    login(client, cast[who])
    page = text(client.get(URL))
    assert f'href="{reverse("compute_new", args=["lab"])}">Add a target</a>' in page
    gpu_row = row(page, gpu)
    test_url = reverse("compute_test", args=["lab", gpu.pk])
    assert f'hx-post="{test_url}" hx-target="#test-result-{gpu.pk}"' in gpu_row
    assert f'<div class="test-result" id="test-result-{gpu.pk}" aria-live="polite"></div>' in gpu_row
    assert f'href="{reverse("compute_edit", args=["lab", gpu.pk])}">Edit</a>' in gpu_row
    assert f'action="{reverse("compute_delete", args=["lab", gpu.pk])}"' in gpu_row and ">Remove</button>" in gpu_row


def test_the_local_target_has_no_test_nor_remove_button(client, cast, workspace, gpu):
    login(client, cast["alice"])
    local_row = row(text(client.get(URL)), workspace.compute_targets.get(name="local"))
    assert ">Edit</a>" in local_row
    assert "Test connection" not in local_row
    assert ">Remove</button>" not in local_row


def test_it_shows_no_buttons_to_a_reader(client, cast, workspace, gpu):
    login(client, cast["bob"])
    page = text(client.get(URL))
    for button in ("Add a target", "Test connection", ">Edit</a>", ">Remove</button>", "hx-post"):
        assert button not in page


def test_it_never_shows_the_tls_key(client, cast, workspace, gpu, pki):
    login(client, cast["alice"])
    page = text(client.get(URL))
    assert "PRIVATE KEY" not in page
    for line in pki.client_key.strip().splitlines()[1:-1]:
        assert line not in page
    assert gpu.tls_client_key_encrypted not in page


def test_it_links_the_page_in_the_main_navigation(client, cast, workspace):
    login(client, cast["bob"])
    assert f'<a href="{URL}" aria-current="page">Compute</a>' in text(client.get(URL))
    assert f'<a href="{URL}" >Compute</a>' in text(client.get(reverse("members", args=["lab"])))


def test_it_shows_only_this_workspaces_targets(client, cast, workspace):
    ComputeTarget.objects.create(workspace=workspace, name="mine", kind=ComputeTarget.Kind.LOCAL)
    elsewhere = cast["charlie"].memberships.get().workspace
    ComputeTarget.objects.create(workspace=elsewhere, name="theirs", kind=ComputeTarget.Kind.LOCAL)
    login(client, cast["alice"])
    page = text(client.get(URL))
    assert "<strong>mine</strong>" in page and "theirs" not in page


def test_it_hides_the_workspace_from_an_outsider(client, cast, gpu):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(client, workspace):
    assert_sent_to_sign_in(client.get(URL), URL)


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_refuses_other_methods_and_changes_nothing(client, cast, workspace, gpu, method):
    login(client, cast["alice"])
    before = list(ComputeTarget.objects.values())
    assert getattr(client, method)(URL, {"name": "new"}).status_code == 405
    assert list(ComputeTarget.objects.values()) == before


def test_the_page_says_how_local_runs_are_kept_from_the_studio(client, cast, workspace):
    from studio.sandbox import isolation

    login(client, cast["bob"])
    page = text(client.get("/w/lab/compute/"))
    assert isolation().summary in page
    # This machine can sandbox (bubblewrap works here, as root or not): the page must not claim otherwise.
    assert isolation().protected and "NOT isolated" not in page
