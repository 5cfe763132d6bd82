"""Checking what a script hands to the SDK, in the script's own thread, so a mistake raises where it was made.

Every function here either returns the value in the form the sender needs or raises ValueError/TypeError with a
message that says how to fix the call. Nothing here encodes JSON: that happens in the sender thread.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import posixpath
import re

NAME = re.compile(r"[A-Za-z0-9_.\-/: ]{1,255}")
MAX_DESCRIPTION = 1024
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


@functools.lru_cache(maxsize=4096)
def _checked_name(name: str) -> str:
    if not NAME.fullmatch(name) or name.strip() != name:
        raise ValueError(
            f"Invalid name {name[:80]!r}: use 1-255 letters, digits, spaces and _ . - / : "
            "(no leading or trailing space)."
        )
    return name


def check_name(name, what: str = "name") -> str:
    """A metric, entry, image or tag name; valid names are remembered, so checking one again costs a lookup."""
    if not isinstance(name, str):
        raise TypeError(f"The {what} must be a string, not {type(name).__name__}.")
    return _checked_name(name)


def _is_bool(value) -> bool:
    # numpy's bool type is `numpy.bool_` (numpy 1) or `numpy.bool` (numpy 2); neither subclasses bool.
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def number(value, what: str = "value") -> float:
    """A loggable number as a float: int, float, numpy scalars and anything else with __float__; never a bool.

    NaN and infinities are allowed (they are sent as the strings "NaN", "Infinity" and "-Infinity").
    """
    if type(value) is float:
        return value
    if _is_bool(value):
        raise TypeError(f"The {what} must be a number, not a bool: log {int(value)} if you mean 0/1.")
    if isinstance(value, (str, bytes)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"The {what} must be a number (int, float or a numpy scalar), not {type(value).__name__}.")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"The {what} {value!r} is too large for a float.") from None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The {what} must be a single number, not {type(value).__name__} ({exc}).") from None


def step(value) -> int:
    """A step: a non-negative integer (numpy integers too)."""
    if _is_bool(value) or isinstance(value, float):
        raise TypeError(f"The step must be an integer or None, not {type(value).__name__}.")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"The step must be an integer or None, not {type(value).__name__}.") from None
    if value < 0:
        raise ValueError(f"The step must be 0 or more, not {value}.")
    return value


def description(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"The description must be a string, not {type(text).__name__}.")
    if len(text) > MAX_DESCRIPTION:
        raise ValueError(f"The description is {len(text)} characters long; keep it to {MAX_DESCRIPTION}.")
    return text


def numbers(values, what: str) -> list:
    if isinstance(values, (str, bytes, dict)):
        raise TypeError(f"{what} must be a sequence of numbers, not {type(values).__name__}.")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of numbers, not {type(values).__name__}.") from None
    return [number(v, f"item {i} of {what}") for i, v in enumerate(items)]


def cell(value, what: str):
    """A value in a row or table: a number, a string or None."""
    if value is None or isinstance(value, str):
        return value
    return number(value, what)


def row(columns: dict) -> dict:
    if not columns:
        raise ValueError("A row needs at least one column: log_row('name', accuracy=0.9, loss=0.1).")
    return {check_name(col, "column name"): cell(v, f"column {col!r}") for col, v in columns.items()}


def table(columns) -> dict:
    if not isinstance(columns, dict):
        raise TypeError(f"A table is a dict of column name to list of values, not {type(columns).__name__}.")
    if not columns:
        raise ValueError("A table needs at least one column.")
    result = {}
    for col, values in columns.items():
        check_name(col, "column name")
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
            raise TypeError(f"Column {col!r} must be a list of values, not {type(values).__name__}.")
        result[col] = [cell(v, f"row {i} of column {col!r}") for i, v in enumerate(values)]
    lengths = {col: len(values) for col, values in result.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"All columns of a table must have the same length; got {lengths}.")
    return result


def tags(mapping) -> dict:
    """Tag names to string values; None means a tag without a value. Numbers are turned into strings."""
    if not isinstance(mapping, dict):
        raise TypeError(f"Tags are a dict of name to value, not {type(mapping).__name__}.")
    result = {}
    for key, value in mapping.items():
        check_name(key, "tag name")
        if value is not None and not isinstance(value, str):
            if not isinstance(value, (int, float)):
                raise TypeError(f"The value of tag {key!r} must be a string, a number or None, not {type(value).__name__}.")
            value = str(value)
        result[key] = value
    return result


MAX_PARAM_NAME = 250
MAX_PARAM_VALUE = 6000
MAX_PARAMS = 500
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def param_value(name: str, value):
    """A parameter's value as JSON will carry it: text, a finite number or a bool (numpy scalars become Python ones).

    Anything else is refused rather than turned into text silently: pass str(value) or json.dumps(value) yourself.
    """
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, (bool, str)):
        if isinstance(value, str):
            if len(value) > MAX_PARAM_VALUE:
                raise ValueError(f"The value of parameter {name!r} is {len(value)} characters; keep it to {MAX_PARAM_VALUE}.")
            if "\x00" in value or _BIDI.search(value):
                raise ValueError(f"The value of parameter {name!r} holds a NUL or direction control character.")
        return value
    if isinstance(value, int):
        if abs(value) > 2**63 - 1:
            raise ValueError(f"The value of parameter {name!r} is too large an integer; log it as text.")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"The value of parameter {name!r} must be a finite number (or text such as 'nan').")
        return value
    raise TypeError(f"The value of parameter {name!r} must be text, a number or a bool, not {type(value).__name__}: "
                    "log str(value) or json.dumps(value).")


def params(mapping) -> dict:
    """Parameter names to values (see param_value); names follow the metric name rules, at most 250 characters."""
    if not isinstance(mapping, dict):
        raise TypeError(f"Parameters are a dict of name to value, not {type(mapping).__name__}.")
    if len(mapping) > MAX_PARAMS:
        raise ValueError(f"A run holds at most {MAX_PARAMS} parameters ({len(mapping)} given).")
    result = {}
    for key, value in mapping.items():
        check_name(key, "parameter name")
        if len(key) > MAX_PARAM_NAME:
            raise ValueError(f"Parameter names are at most {MAX_PARAM_NAME} characters: {key[:40]!r}...")
        result[key] = param_value(key, value)
    return result


def output_path(name) -> str:
    """A relative path under the run's outputs, with forward slashes and nothing that climbs out of it."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(f"The file name must be a string, not {type(name).__name__}.")
    clean = name.replace("\\", "/")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if not parts or clean.startswith("/") or ".." in parts or "\x00" in clean or len(clean) > 1024:
        raise ValueError(f"Invalid file name {name[:80]!r}: use a relative path such as 'model/weights.pt'.")
    return posixpath.join(*parts)


def image_type(filename: str) -> str:
    extension = os.path.splitext(filename)[1].lower()
    if extension not in IMAGE_TYPES:
        raise ValueError(f"Cannot log {filename!r} as an image: use a .png, .jpg, .jpeg or .svg file.")
    return IMAGE_TYPES[extension]


def json_number(value: float):
    """NaN and infinities as the strings the server reads, so the JSON stays strict."""
    if math.isfinite(value):
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_cell(value):
    return json_number(value) if type(value) is float else value
