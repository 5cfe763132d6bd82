"""Comparing 2 to 10 runs of one experiment: their metrics overlaid, how their configurations and parameters differ,
and a parallel-coordinates chart of their numeric parameters against a final metric.

GET `experiments/<name>/compare/?run=<id>&run=<id>[&metric=<name>...][&target=<name>]`. Any member may look.
Chart data comes from `metrics.read_scalars` (the same min/max-preserving downsampling as the run page, at most
CHART_POINTS points per series) and is embedded in the page as JSON; the browser draws it with Plotly.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runs.access import get_experiment_for_user
from runs.forms import CompareForm
from runs.metrics import read_scalars
from runs.models import MetricKind, MetricSeries, Run, RunParameter
from studio.forms import valid_query

DEFAULT_METRICS = 4
SYSTEM_PREFIX = "sys/"
# One colour per run, the same in every chart and in the table (Plotly's default colourway).
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


# --- Reading the runs' parameters ---------------------------------------------------------------------------


def run_parameters(runs: list[Run]) -> dict[int, dict[str, RunParameter]]:
    """Each run's parameters by name (from its arguments and its script), in one query."""
    found: dict[int, dict[str, RunParameter]] = {run.pk: {} for run in runs}
    for parameter in RunParameter.objects.filter(run_id__in=list(found)).order_by("name"):
        found[parameter.run_id][parameter.name] = parameter
    return found


# --- The page's parts -----------------------------------------------------------------------------------------


@dataclass
class ConfigRow:
    """One setting across the runs: `values` holds one string per run, None where the run does not set it."""

    label: str
    values: list[str | None]
    group: str = ""

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


def config_rows(runs: list[Run], params: dict[int, dict[str, RunParameter]]) -> list[ConfigRow]:
    """Every setting and parameter of the runs, differing ones first (in the order below), then identical ones."""
    rows = [
        ConfigRow("Display name", [run.display_name or None for run in runs]),
        ConfigRow("Entry script", [run.entry_script for run in runs]),
        ConfigRow("Compute target", [run.compute_target.name for run in runs]),
        ConfigRow("Maximum duration", [f"{run.max_duration_seconds} s" if run.max_duration_seconds else "no limit" for run in runs]),
        ConfigRow("Arguments", [shlex.join(run.arguments) if run.arguments else "none" for run in runs]),
    ]
    texts = [{name: parameter.text for name, parameter in params[run.pk].items()} for run in runs]
    for name in _union(texts):
        rows.append(ConfigRow(name, [found.get(name) for found in texts], "parameter"))
    for name in _union([run.env_vars for run in runs]):
        rows.append(ConfigRow(name, [run.env_vars.get(name) for run in runs], "environment variable"))
    for name in _union([run.tags for run in runs]):
        rows.append(ConfigRow(name, [run.tags.get(name) for run in runs], "tag"))
    return [row for row in rows if row.differs] + [row for row in rows if not row.differs]


def _union(mappings: list[dict]) -> list[str]:
    return sorted(set().union(*mappings))


def _finite_or_none(values) -> list[float | None]:
    return [value if math.isfinite(value) else None for value in values.tolist()]


def chart_data(runs: list[Run], series: dict[tuple[int, str], MetricSeries], metrics: list[str]) -> list[dict]:
    """One chart per metric with one trace per run that logged it: steps and values, downsampled."""
    charts = []
    for name in metrics:
        traces = []
        for run in runs:
            found = series.get((run.pk, name))
            if found is None:
                continue
            points, total = read_scalars(found)
            traces.append({"run": run.pk, "x": _finite_or_none(points.steps), "y": _finite_or_none(points.values),
                           "points": total})
        charts.append({"metric": name, "traces": traces})
    return charts


