"""Environments and their images through the REST API: the latest versions (curated ones too), a version's history,
saving versions (which builds nothing), validation by field, the write-only registry password, builds, rebuilds and
the build log."""

from __future__ import annotations

import json

import pytest

from environments import builds
from environments.models import BuildStatus, Environment, EnvironmentImage, EnvironmentKind
from studio.models import ApiToken, Workspace
from tests.environments.conftest import image_for, make_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

API = "/api/v1/workspaces/lab"
PASSWORD = "hunter2-registry-secret"


def token_for(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def get(client, user, path, query=None):
    return client.get(f"{API}{path}", query or {}, headers=token_for(user))


def post(client, user, path, payload=None):
    data = json.dumps(payload) if payload is not None else ""
    return client.post(f"{API}{path}", data, content_type="application/json", headers=token_for(user))


def save(client, user, name, **fields):
    payload = {"python_packages": "six==1.16.0", "base_image": "python:3.12-slim", **fields}
    return post(client, user, f"/environments/{name}/versions", payload)


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# Reading ------------------------------------------------------------------------------------------------------------


def test_it_lists_the_latest_version_of_each_environment_then_the_curated_ones(client, cast, workspace):
    make_env(workspace, cast["carol"], "torch-env", python_packages="torch==2.0")
    make_env(workspace, cast["carol"], "torch-env", python_packages="torch==2.1")
    make_env(workspace, cast["carol"], "Alpha", kind=EnvironmentKind.USER_MANAGED, base_image="",
             interpreter_path="/usr/bin/python3")
    response = get(client, cast["bob"], "/environments")
    assert response.status_code == 200
    listed = [(env["name"], env["version"], env["curated"]) for env in response.json()]
    assert listed == [("Alpha", 1, False), ("torch-env", 2, False),
                      ("Studio-minimal-python", 1, True), ("Studio-sklearn", 3, True)]
    torch = response.json()[1]
    assert torch["python_packages"] == "torch==2.1" and torch["kind"] == "system" and torch["created_by"] == "carol"
    assert torch["image"] is None  # nothing asked for its image yet


def test_it_lists_neither_anonymous_environments_nor_another_workspaces(client, cast, workspace):
    Environment.anonymous_for(workspace, "six==1.16.0", cast["carol"])
    make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env")
    names = [env["name"] for env in get(client, cast["bob"], "/environments").json()]
    assert names == ["Studio-minimal-python", "Studio-sklearn"]


def test_the_list_shows_each_environments_image(client, cast, workspace):
    env = make_env(workspace, cast["carol"], "torch-env")
    image = image_for(env, status=BuildStatus.SUCCEEDED, size_bytes=1234, resolved_packages="six==1.16.0")
    (listed,) = [item for item in get(client, cast["bob"], "/environments").json() if item["name"] == "torch-env"]
    assert listed["image"]["id"] == image.pk and listed["image"]["status"] == "Succeeded"
    assert listed["image"]["name"] == f"studio/env_{env.definition_hash}"
    assert listed["image"]["size_bytes"] == 1234 and listed["image"]["resolved_packages"] == "six==1.16.0"
    assert listed["image"]["log_url"] == f"{API}/images/{image.pk}/log"
    assert listed["image"]["events_url"] == f"{API}/images/{image.pk}/events"


def test_it_lists_every_version_of_one_environment_newest_first(client, cast, workspace):
    for packages in ("six==1.15.0", "six==1.16.0", "six==1.17.0"):
        make_env(workspace, cast["carol"], "torch-env", python_packages=packages)
    response = get(client, cast["bob"], "/environments/torch-env")
    assert response.status_code == 200
    assert [(env["version"], env["python_packages"]) for env in response.json()] == [
        (3, "six==1.17.0"), (2, "six==1.16.0"), (1, "six==1.15.0")]


def test_it_lists_the_versions_of_a_curated_environment(client, cast, workspace):
    response = get(client, cast["bob"], "/environments/Studio-sklearn")
    assert response.status_code == 200
    versions = response.json()
    # version 2 added matplotlib, version 3 inference-schema (for scoring scripts); older versions stay for their runs
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert all(v["curated"] is True and v["kind"] == "curated" for v in versions)
    assert "inference-schema==1.8" in versions[0]["python_packages"].splitlines()
    assert "inference-schema" not in versions[1]["python_packages"]
    assert versions[0]["python_packages"].splitlines()[:-1] == versions[1]["python_packages"].splitlines()
    assert "matplotlib" in versions[1]["python_packages"] and "matplotlib" not in versions[2]["python_packages"]


def test_it_gets_one_version(client, cast, workspace):
    first = make_env(workspace, cast["carol"], "torch-env", python_packages="six==1.15.0", env_vars={"MODE": "fast"})
    make_env(workspace, cast["carol"], "torch-env", python_packages="six==1.16.0")
    response = get(client, cast["bob"], "/environments/torch-env/1")
    assert response.status_code == 200
    env = response.json()
    assert env["version"] == 1 and env["python_packages"] == "six==1.15.0" and env["env_vars"] == {"MODE": "fast"}
    assert env["definition_hash"] == first.definition_hash and env["base_image"] == "python:3.12-slim"


def test_an_environment_or_version_that_does_not_exist_is_a_404_naming_it(client, cast, workspace):
    make_env(workspace, cast["carol"], "torch-env")
    assert get(client, cast["bob"], "/environments/nope").json() == {"error": "No environment nope in this workspace."}
    response = get(client, cast["bob"], "/environments/torch-env/7")
    assert response.status_code == 404 and response.json() == {"error": "No environment torch-env:7 in this workspace."}


def test_another_workspaces_environment_is_a_404(client, cast, workspace):
    make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env")
    assert get(client, cast["bob"], "/environments/secret-env").status_code == 404


# Saving versions -----------------------------------------------------------------------------------------------------


def test_saving_a_new_name_makes_version_1_and_starts_no_build(client, cast, workspace):
    images = EnvironmentImage.objects.count()
    response = save(client, cast["carol"], "torch-env", description="For mnist.", env_vars={"MODE": "fast"},
                    dockerfile_steps="RUN echo hi")
    assert response.status_code == 201
    env = response.json()
    assert (env["name"], env["version"], env["kind"], env["curated"]) == ("torch-env", 1, "system", False)
    assert env["description"] == "For mnist." and env["python_packages"] == "six==1.16.0"
    assert env["env_vars"] == {"MODE": "fast"} and env["dockerfile_steps"] == "RUN echo hi"
    assert env["created_by"] == "carol" and env["image"] is None
    saved = Environment.objects.get(workspace=workspace, name="torch-env")
    assert saved.definition_hash == env["definition_hash"] and saved.created_by == cast["carol"]
    assert EnvironmentImage.objects.count() == images


def test_saving_again_makes_version_2_and_leaves_version_1_as_it_was(client, cast, workspace):
    save(client, cast["carol"], "torch-env", python_packages="six==1.16.0")
    images = EnvironmentImage.objects.count()
    response = save(client, cast["alice"], "torch-env", python_packages="six==1.17.0")
    assert response.status_code == 201 and response.json()["version"] == 2
    assert response.json()["python_packages"] == "six==1.17.0" and response.json()["created_by"] == "alice"
    versions = {env.version: env.python_packages for env in Environment.objects.filter(name="torch-env")}
    assert versions == {1: "six==1.16.0", 2: "six==1.17.0"}
    assert [env["version"] for env in get(client, cast["bob"], "/environments").json()
            if env["name"] == "torch-env"] == [2]
    assert EnvironmentImage.objects.count() == images


def test_a_system_managed_environment_without_a_base_writes_the_default_down(client, cast, workspace, settings):
    response = save(client, cast["carol"], "torch-env", base_image="")
    assert response.json()["base_image"] == settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE


def test_a_user_managed_environment_is_saved_with_its_interpreter(client, cast, workspace):
    response = post(client, cast["carol"], "/environments/conda-env/versions",
                    {"kind": "user", "interpreter_path": "/opt/conda/bin/python"})
    assert response.status_code == 201
    assert response.json()["kind"] == "user" and response.json()["interpreter_path"] == "/opt/conda/bin/python"


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"base_image": "not an image!"}, "base_image", "Give an image reference such as python:3.12-slim"),
    ({"base_image": "", "base_dockerfile": "RUN echo no base"}, "base_dockerfile", "add a FROM line"),
    ({"base_dockerfile": "FROM python:3.12"}, "base_dockerfile", "Give a base image or a base Dockerfile, not both."),
    ({"kind": "user"}, "kind", "A user-managed environment installs nothing, yet it has Python packages"),
    ({"kind": "curated"}, "kind", "Select a valid choice."),
    ({"interpreter_path": "/usr/bin/python3"}, "interpreter_path", "The interpreter path is for user-managed"),
    ({"env_vars": {"STUDIO_SECRET": "x"}}, "env_vars", "names starting with STUDIO_ are reserved"),
    ({"env_vars": {"1BAD": "x"}}, "env_vars", "is not a valid name"),
    ({"conda_spec": "channels: [unclosed"}, "conda_spec", ""),
    ({"registry_password": PASSWORD}, "registry_username", "A registry password needs the username"),
])
def test_an_invalid_definition_is_a_400_with_the_errors_by_field(client, cast, workspace, fields, field, message):
    response = save(client, cast["carol"], "torch-env", **fields)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors and message in " ".join(errors[field])
    assert response.json()["error"].startswith(f"Invalid input: {field}:")
    assert PASSWORD not in response.content.decode()
    assert not Environment.objects.filter(name="torch-env").exists()


