"""`Run`: what a training script logs to. `Run.get_context()` is the run the studio started the script for, or an
offline run that prints, so the same script works on a laptop.

Every method checks its arguments in the caller's thread (ValueError/TypeError at once) and then only queues a
record; the background sender (`_sender.py`) does the JSON and the HTTP. Nothing the studio does, or fails to do,
raises into the script.
"""

from __future__ import annotations

import atexit
import io
import mimetypes
import os
import signal
import sys
import threading
import time

from studio_sdk import _http, _values
from studio_sdk._sender import Op, Sender, _warn

RUN_ID_ENV = "STUDIO_RUN_ID"
API_URL_ENV = "STUDIO_API_URL"
TOKEN_ENV = "STUDIO_RUN_TOKEN"
FLUSH_ON_TERM_SECONDS = 3.0  # the studio waits STUDIO_CANCEL_GRACE_SECONDS (5 by default) before SIGKILL


class Run:
    """One run's logging handle. Get it with `Run.get_context()`; make children with `run.child_run()`."""

    _context: Run | None = None
    _context_lock = threading.Lock()
    _hooks_installed = False

    def __init__(self, backend, parent: Run | None = None):
        """Internal: use Run.get_context() or run.child_run()."""
        self._backend = backend
        self._point = backend.point
        self._tags: dict = {}
        self._params: dict = {}
        self.parent = parent

    @classmethod
    def get_context(cls) -> Run:
        """The run this process logs to: online when STUDIO_RUN_ID, STUDIO_API_URL and STUDIO_RUN_TOKEN are all set,
        otherwise offline (records are printed). Every call returns the same object."""
        with cls._context_lock:
            if cls._context is None:
                cls._context = cls(_backend_from_environment(os.environ))
                if not cls._context.offline:
                    _install_process_hooks()
            return cls._context

    @property
    def id(self):
        """The studio's id of this run (an int), or None offline."""
        return self._backend.run_id

    @property
    def name(self) -> str | None:
        """The name given to child_run(), if any."""
        return self._backend.name

    @property
    def offline(self) -> bool:
        return self._backend.offline

    def __repr__(self) -> str:
        where = "offline" if self.offline else f"id={self.id}"
        return f"<Run {where}{f' name={self.name!r}' if self.name else ''}>"

    # Metrics ------------------------------------------------------------------------------------------------------
    def log(self, name: str, value, step: int | None = None, description: str = "") -> None:
        """Append `value` to the scalar series `name`. Without a step the studio numbers points 0, 1, 2, ...

        Cheap enough to call in a tight loop: it checks its arguments and appends to a queue.
        """
        if type(value) is not float:
            value = _values.number(value)
        if step is not None and (type(step) is not int or step < 0):
            step = _values.step(step)
        if description:
            description = _values.description(description)
        self._point(_values.check_name(name), description, step, value)

    def log_list(self, name: str, values) -> None:
        """Log a list of numbers as one entry (e.g. per-class accuracies)."""
        self._backend.entries(_values.check_name(name), "list", _values.numbers(values, f"the values of {name!r}"))

    def log_row(self, name: str, **columns) -> None:
        """Append one row to the table `name`: run.log_row("per-epoch", epoch=3, loss=0.2)."""
        self._backend.entries(_values.check_name(name), "row", _values.row(columns))

    def log_table(self, name: str, columns: dict) -> None:
        """Log a whole table as {column: [values]}; all columns must have the same length."""
        self._backend.entries(_values.check_name(name), "table", _values.table(columns))

    def log_image(self, name: str, path=None, plot=None) -> None:
        """Log a .png/.jpg/.jpeg/.svg file, or a matplotlib figure (anything with savefig) rendered to PNG."""
        _values.check_name(name)
        if (path is None) == (plot is None):
            raise TypeError("Give log_image either path= (an image file) or plot= (a matplotlib figure), not both.")
        if path is not None:
            filename = os.fspath(path)
            content_type = _values.image_type(filename)
            with open(filename, "rb") as file:
                content = file.read()
        else:
            if not hasattr(plot, "savefig"):
                raise TypeError(f"plot= must be a matplotlib figure (or pyplot), not {type(plot).__name__}.")
            buffer = io.BytesIO()
            plot.savefig(buffer, format="png")
            filename, content, content_type = "figure.png", buffer.getvalue(), "image/png"
        self._backend.upload("image", name, filename, content, content_type)

    # Tags ---------------------------------------------------------------------------------------------------------
    def set_tags(self, tags: dict) -> None:
        """Set several tags at once; a value of None makes a tag without a value."""
        checked = _values.tags(tags)
        self._tags.update(checked)
        self._backend.tags(checked)

    def tag(self, key: str, value=None) -> None:
        self.set_tags({key: value})

    def get_tags(self) -> dict:
        """All tags of the run: the studio's, updated with the ones this process set (which may not be sent yet)."""
        return {**self._backend.server_tags(), **self._tags}

    # Parameters ---------------------------------------------------------------------------------------------------
    def log_param(self, name: str, value) -> None:
        """Record a parameter of the run: text, a number or a bool (e.g. run.log_param("learning_rate", 0.01)).

        It shows on the run's page, as a column of the experiment's runs table and on the compare page. A value the
        script logs replaces the one the studio read from the run's `--name value` arguments; logging a name again
        replaces its value.
        """
        self.set_params({name: value})

    def set_params(self, params: dict) -> None:
        """Record several parameters at once: run.set_params({"learning_rate": 0.01, "epochs": 20})."""
        checked = _values.params(params)
        self._params.update(checked)
        self._backend.params(checked)

    def get_params(self) -> dict:
        """The parameters this process logged (those parsed from the arguments are on the run's page)."""
        return dict(self._params)

    # Files --------------------------------------------------------------------------------------------------------
    def upload_file(self, name: str, path_or_stream) -> None:
        """Store a file under the run's outputs as `name` (a relative path) from a path or a readable stream.

        The content is read now, so the file may change afterwards. For large files, write them to ./outputs instead:
        the studio collects that folder when the run ends.
        """
        name = _values.output_path(name)
        if isinstance(path_or_stream, (str, os.PathLike)):
            with open(path_or_stream, "rb") as file:
                content = file.read()
        elif hasattr(path_or_stream, "read"):
            content = path_or_stream.read()
            if isinstance(content, str):
                content = content.encode()
            if not isinstance(content, (bytes, bytearray, memoryview)):
                raise TypeError(f"The stream gave {type(content).__name__}; upload_file needs bytes or text.")
            content = bytes(content)
        else:
            raise TypeError(f"upload_file needs a path or a readable stream, not {type(path_or_stream).__name__}.")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._backend.upload("file", name, name, content, content_type)

    # The model registry ------------------------------------------------------------------------------------------
    def register_model(self, model_name: str, model_path, tags: dict | None = None, properties: dict | None = None,
                       description: str | None = None, framework: str | None = None,
                       framework_version: str | None = None) -> dict | None:
        """Register the file or folder `model_path` as the next version of the model `model_name`, with this run as
        its lineage (Azure ML's `Run.register_model`). Returns {"name", "version"}, or None when it could not be
        registered (the reason is printed) or the script runs outside the studio.

        `model_path` is what the script wrote, e.g. "outputs/model.pkl" or "outputs/model" (a folder). Its files are
        uploaded to the run's outputs now (a path outside outputs/ goes there under its base name), then registered.
        """
        if not isinstance(model_name, str) or not model_name.strip():
            raise ValueError("register_model needs the model's name, e.g. run.register_model('digits', 'outputs/model.pkl').")
        local = os.fspath(model_path)
        if not os.path.exists(local):
            raise FileNotFoundError(f"register_model: {local!r} does not exist (write the model there first).")
        normalized = os.path.normpath(local).replace(os.sep, "/")
        base = normalized[len("outputs/"):] if normalized.startswith("outputs/") else os.path.basename(normalized)
        if os.path.isdir(local):
            files = []
            for folder, _, names in sorted(os.walk(local)):
                for name in sorted(names):
                    full = os.path.join(folder, name)
                    if os.path.isfile(full) and not os.path.islink(full):
                        files.append((full, f"{base}/{os.path.relpath(full, local).replace(os.sep, '/')}"))
        else:
            files = [(local, base)]
        if not files:
            raise ValueError(f"register_model: the folder {local!r} holds no files.")
        for full, name in files:
            self.upload_file(name, full)
        payload = {"name": model_name, "paths": [f"outputs/{base}"], "tags": dict(tags or {}),
                   "properties": dict(properties or {}), "description": description or "",
                   "framework": framework or "", "framework_version": framework_version or ""}
        return self._backend.register_model(payload)

    # Children and the end -----------------------------------------------------------------------------------------
    def child_run(self, name: str | None = None) -> Run:
        """A new run inside this one (a fold, a trial). Its id comes from the studio, so this call waits for it.

        If the studio cannot be reached the child is an offline run: the script carries on either way.
        """
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            raise ValueError("A child run's name is text of at most 255 characters.")
        return Run(self._backend.child(name), parent=self)

    def flush(self, timeout: float | None = 30) -> bool:
        """Wait until everything logged so far has been sent (or given up on). False if `timeout` passed first."""
        return self._backend.flush(timeout)

    def complete(self) -> None:
        """Mark the run Completed (after sending everything logged before)."""
        self._backend.status("Completed", "")

    def fail(self, reason: str = "") -> None:
        """Mark the run Failed with `reason` (after sending everything logged before), even if the script exits 0."""
        self._backend.status("Failed", str(reason))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """`with run.child_run("fold-1") as fold:` completes the child, or fails it with the exception."""
        if exc_type is None:
            self.complete()
        else:
            self.fail(f"{exc_type.__name__}: {exc}")
        return False


