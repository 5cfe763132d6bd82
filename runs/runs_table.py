"""The experiment page's runs table: which runs, in which order, one page at a time, with parameter and metric
columns.

Built so an experiment of 100,000 runs answers in milliseconds:

- only top-level runs are rows; a run's children are fetched when its row is expanded (`children`);
- sorting by a metric walks the (experiment, name, last_value) index of MetricSeries (`series_sort_by_last`) and
  joins each series to its run by primary key, so the first page reads about 50 index entries, not 100,000 rows;
- pages are keyset pages ("the runs listed below run X" / "above run X") on (sort value, id), never OFFSET, so a
  deep page costs what the first one does;
- runs without a value for the sort key (no such metric, never started, no display name) come after all the others
  in both directions, newest first: they are a second segment of the list, read only once the first one is used up;
- parameters work the same way through the (experiment, name, sort_key) index of RunParameter (`parameter_sort`):
  `sort_key` orders numbers by value, then text, in one column (see runs/parameters.py);
- the last values of the chosen metrics for the shown runs come in one query (`attach_metric_cells`), the values of
  the chosen parameters in another (`attach_parameter_cells`), the number of children of each shown run in a third
  (`attach_child_counts`).

A metric's "last value" is `MetricSeries.last_value`; a series whose last value was NaN or infinite has no
last_value in the database, so it sorts with the runs that lack the metric (its cell still shows "NaN").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db import connection
from django.db.models import Count, Exists, F, FloatField, Func, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Now, NullIf
from django.db.models.lookups import Exact

from runs import parameters
from runs.models import Experiment, MetricSeries, Run, RunParameter

DEFAULT_METRIC_COLUMNS = 5
DEFAULT_PARAMETER_COLUMNS = 5
CHILDREN_LIMIT = 200
SYSTEM_PREFIX = "sys/"

class ElapsedSeconds(Func):
    """Seconds from the second expression to the first, as a float, computed in the database.

    On SQLite, Django subtracts datetimes through a Python function called once per row (about 0.6 s to sort
    100,000 runs); julianday() is built in.
    """

    arity = 2
    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra):
        (end, end_params), (start, start_params) = (compiler.compile(e) for e in self.get_source_expressions())
        return f"((julianday({end}) - julianday({start})) * 86400.0)", [*end_params, *start_params]

    def as_sql(self, compiler, connection, **extra):
        (end, end_params), (start, start_params) = (compiler.compile(e) for e in self.get_source_expressions())
        return f"EXTRACT(EPOCH FROM ({end} - {start}))", [*end_params, *start_params]


# Sortable columns of the Run model and the value each sorts by; a NULL value means "missing": sorted last.
COLUMNS = {
    "id": F("id"),
    "name": NullIf(F("display_name"), Value("")),
    "status": F("status"),
    "started": F("started_at"),
    "duration": ElapsedSeconds(Coalesce(F("ended_at"), Now()), F("started_at")),
    "compute": F("compute_target__name"),
}
NEVER_MISSING = {"id", "status", "compute"}


class TableError(ValueError):
    """A query the table cannot answer; the message says what to change."""


# --- What the query string asks for --------------------------------------------------------------------------


NAMED = ("metric", "param")  # columns of a metric or a parameter, named after the colon: `metric:loss`


@dataclass(frozen=True)
class Sort:
    """`column` is a key of COLUMNS, "metric" or "param" (then `name` names it). Text form: `started`, `-metric:loss`,
    `param:learning_rate`."""

    column: str = "id"
    descending: bool = True
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Sort:
        if not text:
            return cls()
        descending = text.startswith("-")
        key = text[1:] if descending else text
        column, sep, name = key.partition(":")
        if sep and column in NAMED and name:
            return cls(column, descending, name)
        if key in COLUMNS:
            return cls(key, descending)
        choices = ", ".join([*COLUMNS, "metric:<name>", "param:<name>"])
        raise TableError(f"Cannot sort by {text!r}: use one of {choices}, with a leading - for descending order.")

    @property
    def is_default(self) -> bool:
        return self == Sort()

    @property
    def key(self) -> str:
        """The column's name in the query string, without direction: `started`, `metric:loss`, `param:lr`."""
        return f"{self.column}:{self.name}" if self.column in NAMED else self.column

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.key


@dataclass(frozen=True)
class TagFilter:
    """`key` (the run has the tag) or `key:value` (the tag has exactly that value); split at the first colon."""

    key: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> TagFilter:
        key, sep, value = text.partition(":")
        return cls(key, value if sep else None)

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}:{self.value}"


