"""MLflow's search syntax, the part the studio answers: conditions joined with AND, and order_by clauses.

    metrics.accuracy > 0.9 and params.optimizer = 'adam' and tags.team != 'x' and attributes.status = 'FINISHED'
    metrics.`val loss` <= 0.2    tags."mlflow.source.name" LIKE '%train%'    attributes.run_id IN ('ab12…', '34')

A condition is `<entity>.<key> <op> <value>`: entities are metrics (numbers), params and tags (text), attributes
(status, run_name, run_id, user_id, start_time, end_time) and, for other searches, the names they allow. Operators:
= != < <= > >= for numbers and times, = != LIKE ILIKE IN NOT IN for text (LIKE's % and _). OR and parentheses are
refused with a message, not misread. Pages are offsets written into an opaque token.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import orjson

from mlflow_api import errors

ENTITY_ALIASES = {
    "metric": "metrics", "metrics": "metrics", "param": "params", "params": "params", "parameter": "params",
    "parameters": "params", "tag": "tags", "tags": "tags", "attribute": "attributes", "attributes": "attributes",
    "attr": "attributes", "run": "attributes",
}
TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
    | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<op>!=|<>|<=|>=|=|<|>|,|\(|\))
    | (?P<ident>(?:[A-Za-z_][\w]*)(?:\.(?:`[^`]+`|"[^"]+"|[\w\-/:.]+))?)
    )""", re.VERBOSE)
WORD_OPS = {"like": "LIKE", "ilike": "ILIKE", "in": "IN", "and": "AND", "or": "OR", "not": "NOT"}


@dataclass(frozen=True)
class Condition:
    entity: str  # metrics, params, tags, attributes
    key: str
    op: str  # = != < <= > >= LIKE ILIKE IN NOT IN
    value: object  # float, str, or a tuple of str for IN


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner
    return text


def _identifier(text: str, default_entity: str) -> tuple[str, str]:
    head, dot, rest = text.partition(".")
    entity = ENTITY_ALIASES.get(head.lower()) if dot else None
    if entity is None:
        return default_entity, _unquote(text)
    return entity, _unquote(rest)


def _tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    text = text.strip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise errors.invalid(f"Invalid search expression near {text[position:position + 40]!r}.")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "ident" and value.lower() in WORD_OPS:
            kind, value = "word", WORD_OPS[value.lower()]
        found.append((kind, value))
        position = match.end()
    return found


def parse_filter(text: str | None, *, default_entity: str = "attributes") -> list[Condition]:
    """The conditions of a filter string (empty: none)."""
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    conditions, index = [], 0

    def expect(kinds) -> tuple[str, str]:
        nonlocal index
        if index >= len(tokens) or tokens[index][0] not in kinds:
            near = tokens[index][1] if index < len(tokens) else "the end"
            raise errors.invalid(f"Invalid search expression: unexpected {near!r} in {text[:200]!r}.")
        index += 1
        return tokens[index - 1]

    while True:
        _, name = expect(("ident",))
        entity, key = _identifier(name, default_entity)
        kind, op = expect(("op", "word"))
        if op == "NOT":
            _, following = expect(("word",))
            if following not in ("IN", "LIKE", "ILIKE"):
                raise errors.invalid(f"Invalid search expression: NOT {following} in {text[:200]!r}.")
            op = f"NOT {following}"
        elif op == "<>":
            op = "!="
        if op in ("IN", "NOT IN"):
            _, paren = expect(("op",))
            if paren != "(":
                raise errors.invalid(f"Invalid search expression: {op} takes a list in parentheses, in {text[:200]!r}.")
            values = []
            while True:
                _, item = expect(("string", "number"))
                values.append(_unquote(item))
                _, sep = expect(("op",))
                if sep == ")":
                    break
                if sep != ",":
                    raise errors.invalid(f"Invalid search expression: expected ',' or ')' in {text[:200]!r}.")
            value: object = tuple(values)
        elif op in ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"):
            value_kind, raw = expect(("string", "number"))
            value = float(raw) if value_kind == "number" else _unquote(raw)
        else:
            raise errors.invalid(f"Invalid search expression: {op!r} is not a comparison, in {text[:200]!r}.")
        conditions.append(Condition(entity, key, op, value))
        if index >= len(tokens):
            return conditions
        _, joiner = expect(("word",))
        if joiner == "OR":
            raise errors.invalid("The studio's search takes conditions joined with AND; OR is not supported.")
        if joiner != "AND":
            raise errors.invalid(f"Invalid search expression: expected AND, found {joiner!r}.")


def parse_order(items: list[str], *, default_entity: str = "attributes") -> list[tuple[str, str, bool]]:
    """(entity, key, descending) of each order_by clause: `metrics.loss`, `attributes.start_time DESC`, `name ASC`."""
    found = []
    for item in items:
        words = item.strip().rsplit(None, 1)
        descending = False
        if len(words) == 2 and words[1].upper() in ("ASC", "DESC"):
            descending = words[1].upper() == "DESC"
            target = words[0]
        else:
            target = item.strip()
        if not target:
            raise errors.invalid(f"Invalid order_by clause {item[:100]!r}.")
        entity, key = _identifier(target, default_entity)
        found.append((entity, key, descending))
    return found


def like_regex(pattern: str) -> str:
    """A SQL LIKE pattern (% any run, _ one character) as an anchored regular expression."""
    parts = []
    for char in pattern:
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return "^" + "".join(parts) + "$"


def check_number(condition: Condition) -> float:
    if not isinstance(condition.value, float) or condition.op not in ("=", "!=", "<", "<=", ">", ">="):
        raise errors.invalid(f"{condition.entity}.{condition.key} is compared with a number using = != < <= > >=.")
    return condition.value


def check_text(condition: Condition):
    if condition.op in ("<", "<=", ">", ">="):
        raise errors.invalid(f"{condition.entity}.{condition.key} is text: compare it with = != LIKE ILIKE IN.")
    if isinstance(condition.value, float):
        raise errors.invalid(f"{condition.entity}.{condition.key} is text: quote the value ('...').")
    return condition.value


# Pages -----------------------------------------------------------------------------------------------------------------


def read_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))["offset"]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise errors.invalid("Invalid page_token: pass the next_page_token of the previous page as it was.") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**40:
        raise errors.invalid("Invalid page_token: pass the next_page_token of the previous page as it was.")
    return offset


def make_token(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"offset": offset})).decode().rstrip("=")


def page(queryset, offset: int, limit: int) -> tuple[list, str | None]:
    """One page of the queryset, and the token of the next one (None at the end)."""
    items = list(queryset[offset:offset + limit + 1])
    following = make_token(offset + limit) if len(items) > limit else None
    return items[:limit], following
