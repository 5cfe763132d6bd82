from django.urls import path

from endpoints import views

urlpatterns = [
    path("endpoints/", views.endpoint_list, name="endpoint_list"),
    path("endpoints/_new/", views.endpoint_new, name="endpoint_new"),
    path("endpoints/_deploy/", views.deploy, name="deploy"),
    path("endpoints/<str:name>/", views.endpoint_detail, name="endpoint_detail"),
    path("endpoints/<str:name>/keys/", views.endpoint_keys, name="endpoint_keys"),
    path("endpoints/<str:name>/keys/regenerate/", views.endpoint_regenerate, name="endpoint_regenerate"),
    path("endpoints/<str:name>/traffic/", views.endpoint_traffic, name="endpoint_traffic"),
    path("endpoints/<str:name>/capture/", views.endpoint_capture, name="endpoint_capture"),
    path("endpoints/<str:name>/test/", views.endpoint_test, name="endpoint_test"),
    path("endpoints/<str:name>/test/sample/", views.endpoint_sample, name="endpoint_sample"),
    path("endpoints/<str:name>/stats/", views.endpoint_stats, name="endpoint_stats"),
    path("endpoints/<str:name>/delete/", views.endpoint_delete, name="endpoint_delete"),
    path("endpoints/<str:name>/instances/<id:instance_id>/log/", views.instance_log, name="instance_log"),
    path("endpoints/<str:name>/instances/<id:instance_id>/events/", views.instance_events, name="instance_events"),
    path("endpoints/<str:name>/<str:deployment>/edit/", views.deployment_edit, name="deployment_edit"),
    path("endpoints/<str:name>/<str:deployment>/delete/", views.deployment_delete, name="deployment_delete"),
]