class _OnlineBackend:
    """Records of one studio run go to the process's sender; children share the sender and the token."""

    offline = False

    def __init__(self, sender: Sender, run_id, name: str | None = None):
        self.sender = sender
        self.run_id = run_id
        self.name = name

        def point(name, description, step, value, _append=sender.append, _now=time.time, _run=run_id):
            _append((_run, name, description, step, value, _now()))

        self.point = point

    def entries(self, name: str, kind: str, data) -> None:
        self.sender.put(Op("entries", self.run_id, [{"name": name, "kind": kind, "data": data}]))

    def tags(self, tags: dict) -> None:
        self.sender.put(Op("tags", self.run_id, tags))

    def params(self, params: dict) -> None:
        self.sender.put(Op("params", self.run_id, params))

    def upload(self, kind: str, name: str, filename: str, content: bytes, content_type: str) -> None:
        self.sender.put(Op(kind, self.run_id, (name, filename, content, content_type)))

    def status(self, status: str, reason: str) -> None:
        self.sender.put(Op("status", self.run_id, {"status": status, "reason": reason}))
        self.flush()

    def flush(self, timeout: float | None = 30) -> bool:
        return self.sender.flush(timeout)

    def _request(self, method: str, path: str, payload=None) -> _http.Response | None:
        """A request from the script's thread, retried like the sender's; None (after a warning) on failure."""
        endpoint = self.sender.endpoint
        try:
            response = _http.with_retries(
                lambda: _http.direct(endpoint, method, f"/api/v1/runs/{self.run_id}{path}", payload),
                self.sender.give_up,
            )
        except _http.Unavailable as exc:
            _warn(f"could not reach the studio at {endpoint.base_url} for {method} {path} ({exc}).")
            return None
        if not response.ok:
            _warn(f"the studio refused {method} {path} of run {self.run_id}: HTTP {response.status}: {response.message()}")
            return None
        return response

    def child(self, name: str | None):
        self.flush()
        response = self._request("POST", "/children", {"name": name})
        child_id = None
        if response is not None:
            try:
                child_id = response.json()["run_id"]
            except (ValueError, KeyError, TypeError):
                _warn(f"the studio's answer to creating a child run had no run_id: {response.body[:200]!r}")
        if child_id is None:
            _warn("the child run logs offline (printed, not stored).")
            return _OfflineBackend(name or "child")
        return _OnlineBackend(self.sender, child_id, name)

    def register_model(self, payload: dict) -> dict | None:
        if not self.flush(timeout=None):  # the files go first, in order, with everything logged before
            return None
        response = self._request("POST", "/models", payload)
        if response is None:
            return None
        try:
            answer = response.json()
            return {"name": answer["model"], "version": answer["version"]}
        except (ValueError, KeyError, TypeError):
            _warn(f"the studio's answer to registering a model was not understood: {response.body[:200]!r}")
            return None

    def server_tags(self) -> dict:
        response = self._request("GET", "/tags")
        if response is None:
            return {}
        try:
            tags = response.json()["tags"]
        except (ValueError, KeyError, TypeError):
            tags = None
        return tags if isinstance(tags, dict) else {}


