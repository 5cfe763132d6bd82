"""The client SDK and the `studio` command line against a real running studio (web server and worker): submit a
folder, follow its console live, read metrics, download, register and fetch a model, as an ML engineer scripts it."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from runs.models import Run, RunStatus
from studio.models import ApiToken

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk"))

from studio_sdk import (  # noqa: E402
    Experiment,
    Model,
    RemoteRun,
    ScriptRunConfig,
    StudioError,
    Workspace,
    cli,  # noqa: E402
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TRAIN = """\
import os, sys, time
from studio_sdk import Run
run = Run.get_context()
print("starting", sys.argv[1:], flush=True)
for step in range(5):
    run.log("loss", 1.0 / (step + 1))
    print(f"step {step}", flush=True)
run.log("accuracy", 0.93)
os.makedirs("outputs/model", exist_ok=True)
open("outputs/model/weights.bin", "wb").write(b"w" * 1000)
open("outputs/notes.txt", "w").write("from " + os.environ.get("GREETING", "nobody"))
if "--fail" in sys.argv:
    raise SystemExit("asked to fail")
print("done", flush=True)
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    (folder / "helper.py").write_text("X = 1\n")
    (folder / ".amlignore").write_text("data/\n")
    (folder / "data").mkdir()
    (folder / "data" / "big.bin").write_bytes(b"x" * 10000)
    return folder


@pytest.fixture
def ws(web, cast, workspace):
    return Workspace(web, "lab", ApiToken.issue(cast["carol"], "sdk")[1])


def test_submit_a_folder_follow_it_live_and_use_what_it_made(ws, project, worker, tmp_path):
    config = ScriptRunConfig(source_directory=project, script="train.py", arguments=["--epochs", 3],
                             environment_variables={"GREETING": "the sdk"})
    run = Experiment(ws, "sdk-e2e").submit(config)
    assert isinstance(run, RemoteRun) and run.status == "Queued"
    shown = io.StringIO()
    details = run.wait_for_completion(show_output=True, out=shown)
    assert details["status"] == "Completed", details["reason"]
    console = shown.getvalue()
    assert "starting ['--epochs', '3']" in console and "step 4" in console and "done" in console
    assert run.get_metrics()["loss"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert run.get_metrics()["accuracy"] == pytest.approx(0.93)
    assert {"outputs/model/weights.bin", "outputs/notes.txt"} <= set(run.get_file_names())
    path = run.download_file("outputs/notes.txt", tmp_path / "notes.txt")
    assert Path(path).read_text() == "from the sdk"
    written = run.download_files("outputs/", tmp_path / "all")
    assert sorted(Path(p).relative_to(tmp_path / "all").as_posix() for p in written) == [
        "outputs/model/weights.bin", "outputs/notes.txt"]
    snapshot = Run.objects.get(pk=run.id).snapshot
    assert sorted(item["path"] for item in snapshot.manifest) == [".amlignore", "helper.py", "train.py"]
    assert ws.last_upload.uploaded_files == 3  # the first time, every file (data/ is ignored by .amlignore)
    (project / "helper.py").write_text("X = 2\n")
    again = Experiment(ws, "sdk-e2e").submit(config)
    assert ws.last_upload.uploaded_files == 1 and ws.last_upload.uploaded_bytes == len("X = 2\n")  # the server's count
    assert Run.objects.get(pk=again.id).snapshot.entry("helper.py")["size"] == 6
    again.cancel()
    registered = run.register_model("sdk-model", "outputs/model", tags={"team": "sdk"})
    assert registered["version"] == 1
    model = Model(ws, "sdk-model")
    assert model.version == 1 and model.tags == {"team": "sdk"}
    model.download(tmp_path / "model")
    assert (tmp_path / "model" / "model" / "weights.bin").read_bytes() == b"w" * 1000  # paths as registered


def test_a_run_submitted_from_a_git_checkout_records_where_its_source_came_from(ws, project, worker):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=project, check=True,
                       capture_output=True)

    git("init", "-q", "-b", "main")
    git("remote", "add", "origin", "https://alice:s3cret@git.example.com/lab/digits.git")
    git("add", ".")
    git("commit", "-qm", "first")
    (project / "helper.py").write_text("X = 42\n")
    run = Experiment(ws, "sdk-git").submit(ScriptRunConfig(project, "train.py"))
    info = run.get_details()["git"]
    assert info["remote_url"] == "https://git.example.com/lab/digits.git"  # the password never leaves the laptop
    assert info["branch"] == "main" and len(info["commit"]) == 40 and info["dirty"] is True
    assert "+X = 42" in info["diff"]
    run.cancel()


