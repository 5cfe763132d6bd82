"""Run page telemetry: the metrics tab (charts, tables, images, child runs), one scalar series' chart data, and one
logged image.

Every view checks membership first (an outsider gets 404, the workspace is not disclosed), then finds the run inside
that workspace. Chart data is always downsampled on the server (`metrics.read_scalars`): the browser never receives
a raw series. JSON has no NaN or infinities: a non-finite value is sent as `null` and listed in `nonfinite`.
"""

from __future__ import annotations

import json
import math

import numpy as np
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Q, Sum
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django_htmx.http import HTMX_STOP_POLLING

from runs import metrics, storage
from runs.access import get_run_for_user
from runs.forms import MetricsTabForm, SeriesDataForm
from runs.models import MetricEntry, MetricKind, MetricSeries, Run
from studio.downloads import file_response
from studio.forms import valid_query

MAX_TABLE_ROWS = 1_000  # rows shown of a `row` series (the latest) or of a logged table
MAX_CHART_COLUMNS = 8  # numeric columns drawn in a table's chart (the note says how many there are)
MAX_HEATMAP = 100  # a square table up to this many columns is drawn as a heatmap
MAX_IMAGES = 12  # latest images shown per image series
MAX_CHILDREN = 200
CHILD_METRICS = 3
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml"}
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _compact_json(payload: dict, status: int = 200) -> HttpResponse:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    response = HttpResponse(body, content_type="application/json", status=status)
    response["Cache-Control"] = "no-cache"
    return response


# ---------------------------------------------------------------------------------------------------------------
# Chart data


def _numbers(array: np.ndarray) -> list:
    """Whole numbers as ints (shorter JSON: `12` rather than `12.0`), anything else as the floats they are."""
    if len(array) and np.all(np.isfinite(array)) and np.all(array == np.floor(array)) and np.abs(array).max() < 2**53:
        return array.astype(np.int64).tolist()
    return array.tolist()


def chart_trace(x: np.ndarray, values: np.ndarray) -> dict:
    """`{"x", "y", "nonfinite"}` for the browser: y is null where the value is NaN or infinite, and each such point
    is listed in `nonfinite` as `{"x", "value": "NaN"|"Infinity"|"-Infinity"}` so it can be drawn as a marker."""
    xs = _numbers(x)
    ys = values.tolist()
    nonfinite = []
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        nonfinite.append({"x": xs[i], "value": metrics.json_number(ys[i])})
        ys[i] = None
    return {"x": xs, "y": ys, "nonfinite": nonfinite}


def _x_axis(points: metrics.Points, mode: str, run: Run) -> np.ndarray:
    if mode == "relative":
        origin = (run.started_at or run.created_at).timestamp()
        return np.round(points.times - origin, 6)
    if mode == "time":
        return np.round(points.times * 1000.0, 3)  # epoch milliseconds, what a Plotly date axis reads
    return points.steps


@require_GET
@login_required
def series_data(request, workspace: str, run_id: int, series_id: int):
    """One scalar series, downsampled to at most about `max_points` points, against step, relative or wall-clock time."""
    _, run = get_run_for_user(request, workspace, run_id)
    series = get_object_or_404(MetricSeries, pk=series_id, run=run, kind=MetricKind.SCALAR)
    return _compact_json(series_payload(run, series, valid_query(SeriesDataForm, request)))


def series_payload(run: Run, series: MetricSeries, query: dict) -> dict:
    """A scalar series as the charts draw it (pages and the API)."""
    points, total = metrics.read_scalars(series, query["max_points"])
    return {
        "name": series.name,
        "count": max(total, len(points)),  # points appended while this request read them are shown, not counted
        "shown": len(points),
        **chart_trace(_x_axis(points, query["x"], run), points.values),
        "last": series.last_nonfinite or series.last_value,
        "min": series.min_value,
        "max": series.max_value,
        "final": run.is_final,
    }


