"""Git information: the SDK's collector (`studio_sdk._git.collect`) against real temporary repositories, and the
`git` object of a submission as the API takes it (checked, credentials stripped again, bounded) and as the run page
and the API's run detail show it."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runs import gitinfo
from runs.models import Run, RunGitInfo
from studio.models import ApiToken
from tests.conftest import login, make_run, py_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

SDK = Path(__file__).resolve().parents[2] / "sdk"
SUBMIT = "/api/v1/workspaces/lab/runs"


@pytest.fixture
def collector(monkeypatch):
    if str(SDK) not in sys.path:
        monkeypatch.syspath_prepend(str(SDK))
    from studio_sdk import _git

    return _git


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=Tester", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with one commit on `main` and a remote whose URL carries a token."""
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text("print('v1')\n")
    (path / "src").mkdir()
    (path / "src" / "model.py").write_text("LAYERS = 2\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    git(path, "remote", "add", "origin", "https://alice:ghp_SECRET123@github.example/lab/project.git")
    return path


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def submit(client, user, git_field, **fields):
    data = {"experiment": "gitty", "source": py_upload("print(1)\n"), "compute_target": "local", **fields}
    if git_field is not None:
        data["git"] = git_field if isinstance(git_field, str) else json.dumps(git_field)
    return client.post(SUBMIT, data, headers=token_for(user))


def source_section(response) -> str | None:
    assert response.status_code == 200
    found = re.search(r'<section id="source".*?</section>', response.content.decode(), re.S)
    return found.group(0) if found else None


# --- The collector -----------------------------------------------------------------------------------------------------


def test_a_clean_working_copy_gives_its_commit_branch_and_remote_without_the_token(collector, repo):
    info = collector.collect(repo)
    assert info == {
        "remote_url": "https://github.example/lab/project.git", "branch": "main", "commit": git(repo, "rev-parse", "HEAD"),
        "dirty": False, "diff": "", "diff_truncated": False, "diff_bytes": 0,
    }
    assert "SECRET" not in json.dumps(info) and "alice" not in json.dumps(info)


def test_changes_make_it_dirty_with_their_diff_from_a_subfolder_too(collector, repo):
    (repo / "src" / "model.py").write_text("LAYERS = 3\n")
    (repo / "notes.txt").write_text("untracked\n")
    info = collector.collect(repo / "src")
    assert info["dirty"] is True and info["diff_truncated"] is False
    assert "--- a/src/model.py\n+++ b/src/model.py\n" in info["diff"]
    assert "-LAYERS = 2\n+LAYERS = 3\n" in info["diff"]
    assert "notes.txt" not in info["diff"]  # untracked files make it dirty; their content is in the snapshot
    assert info["diff_bytes"] == len(info["diff"].encode())


def test_staged_changes_are_in_the_diff_and_untracked_files_alone_make_it_dirty(collector, repo):
    (repo / "extra.txt").write_text("new\n")
    assert collector.collect(repo)["dirty"] is True and collector.collect(repo)["diff"] == ""
    git(repo, "add", "extra.txt")
    assert "+new\n" in collector.collect(repo)["diff"]


def test_a_long_diff_is_cut_at_a_line_end_and_says_how_long_it_was(collector, repo, monkeypatch):
    monkeypatch.setattr(collector, "MAX_DIFF_BYTES", 2000)
    (repo / "train.py").write_text("".join(f"print('line {i}')\n" for i in range(500)))
    info = collector.collect(repo)
    assert info["diff_truncated"] is True and info["dirty"] is True
    assert len(info["diff"].encode()) <= 2000 and info["diff"].endswith("\n")
    full = git(repo, "diff", "HEAD", "--no-color")
    assert info["diff_bytes"] == len(full.encode()) + 1  # what git wrote, its last newline included
    assert full.startswith(info["diff"])


def test_ssh_remotes_keep_their_user_but_not_a_password(collector, repo):
    git(repo, "remote", "set-url", "origin", "ssh://git:hunter2@git.example:2222/lab/project.git")
    assert collector.collect(repo)["remote_url"] == "ssh://git@git.example:2222/lab/project.git"
    git(repo, "remote", "set-url", "origin", "git@github.example:lab/project.git")
    assert collector.collect(repo)["remote_url"] == "git@github.example:lab/project.git"
    git(repo, "remote", "set-url", "origin", "deploy:s3cret@git.example:lab/project.git")
    assert collector.collect(repo)["remote_url"] == "deploy@git.example:lab/project.git"


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:token@host.example/x.git", "https://host.example/x.git"),
        ("https://ghp_token@host.example/x.git", "https://host.example/x.git"),
        ("http://u:p@host.example:8080/x", "http://host.example:8080/x"),
        ("ssh://git:pw@host.example/x", "ssh://git@host.example/x"),
        ("git+ssh://me:pw@host.example/x", "git+ssh://me@host.example/x"),
        ("git@host.example:x.git", "git@host.example:x.git"),
        ("/srv/git/x.git", "/srv/git/x.git"),
        ("file:///srv/git/x.git", "file:///srv/git/x.git"),
    ],
)
def test_the_collector_and_the_server_strip_credentials_alike(collector, url, clean):
    assert collector.strip_credentials(url) == clean
    assert gitinfo.strip_credentials(url) == clean


def test_a_detached_head_has_no_branch_and_a_new_repository_no_commit(collector, repo, tmp_path):
    git(repo, "checkout", "-q", "--detach")
    assert collector.collect(repo)["branch"] is None
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q", "-b", "dev")
    (fresh / "a.py").write_text("x = 1\n")
    info = collector.collect(fresh)
    assert (info["commit"], info["branch"], info["remote_url"], info["dirty"], info["diff"]) == (None, "dev", None, True, "")