def parcoords_data(runs: list[Run], series: dict[tuple[int, str], MetricSeries], target: str | None,
                   params: dict[int, dict[str, RunParameter]]) -> dict:
    """Numeric parameters of the runs against the target metric's last value: one line per run with a final value
    of the target and at least one numeric parameter; a parameter becomes a dimension when it is a number in every
    such run. `notes` say what was left out and why.
    """
    notes = []
    numbers_of = {run.pk: {name: parameter.number for name, parameter in params[run.pk].items()} for run in runs}
    lines = [run for run in runs if any(number is not None for number in numbers_of[run.pk].values())]
    if len(lines) < len(runs):
        notes.append(f"Left out, no numeric parameters: {', '.join(_label(run) for run in runs if run not in lines)}.")
    if target:
        missing = [run for run in lines if _last_value(series.get((run.pk, target))) is None]
        if missing:
            notes.append(f"Left out, no final {target}: {', '.join(_label(run) for run in missing)}.")
        lines = [run for run in lines if run not in missing]
    dimensions, left_out = [], []
    for name in _union(list(numbers_of.values())):
        numbers = [numbers_of[run.pk].get(name) for run in lines]
        if lines and all(number is not None for number in numbers):
            dimensions.append({"label": name, "values": numbers})
        elif any(number is not None for number in numbers):
            left_out.append(name)
    if left_out:
        notes.append(f"Not a number in every run, so not plotted: {', '.join(left_out)}.")
    color = [_last_value(series.get((run.pk, target))) for run in lines] if target else []
    if target and lines:
        dimensions.append({"label": target, "values": color})
    return {"target": target or "", "runs": [run.pk for run in lines], "dimensions": dimensions, "color": color,
            "numeric_parameters": len(dimensions) - (1 if target and lines else 0), "notes": notes}


def _last_value(found: MetricSeries | None) -> float | None:
    return None if found is None else found.last_value


def _label(run: Run) -> str:
    return f"{run.title} #{run.pk}" if run.display_name else run.title


def default_metrics(names_per_run: list[set[str]]) -> list[str]:
    """Up to DEFAULT_METRICS metrics every run logged, alphabetically, system metrics only if nothing else."""
    common = sorted(set.intersection(*names_per_run)) if names_per_run else []
    chosen = [name for name in common if not name.startswith(SYSTEM_PREFIX)] or common
    return chosen[:DEFAULT_METRICS]


# --- The view -------------------------------------------------------------------------------------------------


@require_GET
@login_required
def compare_runs(request, workspace: str, name: str):
    access, experiment = get_experiment_for_user(request, workspace, name)
    query = valid_query(CompareForm, request)
    ids = query["run"]
    by_id = Run.objects.filter(experiment=experiment).select_related("compute_target").in_bulk(ids)
    unknown = [str(run_id) for run_id in ids if run_id not in by_id]
    if unknown:
        raise Http404(f"No run {', '.join(unknown)} in experiment {experiment.name}: compare runs of the same experiment.")
    runs = [by_id[run_id] for run_id in ids]
    scalars = MetricSeries.objects.filter(run__in=ids, kind=MetricKind.SCALAR).order_by("name")
    series = {(found.run_id, found.name): found for found in scalars}
    names_per_run = [{metric for run_id, metric in series if run_id == run.pk} for run in runs]
    all_names = sorted(set().union(*names_per_run))
    metrics = query["metric"] or default_metrics(names_per_run)
    target = query["target"] or (metrics[0] if metrics else "")
    unknown = [metric for metric in [*metrics, target] if metric and metric not in all_names]
    if unknown:
        raise BadRequest(f"None of these runs logged a scalar metric named {unknown[0]!r}; "
                         f"their metrics: {', '.join(all_names) or 'none'}.")
    colors = {run.pk: COLORS[index % len(COLORS)] for index, run in enumerate(runs)}
    params = run_parameters(runs)
    data = {
        "runs": [{"id": run.pk, "label": _label(run), "color": colors[run.pk]} for run in runs],
        "charts": chart_data(runs, series, metrics),
        "parcoords": parcoords_data(runs, series, target, params),
    }
    rows = config_rows(runs, params)
    context = {
        "access": access,
        "workspace": access.workspace,
        "experiment": experiment,
        "runs": [(run, colors[run.pk]) for run in runs],
        "metric_choices": [(metric, sum(metric in names for names in names_per_run)) for metric in all_names],
        "metrics": metrics,
        "target": target,
        "differing": [row for row in rows if row.differs],
        "identical": [row for row in rows if not row.differs],
        "data": data,
    }
    return render(request, "runs/compare.html", context)
