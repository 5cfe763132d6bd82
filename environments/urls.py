"""Environment pages, included at `w/<workspace>/environments/`. `new` and `images` are not environment names."""

from django.urls import path

from environments import events, views

urlpatterns = [
    path("", views.environment_list, name="environment_list"),
    path("new/", views.environment_create, name="environment_create"),
    path("images/<id:image_id>/", views.image_detail, name="image_detail"),
    path("images/<id:image_id>/rebuild/", views.image_rebuild, name="image_rebuild"),
    path("images/<id:image_id>/log/", views.image_log, name="image_log"),
    path("images/<id:image_id>/events/", events.image_events, name="image_events"),
    path("<str:name>/", views.environment_detail, name="environment_detail"),
    path("<str:name>/edit/", views.environment_edit, name="environment_edit"),
    path("<str:name>/save-as/", views.environment_save_as, name="environment_save_as"),
    path("<str:name>/<id:version>/", views.environment_detail, name="environment_version"),
    path("<str:name>/<id:version>/edit/", views.environment_edit, name="environment_version_edit"),
    path("<str:name>/<id:version>/save-as/", views.environment_save_as, name="environment_version_save_as"),
    path("<str:name>/<id:version>/build/", views.environment_build, name="environment_build"),
]