class _OfflineBackend:
    """Outside the studio: every record is printed to stdout, so `python train.py` on a laptop shows what it logs."""

    offline = True
    run_id = None

    def __init__(self, name: str | None = None, label: str | None = None):
        self.name = name
        self.label = label if label is not None else name
        prefix = f"[studio offline {self.label}]" if self.label else "[studio offline]"
        self.prefix = prefix

        def point(name, description, step, value):
            print(f"{prefix} {name}={value:.6g}" + ("" if step is None else f" (step {step})"))

        self.point = point

    def _say(self, text: str) -> None:
        print(f"{self.prefix} {text}")

    def entries(self, name: str, kind: str, data) -> None:
        if kind == "list":
            self._say(f"{name}=[{', '.join(f'{v:.6g}' for v in data)}]")
        elif kind == "row":
            self._say(f"{name} row: {', '.join(f'{k}={_show(v)}' for k, v in data.items())}")
        else:
            rows = len(next(iter(data.values())))
            self._say(f"{name} table: {rows} rows of {', '.join(data)}")

    def tags(self, tags: dict) -> None:
        self._say("tags: " + ", ".join(k if v is None else f"{k}={v}" for k, v in tags.items()))

    def params(self, params: dict) -> None:
        self._say("parameters: " + ", ".join(f"{k}={_show(v)}" for k, v in params.items()))

    def upload(self, kind: str, name: str, filename: str, content: bytes, content_type: str) -> None:
        self._say(f"{kind} {name} ({filename}, {len(content)} bytes)")

    def status(self, status: str, reason: str) -> None:
        self._say(f"run {status.lower()}" + (f": {reason}" if reason else ""))

    def flush(self, timeout: float | None = 30) -> bool:
        return True

    def child(self, name: str | None):
        label = f"{self.label}/{name or 'child'}" if self.label else (name or "child")
        self._say(f"child run {label}")
        return _OfflineBackend(name, label)

    def register_model(self, payload: dict) -> dict | None:
        self._say(f"model {payload['name']} from {', '.join(payload['paths'])} (registered when run in the studio)")
        return None

    def server_tags(self) -> dict:
        return {}