@pytest.mark.parametrize("env_vars", [{"MODE": "fast\nLD_PRELOAD=/tmp/evil.so"}, {"MODE=x": "y"},
                                      {"#MODE": "fast"}, {"MODE": "a\u2028B=c"}])
def test_environment_variables_are_refused_unless_each_is_one_name_and_one_line(client, cast, workspace, env_vars):
    response = save(client, cast["carol"], "torch-env", env_vars=env_vars)
    assert response.status_code == 400 and "env_vars" in response.json()["errors"]
    assert not Environment.objects.filter(name="torch-env").exists()


def test_a_type_error_in_the_body_is_a_400_naming_the_field(client, cast, workspace):
    response = save(client, cast["carol"], "torch-env", env_vars=["MODE=fast"])
    assert response.status_code == 400 and "env_vars" in response.json()["errors"]


@pytest.mark.parametrize("name", ["Studio-mine", "studio-sklearn", "STUDIO-x"])
def test_a_name_reserved_for_curated_environments_is_a_400(client, cast, workspace, name):
    response = save(client, cast["carol"], name)
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "name": ["Names starting with Studio- are reserved for curated environments: save it under another name."]}
    assert not Environment.objects.filter(name=name, workspace=workspace).exists()


@pytest.mark.parametrize("name", ["bad name!", "-leading", "images", "x" * 256])
def test_a_name_that_is_not_allowed_is_a_400(client, cast, workspace, name):
    response = save(client, cast["carol"], name)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["name"] and response.json()["error"].startswith("Invalid input: name:")
    assert not Environment.objects.filter(workspace=workspace).exists()


