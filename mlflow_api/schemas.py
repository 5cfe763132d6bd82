"""The requests of MLflow's REST API (`mlflow/protos/service.proto`, `model_registry.proto`), as Pydantic models.

Numbers are read as the MLflow client writes them: int64 fields as JSON numbers (in a query string, digits), metric
values as numbers or "NaN" / "Infinity" / "-Infinity"; true and false are not numbers, and a number too large for a
float64 is refused when the body is parsed. Beyond MLflow, steps must be exact in a float64 (the studio's metric
chunks), so |step| <= 2**53, and timestamps are milliseconds since the epoch, never negative. Unknown fields are
ignored, as MLflow's server ignores them.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt, model_validator
from typing_extensions import TypedDict

MAX_KEY = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
MAX_TAG_VALUE = 8000  # MLflow's MAX_TAG_VAL_LENGTH
MAX_PARAM_VALUE = 6000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
EXACT_STEP = 2**53
MAX_RESULTS = 50_000


def _no_bool(value):
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


Step = Annotated[int, BeforeValidator(_no_bool), Field(ge=-EXACT_STEP, le=EXACT_STEP)]
Timestamp = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=EXACT_STEP)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY)]
Results = Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=MAX_RESULTS)]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RunRef(Request):
    """Routes that name a run: `run_id` (MLflow 2+) or `run_uuid` (older clients send both)."""

    run_id: str | None = Field(None, max_length=64)
    run_uuid: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _named(self):
        if not (self.run_id or self.run_uuid):
            raise ValueError("Missing value for required parameter 'run_id'")
        return self

    @property
    def run(self) -> str:
        return self.run_id or self.run_uuid or ""


class Tag(Request):
    key: Key
    value: Annotated[str, Field(max_length=MAX_TAG_VALUE)] = ""


class Param(Request):
    key: Key
    value: Annotated[str, Field(max_length=MAX_PARAM_VALUE)] = ""


# A metric point as the client sends it in JSON: checked by pydantic's core alone (no Python per point), since a
# log-batch carries 1,000 of them. The client writes numbers as numbers and non-finite values as these three strings.
PointValue = StrictFloat | StrictInt | Literal["NaN", "Infinity", "-Infinity"]
PointStep = Annotated[StrictInt, Field(ge=-EXACT_STEP, le=EXACT_STEP)]
PointTime = Annotated[StrictInt, Field(ge=0, le=EXACT_STEP)]


class Metric(TypedDict):
    """One point; a dict, not a model instance (a batch of 1,000 validates in a third of the time)."""

    key: Key
    value: PointValue
    timestamp: PointTime
    step: NotRequired[PointStep]
    model_id: NotRequired[Annotated[str, Field(max_length=40)] | None]


# Experiments --------------------------------------------------------------------------------------------------------


class GetExperimentByName(Request):
    experiment_name: Annotated[str, Field(min_length=1, max_length=500)]


class CreateExperiment(Request):
    name: Annotated[str, Field(min_length=1, max_length=500)]
    artifact_location: str | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class GetExperiment(Request):
    experiment_id: Annotated[str, Field(min_length=1, max_length=64)]


class SearchExperiments(Request):
    max_results: Results = 1000
    page_token: str | None = Field(None, max_length=200)
    filter: str | None = Field(None, max_length=10_000)
    order_by: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=20)
    view_type: str | None = None


# Runs ----------------------------------------------------------------------------------------------------------------

MlflowStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]


class CreateRun(Request):
    experiment_id: str | None = Field(None, max_length=64)
    user_id: str | None = Field(None, max_length=255)
    run_name: str | None = Field(None, max_length=255)
    start_time: Timestamp | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class GetRun(RunRef):
    pass


class UpdateRun(RunRef):
    status: MlflowStatus | None = None
    end_time: Timestamp | None = None
    run_name: str | None = Field(None, max_length=255)


class LogMetric(RunRef):
    key: Key
    value: PointValue
    timestamp: PointTime
    step: PointStep = 0
    model_id: str | None = Field(None, max_length=40)

    def point(self) -> Metric:
        return {"key": self.key, "value": self.value, "timestamp": self.timestamp, "step": self.step,
                "model_id": self.model_id}


class LogParam(RunRef, Param):
    pass


class SetTag(RunRef, Tag):
    pass


class DeleteTag(RunRef):
    key: Key


class LogBatch(RunRef):
    metrics: list[Metric] = Field(default_factory=list, max_length=MAX_METRICS_PER_BATCH)
    params: list[Param] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class ModelOutput(Request):
    model_id: Annotated[str, Field(min_length=1, max_length=40)]
    step: Step = 0


class LogOutputs(RunRef):
    models: list[ModelOutput] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class Dataset(Request):
    """MLflow's Dataset, with its server's column sizes."""

    name: Annotated[str, Field(min_length=1, max_length=500)]
    digest: Annotated[str, Field(min_length=1, max_length=36)]
    source_type: Annotated[str, Field(min_length=1, max_length=36)]
    source: Annotated[str, Field(max_length=65_535)]
    schema_: str | None = Field(None, max_length=1_048_575, alias="schema")  # `schema` is a BaseModel method
    profile: str | None = Field(None, max_length=16_384)


class InputTag(Request):
    key: Annotated[str, Field(min_length=1, max_length=255)]
    value: Annotated[str, Field(max_length=500)] = ""


class DatasetInput(Request):
    dataset: Dataset
    tags: list[InputTag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class ModelInput(Request):
    model_id: Annotated[str, Field(min_length=1, max_length=40)]


class LogInputs(RunRef):
    datasets: list[DatasetInput] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)
    models: list[ModelInput] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class SearchRuns(Request):
    experiment_ids: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=100)
    filter: str | None = Field(None, max_length=10_000)
    run_view_type: str | None = None
    max_results: Results = 1000
    order_by: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=20)
    page_token: str | None = Field(None, max_length=200)


class GetMetricHistory(RunRef):
    metric_key: Key
    page_token: str | None = Field(None, max_length=200)
    max_results: Results | None = None


# Logged models -------------------------------------------------------------------------------------------------------


class CreateLoggedModel(Request):
    experiment_id: Annotated[str, Field(min_length=1, max_length=64)]
    name: str | None = Field(None, max_length=255)
    model_type: str | None = Field(None, max_length=255)
    source_run_id: str | None = Field(None, max_length=64)
    params: list[Param] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH * 5)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class FinalizeLoggedModel(Request):
    status: Literal["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"]


class SetLoggedModelTags(Request):
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class LogLoggedModelParams(Request):
    params: list[Param] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class SearchLoggedModels(Request):
    experiment_ids: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=100)
    filter: str | None = Field(None, max_length=10_000)
    max_results: Results = 100
    page_token: str | None = Field(None, max_length=200)


# The model registry --------------------------------------------------------------------------------------------------

RegistryName = Annotated[str, Field(min_length=1, max_length=255)]
Version = Annotated[str, Field(min_length=1, max_length=20)]


class NameOnly(Request):
    name: RegistryName


class CreateRegisteredModel(Request):
    name: RegistryName
    description: str | None = Field(None, max_length=10_000)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)


class UpdateRegisteredModel(Request):
    name: RegistryName
    description: str | None = Field(None, max_length=10_000)


class SearchRegistry(Request):
    filter: str | None = Field(None, max_length=10_000)
    max_results: Results = 100
    order_by: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=20)
    page_token: str | None = Field(None, max_length=200)


class GetLatestVersions(Request):
    name: RegistryName
    stages: list[Annotated[str, Field(max_length=50)]] = Field(default_factory=list, max_length=10)


class Alias(Request):
    name: RegistryName
    alias: Annotated[str, Field(min_length=1, max_length=255)]


class SetAlias(Alias):
    version: Version


class CreateModelVersion(Request):
    name: RegistryName
    source: Annotated[str, Field(min_length=1, max_length=1024)]
    run_id: str | None = Field(None, max_length=64)
    model_id: str | None = Field(None, max_length=40)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_PARAMS_TAGS_PER_BATCH)
    run_link: str | None = Field(None, max_length=2048)
    description: str | None = Field(None, max_length=10_000)


class VersionRef(Request):
    name: RegistryName
    version: Version


class UpdateModelVersion(VersionRef):
    description: str | None = Field(None, max_length=10_000)


class SetModelVersionTag(VersionRef):
    key: Key
    value: Annotated[str, Field(max_length=MAX_TAG_VALUE)] = ""


class DeleteModelVersionTag(VersionRef):
    key: Key


# Artifacts -----------------------------------------------------------------------------------------------------------


class ListArtifacts(Request):
    path: str | None = Field(None, max_length=2048)
