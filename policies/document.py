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

__all__ = ["Document", "read_document"]

MAX_NODES = 100_000
"""Upper bound on values visited; stops alias 'billion laughs' documents."""
MAX_DEPTH = 64
"""Upper bound on nesting; stops recursive aliases (``&a [*a]``)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit types (no yes/no/on/off booleans, no octal 010, no dates)."""


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
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


@dataclass
class Document:
    """Parsed policy data, where each part came from, and problems found while reading it."""

    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    """(line, column), both 1-based, of every mapping key and sequence item."""
    errors: list[PolicyError] = field(default_factory=list)
    format: Literal["yaml", "json", "data"] = "yaml"

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

    def walk(self, node: yaml.Node, loc: Loc) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES or len(loc) > MAX_DEPTH:
            raise _TooComplex
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.positions[loc + (i,)] = _where(item)
                out.append(self.walk(item, loc + (i,)))
            return out
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.errors.append(
                PolicyError(format_path(loc), f"cannot read this value: {_problem(exc)}", node.start_mark.line + 1)
            )
            return None

    def _key(self, key_node: yaml.Node, loc: Loc) -> str | None:
        key = None
        if isinstance(key_node, yaml.ScalarNode):
            try:
                key = self.loader.construct_object(key_node)
            except yaml.YAMLError:
                key = None
        if isinstance(key, str):
            return key
        shown = describe(key) if isinstance(key_node, yaml.ScalarNode) else "a mapping or list"
        self.errors.append(
            PolicyError(format_path(loc), f"keys must be text (got {shown}); quote it", key_node.start_mark.line + 1)
        )
        return None

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
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


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{problem} ({context})" if context else str(problem)


def _mark_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def _compose(text: str) -> tuple[Any, dict[Loc, tuple[int, int]], list[PolicyError]]:
    """YAML text -> (data, positions, reading errors). Raises yaml.YAMLError / _TooComplex."""
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        walker = _Walker(loader)
        data = walker.walk(node, ())
        return data, walker.positions, walker.errors
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
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if source and source.lower().endswith(".json"):
                raise _fail(f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno, source) from None
        except RecursionError:
            raise _fail("the document is nested too deeply", None, source) from None
        else:
            try:
                _, positions, errors = _compose(text.replace("\t", " "))
            except (yaml.YAMLError, _TooComplex, RecursionError):
                positions, errors = {}, []
            return Document(data, positions, errors, "json")
    try:
        data, positions, errors = _compose(text)
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
    return Document(data, positions, errors, "yaml")
