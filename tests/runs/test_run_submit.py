"""Submitting a run with the form: what a valid submission creates, and every error next to its field."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from runs.models import Experiment, Run, RunStatus, Snapshot
from tests.conftest import assert_sent_to_sign_in, login, py_upload, text, zip_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


URL = "/w/lab/runs/new/"
SCRIPT = "print('hello')\n"


def form_data(**overrides) -> dict:
    data = {
        "experiment": "mnist",
        "source": py_upload(SCRIPT),
        "entry_script": "",
        "arguments": "--lr 0.1",
        "env_vars": "SEED=1",
        "compute_target": "local",
        "max_duration_seconds": "600",
        "display_name": "my run",
        "tags": "team=vision",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def field_errors(response, field: str) -> list[str]:
    page = response.content.decode()
    return [html.unescape(e) for e in re.findall(rf'<p class="error" id="id_{field}_error">(.*?)</p>', page)]


def fields_with_errors(response) -> set[str]:
    return set(re.findall(r'<p class="error" id="id_(\w+)_error">', response.content.decode()))


def input_value(response, field: str) -> str | None:
    match = re.search(rf'<input [^>]*name="{field}"[^>]*?(?: value="([^"]*)")?[ >]', response.content.decode())
    return html.unescape(match.group(1)) if match and match.group(1) is not None else None


def textarea_value(response, field: str) -> str:
    match = re.search(rf'<textarea name="{field}"[^>]*>\n?(.*?)</textarea>', response.content.decode(), re.S)
    return html.unescape(match.group(1))


def nothing_was_stored(data_dir) -> bool:
    blobs = data_dir / "blobs"
    staging = data_dir / "tmp"
    return (
        not Run.objects.exists()
        and not Snapshot.objects.exists()
        and not Experiment.objects.exists()
        and not (blobs.exists() and any(p.is_file() for p in blobs.rglob("*")))
        and not (staging.exists() and any(staging.iterdir()))
    )


def test_it_is_at_the_expected_url():
    assert reverse("run_submit", args=["lab"]) == URL


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_shows_the_form_to_a_writer(client, cast, workspace, who):
    login(client, cast[who])
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert "<h1>Submit a run</h1>" in page
    assert 'enctype="multipart/form-data"' in page
    assert '<option value="local" selected>local</option>' in page
    assert fields_with_errors(response) == set()


def test_it_fills_in_the_experiment_from_the_link(client, cast, workspace):
    login(client, cast["carol"])
    assert input_value(client.get(URL, {"experiment": "mnist"}), "experiment") == "mnist"


def test_it_suggests_existing_experiments_but_not_archived_ones(client, cast, workspace):
    Experiment.objects.create(workspace=workspace, name="active")
    Experiment.objects.create(workspace=workspace, name="old", archived=True)
    login(client, cast["carol"])
    page = text(client.get(URL))
    assert '<option value="active">' in page and '<option value="old">' not in page


def test_it_refuses_a_reader_on_get_and_post_and_stores_nothing(client, cast, workspace, data_dir):
    login(client, cast["bob"])
    assert client.get(URL).status_code == 403
    assert client.post(URL, form_data()).status_code == 403
    assert nothing_was_stored(data_dir)


def test_it_hides_the_workspace_from_an_outsider_and_stores_nothing(client, cast, workspace, data_dir):
    login(client, cast["charlie"])
    assert client.get(URL).status_code == 404
    assert client.post(URL, form_data()).status_code == 404
    assert nothing_was_stored(data_dir)


def test_it_sends_an_anonymous_visitor_to_sign_in_and_stores_nothing(client, workspace, data_dir):
    assert_sent_to_sign_in(client.get(URL), URL)
    assert_sent_to_sign_in(client.post(URL, form_data()), URL)
    assert nothing_was_stored(data_dir)


def test_it_refuses_other_methods(client, cast, workspace):
    login(client, cast["alice"])
    assert client.put(URL).status_code == 405
    assert client.delete(URL).status_code == 405


def test_it_creates_the_experiment_a_queued_run_and_its_snapshot(client, cast, workspace):
    login(client, cast["carol"])
    response = client.post(
        URL,
        form_data(
            arguments="--lr 0.1 --name 'my run'", env_vars="SEED=1\n# note\nMODE=fast", tags="team=vision\nbaseline"
        ),
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("run_detail", args=["lab", run.pk])
    assert run.workspace == workspace and run.created_by == cast["carol"]
    assert run.experiment.name == "mnist" and run.experiment.workspace == workspace
    assert run.status == RunStatus.QUEUED
    assert list(run.status_changes.values_list("status", flat=True)) == [RunStatus.QUEUED]
    assert run.entry_script == "train.py"
    assert run.arguments == ["--lr", "0.1", "--name", "my run"]
    assert run.env_vars == {"SEED": "1", "MODE": "fast"}
    assert run.compute_target.name == "local"
    assert run.max_duration_seconds == 600
    assert run.display_name == "my run"
    assert run.tags == {"team": "vision", "baseline": ""}
    assert [entry["path"] for entry in run.snapshot.manifest] == ["train.py"]
    assert run.snapshot.source_name == "train.py" and run.snapshot.workspace == workspace
    page = text(client.get(response.url))
    assert "<h1>my run" in page and "Queued" in page


def test_it_adds_a_run_to_an_existing_experiment(client, cast, workspace):
    login(client, cast["alice"])
    client.post(URL, form_data())
    client.post(URL, form_data())
    assert Experiment.objects.get().runs.count() == 2


def test_it_runs_the_named_script_of_a_zip(client, cast, workspace):
    login(client, cast["carol"])
    upload = zip_upload({"src/train.py": SCRIPT, "src/util.py": "X = 1\n", "README.md": "hi"})
    response = client.post(URL, form_data(source=upload, entry_script="./src/train.py"))
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.entry_script == "src/train.py"
    assert sorted(entry["path"] for entry in run.snapshot.manifest) == ["README.md", "src/train.py", "src/util.py"]


def test_it_shows_a_bad_experiment_name_next_to_its_field_and_keeps_the_values(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(experiment="bad name!", arguments='--tag "a b"', env_vars="SEED=1\nMODE=x"))
    assert response.status_code == 400
    assert field_errors(response, "experiment") == [
        "Use 1-255 letters, digits, '-', '_' or '.', starting with a letter or digit."
    ]
    assert field_errors(response, "source") == ["The file was fine; choose it again after fixing the other fields."]
    assert fields_with_errors(response) == {"experiment", "source"}
    assert input_value(response, "experiment") == "bad name!"
    assert input_value(response, "arguments") == '--tag "a b"'
    assert textarea_value(response, "env_vars") == "SEED=1\nMODE=x"
    assert input_value(response, "max_duration_seconds") == "600"
    assert input_value(response, "display_name") == "my run"
    assert textarea_value(response, "tags") == "team=vision"
    assert nothing_was_stored(data_dir)


def test_it_asks_for_the_source_when_it_is_missing(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(source=None))
    assert response.status_code == 400
    assert field_errors(response, "source") == ["This field is required."]
    assert fields_with_errors(response) == {"source"}
    assert input_value(response, "experiment") == "mnist"
    assert input_value(response, "arguments") == "--lr 0.1"
    assert nothing_was_stored(data_dir)


def test_it_names_the_scripts_in_the_zip_when_the_entry_script_is_not_there(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    upload = zip_upload({"main.py": SCRIPT, "data.csv": "1,2\n"})
    response = client.post(URL, form_data(source=upload, entry_script="train.py"))
    assert response.status_code == 400
    assert field_errors(response, "entry_script") == [
        "train.py is not in the uploaded source. Scripts in the source: main.py."
    ]
    assert input_value(response, "entry_script") == "train.py"
    assert nothing_was_stored(data_dir)


def test_it_asks_for_the_entry_script_of_a_zip_with_several_files(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(source=zip_upload({"a.py": SCRIPT, "b.py": SCRIPT})))
    assert response.status_code == 400
    assert field_errors(response, "entry_script") == ["Name the script to run inside the archive, such as train.py."]
    assert nothing_was_stored(data_dir)


def test_it_refuses_an_entry_script_outside_the_source(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(entry_script="../train.py"))
    assert response.status_code == 400
    assert field_errors(response, "entry_script") == [
        "Give a path inside the source, such as train.py or src/train.py."
    ]
    assert nothing_was_stored(data_dir)


def test_it_shows_unbalanced_quotes_in_the_arguments(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(arguments='--name "oops'))
    assert response.status_code == 400
    assert field_errors(response, "arguments") == [
        "Could not split the arguments: No closing quotation (check the quotes)."
    ]
    assert input_value(response, "arguments") == '--name "oops'
    assert nothing_was_stored(data_dir)


def test_it_shows_a_bad_environment_variable_name(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(env_vars="GOOD=1\n1BAD=x"))
    assert response.status_code == 400
    assert field_errors(response, "env_vars") == [
        "Line 2: '1BAD' is not a valid name (letters, digits and _, not starting with a digit)."
    ]
    assert textarea_value(response, "env_vars") == "GOOD=1\n1BAD=x"
    assert nothing_was_stored(data_dir)


@pytest.mark.parametrize("name", ["STUDIO_RUN_ID", "studio_token"])
def test_it_refuses_environment_variables_reserved_for_the_studio(client, cast, workspace, data_dir, name):
    login(client, cast["carol"])
    response = client.post(URL, form_data(env_vars=f"{name}=42"))
    assert response.status_code == 400
    assert field_errors(response, "env_vars") == ["Line 1: names starting with STUDIO_ are reserved for the studio."]
    assert nothing_was_stored(data_dir)


def test_it_refuses_a_maximum_duration_of_zero(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(max_duration_seconds="0"))
    assert response.status_code == 400
    assert field_errors(response, "max_duration_seconds") == ["Ensure this value is greater than or equal to 1."]
    assert input_value(response, "max_duration_seconds") == "0"
    assert nothing_was_stored(data_dir)


def test_it_refuses_an_unknown_compute_target(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    response = client.post(URL, form_data(compute_target="gpu-cluster"))
    assert response.status_code == 400
    assert field_errors(response, "compute_target") == ["No compute target named gpu-cluster in this workspace."]
    assert nothing_was_stored(data_dir)


def test_it_refuses_the_compute_target_of_another_workspace(client, cast, workspace, data_dir):
    from studio.models import ComputeTarget, Workspace

    ComputeTarget.objects.create(workspace=Workspace.objects.get(name="elsewhere"), name="charlies-gpu")
    login(client, cast["carol"])
    response = client.post(URL, form_data(compute_target="charlies-gpu"))
    assert response.status_code == 400
    assert "compute_target" in fields_with_errors(response)
    assert nothing_was_stored(data_dir)


def test_it_refuses_a_zip_with_a_member_leaving_the_folder_and_stores_nothing(client, cast, workspace, data_dir):
    login(client, cast["carol"])
    upload = zip_upload({"train.py": SCRIPT, "../evil.py": "import os\n"})
    response = client.post(URL, form_data(source=upload, entry_script="train.py"))
    assert response.status_code == 400
    assert field_errors(response, "source") == ["Refused '../evil.py': archive members may not leave the folder."]
    assert input_value(response, "entry_script") == "train.py"
    assert nothing_was_stored(data_dir)
    assert not (data_dir.parent / "evil.py").exists() and not (data_dir / "evil.py").exists()


def test_it_escapes_what_the_user_typed(client, cast, workspace):
    login(client, cast["carol"])
    response = client.post(URL, form_data(experiment="<script>alert(1)</script>"))
    assert response.status_code == 400
    assert "<script>alert(1)</script>" not in response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.content.decode()
