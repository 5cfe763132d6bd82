"""The searches of MLflow's API as database queries: runs (by metrics, parameters, tags and attributes, ordered by
any of them), experiments, registered models, model versions and logged models (see search.py for the syntax)."""

from __future__ import annotations

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from mlflow_api import errors, search
from mlflow_api.models import LoggedModel
from mlflow_api.search import Condition
from mlflow_api.tracking import RUN_UUID, STATUS_TO_STUDIO, from_ms
from models_registry.models import ModelVersion, RegisteredModel
from runs.models import Experiment, MetricKind, MetricSeries, Run, RunParameter, RunStatus

NUMERIC = {"=": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
MLFLOW_STATUSES = {
    "RUNNING": [RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.FINALIZING,
                RunStatus.NOT_RESPONDING],
    "SCHEDULED": [RunStatus.NOT_STARTED, RunStatus.QUEUED],
}


def _json_text(key: str, field: str) -> Cast:
    """The text of `key` in a JSON field, compared as text (a bare KeyTextTransform is compared as JSON)."""
    return Cast(KeyTextTransform(key, field), output_field=TextField())


def _text_q(field: str, condition: Condition) -> Q:
    value = search.check_text(condition)
    op = condition.op
    if op in ("IN", "NOT IN"):
        q = Q(**{f"{field}__in": list(value)})
    elif op in ("LIKE", "NOT LIKE"):
        q = Q(**{f"{field}__regex": search.like_regex(value)})
    elif op in ("ILIKE", "NOT ILIKE"):
        q = Q(**{f"{field}__iregex": search.like_regex(value)})
    else:
        q = Q(**{field: value})
    return ~q if op in ("!=", "NOT IN", "NOT LIKE", "NOT ILIKE") else q


def _number_q(field: str, condition: Condition, convert=lambda value: value) -> Q:
    value = convert(search.check_number(condition))
    if condition.op == "!=":
        return ~Q(**{field: value}) & Q(**{f"{field}__isnull": False})
    return Q(**{f"{field}__{NUMERIC[condition.op]}": value})


# Runs ------------------------------------------------------------------------------------------------------------------


def _status_q(condition: Condition) -> Q:
    value = search.check_text(condition)
    names = list(value) if isinstance(value, tuple) else [value]
    studio = []
    for name in names:
        upper = str(name).upper()
        if upper not in STATUS_TO_STUDIO:
            raise errors.invalid(f"{name!r} is not a run status: use RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.")
        studio += MLFLOW_STATUSES.get(upper, [STATUS_TO_STUDIO[upper]])
    if condition.op not in ("=", "!=", "IN", "NOT IN"):
        raise errors.invalid("attributes.status is compared with = != IN NOT IN.")
    q = Q(status__in=studio)
    return ~q if condition.op in ("!=", "NOT IN") else q


def _run_id_q(condition: Condition) -> Q:
    value = search.check_text(condition)
    if condition.op not in ("=", "!=", "IN", "NOT IN"):
        raise errors.invalid("attributes.run_id is compared with = != IN NOT IN.")
    refs = list(value) if isinstance(value, tuple) else [value]
    uuids = [ref for ref in refs if RUN_UUID.fullmatch(ref)]
    numbers = [int(ref) for ref in refs if ref.isdigit() and len(ref) <= 18]
    q = Q(mlflow__run_uuid__in=uuids) | Q(pk__in=numbers)
    return ~q if condition.op in ("!=", "NOT IN") else q


def _run_condition(queryset: QuerySet, condition: Condition, index: int) -> QuerySet:
    entity, key = condition.entity, condition.key
    if entity == "metrics":
        search.check_number(condition)
        inner = _number_q("last_value", condition)
        series = MetricSeries.objects.filter(inner, run=OuterRef("pk"), name=key, kind=MetricKind.SCALAR)
        return queryset.filter(Exists(series))
    if entity == "params":
        parameters = RunParameter.objects.filter(_text_q("text", condition), run=OuterRef("pk"), name=key)
        return queryset.filter(Exists(parameters))
    if entity == "tags":
        if key == "mlflow.runName":
            return queryset.filter(_text_q("display_name", condition))
        source = "mlflow__system_tags" if key.startswith("mlflow.") else "tags"
        alias = f"_tag_{index}"
        return queryset.annotate(**{alias: _json_text(key, source)}).filter(
            _text_q(alias, condition) & Q(**{f"{alias}__isnull": False}))
    if entity != "attributes":
        raise errors.invalid(f"Search runs by metrics, params, tags or attributes, not {entity!r}.")
    if key == "status":
        return queryset.filter(_status_q(condition))
    if key in ("run_name", "name"):
        return queryset.filter(_text_q("display_name", condition))
    if key in ("run_id", "run_uuid", "id"):
        return queryset.filter(_run_id_q(condition))
    if key == "user_id":
        return queryset.filter(_text_q("mlflow__user_id", condition))
    if key in ("start_time", "end_time", "created"):
        field = {"start_time": "started_at", "end_time": "ended_at", "created": "created_at"}[key]
        return queryset.filter(_number_q(field, condition, lambda value: from_ms(int(value))))
    raise errors.invalid(f"Unsupported attribute {key!r}: search by status, run_name, run_id, user_id, start_time or "
                         "end_time.")


def _run_order(queryset: QuerySet, order: list[tuple[str, str, bool]]) -> QuerySet:
    fields = []
    for index, (entity, key, descending) in enumerate(order):
        alias = f"_order_{index}"
        if entity == "metrics":
            expression = Subquery(MetricSeries.objects.filter(run=OuterRef("pk"), name=key, kind=MetricKind.SCALAR)
                                  .values("last_value")[:1])
        elif entity == "params":
            expression = Subquery(RunParameter.objects.filter(run=OuterRef("pk"), name=key).values("sort_key")[:1])
        elif entity == "tags":
            expression = _json_text(key, "mlflow__system_tags" if key.startswith("mlflow.") else "tags")
        elif key in ("start_time", "created"):
            expression = Coalesce("started_at", "created_at")
        elif key == "end_time":
            expression = F("ended_at")
        elif key in ("run_name", "name"):
            expression = F("display_name")
        elif key == "status":
            expression = F("status")
        elif key in ("run_id", "id"):
            expression = F("pk")
        else:
            raise errors.invalid(f"Cannot order runs by {entity}.{key}: use metrics.*, params.*, tags.* or "
                                 "attributes.start_time, end_time, run_name, status.")
        queryset = queryset.annotate(**{alias: expression})
        fields.append(F(alias).desc(nulls_last=True) if descending else F(alias).asc(nulls_last=True))
    if not fields:
        queryset = queryset.annotate(_order_start=Coalesce("started_at", "created_at"))
        fields = [F("_order_start").desc()]
    return queryset.order_by(*fields, "-pk")


def search_runs(workspace, experiment_ids: list[str], filter_text: str | None, order_by: list[str]) -> QuerySet:
    ids = []
    for text in experiment_ids:
        if text == "0":
            default = Experiment.objects.filter(workspace=workspace, name="Default").values_list("pk", flat=True).first()
            if default is not None:
                ids.append(default)
        elif text.isdigit() and len(text) <= 18:
            ids.append(int(text))
        else:
            raise errors.invalid(f"Invalid experiment id {text[:64]!r}.")
    queryset = Run.objects.filter(workspace=workspace, experiment_id__in=ids).select_related(
        "experiment", "created_by", "mlflow")
    for index, condition in enumerate(search.parse_filter(filter_text)):
        queryset = _run_condition(queryset, condition, index)
    return _run_order(queryset, search.parse_order(order_by))


# Experiments, registered models, versions, logged models ---------------------------------------------------------------


def _named(queryset: QuerySet, filter_text: str | None, fields: dict[str, str], times: dict[str, str]) -> QuerySet:
    """Conditions on text fields (`name`) and times in milliseconds (`creation_time`)."""
    for condition in search.parse_filter(filter_text):
        key = condition.key
        if condition.entity != "attributes" or (key not in fields and key not in times):
            raise errors.invalid(f"Unsupported search key {condition.entity}.{key}: use "
                                 f"{', '.join([*fields, *times])}.")
        if key in fields:
            queryset = queryset.filter(_text_q(fields[key], condition))
        else:
            queryset = queryset.filter(_number_q(times[key], condition, lambda value: from_ms(int(value))))
    return queryset


def _ordered(queryset: QuerySet, order_by: list[str], fields: dict[str, str], default: list[str]) -> QuerySet:
    ordering = []
    for entity, key, descending in search.parse_order(order_by):
        if entity != "attributes" or key not in fields:
            raise errors.invalid(f"Cannot order by {key!r}: use {', '.join(fields)}.")
        ordering.append(F(fields[key]).desc(nulls_last=True) if descending else F(fields[key]).asc(nulls_last=True))
    return queryset.order_by(*(ordering or default), "pk")


def search_experiments(workspace, filter_text: str | None, order_by: list[str]) -> QuerySet:
    queryset = _named(Experiment.objects.filter(workspace=workspace), filter_text, {"name": "name"},
                      {"creation_time": "created_at", "last_update_time": "created_at"})
    return _ordered(queryset, order_by, {"name": "name", "creation_time": "created_at",
                                         "last_update_time": "created_at", "experiment_id": "pk"}, ["-created_at"])


def search_registered_models(workspace, filter_text: str | None, order_by: list[str]) -> QuerySet:
    queryset = _named(RegisteredModel.objects.filter(workspace=workspace), filter_text, {"name": "name"}, {})
    return _ordered(queryset, order_by, {"name": "name", "creation_timestamp": "created_at",
                                         "last_updated_timestamp": "last_registered_at"}, ["name"])


def search_model_versions(workspace, filter_text: str | None, order_by: list[str]) -> QuerySet:
    queryset = ModelVersion.objects.filter(model__workspace=workspace).select_related("model", "run__mlflow")
    for condition in search.parse_filter(filter_text):
        key = condition.key
        if condition.entity == "attributes" and key == "name":
            queryset = queryset.filter(_text_q("model__name", condition))
        elif condition.entity == "attributes" and key == "run_id":
            queryset = queryset.filter(Q(run__mlflow__run_uuid__in=_refs(condition, uuid=True))
                                       | Q(run_id__in=_refs(condition, uuid=False)))
        elif condition.entity == "attributes" and key in ("version_number", "version"):
            queryset = queryset.filter(_number_q("version", condition, int))
        elif condition.entity == "tags":
            alias = f"_tag_{len(queryset.query.annotations)}"
            queryset = queryset.annotate(**{alias: _json_text(key, "tags")}).filter(_text_q(alias, condition))
        else:
            raise errors.invalid(f"Unsupported search key {condition.entity}.{key}: use name, run_id, "
                                 "version_number or tags.")
    return _ordered(queryset, order_by, {"name": "model__name", "version_number": "version",
                                         "creation_timestamp": "created_at", "last_updated_timestamp": "created_at"},
                    ["model__name", "-version"])


def _refs(condition: Condition, *, uuid: bool) -> list:
    if condition.op not in ("=", "IN"):
        raise errors.invalid("run_id is compared with = or IN here.")
    value = search.check_text(condition)
    refs = list(value) if isinstance(value, tuple) else [value]
    if uuid:
        return [ref for ref in refs if RUN_UUID.fullmatch(ref)]
    return [int(ref) for ref in refs if ref.isdigit() and len(ref) <= 18]


def search_logged_models(workspace, experiment_ids: list[str], filter_text: str | None) -> QuerySet:
    queryset = LoggedModel.objects.filter(workspace=workspace).select_related("run__mlflow")
    ids = [int(text) for text in experiment_ids if text.isdigit() and len(text) <= 18]
    if experiment_ids:
        queryset = queryset.filter(experiment_id__in=ids)
    for condition in search.parse_filter(filter_text):
        key = condition.key
        if condition.entity == "attributes" and key == "name":
            queryset = queryset.filter(_text_q("name", condition))
        elif condition.entity == "attributes" and key == "source_run_id":
            queryset = queryset.filter(Q(run__mlflow__run_uuid__in=_refs(condition, uuid=True))
                                       | Q(run_id__in=_refs(condition, uuid=False)))
        elif condition.entity == "attributes" and key == "status":
            queryset = queryset.filter(_text_q("status", condition))
        else:
            raise errors.invalid(f"Unsupported search key {condition.entity}.{key}: use name, source_run_id or "
                                 "status.")
    return queryset.order_by("-pk")
