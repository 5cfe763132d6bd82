from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from runs import api as runs_api
from studio import compute_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="studio/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("workspaces/", views.workspace_list, name="workspace_list"),
    path("w/<slug:workspace>/", views.dashboard, name="dashboard"),
    path("w/<slug:workspace>/members/", views.members, name="members"),
    path("w/<slug:workspace>/members/<int:membership_id>/remove/", views.remove_member, name="remove_member"),
    path("w/<slug:workspace>/compute/", compute_views.compute_list, name="compute_list"),
    path("w/<slug:workspace>/compute/new/", compute_views.compute_edit, name="compute_new"),
    path("w/<slug:workspace>/compute/<int:target_id>/edit/", compute_views.compute_edit, name="compute_edit"),
    path("w/<slug:workspace>/compute/<int:target_id>/test/", compute_views.compute_test, name="compute_test"),
    path("w/<slug:workspace>/compute/<int:target_id>/delete/", compute_views.compute_delete, name="compute_delete"),
    path("w/<slug:workspace>/environments/", include("environments.urls")),
    path("w/<slug:workspace>/", include("runs.urls")),
    path("api/v1/runs/<int:run_id>/", include("runs.api_urls")),
    path("api/v1/workspaces/<slug:workspace>/runs", runs_api.submit, name="api_submit_run"),
    path("api/v1/workspaces/<slug:workspace>/runs/<int:run_id>", runs_api.detail, name="api_run_detail"),
    path("account/tokens/", views.api_tokens, name="api_tokens"),
    path("account/tokens/<int:token_id>/revoke/", views.revoke_api_token, name="revoke_api_token"),
]
