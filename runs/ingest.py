"""The ingest API a script's SDK writes to, authenticated by the run's token (`Authorization: Bearer <token>`).

All routes live under /api/v1/runs/<run_id>/ and answer JSON; errors are `{"error": "<what to fix>"}`:

- POST metrics  `{"series": [{"name", "description"?, "points": [[step|null, value, time], ...]}]}`
  (values are numbers or "NaN", "Infinity", "-Infinity"; at most 10,000 points and 2 MB per request)
- POST entries  `{"entries": [{"name", "kind": "list"|"row"|"table", "data"}]}`
- GET/POST tags `{"tags": {"key": "value" or null}}`
- POST images   multipart `name`, `file` (PNG, JPEG or SVG)
- POST files    multipart `name` (a relative path under outputs/), `file`
- POST children `{"name": str|null}` -> 201 `{"run_id": id}`
- POST status   `{"status": "Completed"|"Failed", "reason": str}`
"""

from __future__ import annotations

import functools
import json
import math
import posixpath
import shutil

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from runs import metrics, storage, tokens
from runs.forms import TAG_KEY
from runs.models import ACTIVE_STATES, MetricKind, Run, RunStatus

MAX_POINTS = 10_000
MAX_SERIES = 100
MAX_ENTRIES = 1_000
MAX_TABLE_CELLS = 100_000
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
IMAGE_TYPES = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def api_route(*methods: str):
    """Method check, token check (the run must be in the token's scope and still going), JSON errors."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request, run_id: int):
            try:
                if request.method not in methods:
                    raise ApiError(405, f"Use {' or '.join(methods)}.")
                run = _authorized_run(request, run_id)
                return view(request, run)
            except ApiError as error:
                response = JsonResponse({"error": error.message}, status=error.status)
            except RequestDataTooBig:
                response = JsonResponse({"error": "The request is too large: send smaller batches."}, status=413)
            if response.status_code == 405:
                response["Allow"] = ", ".join(methods)
            return response

        return wrapper

    return decorate


def _authorized_run(request, run_id: int) -> Run:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise ApiError(401, "Send the run's token as 'Authorization: Bearer <token>' (STUDIO_RUN_TOKEN).")
    root = tokens.authenticate(header[7:].strip())
    if root is None:
        raise ApiError(401, "This token is not valid.")
    if root.status not in ACTIVE_STATES:
        raise ApiError(403, f"Run {root.pk} has ended ({root.status}): its token no longer works.")
    target = Run.objects.select_related("parent", "experiment", "workspace").filter(pk=run_id).first()
    if target is None or not tokens.in_scope(root, target):
        raise ApiError(403, f"This token may write only to run {root.pk} and its child runs.")
    if request.method != "GET" and target.is_final:
        raise ApiError(409, f"Run {target.pk} has ended ({target.status}): nothing more can be recorded for it.")
    return target


def _json_body(request) -> dict:
    if len(request.body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise ApiError(413, "The request is too large: send smaller batches.")
    try:
        body = json.loads(request.body, parse_constant=SPECIAL.__getitem__)
    except (ValueError, KeyError):
        raise ApiError(400, "The body must be JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return body


def _name(value) -> str:
    try:
        return metrics.check_name(value)
    except metrics.MetricError as error:
        raise ApiError(400, str(error)) from None


def _number(value, what: str, *, finite: bool) -> float:
    if isinstance(value, str) and value in SPECIAL and not finite:
        return SPECIAL[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{what} must be a number{'' if finite else ' (or NaN, Infinity, -Infinity)'}, not {value!r:.40}.")
    number = float(value)
    if finite and not math.isfinite(number):
        raise ApiError(400, f"{what} must be a finite number.")
    return number


def _points(raw, name: str) -> list[tuple[float | None, float, float]]:
    if not isinstance(raw, list):
        raise ApiError(400, f"{name}: points must be a list of [step, value, time].")
    points = []
    for point in raw:
        if not isinstance(point, list) or len(point) != 3:
            raise ApiError(400, f"{name}: each point is [step or null, value, time].")
        step = None if point[0] is None else _number(point[0], f"{name}: step", finite=True)
        points.append((step, _number(point[1], f"{name}: value", finite=False), _number(point[2], f"{name}: time", finite=True)))
    return points


@api_route("POST")
def post_metrics(request, run: Run):
    body = _json_body(request)
    series = body.get("series")
    if not isinstance(series, list) or not series:
        raise ApiError(400, "Send {'series': [{'name': ..., 'points': [[step, value, time], ...]}]}.")
    if len(series) > MAX_SERIES:
        raise ApiError(400, f"Send at most {MAX_SERIES} series per request.")
    parsed = []
    for item in series:
        if not isinstance(item, dict):
            raise ApiError(400, "Each series is an object with a name and points.")
        name = _name(item.get("name"))
        description = item.get("description") or ""
        if not isinstance(description, str):
            raise ApiError(400, f"{name}: the description must be text.")
        parsed.append((name, _points(item.get("points"), name), description))
    total = sum(len(points) for _, points, _ in parsed)
    if total > MAX_POINTS:
        raise ApiError(400, f"Send at most {MAX_POINTS:,} points per request ({total:,} sent).")
    stored = 0
    with transaction.atomic():
        for name, points, description in parsed:
            try:
                stored += metrics.append_scalars(run, name, points, description)
            except metrics.MetricError as error:
                raise ApiError(400, str(error)) from None
    return JsonResponse({"stored": stored})


def _entry_data(kind: str, data, name: str):
    def scalar(value):
        if value is None or isinstance(value, str | bool):
            return value
        return metrics.json_number(_number(value, f"{name}: a cell", finite=False))

    if kind == MetricKind.LIST:
        if not isinstance(data, list) or len(data) > MAX_TABLE_CELLS:
            raise ApiError(400, f"{name}: a list is a JSON array of at most {MAX_TABLE_CELLS:,} numbers.")
        return [metrics.json_number(_number(v, f"{name}: a list value", finite=False)) for v in data]
    if kind == MetricKind.ROW:
        if not isinstance(data, dict) or not data or len(data) > 100:
            raise ApiError(400, f"{name}: a row is an object of 1-100 columns.")
        return {_name(str(k)): scalar(v) for k, v in data.items()}
    if kind == MetricKind.TABLE:
        if not isinstance(data, dict) or not data or not all(isinstance(v, list) for v in data.values()):
            raise ApiError(400, f"{name}: a table is an object of columns, each a list of values.")
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise ApiError(400, f"{name}: every column of a table must have the same length.")
        if lengths.pop() * len(data) > MAX_TABLE_CELLS:
            raise ApiError(400, f"{name}: a table holds at most {MAX_TABLE_CELLS:,} cells.")
        return {_name(str(k)): [scalar(v) for v in column] for k, column in data.items()}
    raise ApiError(400, f"{name}: kind must be list, row or table.")


@api_route("POST")
def post_entries(request, run: Run):
    entries = _json_body(request).get("entries")
    if not isinstance(entries, list) or not entries or len(entries) > MAX_ENTRIES:
        raise ApiError(400, f"Send {{'entries': [...]}} with 1-{MAX_ENTRIES:,} entries.")
    with transaction.atomic():
        for entry in entries:
            if not isinstance(entry, dict):
                raise ApiError(400, "Each entry is an object with name, kind and data.")
            name, kind = _name(entry.get("name")), entry.get("kind")
            data = _entry_data(kind, entry.get("data"), name)
            try:
                metrics.append_entries(run, name, kind, [data])
            except metrics.MetricError as error:
                raise ApiError(400, str(error)) from None
    return JsonResponse({"stored": len(entries)})


@api_route("GET", "POST")
def tags(request, run: Run):
    if request.method == "GET":
        return JsonResponse({"tags": run.tags})
    new = _json_body(request).get("tags")
    if not isinstance(new, dict):
        raise ApiError(400, "Send {'tags': {'key': 'value'}}.")
    for key, value in new.items():
        if not TAG_KEY.match(key):
            raise ApiError(400, f"Tag key {key[:40]!r}: use 1-128 letters, digits or _ . : / -.")
        if value is not None and (not isinstance(value, str | int | float) or isinstance(value, bool) or len(str(value)) > 1024):
            raise ApiError(400, f"Tag {key}: the value must be text of at most 1,024 characters, or null.")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        run.tags.update({key: "" if value is None else str(value) for key, value in new.items()})
        if len(run.tags) > 50:
            raise ApiError(400, "A run holds at most 50 tags.")
        run.save(update_fields=["tags"])
    return JsonResponse({"tags": run.tags})


def _upload(request):
    upload = request.FILES.get("file")
    name = request.POST.get("name", "")
    if upload is None:
        raise ApiError(400, "Send the file as the multipart field 'file'.")
    return upload, name


def _image_format(upload) -> str:
    """PNG and JPEG by their magic bytes; SVG when the text starts with markup and holds an <svg> element."""
    head = upload.read(8192)
    upload.seek(0)
    for fmt, magic in IMAGE_TYPES.items():
        if head.startswith(magic):
            return fmt
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<") and b"<svg" in text and b"\x00" not in text:
        return "svg"
    raise ApiError(400, "Images must be PNG, JPEG or SVG.")


@api_route("POST")
def post_image(request, run: Run):
    upload, name = _upload(request)
    name = _name(name)
    if upload.size > settings.STUDIO_IMAGE_MAX_BYTES:
        raise ApiError(413, f"Images are at most {settings.STUDIO_IMAGE_MAX_BYTES // 1024 // 1024} MB.")
    fmt = _image_format(upload)
    with transaction.atomic():
        try:
            series = metrics.series_for(run, name, MetricKind.IMAGE)
            relative = f"images/{series.pk}/{series.count}.{'jpg' if fmt == 'jpeg' else fmt}"
            metrics.append_entries(run, name, MetricKind.IMAGE, [{"file": relative, "format": fmt, "size": upload.size}])
        except metrics.MetricError as error:
            raise ApiError(400, str(error)) from None
        target = storage.run_dir(run.pk) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
    return JsonResponse({"stored": relative}, status=201)


def _output_path(name: str) -> str:
    name = name.strip()
    normalized = posixpath.normpath(name) if name else ""
    if (
        not normalized
        or normalized in (".", "..")
        or normalized.startswith(("/", "../"))
        or "\\" in name
        or "\x00" in name
        or len(normalized) > 1024
    ):
        raise ApiError(400, "The file name must be a relative path such as 'model.pkl' or 'plots/roc.png'.")
    return normalized


@api_route("POST")
def post_file(request, run: Run):
    upload, name = _upload(request)
    relative = _output_path(name)
    if upload.size > settings.STUDIO_UPLOAD_MAX_BYTES:
        raise ApiError(413, f"Files are at most {settings.STUDIO_UPLOAD_MAX_BYTES:,} bytes (STUDIO_UPLOAD_MAX_BYTES).")
    root = storage.run_dir(run.pk) / "outputs"
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ApiError(400, "The file name must stay inside the run's outputs.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        shutil.copyfileobj(upload, handle, 1024 * 1024)
    return JsonResponse({"stored": f"outputs/{relative}"}, status=201)


@api_route("POST")
def post_child(request, run: Run):
    name = _json_body(request).get("name") or ""
    if not isinstance(name, str) or len(name) > 255:
        raise ApiError(400, "A child run's name is text of at most 255 characters.")
    child = run.create_child(name)
    return JsonResponse({"run_id": child.pk}, status=201)


@api_route("POST")
def post_status(request, run: Run):
    body = _json_body(request)
    status, reason = body.get("status"), body.get("reason") or ""
    if status not in (RunStatus.COMPLETED, RunStatus.FAILED) or not isinstance(reason, str):
        raise ApiError(400, "Send {'status': 'Completed' or 'Failed', 'reason': '...'}.")
    reason = reason[:10_000]
    if run.parent_id is None:
        # The script's own run ends when its process does; a reported failure decides how it ends.
        if status == RunStatus.FAILED:
            Run.objects.filter(pk=run.pk).update(reported_failure=reason or "Failed by the script.")
        return JsonResponse({"status": run.status})
    run.end_with_descendants(status, reason)
    return JsonResponse({"status": status})
