"""Model files uploaded from outside the studio: staged, hashed while written, then moved into the blob store.

Uploads are untrusted, with the snapshot rules (`runs/snapshots.py`): member names are cleaned (no absolute paths,
no `..`, no drive letters or backslashes, no direction control characters, bounded length), links and special files
refuse the whole upload, duplicate paths and file/folder clashes are refused, and the bytes actually written are
bounded (STUDIO_MODEL_MAX_BYTES, STUDIO_MODEL_MAX_FILES). Files are staged under names of their position, so nothing
an archive says reaches the file system, and nothing reaches the blob store before `commit`.

Three ways in: uploaded files (several, each under its base name), one uploaded archive (.zip, .tar, .tar.gz,
.tgz, unpacked; a single top folder is stripped), or an archive streamed as the request body (tar only: read member by
member as the bytes arrive, so a 1 GB model is written once).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from runs.snapshots import (
    Budget,
    SnapshotError,
    ZipArchive,
    clean_path,
    copy_counting,
    plan_files,
    reading,
    refuse_clashes,
    tar_member,
)
from studio import blobs

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
STREAM_BUFFER = 1024 * 1024


class UploadError(SnapshotError):
    """The upload cannot become a model version; the message says why."""


def model_budget() -> Budget:
    return Budget(settings.STUDIO_MODEL_MAX_BYTES, settings.STUDIO_MODEL_MAX_FILES, what="model",
                  bytes_setting="STUDIO_MODEL_MAX_BYTES", files_setting="STUDIO_MODEL_MAX_FILES",
                  bytes_hint="Register only the files the model needs.",
                  files_hint="Register only the files the model needs, or fewer, larger ones.")


class StagedModel:
    """Files waiting to become a version's; a context manager that discards what was not committed."""

    def __init__(self):
        root = Path(settings.DATA_DIR) / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        self.directory: Path | None = Path(tempfile.mkdtemp(prefix="model-", dir=root))
        self.budget = model_budget()
        self.files: list[dict] = []  # {"path", "sha256", "size", "staged"}

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.discard()

    def add(self, path: str, source: BinaryIO) -> None:
        if len(self.files) >= self.budget.max_files:
            self.budget.check_file_count(len(self.files) + 1)
        target = self.directory / f"{len(self.files):06d}"
        with open(target, "xb") as out:
            sha256, size = copy_counting(source, out, self.budget)
        self.files.append({"path": path, "sha256": sha256, "size": size, "staged": target})

    def finish(self, *, strip_single_top_folder: bool = False) -> list[dict]:
        """Check the paths as a whole (duplicates, a path both file and folder) and return the files, sorted."""
        if not self.files:
            raise UploadError("The upload holds no files: add the model's files and upload again.")
        if strip_single_top_folder and all("/" in entry["path"] for entry in self.files) and len(
                {entry["path"].split("/", 1)[0] for entry in self.files}) == 1:
            for entry in self.files:
                entry["path"] = entry["path"].split("/", 1)[1]
        refuse_clashes([entry["path"] for entry in self.files])
        self.files.sort(key=lambda entry: entry["path"])
        return self.files

    def commit(self) -> list[dict]:
        """Move the files into the blob store (hold `blobs.gc_lock(exclusive=False)` until their rows exist)."""
        for entry in self.files:
            blobs.store(entry["staged"], entry["sha256"])
        return [{key: entry[key] for key in ("path", "sha256", "size")} for entry in self.files]

    def discard(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def stage_uploaded_files(uploads: list) -> StagedModel:
    """Several files (each under its cleaned base name), or one archive unpacked."""
    staged = StagedModel()
    try:
        total = sum(upload.size or 0 for upload in uploads)
        staged.budget.check_upload(total)
        if len(uploads) == 1 and is_archive(uploads[0].name or ""):
            _stage_archive_file(staged, uploads[0])
            staged.finish()  # plan_files already stripped a single top folder
        else:
            for upload in uploads:
                name = (upload.name or "").replace("\\", "/").rsplit("/", 1)[-1]
                if not name or name in (".", ".."):
                    raise UploadError(f"Refused the file name {upload.name!r}: rename the file.")
                upload.open()
                upload.seek(0)
                staged.add(clean_path(name), upload)
            staged.finish()
    except BaseException:
        staged.discard()
        raise
    return staged


def _stage_archive_file(staged: StagedModel, upload) -> None:
    upload.open()
    upload.seek(0)
    name = upload.name or "archive"
    if name.lower().endswith(".zip"):
        archive = ZipArchive(upload.file, name, what="model")
        try:
            files = plan_files(archive.members())
            staged.budget.check_file_count(len(files))
            for path, member in files:
                with archive.open(member) as source:
                    staged.add(path, source)
        finally:
            archive.close()
        return
    stream_tar(staged, upload.file, name)


def stream_tar(staged: StagedModel, stream: BinaryIO, name: str) -> None:
    """Stage the members of a tar (plain, gzip, bzip2 or xz) read front to back from `stream`, as it arrives."""
    try:
        archive = tarfile.open(fileobj=stream, mode="r|*", bufsize=STREAM_BUFFER)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UploadError(f"{name!r} is not a valid tar archive ({error}); create it again with tar.") from None
    with archive, reading():
        for info in archive:
            member = tar_member(info, what="model")
            if member.is_dir:
                continue
            path = clean_path(info.name)
            if not path:
                continue
            source = archive.extractfile(info)
            staged.add(path, source)
    staged.finish(strip_single_top_folder=True)
