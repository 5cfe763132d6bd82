"""Text that cannot lie: bidirectional control characters and other invisible tricks in names the studio stores.

`evil\\u202etxt.py` is shown by a browser as `evilyp.txt`. Names the studio stores (archive members, output and upload
names, experiment, environment and model names, tag keys, display names) refuse these characters; free text shown
elsewhere (console lines, descriptions) is displayed isolated with `<bdi>` so it cannot reorder what surrounds it.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

# U+202A-U+202E (embeddings, overrides), U+2066-U+2069 (isolates), U+200E/U+200F (marks), U+061C (Arabic letter mark).
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def bidi_problem(text: str, what: str = "The name") -> str:
    """A message naming the first bidirectional control character in `text`, or "" when there is none."""
    found = BIDI_CONTROLS.search(text)
    if found is None:
        return ""
    return (
        f"{what} contains the invisible direction control character U+{ord(found.group()):04X} at position "
        f"{found.start() + 1}; it can make text display differently from what it is. Remove it."
    )


def check_no_bidi(text: str, what: str = "The name") -> str:
    """`text` unchanged, or ValidationError saying which control character to remove."""
    problem = bidi_problem(text, what)
    if problem:
        raise ValidationError(problem)
    return text


def visible(text: str) -> str:
    """`text` with each direction control character written out as \\uXXXX, for messages that quote a refused name."""
    return BIDI_CONTROLS.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def no_bidi_validator(value) -> None:
    """A Django field validator."""
    if isinstance(value, str):
        check_no_bidi(value, "This value")
