"""What an image is made of: the canonical definition, its hash, unpinned packages, floating bases, conda YAML."""

from __future__ import annotations

import pytest

from environments.definition import CondaSpec, Definition, DefinitionError, image_name, package_lines, parse_conda
from environments.models import Environment

CONDA = """
name: ignored
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.12
  - numpy=2.1
  - 3
  - pip:
      - six==1.16.0
      - requests
"""


def env(**fields) -> Environment:
    fields.setdefault("base_image", "python:3.12-slim")
    fields.setdefault("kind", "system")
    return Environment(**fields)


def digest(**fields) -> str:
    return env(**fields).definition().hash()


# The hash -----------------------------------------------------------------------------------------------------------
def test_the_hash_ignores_name_version_description_and_environment_variables(settings):
    base = digest(name="a", version=1, description="one", env_vars={"A": "1"}, python_packages="six==1.16.0")
    assert base == digest(name="b", version=7, description="two", env_vars={"B": "2"}, python_packages="six==1.16.0")
    assert base == digest(name="c", python_packages="six==1.16.0", registry_username="me", interpreter_path="/x")


def test_the_hash_changes_with_the_package_order():
    assert digest(python_packages="six==1.16.0\nidna==3.10") != digest(python_packages="idna==3.10\nsix==1.16.0")


def test_the_hash_ignores_blank_lines_and_comments_in_packages():
    assert digest(python_packages="six==1.16.0\n\n# pinned\nidna==3.10  # for requests") == digest(
        python_packages="six==1.16.0\nidna==3.10"
    )


def test_the_hash_changes_with_the_base_image():
    assert digest(base_image="python:3.12-slim") != digest(base_image="python:3.11-slim")


def test_a_base_dockerfile_replaces_the_base_image_in_the_hash():
    dockerfile = "FROM python:3.12-slim\nRUN apt-get update"
    assert digest(base_image="", base_dockerfile=dockerfile) == digest(base_image="python:3.9", base_dockerfile=dockerfile)
    assert digest(base_image="", base_dockerfile=dockerfile) != digest(base_image="", base_dockerfile=dockerfile + " -q")


def test_an_empty_base_image_means_the_configured_default(settings):
    settings.STUDIO_BUILD_DEFAULT_BASE_IMAGE = "studio/base-python:bookworm"
    assert digest(base_image="") == digest(base_image="studio/base-python:bookworm")


def test_the_hash_changes_with_the_dockerfile_steps_but_not_their_line_endings():
    plain = digest(dockerfile_steps="RUN apt-get install -y git")
    assert plain != digest() and plain != digest(dockerfile_steps="RUN apt-get install -y curl")
    assert digest(dockerfile_steps="RUN a\nRUN b") == digest(dockerfile_steps="RUN a   \r\n\r\nRUN b\n")


def test_the_hash_changes_with_the_conda_channels():
    with_forge = digest(conda_spec="channels: [conda-forge]\ndependencies: [numpy=2.1]")
    assert with_forge != digest(conda_spec="channels: [defaults]\ndependencies: [numpy=2.1]")
    assert with_forge != digest(conda_spec="dependencies: [numpy=2.1]")
    assert with_forge != digest(conda_spec="channels: [conda-forge]\ndependencies: [numpy=2.2]")


def test_the_hash_is_that_of_the_canonical_text_and_names_the_image():
    definition = Definition(base_image="python:3.12-slim", python_packages=("six==1.16.0",))
    assert '"python_packages":["six==1.16.0"]' in definition.canonical()
    assert len(definition.hash()) == 64
    assert image_name(definition.hash()) == f"studio/env_{definition.hash()}"


# Unpinned packages ----------------------------------------------------------------------------------------------
def test_it_finds_the_packages_without_an_exact_version():
    definition = Definition(
        python_packages=("six==1.16.0", "numpy", "pandas>=2", "torch===2.5.1", "requests[socks]==2.32.3", "scipy~=1.16",
                         "-r other.txt", "idna==3.*"),
        conda=CondaSpec(pip=("rich", "attrs==25.1.0")),
    )
    assert definition.unpinned_packages() == ["numpy", "pandas>=2", "scipy~=1.16", "idna==3.*", "rich"]


def test_fully_pinned_packages_need_no_warning():
    assert Definition(python_packages=("six==1.16.0", "idna == 3.10")).unpinned_packages() == []


# Floating base images --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "floating"),
    [
        ("python", True),
        ("python:latest", True),
        ("localhost:5000/team/python", True),
        ("python:3.12-slim", False),
        ("localhost:5000/team/python:3.12", False),
        ("python@sha256:" + "a" * 64, False),
    ],
)
def test_it_finds_a_floating_base_image(base, floating):
    assert Definition(base_image=base).floating_base() is floating


@pytest.mark.parametrize(
    ("dockerfile", "floating"),
    [
        ("FROM python:3.12-slim\nRUN true", False),
        ("FROM ubuntu\nRUN apt-get update", True),
        ("FROM python:3.12 AS build\nRUN true\nfrom debian:latest\n", True),
    ],
)
def test_it_finds_a_floating_base_in_a_base_dockerfile(dockerfile, floating):
    assert Definition(base_dockerfile=dockerfile).floating_base() is floating


# Conda YAML ---------------------------------------------------------------------------------------------------------
def test_it_reads_channels_dependencies_and_the_pip_list():
    spec = parse_conda(CONDA)
    assert spec == CondaSpec(("conda-forge", "defaults"), ("python=3.12", "numpy=2.1", "3"), ("six==1.16.0", "requests"))


def test_an_empty_conda_specification_is_empty():
    assert parse_conda("") == parse_conda("  \n") == CondaSpec()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("channels: [conda-forge\n", "The conda specification is not valid YAML"),
        ("- numpy\n- scipy\n", "must be a mapping with channels and dependencies"),
        ("dependencies:\n  - {numpy: 2}\n", "Unexpected conda dependency"),
        ("dependencies:\n  - pip: six\n", "Unexpected conda dependency"),
        ("channels: conda-forge\n", "conda channels must be a list"),
    ],
)
def test_it_explains_what_is_wrong_with_a_conda_specification(text, message):
    with pytest.raises(DefinitionError, match=message):
        parse_conda(text)


def test_package_lines_keep_order_and_drop_comments():
    assert package_lines("# top\nsix==1.16.0\n\n  idna==3.10  # why\n#x\n") == ["six==1.16.0", "idna==3.10"]


# The Dockerfile -------------------------------------------------------------------------------------------------------
def test_the_dockerfile_installs_the_packages_in_a_venv_and_freezes_them():
    definition = Definition(base_image="python:3.12-slim", dockerfile_steps="RUN apt-get install -y git",
                            python_packages=("six==1.16.0",))
    text = definition.dockerfile(ca_bundle=False)
    assert text.startswith("FROM python:3.12-slim\n")
    assert "RUN apt-get install -y git" in text
    assert "RUN pip install --no-cache-dir --disable-pip-version-check -r /opt/studio/venv/requirements.txt" in text
    assert text.rstrip().endswith("RUN pip freeze --all > /opt/studio/venv/frozen.txt")
    assert "ca-bundle" not in text
    assert "COPY studio-ca-bundle.crt" in definition.dockerfile(ca_bundle=True)


def test_the_dockerfile_installs_conda_dependencies_from_their_channels():
    text = Definition(base_image="mambaorg/micromamba:2.0.5", conda=parse_conda(CONDA)).dockerfile(ca_bundle=False)
    assert "install --yes -c conda-forge -c defaults 'python=3.12' 'numpy=2.1' '3'" in text
