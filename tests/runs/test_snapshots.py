"""Snapshot staging, the untrusted-archive rules, the blob store and reading snapshots back."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

from runs import snapshots
from runs.snapshots import SnapshotError, stage_upload
from studio.downloads import zip_response
from studio.models import Workspace

# Fixtures and builders ---------------------------------------------------------------------------------------



@pytest.fixture
def workspace(alice) -> Workspace:
    return Workspace.create_with_owner("ws", alice)


def zip_bytes(files) -> bytes:
    """A zip of `files`: a dict {name: bytes} or a list of (name or ZipInfo, bytes)."""
    buffer = io.BytesIO()
    items = files.items() if isinstance(files, dict) else files
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in items:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_upload(files, name="src.zip") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, zip_bytes(files))


def tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def tar_upload(members, name="src.tar.gz") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if name.endswith("gz") else "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return SimpleUploadedFile(name, buffer.getvalue())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_files(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "blobs").rglob("*") if path.is_file()]


def assert_nothing_left(tmp_path: Path, data_dir: Path) -> None:
    tmp = data_dir / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    assert blob_files(data_dir) == []
    assert [path for path in tmp_path.rglob("*") if not path.is_dir()] == []


def assert_refused(upload, message: str, tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(SnapshotError, match=re.escape(message)):
        stage_upload(upload)
    assert_nothing_left(tmp_path, data_dir)


# A single script ---------------------------------------------------------------------------------------------


def test_it_stages_a_single_python_file(data_dir):
    with stage_upload(SimpleUploadedFile("train.py", b"print('hi')\n")) as staged:
        assert staged.manifest == [{"path": "train.py", "sha256": sha(b"print('hi')\n"), "size": 12}]
        assert staged.paths() == ["train.py"]
        assert staged.has_file("train.py") and not staged.has_file("other.py")
        assert (staged.file_count, staged.total_bytes, staged.ignore_file, staged.ignored_count) == (1, 12, "", 0)
        assert staged.source_name == "train.py"
    assert list((data_dir / "tmp").iterdir()) == []


def test_it_refuses_a_python_file_name_with_a_path(data_dir, tmp_path):
    assert_refused(SimpleUploadedFile("..\\evil.py", b"x"), "Refused the file name", tmp_path, data_dir)


def test_it_refuses_a_python_file_over_the_byte_limit(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 10
    upload = SimpleUploadedFile("train.py", b"x" * 11)
    message = "The upload holds 11 bytes; the limit is 10 bytes (STUDIO_SNAPSHOT_MAX_BYTES)."
    assert_refused(upload, message, tmp_path, data_dir)


def test_it_counts_the_bytes_it_writes_not_the_size_it_is_told(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 10
    upload = SimpleUploadedFile("train.py", b"x" * 11)
    upload.size = 5
    assert_refused(upload, "The files unpack to more than 10 bytes", tmp_path, data_dir)


def test_it_refuses_an_unknown_kind_of_file(data_dir, tmp_path):
    message = "Cannot use 'notes.txt' as a source: upload a .py file, a .zip archive, or a .tar, .tar.gz or .tgz"
    assert_refused(SimpleUploadedFile("notes.txt", b"x"), message, tmp_path, data_dir)


# Archives ------------------------------------------------------------------------------------------------------


def test_it_stages_a_zip_with_nested_folders(data_dir, settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    files = {"train.py": b"main", "pkg/__init__.py": b"", "pkg/deep/model.py": b"model", "data/": b""}
    upload = TemporaryUploadedFile("src.zip", "application/zip", 0, None)
    upload.write(zip_bytes(files))
    upload.size = upload.tell()
    with stage_upload(upload) as staged:
        assert staged.paths() == ["pkg/__init__.py", "pkg/deep/model.py", "train.py"]
        assert staged.total_bytes == 9
    upload.close()


def test_it_stages_a_compressed_tar(data_dir):
    members = [tar_member("./src", kind=tarfile.DIRTYPE), tar_member("./src/t.py", b"main"), tar_member("b.py", b"b")]
    with stage_upload(tar_upload(members, "src.tgz")) as staged:
        assert staged.paths() == ["b.py", "src/t.py"]


def test_it_strips_a_single_top_level_folder(data_dir):
    files = {"project/": b"", "project/train.py": b"x", "project/.gitignore": b"*.log\n", "project/run.log": b"l"}
    with stage_upload(zip_upload(files)) as staged:
        assert staged.paths() == [".gitignore", "train.py"]
        assert (staged.ignore_file, staged.ignored_count) == (".gitignore", 1)


def test_it_keeps_folders_when_there_are_two_at_the_top(data_dir):
    with stage_upload(zip_upload({"a/x.py": b"x", "b/y.py": b"y"})) as staged:
        assert staged.paths() == ["a/x.py", "b/y.py"]


def test_it_applies_the_root_gitignore(data_dir):
    files = {
        ".gitignore": b"data/\n*.log\n",
        "train.py": b"x",
        "data/big.csv": b"1,2",
        "data/sub/more.csv": b"3",
        "debug.log": b"l",
        "sub/.gitignore": b"*.py\n",
        "sub/kept.py": b"k",
    }
    with stage_upload(zip_upload(files)) as staged:
        assert staged.paths() == [".gitignore", "sub/.gitignore", "sub/kept.py", "train.py"]
        assert (staged.ignore_file, staged.ignored_count) == (".gitignore", 3)


def test_amlignore_wins_over_gitignore(data_dir):
    files = {".amlignore": b"*.csv\n", ".gitignore": b"*.log\n", "a.csv": b"c", "a.log": b"l", "t.py": b"t"}
    with stage_upload(zip_upload(files)) as staged:
        assert staged.paths() == [".amlignore", ".gitignore", "a.log", "t.py"]
        assert (staged.ignore_file, staged.ignored_count) == (".amlignore", 1)


def test_a_negation_pattern_keeps_a_file(data_dir):
    files = {".amlignore": b"*.txt\n!keep.txt\n", "drop.txt": b"d", "keep.txt": b"k", "t.py": b"t"}
    with stage_upload(zip_upload(files)) as staged:
        assert staged.paths() == [".amlignore", "keep.txt", "t.py"]


def test_ignored_files_do_not_count_toward_the_limits(data_dir, settings):
    settings.STUDIO_SNAPSHOT_MAX_FILES = 2
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1000
    files = {".gitignore": b"data/\n", "t.py": b"t"} | {f"data/{n}.bin": b"x" * 900 for n in range(5)}
    with stage_upload(zip_upload(files)) as staged:
        assert (staged.file_count, staged.ignored_count) == (2, 5)


# Refusals: every one leaves nothing behind ------------------------------------------------------------------


def test_it_refuses_an_absolute_member_path(data_dir, tmp_path):
    target = tmp_path.parent / f"escape-{uuid.uuid4().hex}"
    upload = zip_upload({"ok.py": b"x", str(target): b"evil"})
    assert_refused(upload, f"Refused '{target}': archive members must have relative paths", tmp_path, data_dir)
    assert not target.exists()


def test_it_refuses_a_member_that_leaves_the_folder(data_dir, tmp_path):
    name = f"escape-{uuid.uuid4().hex}"
    upload = zip_upload({"ok.py": b"x", f"evil/../../../../../{name}": b"evil"})
    assert_refused(upload, "archive members may not leave the folder.", tmp_path, data_dir)
    assert not (tmp_path.parent / name).exists()


def test_it_refuses_the_example_dotdot_path_in_a_tar(data_dir, tmp_path):
    upload = tar_upload([tar_member("ok.py", b"x"), tar_member("evil/../../x", b"evil")])
    message = "Refused 'evil/../../x': archive members may not leave the folder."
    assert_refused(upload, message, tmp_path, data_dir)
    assert not (data_dir / "tmp" / "x").exists()


@pytest.mark.parametrize("name", ["C:/x", "C:x", "c:\u00e9"])
def test_it_refuses_a_drive_letter(data_dir, tmp_path, name):
    message = f"Refused {name!r}: archive members may not name a drive."
    assert_refused(zip_upload({"ok.py": b"x", name: b"e"}), message, tmp_path, data_dir)


def test_it_refuses_a_backslash_in_a_member_name(data_dir, tmp_path):
    upload = zip_upload({"ok.py": b"x", "..\\..\\x": b"evil"})
    assert_refused(upload, r"Refused '..\\..\\x': archive member names may not contain backslashes", tmp_path, data_dir)


def test_it_refuses_a_nul_byte_in_a_member_name(data_dir, tmp_path):
    upload = tar_upload([tar_member("ok.py", b"x", pax_headers={"path": "a\x00b.py"})], "src.tar")
    assert_refused(upload, "Refused 'a\\x00b.py': archive member names may not contain NUL bytes.", tmp_path, data_dir)


def test_it_refuses_a_symlink_member_in_a_zip(data_dir, tmp_path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    upload = zip_upload([("ok.py", b"x"), (link, b"/etc/passwd")])
    assert_refused(upload, "Refused 'link': a symbolic link is not allowed in a snapshot", tmp_path, data_dir)


def test_it_refuses_a_symlink_member_in_a_tar(data_dir, tmp_path):
    upload = tar_upload([tar_member("ok.py", b"x"), tar_member("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd")])
    assert_refused(upload, "Refused 'link': a symbolic link is not allowed in a snapshot", tmp_path, data_dir)


def test_it_refuses_a_hardlink_member_in_a_tar(data_dir, tmp_path):
    upload = tar_upload([tar_member("ok.py", b"x"), tar_member("hard", kind=tarfile.LNKTYPE, linkname="ok.py")])
    assert_refused(upload, "Refused 'hard': a hard link is not allowed in a snapshot", tmp_path, data_dir)


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_it_refuses_a_fifo_or_device_member_in_a_tar(data_dir, tmp_path, kind):
    upload = tar_upload([tar_member("ok.py", b"x"), tar_member("dev", kind=kind)])
    assert_refused(upload, "Refused 'dev': devices, FIFOs and other special files are not allowed", tmp_path, data_dir)


def test_it_refuses_a_duplicate_member_path(data_dir, tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        upload = zip_upload([("a.py", b"1"), ("./a.py", b"2"), ("a.py", b"3")])
    assert_refused(upload, "Refused 'a.py': it appears more than once in the archive.", tmp_path, data_dir)


def test_it_refuses_a_path_that_is_both_a_file_and_a_folder(data_dir, tmp_path):
    upload = zip_upload({"a": b"1", "a/b.py": b"2"})
    assert_refused(upload, "Refused 'a': it is both a file and a folder in the archive.", tmp_path, data_dir)


def test_it_refuses_too_many_files(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_FILES = 2
    upload = zip_upload({"a.py": b"1", "b.py": b"2", "c.py": b"3"})
    message = "The archive holds 3 files; the limit is 2 (STUDIO_SNAPSHOT_MAX_FILES)."
    assert_refused(upload, message, tmp_path, data_dir)


def test_it_refuses_files_over_the_byte_limit_and_removes_what_it_wrote(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1000
    upload = zip_upload({f"{n}.py": bytes([n]) * 300 for n in range(4)})
    assert_refused(upload, "The files unpack to more than 1,000 bytes; the limit is 1,000 bytes", tmp_path, data_dir)


def test_it_refuses_a_zip_bomb_quickly(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1024 * 1024
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive, \
            archive.open("zeros.bin", "w") as out:
        for _ in range(50):
            out.write(bytes(1024 * 1024))
    upload = SimpleUploadedFile("bomb.zip", buffer.getvalue())
    assert upload.size < 1024 * 1024
    started = time.monotonic()
    message = "The files unpack to more than 1.0 MB; the limit is 1.0 MB (STUDIO_SNAPSHOT_MAX_BYTES)."
    assert_refused(upload, message, tmp_path, data_dir)
    assert time.monotonic() - started < 2


def test_it_refuses_a_zip_whose_header_lies_about_sizes(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1024 * 1024
    data = bytearray(zip_bytes({"zeros.bin": bytes(2 * 1024 * 1024)}))
    real = (2 * 1024 * 1024).to_bytes(4, "little")
    data[:] = data.replace(real, (10).to_bytes(4, "little"))  # Local and central headers now claim 10 bytes.
    upload = SimpleUploadedFile("liar.zip", bytes(data))
    assert_refused(upload, "The archive could not be read (Bad CRC-32 for file 'zeros.bin')", tmp_path, data_dir)


def test_it_refuses_a_tar_bomb(data_dir, tmp_path, settings):
    settings.STUDIO_SNAPSHOT_MAX_BYTES = 1024 * 1024
    upload = tar_upload([tar_member("zeros.bin", bytes(50 * 1024 * 1024))], "bomb.tar.gz")
    assert upload.size < 1024 * 1024
    assert_refused(upload, "STUDIO_SNAPSHOT_MAX_BYTES", tmp_path, data_dir)


def test_it_refuses_an_invalid_zip(data_dir, tmp_path):
    message = "'src.zip' is not a valid zip archive"
    assert_refused(SimpleUploadedFile("src.zip", b"this is not a zip"), message, tmp_path, data_dir)


def test_it_refuses_an_invalid_tar(data_dir, tmp_path):
    message = "'src.tar.gz' is not a valid tar archive"
    assert_refused(SimpleUploadedFile("src.tar.gz", b"this is not a tar"), message, tmp_path, data_dir)


def test_it_refuses_a_truncated_zip_member(data_dir, tmp_path):
    data = zip_bytes({"a.py": bytes(range(256)) * 400})
    damaged = data[:200] + bytes(len(data) - 400) + data[-200:]
    assert_refused(SimpleUploadedFile("src.zip", damaged), "The archive could not be read", tmp_path, data_dir)


def test_it_refuses_an_empty_archive(data_dir, tmp_path):
    assert_refused(zip_upload({"empty/": b""}), "The archive holds no files;", tmp_path, data_dir)


def test_it_refuses_an_archive_whose_files_are_all_ignored(data_dir, tmp_path):
    upload = zip_upload({".gitignore": b"*\n", "a.py": b"a"})
    with stage_upload(upload) as staged:  # The ignore file itself is always kept.
        assert staged.paths() == [".gitignore"]
    upload = zip_upload({"src/": b"", "src/data/": b""})
    assert_refused(upload, "The archive holds no files", tmp_path, data_dir)


# Committing and reading back -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_commit_stores_each_blob_once(data_dir, workspace, alice):
    files = {"a.py": b"same", "b/a.py": b"same", "c.py": b"other"}
    with stage_upload(zip_upload(files)) as staged:
        first = staged.commit(workspace, alice)
    assert len(blob_files(data_dir)) == 2
    with stage_upload(zip_upload(files)) as staged:
        second = staged.commit(workspace, alice)
    assert len(blob_files(data_dir)) == 2
    assert first.manifest == second.manifest
    assert (second.file_count, second.total_bytes, second.source_name, second.created_by) == (3, 13, "src.zip", alice)
    blob = data_dir / "blobs" / sha(b"same")[:2] / sha(b"same")[2:]
    assert blob.read_bytes() == b"same"
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert list((data_dir / "tmp").iterdir()) == []


@pytest.mark.django_db
def test_commit_records_the_ignore_file(data_dir, workspace, alice):
    with stage_upload(zip_upload({".gitignore": b"*.log\n", "a.py": b"a", "x.log": b"x"})) as staged:
        snapshot = staged.commit(workspace, alice)
    snapshot.refresh_from_db()
    assert (snapshot.ignore_file, snapshot.ignored_count, snapshot.file_count) == (".gitignore", 1, 2)


def test_leaving_the_block_discards_what_was_not_committed(data_dir):
    with stage_upload(zip_upload({"a.py": b"a"})) as staged:
        assert len(list((data_dir / "tmp").iterdir())) == 1
    staged.discard()
    assert list((data_dir / "tmp").iterdir()) == []
    assert blob_files(data_dir) == []


@pytest.fixture
def snapshot(data_dir, workspace, alice):
    files = {"train.py": b"print(1)\n", "pkg/model.py": b"m" * 10, "pkg/sub/util.py": b"u", "README": b"r"}
    with stage_upload(zip_upload(files)) as staged:
        return staged.commit(workspace, alice)


def test_materialize_reproduces_the_bytes(snapshot, tmp_path):
    dest = tmp_path / "work"
    snapshots.materialize(snapshot, dest)
    written = {path.relative_to(dest).as_posix(): path for path in dest.rglob("*") if path.is_file()}
    assert sorted(written) == ["README", "pkg/model.py", "pkg/sub/util.py", "train.py"]
    assert written["pkg/model.py"].read_bytes() == b"m" * 10
    assert stat.S_IMODE(written["train.py"].stat().st_mode) == 0o644
    written["train.py"].write_bytes(b"changed")  # The working copy is writable; the blob is untouched.
    with snapshots.open_blob(snapshot, "train.py") as handle:
        assert handle.read() == b"print(1)\n"


def test_materialize_refuses_an_unsafe_manifest_path(snapshot, tmp_path):
    snapshot.manifest = [{"path": "../escaped.py", "sha256": snapshot.manifest[0]["sha256"], "size": 1}]
    with pytest.raises(SnapshotError):
        snapshots.materialize(snapshot, tmp_path / "work")
    assert not (tmp_path / "escaped.py").exists()


def test_the_zip_download_round_trips(snapshot, rf):
    response = zip_response(rf.get("/"), snapshots.zip_members(snapshot), filename="s.zip", compress=True)
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert archive.namelist() == ["README", "pkg/model.py", "pkg/sub/util.py", "train.py"]
        assert archive.read("train.py") == b"print(1)\n"
        assert archive.getinfo("pkg/model.py").compress_type == zipfile.ZIP_DEFLATED


def test_file_tree_lists_folders_first_then_files(snapshot):
    tree = snapshots.file_tree(snapshot)
    assert [(node["name"], node["is_dir"]) for node in tree] == [("pkg", True), ("README", False), ("train.py", False)]
    pkg = tree[0]
    assert (pkg["path"], pkg["size"]) == ("pkg", 11)
    assert [node["path"] for node in pkg["children"]] == ["pkg/sub", "pkg/model.py"]
    assert pkg["children"][0]["children"] == [
        {"name": "util.py", "path": "pkg/sub/util.py", "is_dir": False, "size": 1, "children": []}
    ]


def test_open_blob_refuses_a_path_not_in_the_manifest(snapshot):
    with pytest.raises(KeyError):
        snapshots.open_blob(snapshot, "../../etc/passwd")
    with snapshots.open_blob(snapshot, "pkg/sub/util.py") as handle:
        assert handle.read() == b"u"
