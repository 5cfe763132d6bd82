from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from studio import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="studio/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("workspaces/", views.workspace_list, name="workspace_list"),
    path("w/<slug:workspace>/", views.dashboard, name="dashboard"),
    path("w/<slug:workspace>/members/", views.members, name="members"),
    path("w/<slug:workspace>/members/<int:membership_id>/remove/", views.remove_member, name="remove_member"),
    path("w/<slug:workspace>/", include("runs.urls")),
    path("api/v1/runs/<int:run_id>/", include("runs.api_urls")),
]