def test_a_reader_cannot_save_a_version(client, cast, workspace):
    response = save(client, cast["bob"], "torch-env")
    assert response.status_code == 403
    assert response.json() == {"error": "Readers cannot change anything in this workspace."}


# The registry password ------------------------------------------------------------------------------------------------


def test_the_registry_password_is_stored_but_never_returned(client, cast, workspace):
    response = save(client, cast["carol"], "private-env", registry_address="registry.example.com:5000",
                    registry_username="robot", registry_password=PASSWORD)
    assert response.status_code == 201
    env = response.json()
    assert env["registry_password_stored"] is True and env["registry_username"] == "robot"
    assert "registry_password" not in env and PASSWORD not in response.content.decode()
    stored = Environment.objects.get(name="private-env")
    assert stored.registry_auth() == {"username": "robot", "password": PASSWORD, "registry": "registry.example.com:5000"}
    assert PASSWORD not in stored.registry_password_encrypted
    for path in ("/environments", "/environments/private-env", "/environments/private-env/1"):
        read = get(client, cast["bob"], path)
        assert read.status_code == 200 and PASSWORD not in read.content.decode()
        assert "registry_password_stored" in read.content.decode()


def test_the_next_version_keeps_the_stored_password_unless_told_to_forget_it(client, cast, workspace):
    save(client, cast["carol"], "private-env", registry_username="robot", registry_password=PASSWORD)
    kept = save(client, cast["carol"], "private-env", registry_username="robot")
    assert kept.json()["version"] == 2 and kept.json()["registry_password_stored"] is True
    assert Environment.objects.get(name="private-env", version=2).registry_auth()["password"] == PASSWORD
    forgotten = save(client, cast["carol"], "private-env", registry_username="robot", forget_registry_password=True)
    assert forgotten.json()["version"] == 3 and forgotten.json()["registry_password_stored"] is False