def test_it_is_none_outside_a_repository_or_without_git(collector, repo, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert collector.collect(plain) is None
    assert collector.collect(tmp_path / "missing") is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert collector.collect(repo) is None


def test_a_branch_name_with_a_direction_control_is_sent_written_out(collector, repo):
    git(repo, "checkout", "-q", "-b", "fix\u202egnp.py")
    assert collector.collect(repo)["branch"] == "fix\\u202egnp.py"


# --- Submitted with a run ----------------------------------------------------------------------------------------------


def test_what_the_collector_found_is_shown_on_the_run_page_and_in_the_api(client, cast, workspace, collector, repo):
    (repo / "train.py").write_text("print('v2')\n")
    response = submit(client, cast["carol"], collector.collect(repo))
    assert response.status_code == 201, response.content
    run = Run.objects.get()
    commit = git(repo, "rev-parse", "HEAD")
    detail = client.get(f"{SUBMIT}/{run.pk}", headers=token_for(cast["bob"])).json()
    assert detail["git"] == {
        "remote_url": "https://github.example/lab/project.git", "branch": "main", "commit": commit, "dirty": True,
        "diff": git(repo, "diff", "HEAD") + "\n", "diff_truncated": False, "diff_bytes": detail["git"]["diff_bytes"],
    }
    login(client, cast["bob"])
    section = source_section(client.get(f"/w/lab/runs/{run.pk}/"))
    assert "<code>https://github.example/lab/project.git</code>" in section
    assert "<code>main</code>" in section and commit in section
    assert 'id="git-dirty"' in section and "uncommitted changes" in section
    diff = re.search(r'<details class="git-diff" id="git-diff">(.*?)</details>', section, re.S).group(1)
    assert "<summary>Uncommitted changes (" in diff
    assert '<span class="d-del">-print(&#x27;v1&#x27;)</span>' in diff
    assert '<span class="d-add">+print(&#x27;v2&#x27;)</span>' in diff
    assert "SECRET" not in client.get(f"/w/lab/runs/{run.pk}/").content.decode()


def test_the_server_strips_credentials_a_client_left_in(client, cast, workspace):
    response = submit(client, cast["carol"], {"remote_url": "https://bot:glpat-XYZ@gitlab.example/a/b.git",
                                              "branch": "main", "commit": "A" * 40, "dirty": False})
    assert response.status_code == 201, response.content
    info = RunGitInfo.objects.get()
    assert (info.remote_url, info.commit, info.dirty, info.diff) == ("https://gitlab.example/a/b.git", "a" * 40, False, "")
    login(client, cast["bob"])
    section = source_section(client.get(f"/w/lab/runs/{info.run_id}/"))
    assert 'id="git-clean"' in section and "git-diff" not in section


def test_a_cut_diff_says_so_on_the_run_page(client, cast, workspace):
    response = submit(client, cast["carol"], {"commit": "abc1234", "dirty": True, "diff": "+x\n" * 10,
                                              "diff_truncated": True, "diff_bytes": 5_000_000})
    assert response.status_code == 201, response.content
    login(client, cast["bob"])
    section = source_section(client.get(f"/w/lab/runs/{Run.objects.get().pk}/"))
    note = re.search(r'<p class="notice" id="git-diff-truncated">(.*?)</p>', section, re.S).group(1)
    assert html.unescape(note) == "The diff was cut: the first 30\xa0bytes of 4.8\xa0MB are shown."


def test_direction_controls_in_a_diff_are_shown_written_out(client, cast, workspace):
    diff = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n+access = 'user' # \u202e } \u2066if admin\u2069 \u2066 begin\n"
    assert submit(client, cast["carol"], {"commit": "abc1234", "dirty": True, "diff": diff}).status_code == 201
    login(client, cast["bob"])
    section = source_section(client.get(f"/w/lab/runs/{Run.objects.get().pk}/"))
    assert "\u202e" not in section and "\u2066" not in section
    assert "\\u202e } \\u2066if admin\\u2069" in html.unescape(section)


@pytest.mark.parametrize(
    ("git_field", "message"),
    [
        ({"branch": "fix\u202egnp.py"}, "U+202E"),
        ({"remote_url": "https://host/\u2066x"}, "U+2066"),
        ({"branch": "a\nb"}, "control characters"),
        ({"commit": "not-a-commit"}, "hexadecimal"),
        ({"dirty": "yes"}, "true or false"),
        ({"diff": "+x\x00\n"}, "NUL"),
        ({"diff": "+" + "x" * gitinfo.MAX_DIFF_BYTES}, "at most 1,048,576 bytes"),
        ({"diff": 5}, "text or null"),
        ({"diff_bytes": -1}, "whole number"),
        ({"branch": "b" * 256}, "at most 255"),
        ("[1, 2]", "must be an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_git_information_is_refused_by_field_and_nothing_is_made(client, cast, workspace, git_field, message):
    response = submit(client, cast["carol"], git_field)
    assert response.status_code == 400, response.content
    assert any(message in error for error in response.json()["errors"]["git"]), response.json()
    assert not Run.objects.exists() and not RunGitInfo.objects.exists()


def test_a_run_without_git_information_has_none(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="gitty")
    assert client.get(f"{SUBMIT}/{run.pk}", headers=token_for(cast["bob"])).json()["git"] is None
    login(client, cast["bob"])
    assert source_section(client.get(f"/w/lab/runs/{run.pk}/")) is None
    assert submit(client, cast["carol"], "").status_code == 201 and not RunGitInfo.objects.exists()
