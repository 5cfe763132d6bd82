"""Where a run's files live: DATA_DIR/runs/<id>/ holds logs/ and outputs/; DATA_DIR/work/<id>/ is scratch.

`OutputCollector` stores what a run leaves in ./outputs and ./logs (handed over by its compute driver) within two
limits: STUDIO_OUTPUT_FILE_MAX_BYTES per file and STUDIO_OUTPUTS_MAX_BYTES for the run in all. A file left out, or
one that could not be written whole (a full disk), is never offered as if complete: it is removed and named in the
note the run's reason carries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError

from runs.compute.base import COLLECTED_DIRS
from runs.models import RunOutput
from runs.snapshots import SnapshotError, clean_path
from studio import blobs
from studio.downloads import ZipMember
from studio.text import visible

logger = logging.getLogger(__name__)
CONSOLE_LOG = "logs/std_log.txt"
COPY_CHUNK = 1024 * 1024
NOTE_ITEMS = 10


def run_dir(run_id: int) -> Path:
    return Path(settings.DATA_DIR) / "runs" / str(int(run_id))


def work_dir(run_id: int) -> Path:
    return Path(settings.STUDIO_WORK_DIR) / str(int(run_id))


def make_work_dir(run_id: int) -> Path:
    """A fresh, empty working folder for the run. Its parent lets the users local runs execute as reach their own
    folder (0711: no listing), whatever the studio's private umask made of it."""
    folder = work_dir(run_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.parent.chmod(0o711)
    folder.mkdir(mode=0o700)
    return folder


def console_log_path(run_id: int) -> Path:
    return run_dir(run_id) / CONSOLE_LOG


def resolve_stored_file(run_id: int, relative: str) -> Path | None:
    """The stored file at `relative` inside the run's own storage, or None.

    Whatever the requested path (absolute, `..`, symlinks), the answer never leaves the run's directory.
    """
    root = run_dir(run_id).resolve()
    if not relative or "\x00" in relative:
        return None
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        return None
    if not candidate.is_file():
        return None
    top = candidate.relative_to(root).parts[0]
    return candidate if top in COLLECTED_DIRS else None


def list_stored_files(run_id: int) -> list[dict]:
    """Every stored file, as {"path", "size"}: the outputs, then the logs, each sorted by path."""
    root = run_dir(run_id)
    files = []
    for top in COLLECTED_DIRS:
        base = root / top
        if base.is_symlink() or not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    files.append({"path": path.relative_to(root).as_posix(), "size": path.stat().st_size})
    return files


def zip_members(run_id: int) -> list[ZipMember]:
    root = run_dir(run_id)
    return [ZipMember(item["path"], root / item["path"]) for item in list_stored_files(run_id)]


def _size_text(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


SDK_UNDELIVERED = "studio_sdk: undelivered: "
SDK_NOTE_SCAN_BYTES = 256 * 1024


def sdk_delivery_note(log: Path, stderr_tail: list[str]) -> str:
    """What the run's SDK said it could not deliver (it prints one line at exit, see studio_sdk._sender), as a note
    for the run's reason; "" when it delivered everything. The console log's end is read, else the stderr tail the
    keeper kept (when the log itself could not be written)."""
    lines: list[str] = []
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - SDK_NOTE_SCAN_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        pass
    for line in reversed([*lines, *stderr_tail]):
        if line.startswith(SDK_UNDELIVERED):
            return f"Not everything the script logged reached the studio: {line.removeprefix(SDK_UNDELIVERED)}"[:2000]
    return ""


class OutputCollector:
    """Stores a run's output files under its storage, bounded per file and in total; remembers what it left out."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.root = run_dir(run_id)
        self.file_limit = settings.STUDIO_OUTPUT_FILE_MAX_BYTES
        self.budget = settings.STUDIO_OUTPUTS_MAX_BYTES
        self.stored = 0
        self.skipped: list[str] = []
        self.index: list[RunOutput] = []
        self._known: dict[str, str] | None = None

    @property
    def known(self) -> dict[str, str]:
        """What the script uploaded through the SDK while it ran (read when collecting starts, after the script):
        the same file found in ./outputs is not kept twice."""
        if self._known is None:
            self._known = dict(RunOutput.objects.filter(run_id=self.run_id).values_list("path", "sha256"))
        return self._known

    def commit(self) -> None:
        """Record the stored files with their content hashes (what model registration reads)."""
        RunOutput.objects.bulk_create(self.index, batch_size=1000, ignore_conflicts=True)
        self.index = []

    def skip(self, relative: str, why: str) -> None:
        self.skipped.append(f"{relative} ({why})")

    def add(self, relative: str, source: BinaryIO, size: int) -> None:
        """Copy `size` bytes of `source` to `relative` (under outputs/ or logs/), or leave it out saying why."""
        try:
            clean_path(relative)
        except SnapshotError as error:
            return self.skip(visible(relative[:200]), str(error).split(": ", 1)[-1].rstrip("."))
        if size > self.file_limit:
            return self.skip(relative, f"{_size_text(size)}, over STUDIO_OUTPUT_FILE_MAX_BYTES")
        if size > self.budget:
            return self.skip(relative, f"{_size_text(size)}, over what is left of STUDIO_OUTPUTS_MAX_BYTES")
        target = self.root / relative
        digest = hashlib.sha256()
        staged = target.parent / f".{target.name}.collecting"  # beside it: the same file system as the target
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(staged, "wb") as out:
                while written <= size and (chunk := source.read(min(COPY_CHUNK, size - written + 1))):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
        except OSError as error:
            staged.unlink(missing_ok=True)
            return self.skip(relative, f"could not be stored: {error.strerror or error}")
        if written != size:  # it changed while being copied: what was stored is not that file
            staged.unlink(missing_ok=True)
            return self.skip(relative, "it changed size while being stored")
        sha256 = digest.hexdigest()
        if target.exists():
            if self.known.get(relative) == sha256:  # the script uploaded this very file already
                staged.unlink()
                return None
            # never overwrite what the studio captured (the console log, a different upload)
            relative = f"{Path(relative).with_name(f'{target.stem}.user{target.suffix}').as_posix()}"
            target = self.root / relative
        try:
            os.replace(staged, target)
        except OSError as error:
            staged.unlink(missing_ok=True)
            return self.skip(relative, f"could not be stored: {error.strerror or error}")
        try:
            blobs.link(target, sha256)
        except OSError:  # the blob store is full or elsewhere: registering it later links (or copies) it then
            logger.warning("Output %s of run %s not linked into the blob store", relative, self.run_id, exc_info=True)
        self.budget -= size
        self.stored += 1
        self.index.append(RunOutput(run_id=self.run_id, path=relative, size=size, sha256=sha256))

    def note(self) -> str:
        """For the run's reason: what was left out, or ""."""
        if not self.skipped:
            return ""
        more = f" and {len(self.skipped) - NOTE_ITEMS} more" if len(self.skipped) > NOTE_ITEMS else ""
        return "Not stored: " + ", ".join(self.skipped[:NOTE_ITEMS]) + more + "."


# Files a script uploads through the SDK ------------------------------------------------------------------------------

IMAGE_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


def output_path(name: str) -> str:
    """A script's name for an uploaded output, normalised; ValidationError (a 400) when it could leave outputs/ or
    says anything a file system or a person would read differently."""
    text = name.strip()
    if not text or "\\" in text or text.startswith("/"):
        raise ValidationError("The file name must be a relative path such as 'model.pkl' or 'plots/roc.png'.")
    try:
        relative = clean_path(text)
    except SnapshotError as error:
        raise ValidationError(str(error).replace("archive member", "file")) from None
    if not relative:
        raise ValidationError("The file name must be a relative path such as 'model.pkl' or 'plots/roc.png'.")
    return relative


def store_upload(run_id: int, relative: str, upload) -> None:
    """Write an uploaded file to outputs/<relative>; a write that fails leaves no partial file behind."""
    root = (run_dir(run_id) / "outputs").resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValidationError("The file name must stay inside the run's outputs.")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    digest, size = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        os.replace(partial, target)  # a name replaced: the blob of the old content keeps its bytes
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    blobs.link(target, digest.hexdigest())
    RunOutput.objects.update_or_create(run_id=run_id, path=f"outputs/{relative}",
                                       defaults={"size": size, "sha256": digest.hexdigest()})


def image_format(upload) -> str | None:
    """PNG and JPEG by their magic bytes; SVG when the text starts with markup and holds an <svg> element."""
    head = upload.read(8192)
    upload.seek(0)
    for fmt, magic in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return fmt
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<") and b"<svg" in text and b"\x00" not in text:
        return "svg"
    return None
