"""Send a folder as a snapshot, sending only the files the studio does not hold yet (standard library only).

    from studio_sdk._snapshot import Http, upload_folder

    http = Http("http://127.0.0.1:8000", token)            # a personal API token
    snapshot_id, stats = upload_folder(http, "default", "path/to/project")
    # then submit the run with snapshot_id (POST /api/v1/workspaces/<ws>/runs, field `snapshot_id`)

What happens, and what the studio does on its side (runs/snapshot_sync.py):

1. Walk the folder. The root `.amlignore` (or else the root `.gitignore`) leaves files out exactly as the studio does
   (`_gitignore.py`); the ignore file itself is kept. Names are checked as the studio checks archive members (no
   backslashes, no direction control characters, valid UTF-8, names up to 255 bytes, paths up to 1,024); links, devices
   and other special files that are not left out are refused. The file and byte limits come from the studio
   (STUDIO_SNAPSHOT_MAX_FILES / _BYTES) and are checked before anything is hashed.
2. Hash every file (sha256, a few threads). A cache remembers the hashes of files whose size, times and inode have not
   changed (`hash_cache`), so a resubmission hashes only what changed.
3. Ask the studio which contents it needs (`POST .../snapshots/missing`): it counts a file as held only when this
   workspace holds it, so the answer says nothing about other workspaces.
4. Send those, a few requests at a time: files up to 1 MB whole, packed several to a request (`POST .../blobs`,
   multipart); larger ones in ranges (`PUT .../blobs/<sha256>` with `Content-Range`, 8 MB each at most). A range that
   fails is resumed from what the studio holds (it answers with its offset); an upload interrupted by anything (a
   crash, Ctrl-C) continues on the next call, since the answer to step 3 gives the bytes held of each partial upload.
5. Create the snapshot from the manifest (`POST .../snapshots`).

Errors are `SnapshotError` with a message saying what to do (and `status`, the HTTP status when the studio refused).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import socket
import stat
import tempfile
import threading
import time
import uuid
from urllib.parse import quote, urlsplit

from studio_sdk import _http
from studio_sdk._gitignore import IgnoreError, IgnoreRules

IGNORE_FILES = (".amlignore", ".gitignore")
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
CHUNK_BYTES = 8 * 1024 * 1024  # one request's bytes (lowered to the studio's STUDIO_REQUEST_MAX_BYTES)
SMALL_BYTES = 1024 * 1024  # files up to this size go whole, several to a request
BATCH_FILES = 100  # files a request carries at most (Django's DATA_UPLOAD_MAX_NUMBER_FILES, as the studio says)
PART_OVERHEAD = 256  # multipart framing of one file
BATCH_OVERHEAD = 4096
READ_BYTES = 1024 * 1024
THREADS = 4
RACY_NS = 2_000_000_000  # a file changed this close to hashing is hashed again next time (coarse file times)
CACHE_ENV = "STUDIO_SDK_CACHE_DIR"
# U+202A-U+202E, U+2066-U+2069, U+200E/F, U+061C: as the studio refuses them (studio/text.py).
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


class SnapshotError(Exception):
    """The folder cannot be sent as a snapshot, or the studio refused it; `status` is the HTTP status (0: none)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Stats:
    """What `upload_folder` did."""

    files: int = 0  # files in the snapshot
    bytes: int = 0  # their bytes
    ignored: int = 0  # files the ignore file left out
    ignore_file: str = ""
    hashed_files: int = 0  # files hashed this time (the others came from the cache)
    hashed_bytes: int = 0
    files_sent: int = 0  # files whose bytes went to the studio
    bytes_sent: int = 0  # file bytes sent, retries included
    request_bytes: int = 0  # other bytes sent: the manifest (twice: what is missing, the snapshot), multipart framing
    uploaded_files: int = 0  # as the studio counted them: files whose bytes it received for this snapshot
    uploaded_bytes: int = 0
    seconds: float = 0.0
    timings: dict = dataclasses.field(default_factory=dict)  # seconds by step: scan, limits, hash, missing, send, create

    @property
    def total_sent(self) -> int:
        return self.bytes_sent + self.request_bytes