@dataclass(frozen=True)
class MetricRange:
    """`name:low:high`: low <= last value <= high. Either bound may be left empty; names may hold colons."""

    name: str
    low: float | None
    high: float | None

    @classmethod
    def parse(cls, text: str) -> MetricRange:
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise TableError(f"Range {text!r}: write metric:low:high, such as loss:0:0.5 or accuracy:0.9: (open end).")
        name, low, high = parts
        bounds = []
        for bound in (low, high):
            if bound.strip() == "":
                bounds.append(None)
                continue
            try:
                number = float(bound)
            except ValueError:
                raise TableError(f"Range {text!r}: {bound!r} is not a number.") from None
            if not math.isfinite(number):
                raise TableError(f"Range {text!r}: bounds must be finite numbers (leave one empty for an open end).")
            bounds.append(number)
        if bounds == [None, None]:
            raise TableError(f"Range {text!r}: give a low bound, a high bound or both.")
        if None not in bounds and bounds[0] > bounds[1]:
            raise TableError(f"Range {text!r}: the low bound is above the high bound.")
        return cls(name, bounds[0], bounds[1])

    def lookups(self, prefix: str = "") -> dict:
        found = {}
        if self.low is not None:
            found[f"{prefix}last_value__gte"] = self.low
        if self.high is not None:
            found[f"{prefix}last_value__lte"] = self.high
        return found

    def __str__(self) -> str:
        def text(bound):  # the shortest text that reads back as the same float
            if bound is None:
                return ""
            shown = repr(bound)
            return shown[:-2] if shown.endswith(".0") else shown

        return f"{self.name}:{text(self.low)}:{text(self.high)}"


@dataclass(frozen=True)
class ParamFilter:
    """`name=value`: the parameter has that value (as shown, or the same number: `lr=0.1` matches 0.1 and "0.10");
    `name:low:high`: its value is a number with low <= value <= high (either bound may be empty)."""

    name: str
    value: str | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def parse(cls, text: str) -> ParamFilter:
        name, sep, value = text.partition("=")
        if sep:
            if not name:
                raise TableError(f"Parameter filter {text!r}: write name=value, such as optimizer=adam.")
            return cls(name, value=value)
        try:
            bounds = MetricRange.parse(text)
        except TableError:
            raise TableError(f"Parameter filter {text!r}: write name=value (optimizer=adam) or name:low:high "
                             "(lr:0.001:0.1, an end may be empty).") from None
        return cls(bounds.name, low=bounds.low, high=bounds.high)

    def q(self) -> Q:
        """The condition on a RunParameter row, on its sort key: the key orders numbers by value, so a range or a
        number is a range of the (experiment, name, sort_key) index, also when the table is sorted by it."""
        if self.value is not None:
            number = parameters.as_number(self.value)
            if number is not None:
                return Q(sort_key=parameters.sort_key(self.value, number))  # the same number, however written
            return Q(sort_key=parameters.sort_key(self.value, None), text=self.value)
        low = "n" if self.low is None else parameters.sort_key("", self.low)  # every number's key starts with "n"
        high = Q(sort_key__lt="o") if self.high is None else Q(sort_key__lte=parameters.sort_key("", self.high))
        return Q(sort_key__gte=low) & high

    def __str__(self) -> str:
        if self.value is not None:
            return f"{self.name}={self.value}"
        return str(MetricRange(self.name, self.low, self.high))


@dataclass(frozen=True)
class Filters:
    status: str = ""
    tags: tuple[TagFilter, ...] = ()
    ranges: tuple[MetricRange, ...] = ()
    params: tuple[ParamFilter, ...] = ()


@dataclass
class Page:
    """One page of rows, in list order. `above`/`below` are the run ids to page from (None: no such page)."""

    runs: list[Run]
    above: int | None = None
    below: int | None = None


# --- Metric names ---------------------------------------------------------------------------------------------


