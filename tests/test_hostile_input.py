"""Names that lie and names too long for a file system: every place the studio stores a name refuses them with a
message that says what to change, never a 500 and never a half-stored thing.

`evil\\u202etxt.py` (U+202E, RIGHT-TO-LEFT OVERRIDE) reads as `evilyp.txt` in a browser; U+2066-U+2069 and U+200E/F
are refused the same way. A name part of 300 characters cannot be a file name.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from runs import snapshots, storage, tokens
from runs.models import Experiment, Run, RunStatus
from studio.models import ApiToken
from tests.conftest import login, make_run, py_upload, text, zip_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]
EVIL = "evil\u202etxt.py"
CONTROLS = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f"]


def submit(client, user, **fields):
    login(client, user)
    data = {"experiment": "hostile", "compute_target": "local", "source": py_upload("print(1)\n"), **fields}
    return client.post("/w/lab/runs/new/", data)


def running(workspace, user) -> tuple[Run, str]:
    run = make_run(workspace, user)
    for to, source in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                       (RunStatus.RUNNING, RunStatus.STARTING)):
        run.transition(to, from_states=(source,))
    return run, tokens.issue(run)


@pytest.mark.parametrize("control", CONTROLS)
def test_an_archive_member_with_a_direction_control_is_refused(control):
    with pytest.raises(snapshots.SnapshotError) as refused:
        snapshots.stage_upload(zip_upload({f"src/evil{control}txt.py": "print(1)", "src/train.py": "print(2)"}))
    assert f"U+{ord(control):04X}" in str(refused.value) and "Remove it" in str(refused.value)


def test_the_submit_form_says_which_member_is_refused(client, cast, workspace):
    response = submit(client, cast["carol"], source=zip_upload({EVIL: "x", "train.py": "print(1)"}),
                      entry_script="train.py")
    assert response.status_code == 400
    assert "U+202E" in text(response) and "\\u202e" in text(response)
    assert not Run.objects.exists()


def test_a_script_file_name_loses_its_direction_control_on_the_way_in(client, cast, workspace):
    submit(client, cast["carol"], source=py_upload("print(1)\n", name=EVIL))  # Django drops unprintable characters
    assert Run.objects.get().entry_script == "eviltxt.py"
    with pytest.raises(snapshots.SnapshotError, match="U\\+202E"):  # and a name that still holds one is refused
        snapshots.stage_upload(SimpleUploadedFile(EVIL, b"print(1)\n"))


@pytest.mark.parametrize("control", CONTROLS)
def test_a_display_name_with_a_direction_control_is_refused(client, cast, workspace, control):
    response = submit(client, cast["carol"], display_name=f"best{control}run")
    assert response.status_code == 400 and f"U+{ord(control):04X}" in text(response)
    assert not Run.objects.exists()


def test_a_tag_value_with_a_direction_control_is_refused_by_the_form_and_the_api(client, cast, workspace):
    response = submit(client, cast["carol"], tags=f"note=a{CONTROLS[0]}b")
    assert response.status_code == 400 and "U+202E" in text(response)
    run = make_run(workspace, cast["carol"])
    secret = ApiToken.issue(cast["carol"], "t")[1]
    response = client.patch(f"/api/v1/workspaces/lab/runs/{run.pk}/tags", {"tags": {"note": f"a{CONTROLS[2]}b"}},
                            content_type="application/json", headers={"Authorization": f"Token {secret}"})
    assert response.status_code == 400 and "U+2066" in response.json()["error"]
    run.refresh_from_db()
    assert run.tags == {}


@pytest.mark.parametrize("name", [f"exp{CONTROLS[0]}1", "a" * 256])
def test_an_experiment_name_that_lies_or_is_too_long_is_refused(client, cast, workspace, name):
    response = submit(client, cast["carol"], experiment=name)
    assert response.status_code == 400 and not Experiment.objects.exists()


def test_a_script_cannot_upload_an_output_whose_name_lies(client, cast, workspace):
    run, token = running(workspace, cast["carol"])
    response = client.post(f"/api/v1/runs/{run.pk}/files", {"name": EVIL, "file": SimpleUploadedFile("f", b"x")},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and "U+202E" in response.json()["error"]
    assert storage.list_stored_files(run.pk) == []


def test_a_child_runs_name_that_lies_is_refused(client, cast, workspace):
    run, token = running(workspace, cast["carol"])
    response = client.post(f"/api/v1/runs/{run.pk}/children", {"name": f"fold{CONTROLS[1]}1"},
                           content_type="application/json", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and "U+202A" in response.json()["error"]
    assert not Run.objects.filter(parent=run).exists()


def test_an_output_file_whose_name_lies_is_left_out_and_said_so(workspace, cast):
    run = make_run(workspace, cast["carol"])
    collector = storage.OutputCollector(run.pk)
    collector.add(f"outputs/{EVIL}", io.BytesIO(b"x"), 1)
    collector.add("outputs/fine.txt", io.BytesIO(b"y"), 1)
    assert [f["path"] for f in storage.list_stored_files(run.pk)] == ["outputs/fine.txt"]
    assert "outputs/evil\\u202etxt.py" in collector.note() and "U+202E" in collector.note()


@pytest.mark.parametrize("name", ["a" * 300, "folder/" + "b" * 256 + ".txt", "/".join(["d" * 200] * 6)])
def test_names_too_long_for_a_file_system_are_refused_everywhere(client, cast, workspace, name):
    with pytest.raises(snapshots.SnapshotError) as refused:
        snapshots.stage_upload(zip_upload({name: "x", "train.py": "print(1)"}))
    assert "bytes" in str(refused.value)
    run, token = running(workspace, cast["carol"])
    response = client.post(f"/api/v1/runs/{run.pk}/files", {"name": name, "file": SimpleUploadedFile("f", b"x")},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and "bytes" in response.json()["error"]


def test_an_upload_whose_file_name_has_a_300_character_extension_is_no_500(client, cast, workspace, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # the upload goes to a temporary file named after it
    run, token = running(workspace, cast["carol"])
    response = client.post(f"/api/v1/runs/{run.pk}/files",
                           {"name": "model.bin", "file": SimpleUploadedFile("m." + "b" * 300, b"weights")},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    assert (storage.run_dir(run.pk) / "outputs" / "model.bin").read_bytes() == b"weights"


def test_a_zip_of_a_folder_with_a_safe_unicode_name_is_accepted(client, cast, workspace):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("données/entraînement.py", "print('ok')")
    staged = snapshots.stage_upload(SimpleUploadedFile("src.zip", buffer.getvalue()))
    assert staged.paths() == ["entraînement.py"]  # a single top folder is the source folder
    staged.discard()
