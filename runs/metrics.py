"""Storing what a run logs and reading it back for charts and tables.

Scalar series are stored in chunks of CHUNK_POINTS points (float64 arrays of step, value and wall-clock time).
The open chunk, still filling, is kept as segments of at most SEGMENT_POINTS points, so an append rewrites one
small segment, never a whole chunk. When a chunk fills up, its segments become one chunk, sealed with a summary: the
chunk downsampled to SUMMARY_POINTS with MinMaxLTTB plus its minimum, maximum, first and last points. A chart reads
the summaries of sealed chunks and the raw points of the open chunk, then downsamples that to at most CHART_POINTS
the same way, so a 10,000,000-point series costs about as much as a 150,000-point one, a single spike survives both
levels, and running and finished runs are drawn alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.db.models import F
from tsdownsample import MinMaxLTTBDownsampler

from runs.models import MetricChunk, MetricEntry, MetricKind, MetricSeries, Run

CHUNK_POINTS = 65_536
SEGMENT_POINTS = 8_192  # the open chunk is kept in segments of at most this many points (see _write_chunks)
SMALL_SEGMENT_POINTS = 512  # a segment filled by later appends while it holds fewer (rewritten: at most 12 KB)
SUMMARY_POINTS = 1_024
CHART_POINTS = 2_000
MAX_NONFINITE_MARKERS = 500
NAME = re.compile(r"^[A-Za-z0-9_.\-/: ]{1,255}$")


class MetricError(ValueError):
    """Bad input from a script: the message says what to fix."""


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.match(name) or name.strip() != name:
        raise MetricError(
            f"Invalid name {str(name)[:80]!r}: use 1-255 letters, digits, spaces and _ . - / : (no leading or trailing space)."
        )
    return name


@dataclass
class Points:
    steps: np.ndarray
    values: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def take(self, index) -> Points:
        return Points(self.steps[index], self.values[index], self.times[index])

    @classmethod
    def concat(cls, parts: list[Points]) -> Points:
        if not parts:
            empty = np.empty(0, dtype=np.float64)
            return cls(empty, empty, empty)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("steps", "values", "times")))

    def encode(self) -> bytes:
        return np.concatenate([self.steps, self.values, self.times]).astype("<f8").tobytes()

    @classmethod
    def decode(cls, blob: bytes) -> Points:
        arrays = np.frombuffer(bytes(blob), dtype="<f8").reshape(3, -1)
        return cls(arrays[0], arrays[1], arrays[2])


def downsample_indices(values: np.ndarray, n_out: int) -> np.ndarray:
    """Indices (sorted) of at most about n_out points that keep the shape: MinMaxLTTB over the finite values, plus
    the first and last point, the global minimum and maximum, and non-finite points (up to a cap) as markers."""
    count = len(values)
    if count <= n_out:
        return np.arange(count)
    finite = np.isfinite(values)
    finite_index = np.flatnonzero(finite)
    keep = [np.array([0, count - 1])]
    if len(finite_index) > n_out:
        chosen = MinMaxLTTBDownsampler().downsample(values[finite_index], n_out=n_out)
        keep.append(finite_index[chosen])
    else:
        keep.append(finite_index)
    if len(finite_index):
        keep.append(finite_index[[np.argmin(values[finite_index]), np.argmax(values[finite_index])]])
    nonfinite_index = np.flatnonzero(~finite)
    if len(nonfinite_index) > MAX_NONFINITE_MARKERS:  # evenly spread over the series, first and last included
        nonfinite_index = nonfinite_index[np.linspace(0, len(nonfinite_index) - 1, MAX_NONFINITE_MARKERS).astype(int)]
    if len(nonfinite_index):
        keep.append(nonfinite_index)
    return np.unique(np.concatenate(keep))


def series_for(run: Run, name: str, kind: str, description: str = "") -> MetricSeries:
    series, created = MetricSeries.objects.get_or_create(
        run=run, name=name, defaults={"kind": kind, "experiment_id": run.experiment_id, "description": description[:1024]}
    )
    if series.kind != kind:
        raise MetricError(f"{name!r} was logged as {series.get_kind_display().lower()}; use another name for {kind} values.")
    if description and not created and series.description != description[:1024]:
        series.description = description[:1024]
        series.save(update_fields=["description"])
    return series


def append_scalars(
    run: Run, name: str, steps: np.ndarray, values: np.ndarray, times: np.ndarray, description: str = ""
) -> int:
    """Append points, given as float64 columns, in order; a NaN step is the series' count so far plus its position
    in the batch (as if the script had counted). No Python runs per point."""
    if not len(values):
        return 0
    with transaction.atomic():
        series = next(iter(MetricSeries.objects.select_for_update().filter(run=run, name=name).order_by()[:1]), None)
        if series is None or series.kind != MetricKind.SCALAR or description and series.description != description[:1024]:
            series = series_for(run, name, MetricKind.SCALAR, description)  # made, refused, or described anew
            series = MetricSeries.objects.select_for_update().get(pk=series.pk)
        start = series.count
        steps = np.array(steps, dtype=np.float64)  # a copy: the caller's array stays as it was
        missing = np.flatnonzero(np.isnan(steps))
        steps[missing] = start + missing
        incoming = Points(steps, np.asarray(values, dtype=np.float64), np.asarray(times, dtype=np.float64))
        _write_chunks(series, incoming)
        finite = incoming.values[np.isfinite(incoming.values)]
        last = float(incoming.values[-1])
        updates = {
            "count": F("count") + len(incoming),
            "last_value": _db_float(last),
            "last_nonfinite": "" if math.isfinite(last) else json_number(last),
            "last_step": float(incoming.steps[-1]),
        }
        if len(finite):
            low, high = float(finite.min()), float(finite.max())
            updates["min_value"] = low if series.min_value is None else min(series.min_value, low)
            updates["max_value"] = high if series.max_value is None else max(series.max_value, high)
        MetricSeries.objects.filter(pk=series.pk).update(**updates)
    return len(incoming)


def append_points(run: Run, name: str, points: list[tuple[float | None, float, float]], description: str = "") -> int:
    """`append_scalars` for a few (step or None, value, time) points (system metrics, tests)."""
    if not points:
        return 0
    steps = np.array([np.nan if p[0] is None else p[0] for p in points], dtype=np.float64)
    return append_scalars(run, name, steps, np.array([p[1] for p in points], dtype=np.float64),
                          np.array([p[2] for p in points], dtype=np.float64), description)


def _db_float(value: float) -> float | None:
    """Databases keep no NaN/inf in a float column the same way everywhere: those are read from the chunks."""
    return float(value) if math.isfinite(value) else None


def _write_chunks(series: MetricSeries, incoming: Points) -> None:
    """Append to the open chunk, which is kept as segments of at most SEGMENT_POINTS points. A small append (a live
    run's flush of a few points) fills the last segment while that holds fewer than SMALL_SEGMENT_POINTS, so it
    rewrites at most 12 KB; a larger one (a 1,000-point batch) is a segment of its own, written once and never read
    back until the chunk is sealed. When the segments and the new points make a full chunk, they are merged into one
    sealed chunk with its summary, at the first segment's place in the order."""
    # (pk, seq, count) of each open segment: tuples, not model instances (up to a hundred of them per append)
    tail = [_Segment(*row) for row in MetricChunk.objects.filter(series=series, sealed=False).order_by("seq")
            .values_list("pk", "seq", "count")]
    open_count = sum(segment.count for segment in tail)
    offset = 0
    while offset < len(incoming):
        part = incoming.take(slice(offset, offset + CHUNK_POINTS - open_count))
        offset += len(part)
        if open_count + len(part) >= CHUNK_POINTS:
            _seal(series, tail, part)
            tail, open_count = [], 0
            continue
        open_count += len(part)
        last = tail[-1] if tail else None
        if last is not None and last.count < min(SMALL_SEGMENT_POINTS, SEGMENT_POINTS):
            fill = part.take(slice(0, SEGMENT_POINTS - last.count))
            existing = Points.decode(MetricChunk.objects.filter(pk=last.pk).values_list("data", flat=True).get())
            last.count += len(fill)
            MetricChunk.objects.filter(pk=last.pk).update(data=Points.concat([existing, fill]).encode(), count=last.count)
            part = part.take(slice(len(fill), None))
        for start in range(0, len(part), SEGMENT_POINTS):
            piece = part.take(slice(start, start + SEGMENT_POINTS))
            seq = tail[-1].seq + 1 if tail else _next_seq(series)  # the open segments come after every sealed chunk
            segment = MetricChunk.objects.create(series=series, seq=seq, count=len(piece), data=piece.encode())
            tail.append(_Segment(segment.pk, seq, len(piece)))


@dataclass
class _Segment:
    pk: int
    seq: int
    count: int


def _next_seq(series: MetricSeries) -> int:
    last_seq = MetricChunk.objects.filter(series=series).order_by("-seq").values_list("seq", flat=True).first()
    return 0 if last_seq is None else last_seq + 1


def _seal(series: MetricSeries, tail: list[_Segment], part: Points) -> None:
    """The open segments and `part` (together CHUNK_POINTS points) as one sealed chunk with its summary."""
    blobs = MetricChunk.objects.filter(pk__in=[segment.pk for segment in tail]).order_by("seq").values_list("data", flat=True)
    merged = Points.concat([*(Points.decode(blob) for blob in blobs), part])
    summary = merged.take(downsample_indices(merged.values, SUMMARY_POINTS)).encode()
    if not tail:
        MetricChunk.objects.create(series=series, seq=_next_seq(series), count=len(merged), data=merged.encode(),
                                   summary=summary, sealed=True)
        return
    MetricChunk.objects.filter(pk__in=[segment.pk for segment in tail[1:]]).delete()
    MetricChunk.objects.filter(pk=tail[0].pk).update(data=merged.encode(), count=len(merged), summary=summary,
                                                     sealed=True)


def read_scalars(series: MetricSeries, max_points: int = CHART_POINTS) -> tuple[Points, int]:
    """At most about max_points points of the series, and how many points it holds in all."""
    chunks = MetricChunk.objects.filter(series=series).order_by("seq")
    parts = [Points.decode(blob) for blob in chunks.filter(sealed=True).values_list("summary", flat=True)]
    parts += [Points.decode(blob) for blob in chunks.filter(sealed=False).values_list("data", flat=True)]
    points = Points.concat(parts)
    if len(points) > max_points:
        points = points.take(downsample_indices(points.values, max_points))
    return points, series.count


def append_entries(run: Run, name: str, kind: str, items: list) -> int:
    with transaction.atomic():
        series = series_for(run, name, kind)
        series = MetricSeries.objects.select_for_update().get(pk=series.pk)
        MetricEntry.objects.bulk_create(
            MetricEntry(series=series, seq=series.count + i, data=item) for i, item in enumerate(items)
        )
        MetricSeries.objects.filter(pk=series.pk).update(count=F("count") + len(items))
    return len(items)


def json_number(value: float):
    """A float for JSON: NaN and infinities become the strings a script would print."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value