# ---------------------------------------------------------------------------------------------------------------
# The metrics tab


def _number_or_none(value):
    """A cell as a float for charts and sorting, or None when it is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in SPECIAL:
        return SPECIAL[value]
    return None


def _cell(value) -> dict:
    """What a table cell shows, and the number it sorts by (None: it sorts as text)."""
    number = _number_or_none(value)
    if value is None:
        return {"text": "", "sort": None}
    if isinstance(value, bool):
        return {"text": "true" if value else "false", "sort": None}
    if number is None:
        return {"text": str(value), "sort": None}
    if math.isnan(number):
        return {"text": "NaN", "sort": None}
    if isinstance(value, float):
        return {"text": f"{value:.6g}", "sort": repr(value)}
    return {"text": str(value), "sort": str(value)}


def _numeric_column(rows: list[tuple[int, dict]], col: str) -> list[tuple[int, float]] | None:
    """(row number, value) of a column whose cells are all numbers (or empty), with at least one finite one."""
    numbers = [(index, _number_or_none(row[col])) for index, row in rows if row.get(col) is not None]
    if not numbers or any(n is None for _, n in numbers) or not any(math.isfinite(n) for _, n in numbers):
        return None
    return numbers


def _x_column(rows: list[tuple[int, dict]], columns: list[str]) -> str | None:
    """The first column, when it is a complete, strictly increasing number (an epoch or a step): the charts' x."""
    if not columns or len(rows) < 2:
        return None
    values = _numeric_column(rows, columns[0])
    if values is None or len(values) != len(rows):
        return None
    numbers = np.array([n for _, n in values])
    return columns[0] if np.all(np.isfinite(numbers)) and np.all(np.diff(numbers) > 0) else None


def _heatmap(columns: list[str], rows: list[tuple[int, dict]]) -> dict | None:
    """A square block of finite numbers (a confusion matrix: as many rows as numeric columns), as a heatmap's z with
    the column names along x and the row numbers along y; a first column of labels, when there is one more column
    than rows, names the rows instead."""
    label, values = (columns[0], columns[1:]) if len(columns) == len(rows) + 1 else (None, columns)
    if not 2 <= len(values) <= MAX_HEATMAP or len(values) != len(rows):
        return None
    z = []
    for _, row in rows:
        numbers = [_number_or_none(row.get(col)) for col in values]
        if any(n is None or not math.isfinite(n) for n in numbers):
            return None
        z.append([int(n) if n == int(n) and abs(n) < 2**53 else n for n in numbers])
    y = [str(row.get(label)) for _, row in rows] if label else [str(index) for index, _ in rows]
    return {"z": z, "x": values, "y": y, "x_title": "column", "y_title": label or "row"}


def _table(columns: list[str], rows: list[tuple[int, dict]], total: int, *, square_as_heatmap: bool = False) -> dict:
    """A sortable table and a chart chosen by its data: a heatmap when it is a logged table holding a square block of numbers, else its
    numeric columns (line or bar, the user's choice) against the row number or an increasing first column such as
    the epoch."""
    body = [{"index": index, "cells": [_cell(row.get(col)) for col in columns]} for index, row in rows]
    heatmap = _heatmap(columns, rows) if square_as_heatmap and len(rows) == total else None
    if heatmap:
        chart = {"traces": [], "heatmap": heatmap}
        return {"columns": columns, "rows": body, "total": total, "shown": len(rows), "chart": chart}
    x_column = _x_column(rows, columns)
    x_of = {index: _number_or_none(row[x_column]) for index, row in rows} if x_column else {}
    traces, numeric = [], 0
    for col in columns:
        numbers = None if col == x_column else _numeric_column(rows, col)
        if numbers is None:
            continue
        numeric += 1
        if len(traces) == MAX_CHART_COLUMNS:
            continue
        x = np.array([x_of.get(i, i) for i, _ in numbers], dtype=np.float64)
        y = np.array([n for _, n in numbers], dtype=np.float64)
        keep = metrics.downsample_indices(y, metrics.CHART_POINTS)
        traces.append({"name": col, **chart_trace(x[keep], y[keep])})
    chart = None
    if traces and len(rows) > 1:
        chart = {"traces": traces, "x_title": x_column or "row", "legend": True, "switchable": True,
                 "columns": numeric}
    return {"columns": columns, "rows": body, "total": total, "shown": len(rows), "chart": chart}