def _distinct_names(model, experiment: Experiment, condition: str = "") -> list[str]:
    """Distinct `name`s of the model's rows in the experiment, sorted.

    A plain SELECT DISTINCT reads every row of the experiment (500,000 rows for 100,000 runs with 5 metrics: over
    half a second on SQLite); this walks the model's (experiment, name, ...) index from one name to the next (a
    "skip scan" written as a recursive query), so it costs one index seek per distinct name. `condition` (SQL on the
    alias `s`) keeps only names some row of which meets it.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    having = f"AND EXISTS (SELECT 1 FROM {table} s WHERE s.experiment_id = %s AND s.name = names.name AND {condition})"
    sql = f"""
        WITH RECURSIVE names(name) AS (
            SELECT MIN(name) FROM {table} WHERE experiment_id = %s
            UNION ALL
            SELECT (SELECT MIN(s.name) FROM {table} s WHERE s.experiment_id = %s AND s.name > names.name)
            FROM names WHERE names.name IS NOT NULL
        )
        SELECT names.name FROM names
        WHERE names.name IS NOT NULL {having if condition else ""}
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [experiment.pk] * (3 if condition else 2))
        return sorted(row[0] for row in cursor.fetchall())


def scalar_metric_names(experiment: Experiment) -> list[str]:
    """Names of the scalar series logged in the experiment, sorted. A name counts as scalar when some series of it
    has a last value (only scalar series have one)."""
    return _distinct_names(MetricSeries, experiment, "s.last_value IS NOT NULL")


def parameter_names(experiment: Experiment) -> list[str]:
    """Names of the parameters of the experiment's runs (child runs too), sorted."""
    return _distinct_names(RunParameter, experiment)


def default_columns(names: list[str]) -> list[str]:
    """The first DEFAULT_METRIC_COLUMNS names alphabetically, leaving out system metrics (`sys/...`)."""
    return [name for name in sorted(names) if not name.startswith(SYSTEM_PREFIX)][:DEFAULT_METRIC_COLUMNS]


def default_parameter_columns(names: list[str]) -> list[str]:
    """The first DEFAULT_PARAMETER_COLUMNS parameter names alphabetically."""
    return sorted(names)[:DEFAULT_PARAMETER_COLUMNS]


# --- Which runs, in which order -------------------------------------------------------------------------------


def _conditions(
    experiment: Experiment, filters: Filters, *, prefix: str, outer_id: str, skip_range: str = "", skip_param: str = ""
) -> list:
    """The filters as WHERE conditions on Run, reached through `prefix` ("" from Run, "run__" from MetricSeries or
    RunParameter).

    A range on metric `skip_range`, and a filter on parameter `skip_param`, are left out: the caller applies them to
    the rows it walks.
    """
    found: list = [Q(**{f"{prefix}experiment": experiment, f"{prefix}parent__isnull": True})]
    if filters.status:
        found.append(Q(**{f"{prefix}status": filters.status}))
    for tag in filters.tags:
        if tag.value is None:
            found.append(Q(**{f"{prefix}tags__has_key": tag.key}))
        else:
            found.append(Exact(KeyTextTransform(tag.key, f"{prefix}tags"), tag.value))
    for metric_range in filters.ranges:
        if metric_range.name == skip_range:
            continue
        series = MetricSeries.objects.filter(run_id=OuterRef(outer_id), name=metric_range.name, **metric_range.lookups())
        found.append(Exists(series))
    for param in filters.params:
        if param.name == skip_param:
            continue
        found.append(Exists(RunParameter.objects.filter(param.q(), run_id=OuterRef(outer_id), name=param.name)))
    return found


@dataclass
class _Segment:
    """Run ids in list order (`rows` selects only the id); `id_field`/`value_field` name the keyset's columns."""

    rows: QuerySet
    id_field: str
    value_field: str
    descending: bool

    def ordered(self, *, reverse: bool = False) -> QuerySet:
        descending = self.descending != reverse
        sign = "-" if descending else ""
        fields = [self.value_field] if self.value_field == self.id_field else [self.value_field, self.id_field]
        return self.rows.order_by(*(sign + name for name in fields))

    def past(self, value, run_id: int, *, reverse: bool = False) -> QuerySet:
        """The rows listed after (reverse: before) the row (value, run_id), nearest first."""
        op = "lt" if self.descending != reverse else "gt"
        rows = self.ordered(reverse=reverse)
        if self.value_field == self.id_field:
            return rows.filter(**{f"{self.id_field}__{op}": run_id})
        # `v <= x AND (v < x OR id < y)` rather than `v < x OR (v = x AND id < y)`: the first term is an index range.
        return rows.filter(
            Q(**{f"{self.value_field}__{op}e": value}),
            Q(**{f"{self.value_field}__{op}": value}) | Q(**{f"{self.id_field}__{op}": run_id}),
        )


