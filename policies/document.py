"""Turn policy text (YAML or JSON) into plain data plus the file line of every key and item.

Why not ``yaml.safe_load``: it forgets where things were, so errors could not say
"line 31"; it silently keeps the last of two duplicate keys; and it speaks YAML
1.1, where ``on:`` (the webhook field!), ``yes`` and ``no`` become booleans and
``010`` is octal. Here the document is composed into a node tree and walked by
hand with YAML 1.2 core-schema scalars (only ``true``/``false`` are booleans,
dates stay strings), recording ``location -> line`` for every mapping key and
sequence item, and reporting duplicate keys.

JSON is parsed by :mod:`json` (the authority on JSON); line numbers for JSON come
from the same node walk, best effort (JSON is valid YAML once tabs, which JSON
only allows as whitespace, are turned into spaces).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from yaml.constructor import SafeConstructor

from .errors import Loc, PolicyError, PolicyValidationError, describe, format_path

__all__ = ["Document", "MAX_NUMBER_DIGITS", "NumberTooLong", "load_json", "read_document"]

MAX_NODES = 100_000
"""Upper bound on values visited; stops alias 'billion laughs' documents."""
MAX_DEPTH = 64
"""Upper bound on nesting; stops recursive aliases (``&a [*a]``)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_NUMBER_DIGITS = 32
"""Longest number accepted (digits, any base). No policy field takes more; Python refuses
to convert integers above 4,300 digits with a bare ValueError, so the reader says it first."""

_NUMBER_TOO_LONG = (f"this number is too long (more than {MAX_NUMBER_DIGITS} digits); "
                    "no field takes a number that large")


class NumberTooLong(ValueError):
    """A number literal longer than :data:`MAX_NUMBER_DIGITS` (JSON or YAML)."""


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit types (no yes/no/on/off booleans, no octal 010, no dates).

    It also remembers which nodes carried an explicit tag (``!!float``, ``!foo``):
    policies are plain data, and a tag either repeats what the value already says
    or forces a conversion that fails (``!!int ten``), so the walker refuses them.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.explicit_tags: dict[int, str] = {}

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        event = self.peek_event()
        tag = getattr(event, "tag", None)
        node = super().compose_node(parent, index)
        if tag is not None and tag != "!" and not isinstance(event, yaml.AliasEvent):
            self.explicit_tags[id(node)] = tag
        return node


_Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (_MERGE_TAG, r"^(?:<<)$", "<"),
]:
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: SafeConstructor, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if len(digits.removeprefix("0x").removeprefix("0o")) > MAX_NUMBER_DIGITS:
        raise NumberTooLong(_NUMBER_TOO_LONG)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


def _construct_float(loader: SafeConstructor, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    if sum(c.isdigit() for c in text) > MAX_NUMBER_DIGITS:
        raise NumberTooLong(_NUMBER_TOO_LONG)
    return SafeConstructor.construct_yaml_float(loader, node)  # type: ignore[arg-type]


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)

# What a scalar value cannot be read as, besides a YAMLError: a conversion the
# constructor could not make. Always reported with the path and line, never raised.
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, TypeError, KeyError, OverflowError, RecursionError)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise NumberTooLong(_NUMBER_TOO_LONG)
    return int(text)


def _bounded_float(text: str) -> float:
    if sum(c.isdigit() for c in text) > MAX_NUMBER_DIGITS:
        raise NumberTooLong(_NUMBER_TOO_LONG)
    return float(text)


def load_json(text: str) -> Any:
    """``json.loads`` that refuses over-long numbers with :class:`NumberTooLong` instead of a bare ValueError.

    Raises json.JSONDecodeError for syntax, NumberTooLong for numbers, RecursionError for nesting.
    """
    return json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float)


@dataclass
class Document:
    """Parsed policy data, where each part came from, and problems found while reading it."""

    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    """(line, column), both 1-based, of every mapping key and sequence item."""
    errors: list[PolicyError] = field(default_factory=list)
    format: Literal["yaml", "json", "data"] = "yaml"
    unreadable: set[Loc] = field(default_factory=set)
    """Values that could not be read (a tag, a number too long): null in ``data``, already reported."""

    def position_for(self, loc: Loc) -> tuple[int, int] | None:
        """Where ``loc`` is, or its nearest ancestor that exists in the file (for missing fields)."""
        for end in range(len(loc), 0, -1):
            position = self.positions.get(tuple(loc[:end]))
            if position is not None:
                return position
        return None

    def line_for(self, loc: Loc) -> int | None:
        """The line of ``loc`` (or of its nearest existing ancestor); None when unknown."""
        position = self.position_for(loc)
        return position[0] if position else None


class _TooComplex(Exception):
    pass


