from django.urls import path

from runs import compare, events, telemetry_views, views

urlpatterns = [
    path("experiments/", views.experiment_list, name="experiment_list"),
    path("experiments/<str:name>/", views.experiment_detail, name="experiment_detail"),
    path("experiments/<str:name>/archive/", views.experiment_archive, name="experiment_archive"),
    path("runs/new/", views.run_submit, name="run_submit"),
    path("runs/<id:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<id:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<id:run_id>/events/", events.run_events, name="run_events"),
    path("runs/<id:run_id>/log/", views.run_log, name="run_log"),
    path("runs/<id:run_id>/files.zip", views.run_files_zip, name="run_files_zip"),
    path("runs/<id:run_id>/files/<path:path>", views.run_file, name="run_file"),
    path("runs/<id:run_id>/snapshot/file/", views.snapshot_file, name="snapshot_file"),
    path("runs/<id:run_id>/snapshot.zip", views.snapshot_zip, name="snapshot_zip"),
    path("runs/<id:run_id>/metrics/", telemetry_views.run_metrics, name="run_metrics"),
    path("runs/<id:run_id>/metrics/<id:series_id>/data/", telemetry_views.series_data, name="series_data"),
    path("runs/<id:run_id>/images/<id:entry_id>/", telemetry_views.run_image, name="run_image"),
    path("experiments/<str:name>/compare/", compare.compare_runs, name="compare_runs"),
]