def _segments(experiment: Experiment, sort: Sort, filters: Filters) -> tuple[_Segment, _Segment | None]:
    """The runs with a sort value, in sort order, then (or None) the runs without one, newest first."""
    if sort.column == "metric":
        ranges = [r for r in filters.ranges if r.name == sort.name]
        series = MetricSeries.objects.filter(experiment=experiment, name=sort.name, last_value__isnull=False)
        series = series.filter(*_conditions(experiment, filters, prefix="run__", outer_id="run_id", skip_range=sort.name))
        for metric_range in ranges:
            series = series.filter(**metric_range.lookups())
        present = _Segment(series.values_list("run_id"), "run_id", "last_value", sort.descending)
        if ranges:
            return present, None  # a run without the metric is outside any range of it
        has_value = MetricSeries.objects.filter(run_id=OuterRef("pk"), name=sort.name, last_value__isnull=False)
        runs = Run.objects.filter(*_conditions(experiment, filters, prefix="", outer_id="pk")).filter(~Exists(has_value))
        return present, _Segment(runs.values_list("id"), "id", "id", True)

    if sort.column == "param":
        own = [param for param in filters.params if param.name == sort.name]
        rows = RunParameter.objects.filter(experiment=experiment, name=sort.name)
        rows = rows.filter(*_conditions(experiment, filters, prefix="run__", outer_id="run_id", skip_param=sort.name))
        for param in own:
            rows = rows.filter(param.q())
        present = _Segment(rows.values_list("run_id"), "run_id", "sort_key", sort.descending)
        if own:
            return present, None  # a run without the parameter matches no filter on it
        has_value = RunParameter.objects.filter(run_id=OuterRef("pk"), name=sort.name)
        runs = Run.objects.filter(*_conditions(experiment, filters, prefix="", outer_id="pk")).filter(~Exists(has_value))
        return present, _Segment(runs.values_list("id"), "id", "id", True)

    runs = Run.objects.filter(*_conditions(experiment, filters, prefix="", outer_id="pk"))
    if sort.column == "id":
        return _Segment(runs.values_list("id"), "id", "id", sort.descending), None
    runs = runs.alias(sort_value=COLUMNS[sort.column])
    present = _Segment(runs.filter(sort_value__isnull=False).values_list("id"), "id", "sort_value", sort.descending)
    if sort.column in NEVER_MISSING:
        return present, None
    missing = runs.filter(sort_value__isnull=True)
    return present, _Segment(missing.values_list("id"), "id", "id", True)


def _cursor(experiment: Experiment, sort: Sort, run_id: int):
    """The sort value of the run a page starts from (None: the run has none). TableError when no such run."""
    if sort.column == "id":
        return run_id
    if sort.column == "metric":
        series = MetricSeries.objects.filter(run_id=OuterRef("pk"), name=sort.name)
        expression = Subquery(series.values("last_value")[:1])
    elif sort.column == "param":
        expression = Subquery(RunParameter.objects.filter(run_id=OuterRef("pk"), name=sort.name).values("sort_key")[:1])
    else:
        expression = COLUMNS[sort.column]
    found = list(Run.objects.filter(experiment=experiment, pk=run_id).annotate(v=expression).values_list("v", flat=True))
    if not found:
        raise TableError(f"No run {run_id} in experiment {experiment.name}: follow the page links instead.")
    return found[0]


def _take(rows: QuerySet, count: int) -> list[int]:
    return [row[0] for row in rows[:count]] if count > 0 else []


def page(
    experiment: Experiment,
    *,
    sort: Sort,
    filters: Filters,
    size: int,
    below: int | None = None,
    above: int | None = None,
) -> Page:
    """The `size` top-level runs listed first, or right below run `below`, or right above run `above`.

    The default order is newest first (id descending). Three or four small queries: the cursor's sort value, one
    or two keyset reads of (id, value), and the runs themselves with their compute target.
    """
    present, missing = _segments(experiment, sort, filters)
    want = size + 1
    if above is not None:
        value = _cursor(experiment, sort, above)
        if value is None and missing is not None:
            ids = _take(missing.past(None, above, reverse=True), want)
            ids += _take(present.ordered(reverse=True), want - len(ids))
        elif value is None:
            ids = []
        else:
            ids = _take(present.past(value, above, reverse=True), want)
        more = len(ids) > size
        ids = ids[:size][::-1]
        return Page(_runs_in_order(ids), above=ids[0] if more and ids else None, below=ids[-1] if ids else None)

    if below is None:
        ids = _take(present.ordered(), want)
        from_missing = missing is not None
    else:
        value = _cursor(experiment, sort, below)
        if value is None:
            ids = _take(missing.past(None, below), want) if missing is not None else []
            from_missing = False
        else:
            ids = _take(present.past(value, below), want)
            from_missing = missing is not None
    if from_missing and len(ids) < want:
        ids += _take(missing.ordered(), want - len(ids))
    more = len(ids) > size
    ids = ids[:size]
    return Page(
        _runs_in_order(ids),
        above=ids[0] if below is not None and ids else None,
        below=ids[-1] if more else None,
    )


