"""The project's URLs: pages of each app, and the REST API with each app's router (the wiring may import apps)."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.urls import URLPattern, include, path, register_converter
from django.views.decorators.http import require_GET, require_http_methods

from endpoints.api import router as endpoints_api
from environments.api import router as environments_api
from mlflow_api import pages as mlflow_pages
from models_registry.api import router as models_api
from models_registry.api import run_router as models_run_api
from runs.api import ingest as runs_ingest_api
from runs.api import router as runs_api
from runs.views import dashboard
from studio import compute_views, people, views
from studio.api import create_api
from studio.api import router as studio_api
from studio.converters import IdConverter

register_converter(IdConverter, "id")

api = create_api()
api.add_router("", studio_api)
api.add_router("", runs_api)
api.add_router("", runs_ingest_api)
api.add_router("", environments_api)
api.add_router("", models_api)
api.add_router("", models_run_api)
api.add_router("", endpoints_api)


def _get_only(pattern: URLPattern) -> URLPattern:
    """ninja's document and docs page answer any method; they take GET only, like every other read."""
    if pattern.name in ("openapi-json", "openapi-view"):
        return path(str(pattern.pattern), require_GET(pattern.callback), name=pattern.name)
    if pattern.name == "api-root":
        return path("", require_GET(lambda request: redirect("api:openapi-view")), name=pattern.name)
    return pattern


api_patterns, api_app, api_namespace = api.urls
api_urls = ([_get_only(pattern) for pattern in api_patterns], api_app)

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", require_http_methods(["GET", "POST"])(auth_views.LoginView.as_view(template_name="studio/login.html")),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/welcome/<str:invite>/", people.accept_invite, name="accept_invite"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_urls, namespace=api_namespace)),
    path("mlflow/<slug:workspace>/", mlflow_pages.home, name="mlflow_home"),
    path("mlflow/<slug:workspace>/runs/<str:run_id>/", mlflow_pages.run_link, name="mlflow_run_link"),
    path("mlflow/<slug:workspace>/experiments/<str:experiment_id>/", mlflow_pages.experiment_link,
         name="mlflow_experiment_link"),
    path("mlflow/<slug:workspace>/", include("mlflow_api.urls")),
    path("workspaces/", views.workspace_list, name="workspace_list"),
    path("w/<slug:workspace>/", dashboard, name="dashboard"),
    path("w/<slug:workspace>/members/", views.members, name="members"),
    path("w/<slug:workspace>/members/<id:membership_id>/remove/", views.remove_member, name="remove_member"),
    path("w/<slug:workspace>/members/invite/", people.invite_member, name="invite_member"),
    path("w/<slug:workspace>/members/<id:membership_id>/invite/", people.renew_invite, name="renew_invite"),
    path("w/<slug:workspace>/compute/", compute_views.compute_list, name="compute_list"),
    path("w/<slug:workspace>/compute/new/", compute_views.compute_edit, name="compute_new"),
    path("w/<slug:workspace>/compute/<id:target_id>/edit/", compute_views.compute_edit, name="compute_edit"),
    path("w/<slug:workspace>/compute/<id:target_id>/test/", compute_views.compute_test, name="compute_test"),
    path("w/<slug:workspace>/compute/<id:target_id>/delete/", compute_views.compute_delete, name="compute_delete"),
    path("w/<slug:workspace>/environments/", include("environments.urls")),
    path("w/<slug:workspace>/", include("runs.urls")),
    path("w/<slug:workspace>/", include("models_registry.urls")),
    path("w/<slug:workspace>/", include("endpoints.urls")),
    path("account/tokens/", views.api_tokens, name="api_tokens"),
    path("account/password/", people.password_change, name="password_change"),
    path("account/tokens/<id:token_id>/revoke/", views.revoke_api_token, name="revoke_api_token"),
]
