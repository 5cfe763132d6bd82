"""A run's parameters: names with scalar values, from the submitted arguments and from the script.

- At submission the arguments are read as `--name value`, `--name=value` and `--flag` (no value: "true"), the way a
  script's argparse would see them: `--learning-rate 0.1` is the parameter `learning_rate` with the text "0.1".
  Positional arguments and everything after `--` are left out; so is an option whose name or value could not be a
  parameter (the whole argument list is kept with the run anyway).
- While the run goes, the script sets parameters with the SDK (`run.log_param`, `run.set_params`): a value the
  script sets replaces the one parsed from the arguments, and a name set again takes its latest value.

A value is text (at most MAX_VALUE_CHARS), a finite number or a boolean: a JSON scalar, kept as given. Names are 1-250
letters, digits, spaces and `_ . - / :` (what MLflow accepts), so MLflow's `log_param` can map here.
"""

from __future__ import annotations

import math
import re
import struct

from django.db import transaction

from runs.models import ParameterSource, Run, RunParameter
from studio.text import bidi_problem

MAX_PARAMETERS = 500  # per run
MAX_NAME_CHARS = 250
MAX_VALUE_CHARS = 6000
MAX_INT = 2**63 - 1
SORT_TEXT_CHARS = 190  # text values sort by their first characters (sort_key holds at most 200)
NAME = re.compile(r"[A-Za-z0-9_.\-/: ]{1,250}")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ParameterError(ValueError):
    """A parameter that cannot be stored; the message says what to change."""


def name_problem(name) -> str:
    """Why `name` cannot be a parameter's name, or ""."""
    if not isinstance(name, str):
        return f"A parameter name is text, not {type(name).__name__}."
    if bidi_problem(name):
        return bidi_problem(name, "The parameter name")
    if not NAME.fullmatch(name) or name.strip() != name:
        return (f"Invalid parameter name {name[:80]!r}: use 1-{MAX_NAME_CHARS} letters, digits, spaces and _ . - / : "
                "(no leading or trailing space).")
    return ""


def value_problem(name: str, value) -> str:
    """Why `value` cannot be the value of parameter `name`, or ""."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return "" if -MAX_INT <= value <= MAX_INT else f"Parameter {name!r}: the integer is too large."
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"Parameter {name!r}: the value must be a finite number (or text)."
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            return f"Parameter {name!r}: values are at most {MAX_VALUE_CHARS:,} characters ({len(value):,} given)."
        if "\x00" in value:
            return f"Parameter {name!r}: values cannot hold NUL characters."
        return bidi_problem(value, f"The value of parameter {name!r}")
    return f"Parameter {name!r}: the value must be text, a number or true/false, not {type(value).__name__}."


def check(parameters: dict) -> dict:
    """`parameters` as given, or ParameterError naming the first one that cannot be stored."""
    if not isinstance(parameters, dict):
        raise ParameterError("Parameters are an object of name to value.")
    if len(parameters) > MAX_PARAMETERS:
        raise ParameterError(f"A run holds at most {MAX_PARAMETERS} parameters ({len(parameters)} given).")
    for name, value in parameters.items():
        problem = name_problem(name) or value_problem(name, value)
        if problem:
            raise ParameterError(problem)
    return parameters


# What a value looks like in a table, and where it sorts ---------------------------------------------------------------


def display(value) -> str:
    """The value as shown: text as it is, booleans as true/false, numbers as Python (and JSON) write them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)


def as_number(value) -> float | None:
    """The value as a finite float when it is a number or text that reads as one ("0.01", "1e-3"); else None."""
    if isinstance(value, bool):
        return None
    if not (isinstance(value, int | float) or isinstance(value, str) and NUMBER.fullmatch(value.strip())):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def sort_key(text: str, number: float | None) -> str:
    """A string whose order is the values' order: numbers ("n" and 16 hex digits that sort as the float does) before
    text ("t" and its first characters). Every database compares these the same way for numbers."""
    if number is None:
        return "t" + text[:SORT_TEXT_CHARS]
    bits = struct.unpack(">Q", struct.pack(">d", number + 0.0))[0]  # + 0.0: -0.0 sorts as 0.0
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63
    return f"n{bits:016x}"


def row(run: Run, name: str, value, source: str) -> RunParameter:
    text = display(value)
    number = as_number(value)
    return RunParameter(run_id=run.pk, experiment_id=run.experiment_id, name=name, value=value, text=text,
                        number=number, sort_key=sort_key(text, number), source=source)


# Reading them from the arguments --------------------------------------------------------------------------------------


def from_arguments(arguments: list[str]) -> dict[str, str]:
    """`--name value`, `--name=value` and `--flag` ("true") from an argument list, in order, as argparse names them
    (`--learning-rate` is `learning_rate`); a repeated option keeps its last value. A value is the next argument
    unless that starts with `--` (so `--offset -1` reads -1). Options that could not be parameters are left out."""
    found: dict[str, str] = {}
    index = 0
    while index < len(arguments):
        token = arguments[index]
        index += 1
        if token == "--":
            break
        if not token.startswith("--") or len(token) < 3:
            continue
        option, sep, value = token[2:].partition("=")
        if not sep:
            following = arguments[index] if index < len(arguments) else None
            if following is not None and not following.startswith("--"):
                value = following
                index += 1
            else:
                value = "true"
        name = option.replace("-", "_")
        if name_problem(name) or value_problem(name, value):
            continue
        found.pop(name, None)  # the latest occurrence decides the order, as it decides the value
        if len(found) < MAX_PARAMETERS:
            found[name] = value
    return found


# Storing and reading ----------------------------------------------------------------------------------------------------


def store(run: Run, parameters: dict, *, source: str = ParameterSource.SCRIPT) -> None:
    """Set `parameters` on the run (checked first): new names are added, known ones take the new value and source.

    ParameterError when the run would hold more than MAX_PARAMETERS. The run's row is locked while counting, so two
    requests at once cannot pass the bound together.
    """
    check(parameters)
    if not parameters:
        return
    with transaction.atomic():
        Run.objects.select_for_update().filter(pk=run.pk).values_list("pk").first()
        known = set(RunParameter.objects.filter(run_id=run.pk).values_list("name", flat=True))
        total = len(known | set(parameters))
        if total > MAX_PARAMETERS:
            raise ParameterError(f"A run holds at most {MAX_PARAMETERS} parameters; these would make {total}.")
        RunParameter.objects.bulk_create(
            [row(run, name, value, source) for name, value in parameters.items()],
            update_conflicts=True, unique_fields=["run", "name"],
            update_fields=["value", "text", "number", "sort_key", "source", "updated_at"],
        )


def of_run(run: Run) -> list[RunParameter]:
    """The run's parameters by name."""
    return list(RunParameter.objects.filter(run_id=run.pk).order_by("name"))


def as_dict(run: Run) -> dict:
    """Name to value (the JSON scalar as stored), by name."""
    return dict(RunParameter.objects.filter(run_id=run.pk).order_by("name").values_list("name", "value"))
