"""The SDK leaves out exactly the files the studio leaves out: its standard-library gitignore matcher
(sdk/studio_sdk/_gitignore.py) against pathspec's GitIgnoreSpec as the studio uses it (runs/snapshots.ignore_rules),
over a large generated corpus of patterns and paths, and a folder walked by the SDK against the same folder uploaded
as an archive."""

from __future__ import annotations

import io
import os
import random
import re
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from runs import snapshots

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk"))

from studio_sdk import _snapshot  # noqa: E402
from studio_sdk._gitignore import IgnoreError, IgnoreRules  # noqa: E402

# '[[' in a class makes re warn that it may mean a nested set one day; the studio and the SDK compile it alike.
pytestmark = pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")

# Pieces patterns are made of: literals, wildcards, '**', character classes (negated, with ']' first, ranges, a
# reversed range, a POSIX-looking class), escapes (of '*', '?', '[', ' ', '#', '!', '\'), unclosed brackets, spaces.
PIECES = ["a", "b", "ab", ".py", "x", "*", "?", "**", "[ab]", "[!a]", "[^b]", "[]a]", "[a-c]", "[z-a]", "[[:alpha:]]",
          "\\*", "\\?", "\\[", "\\ ", "\\#", "\\!", "\\\\", "[", "]", " ", "-", "é", "{a,b}"]
PREFIXES = ["", "", "", "/", "!", "!/", "\\!", "#", " ", "**/", "!**/", "\\#", "\t"]
SUFFIXES = ["", "", "", "/", " ", "\\ ", "\\", "/**", "/*", "  ", "\t"]
NAMES = ["a", "b", "ab", "x.py", "a b", "#a", "!a", "*", "[a]", "-", "é", "a ", "xab", "b.py", "aa", "c", "a\\b"]


def pattern(rng: random.Random) -> str:
    segments = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
    return rng.choice(PREFIXES) + "/".join(segments) + rng.choice(SUFFIXES)


def path(rng: random.Random) -> str:
    return "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 4)))


def server_rules(lines: list[str]):
    try:
        return snapshots.ignore_rules("\n".join(lines).encode(), ".amlignore")
    except snapshots.SnapshotError:
        return None


def client_rules(lines: list[str]):
    try:
        return IgnoreRules.parse("\n".join(lines).encode(), ".amlignore")
    except IgnoreError:
        return None


def test_client_and_server_decide_alike_over_a_large_corpus():
    rng = random.Random(20261130)
    decisions = skipped_folders = refused = 0
    for _ in range(4000):
        lines = [pattern(rng) for _ in range(rng.randint(1, 4))]
        paths = sorted({path(rng) for _ in range(30)})
        server, client = server_rules(lines), client_rules(lines)
        assert (server is None) == (client is None), lines  # both refuse the same files
        if server is None:
            refused += 1
            continue
        for item in paths:
            assert client.ignores(item) == server.match_file(item), (lines, item)
            decisions += 1
        # A folder the client skips without looking inside holds only files the studio leaves out.
        folders = {"/".join(item.split("/")[:depth]) for item in paths for depth in range(1, item.count("/") + 1)}
        for folder in folders:
            if client.ignores_folder(folder):
                skipped_folders += 1
                assert all(server.match_file(item) for item in paths if item.startswith(folder + "/")), (lines, folder)
    assert decisions > 50_000 and skipped_folders > 1_000 and 500 < refused < 3_000


@pytest.mark.parametrize("lines", [
    ["*.log", "!keep.log"],                      # negation
    ["build/", "!build/keep.txt"],               # a folder pattern, a file brought back from it
    ["/root_only.txt"],                          # anchored
    ["docs/*.md"],                               # a slash inside anchors too
    ["**/cache/**", "a/**/b"],                   # double stars
    ["[abc].py", "[!x]y.txt", "[]]z"],           # character classes
    ["\\#hash", "\\!bang", "trailing\\ ", "sp  "],  # escapes and trailing spaces
    ["# comment", "", "   ", "/"],               # lines that do nothing
    ["*", "!*/", "!*.py"],                       # everything but python files at any depth
    ["**/"],                                     # everything but root files
])
def test_common_patterns_decide_alike(lines):
    paths = ["keep.log", "x.log", "build/a.o", "build/keep.txt", "root_only.txt", "sub/root_only.txt", "docs/a.md",
             "docs/sub/a.md", "x/cache/y", "cache/z", "a/b", "a/x/y/b", "b.py", "d.py", "ay.txt", "xy.txt", "]z",
             "#hash", "!bang", "trailing ", "sp", "sp  ", "src/deep/file.py", "src/deep/file.txt", "top.txt"]
    server, client = server_rules(lines), client_rules(lines)
    assert [client.ignores(item) for item in paths] == [server.match_file(item) for item in paths]


