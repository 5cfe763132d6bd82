"""Environment and image pages. Thin views: access helper, form, model or domain call, render.

Every route: members read (GET), readers get 403 on POST, outsiders 404, anonymous visitors go to sign in.
A workspace sees its own environments and the curated ones; an image only when one of those uses it.
The registry password is never put in a page, a message or a diff: only "stored" or not.
"""

from __future__ import annotations

import difflib
import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from environments import builds
from environments.access import find_environment, get_image_for_user, versions_using
from environments.definition import DefinitionError
from environments.forms import DetailQueryForm, EnvironmentForm, env_vars_text
from environments.models import BuildStatus, Environment, EnvironmentImage
from studio import console
from studio.access import Access, get_rw_workspace_for_user, get_workspace_for_user
from studio.downloads import file_response
from studio.forms import LogQueryForm, valid_query

KIND_LABELS = {"user": "User-managed", "system": "System-managed", "curated": "Curated"}
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


# Access ---------------------------------------------------------------------------------------------------------
def _access(request, workspace: str) -> Access:
    """Pages with a form: any member may look (GET), only writers may save (POST)."""
    if request.method == "POST":
        return get_rw_workspace_for_user(request, workspace)
    return get_workspace_for_user(request, workspace)


# Presenting a definition ------------------------------------------------------------------------------------------
def definition_text(env: Environment) -> str:
    """Everything a version says, as text to compare versions by (the registry password only as stored or not)."""
    lines = [f"kind: {env.kind}", f"definition hash: {env.definition_hash}"]

    def block(title: str, text: str) -> None:
        body = [line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").split("\n")] if text.strip() else []
        lines.append(f"[{title}]" if body else f"[{title}] (none)")
        lines.extend(body)

    block("description", env.description)
    lines.append(f"base image: {env.base_image or '(none)'}")
    block("base Dockerfile", env.base_dockerfile)
    block("Dockerfile steps", env.dockerfile_steps)
    block("Python packages", env.python_packages)
    block("conda specification", env.conda_spec)
    lines.append(f"interpreter path: {env.interpreter_path or '(none)'}")
    block("environment variables", env_vars_text(env.env_vars))
    lines.append(f"registry address: {env.registry_address or '(none)'}")
    lines.append(f"registry username: {env.registry_username or '(none)'}")
    lines.append(f"registry password: {'stored' if env.registry_password_encrypted else '(none)'}")
    return "\n".join(lines) + "\n"


def diff_lines(old: Environment, new: Environment) -> list[tuple[str, str]]:
    """A unified diff of two versions as (css class, line) pairs; the template escapes the text."""
    diff = difflib.unified_diff(
        definition_text(old).splitlines(), definition_text(new).splitlines(),
        fromfile=f"{old.name} version {old.version}", tofile=f"{new.name} version {new.version}", lineterm="",
    )
    out = []
    for line in diff:
        if line.startswith(("---", "+++")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = {"+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append((kind, line))
    return out


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolved_versions(frozen: str) -> dict[str, str]:
    """`pip freeze` output as {canonical name: the line}."""
    result = {}
    for line in frozen.splitlines():
        line = line.strip()
        match = REQUIREMENT_NAME.match(line)
        if match and not line.startswith("#"):
            result[_canonical(match.group(1))] = line
    return result


def _unpinned(definition, image: EnvironmentImage | None) -> list[tuple[str, str | None]]:
    """Each unpinned package with what the built image froze it at (None before the first successful build)."""
    frozen = resolved_versions(image.resolved_packages) if image and image.resolved_packages else {}
    rows = []
    for package in definition.unpinned_packages():
        match = REQUIREMENT_NAME.match(package)
        rows.append((package, frozen.get(_canonical(match.group(1))) if match else None))
    return rows


def _image_message(access: Access, image: EnvironmentImage, existed: bool) -> tuple[int, str]:
    shared = versions_using(access, image.definition_hash).count()
    versions = f"shared with {shared} environment version{'s' if shared != 1 else ''}"
    if not existed:
        return messages.INFO, "Image build queued: follow it on the image page."
    if image.status == BuildStatus.SUCCEEDED:
        return messages.SUCCESS, f"Image already built: {versions}."
    if image.status == BuildStatus.FAILED:
        return messages.WARNING, f"The image of this definition failed to build ({versions}): see its build log, then change the definition or rebuild."
    return messages.INFO, f"Image already {image.status.lower()}: {versions}."


def _save_version(request, access: Access, form: EnvironmentForm) -> Environment:
    """Saving builds nothing: the image is built when a run or deployment on a Docker target needs it, or on Build."""
    with transaction.atomic():
        env = form.environment(request.user)
        env.save_new_version()
    messages.success(request, f"Saved {env.name} version {env.version}.")
    if env.needs_image:
        image = EnvironmentImage.objects.filter(definition_hash=env.definition_hash).first()
        if image is None:
            messages.info(request, "No image yet: it is built when a run or deployment on a Docker target needs it, "
                                   "or when you choose Build the image. Local runs use a virtualenv and need none.")
        else:
            level, text = _image_message(access, image, True)
            messages.add_message(request, level, text)
    return env


# Environments -----------------------------------------------------------------------------------------------------
@require_GET
@login_required
def environment_list(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    envs = list(Environment.objects.visible_to(access.workspace).latest_versions().select_related("created_by"))
    hashes = [env.definition_hash for env in envs if env.needs_image]
    images = {image.definition_hash: image for image in EnvironmentImage.objects.filter(definition_hash__in=hashes)}
    for env in envs:
        env.image = images.get(env.definition_hash) if env.needs_image else None
        env.kind_label = KIND_LABELS.get(env.kind, env.kind)
    envs.sort(key=lambda env: (env.workspace_id is None, env.name.lower()))
    return render(request, "environments/environment_list.html", {"access": access, "workspace": access.workspace, "environments": envs})


@require_http_methods(["GET", "POST"])
@login_required
def environment_create(request, workspace: str):
    access = _access(request, workspace)
    form = EnvironmentForm(request.POST or None, workspace=access.workspace)
    if request.method == "POST" and form.is_valid():
        env = _save_version(request, access, form)
        return redirect("environment_version", workspace=workspace, name=env.name, version=env.version)
    return _render_form(request, access, form, title="New environment", source=None)


def _render_form(request, access: Access, form: EnvironmentForm, *, title: str, source: Environment | None):
    return render(
        request, "environments/environment_form.html",
        {"access": access, "workspace": access.workspace, "form": form, "title": title, "source": source},
        status=400 if form.errors else 200,
    )


@require_GET
@login_required
def environment_detail(request, workspace: str, name: str, version: int | None = None):
    access = get_workspace_for_user(request, workspace)
    env = find_environment(access, name, version)
    query = valid_query(DetailQueryForm, request)
    image = EnvironmentImage.objects.filter(definition_hash=env.definition_hash).first() if env.needs_image else None
    context = {"access": access, "workspace": access.workspace, "env": env, "image": image,
               "shared_count": versions_using(access, env.definition_hash).count()}
    if request.htmx and request.htmx.target == "image-card":
        response = render(request, "environments/environment_detail.html#image-card", context)
        if image is None or image.is_final:
            response.status_code = HTMX_STOP_POLLING
        return response
    history = list(env.history().filter(anonymous=False).select_related("created_by"))
    for item in history:
        item.previous_diff = f"{item.version - 1}..{item.version}" if item.version > 1 else ""
        low, high = sorted((item.version, env.version))
        item.compare_diff = f"{low}..{high}" if low != high else ""
    context.update(history=history, latest=history[0] if history else env)
    try:
        definition = env.definition()
    except DefinitionError as error:
        context["definition_error"] = str(error)
    else:
        context["dockerfile"] = definition.dockerfile(ca_bundle=bool(settings.STUDIO_BUILD_CA_BUNDLE))
        context["unpinned"] = _unpinned(definition, image) if env.needs_image else []
        context["floating_base"] = env.needs_image and definition.floating_base()
        context["effective_base"] = definition.base_image
    if query["diff"]:
        by_version = {item.version: item for item in history}
        old, new = (by_version.get(number) for number in query["diff"])
        if old is None or new is None:
            raise Http404(f"{env.name} has no such version to compare.")
        context.update(diff=diff_lines(old, new), diff_old=old, diff_new=new)
    return render(request, "environments/environment_detail.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def environment_edit(request, workspace: str, name: str, version: int | None = None):
    """The form prefilled from a version (the latest by default); saving makes the next version."""
    access = _access(request, workspace)
    source = find_environment(access, name, version)
    if source.is_curated:
        messages.info(request, "A curated environment never changes: save a copy of it under a new name instead.")
        return redirect("environment_version_save_as", workspace=workspace, name=source.name, version=source.version)
    form = EnvironmentForm(request.POST or None, workspace=access.workspace, mode="edit", source=source)
    if request.method == "POST" and form.is_valid():
        env = _save_version(request, access, form)
        return redirect("environment_version", workspace=workspace, name=env.name, version=env.version)
    return _render_form(request, access, form, title=f"Edit {source.name}", source=source)


@require_http_methods(["GET", "POST"])
@login_required
def environment_save_as(request, workspace: str, name: str, version: int | None = None):
    """A copy of a version (a curated one too) under a new name, as version 1 of a new environment."""
    access = _access(request, workspace)
    source = find_environment(access, name, version)
    form = EnvironmentForm(request.POST or None, workspace=access.workspace, mode="save_as", source=source)
    if request.method == "POST" and form.is_valid():
        env = _save_version(request, access, form)
        return redirect("environment_version", workspace=workspace, name=env.name, version=env.version)
    return _render_form(request, access, form, title=f"Save {source.name}:{source.version} as…", source=source)


@require_POST
@login_required
def environment_build(request, workspace: str, name: str, version: int):
    """Build the image of a version that has none yet (a curated one, say); an existing image is left as it is."""
    access = get_rw_workspace_for_user(request, workspace)
    env = find_environment(access, name, version)
    if not env.needs_image:
        messages.info(request, "A user-managed environment has no image: runs use its interpreter as it is.")
        return redirect("environment_version", workspace=workspace, name=env.name, version=env.version)
    with transaction.atomic():
        existed = EnvironmentImage.objects.filter(definition_hash=env.definition_hash).exists()
        image = builds.ensure_image(env)
    level, text = _image_message(access, image, existed)
    messages.add_message(request, level, text)
    return redirect("image_detail", workspace=workspace, image_id=image.pk)


# Images -----------------------------------------------------------------------------------------------------------
@require_GET
@login_required
def image_detail(request, workspace: str, image_id: int):
    access, image = get_image_for_user(request, workspace, image_id)
    context = {
        "access": access, "workspace": access.workspace, "image": image,
        "waited": image.started_at - image.queued_at if image.started_at else None,
        "took": image.ended_at - image.started_at if image.ended_at and image.started_at else None,
    }
    if request.htmx and request.htmx.target == "image-summary":
        response = render(request, "environments/image_detail.html#image-summary", context)
        if image.is_final:
            response.status_code = HTMX_STOP_POLLING
        return response
    versions = list(versions_using(access, image.definition_hash))
    anonymous = Environment.objects.filter(workspace=access.workspace, definition_hash=image.definition_hash, anonymous=True).count()
    dockerfile = image.dockerfile
    if not dockerfile and versions:
        try:
            dockerfile = versions[0].definition().dockerfile(ca_bundle=bool(settings.STUDIO_BUILD_CA_BUNDLE))
        except DefinitionError:
            dockerfile = ""
    context.update(versions=versions, anonymous_count=anonymous, dockerfile=dockerfile)
    if image.is_final:
        path = builds.log_path(image)
        context["log_lines"], context["log_truncated"] = console.tail(path)
        context["log_size"] = console.size(path)
    return render(request, "environments/image_detail.html", context)


@require_POST
@login_required
def image_rebuild(request, workspace: str, image_id: int):
    _, image = get_image_for_user(request, workspace, image_id, write=True)
    if builds.rebuild(image):
        messages.success(request, "Rebuild queued: the image is built again from its definition.")
    else:
        messages.info(request, f"The image is {image.status.lower()} already: wait for the build to end.")
    return redirect("image_detail", workspace=workspace, image_id=image.pk)


@require_GET
@login_required
def image_log(request, workspace: str, image_id: int):
    """The full build log as text; with ?offset=N, JSON lines from that byte on (the polling fallback)."""
    _, image = get_image_for_user(request, workspace, image_id)
    query = valid_query(LogQueryForm, request)
    path = builds.log_path(image)
    if query["offset"] is not None:
        lines, next_offset = console.chunk(path, query["offset"])
        return JsonResponse({"lines": lines, "next_offset": next_offset, "status": image.status, "final": image.is_final})
    if not path.is_file():
        return HttpResponse("", content_type="text/plain; charset=utf-8")
    return file_response(
        request, open(path, "rb"), filename=f"image-{image.pk}-build.log", as_attachment=query["download"],
        content_type="text/plain; charset=utf-8",
    )