def _row_series_table(series: MetricSeries) -> dict:
    entries = list(series.entries.order_by("-seq").values_list("seq", "data")[:MAX_TABLE_ROWS])[::-1]
    rows = [(seq, data) for seq, data in entries if isinstance(data, dict)]
    columns = list(dict.fromkeys(col for _, row in rows for col in row))
    return _table(columns, rows, series.count)


def _logged_table(data) -> dict:
    if not isinstance(data, dict):
        return _table([], [], 0)
    data = {col: values for col, values in data.items() if isinstance(values, list)}
    columns = list(data)
    length = max((len(values) for values in data.values()), default=0)
    shown = min(length, MAX_TABLE_ROWS)
    rows = [(i, {col: (data[col][i] if i < len(data[col]) else None) for col in columns}) for i in range(shown)]
    return _table(columns, rows, length, square_as_heatmap=True)


def _list_chart(data) -> dict | None:
    if not isinstance(data, list) or not data:
        return None
    values = np.array(
        [_number_or_none(v) if _number_or_none(v) is not None else math.nan for v in data], dtype=np.float64
    )
    keep = metrics.downsample_indices(values, metrics.CHART_POINTS)
    return {
        "traces": [{"name": "value", **chart_trace(keep.astype(np.float64), values[keep])}],
        "count": len(values),
        "subtitle": f"{len(values):,} value{'' if len(values) == 1 else 's'}",
    }


def _images(series: MetricSeries) -> list[dict]:
    entries = list(series.entries.order_by("-seq").values("pk", "seq", "data")[:MAX_IMAGES])[::-1]
    images = []
    for entry in entries:
        data = entry["data"] if isinstance(entry["data"], dict) else {}
        images.append({"pk": entry["pk"], "seq": entry["seq"], "format": data.get("format"), "size": data.get("size")})
    return images


def _children(run: Run) -> dict | None:
    """The run's child runs with the latest values of their (up to) three most common user metrics: three queries."""
    children = list(Run.objects.filter(parent=run).order_by("id")[: MAX_CHILDREN + 1])
    if not children:
        return None
    shown = children[:MAX_CHILDREN]
    user_scalars = MetricSeries.objects.filter(run__parent=run, kind=MetricKind.SCALAR).exclude(name__startswith="sys/")
    names = list(
        user_scalars.values("name")
        .annotate(n=Count("id"))
        .order_by("-n", "name")
        .values_list("name", flat=True)[:CHILD_METRICS]
    )
    latest = {
        (s.run_id, s.name): s.last_display
        for s in user_scalars.filter(name__in=names, run__in=shown).only(
            "run_id", "name", "last_value", "last_nonfinite"
        )
    }
    rows = [{"run": child, "values": [latest.get((child.pk, name), "") for name in names]} for child in shown]
    total = len(children) if len(children) <= MAX_CHILDREN else Run.objects.filter(parent=run).count()
    return {"metric_names": names, "rows": rows, "total": total}


def _version(run: Run) -> str:
    """Changes when the tab's layout would: a new series, a new row/table/image entry, a child run started or ended."""
    summary = MetricSeries.objects.filter(run=run).aggregate(
        series=Count("id"), entries=Sum("count", filter=~Q(kind=MetricKind.SCALAR), default=0)
    )
    children = Run.objects.filter(parent=run).aggregate(n=Count("id"), ended=Count("ended_at"))
    return f"{summary['series']}.{summary['entries']}.{children['n']}.{children['ended']}"


