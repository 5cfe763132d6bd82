"""Git information a client sends with a run whose source is a git working copy (the SDK's `studio_sdk._git` collects
it): the remote, branch, commit, whether the working copy had changes, and those changes as a diff.

Everything is checked here, whatever the client did: a remote URL loses any credentials it carries
(`https://user:token@host/x` is stored as `https://host/x`, `ssh://git:secret@host/x` as `ssh://git@host/x`); the
remote, branch and commit refuse control and direction control characters; the diff is bounded (MAX_DIFF_BYTES; a
client cuts a longer one and says so with `diff_truncated` and `diff_bytes`) and refuses NUL. A diff is the user's
code, which may hold direction controls on purpose (or in an attack on reviewers): it is stored as it is, and the run
page writes them out as `\u202e` (`diff_lines`) so the change reads as it really is.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import orjson

from runs.models import Run, RunGitInfo
from studio.text import bidi_problem, visible

MAX_DIFF_BYTES = 1024 * 1024
MAX_URL_CHARS = 2048
MAX_BRANCH_CHARS = 255
COMMIT = re.compile(r"[0-9a-f]{4,64}")
FIELDS = ("remote_url", "branch", "commit", "dirty", "diff", "diff_truncated", "diff_bytes")
# `user:password@host:path` (scp-like syntax, where git itself would never send the password anywhere sensible).
SCP_LIKE = re.compile(r"^(?P<user>[^@/:]+):[^@/]*@(?P<rest>[^/]+:.*)$")


class GitInfoError(ValueError):
    """Git information that cannot be stored; the message says what to change."""


def strip_credentials(url: str) -> str:
    """The URL without secrets: http(s) and other schemes lose their whole userinfo (a user name can be a token),
    ssh keeps its user name but not a password; `user:password@host:path` keeps `user@host:path`."""
    url = url.strip()
    match = SCP_LIKE.match(url)
    if match and "://" not in url:
        return f"{match['user']}@{match['rest']}"
    if "://" not in url:
        return url
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


def _text(data: dict, key: str, limit: int) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GitInfoError(f"git.{key} must be text or null, not {type(value).__name__}.")
    if len(value) > limit:
        raise GitInfoError(f"git.{key} is at most {limit:,} characters.")
    if "\x00" in value or any(ord(c) < 32 for c in value):
        raise GitInfoError(f"git.{key} cannot hold control characters.")
    problem = bidi_problem(value, f"git.{key}")
    if problem:
        raise GitInfoError(problem)
    return value


def _flag(data: dict, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise GitInfoError(f"git.{key} must be true or false.")
    return value


def check(data) -> dict:
    """The git object as the run stores it (see RunGitInfo), or GitInfoError. Unknown keys are ignored, so a newer
    client can send more."""
    if not isinstance(data, dict):
        raise GitInfoError("git must be an object: {\"remote_url\", \"branch\", \"commit\", \"dirty\", \"diff\"}.")
    commit = _text(data, "commit", 64).lower()
    if commit and not COMMIT.fullmatch(commit):
        raise GitInfoError("git.commit must be a commit id: 4 to 64 hexadecimal digits.")
    diff = data.get("diff") or ""
    if not isinstance(diff, str):
        raise GitInfoError("git.diff must be text or null.")
    if "\x00" in diff:
        raise GitInfoError("git.diff cannot hold NUL characters (binary changes are left out of a text diff).")
    size = len(diff.encode("utf-8", errors="replace"))
    if size > MAX_DIFF_BYTES:
        raise GitInfoError(f"git.diff is at most {MAX_DIFF_BYTES:,} bytes ({size:,} given): cut it and set "
                           "diff_truncated.")
    diff_bytes = data.get("diff_bytes", size)
    if diff_bytes is None:
        diff_bytes = size
    if isinstance(diff_bytes, bool) or not isinstance(diff_bytes, int) or not 0 <= diff_bytes < 2**62:
        raise GitInfoError("git.diff_bytes must be a whole number of bytes.")
    return {
        "remote_url": strip_credentials(_text(data, "remote_url", MAX_URL_CHARS)),
        "branch": _text(data, "branch", MAX_BRANCH_CHARS),
        "commit": commit,
        "dirty": _flag(data, "dirty"),
        "diff": diff,
        "diff_truncated": _flag(data, "diff_truncated"),
        "diff_bytes": max(diff_bytes, size),
    }


def parse(text: str) -> dict | None:
    """The `git` field of a submission (JSON text; empty: none), checked."""
    if not text or not text.strip():
        return None
    try:
        data = orjson.loads(text)  # refuses lone surrogates, which no database would store
    except orjson.JSONDecodeError as error:
        raise GitInfoError(f"git is not valid JSON ({error}).") from None
    if data is None:
        return None
    return check(data)


def store(run: Run, info: dict) -> RunGitInfo:
    """Record checked git information (from `check`) with the run."""
    return RunGitInfo.objects.create(run=run, **{key: info[key] for key in FIELDS})


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(kind, line) for the run page: kind is head, hunk, add, del or ctx. Direction control characters are written
    out (`\\u202e`), so the page shows the change as it is, not as those characters would reorder it."""
    found = []
    for line in visible(diff).splitlines():
        if line.startswith(("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file", "similarity", "rename ")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        found.append((kind, line))
    return found
