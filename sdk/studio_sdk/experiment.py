"""Submitting and following runs from anywhere, shaped after Azure ML's v1 SDK:

    ws = Workspace.from_config()
    src = ScriptRunConfig(source_directory="examples/digits", script="train.py", arguments=["--epochs", 20],
                          compute_target="local", environment=Environment.get(ws, "Studio-sklearn"))
    run = Experiment(ws, "digits").submit(src)
    run.wait_for_completion(show_output=True)
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from studio_sdk._api import StudioError, quote

FINAL = ("Completed", "Failed", "Canceled")


class ScriptRunConfig:
    def __init__(self, source_directory: str | os.PathLike = ".", script: str | None = None, arguments=None,
                 compute_target=None, environment=None, max_run_duration_seconds: int | None = None,
                 environment_variables: dict | None = None, display_name: str = "", tags: dict | None = None):
        self.source_directory = Path(source_directory)
        self.script = script
        self.arguments = [str(a) for a in (arguments or [])]
        self.compute_target = compute_target
        self.environment = environment
        self.max_run_duration_seconds = max_run_duration_seconds
        self.environment_variables = dict(environment_variables or {})
        self.display_name = display_name
        self.tags = dict(tags or {})

    def _target_name(self) -> str:
        target = self.compute_target
        if target is None:
            return "local"
        return target if isinstance(target, str) else target.name


class Experiment:
    def __init__(self, workspace, name: str):
        self.workspace = workspace
        self.name = name

    def submit(self, config: ScriptRunConfig, tags: dict | None = None) -> RemoteRun:
        """Send the source folder (only the files the studio lacks) and start the run."""
        from studio_sdk import _submit

        data = _submit.submit(self.workspace, self.name, config, tags=tags)
        return RemoteRun(self.workspace, data["id"], data)

    def get_runs(self, include_children: bool = False) -> list[RemoteRun]:
        page = self.workspace.api.get(self.workspace.path(f"/experiments/{quote(self.name)}/runs"))
        runs = [RemoteRun(self.workspace, item["id"], item) for item in page["items"]]
        return runs if include_children else [run for run in runs if not run._data.get("parent")]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"


class RemoteRun:
    """A run seen from outside it (what `Experiment.submit` returns, or `RemoteRun(ws, 42)`)."""

    def __init__(self, workspace, run_id: int, data: dict | None = None):
        self.workspace = workspace
        self.id = int(run_id)
        self._data = data or {}

    def _path(self, rest: str = "") -> str:
        return self.workspace.path(f"/runs/{self.id}{rest}")

    # State -------------------------------------------------------------------------------------------------------
    def get_details(self) -> dict:
        self._data = self.workspace.api.get(self._path())
        return self._data

    def get_status(self) -> str:
        return self.get_details()["status"]

    @property
    def status(self) -> str:
        return self._data.get("status") or self.get_status()

    @property
    def experiment(self) -> str:
        return self._data.get("experiment") or self.get_details()["experiment"]

    @property
    def url(self) -> str:
        return self.workspace.url + (self._data.get("url") or self.get_details()["url"])

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = True,
                            raise_on_error: bool = True, out=None) -> dict:
        """Wait until the run ends; with show_output, its console as it is printed (live: server-sent events)."""
        out = out or sys.stdout
        if show_output:
            follow_console(self, out)
        while self.get_status() not in FINAL:
            time.sleep(0.5)
        details = self._data
        if raise_on_error and details["status"] == "Failed":
            raise StudioError(f"Run {self.id} failed: {details.get('reason') or 'see its console'}")
        return details

    def cancel(self) -> dict:
        return self.workspace.api.post(self._path("/cancel"))

    def get_children(self) -> list[RemoteRun]:
        page = self.workspace.api.get(self._path("/children"))
        return [RemoteRun(self.workspace, item["id"], item) for item in page["items"]]

    # What it recorded ----------------------------------------------------------------------------------------------
    def get_metrics(self, name: str | None = None) -> dict:
        """{name: value} for series logged once, {name: [values...]} for longer ones (all points up to 5,000; beyond
        that, a downsampled series that keeps the extremes). Tables, rows and lists as logged; images by file."""
        result = {}
        for series in self.workspace.api.get(self._path("/metrics")):
            if name is not None and series["name"] != name:
                continue
            if series["kind"] != "scalar":
                result[series["name"]] = series.get("last")
                continue
            if series["count"] <= 1:
                result[series["name"]] = series["last"]
                continue
            data = self.workspace.api.get(self._path(f"/metrics/{series['id']}"), max_points=5000)
            result[series["name"]] = data["y"]
        return result

    def get_file_names(self) -> list[str]:
        return [item["path"] for item in self.workspace.api.get(self._path("/files"))]

    def download_file(self, name: str, output_file_path: str | os.PathLike | None = None) -> str:
        target = str(output_file_path or os.path.basename(name))
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(name))
        self.workspace.api.download(self._path(f"/files/{quote(name).replace('%2F', '/')}"), target)
        return target

    def download_files(self, prefix: str = "", output_directory: str | os.PathLike = ".",
                       append_prefix: bool = True) -> list[str]:
        written = []
        for name in self.get_file_names():
            if not name.startswith(prefix):
                continue
            relative = name if append_prefix else name[len(prefix):].lstrip("/")
            written.append(self.download_file(name, os.path.join(output_directory, relative)))
        return written

    def register_model(self, model_name: str, model_path: str, tags: dict | None = None,
                       properties: dict | None = None, description: str = "") -> dict:
        """Register files the run stored (a file or folder under outputs/) as the next version of `model_name`."""
        return self.workspace.api.post(self.workspace.path(f"/models/{quote(model_name)}/versions"), {
            "run_id": self.id, "paths": [model_path], "tags": tags or {}, "properties": properties or {},
            "description": description})

    def __repr__(self) -> str:
        return f"RemoteRun(id={self.id}, experiment={self._data.get('experiment')!r}, status={self._data.get('status')!r})"


def follow_console(run: RemoteRun, out, *, from_start: bool = True) -> str:
    """Print the run's console as it is printed until the run ends; returns the final status. Reconnects where it
    stopped (Last-Event-ID) when the connection drops."""
    last_id = None
    status = ""
    while True:
        try:
            for event, event_id, data in run.workspace.api.events(run._path("/events"), last_id):
                last_id = event_id or last_id
                if event == "log":
                    out.write("".join(text + "\n" for _source, text in data.get("lines", [])))
                    out.flush()
                elif event == "status":
                    status = data.get("status", status)
                elif event == "unavailable":
                    return _poll_console(run, out)
                elif event == "end":
                    return status or run.get_status()
            if run.get_status() in FINAL:
                return run.status
        except StudioError:
            if run.get_status() in FINAL:
                return run.status
            time.sleep(1)


def _poll_console(run: RemoteRun, out) -> str:
    offset = 0
    while True:
        chunk = run.workspace.api.get(run._path("/log"), offset=offset)
        for line in chunk["lines"]:
            out.write(line + "\n")
        out.flush()
        offset = chunk["next_offset"]
        if chunk["final"]:
            return chunk["status"]
        time.sleep(0.5)


def split_arguments(text: str) -> list[str]:
    return shlex.split(text)