class _Clock:
    def __init__(self, stats: Stats):
        self.stats = stats
        self.last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.stats.timings[step] = self.stats.timings.get(step, 0.0) + now - self.last
        self.last = now


# Talking to the studio -------------------------------------------------------------------------------------------------


class Http:
    """Requests to the studio's REST API (`<url>/api/v1/...`) with a personal token, over one kept-alive connection per
    thread. `request` makes one attempt; `call` retries network errors, 5xx and 429 (`_http.with_retries`)."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0, give_up: float | None = None):
        parts = urlsplit((url or "").strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SnapshotError(f"{url!r} is not the studio's address: give an http(s) URL such as http://127.0.0.1:8000.")
        if not token:
            raise SnapshotError("No API token: make one on the studio's API tokens page.")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/") + "/api/v1"
        self._token = token
        self.timeout = timeout
        self.give_up = _http.give_up_seconds() if give_up is None else give_up
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, *, payload=None, body: bytes | None = None,
                headers: dict | None = None) -> _http.Response:
        """One attempt; `path` is under /api/v1. Network errors raise (OSError, http.client.HTTPException); a kept-alive
        connection the server closed meanwhile is reopened once."""
        sent = dict(headers or {})
        if payload is not None:
            body = json.dumps(payload).encode()
            sent["Content-Type"] = "application/json"
        sent.setdefault("Authorization", f"Bearer {self._token}")
        sent.setdefault("Accept", "application/json")
        sent.setdefault("User-Agent", _http.USER_AGENT)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.connect()
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.request(method, self._prefix + path, body=body, headers=sent)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            if response.will_close:
                self.close()
            return _http.Response(response.status, data, _http._retry_after(response.getheader("Retry-After")))
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, *, payload=None, body: bytes | None = None,
             headers: dict | None = None) -> _http.Response:
        """The studio's final answer (2xx or 4xx), retrying the rest; SnapshotError when it cannot be reached."""
        try:
            return _http.with_retries(lambda: self.request(method, path, payload=payload, body=body, headers=headers),
                                      self.give_up)
        except _http.Unavailable as error:
            raise SnapshotError(f"The studio at {self.url} did not answer: {error}") from None

    def json(self, method: str, path: str, payload=None):
        """The JSON answer of a call; SnapshotError with the studio's message for a refusal."""
        response = self.call(method, path, payload=payload)
        if not response.ok:
            raise SnapshotError(response.message(), response.status)
        return response.json()


# The folder ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LocalFile:
    path: str  # relative, '/' between names
    full: str
    size: int
    key: tuple  # (size, mtime_ns, ctime_ns, inode): the file is unchanged while this is
    sha256: str = ""


@dataclasses.dataclass
class Folder:
    root: str
    files: list
    ignore_file: str
    ignored: int

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.files)

    def manifest(self) -> list[dict]:
        return [{"path": item.path, "sha256": item.sha256, "size": item.size}
                for item in sorted(self.files, key=lambda item: item.path)]


