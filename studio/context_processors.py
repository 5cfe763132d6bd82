from studio.models import Workspace


def workspaces(request):
    """The workspace switcher in the navigation lists the user's workspaces (lazily: one query when shown)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"my_workspaces": Workspace.objects.for_user(request.user).only("name")}
