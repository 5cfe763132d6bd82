"""Small parsers of what people type into forms and send to the API: KEY=VALUE lines, tags, shell-like arguments.

Each raises Django's ValidationError with messages that name the line and say how to fix it; forms and API schemas
both call them, so a value means the same wherever it is typed.
"""

from __future__ import annotations

import re
import shlex

from django.core.exceptions import ValidationError

from studio.text import bidi_problem

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TAG_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
TAG_KEY_RULE = "tag keys are 1-128 letters, digits or _ . : / -"
TAG_VALUE_MAX = 1024
MAX_ENV_VARS = 200
MAX_TAGS = 50


def parse_arguments(text: str) -> list[str]:
    """Split like a POSIX shell would (quotes, escapes); nothing is ever run through a shell."""
    try:
        return shlex.split(text, posix=True)
    except ValueError as exc:
        raise ValidationError(f"Could not split the arguments: {exc} (check the quotes).") from None


def key_value_lines(text: str):
    """(line number, key, separator, value) of each line that is not blank or a `#` comment."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        yield number, key.strip(), sep, value


def env_var_problem(key: str, value: str) -> str:
    """Why KEY=VALUE cannot be a run's environment variable, or ""."""
    if not ENV_NAME.match(key):
        return f"{key[:60]!r} is not a valid name (letters, digits and _, not starting with a digit)."
    if key.upper().startswith("STUDIO_"):
        return "names starting with STUDIO_ are reserved for the studio."
    if "\x00" in value:
        return "values cannot hold NUL characters."
    return ""


def parse_env_vars(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines; blank lines and `#` comments are skipped."""
    result: dict[str, str] = {}
    errors = []
    for number, key, sep, value in key_value_lines(text):
        problem = "write KEY=VALUE." if not sep else env_var_problem(key, value)
        if not problem and key in result:
            problem = f"{key} is set twice."
        if problem:
            errors.append(f"Line {number}: {problem}")
        else:
            result[key] = value
    if len(result) > MAX_ENV_VARS:
        errors.append(f"At most {MAX_ENV_VARS} variables.")
    if errors:
        raise ValidationError(errors)
    return result


def tag_problem(key: str, value: str | None) -> str:
    """Why key=value cannot be a tag, or ""."""
    if not TAG_KEY.match(key):
        return f"{TAG_KEY_RULE}."
    if value is not None and len(value) > TAG_VALUE_MAX:
        return f"tag values are at most {TAG_VALUE_MAX:,} characters."
    if value is not None and bidi_problem(value):
        return bidi_problem(value, "The tag value")
    return ""


def parse_tags(text: str) -> dict[str, str]:
    """`key=value` or `key` lines."""
    result: dict[str, str] = {}
    errors = []
    for number, key, _sep, value in key_value_lines(text):
        problem = tag_problem(key, value)
        if problem:
            errors.append(f"Line {number}: {problem}")
        else:
            result[key] = value.strip()
    if len(result) > MAX_TAGS:
        errors.append(f"At most {MAX_TAGS} tags.")
    if errors:
        raise ValidationError(errors)
    return result
