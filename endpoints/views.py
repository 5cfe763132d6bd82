"""The endpoints' pages: Endpoints (the list), Deploy (from a model version), an endpoint (scoring URL, keys for those
who may see them, deployments live, traffic and mirror, a Test tab, charts, recent requests, an instance's live
console, the history), and a deployment's update form. Readers see everything but keys and change nothing;
contributors and owners deploy, move traffic, test, regenerate keys and delete."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from endpoints import queries, services
from endpoints.forms import (
    NEW,
    CaptureForm,
    DeployForm,
    EndpointForm,
    RegenerateForm,
    StatsQuery,
    TestForm,
    TrafficForm,
    UpdateDeploymentForm,
)
from endpoints.models import Deployment, Endpoint, Instance
from models_registry import registry
from studio import console
from studio.access import access_for, get_in_workspace, get_workspace_for_user
from studio.downloads import file_response
from studio.forms import LogQueryForm, error_message, valid_query
from studio.sse import event_stream, sse_response, valid_last_event_id

TEST_TIMEOUT = 60
TEST_SHOWN_BYTES = 200_000


def get_endpoint(request, workspace: str, name: str, *, write: bool = False):
    return get_in_workspace(request, workspace, Endpoint.objects.filter(deleting=False), write=write,
                            missing=f"No endpoint named {name[:255]!r} in this workspace.", name=name)


def get_deployment(request, workspace: str, name: str, deployment: str, *, write: bool = False):
    access, endpoint = get_endpoint(request, workspace, name, write=write)
    found = endpoint.deployments.select_related("model_version__model", "environment", "compute_target").filter(
        name=deployment).first()
    if found is None:
        raise Http404(f"The endpoint {endpoint.name} has no deployment {deployment[:255]!r}.")
    return access, endpoint, found


def _script(form) -> tuple[str, bytes] | None:
    upload = form.cleaned_data.get("script")
    if upload is not None:
        return upload.name, upload.read()
    return None


# The list --------------------------------------------------------------------------------------------------------


@require_GET
@login_required
def endpoint_list(request, workspace: str):
    access = get_workspace_for_user(request, workspace)
    endpoints = queries.endpoints_of(access.workspace)
    return render(request, "endpoints/endpoint_list.html", {
        "access": access, "workspace": access.workspace, "rows": queries.endpoints_json(endpoints),
    })


@require_http_methods(["GET", "POST"])
@login_required
def endpoint_new(request, workspace: str):
    access = access_for(request, workspace, write=True)
    form = EndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = services.create_endpoint(access.workspace, request.user, form.cleaned_data["name"],
                                                form.cleaned_data["description"])
        except services.EndpointError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Endpoint {endpoint.name} created. Deploy a model to it from a model "
                                      "version's page, or below.")
            return redirect("endpoint_detail", workspace, endpoint.name)
    return render(request, "endpoints/endpoint_new.html", {"access": access, "workspace": access.workspace,
                                                          "form": form}, status=400 if form.errors else 200)


# Deploying -------------------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def deploy(request, workspace: str):
    """The Deploy form, opened from a model version (`?model=name:3`) or an endpoint (`?endpoint=name`)."""
    access = access_for(request, workspace, write=True)
    reference = (request.POST.get("model") or request.GET.get("model") or "").strip()[:600]
    version = None
    if reference:
        try:
            version = registry.resolve(access.workspace, reference)
        except registry.RegistryError:
            version = None
    scripts = services.snapshot_scripts(version) if version else []
    initial = {"model": reference, "endpoint": request.GET.get("endpoint", NEW)[:63]}
    if version is not None and not access.workspace.endpoints.filter(deleting=False).exists():
        initial["new_endpoint"] = version.model.name.lower().replace("_", "-")[:63]
    if version is not None and "score.py" in scripts:
        initial["snapshot_script"] = "score.py"
    form = DeployForm(request.POST or None, request.FILES or None, workspace=access.workspace, scripts=scripts,
                      initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            deployment = _deploy(access, request.user, form, version)
        except services.EndpointError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Deploying {deployment.model_version.model.name}:"
                                      f"{deployment.model_version.version} as {deployment.name}: the page follows "
                                      "it from Building to Healthy.")
            return redirect("endpoint_detail", workspace, deployment.endpoint.name)
    return render(request, "endpoints/deploy.html", {
        "access": access, "workspace": access.workspace, "form": form, "version": version,
    }, status=400 if form.errors else 200)


def _deploy(access, user, form, version) -> Deployment:
    data = form.cleaned_data
    script = _script(form)
    if script is None and data.get("snapshot_script"):
        if version is None:
            raise services.EndpointError("Pick the model first: the snapshot script comes from its training run.")
        script = services.script_from_snapshot(version, data["snapshot_script"])
    if data["endpoint"] == NEW:
        endpoint = services.create_endpoint(access.workspace, user, data["new_endpoint"])
        created = True
    else:
        endpoint = Endpoint.objects.filter(workspace=access.workspace, name=data["endpoint"], deleting=False).first()
        if endpoint is None:
            raise services.EndpointError(f"No endpoint named {data['endpoint']!r} in this workspace.")
        created = False
    try:
        return services.create_deployment(
            endpoint, user, data["name"], model=data["model"], extra_models=form.extra_model_list(),
            compute_target=data["compute_target"], environment=data.get("environment"), script=script,
            traffic=data.get("traffic") or 0, **form.settings())
    except services.EndpointError:
        if created:  # the form is shown again: the endpoint made for it would be a surprise
            Endpoint.objects.filter(pk=endpoint.pk).delete()
        raise


@require_http_methods(["GET", "POST"])
@login_required
def deployment_edit(request, workspace: str, name: str, deployment: str):
    access, endpoint, found = get_deployment(request, workspace, name, deployment, write=True)
    version = found.model_version
    scripts = services.snapshot_scripts(version)
    form = UpdateDeploymentForm(request.POST or None, request.FILES or None, workspace=access.workspace,
                                scripts=scripts, initial={
                                    "model": f"{version.model.name}:{version.version}",
                                    "environment": found.environment, **{k: getattr(found, k)
                                                                         for k in services.SETTINGS}})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            script = _script(form)
            if script is None and data.get("snapshot_script"):
                script = services.script_from_snapshot(version, data["snapshot_script"])
            updated = services.update_deployment(found, request.user, model=data["model"],
                                                 environment=data.get("environment"), script=script,
                                                 **form.settings())
        except services.EndpointError as error:
            form.add_error(None, str(error))
        else:
            if updated.revision != found.revision:
                messages.success(request, f"Revision {updated.revision} of {found.name} is starting; it takes the "
                                          "traffic once ready, and the old instances then stop.")
            else:
                messages.info(request, "Nothing changed.")
            return redirect("endpoint_detail", workspace, endpoint.name)
    return render(request, "endpoints/deployment_edit.html", {
        "access": access, "workspace": access.workspace, "endpoint": endpoint, "deployment": found, "form": form,
    }, status=400 if form.errors else 200)


@require_POST
@login_required
def deployment_delete(request, workspace: str, name: str, deployment: str):
    _, endpoint, found = get_deployment(request, workspace, name, deployment, write=True)
    try:
        services.delete_deployment(found, request.user)
    except services.EndpointError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Deployment {found.name} is being deleted: its instances stop.")
    return redirect("endpoint_detail", workspace, endpoint.name)


# An endpoint ------------------------------------------------------------------------------------------------------


@require_GET
@login_required
def endpoint_detail(request, workspace: str, name: str):
    access, endpoint = get_endpoint(request, workspace, name)
    data = queries.endpoints_json([endpoint])[0]
    context = {"access": access, "workspace": access.workspace, "endpoint": endpoint, "data": data}
    if request.htmx and request.htmx.target == "deployments":
        return render(request, "endpoints/endpoint_detail.html#deployments", context)
    if request.htmx and request.htmx.target == "recent-requests":
        context["requests"] = list(queries.recent_requests(endpoint, limit=50))
        return render(request, "endpoints/endpoint_detail.html#recent-requests", context)
    deployments = list(endpoint.deployments.order_by("name"))
    instances = list(Instance.objects.filter(deployment__endpoint=endpoint).select_related(
        "deployment__compute_target").order_by("deployment__name", "-revision", "index"))
    chosen = _chosen_instance(request, instances)
    context.update(
        requests=list(queries.recent_requests(endpoint, limit=50)), totals=queries.totals(endpoint),
        events=list(endpoint.events.select_related("by")[:100]), instances=instances, instance=chosen,
        traffic_form=TrafficForm(deployments=deployments, endpoint=endpoint), deployments=deployments,
        test_form=TestForm(), capture_form=CaptureForm(initial={"capture_percent": endpoint.capture_percent}),
    )
    if chosen is not None:
        final = chosen.state == Instance.State.DEAD
        path = queries.instance_log_path(chosen)
        context.update(instance_final=final, log_size=console.size(path),
                       console_title=f"Console of {chosen.deployment.name} instance {queries.instance_label(chosen)}",
                       log_url=reverse("instance_log", args=[workspace, endpoint.name, chosen.pk]),
                       events_url=reverse("instance_events", args=[workspace, endpoint.name, chosen.pk]))
        if final:
            context["log_lines"], context["log_truncated"] = console.tail(path)
    return render(request, "endpoints/endpoint_detail.html", context)


def _chosen_instance(request, instances: list[Instance]) -> Instance | None:
    wanted = request.GET.get("instance", "")
    if wanted.isdigit():
        for instance in instances:
            if instance.pk == int(wanted):
                return instance
    live = [i for i in instances if i.state in (Instance.State.READY, Instance.State.STARTING)]
    return (live or instances or [None])[0]


@require_GET
@login_required
def endpoint_keys(request, workspace: str, name: str):
    """The keys, shown on request (contributors and owners only)."""
    access, endpoint = get_endpoint(request, workspace, name, write=True)
    return render(request, "endpoints/endpoint_detail.html#keys", {
        "access": access, "workspace": access.workspace, "endpoint": endpoint, "keys": services.keys(endpoint),
        "data": {"scoring_url": queries.scoring_url(endpoint)},
    })


@require_POST
@login_required
def endpoint_regenerate(request, workspace: str, name: str):
    _, endpoint = get_endpoint(request, workspace, name, write=True)
    form = RegenerateForm(request.POST)
    if not form.is_valid():
        messages.error(request, error_message(form))
    else:
        services.regenerate_key(endpoint, form.cleaned_data["key"], request.user)
        messages.success(request, f"The {form.cleaned_data['key']} key was regenerated: the old one no longer works.")
    return redirect(reverse("endpoint_detail", args=[workspace, endpoint.name]) + "#keys")


@require_POST
@login_required
def endpoint_traffic(request, workspace: str, name: str):
    _, endpoint = get_endpoint(request, workspace, name, write=True)
    deployments = list(endpoint.deployments.order_by("name"))
    form = TrafficForm(request.POST, deployments=deployments, endpoint=endpoint)
    if not form.is_valid():
        messages.error(request, error_message(form))
    else:
        traffic, mirror = form.splits()
        try:
            services.set_traffic(endpoint, request.user, traffic=traffic, mirror=mirror)
        except services.EndpointError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, "Traffic updated: the gateway uses the new split at once.")
    return redirect(reverse("endpoint_detail", args=[workspace, endpoint.name]) + "#traffic")


@require_POST
@login_required
def endpoint_capture(request, workspace: str, name: str):
    _, endpoint = get_endpoint(request, workspace, name, write=True)
    form = CaptureForm(request.POST)
    if not form.is_valid():
        messages.error(request, error_message(form))
    else:
        services.update_endpoint(endpoint, request.user, capture_percent=form.cleaned_data["capture_percent"])
        messages.success(request, f"Payload capture: {endpoint.capture_percent} % of requests.")
    return redirect(reverse("endpoint_detail", args=[workspace, endpoint.name]) + "#requests")


@require_POST
@login_required
def endpoint_delete(request, workspace: str, name: str):
    _, endpoint = get_endpoint(request, workspace, name, write=True)
    services.delete_endpoint(endpoint, request.user)
    messages.success(request, f"Endpoint {endpoint.name} deleted: scoring stopped, and its instances stop.")
    return redirect("endpoint_list", workspace)


def _gateway(endpoint: Endpoint, path: str, *, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body, milliseconds) of a call to the endpoint through the gateway, with its primary key."""
    url = f"{settings.STUDIO_GATEWAY_URL}/endpoints/{endpoint.workspace.name}/{endpoint.name}/{path}"
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    request.add_header("Authorization", f"Bearer {services.keys(endpoint)['primary']}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=TEST_TIMEOUT) as response:
            content = response.read(TEST_SHOWN_BYTES + 1)
            status, reply_headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        content, status, reply_headers = error.read(TEST_SHOWN_BYTES + 1), error.code, dict(error.headers)
    except (OSError, ValueError) as error:
        return None, {}, f"The scoring gateway did not answer at {settings.STUDIO_GATEWAY_URL}: {error}".encode(), 0.0
    return status, reply_headers, content, (time.perf_counter() - started) * 1000


@require_POST
@login_required
def endpoint_test(request, workspace: str, name: str):
    """The Test tab: the body sent through the gateway as a client would send it (with the primary key)."""
    access, endpoint = get_endpoint(request, workspace, name, write=True)
    form = TestForm(request.POST)
    if not form.is_valid():
        return render(request, "endpoints/endpoint_detail.html#test-result",
                      {"error": error_message(form)}, status=400)
    headers = {"Content-Type": "application/json"}
    if form.cleaned_data["deployment"]:
        headers["azureml-model-deployment"] = form.cleaned_data["deployment"]
    status, reply_headers, content, took = _gateway(endpoint, "score", body=form.cleaned_data["body"].encode(),
                                                    headers=headers)
    text = content[:TEST_SHOWN_BYTES].decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return render(request, "endpoints/endpoint_detail.html#test-result", {
        "status": status, "took": took, "text": text, "truncated": len(content) > TEST_SHOWN_BYTES,
        "deployment": reply_headers.get("azureml-model-deployment", ""),
    })


@require_GET
@login_required
def endpoint_sample(request, workspace: str, name: str):
    """A request body for the Test tab: the input example of the scoring script's swagger document, if it has one."""
    _, endpoint = get_endpoint(request, workspace, name, write=True)
    status, _, content, _ = _gateway(endpoint, "swagger.json")
    sample = ""
    if status == 200:
        try:
            sample = json.dumps(_swagger_example(json.loads(content)), indent=2)
        except (ValueError, KeyError, TypeError):
            sample = ""
    return JsonResponse({"sample": sample, "found": bool(sample)})


def _swagger_example(document: dict):
    """The example body of the scoring operation in a swagger document made by inference-schema."""
    paths = document.get("paths", {})
    for path in ("/score", "/"):
        operation = (paths.get(path) or {}).get("post") or {}
        for parameter in operation.get("parameters", []):
            example = (parameter.get("schema") or {}).get("example")
            if example is not None:
                return example
        content = ((operation.get("requestBody") or {}).get("content") or {})
        for media in content.values():
            example = (media.get("schema") or {}).get("example", media.get("example"))
            if example is not None:
                return example
    definitions = document.get("definitions") or document.get("components", {}).get("schemas", {})
    example = (definitions.get("ServiceInput") or {}).get("example")
    if example is None:
        raise KeyError("no example")
    return example


@require_GET
@login_required
def endpoint_stats(request, workspace: str, name: str):
    """The charts' data: per deployment and ten seconds, requests per second, errors and latency percentiles."""
    _, endpoint = get_endpoint(request, workspace, name)
    query = valid_query(StatsQuery, request)
    return JsonResponse(queries.stats(endpoint, query.get("minutes") or 60))


# Instances' consoles ------------------------------------------------------------------------------------------------


def _instance(request, workspace: str, name: str, instance_id: int) -> Instance:
    _, endpoint = get_endpoint(request, workspace, name)
    found = Instance.objects.filter(pk=instance_id, deployment__endpoint=endpoint).select_related(
        "deployment__compute_target").first()
    if found is None:
        raise Http404("No such instance in this endpoint (replaced instances go with their console).")
    return found


@require_GET
@login_required
def instance_log(request, workspace: str, name: str, instance_id: int):
    """An instance's console as text; with ?offset=N, JSON lines from that byte on (the polling fallback)."""
    instance = _instance(request, workspace, name, instance_id)
    query = valid_query(LogQueryForm, request)
    path = queries.instance_log_path(instance)
    final = instance.state == Instance.State.DEAD
    if query["offset"] is not None:
        lines, next_offset = console.chunk(path, query["offset"])
        return JsonResponse({"lines": lines, "next_offset": next_offset, "status": instance.state, "final": final})
    if not path.is_file():
        return HttpResponse("", content_type="text/plain; charset=utf-8")
    return file_response(request, open(path, "rb"), filename=f"instance-{instance.pk}.log",
                         as_attachment=query["download"], content_type="text/plain; charset=utf-8")


@require_GET
@login_required
async def instance_events(request, workspace: str, name: str, instance_id: int):
    await request.auser()
    instance = await sync_to_async(_instance)(request, workspace, name, instance_id)
    try:
        last_id = valid_last_event_id(request)
    except ValueError as error:
        return HttpResponse(str(error), status=400)

    @sync_to_async
    def is_final() -> bool:
        return not Instance.objects.filter(pk=instance.pk).exclude(state=Instance.State.DEAD).exists()

    return sse_response(event_stream(instance.stream_key, last_id, is_final, final_states=()))