RUN_RELATED = ("experiment", "compute_target", "environment", "workspace", "created_by")


def page_for_query(experiment: Experiment, query: dict, filters: Filters, size: int) -> Page:
    """The page a valid query string (RunFilterForm's cleaned data) asks for: `before`/`after` or `below`/`above`."""
    return page(
        experiment, sort=query["sort"], filters=filters, size=size,
        below=query["below"] if query["before"] is None else query["before"],
        above=query["above"] if query["after"] is None else query["after"],
    )


def _runs_in_order(ids: list[int]) -> list[Run]:
    by_id = Run.objects.select_related(*RUN_RELATED).in_bulk(ids)
    return [by_id[run_id] for run_id in ids if run_id in by_id]


def children(parent: Run, limit: int | None = None) -> tuple[list[Run], int]:
    """The first `limit` (default CHILDREN_LIMIT) children of a run, oldest first, and how many it has in all."""
    limit = CHILDREN_LIMIT if limit is None else limit
    runs = list(Run.objects.filter(parent=parent).select_related(*RUN_RELATED).order_by("id")[: limit + 1])
    total = len(runs) if len(runs) <= limit else Run.objects.filter(parent=parent).count()
    return runs[:limit], total


def status_counts(experiment: Experiment) -> dict[str, int]:
    """Top-level runs of the experiment per status."""
    rows = Run.objects.filter(experiment=experiment, parent__isnull=True).values_list("status").annotate(n=Count("id"))
    return dict(rows.order_by().values_list("status", "n"))


# --- What each row shows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A metric cell: the text shown and the number behind it (None when missing or not finite)."""

    text: str
    value: float | None = None


MISSING = Cell("")


def attach_metric_cells(runs: list[Run], columns: list[str]) -> None:
    """Set `run.metric_cells` (one Cell per column, in order) on every run, with one query for all of them."""
    cells: dict[tuple[int, str], Cell] = {}
    if runs and columns:
        rows = MetricSeries.objects.filter(run_id__in=[run.pk for run in runs], name__in=columns)
        for run_id, name, value, nonfinite in rows.order_by().values_list("run_id", "name", "last_value", "last_nonfinite"):
            if nonfinite:
                cells[run_id, name] = Cell(nonfinite)
            elif value is not None:
                cells[run_id, name] = Cell(f"{value:.6g}", value)
    for run in runs:
        run.metric_cells = [cells.get((run.pk, name), MISSING) for name in columns]


@dataclass(frozen=True)
class ParamCell:
    """A parameter cell: the text shown ("" when the run has no such parameter) and the value as stored."""

    text: str
    value: object = None


def attach_parameter_cells(runs: list[Run], columns: list[str]) -> None:
    """Set `run.param_cells` (one ParamCell per column, in order) on every run, with one query for all of them."""
    cells: dict[tuple[int, str], ParamCell] = {}
    if runs and columns:
        rows = RunParameter.objects.filter(run_id__in=[run.pk for run in runs], name__in=columns)
        for run_id, name, text, value in rows.order_by().values_list("run_id", "name", "text", "value"):
            cells[run_id, name] = ParamCell(text, value)
    for run in runs:
        run.param_cells = [cells.get((run.pk, name), ParamCell("")) for name in columns]


def attach_child_counts(runs: list[Run]) -> None:
    """Set `run.child_count` on every run, with one query."""
    counts = {}
    if runs:
        rows = Run.objects.filter(parent_id__in=[run.pk for run in runs]).values("parent_id").annotate(n=Count("id"))
        counts = dict(rows.order_by().values_list("parent_id", "n"))
    for run in runs:
        run.child_count = counts.get(run.pk, 0)


# --- Links the page needs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    label: str
    url: str = ""  # empty: not sortable
    arrow: str = ""  # ▲ or ▼ on the column the table is sorted by
    numeric: bool = False
    kind: str = ""  # "param" for a parameter's column


HEADERS = [("name", "Run"), ("status", "Status"), ("started", "Started"), ("duration", "Duration"), ("compute", "Compute")]