# Builds -------------------------------------------------------------------------------------------------------------


def test_building_a_version_queues_its_image(client, cast, workspace):
    env = make_env(workspace, cast["carol"], "torch-env")
    response = post(client, cast["carol"], f"/environments/torch-env/{env.version}/build")
    assert response.status_code == 202
    image = EnvironmentImage.objects.get()
    assert response.json()["id"] == image.pk and response.json()["status"] == "Queued"
    assert response.json()["definition_hash"] == env.definition_hash
    assert response.json()["name"] == f"studio/env_{env.definition_hash}"
    assert get(client, cast["bob"], "/environments/torch-env/1").json()["image"]["id"] == image.pk


def test_building_twice_or_an_identical_definition_shares_one_image(client, cast, workspace):
    make_env(workspace, cast["carol"], "torch-env", python_packages="six==1.16.0")
    make_env(workspace, cast["carol"], "twin-env", python_packages="six==1.16.0")
    first = post(client, cast["carol"], "/environments/torch-env/1/build").json()
    assert post(client, cast["carol"], "/environments/torch-env/1/build").json()["id"] == first["id"]
    assert post(client, cast["alice"], "/environments/twin-env/1/build").json()["id"] == first["id"]
    assert EnvironmentImage.objects.count() == 1


def test_building_a_user_managed_environment_is_a_400(client, cast, workspace):
    make_env(workspace, cast["carol"], "conda-env", kind=EnvironmentKind.USER_MANAGED, base_image="",
             interpreter_path="/opt/conda/bin/python")
    response = post(client, cast["carol"], "/environments/conda-env/1/build")
    assert response.status_code == 400
    assert response.json() == {"error": "A user-managed environment has no image: runs use its interpreter as it is."}
    assert not EnvironmentImage.objects.exists()


def test_building_a_version_that_does_not_exist_is_a_404(client, cast, workspace):
    make_env(workspace, cast["carol"], "torch-env")
    response = post(client, cast["carol"], "/environments/torch-env/2/build")
    assert response.status_code == 404 and response.json() == {"error": "No environment torch-env:2 in this workspace."}


def test_a_reader_cannot_build(client, cast, workspace):
    make_env(workspace, cast["carol"], "torch-env")
    assert post(client, cast["bob"], "/environments/torch-env/1/build").status_code == 403
    assert not EnvironmentImage.objects.exists()


# Images -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def failed(cast, workspace) -> EnvironmentImage:
    env = make_env(workspace, cast["carol"], "torch-env", python_packages="requests")
    return image_for(env, status=BuildStatus.FAILED, failed_step="Step 6/7 : RUN pip install", error="boom",
                     build_count=1)


def test_it_gets_an_image(client, cast, failed):
    response = get(client, cast["bob"], f"/images/{failed.pk}")
    assert response.status_code == 200
    image = response.json()
    assert image["id"] == failed.pk and image["status"] == "Failed" and image["build_count"] == 1
    assert image["failed_step"] == "Step 6/7 : RUN pip install" and image["error"] == "boom"
    assert image["queued_at"] and image["started_at"] is None


