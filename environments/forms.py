"""Validation of everything a user sends about environments and their images, query strings included.

The registry password is write-only: the form never renders it back (an edit form says one is stored), never puts
it in an error message, and hands it to `Environment.set_registry_password` only.
"""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from environments import definition as definitions
from environments.models import CURATED_PREFIX, ENV_NAME_VALIDATOR, Environment, EnvironmentKind, is_reserved_name
from studio.parsing import parse_env_vars

RESERVED_MESSAGE = f"Names starting with {CURATED_PREFIX} are reserved for curated environments: save it under another name."
# Path segments the environment pages use themselves (`new/`, `images/<id>/`): no environment may be called so.
ROUTE_NAMES = ("new", "images")
IMAGE_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
FROM_LINE = re.compile(r"^\s*FROM\s+\S+", re.I | re.M)
DIFF = re.compile(r"^(\d{1,9})\.\.(\d{1,9})$")
TEXT_LIMIT = 65_536
STORED_PASSWORD_HELP = "A password is stored; leave empty to keep it."


def env_vars_text(env_vars: dict[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in env_vars.items())


def _text(label: str, rows: int, help_text: str = "", max_length: int = TEXT_LIMIT) -> forms.CharField:
    return forms.CharField(
        label=label, required=False, max_length=max_length, help_text=help_text, strip=False,
        widget=forms.Textarea(attrs={"rows": rows, "spellcheck": "false"}),
    )


class EnvironmentForm(forms.Form):
    """One environment version: a new environment (`create`), the next version of one (`edit`), or a copy (`save_as`).

    `source` is the version an edit or a copy starts from; its stored registry password is kept unless a new one is
    typed or "forget" is ticked.
    """

    name = forms.CharField(
        max_length=255, validators=[ENV_NAME_VALIDATOR],
        help_text="1-255 letters, digits, '-', '_' or '.', starting with a letter or digit.",
    )
    kind = forms.ChoiceField(
        choices=[(EnvironmentKind.SYSTEM_MANAGED.value, EnvironmentKind.SYSTEM_MANAGED.label),
                 (EnvironmentKind.USER_MANAGED.value, EnvironmentKind.USER_MANAGED.label)],
        initial=EnvironmentKind.SYSTEM_MANAGED, widget=forms.RadioSelect,
    )
    description = forms.CharField(required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2}))
    base_image = forms.CharField(
        required=False, max_length=512,
        help_text="A Docker image with python3, such as python:3.12-slim. Empty: the studio's default.",
    )
    base_dockerfile = _text("Base Dockerfile", 5, "Instead of a base image: a full Dockerfile (with its FROM line).")
    dockerfile_steps = _text("Dockerfile steps", 4, "Extra Dockerfile instructions, such as RUN apt-get install -y ….")
    python_packages = _text("Python packages", 5, "pip requirement lines, one per line, in install order (pin them: name==version).")
    conda_spec = _text("Conda specification", 4, "A conda environment YAML (channels, dependencies, a pip: list).")
    interpreter_path = forms.CharField(
        required=False, max_length=1024,
        help_text="User-managed only: the Python that runs the script, such as /opt/conda/bin/python. Empty: python3.",
    )
    env_vars = _text("Environment variables", 3, "One KEY=VALUE per line; set when a run starts (not part of the image).", 262_144)
    registry_address = forms.CharField(
        required=False, max_length=255, help_text="A private registry for the base image, such as registry.example.com:5000.",
    )
    registry_username = forms.CharField(required=False, max_length=255)
    registry_password = forms.CharField(
        required=False, max_length=4096, strip=False, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; never shown again.",
    )
    forget_registry_password = forms.BooleanField(required=False, label="Forget the stored password")

    def __init__(self, *args, workspace, mode: str = "create", source: Environment | None = None, **kwargs):
        if source is not None and "initial" not in kwargs:
            kwargs["initial"] = self.initial_from(source, mode)
        super().__init__(*args, **kwargs)
        self.workspace, self.mode, self.source = workspace, mode, source
        if mode == "edit":
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "Saving makes the next version of this environment; earlier versions never change."
        if self.has_stored_password:
            self.fields["registry_password"].help_text = STORED_PASSWORD_HELP
        else:
            del self.fields["forget_registry_password"]

    @staticmethod
    def initial_from(source: Environment, mode: str) -> dict:
        kind = source.kind if source.kind != EnvironmentKind.CURATED else EnvironmentKind.SYSTEM_MANAGED
        return {
            "name": source.name if mode == "edit" else "",
            "kind": kind,
            "description": source.description,
            "base_image": source.base_image,
            "base_dockerfile": source.base_dockerfile,
            "dockerfile_steps": source.dockerfile_steps,
            "python_packages": source.python_packages,
            "conda_spec": source.conda_spec,
            "interpreter_path": source.interpreter_path,
            "env_vars": env_vars_text(source.env_vars),
            "registry_address": source.registry_address,
            "registry_username": source.registry_username,
        }

    @property
    def has_stored_password(self) -> bool:
        return bool(self.source is not None and self.source.registry_password_encrypted)

    # Fields ----------------------------------------------------------------------------------------------------
    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if is_reserved_name(name):
            raise ValidationError(RESERVED_MESSAGE)
        if name.lower() in ROUTE_NAMES:
            raise ValidationError(f"{name!r} is used by the environment pages themselves: choose another name.")
        if self.mode != "edit" and Environment.objects.filter(workspace=self.workspace, name=name).exists():
            raise ValidationError(
                f"An environment named {name} already exists: open it and choose Edit to save a new version of it."
            )
        return name

    def clean_base_image(self) -> str:
        image = self.cleaned_data["base_image"].strip()
        if image and not IMAGE_REFERENCE.match(image):
            raise ValidationError("Give an image reference such as python:3.12-slim or registry.example.com/team/py@sha256:….")
        return image

    def clean_base_dockerfile(self) -> str:
        text = self.cleaned_data["base_dockerfile"].replace("\r\n", "\n").strip()
        if text and not FROM_LINE.search(text):
            raise ValidationError("A base Dockerfile starts from an image: add a FROM line.")
        return text

    def clean_dockerfile_steps(self) -> str:
        return self.cleaned_data["dockerfile_steps"].replace("\r\n", "\n").strip()

    def clean_python_packages(self) -> str:
        text = self.cleaned_data["python_packages"].replace("\r\n", "\n").strip()
        bad = [line for line in definitions.package_lines(text) if "\x00" in line]
        if bad:
            raise ValidationError("Package lines cannot hold NUL characters.")
        return text

    def clean_conda_spec(self) -> str:
        text = self.cleaned_data["conda_spec"].replace("\r\n", "\n").strip()
        try:
            definitions.parse_conda(text)
        except definitions.DefinitionError as error:
            raise ValidationError(str(error)) from None
        return text

    def clean_interpreter_path(self) -> str:
        path = self.cleaned_data["interpreter_path"].strip()
        if path and (not path.startswith("/") or any(c.isspace() for c in path)):
            raise ValidationError("Give an absolute path without spaces, such as /usr/bin/python3.")
        return path

    def clean_env_vars(self) -> dict[str, str]:
        return parse_env_vars(self.cleaned_data["env_vars"])

    def clean_registry_address(self) -> str:
        address = self.cleaned_data["registry_address"].strip()
        if address and not IMAGE_REFERENCE.match(address):
            raise ValidationError("Give a registry host, such as registry.example.com or localhost:5000.")
        return address

    # The whole definition -------------------------------------------------------------------------------------
    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if data.get("base_image") and data.get("base_dockerfile"):
            self.add_error("base_dockerfile", "Give a base image or a base Dockerfile, not both.")
        if kind == EnvironmentKind.USER_MANAGED:
            installs = [label for field, label in (("python_packages", "Python packages"), ("conda_spec", "a conda specification"),
                                                  ("dockerfile_steps", "Dockerfile steps")) if data.get(field)]
            if installs:
                self.add_error("kind", f"A user-managed environment installs nothing, yet it has {' and '.join(installs)}: "
                                       "choose System-managed, or clear them.")
        elif kind == EnvironmentKind.SYSTEM_MANAGED and data.get("interpreter_path"):
            self.add_error("interpreter_path", "The interpreter path is for user-managed environments: a system-managed one "
                                               "runs the Python of its image. Clear it, or choose User-managed.")
        password = data.get("registry_password") or ""
        keeps_password = self.has_stored_password and not data.get("forget_registry_password")
        if (password or keeps_password) and not data.get("registry_username"):
            self.add_error("registry_username", "A registry password needs the username that goes with it.")
        return data

    def environment(self, user) -> Environment:
        """The unsaved next version (call `save_new_version()` on it)."""
        data = self.cleaned_data
        env = Environment(
            workspace=self.workspace, name=data["name"], kind=data["kind"], description=data["description"].strip(),
            base_image=data["base_image"], base_dockerfile=data["base_dockerfile"],
            dockerfile_steps=data["dockerfile_steps"], python_packages=data["python_packages"],
            conda_spec=data["conda_spec"], interpreter_path=data["interpreter_path"], env_vars=data["env_vars"],
            registry_address=data["registry_address"], registry_username=data["registry_username"], created_by=user,
        )
        if env.kind == EnvironmentKind.SYSTEM_MANAGED and not env.base_image and not env.base_dockerfile:
            # Written down, so the version keeps meaning the same image when the configured default changes.
            env.base_image = settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE
        if data["registry_password"]:
            env.set_registry_password(data["registry_password"])
        elif self.has_stored_password and not data.get("forget_registry_password"):
            env.registry_password_encrypted = self.source.registry_password_encrypted
        return env


class DetailQueryForm(forms.Form):
    """`?diff=<a>..<b>` compares two versions."""

    diff = forms.CharField(required=False, max_length=32)

    def clean_diff(self) -> tuple[int, int] | None:
        value = self.cleaned_data["diff"].strip()
        if not value:
            return None
        match = DIFF.match(value)
        if match is None:
            raise ValidationError("Write diff=<version>..<version>, such as diff=1..2.")
        return int(match.group(1)), int(match.group(2))


