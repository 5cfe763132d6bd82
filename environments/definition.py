"""What an environment's image is made of: its canonical definition, the hash of it, and the Dockerfile.

The hash covers the base image (or base Dockerfile), the Dockerfile steps, the Python packages in order and the
conda channels and dependencies; never the name, version, description or environment variables (those are applied
when a run starts). Identical definitions therefore share one image, `studio/env_<hash>`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import yaml

FLOATING_TAGS = ("", "latest")
PINNED = re.compile(r"^[A-Za-z0-9_.\-\[\],]+\s*===?\s*[^\s;#*]+$")
VENV = "/opt/studio/venv"


class DefinitionError(ValueError):
    """The definition cannot be built; the message says what to change."""


@dataclass(frozen=True)
class CondaSpec:
    channels: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()


def parse_conda(text: str) -> CondaSpec:
    """A conda environment YAML: channels, dependencies, and a `pip:` list inside dependencies."""
    if not text.strip():
        return CondaSpec()
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DefinitionError(f"The conda specification is not valid YAML: {error}") from None
    if not isinstance(spec, dict):
        raise DefinitionError("The conda specification must be a mapping with channels and dependencies.")
    channels = spec.get("channels") or []
    dependencies, pip = [], []
    for item in spec.get("dependencies") or []:
        if isinstance(item, dict) and set(item) == {"pip"} and isinstance(item["pip"], list):
            pip.extend(str(p).strip() for p in item["pip"])
        elif isinstance(item, str | int | float):
            dependencies.append(str(item).strip())
        else:
            raise DefinitionError(f"Unexpected conda dependency {item!r}: use strings and one 'pip:' list.")
    if not isinstance(channels, list):
        raise DefinitionError("conda channels must be a list.")
    return CondaSpec(tuple(str(c).strip() for c in channels), tuple(dependencies), tuple(pip))


def package_lines(text: str) -> list[str]:
    """Requirement lines in order, without blank lines and comments."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


@dataclass(frozen=True)
class Definition:
    base_image: str = ""
    base_dockerfile: str = ""
    dockerfile_steps: str = ""
    python_packages: tuple[str, ...] = ()
    conda: CondaSpec = field(default_factory=CondaSpec)

    def canonical(self) -> str:
        body = {
            "base_image": self.base_image.strip() if not self.base_dockerfile.strip() else "",
            "base_dockerfile": self.base_dockerfile.strip().replace("\r\n", "\n"),
            "dockerfile_steps": [line.rstrip() for line in self.dockerfile_steps.replace("\r\n", "\n").strip().split("\n") if line.strip()],
            "python_packages": list(self.python_packages),
            "conda_channels": list(self.conda.channels),
            "conda_dependencies": list(self.conda.dependencies),
            "conda_pip": list(self.conda.pip),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    @property
    def all_pip_packages(self) -> list[str]:
        return [*self.python_packages, *self.conda.pip]

    def unpinned_packages(self) -> list[str]:
        """Packages without an exact version: frozen at first build, so a rebuild may resolve others."""
        return [p for p in self.all_pip_packages if not p.startswith("-") and not PINNED.match(p)]

    def floating_base(self) -> bool:
        """True when the base image has no tag or `latest` (so what it means can change)."""
        if self.base_dockerfile.strip():
            images = re.findall(r"^\s*FROM\s+(\S+)", self.base_dockerfile, re.I | re.M)
            return any(_tag(image) in FLOATING_TAGS and "@" not in image for image in images)
        return "@" not in self.base_image and _tag(self.base_image) in FLOATING_TAGS

    def dockerfile(self, *, ca_bundle: bool) -> str:
        """The generated Dockerfile. Build-time settings (index URLs) come in as build args, not in the hash."""
        lines = [self.base_dockerfile.strip() if self.base_dockerfile.strip() else f"FROM {self.base_image.strip()}"]
        lines.append("ARG PIP_INDEX_URL")
        lines.append("ARG PIP_EXTRA_INDEX_URL")
        if ca_bundle:
            lines.append("COPY studio-ca-bundle.crt /etc/studio/ca-bundle.crt")
            lines.append("ENV PIP_CERT=/etc/studio/ca-bundle.crt SSL_CERT_FILE=/etc/studio/ca-bundle.crt")
        if self.dockerfile_steps.strip():
            lines.append(self.dockerfile_steps.strip())
        if self.conda.dependencies:
            channels = " ".join(f"-c {c}" for c in self.conda.channels)
            deps = " ".join(_quote(d) for d in self.conda.dependencies)
            lines.append(f"RUN (command -v micromamba || command -v mamba || command -v conda) >/dev/null "
                         f"|| (echo 'conda packages need a base image with conda, mamba or micromamba' >&2; exit 1) "
                         f"&& $(command -v micromamba || command -v mamba || command -v conda) install --yes {channels} {deps}")
        lines.append(f"RUN python3 -m venv {VENV}")
        lines.append(f"ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV} PYTHONUNBUFFERED=1")
        if self.all_pip_packages:
            lines.append(f"COPY requirements.txt {VENV}/requirements.txt")
            lines.append(f"RUN pip install --no-cache-dir --disable-pip-version-check -r {VENV}/requirements.txt")
        lines.append(f"RUN pip freeze --all > {VENV}/frozen.txt")
        return "\n".join(lines) + "\n"


def _tag(image: str) -> str:
    name = image.strip().rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else ""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def image_name(definition_hash: str) -> str:
    return f"studio/env_{definition_hash}"