def test_an_image_no_environment_of_the_workspace_uses_is_a_404(client, cast, workspace):
    other = make_env(Workspace.objects.get(name="elsewhere"), cast["charlie"], "secret-env")
    image = image_for(other)
    response = get(client, cast["bob"], f"/images/{image.pk}")
    assert response.status_code == 404 and response.json() == {"error": "No such image."}
    assert get(client, cast["bob"], f"/images/{image.pk + 100}").status_code == 404


def test_rebuilding_a_failed_image_queues_it_again(client, cast, failed):
    response = post(client, cast["carol"], f"/images/{failed.pk}/rebuild")
    assert response.status_code == 202
    assert response.json()["status"] == "Queued" and response.json()["failed_step"] == "" and response.json()["error"] == ""
    failed.refresh_from_db()
    assert failed.status == BuildStatus.QUEUED


@pytest.mark.parametrize("status", [BuildStatus.BUILDING, BuildStatus.QUEUED])
def test_rebuilding_while_a_build_is_going_is_a_409(client, cast, failed, status):
    EnvironmentImage.objects.filter(pk=failed.pk).update(status=status)
    response = post(client, cast["carol"], f"/images/{failed.pk}/rebuild")
    assert response.status_code == 409
    assert response.json() == {"error": f"The image is {status.lower()} already: wait for the build to end."}
    failed.refresh_from_db()
    assert failed.status == status


def test_a_reader_cannot_rebuild(client, cast, failed):
    assert post(client, cast["bob"], f"/images/{failed.pk}/rebuild").status_code == 403
    failed.refresh_from_db()
    assert failed.status == BuildStatus.FAILED


# The build log ----------------------------------------------------------------------------------------------------


LOG = b"Step 1/7 : FROM python:3.12-slim\n\x1b[1mStep 2/7\x1b[0m : RUN pip install\nhalf a li"


def write_log(image, data: bytes = LOG):
    path = builds.log_path(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_the_build_log_from_an_offset_is_json_lines(client, cast, failed):
    write_log(failed)
    response = get(client, cast["bob"], f"/images/{failed.pk}/log", {"offset": 0})
    assert response.status_code == 200
    complete = LOG.rindex(b"\n") + 1
    assert response.json() == {"lines": ["Step 1/7 : FROM python:3.12-slim", "Step 2/7 : RUN pip install"],
                               "next_offset": complete, "status": "Failed", "final": True}
    rest = get(client, cast["bob"], f"/images/{failed.pk}/log", {"offset": complete}).json()
    assert rest["lines"] == [] and rest["next_offset"] == complete


def test_the_build_log_of_a_running_build_is_not_final(client, cast, failed):
    EnvironmentImage.objects.filter(pk=failed.pk).update(status=BuildStatus.BUILDING)
    write_log(failed)
    chunk = get(client, cast["bob"], f"/images/{failed.pk}/log", {"offset": 0}).json()
    assert chunk["status"] == "Building" and chunk["final"] is False


def test_the_build_log_without_an_offset_is_the_whole_text(client, cast, failed):
    write_log(failed)
    response = get(client, cast["bob"], f"/images/{failed.pk}/log")
    assert response.status_code == 200 and response["Content-Type"] == "text/plain; charset=utf-8"
    assert body(response) == LOG
    download = get(client, cast["bob"], f"/images/{failed.pk}/log", {"download": "true"})
    assert download["Content-Disposition"] == f'attachment; filename="image-{failed.pk}-build.log"'


def test_an_image_without_a_log_yet_has_an_empty_one(client, cast, failed):
    assert body(get(client, cast["bob"], f"/images/{failed.pk}/log")) == b""
    assert get(client, cast["bob"], f"/images/{failed.pk}/log", {"offset": 0}).json()["lines"] == []


@pytest.mark.parametrize("offset", ["-1", "abc", str(2**63)])
def test_an_invalid_build_log_offset_is_a_400(client, cast, failed, offset):
    response = get(client, cast["bob"], f"/images/{failed.pk}/log", {"offset": offset})
    assert response.status_code == 400 and "offset" in response.json()["error"]