def _key(info: os.stat_result) -> tuple:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def check_path(path: str) -> None:
    """Refuse a name the studio would refuse (`runs/snapshots.clean_path`), saying how to fix it."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise SnapshotError(f"Refused {path!r}: the name is not valid UTF-8; rename the file.") from None
    if "\\" in path:
        raise SnapshotError(f"Refused {path!r}: names may not contain backslashes; rename the file.")
    found = BIDI_CONTROLS.search(path)
    if found is not None:
        shown = BIDI_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", path)
        raise SnapshotError(
            f"Refused: the name {shown!r} contains the invisible direction control character "
            f"U+{ord(found.group()):04X} at position {found.start() + 1}; it can make text display differently from "
            "what it is. Rename the file, or list it in .amlignore."
        )
    for part in path.split("/"):
        if len(part.encode()) > MAX_NAME_BYTES:
            raise SnapshotError(f"Refused {path[:80]!r}…: a file or folder name is at most {MAX_NAME_BYTES} bytes; "
                                f"shorten {part[:40]!r}….")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise SnapshotError(f"Refused {path[:80]!r}…: paths are at most {MAX_PATH_BYTES:,} bytes long.")


def read_ignore_rules(root: str) -> tuple[str, IgnoreRules]:
    """The root ignore file that applies (`.amlignore` wins over `.gitignore`; "" when neither) and its rules."""
    for name in IGNORE_FILES:
        full = os.path.join(root, name)
        try:
            regular = stat.S_ISREG(os.lstat(full).st_mode)
        except OSError:
            regular = False
        if regular:  # as the studio reads an archive: a folder (or a link, refused anyway) is no ignore file
            try:
                with open(full, "rb") as handle:
                    content = handle.read()
            except OSError as error:
                raise SnapshotError(f"Could not read {name}: {error}.") from None
            try:
                return name, IgnoreRules.parse(content, name)
            except IgnoreError as error:
                raise SnapshotError(str(error)) from None
    return "", IgnoreRules([])


def scan(folder) -> Folder:
    """The files of `folder` the studio would keep, with sizes (not hashed yet); what the ignore file left out."""
    root = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(root):
        raise SnapshotError(f"{os.fspath(folder)!r} is not a folder: give the folder that holds the source.")
    ignore_file, rules = read_ignore_rules(root)
    files, ignored = [], 0
    pending = [("", root)]
    while pending:
        prefix, directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
        except OSError as error:
            raise SnapshotError(f"Could not read the folder {prefix or '.'!r}: {error}.") from None
        for entry in listed:
            path = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if rules.ignores_folder(path):
                    ignored += _count_files(entry.path)
                else:
                    pending.append((path + "/", entry.path))
                continue
            if path != ignore_file and rules.ignores(path):
                ignored += 1
                continue
            check_path(path)
            if entry.is_symlink():
                raise SnapshotError(f"Refused {path!r}: a symbolic link is not allowed in a snapshot; put the file itself "
                                    "in the folder, or list the link in .amlignore.")
            if not entry.is_file(follow_symlinks=False):
                raise SnapshotError(f"Refused {path!r}: devices, FIFOs and other special files are not allowed in a "
                                    "snapshot; list it in .amlignore.")
            info = entry.stat(follow_symlinks=False)
            files.append(LocalFile(path, entry.path, info.st_size, _key(info)))
    if not files:
        after = f" after applying {ignore_file}" if ignore_file else ""
        raise SnapshotError(f"The folder holds no files{after}; add your source files and try again.")
    return Folder(root, files, ignore_file, ignored)


def _count_files(directory: str) -> int:
    count = 0
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            count += _count_files(entry.path) if entry.is_dir(follow_symlinks=False) else 1
    return count


def check_limits(folder: Folder, max_files: int, max_bytes: int) -> None:
    if len(folder.files) > max_files:
        raise SnapshotError(f"The folder holds {len(folder.files):,} files; the studio takes at most {max_files:,} "
                            "(STUDIO_SNAPSHOT_MAX_FILES). List folders you do not need in .amlignore.")
    total = folder.total_bytes
    if total > max_bytes:
        raise SnapshotError(f"The folder holds {_size_text(total)}; the studio takes at most {_size_text(max_bytes)} "
                            "(STUDIO_SNAPSHOT_MAX_BYTES). Leave data and build outputs out of the source, or list them "
                            "in .amlignore.")


def _size_text(count: int) -> str:
    return f"{count:,} bytes" if count < 1024 * 1024 else f"{count / (1024 * 1024):,.1f} MB"


# Hashing, with a cache -------------------------------------------------------------------------------------------------


class HashCache:
    """sha256s of a folder's files by path, trusted while (size, mtime, ctime, inode) are unchanged. A file changed
    within RACY_NS of the hashing is not remembered (file times are coarse: a quick second change could keep them)."""

    def __init__(self, file: str | None):
        self.file = file
        self.entries: dict[str, list] = {}
        if file:
            with contextlib.suppress(OSError, ValueError, TypeError):
                with open(file, encoding="utf-8") as handle:
                    data = json.load(handle)
                if data.get("version") == 1 and isinstance(data.get("entries"), dict):
                    self.entries = data["entries"]

    @classmethod
    def for_folder(cls, root: str, setting) -> HashCache:
        """`setting`: True for the default place (STUDIO_SDK_CACHE_DIR, else $XDG_CACHE_HOME/studio-sdk, else
        ~/.cache/studio-sdk), False for none, or a file path."""
        if setting is False or setting is None:
            return cls(None)
        if setting is not True:
            return cls(os.fspath(setting))
        base = os.environ.get(CACHE_ENV) or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "studio-sdk")
        name = hashlib.sha256(os.path.realpath(root).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return cls(os.path.join(base, f"snapshot-hashes-{name}.json"))

    def get(self, item: LocalFile) -> str:
        entry = self.entries.get(item.path)
        if isinstance(entry, list) and len(entry) == 5 and tuple(entry[:4]) == item.key:
            return entry[4]
        return ""

    def save(self, files: list, started_ns: int) -> None:
        if not self.file:
            return
        settled = started_ns - RACY_NS
        entries = {item.path: [*item.key, item.sha256] for item in files if item.key[1] < settled}
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(self.file), exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".hashes-", dir=os.path.dirname(self.file))
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": 1, "entries": entries}, handle)
            os.replace(temporary, self.file)


def hash_files(folder: Folder, cache: HashCache, threads: int, stats: Stats) -> None:
    """Give every file its sha256 (from the cache when unchanged); SnapshotError when a file changes meanwhile."""
    started = time.time_ns()
    todo = []
    for item in folder.files:
        item.sha256 = cache.get(item)
        if not item.sha256:
            todo.append(item)
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
            digests = list(pool.map(_hash_one, todo))
        for index, item in enumerate(todo):
            item.sha256 = digests[index]
    stats.hashed_files = len(todo)
    stats.hashed_bytes = sum(item.size for item in todo)
    cache.save(folder.files, started)


def _hash_one(item: LocalFile) -> str:
    digest = hashlib.sha256()
    try:
        with open(item.full, "rb") as handle:
            while chunk := handle.read(READ_BYTES):
                digest.update(chunk)
        unchanged = _key(os.stat(item.full, follow_symlinks=False)) == item.key
    except OSError as error:
        raise SnapshotError(f"Could not read {item.path!r}: {error}.") from None
    if not unchanged:
        raise SnapshotError(f"{item.path!r} changed while it was being read; try again once it is written.")
    return digest.hexdigest()


# Sending ---------------------------------------------------------------------------------------------------------------


class _Sender:
    """Sends blobs: small ones whole, several to a request (`send_batch`); the others in ranges, resuming each from
    what the studio holds (`send`)."""

    def __init__(self, http: Http, workspace: str, limits: dict, stats: Stats):
        self.http = http
        self.base = f"/workspaces/{quote(workspace, safe='')}/blobs/"
        self.chunk = max(1024, min(CHUNK_BYTES, int(limits["max_request_bytes"]) - BATCH_OVERHEAD))
        self.small = min(SMALL_BYTES, self.chunk // 4)
        self.max_parts = max(1, min(BATCH_FILES, int(limits.get("max_request_files") or BATCH_FILES)))
        self.stats = stats
        self._lock = threading.Lock()

    def batches(self, items: list) -> list:
        """Small files grouped so that each request stays within one range's bytes and the studio's file count."""
        groups, group, size = [], [], 0
        for item in sorted(items, key=lambda item: item.path):
            if group and (size + item.size + PART_OVERHEAD > self.chunk or len(group) >= self.max_parts):
                groups.append(group)
                group, size = [], 0
            group.append(item)
            size += item.size + PART_OVERHEAD
        return [*groups, group] if group else groups

    def send_batch(self, items: list) -> None:
        parts = []
        for item in items:
            try:
                with open(item.full, "rb") as handle:
                    content = handle.read()
                unchanged = _key(os.stat(item.full, follow_symlinks=False)) == item.key
            except OSError as error:
                raise SnapshotError(f"Could not read {item.path!r}: {error}.") from None
            if not unchanged:
                raise SnapshotError(f"{item.path!r} changed after it was hashed; try again once it is written.")
            parts.append((item.sha256, content))
        body, content_type = _multipart(parts)
        response = self.http.call("POST", self.base.rstrip("/"), body=body, headers={"Content-Type": content_type})
        with self._lock:
            self.stats.bytes_sent += sum(item.size for item in items)
            self.stats.request_bytes += len(body) - sum(item.size for item in items)
        if not response.ok:
            message = response.message()
            if response.status == 400 and "sha256" in message:
                message = f"Files changed while they were sent; try again once they are written. The studio said: " \
                          f"{message}"
            raise SnapshotError(message, response.status)
        with self._lock:
            self.stats.files_sent += len(items)

    def send(self, item: LocalFile, offset: int) -> None:
        try:
            unchanged = _key(os.stat(item.full, follow_symlinks=False)) == item.key
        except OSError:
            unchanged = False
        if not unchanged:
            raise SnapshotError(f"{item.path!r} changed after it was hashed; try again once it is written.")
        path = self.base + item.sha256
        if item.size == 0:
            self._put(item, path, b"", "bytes */0")
            self._count(item, 0, done=True)
            return
        deadline = time.monotonic() + self.http.give_up
        delay = _http.FIRST_DELAY
        with open(item.full, "rb") as handle:
            while True:
                handle.seek(offset)
                data = handle.read(min(self.chunk, item.size - offset))
                content_range = f"bytes {offset}-{offset + len(data) - 1}/{item.size}"
                try:
                    response = self.http.request("PUT", path, body=data, headers={
                        "Content-Type": "application/octet-stream", "Content-Range": content_range})
                except (OSError, http.client.HTTPException) as error:
                    response, problem = None, f"{type(error).__name__}: {error}"
                self._count(item, len(data))
                if response is not None and response.ok:
                    state = response.json()
                    if state["complete"]:
                        self._count(item, 0, done=True)
                        return
                    offset, delay, deadline = state["received"], _http.FIRST_DELAY, time.monotonic() + self.http.give_up
                    continue
                if response is not None and not (response.retryable or response.status == 409):
                    raise self._refusal(item, response)
                if response is not None:
                    problem = f"HTTP {response.status}: {response.message()}"
                if time.monotonic() + delay > deadline:
                    raise SnapshotError(f"Could not send {item.path!r} to the studio at {self.http.url}: {problem}")
                time.sleep(delay)
                delay = min(delay * 2, _http.MAX_DELAY)
                offset = self._held(item, path)

    def _put(self, item: LocalFile, path: str, body: bytes, content_range: str) -> None:
        response = self.http.call("PUT", path, body=body, headers={"Content-Type": "application/octet-stream",
                                                                   "Content-Range": content_range})
        if not response.ok:
            raise self._refusal(item, response)

    def _held(self, item: LocalFile, path: str) -> int:
        """The bytes the studio holds of this upload (where to continue)."""
        state = self.http.json("GET", path)
        return item.size if state["complete"] else state["received"]

    def _refusal(self, item: LocalFile, response: _http.Response) -> SnapshotError:
        message = response.message()
        if response.status == 400 and "sha256" in message:
            message = f"{item.path!r} changed while it was sent (the studio received other bytes than were hashed); " \
                      f"try again once it is written. The studio said: {message}"
        else:
            message = f"The studio refused {item.path!r}: {message}"
        return SnapshotError(message, response.status)

    def _count(self, item: LocalFile, sent: int, done: bool = False) -> None:
        with self._lock:
            self.stats.bytes_sent += sent
            if done:
                self.stats.files_sent += 1


def _send_missing(sender: _Sender, folder: Folder, needed: list, partial: dict, threads: int) -> None:
    """Send what the studio needs: large files (and partly sent ones) in ranges, the rest packed, a few at a time."""
    by_sha = {}
    for item in folder.files:
        by_sha.setdefault(item.sha256, item)
    work = [(by_sha[sha], partial.get(sha, 0)) for sha in needed if sha in by_sha]
    small = [item for item, offset in work if offset == 0 and 0 < item.size <= sender.small]
    ranged = sorted(((item, offset) for item, offset in work if not (offset == 0 and 0 < item.size <= sender.small)),
                    key=lambda pair: -pair[0].size)
    tasks = [(sender.send, (item, offset)) for item, offset in ranged]
    tasks += [(sender.send_batch, (batch,)) for batch in sender.batches(small)]
    if not tasks:
        return
    with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(tasks)))) as pool:
        futures = [pool.submit(call, *arguments) for call, arguments in tasks]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def upload_folder(http: Http, workspace: str, folder, *, threads: int = THREADS, hash_cache=True,
                  source_name: str | None = None) -> tuple[int, Stats]:
    """Send `folder` to `workspace` as a snapshot and return `(snapshot_id, stats)`; submit the run with the id as
    `snapshot_id`. Only the files the workspace does not hold are sent (see the module's doc).

    - `http`: an `Http(url, token)` (the studio's base URL, a personal API token; from the SDK's `_api.Api`:
      `Http(api.url, api.token)`); any object with its `request`, `call`, `json`, `url` and `give_up` works.
    - `threads`: files hashed, and sent, at the same time.
    - `hash_cache`: True (remember hashes in the user's cache folder, see `HashCache.for_folder`), False, or a file.
    - `source_name`: the name the run page shows (default: the folder's name).

    `stats` (a `Stats`): `files`, `bytes` (the snapshot), `ignored`, `ignore_file`, `hashed_files`, `hashed_bytes`,
    `files_sent`, `bytes_sent` (file bytes sent), `request_bytes` (the manifest sent), `uploaded_files` and
    `uploaded_bytes` (what the studio says it received for this snapshot), `seconds`, `timings` (by step).
    Raises SnapshotError (with `status` when the studio refused) saying what to fix.
    """
    started = time.perf_counter()
    stats = Stats()
    clock = _Clock(stats)
    ws = quote(workspace, safe="")
    found = scan(folder)
    stats.files, stats.bytes, stats.ignored, stats.ignore_file = (
        len(found.files), found.total_bytes, found.ignored, found.ignore_file)
    clock.lap("scan")
    limits = _post(http, f"/workspaces/{ws}/snapshots/missing", {"files": []}, stats)  # the studio's limits
    check_limits(found, limits["max_files"], limits["max_bytes"])
    clock.lap("limits")
    hash_files(found, HashCache.for_folder(found.root, hash_cache), threads, stats)
    clock.lap("hash")
    manifest = found.manifest()
    sender = _Sender(http, workspace, limits, stats)
    name = source_name if source_name is not None else os.path.basename(found.root)
    request = {"files": manifest, "ignore_file": found.ignore_file, "ignored_count": found.ignored,
               "source_name": name}
    for attempt in (1, 2):
        answer = _post(http, f"/workspaces/{ws}/snapshots/missing", {"files": manifest}, stats)
        clock.lap("missing")
        _send_missing(sender, found, answer["missing"], answer["partial"], threads)
        clock.lap("send")
        response = _post_response(http, f"/workspaces/{ws}/snapshots", request, stats)
        clock.lap("create")
        if response.ok:
            made = response.json()
            stats.uploaded_files, stats.uploaded_bytes = made["uploaded_files"], made["uploaded_bytes"]
            stats.seconds = time.perf_counter() - started
            return made["id"], stats
        if attempt == 2 or response.status != 400 or not _missing_in(response):
            raise SnapshotError(response.message(), response.status)
        # Content the studio held a moment ago went away (or a snapshot made at the same moment took an upload):
        # ask again and send it.
    raise AssertionError("unreachable")


def _multipart(parts: list) -> tuple[bytes, str]:
    """A multipart/form-data body of (sha256, bytes) parts, each named (and its file named) by its sha256."""
    boundary = f"studio-sdk-{uuid.uuid4().hex}"
    chunks = []
    for name, content in parts:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n".encode())
        chunks.append(content)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _post(http: Http, path: str, payload: dict, stats: Stats):
    response = _post_response(http, path, payload, stats)
    if not response.ok:
        raise SnapshotError(response.message(), response.status)
    return response.json()


def _post_response(http: Http, path: str, payload: dict, stats: Stats) -> _http.Response:
    body = json.dumps(payload).encode()
    stats.request_bytes += len(body)
    return http.call("POST", path, body=body, headers={"Content-Type": "application/json"})


def _missing_in(response: _http.Response) -> list:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return list((response.json().get("errors") or {}).get("missing") or [])
    return []


__all__ = ["Http", "SnapshotError", "Stats", "scan", "upload_folder"]
