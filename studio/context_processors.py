import functools

from django.utils.functional import SimpleLazyObject

from studio.models import Workspace

LAST_WORKSPACE_KEY = "studio_workspace"


def workspaces(request):
    """The navigation: the user's workspaces for the switcher, and `nav_workspace`, the one the top bar links to.

    On a workspace's pages that is the workspace; on pages outside any (API tokens, password, error pages) it is the
    workspace used last, kept in the session, so the navigation stays the same on every page. Lazy: one query when
    the top bar is drawn, none for a partial.
    """
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    navigation = functools.cache(lambda: _navigation(request))
    return {"my_workspaces": SimpleLazyObject(lambda: navigation()[0]),
            "nav_workspace": SimpleLazyObject(lambda: navigation()[1])}


def _navigation(request):
    mine = list(Workspace.objects.for_user(request.user).only("name").order_by("name"))
    by_name = {ws.name: ws for ws in mine}
    match = getattr(request, "resolver_match", None)
    current = by_name.get(match.kwargs.get("workspace")) if match and match.kwargs else None
    session = getattr(request, "session", None)
    if current is not None:
        if session is not None and session.get(LAST_WORKSPACE_KEY) != current.name:
            session[LAST_WORKSPACE_KEY] = current.name
        nav = current
    else:
        nav = by_name.get(session.get(LAST_WORKSPACE_KEY)) if session is not None else None
        if nav is None and len(mine) == 1:
            nav = mine[0]
    return mine, nav
