"""Where a run's files live: DATA_DIR/runs/<id>/ holds logs/ and outputs/; DATA_DIR/work/<id>/ is scratch."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

CONSOLE_LOG = "logs/std_log.txt"
COLLECTED_DIRS = ("outputs", "logs")


def run_dir(run_id: int) -> Path:
    return Path(settings.DATA_DIR) / "runs" / str(int(run_id))


def work_dir(run_id: int) -> Path:
    return Path(settings.STUDIO_WORK_DIR) / str(int(run_id))


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
    """Every stored file (logs and outputs), as {"path", "size"} sorted by path."""
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
