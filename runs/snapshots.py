"""Snapshot storage: an uploaded source folder as content-addressed blobs plus a manifest.

Files go to the content-addressed blob store (`studio/blobs.py`), so identical files are stored once across all
snapshots. A snapshot's manifest lists `{"path", "sha256", "size"}` per file, sorted by its posix relative path.

Uploads are untrusted. `stage_upload` reads one into a private staging directory under `DATA_DIR/tmp`,
where files are named by their position, never by a member name, so nothing an archive says can reach
the filesystem. Unsafe archives are refused whole; limits are enforced on the bytes actually written.
Nothing reaches the blob store before `StagedSnapshot.commit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pathspec
from django.conf import settings

from runs.models import Snapshot
from studio import blobs
from studio.downloads import ZipMember
from studio.text import bidi_problem, visible

CHUNK_SIZE = 64 * 1024
IGNORE_FILES = (".amlignore", ".gitignore")
ACCEPTED_KINDS = "a .py file, a .zip archive, or a .tar, .tar.gz or .tgz archive"
# Listing a compressed tar means decompressing every member, ignored ones too: bound that work.
TAR_SCAN_FACTOR = 10
_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_NAME_BYTES = 255  # one file or folder name, as file systems allow
MAX_PATH_BYTES = 1024
# What a damaged or hostile archive raises while being read (never our own writes).
_READ_ERRORS = (
    zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, OSError,
)


class SnapshotError(ValueError):
    """The upload cannot become a snapshot; the message tells the user what is wrong and how to fix it."""


# Paths ---------------------------------------------------------------------------------------------------


def clean_path(raw: str) -> str:
    """The normalised posix form of an archive member name (`./a//b` -> `a/b`).

    Raises SnapshotError for a name that could leave the folder or mean something else on another system.
    The answer may be empty (for `./`).
    """
    if "\x00" in raw:
        raise SnapshotError(f"Refused {raw!r}: archive member names may not contain NUL bytes.")
    if "\\" in raw:
        raise SnapshotError(
            f"Refused {raw!r}: archive member names may not contain backslashes; "
            "create the archive with a tool that writes '/' separators."
        )
    if raw.startswith("/"):
        raise SnapshotError(f"Refused {raw!r}: archive members must have relative paths, not absolute ones.")
    if _DRIVE.match(raw):
        raise SnapshotError(f"Refused {raw!r}: archive members may not name a drive.")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise SnapshotError(f"Refused {raw!r}: archive members may not leave the folder.")
    problem = bidi_problem(raw, f"The name {visible(raw)!r}")
    if problem:
        raise SnapshotError(f"Refused: {problem}")
    too_long = next((part for part in parts if len(part.encode()) > MAX_NAME_BYTES), None)
    if too_long is not None:
        raise SnapshotError(
            f"Refused {raw[:80]!r}…: a file or folder name is at most {MAX_NAME_BYTES} bytes; shorten {too_long[:40]!r}…."
        )
    path = "/".join(parts)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise SnapshotError(f"Refused {raw[:80]!r}…: paths are at most {MAX_PATH_BYTES:,} bytes long.")
    return path


def _checked_manifest_path(path: str) -> str:
    """A manifest path, re-checked to be relative, normalised and inside the snapshot."""
    if not path or clean_path(path) != path:
        raise SnapshotError(f"The snapshot lists an unsafe path {path!r}; it cannot be unpacked.")
    return path


def _size_text(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count:,} bytes"
    return f"{count / (1024 * 1024):,.1f} MB"


# Limits ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Budget:
    """Limits of an upload (a snapshot's by default, read from settings at call time), and the bytes written so far.
    The model registry makes one of its own, with its settings and hints."""

    max_bytes: int
    max_files: int
    written: int = 0
    what: str = "snapshot"  # named in refusals: "a symbolic link is not allowed in a snapshot"
    bytes_setting: str = "STUDIO_SNAPSHOT_MAX_BYTES"
    files_setting: str = "STUDIO_SNAPSHOT_MAX_FILES"
    bytes_hint: str = "Leave data and build outputs out of the source, or list them in .amlignore."
    files_hint: str = "List folders you do not need in .amlignore."

    @classmethod
    def from_settings(cls) -> Budget:
        return cls(settings.STUDIO_SNAPSHOT_MAX_BYTES, settings.STUDIO_SNAPSHOT_MAX_FILES)

    def _too_big(self, what: str) -> SnapshotError:
        return SnapshotError(f"{what}; the limit is {_size_text(self.max_bytes)} ({self.bytes_setting}). "
                             f"{self.bytes_hint}")

    def check_upload(self, size: int | None) -> None:
        if size is not None and size > self.max_bytes:
            raise self._too_big(f"The upload holds {_size_text(size)}")

    def check_file_count(self, count: int) -> None:
        if count > self.max_files:
            raise SnapshotError(
                f"The archive holds {count:,} files; the limit is {self.max_files:,} ({self.files_setting}). "
                f"{self.files_hint}"
            )

    def spend(self, count: int) -> None:
        """Count bytes about to be written; raises as soon as the total passes the limit."""
        self.written += count
        if self.written > self.max_bytes:
            raise self._too_big(f"The files unpack to more than {_size_text(self.max_bytes)}")


def copy_counting(source: BinaryIO, out: BinaryIO, budget: Budget) -> tuple[str, int]:
    """Copy `source` to `out` in chunks, charging `budget` before each write. Returns (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    while True:
        with reading():
            chunk = source.read(CHUNK_SIZE)
        if not chunk:
            return digest.hexdigest(), size
        budget.spend(len(chunk))
        size += len(chunk)
        digest.update(chunk)
        out.write(chunk)


@contextmanager
def reading() -> Iterator[None]:
    """Turn errors raised while reading a damaged archive into a SnapshotError."""
    try:
        yield
    except SnapshotError:
        raise
    except _READ_ERRORS as exc:
        raise SnapshotError(
            f"The archive could not be read ({exc}); check that it is complete and not damaged, then upload it again."
        ) from exc


# The staged snapshot --------------------------------------------------------------------------------------


class StagedSnapshot:
    """Files read from an upload, waiting in a private staging directory until `commit` or `discard`.

    Use it as a context manager: leaving the block discards whatever was not committed.
    """

    def __init__(self, source_name: str, directory: Path):
        self.source_name = source_name
        self.ignore_file = ""
        self.ignored_count = 0
        self.manifest: list[dict] = []
        self._directory: Path | None = directory
        self._staged: dict[str, Path] = {}

    def __enter__(self) -> StagedSnapshot:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()

    @property
    def file_count(self) -> int:
        return len(self.manifest)

    @property
    def total_bytes(self) -> int:
        return sum(entry["size"] for entry in self.manifest)

    def has_file(self, path: str) -> bool:
        return path in self.paths()

    def paths(self) -> list[str]:
        """Every file path, sorted."""
        return [entry["path"] for entry in self.manifest]

    def add(self, path: str, source: BinaryIO, budget: Budget) -> None:
        """Stage one file read from `source`. `path` must already be clean and new."""
        target = self._directory / f"{len(self._staged):06d}"
        with open(target, "xb") as out:
            sha256, size = copy_counting(source, out, budget)
        self._staged[path] = target
        self.manifest.append({"path": path, "sha256": sha256, "size": size})
        self.manifest.sort(key=lambda entry: entry["path"])

    def read_staged(self, path: str) -> bytes:
        return self._staged[path].read_bytes()

    def commit(self, workspace, user) -> Snapshot:
        """Move the staged files into the blob store and create the Snapshot row. Call it once."""
        if self._directory is None:
            raise RuntimeError("This staged snapshot was already committed or discarded.")
        for entry in self.manifest:
            blobs.store(self._staged[entry["path"]], entry["sha256"])
        snapshot = Snapshot.objects.create(
            workspace=workspace,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            source_name=self.source_name[:255],
            ignore_file=self.ignore_file,
            ignored_count=self.ignored_count,
            file_count=self.file_count,
            total_bytes=self.total_bytes,
            manifest=self.manifest,
        )
        self.discard()
        return snapshot

    def discard(self) -> None:
        """Remove the staging directory. Safe to call more than once."""
        if self._directory is not None and self._directory.exists():
            shutil.rmtree(self._directory)
        self._directory = None
        self._staged = {}


def _new_staging_dir() -> Path:
    root = Path(settings.DATA_DIR) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="snapshot-", dir=root))