@pytest.mark.parametrize("line", ["trailing\\", "[z-a].py"])
def test_a_line_that_is_not_a_pattern_is_refused_by_both_naming_it(line, data_dir):
    with pytest.raises(snapshots.SnapshotError, match="Line 2 of .amlignore"):
        snapshots.ignore_rules(f"ok\n{line}\n".encode(), ".amlignore")
    with pytest.raises(IgnoreError, match="Line 2 of .amlignore"):
        IgnoreRules.parse(f"ok\n{line}\n".encode(), ".amlignore")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr(".amlignore", f"ok\n{line}\n")
        out.writestr("a.py", "x")
    with pytest.raises(snapshots.SnapshotError, match="is not a valid pattern"):  # was a 500 before
        snapshots.stage_upload(SimpleUploadedFile("src.zip", archive.getvalue()))


def tree_pattern(rng: random.Random) -> str:
    """A pattern likely to match some of `make_tree`'s files: its names, partly wildcarded, anchored or not."""
    parts = []
    for _ in range(rng.randint(1, 2)):
        name = rng.choice(["a", "b", "ab", "x.py", "b.py", "aa", "c", "#a", "[a]", "*"])
        parts.append(rng.choice([name, name, name[:1] + "*", "*" + name[-1:], "?" * len(name), "**"]))
    return rng.choice(["", "", "!", "/", "!/"]) + "/".join(parts) + rng.choice(["", "", "/"])


def make_tree(root: Path, rng: random.Random) -> list[str]:
    """A folder of nested files (every name of NAMES without backslashes, at depths 1-4); their paths."""
    names = [name for name in NAMES if "\\" not in name]
    made = set()
    for _ in range(300):
        parts = [rng.choice(names) for _ in range(rng.randint(1, 4))]
        relative = "/".join(parts)
        if any(relative.startswith(other + "/") or other.startswith(relative + "/") for other in made):
            continue  # a name is a file or a folder, not both
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(relative)
        made.add(relative)
    return sorted(made)


def test_a_walked_folder_keeps_what_the_same_folder_uploaded_as_an_archive_keeps(tmp_path, data_dir):
    rng = random.Random(7)
    compared = kept_some = 0
    for case in range(40):
        root = tmp_path / f"case{case}"
        root.mkdir()
        files = make_tree(root, rng)
        lines = [rng.choice((pattern, tree_pattern))(rng) for _ in range(rng.randint(1, 5))]
        (root / ".amlignore").write_text("\n".join(lines) + "\n")
        (root / ".gitignore").write_text("*\n")  # .amlignore wins: this one is not applied
        (root / "top.py").write_text("a root file, so the archive has no single top folder")
        every = [*files, ".amlignore", ".gitignore", "top.py"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as out:
            for item in every:
                out.write(root / item, item)
        try:
            staged = snapshots.stage_upload(SimpleUploadedFile("src.zip", archive.getvalue()))
        except snapshots.SnapshotError as error:
            with pytest.raises(_snapshot.SnapshotError):
                _snapshot.scan(root)
            assert "holds no files" in str(error) or "not a valid pattern" in str(error)
            continue
        with staged:
            try:
                walked = _snapshot.scan(root)
            except _snapshot.SnapshotError as error:  # a kept name the studio refuses too would have failed above
                pytest.fail(f"{lines}: {error}")
            assert sorted(item.path for item in walked.files) == staged.paths(), lines
            assert (walked.ignore_file, walked.ignored) == (staged.ignore_file, staged.ignored_count), lines
            compared += 1
            kept_some += 0 < walked.ignored < len(every) - 1
    assert compared >= 20 and kept_some >= 10, (compared, kept_some)


def test_the_walk_skips_ignored_folders_with_links_inside_and_refuses_kept_links(tmp_path):
    (tmp_path / "train.py").write_text("print(1)")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    os.symlink("/usr/bin/python3", venv / "python")
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("home = /usr")
    (tmp_path / ".amlignore").write_text(".venv/\n")
    walked = _snapshot.scan(tmp_path)
    assert sorted(item.path for item in walked.files) == [".amlignore", "train.py"]
    assert (walked.ignore_file, walked.ignored) == (".amlignore", 2)
    os.symlink("train.py", tmp_path / "link.py")
    with pytest.raises(_snapshot.SnapshotError, match="a symbolic link is not allowed"):
        _snapshot.scan(tmp_path)


@pytest.mark.parametrize(("name", "message"), [
    ("evil\u202etxt.py", "U+202E"),
    ("back\\slash.py", "backslashes"),
    ("/".join(["d" * 250] * 5) + "/long.py", "paths are at most 1,024 bytes"),
])
def test_the_walk_refuses_names_the_studio_refuses(tmp_path, name, message):
    (tmp_path / "train.py").write_text("print(1)")
    target = tmp_path.joinpath(*name.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("x")
    with pytest.raises(_snapshot.SnapshotError, match=re.escape(message)):
        _snapshot.scan(tmp_path)
    (tmp_path / ".amlignore").write_text(name.replace("\\", "\\\\") + "\n")  # left out, it is no problem
    assert sorted(item.path for item in _snapshot.scan(tmp_path).files) == [".amlignore", "train.py"]