def _show(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _backend_from_environment(environ):
    names = (RUN_ID_ENV, API_URL_ENV, TOKEN_ENV)
    missing = [n for n in names if not environ.get(n)]
    if len(missing) == len(names):
        return _OfflineBackend()
    if missing:
        _warn(f"{' and '.join(missing)} not set (the studio sets all of {', '.join(names)}): logging offline.")
        return _OfflineBackend()
    try:
        endpoint = _http.Endpoint(environ[API_URL_ENV], environ[TOKEN_ENV])
    except ValueError as exc:
        _warn(f"{exc} Logging offline.")
        return _OfflineBackend()
    try:
        give_up = _http.give_up_seconds(environ)
    except ValueError as exc:
        _warn(str(exc))
        give_up = _http.DEFAULT_GIVE_UP
    run_id = environ[RUN_ID_ENV].strip()
    return _OnlineBackend(Sender(endpoint, give_up), int(run_id) if run_id.isdigit() else run_id)


def _flush_context() -> None:
    run = Run._context
    if run is not None and not run.offline:
        run._backend.sender.at_exit()


def _install_process_hooks() -> None:
    """Flush at exit and after an uncaught exception (in any thread), calling the hooks that were there before."""
    if Run._hooks_installed:
        return
    Run._hooks_installed = True
    atexit.register(_flush_context)
    previous_excepthook = sys.excepthook
    previous_thread_excepthook = threading.excepthook

    def excepthook(exc_type, exc, tb):
        try:
            previous_excepthook(exc_type, exc, tb)
        finally:
            _flush_context()

    def thread_excepthook(args):
        try:
            previous_thread_excepthook(args)
        finally:
            _flush_context()

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    _flush_on_sigterm()


def _flush_on_sigterm() -> None:
    """A canceled run gets SIGTERM, and SIGKILL a few seconds later: send what is queued first, then end as SIGTERM
    would have. Only when the script has no SIGTERM handler of its own."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
    except (ValueError, OSError):
        return

    def on_term(signum, frame):
        run = Run._context
        if run is not None and not run.offline:
            run._backend.sender.flush(timeout=FLUSH_ON_TERM_SECONDS)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() == 1:  # PID 1 (a container without an init) ignores a signal without a handler: exit instead
            raise SystemExit(128 + signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