# Archives --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One archive member: its raw name, whether it is a directory, and the reader's own handle."""

    name: str
    is_dir: bool
    ref: object


class ZipArchive:
    """Reads members of a zip file; refuses links, special files and encrypted members."""

    def __init__(self, fileobj: BinaryIO, source_name: str, what: str = "snapshot"):
        self.what = what
        try:
            self._zip = zipfile.ZipFile(fileobj)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise SnapshotError(
                f"{source_name!r} is not a valid zip archive; create it again with a zip tool and upload it."
            ) from exc

    def members(self) -> list[Member]:
        return [self._member(info) for info in self._zip.infolist()]

    def _member(self, info: zipfile.ZipInfo) -> Member:
        name = info.orig_filename  # `filename` is cut at a NUL byte; check what the archive really says.
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _link_error(name, "symbolic link", self.what)
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _special_error(name, self.what)
        if info.flag_bits & 0x1:
            raise SnapshotError(f"Refused {name!r}: encrypted zip members are not supported; zip without a password.")
        return Member(name, info.is_dir(), info)

    def open(self, member: Member) -> BinaryIO:
        with reading():
            return self._zip.open(member.ref)

    def close(self) -> None:
        self._zip.close()


class TarArchive:
    """Reads members of a (possibly compressed) tar file; refuses links and special files."""

    def __init__(self, fileobj: BinaryIO, source_name: str, what: str = "snapshot"):
        self.what = what
        try:
            self._tar = tarfile.open(fileobj=fileobj, mode="r:*")
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise SnapshotError(
                f"{source_name!r} is not a valid tar archive; create it again with tar and upload it."
            ) from exc

    def members(self) -> list[Member]:
        """Every member, read header by header, stopping before the listing decompresses too much."""
        scan_limit = TAR_SCAN_FACTOR * settings.STUDIO_SNAPSHOT_MAX_BYTES
        members, scanned = [], 0
        with reading():
            while (info := self._tar.next()) is not None:
                members.append(tar_member(info, self.what))
                scanned += info.size  # Reading the next header skips (decompresses) exactly this much.
                if scanned > scan_limit:
                    raise SnapshotError(
                        f"The tar archive expands to more than {_size_text(scan_limit)}, counting ignored files "
                        f"(the limit is {TAR_SCAN_FACTOR} x STUDIO_SNAPSHOT_MAX_BYTES). "
                        "Leave large ignored folders out of the archive."
                    )
        return members

    def open(self, member: Member) -> BinaryIO:
        with reading():
            return self._tar.extractfile(member.ref)

    def close(self) -> None:
        self._tar.close()


