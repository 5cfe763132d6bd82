"""The REST API's schemas for experiments, runs and what runs record (see runs/api.py).

Numbers are bounded where they are stored: steps and times are finite and within ±1e15 (times are seconds since the
epoch); values may be NaN or ±Infinity (sent as the strings "NaN", "Infinity", "-Infinity" in JSON) but never a number
that does not fit a float. Names follow the same rules as the pages.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from ninja import Field, Schema
from pydantic import PrivateAttr, field_validator, model_validator

from runs import metrics, parameters
from studio.api import Error, LogChunk  # noqa: F401 - schemas every app's routes answer with
from studio.parsing import tag_problem
from studio.text import bidi_problem

LIMIT = 1e15  # steps and times: finite, and within this
Step = Annotated[float, Field(allow_inf_nan=False, ge=-LIMIT, le=LIMIT)]
Time = Annotated[float, Field(allow_inf_nan=False, ge=0, le=LIMIT)]
Special = Literal["NaN", "Infinity", "-Infinity"]
Value = float | Special
MAX_POINTS = 100_000
MAX_SERIES = 100
MAX_ENTRIES = 1_000
MAX_TABLE_CELLS = 100_000
Name = Annotated[str, Field(min_length=1, max_length=255)]
Cell = Annotated[float, Field(allow_inf_nan=True)] | Special | bool | None | Annotated[str, Field(max_length=10_000)]


def _check_metric_name(value: str) -> str:
    try:
        return metrics.check_name(value)
    except metrics.MetricError as error:
        raise ValueError(str(error)) from None


# Ingest: what a script's SDK sends ------------------------------------------------------------------------------------


class SeriesIn(Schema):
    """One scalar series' new points, as columns. Either JSON arrays (`values`, `times`, and `steps` or none: a null
    or missing step is the next one), or `packed`: base64 of 3 × count little-endian float64s, all steps (NaN: the next
    one), then all values, then all times."""

    name: Name
    description: str = Field("", max_length=1024)
    steps: list[Step | None] | None = None
    values: list[Value] | None = None
    times: list[Time] | None = None
    packed: str | None = Field(None, max_length=MAX_POINTS * 32 + 4)
    count: int | None = Field(None, ge=1, le=MAX_POINTS)
    _raw: bytes = PrivateAttr(b"")

    _check_name = field_validator("name")(_check_metric_name)

    @model_validator(mode="after")
    def _one_form(self):
        if self.packed is not None:
            if self.values is not None or self.times is not None or self.steps is not None:
                raise ValueError("send either packed or the steps, values and times arrays, not both")
            if self.count is None:
                raise ValueError("packed needs count: how many points it holds")
            try:
                raw = base64.b64decode(self.packed, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("packed is not base64") from None
            if len(raw) != 24 * self.count:
                raise ValueError(f"packed holds {len(raw)} bytes; {self.count} points are {24 * self.count}")
            self._raw = raw
            return self
        if self.values is None or self.times is None:
            raise ValueError("send values and times (and steps, or none to number the points)")
        if len(self.values) != len(self.times) or (self.steps is not None and len(self.steps) != len(self.values)):
            raise ValueError("steps, values and times must have the same length")
        if not self.values:
            raise ValueError("send at least one point")
        if len(self.values) > MAX_POINTS:
            raise ValueError(f"at most {MAX_POINTS:,} points per series and request")
        return self

    @property
    def point_count(self) -> int:
        return self.count if self.packed is not None else len(self.values)

    def columns(self):
        """(steps, values, times) as float64 arrays; a NaN step means the next one."""
        if self.packed is not None:
            arrays = np.frombuffer(self._raw, dtype="<f8").reshape(3, -1).astype(np.float64)
            steps, values, times = arrays
            finite_or_nan = np.isfinite(steps) | np.isnan(steps)
            if not (finite_or_nan.all() and np.all(np.abs(np.nan_to_num(steps)) <= LIMIT)):
                raise ValueError(f"{self.name}: steps must be finite numbers within ±{LIMIT:g}")
            if not (np.isfinite(times).all() and np.all((times >= 0) & (times <= LIMIT))):
                raise ValueError(f"{self.name}: times must be finite seconds since the epoch")
            return steps, values, times
        values = np.array(self.values, dtype=np.float64)  # "NaN", "Infinity" and "-Infinity" convert as they read
        times = np.array(self.times, dtype=np.float64)
        steps = np.full(len(values), np.nan) if self.steps is None else np.array(self.steps, dtype=np.float64)
        return steps, values, times


class MetricsIn(Schema):
    series: list[SeriesIn] = Field(..., min_length=1, max_length=MAX_SERIES)

    @model_validator(mode="after")
    def _bounded(self):
        total = sum(series.point_count for series in self.series)
        if total > MAX_POINTS:
            raise ValueError(f"send at most {MAX_POINTS:,} points per request ({total:,} sent)")
        return self


class Stored(Schema):
    stored: int | str


class EntryIn(Schema):
    name: Name
    kind: Literal["list", "row", "table"]
    data: list[Cell] | dict[Annotated[str, Field(max_length=255)], Cell | list[Cell]]

    _check_name = field_validator("name")(_check_metric_name)

    @model_validator(mode="after")
    def _shape(self):
        data, name = self.data, self.name
        if self.kind == "list":
            if not isinstance(data, list) or len(data) > MAX_TABLE_CELLS:
                raise ValueError(f"{name}: a list is an array of at most {MAX_TABLE_CELLS:,} numbers")
            if any(isinstance(v, bool | str) and v not in ("NaN", "Infinity", "-Infinity") for v in data):
                raise ValueError(f"{name}: a list holds numbers only")
        elif self.kind == "row":
            if not isinstance(data, dict) or not data or len(data) > 100 or any(isinstance(v, list) for v in data.values()):
                raise ValueError(f"{name}: a row is an object of 1-100 columns, each one value")
        else:
            if not isinstance(data, dict) or not data or not all(isinstance(v, list) for v in data.values()):
                raise ValueError(f"{name}: a table is an object of columns, each a list of values")
            lengths = {len(v) for v in data.values()}
            if len(lengths) != 1:
                raise ValueError(f"{name}: every column of a table must have the same length")
            if lengths.pop() * len(data) > MAX_TABLE_CELLS:
                raise ValueError(f"{name}: a table holds at most {MAX_TABLE_CELLS:,} cells")
        if isinstance(data, dict):
            for key in data:
                _check_metric_name(str(key))
        return self


class EntriesIn(Schema):
    entries: list[EntryIn] = Field(..., min_length=1, max_length=MAX_ENTRIES)


TagValue = Annotated[str, Field(max_length=1024)] | int | float | None


class TagsIn(Schema):
    """Tags to set; a null value removes a tag in the workspace API and sets an empty one from a script."""

    tags: dict[str, TagValue] = Field(..., max_length=50)

    @field_validator("tags", mode="before")
    @classmethod
    def _no_booleans(cls, tags):
        """true and false are refused as they are sent: read as a number, they would be stored as "1" and "0"."""
        if isinstance(tags, dict):
            for key, value in tags.items():
                if isinstance(value, bool):
                    raise ValueError(f"tag {str(key)[:40]!r}: the value must be text, a finite number or null")
        return tags

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: dict) -> dict:
        for key, value in tags.items():
            if isinstance(value, bool) or isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"tag {key[:40]!r}: the value must be text, a finite number or null")
            problem = tag_problem(key, None if value is None else str(value))
            if problem:
                raise ValueError(f"tag {key[:40]!r}: {problem}")
        return tags


class Tags(Schema):
    tags: dict[str, str]


ParamValue = bool | int | float | Annotated[str, Field(max_length=parameters.MAX_VALUE_CHARS)]


class ParamsIn(Schema):
    """Parameters to set: name to text, a finite number or a boolean (see runs/parameters.py)."""

    parameters: dict[str, ParamValue] = Field(..., max_length=parameters.MAX_PARAMETERS)

    @field_validator("parameters")
    @classmethod
    def _check(cls, values: dict) -> dict:
        try:
            return parameters.check(values)
        except parameters.ParameterError as error:
            raise ValueError(str(error)) from None


class Params(Schema):
    parameters: dict[str, ParamValue]


class ChildIn(Schema):
    name: str | None = Field(None, max_length=255)

    @field_validator("name")
    @classmethod
    def _plain(cls, value):
        if value and bidi_problem(value):
            raise ValueError(bidi_problem(value, "The name"))
        return value


class ChildOut(Schema):
    run_id: int


class StatusIn(Schema):
    status: Literal["Completed", "Failed"]
    reason: str = Field("", max_length=10_000)


class StatusOut(Schema):
    status: str


# Workspace API: reading and acting on runs ----------------------------------------------------------------------------


class EnvironmentRef(Schema):
    name: str
    version: int
    anonymous: bool
    definition_hash: str


class StatusChange(Schema):
    status: str
    at: datetime


class RunOut(Schema):
    id: int
    experiment: str
    display_name: str
    status: str
    reason: str
    exit_code: int | None
    created_at: datetime
    created_by: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    entry_script: str
    arguments: list[str]
    env_vars: dict[str, str]
    tags: dict[str, str]
    compute_target: str
    max_duration_seconds: int | None
    resources: dict
    environment: EnvironmentRef | None
    parent: int | None
    child_count: int | None = None
    metrics: dict[str, float | str | None] | None = Field(None, description="Last values of the chosen metric columns.")
    parameters: dict[str, ParamValue | None] | None = Field(
        None, description="Values of the chosen parameter columns (null: the run has no such parameter).")
    url: str


class GitOut(Schema):
    remote_url: str | None = Field(description="The remote, without credentials.")
    branch: str | None
    commit: str | None
    dirty: bool = Field(description="The working copy had changes that were not committed.")
    diff: str = Field(description="Those changes (git diff HEAD), at most 1 MB.")
    diff_truncated: bool
    diff_bytes: int = Field(description="The diff's size before it was cut.")


class RunDetailOut(RunOut):
    status_history: list[StatusChange]
    snapshot: dict
    parameters: dict[str, ParamValue] = Field(description="Every parameter: from the arguments and from the script.")
    git: GitOut | None = Field(description="Where the source came from, when it was a git working copy.")


class RunPage(Schema):
    items: list[RunOut]
    previous: str | None = Field(None, description="The query string of the page above this one.")
    next: str | None = Field(None, description="The query string of the page below this one.")


class ExperimentOut(Schema):
    name: str
    archived: bool
    created_at: datetime
    runs: int = Field(description="Top-level runs.")
    all_runs: int = Field(description="Runs including child runs.")
    latest_status: str | None
    latest_run_at: datetime | None
    url: str


class ExperimentPage(Schema):
    items: list[ExperimentOut]
    next: str | None = None


class ArchiveIn(Schema):
    archived: bool


class CancelOut(Schema):
    status: str
    cancel_requested: bool
    message: str


class SeriesOut(Schema):
    id: int
    name: str
    kind: str
    description: str
    count: int
    last: float | str | None
    min: float | None
    max: float | None
    data_url: str | None


class SeriesData(Schema):
    name: str
    count: int
    shown: int
    x: list[float | None]
    y: list[float | None]
    nonfinite: list[dict]
    last: float | str | None
    min: float | None
    max: float | None
    final: bool


class FileOut(Schema):
    path: str
    size: int
    url: str


class SnapshotFileOut(Schema):
    path: str
    size: int
    sha256: str


class SnapshotOut(Schema):
    source_name: str
    file_count: int
    total_bytes: int
    ignore_file: str
    ignored_count: int
    files: list[SnapshotFileOut]