def _telemetry(run: Run) -> dict:
    all_series = list(MetricSeries.objects.filter(run=run).order_by("name"))
    by_kind: dict[str, list[MetricSeries]] = {kind: [] for kind in MetricKind.values}
    for series in all_series:
        by_kind[series.kind].append(series)
    latest = {
        entry.series_id: entry.data
        for entry in MetricEntry.objects.filter(
            series__in=by_kind[MetricKind.LIST] + by_kind[MetricKind.TABLE], seq=F("series__count") - 1
        )
    }
    lists = [
        {"series": s, "chart": _list_chart(latest.get(s.pk)), "chart_id": f"list-data-{s.pk}"}
        for s in by_kind[MetricKind.LIST]
    ]
    tables = [{"series": s, "table": _row_series_table(s)} for s in by_kind[MetricKind.ROW]]
    tables += [{"series": s, "table": _logged_table(latest.get(s.pk))} for s in by_kind[MetricKind.TABLE]]
    for item in tables:
        item["chart_id"] = f"table-data-{item['series'].pk}"
    tables.sort(key=lambda item: item["series"].name)
    images = [{"series": s, "images": _images(s)} for s in by_kind[MetricKind.IMAGE]]
    scalars = by_kind[MetricKind.SCALAR]
    user_scalars = [s for s in scalars if not s.is_system]
    return {
        "scalars": user_scalars,
        "system": [s for s in scalars if s.is_system],
        "lists": lists,
        "tables": tables,
        "images": images,
        "has_user_metrics": any(not (s.kind == MetricKind.SCALAR and s.is_system) for s in all_series),
        "children": _children(run),
    }


@require_GET
@login_required
def run_metrics(request, workspace: str, run_id: int):
    """The metrics tab: an htmx partial for the run page, or a page of its own when opened directly.

    While the run is going, the tab polls itself with `?known=<version>`: 204 while nothing new appeared (so
    nothing is swapped and the charts keep refreshing their own data), 286 once the run is final.
    """
    access, run = get_run_for_user(request, workspace, run_id)
    query = valid_query(MetricsTabForm, request)
    version = _version(run)
    if query["known"] and query["known"] == version:
        return HttpResponse(status=HTMX_STOP_POLLING if run.is_final else 204)
    context = {"access": access, "workspace": access.workspace, "run": run, "version": version, **_telemetry(run)}
    template = "runs/run_metrics.html#metrics-tab" if request.htmx else "runs/run_metrics.html"
    return render(request, template, context)


# ---------------------------------------------------------------------------------------------------------------
# Images


@require_GET
@login_required
def run_image(request, workspace: str, run_id: int, entry_id: int):
    """One logged image. PNG and JPEG are shown inline; SVG (it can carry scripts) is only ever a download.

    The file's path comes from the stored entry, never from the request, and must stay inside the run's images.
    """
    _, run = get_run_for_user(request, workspace, run_id)
    entry = get_object_or_404(
        MetricEntry.objects.select_related("series"), pk=entry_id, series__run=run, series__kind=MetricKind.IMAGE
    )
    data = entry.data if isinstance(entry.data, dict) else {}
    fmt, relative = data.get("format"), data.get("file")
    if fmt not in IMAGE_TYPES or not isinstance(relative, str):
        raise Http404("This image entry names no stored file.")
    images = (storage.run_dir(run.pk) / "images").resolve()
    path = (storage.run_dir(run.pk) / relative).resolve()
    if not path.is_relative_to(images) or not path.is_file():
        raise Http404("The image file is missing from the run's storage.")
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in entry.series.name)[:100]
    filename = f"{stem}-{entry.seq}{path.suffix}"
    svg = fmt == "svg"
    response = file_response(
        request, open(path, "rb"), filename=filename, as_attachment=svg, content_type=IMAGE_TYPES[fmt]
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=86400"  # an entry's image never changes
    if svg:
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    return response