def tar_member(info: tarfile.TarInfo, what: str = "snapshot") -> Member:
    """A tar member the studio accepts (a regular file or a folder), or SnapshotError saying why not."""
    if info.issym():
        raise _link_error(info.name, "symbolic link", what)
    if info.islnk():
        raise _link_error(info.name, "hard link", what)
    if not (info.isreg() or info.isdir()):
        raise _special_error(info.name, what)
    return Member(info.name, info.isdir(), info)


def _link_error(name: str, kind: str, what: str = "snapshot") -> SnapshotError:
    return SnapshotError(
        f"Refused {name!r}: a {kind} is not allowed in a {what}; put the file itself in the archive instead."
    )


def _special_error(name: str, what: str = "snapshot") -> SnapshotError:
    return SnapshotError(
        f"Refused {name!r}: devices, FIFOs and other special files are not allowed in a {what}; "
        "archive regular files and folders only."
    )


def plan_files(members: list[Member]) -> list[tuple[str, Member]]:
    """The files to stage as (clean path, member), in archive order.

    Refuses unsafe names, duplicates and a path that is both a file and a folder. When every member lives
    under one top-level folder, that folder is stripped so paths are relative to the source folder.
    """
    named = [(clean_path(member.name), member) for member in members]
    named = [(path, member) for path, member in named if path]
    files = [(path, member) for path, member in named if not member.is_dir]
    if _single_top_folder(named, files):
        files = [(path.split("/", 1)[1], member) for path, member in files]
    refuse_clashes([path for path, _ in files])
    return files