class _Walker:
    """Builds plain Python data from a YAML node tree, recording lines and duplicate keys."""

    def __init__(self, loader: _Yaml12Loader) -> None:
        self.loader = loader
        self.positions: dict[Loc, tuple[int, int]] = {}
        self.errors: list[PolicyError] = []
        self.visited = 0
        self.flattened: set[int] = set()
        self.unreadable: set[Loc] = set()

    def _refuse(self, loc: Loc, message: str, node: yaml.Node) -> None:
        self.errors.append(PolicyError(format_path(loc), message, node.start_mark.line + 1))
        self.unreadable.add(loc)

    def walk(self, node: yaml.Node, loc: Loc) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES or len(loc) > MAX_DEPTH:
            raise _TooComplex
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            tag = self.loader.explicit_tags.get(id(node))
            if tag is not None:
                self._refuse(loc, _tag_message(tag, node), node)
                return []
            out = []
            for i, item in enumerate(node.value):
                self.positions[loc + (i,)] = _where(item)
                out.append(self.walk(item, loc + (i,)))
            return out
        tag = self.loader.explicit_tags.get(id(node))
        if tag is not None:
            self._refuse(loc, _tag_message(tag, node), node)
            return None
        try:
            return self.loader.construct_object(node, deep=True)
        except _CONSTRUCT_ERRORS as exc:
            self._refuse(loc, f"cannot read this value: {_problem(exc)}", node)
            return None

    def _key(self, key_node: yaml.Node, loc: Loc) -> str | None:
        key = None
        tag = self.loader.explicit_tags.get(id(key_node))
        if tag is not None:
            self.errors.append(PolicyError(format_path(loc), _tag_message(tag, key_node, key=True),
                                           key_node.start_mark.line + 1))
            return None
        if isinstance(key_node, yaml.ScalarNode):
            try:
                key = self.loader.construct_object(key_node)
            except _CONSTRUCT_ERRORS:
                key = None
        if isinstance(key, str):
            return key
        shown = describe(key) if isinstance(key_node, yaml.ScalarNode) else "a mapping or list"
        self.errors.append(
            PolicyError(format_path(loc), f"keys must be text (got {shown}); quote it", key_node.start_mark.line + 1)
        )
        return None

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        tag = self.loader.explicit_tags.get(id(node))
        if tag is not None:
            self._refuse(loc, _tag_message(tag, node), node)
            return {}
        if id(node) not in self.flattened:  # an alias revisits the same node; check it once
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in first_line:
                    self.errors.append(
                        PolicyError(
                            format_path(loc + (key,)),
                            f"duplicate key (first on line {first_line[key]}); only one may stay - remove the other",
                            line,
                        )
                    )
                first_line.setdefault(key, line)
            self.loader.flatten_mapping(node)
            self.flattened.add(id(node))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, loc)
            if key is None:
                continue
            self.positions[loc + (key,)] = _where(key_node)
            out[key] = self.walk(value_node, loc + (key,))
        return out


def _tag_message(tag: str, node: yaml.Node, *, key: bool = False) -> str:
    shown = "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag
    what = "a plain value" if isinstance(node, yaml.ScalarNode) else "a plain mapping or list"
    where = " on a key" if key else ""
    return (f"YAML tag {shown}{where}: tags are not accepted in a policy; remove the tag and write {what} "
            f"(quote it to make it text)")


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{problem} ({context})" if context else str(problem)


def _mark_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def _compose(text: str) -> tuple[Any, dict[Loc, tuple[int, int]], list[PolicyError], set[Loc]]:
    """YAML text -> (data, positions, reading errors, unreadable locations). Raises yaml.YAMLError / _TooComplex."""
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, [], set()
        walker = _Walker(loader)
        data = walker.walk(node, ())
        return data, walker.positions, walker.errors, walker.unreadable
    finally:
        loader.dispose()


def _fail(message: str, line: int | None, source: str | None) -> PolicyValidationError:
    return PolicyValidationError([PolicyError("", message, line)], source=source)


def _is_json(text: str, source: str | None) -> bool:
    return bool(source and source.lower().endswith(".json")) or text.lstrip().startswith("{")


def read_document(
    text: str, *, source: str | None = None, what: str = "a RolloutPolicy (apiVersion, kind, metadata, spec)",
    what_plural: str = "one policy per file",
) -> Document:
    """Parse YAML or JSON policy text. Syntax errors raise PolicyValidationError (with the line).

    ``what`` names the expected document in the empty-file message (routing files reuse this reader).
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise _fail(f"the file is empty; expected {what}", None, source)
    if _is_json(text, source):
        try:
            data = load_json(text)
        except json.JSONDecodeError as exc:
            if source and source.lower().endswith(".json"):
                raise _fail(f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno, source) from None
        except NumberTooLong as exc:
            long_number = re.search(r"[0-9]{%d,}" % (MAX_NUMBER_DIGITS + 1), text)
            line = text.count("\n", 0, long_number.start()) + 1 if long_number else None
            raise _fail(str(exc), line, source) from None
        except RecursionError:
            raise _fail("the document is nested too deeply", None, source) from None
        else:
            try:
                _, positions, errors, _ = _compose(text.replace("\t", " "))
            except (yaml.YAMLError, _TooComplex, RecursionError):
                positions, errors = {}, []
            return Document(data, positions, errors, "json")
    try:
        data, positions, errors, unreadable = _compose(text)
    except yaml.YAMLError as exc:
        if "expected a single document" in str(getattr(exc, "context", "")):
            raise _fail(f"found a second YAML document (---); put {what_plural}", _mark_line(exc), source) from None
        raise _fail(f"not valid YAML: {_problem(exc)}", _mark_line(exc), source) from None
    except (_TooComplex, RecursionError):
        raise _fail(
            f"the document is too large or nested too deeply (more than {MAX_NODES} values or "
            f"{MAX_DEPTH} levels, e.g. through recursive aliases)",
            None,
            source,
        ) from None
    return Document(data, positions, errors, "yaml", unreadable)
