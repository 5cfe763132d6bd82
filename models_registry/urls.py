from django.urls import path

from models_registry import views

urlpatterns = [
    path("models/", views.model_list, name="model_list"),
    path("models/_upload/", views.model_upload, name="model_upload"),
    path("models/<str:name>/", views.model_detail, name="model_detail"),
    path("models/<str:name>/aliases/", views.model_alias, name="model_alias"),
    path("models/<str:name>/archive/", views.model_archive, name="model_archive"),
    path("models/<str:name>/<id:version>/", views.model_version, name="model_version"),
    path("models/<str:name>/<id:version>/tags/", views.model_version_tags, name="model_version_tags"),
    path("models/<str:name>/<id:version>/delete/", views.model_version_delete, name="model_version_delete"),
    path("models/<str:name>/<id:version>/files.zip", views.model_files_zip, name="model_files_zip"),
    path("models/<str:name>/<id:version>/files/<path:file>", views.model_file, name="model_file"),
    path("runs/<id:run_id>/models/", views.run_models, name="run_models"),
    path("runs/<id:run_id>/models/register/", views.run_register_model, name="run_register_model"),
]