def _single_top_folder(named: list[tuple[str, Member]], files: list[tuple[str, Member]]) -> bool:
    tops = {path.split("/", 1)[0] for path, _ in named}
    return len(tops) == 1 and bool(files) and all("/" in path for path, _ in files)


def refuse_clashes(paths: list[str]) -> None:
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise SnapshotError(f"Refused {path!r}: it appears more than once in the archive.")
        seen.add(path)
    folders = _all_parents({path.rsplit("/", 1)[0] for path in paths if "/" in path})
    for path in paths:
        if path in folders:
            raise SnapshotError(f"Refused {path!r}: it is both a file and a folder in the archive.")


def _all_parents(folders: set[str]) -> set[str]:
    """Every folder named, with all its ancestors (`a/b/c` -> `a`, `a/b`, `a/b/c`)."""
    parents = set()
    for folder in folders:
        parts = folder.split("/")
        parents.update("/".join(parts[: index + 1]) for index in range(len(parts)))
    return parents


# Snapshots made from blobs (runs/snapshot_sync.py) ---------------------------------------------------------


def check_manifest(files: list[dict], ignore_file: str, budget: Budget) -> list[dict]:
    """A client's manifest (`{"path", "sha256", "size"}` per file, sizes already checked against the content), under
    the rules of uploads, sorted by path: clean relative paths (as `clean_path` leaves them: no `..`, no backslashes,
    no direction controls, bounded lengths), no duplicates or file-and-folder clashes, the file and byte limits, and
    `ignore_file` naming the root ignore file that applies (`.amlignore` wins over `.gitignore`; it is kept)."""
    if not files:
        raise SnapshotError("The snapshot lists no files; add your source files and send it again.")
    if len(files) > budget.max_files:
        raise SnapshotError(f"The folder holds {len(files):,} files; the limit is {budget.max_files:,} "
                            f"({budget.files_setting}). {budget.files_hint}")
    entries = []
    for entry in files:
        path = entry["path"]
        cleaned = clean_path(path)
        if cleaned != path or not path:
            raise SnapshotError(f"Refused {path[:200]!r}: send paths relative to the folder, '/' between names, "
                                f"without '.', '..' or empty parts (here {cleaned[:200]!r}).")
        if not blobs.SHA256.fullmatch(entry["sha256"]):
            raise SnapshotError(f"{path[:200]!r}: its sha256 must be 64 lowercase hexadecimal digits.")
        entries.append({"path": path, "sha256": entry["sha256"], "size": entry["size"]})
    total = sum(entry["size"] for entry in entries)
    if total > budget.max_bytes:
        raise budget._too_big(f"The folder holds {_size_text(total)}")
    paths = {entry["path"] for entry in entries}
    refuse_clashes([entry["path"] for entry in entries])
    applies = next((name for name in IGNORE_FILES if name in paths), "")
    if ignore_file != applies:
        if applies:
            raise SnapshotError(f"The folder's root holds {applies}, so that is the ignore file that applies "
                                f"(.amlignore wins over .gitignore): send ignore_file {applies!r}.")
        raise SnapshotError(f"ignore_file is {ignore_file!r}, but the snapshot lists no such file at its root: send "
                            "the ignore file too (it is kept in the snapshot), or leave ignore_file empty.")
    entries.sort(key=lambda entry: entry["path"])
    return entries


