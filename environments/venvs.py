"""Managed environments on local compute: a virtualenv per definition hash, made once and reused.

`uv` (shipped as a Python package) makes it when available, else `venv` + pip. Only the Python packages apply
here: a base image, Dockerfile steps and conda packages need a Docker target.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from environments.models import Environment

MARKER = ".studio-complete"


class VenvError(Exception):
    pass


def venv_dir(definition_hash: str, base_python: str = "") -> Path:
    """Where the virtualenv of a definition, made from `base_python`, lives: one per definition and interpreter (a
    virtualenv made from another interpreter may not run as the users runs execute as)."""
    name = definition_hash
    if base_python:
        name += "-" + hashlib.sha256(os.path.realpath(base_python).encode()).hexdigest()[:10]
    return Path(settings.DATA_DIR) / "venvs" / name


def _uv() -> str | None:
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _install_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "DATABASE_URL", "DJANGO_"))}
    if settings.STUDIO_BUILD_CA_BUNDLE:
        env.update({"SSL_CERT_FILE": settings.STUDIO_BUILD_CA_BUNDLE, "PIP_CERT": settings.STUDIO_BUILD_CA_BUNDLE})
    if settings.STUDIO_BUILD_PIP_INDEX_URL:
        env.update({"PIP_INDEX_URL": settings.STUDIO_BUILD_PIP_INDEX_URL, "UV_INDEX_URL": settings.STUDIO_BUILD_PIP_INDEX_URL})
    if settings.STUDIO_BUILD_PIP_EXTRA_INDEX_URL:
        env.update({"PIP_EXTRA_INDEX_URL": settings.STUDIO_BUILD_PIP_EXTRA_INDEX_URL,
                    "UV_EXTRA_INDEX_URL": settings.STUDIO_BUILD_PIP_EXTRA_INDEX_URL})
    return env


def _run(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=_install_env(), timeout=settings.STUDIO_BUILD_TIMEOUT_SECONDS)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise VenvError(f"{what} failed:\n{tail}")
    return result.stdout + result.stderr


def _readable_by_all(root: Path) -> None:
    """The studio works with a private umask; a virtualenv must be readable (and its folders and programs usable) by
    the users runs execute as."""
    for folder in (root.parent, root):
        folder.chmod(folder.stat().st_mode | 0o755 if folder == root else folder.stat().st_mode | 0o711)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.stat().st_mode & 0o100 else 0))


def ensure_venv(environment: Environment, base_python: str = sys.executable) -> str:
    """The interpreter of the environment's virtualenv (based on `base_python`), made now if this is the first run
    that needs it. Its files are readable by everyone: runs execute it as users of their own."""
    definition = environment.definition()
    if definition.conda.dependencies:
        raise VenvError("conda packages need a Docker compute target; on local compute only pip packages install.")
    target = venv_dir(environment.definition_hash, base_python)
    python = target / "bin" / "python"
    if (target / MARKER).exists():
        return str(python)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker per hash; the others wait and then reuse it
        if (target / MARKER).exists():
            return str(python)
        shutil.rmtree(target, ignore_errors=True)  # a half-made one from an interrupted attempt
        uv = _uv()
        packages = definition.all_pip_packages
        if uv:
            _run([uv, "venv", "--quiet", "--python", base_python, str(target)], "Creating the virtualenv")
            if packages:
                _run([uv, "pip", "install", "--python", str(python), *packages], "Installing the packages")
            frozen = _run([uv, "pip", "freeze", "--python", str(python)], "Listing the packages")
        else:
            _run([base_python, "-m", "venv", str(target)], "Creating the virtualenv")
            if packages:
                _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *packages], "Installing the packages")
            frozen = _run([str(python), "-m", "pip", "freeze"], "Listing the packages")
        (target / "frozen.txt").write_text(frozen)
        _readable_by_all(target)
        (target / MARKER).write_text(environment.definition_hash)
    return str(python)