def test_a_failed_run_raises_with_its_reason_and_refusals_carry_the_server_message(ws, project, worker):
    run = Experiment(ws, "sdk-e2e").submit(ScriptRunConfig(project, "train.py", arguments=["--fail"]))
    with pytest.raises(StudioError, match="failed"):
        run.wait_for_completion()
    assert run.get_status() == "Failed"
    with pytest.raises(StudioError) as refused:
        Experiment(ws, "sdk-e2e").submit(ScriptRunConfig(project, "train.py", compute_target="nowhere"))
    assert refused.value.status == 400
    assert str(refused.value) == "Invalid input: compute_target: No compute target named nowhere in this workspace."
    with pytest.raises(StudioError) as missing:
        Model(ws, "no-such-model")
    assert missing.value.status == 404 and "No model named 'no-such-model'" in str(missing.value)
    outsider = Workspace(ws.url, "lab", "stu_not-a-token")
    with pytest.raises(StudioError) as denied:
        outsider.get_details()
    assert denied.value.status == 401


def test_the_command_line_submits_waits_lists_downloads_and_exits_with_the_run_status(
        ws, project, worker, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("STUDIO_TOKEN", raising=False)
    monkeypatch.chdir(project)
    assert cli.main(["login", "--url", ws.url, "--token", ws.api.token, "--workspace", "lab"]) == 0
    assert oct((home / "credentials.json").stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()
    code = cli.main(["experiment", "submit", "-e", "cli-e2e", "--env", "GREETING=cli", "--wait", "train.py",
                     "--epochs", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "step 4" in out and "done" in out
    run = Run.objects.get(experiment__name="cli-e2e")
    assert run.status == RunStatus.COMPLETED and run.arguments == ["--epochs", "2"]
    assert cli.main(["run", "list", "-e", "cli-e2e", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in listed] == [run.pk]
    assert cli.main(["run", "logs", str(run.pk)]) == 0
    assert "step 3" in capsys.readouterr().out
    assert cli.main(["run", "download", str(run.pk), "outputs/", "-O", str(tmp_path / "dl")]) == 0
    assert (tmp_path / "dl" / "outputs" / "notes.txt").read_text() == "from cli"
    assert cli.main(["run", "metrics", str(run.pk)]) == 0
    assert "accuracy" in capsys.readouterr().out
    failing = cli.main(["experiment", "submit", "-e", "cli-e2e", "--wait", "train.py", "--fail"])
    assert failing == 1
    failed = capsys.readouterr()
    assert "asked to fail" in failed.out and "Run " in failed.err and "failed: " in failed.err
    assert cli.main(["model", "register", "cli-model", str(project / "helper.py"), "--tag", "k=v"]) == 0
    assert "Registered cli-model version 1." in capsys.readouterr().out
    assert cli.main(["model", "list", "-o", "json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["cli-model"]
    assert cli.main(["model", "show", "cli-model:9"]) == 1
    assert "has no version 9" in capsys.readouterr().err
    assert cli.main(["run", "show", "999999"]) == 1
    with pytest.raises(SystemExit) as usage:
        cli.main(["run", "show"])
    assert usage.value.code == 2
    monkeypatch.setenv("STUDIO_URL", "http://127.0.0.1:9")
    os.environ.pop("STUDIO_HOME")
    assert cli.main(["--url", "http://127.0.0.1:9", "-w", "lab", "run", "list"]) in (1, 4)