class ExistingSnapshot:
    """A stored snapshot standing in for a StagedSnapshot at submission (`commit` returns it; nothing to discard):
    a run submitted with `snapshot_id` instead of an upload."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    @classmethod
    def of_workspace(cls, workspace, snapshot_id: int) -> ExistingSnapshot:
        snapshot = Snapshot.objects.filter(workspace=workspace, pk=snapshot_id).first()
        if snapshot is None:
            raise SnapshotError(
                f"There is no snapshot {snapshot_id} in this workspace: make one with "
                f"POST /api/v1/workspaces/{workspace.name}/snapshots (the SDK does), then submit with its id."
            )
        return cls(snapshot)

    def paths(self) -> list[str]:
        return [entry["path"] for entry in self.snapshot.manifest]

    def has_file(self, path: str) -> bool:
        return self.snapshot.entry(path) is not None

    def commit(self, workspace, user) -> Snapshot:
        return self.snapshot

    def discard(self) -> None:
        """Nothing was staged."""


# Staging ---------------------------------------------------------------------------------------------------


def _kind_of(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".py"):
        return "py"
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    raise SnapshotError(f"Cannot use {name!r} as a source: upload {ACCEPTED_KINDS}.")


def stage_upload(uploaded_file) -> StagedSnapshot:
    """Read an uploaded .py file or archive into a StagedSnapshot.

    Raises SnapshotError (leaving nothing on disk) for an unknown kind, an unreadable or unsafe archive,
    or one over the limits. The caller must `commit` or `discard` the result (or use it in a `with`).
    """
    name = uploaded_file.name or ""
    kind = _kind_of(name)
    budget = Budget.from_settings()
    budget.check_upload(uploaded_file.size)
    staged = StagedSnapshot(name, _new_staging_dir())
    try:
        uploaded_file.open()
        if kind == "py":
            _stage_script(staged, uploaded_file, budget)
        else:
            _stage_archive(staged, uploaded_file, kind, budget)
    except BaseException:
        staged.discard()
        raise
    return staged


def _stage_script(staged: StagedSnapshot, uploaded_file, budget: Budget) -> None:
    """A single .py upload: one file, under its base name."""
    name = uploaded_file.name
    if name in ("", ".", "..") or any(bad in name for bad in ("/", "\\", "\x00")) or _DRIVE.match(name):
        raise SnapshotError(f"Refused the file name {name!r}: rename the script to a plain name such as train.py.")
    name = clean_path(name)  # length and direction controls
    uploaded_file.seek(0)
    staged.add(name, uploaded_file, budget)


def _stage_archive(staged: StagedSnapshot, uploaded_file, kind: str, budget: Budget) -> None:
    """Stage the files of a zip or tar upload that its ignore file keeps."""
    uploaded_file.seek(0)
    reader_class = ZipArchive if kind == "zip" else TarArchive
    archive = reader_class(uploaded_file.file, uploaded_file.name)
    try:
        files = plan_files(archive.members())
        spec = _stage_ignore_file(staged, archive, files, budget)
        kept = [(path, member) for path, member in files if path == staged.ignore_file or not spec.match_file(path)]
        staged.ignored_count = len(files) - len(kept)
        _check_not_empty(kept, staged.ignore_file)
        budget.check_file_count(len(kept))
        for path, member in kept:
            if path != staged.ignore_file:
                with archive.open(member) as source:
                    staged.add(path, source, budget)
    finally:
        archive.close()


def _stage_ignore_file(staged, archive, files, budget: Budget) -> pathspec.GitIgnoreSpec:
    """Stage the root `.amlignore` (or else `.gitignore`) and return its rules; empty rules when neither."""
    members = dict(files)
    chosen = next((name for name in IGNORE_FILES if name in members), "")
    staged.ignore_file = chosen
    if not chosen:
        return pathspec.GitIgnoreSpec.from_lines([])
    with archive.open(members[chosen]) as source:
        staged.add(chosen, source, budget)
    return ignore_rules(staged.read_staged(chosen), chosen)


def ignore_rules(content: bytes, name: str) -> pathspec.GitIgnoreSpec:
    """The rules of an ignore file (gitignore syntax, UTF-8 with an optional BOM; undecodable bytes replaced).

    Raises SnapshotError naming the first line that is not a pattern (a trailing lone backslash, a reversed range).
    The SDK reads ignore files the same way (`sdk/studio_sdk/_gitignore.py`); a test compares the two."""
    lines = content.decode("utf-8-sig", errors="replace").splitlines()
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (ValueError, re.error):
        pass
    for number, line in enumerate(lines, 1):
        try:
            pathspec.GitIgnoreSpec.from_lines([line])
        except (ValueError, re.error) as exc:
            raise SnapshotError(
                f"Line {number} of {name} ({visible(line[:80])!r}) is not a valid pattern ({exc}); "
                "fix it or remove it (escape a trailing backslash as \\\\, write ranges low to high)."
            ) from None
    raise SnapshotError(f"{name} could not be read as gitignore patterns; check its lines.")


def _check_not_empty(kept: list, ignore_file: str) -> None:
    if not kept:
        after = f" after applying {ignore_file}" if ignore_file else ""
        raise SnapshotError(f"The archive holds no files{after}; add your source files and upload it again.")


# Reading committed snapshots ----------------------------------------------------------------------------------


def open_blob(snapshot: Snapshot, path: str) -> BinaryIO:
    """Open the stored bytes of one manifest path for reading. KeyError when the path is not in the manifest."""
    entry = snapshot.entry(path)
    if entry is None:
        raise KeyError(path)
    return open(blobs.path(entry["sha256"]), "rb")


def materialize(snapshot: Snapshot, dest: Path) -> None:
    """Write every file of the snapshot under `dest` (created as needed), each owner-writable (0o644)."""
    dest = Path(dest)
    for entry in snapshot.manifest:
        target = dest.joinpath(*_checked_manifest_path(entry["path"]).split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # Never write through a link left in the way.
        with open(blobs.path(entry["sha256"]), "rb") as source, open(target, "xb") as out:
            shutil.copyfileobj(source, out, CHUNK_SIZE)
        os.chmod(target, 0o644)


def zip_members(snapshot: Snapshot) -> list[ZipMember]:
    """The snapshot's files for a zip download, each checked to be a safe relative path."""
    return [ZipMember(_checked_manifest_path(entry["path"]), blobs.path(entry["sha256"])) for entry in snapshot.manifest]


def file_tree(snapshot: Snapshot) -> list[dict]:
    """The manifest as nested nodes `{"name", "path", "is_dir", "size", "children"}`.

    A folder's size is the sum of its files. Siblings: folders first, then files, each alphabetical.
    """
    root = _tree_node("", "", is_dir=True)
    for entry in snapshot.manifest:
        node, parts = root, entry["path"].split("/")
        for index, part in enumerate(parts[:-1]):
            node = node["children"].setdefault(part, _tree_node(part, "/".join(parts[: index + 1]), is_dir=True))
            node["size"] += entry["size"]
        node["children"][parts[-1]] = _tree_node(parts[-1], entry["path"], is_dir=False, size=entry["size"])
    return _sorted_children(root)


def _tree_node(name: str, path: str, *, is_dir: bool, size: int = 0) -> dict:
    return {"name": name, "path": path, "is_dir": is_dir, "size": size, "children": {}}


def _sorted_children(node: dict) -> list[dict]:
    children = sorted(node["children"].values(), key=lambda child: (not child["is_dir"], child["name"]))
    for child in children:
        child["children"] = _sorted_children(child)
    return children
