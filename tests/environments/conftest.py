"""Shared setup for the environment pages' tests: a way to save environment versions as the form does."""

from __future__ import annotations

import pytest

from environments.models import Environment, EnvironmentImage, EnvironmentKind


def make_env(workspace, user=None, name: str = "torch-env", *, password: str = "", **fields) -> Environment:
    """The next version of `name` in `workspace` (None: curated), saved the way the pages save it."""
    fields.setdefault("kind", EnvironmentKind.SYSTEM_MANAGED)
    fields.setdefault("base_image", "python:3.12-slim")
    env = Environment(workspace=workspace, name=name, created_by=user, **fields)
    if password:
        env.set_registry_password(password)
    return env.save_new_version()


def image_for(env: Environment, **fields) -> EnvironmentImage:
    return EnvironmentImage.objects.create(definition_hash=env.definition_hash, **fields)


def form_data(**overrides) -> dict:
    """What the create form posts for a simple system-managed environment."""
    data = {
        "name": "torch-env", "kind": "system", "description": "For the mnist runs.", "base_image": "python:3.12-slim",
        "base_dockerfile": "", "dockerfile_steps": "", "python_packages": "six==1.16.0", "conda_spec": "",
        "interpreter_path": "", "env_vars": "", "registry_address": "", "registry_username": "", "registry_password": "",
    }
    data.update(overrides)
    return data


@pytest.fixture
def curated(db) -> Environment:
    return Environment.objects.get(workspace__isnull=True, name="Studio-sklearn", version=1)


def plain(response) -> str:
    """What a person reads: the page's text without tags, entities decoded."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", response.content.decode()))