@dataclass
class Table:
    """The table's state from the query string, and the links that keep it while changing one thing."""

    sort: Sort
    filters: Filters
    metric_param: list[str] | None  # the `metric` values as given; None: the default columns
    columns: list[str]  # the metric columns shown
    param_param: list[str] | None = None  # the `param` values as given; None: the default columns
    param_columns: list[str] = field(default_factory=list)  # the parameter columns shown

    @classmethod
    def from_query(cls, query: dict, filters: Filters, metric_names: list[str], param_names: list[str] = ()) -> Table:
        """`query` is RunFilterForm's cleaned data. The metric or parameter sorted by is shown even when not chosen."""
        columns = list(query["metric"]) if query["metric"] is not None else default_columns(metric_names)
        chosen = query.get("param")
        param_columns = list(chosen) if chosen is not None else default_parameter_columns(list(param_names))
        sort = query["sort"]
        if sort.column == "metric" and sort.name not in columns:
            columns.append(sort.name)
        if sort.column == "param" and sort.name not in param_columns:
            param_columns.append(sort.name)
        return cls(sort, filters, query["metric"], columns, chosen, param_columns)

    def params(self, *, sort: Sort | None = None, status: str | None = None, keep_columns: bool = True) -> list:
        """The query string's (name, value) pairs, with `sort` or `status` changed."""
        sort = self.sort if sort is None else sort
        status = self.filters.status if status is None else status
        found = []
        if status:
            found.append(("status", status))
        if not sort.is_default:
            found.append(("sort", str(sort)))
        if keep_columns and self.metric_param is not None:
            found += [("metric", name) for name in self.metric_param] or [("metric", "")]
        if keep_columns and self.param_param is not None:
            found += [("param", name) for name in self.param_param] or [("param", "")]
        found += [("tag", str(tag)) for tag in self.filters.tags]
        found += [("range", str(metric_range)) for metric_range in self.filters.ranges]
        found += [("param_filter", str(param)) for param in self.filters.params]
        return found

    def url(self, *extra, **changes) -> str:
        return "?" + urlencode([*self.params(**changes), *extra])

    def status_url(self, status: str) -> str:
        """The same table for another status ("" for all), from the first page."""
        return self.url(status=status)

    def page_url(self, *, above: int | None = None, below: int | None = None) -> str:
        """A page's link: before/after (by id) in the default order, below/above in any other."""
        default = self.sort.is_default
        if above is not None:
            return self.url(("after" if default else "above", above))
        return self.url(("before" if default else "below", below))

    def pager(self, page: Page) -> tuple[str, str]:
        """Links to the pages above and below this one ("" when there is none)."""
        above = self.page_url(above=page.above) if page.above is not None else ""
        below = self.page_url(below=page.below) if page.below is not None else ""
        return above, below

    def status_links(self, counts: dict[str, int], choices) -> list[dict]:
        """The status filter: "All" and each status with runs, with its count and a link keeping the rest."""
        links = [{"label": "All", "count": sum(counts.values()), "url": self.status_url(""), "status": "",
                  "current": not self.filters.status}]
        for value, label in choices:
            if counts.get(value):
                links.append({"label": label, "count": counts[value], "url": self.status_url(value), "status": value,
                              "current": self.filters.status == value})
        return links

    @property
    def column_count(self) -> int:
        """Cells in a row: select, run, status, started, duration, compute, tags, the parameters and the metrics."""
        return 7 + len(self.param_columns) + len(self.columns)

    def columns_query(self) -> str:
        """`param=...&metric=...` for the chosen columns, for requests that must show the same ones (a run's
        children)."""
        return urlencode([("param", name) for name in self.param_columns] or [("param", "")]) + "&" + urlencode(
            [("metric", name) for name in self.columns] or [("metric", "")])

    @property
    def headers(self) -> list[Header]:
        found = [self._header(Sort(key), label) for key, label in HEADERS]
        found.append(Header("Tags"))
        found += [self._header(Sort("param", name=name), name, kind="param") for name in self.param_columns]
        found += [self._header(Sort("metric", name=name), name, numeric=True) for name in self.columns]
        return found

    def _header(self, column: Sort, label: str, numeric: bool = False, kind: str = "") -> Header:
        if column.key == self.sort.key:
            flipped = Sort(column.column, not self.sort.descending, column.name)
            return Header(label, self.url(sort=flipped), "▼" if self.sort.descending else "▲", numeric, kind)
        return Header(label, self.url(sort=Sort(column.column, False, column.name)), "", numeric, kind)
