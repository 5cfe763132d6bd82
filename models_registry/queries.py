"""Reading the registry for the pages and the API: the model list (filtered, newest registration first, paged by
keyset) and a model's versions (newest first, paged by version number). Each page costs a fixed number of queries,
whatever the number of models or versions."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from django.db.models import Exists, JSONField, OuterRef, Q, Subquery
from django.db.models.fields.json import KeyTransform

from models_registry.models import ModelAlias, ModelVersion, RegisteredModel

SIDE_BY_SIDE_METRICS = 6


def _cursor(model: RegisteredModel) -> str:
    stamp = model.last_registered_at or model.created_at
    return f"{int(stamp.timestamp() * 1_000_000)}.{model.pk}"


def model_page(workspace, query: dict, page_size: int) -> tuple[list[RegisteredModel], str]:
    """Models of the workspace matching `query` (ModelListQuery's cleaned data), and the next page's cursor ("" on
    the last page). Each model carries `latest` (its newest version's number, framework and tags) and `alias_list`."""
    models = RegisteredModel.objects.filter(workspace=workspace)
    if not query.get("archived"):
        models = models.filter(archived=False)
    if query.get("q"):
        models = models.filter(name__icontains=query["q"])
    versions = ModelVersion.objects.filter(model=OuterRef("pk"))
    if query.get("framework"):
        models = models.filter(Exists(versions.filter(framework__iexact=query["framework"])))
    if query.get("tag"):
        key, value = query["tag"]
        tagged = versions.filter(tags__has_key=key)
        if value is not None:
            tagged = tagged.annotate(tag_value=KeyTransform(key, "tags")).filter(tag_value=value)
        models = models.filter(Exists(tagged))
    if query.get("alias"):
        models = models.filter(Exists(ModelAlias.objects.filter(model=OuterRef("pk"), name=query["alias"])))
    if query.get("after"):
        stamp, pk = query["after"]
        at = datetime.fromtimestamp(stamp / 1_000_000, tz=UTC)
        models = models.filter(Q(last_registered_at__lt=at) | Q(last_registered_at=at, pk__lt=pk))
    newest = ModelVersion.objects.filter(model=OuterRef("pk")).order_by("-version")
    models = models.annotate(
        latest_number=Subquery(newest.values("version")[:1]),
        latest_framework=Subquery(newest.values("framework")[:1]),
        latest_framework_version=Subquery(newest.values("framework_version")[:1]),
        latest_tags=Subquery(newest.values("tags")[:1], output_field=JSONField()),
    ).order_by("-last_registered_at", "-pk")
    rows = list(models[: page_size + 1])
    more = len(rows) > page_size
    rows = rows[:page_size]
    aliases: dict[int, list[tuple[str, int]]] = {}
    for alias in ModelAlias.objects.filter(model__in=rows).select_related("version").order_by("name"):
        aliases.setdefault(alias.model_id, []).append((alias.name, alias.version.version))
    for row in rows:
        row.alias_list = aliases.get(row.pk, [])
        if isinstance(row.latest_tags, str):  # some backends hand a JSON subquery back as text
            row.latest_tags = json.loads(row.latest_tags)
    return rows, _cursor(rows[-1]) if more and rows else ""


def version_page(model: RegisteredModel, before: int | None, page_size: int) -> tuple[list[ModelVersion], int | None]:
    """Versions of the model, newest first, below `before`; and the next page's `before` (None on the last page).
    Each version carries `alias_names`."""
    versions = ModelVersion.objects.filter(model=model).select_related("run", "created_by").order_by("-version")
    if before is not None:
        versions = versions.filter(version__lt=before)
    rows = list(versions[: page_size + 1])
    more = len(rows) > page_size
    rows = rows[:page_size]
    names: dict[int, list[str]] = {}
    for alias in ModelAlias.objects.filter(version__in=rows).order_by("name"):
        names.setdefault(alias.version_id, []).append(alias.name)
    for row in rows:
        row.alias_names = names.get(row.pk, [])
    return rows, rows[-1].version if more and rows else None


def metric_columns(versions: list[ModelVersion]) -> list[str]:
    """The metrics the versions' source runs share most, for comparing them side by side."""
    counts = Counter(name for version in versions for name in (version.lineage.get("metrics") or {}))
    return [name for name, _ in counts.most_common(SIDE_BY_SIDE_METRICS)]


def file_tree(files) -> list[dict]:
    """A version's files as a tree of folders and files with sizes (folders first, each sorted)."""
    root: dict = {"children": {}, "size": 0}
    for item in files:
        node = root
        parts = item.path.split("/")
        node["size"] += item.size
        for part in parts[:-1]:
            node = node["children"].setdefault(part, {"children": {}, "size": 0, "name": part})
            node["size"] += item.size
        node["children"][parts[-1]] = {"name": parts[-1], "path": item.path, "size": item.size, "file": True}

    def listing(node: dict, depth: int) -> list[dict]:
        children = sorted(node["children"].values(), key=lambda child: (bool(child.get("file")), child["name"]))
        flat = []
        for child in children:
            flat.append({"name": child["name"], "path": child.get("path", ""), "size": child["size"],
                         "file": bool(child.get("file")), "depth": depth})
            if not child.get("file"):
                flat.extend(listing(child, depth + 1))
        return flat

    return listing(root, 0)


def metric_chart(versions: list[ModelVersion], names: list[str]) -> dict:
    """{metric: {"x": versions, "y": values}} of the source runs' metrics at registration, oldest version first, for
    the model page's chart (values that are not numbers are left out)."""
    chart: dict[str, dict[str, list]] = {}
    for version in sorted(versions, key=lambda item: item.version):
        for name in names:
            raw = (version.lineage.get("metrics") or {}).get(name)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if value != value or value in (float("inf"), float("-inf")):
                continue
            series = chart.setdefault(name, {"x": [], "y": []})
            series["x"].append(version.version)
            series["y"].append(value)
    return {name: series for name, series in chart.items() if len(series["x"]) >= 2}
