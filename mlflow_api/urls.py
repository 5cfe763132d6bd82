"""The MLflow API's routes, mounted at /mlflow/<workspace>/ (studio/urls.py): an MLflow client's tracking URI is
http://<studio>/mlflow/<workspace>. Named `mlflow:<name>` for the access matrix."""

from django.urls import path

from mlflow_api import views

app_name = "mlflow"
API = "api/2.0/mlflow/"
ARTIFACTS = "api/2.0/mlflow-artifacts/artifacts"

urlpatterns = [
    # Experiments
    path(f"{API}experiments/get-by-name", views.get_experiment_by_name, name="experiments_get_by_name"),
    path(f"{API}experiments/create", views.create_experiment, name="experiments_create"),
    path(f"{API}experiments/get", views.get_experiment, name="experiments_get"),
    path(f"{API}experiments/search", views.search_experiments, name="experiments_search"),
    # Runs
    path(f"{API}runs/create", views.create_run, name="runs_create"),
    path(f"{API}runs/get", views.get_run, name="runs_get"),
    path(f"{API}runs/update", views.update_run, name="runs_update"),
    path(f"{API}runs/search", views.search_runs, name="runs_search"),
    path(f"{API}runs/log-metric", views.log_metric, name="runs_log_metric"),
    path(f"{API}runs/log-parameter", views.log_parameter, name="runs_log_parameter"),
    path(f"{API}runs/set-tag", views.set_tag, name="runs_set_tag"),
    path(f"{API}runs/delete-tag", views.delete_tag, name="runs_delete_tag"),
    path(f"{API}runs/log-batch", views.log_batch, name="runs_log_batch"),
    path(f"{API}runs/outputs", views.log_outputs, name="runs_outputs"),
    path(f"{API}runs/log-inputs", views.log_inputs, name="runs_log_inputs"),
    path(f"{API}metrics/get-history", views.get_metric_history, name="metrics_get_history"),
    # Logged models (MLflow 3's log_model)
    path(f"{API}logged-models", views.create_logged_model, name="logged_models_create"),
    path(f"{API}logged-models/search", views.search_logged_models, name="logged_models_search"),
    path(f"{API}logged-models/<str:model_id>", views.logged_model, name="logged_model"),
    path(f"{API}logged-models/<str:model_id>/tags", views.set_logged_model_tags, name="logged_model_tags"),
    path(f"{API}logged-models/<str:model_id>/tags/<str:key>", views.delete_logged_model_tag,
         name="logged_model_tag_delete"),
    path(f"{API}logged-models/<str:model_id>/params", views.log_logged_model_params, name="logged_model_params"),
    # The model registry
    path(f"{API}registered-models/create", views.create_registered_model, name="registered_models_create"),
    path(f"{API}registered-models/get", views.get_registered_model, name="registered_models_get"),
    path(f"{API}registered-models/update", views.update_registered_model, name="registered_models_update"),
    path(f"{API}registered-models/search", views.search_registered_models, name="registered_models_search"),
    path(f"{API}registered-models/get-latest-versions", views.get_latest_versions,
         name="registered_models_latest_versions"),
    path(f"{API}registered-models/alias", views.registered_model_alias, name="registered_models_alias"),
    path(f"{API}model-versions/create", views.create_model_version, name="model_versions_create"),
    path(f"{API}model-versions/get", views.get_model_version, name="model_versions_get"),
    path(f"{API}model-versions/update", views.update_model_version, name="model_versions_update"),
    path(f"{API}model-versions/search", views.search_model_versions, name="model_versions_search"),
    path(f"{API}model-versions/get-download-uri", views.get_model_version_download_uri,
         name="model_versions_download_uri"),
    path(f"{API}model-versions/set-tag", views.set_model_version_tag, name="model_versions_set_tag"),
    path(f"{API}model-versions/delete-tag", views.delete_model_version_tag, name="model_versions_delete_tag"),
    path("api/3.0/mlflow/server-info", views.server_info, name="server_info"),
    # Artifacts (mlflow-artifacts: URIs)
    path(ARTIFACTS, views.list_artifacts, name="artifacts_list"),
    path(f"{ARTIFACTS}/<path:artifact_path>", views.artifact, name="artifact"),
]
