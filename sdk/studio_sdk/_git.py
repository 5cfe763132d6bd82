"""Git information about a source folder, sent with a run submitted from it (standard library only).

    from studio_sdk import _git
    info = _git.collect("examples/digits")   # None when the folder is not in a git working copy, or git is missing

gives `{"remote_url", "branch", "commit", "dirty", "diff", "diff_truncated", "diff_bytes"}`, the `git` object the
studio's submit route takes:

- `remote_url`: the branch's upstream remote, else `origin`, else the first remote (None when there is none), with
  credentials removed: `https://user:token@host/x` becomes `https://host/x`, `ssh://git:secret@host/x` becomes
  `ssh://git@host/x`;
- `branch` (None on a detached HEAD), `commit` (None before the first commit);
- `dirty`: the working copy has changes, untracked files included (what `git status` would list);
- `diff`: the changes of tracked files against HEAD (`git diff HEAD`), at most MAX_DIFF_BYTES; when cut (at a line
  end), `diff_truncated` is true and `diff_bytes` says how long it was.

Every git command has a timeout; a slow or broken repository gives None (or a diff left out), never an exception.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from urllib.parse import urlsplit, urlunsplit

MAX_DIFF_BYTES = 1024 * 1024
TIMEOUT = 10.0
_SCP_LIKE = re.compile(r"^(?P<user>[^@/:]+):[^@/]*@(?P<rest>[^/]+:.*)$")
# Direction control characters (git allows them in branch names); the studio refuses them in names, so they are sent
# written out as \uXXXX.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def _plain(text: str | None) -> str | None:
    return None if text is None else _BIDI.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def strip_credentials(url: str) -> str:
    """The URL without secrets: http(s) and other schemes lose their whole userinfo (a user name can be a token),
    ssh keeps its user name but not a password; `user:password@host:path` keeps `user@host:path`."""
    url = url.strip()
    if "://" not in url:
        match = _SCP_LIKE.match(url)
        return f"{match['user']}@{match['rest']}" if match else url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme.lower() in ("ssh", "git+ssh", "ssh+git"):
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    else:
        netloc = hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _environment() -> dict:
    env = dict(os.environ)
    # Never prompt, never take the index lock (`git status` would refresh it), messages in English.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C", GIT_PAGER="cat")
    return env


def _git(folder: str, *args: str, env: dict) -> str | None:
    """The command's stdout (stripped), or None when it failed or took too long."""
    try:
        done = subprocess.run(["git", "-C", folder, *args], capture_output=True, timeout=TIMEOUT, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", errors="replace").strip()


def _diff(folder: str, env: dict) -> tuple[str, bool, int] | None:
    """(diff, truncated, total bytes) of tracked changes against HEAD, reading at most MAX_DIFF_BYTES into memory."""
    command = ["git", "-C", folder, "-c", "core.quotepath=off", "diff", "HEAD", "--no-color", "--no-ext-diff",
               "--no-textconv"]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL, env=env)
    except OSError:
        return None
    kept = bytearray()
    total = 0
    timer = threading.Timer(TIMEOUT, process.kill)  # a diff that takes too long is left out
    timer.daemon = True
    timer.start()
    try:
        while True:
            chunk = process.stdout.read(65536)
            if not chunk:
                break
            total += len(chunk)
            if len(kept) <= MAX_DIFF_BYTES:
                kept += chunk[: MAX_DIFF_BYTES + 1 - len(kept)]
        if process.wait() != 0:
            return None
    except OSError:
        process.kill()
        process.wait()
        return None
    finally:
        timer.cancel()
        process.stdout.close()
    truncated = total > MAX_DIFF_BYTES
    if truncated:
        cut = kept.rfind(b"\n", 0, MAX_DIFF_BYTES)
        kept = kept[: cut + 1 if cut >= 0 else MAX_DIFF_BYTES]
    # Text for JSON: invalid UTF-8 replaced, NUL (never in a text diff, but possible in a file git took for text) too.
    text = kept.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    while len(text.encode("utf-8")) > MAX_DIFF_BYTES:  # replacement characters can make it longer
        text = text[: len(text) - 1024]
        truncated = True
    return text, truncated, total


def _remote(folder: str, branch: str | None, env: dict) -> str | None:
    names = (_git(folder, "remote", env=env) or "").split()
    if not names:
        return None
    upstream = _git(folder, "config", "--get", f"branch.{branch}.remote", env=env) if branch else None
    name = upstream if upstream in names else "origin" if "origin" in names else names[0]
    url = _git(folder, "remote", "get-url", name, env=env)
    return _plain(strip_credentials(url)) if url else None


def collect(folder) -> dict | None:
    """Git information about `folder` (see the module's docstring), or None when it is not inside a git working
    copy, git is not installed, or git does not answer in time."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None
    env = _environment()
    if _git(folder, "rev-parse", "--is-inside-work-tree", env=env) != "true":
        return None
    commit = _git(folder, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", env=env) or None
    branch = _git(folder, "symbolic-ref", "--quiet", "--short", "HEAD", env=env) or None
    status = _git(folder, "status", "--porcelain", env=env)
    if status is None:
        return None
    diff, truncated, total = ("", False, 0)
    if commit is not None and status:
        found = _diff(folder, env)
        if found is not None:
            diff, truncated, total = found
    return {
        "remote_url": _remote(folder, branch, env),
        "branch": _plain(branch),
        "commit": commit,
        "dirty": bool(status),
        "diff": diff,
        "diff_truncated": truncated,
        "diff_bytes": total,
    }
