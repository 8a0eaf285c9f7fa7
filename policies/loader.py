"""Load a policy from text, a file or parsed data, and report every problem with path and line.

This is the one place where pydantic's errors are translated into the author's
language: the contract's camelCase path (``spec.strategy.canary.steps[2].weight``),
what was expected, what was found, and the line in the file. Field-level checks
come from the models; cross-field checks from :mod:`policies.rules`; both run on
every load so a file with three mistakes yields three errors.
"""

from __future__ import annotations

import difflib
import logging
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from .document import Document, read_document
from .errors import Loc, PolicyError, PolicyValidationError, describe, format_path, sort_errors
from .model import SKIP_CROSS_FIELD_RULES, RolloutPolicy
from .rules import cross_field_errors

_log = logging.getLogger("weir.policies")

__all__ = [
    "PolicyError",
    "PolicyValidationError",
    "parse_policy",
    "load_policy",
    "validate_policy_data",
    "validate_document",
]


def parse_policy(text: str, *, source: str | None = None) -> RolloutPolicy:
    """Parse and validate YAML or JSON policy text.

    ``source`` (usually the file name) is kept on the error and decides JSON vs
    YAML when it ends in ``.json``; otherwise text starting with ``{`` is tried
    as JSON first. Raises :class:`PolicyValidationError` listing every problem.
    """
    return _never_raw(lambda: _validate(read_document(text, source=source), source), source)


# What a defect of ours, triggered by some input, can raise from deep inside parsing or
# validation. The input is then what cannot be used: it is reported as invalid (422 in the
# API, a pointed line in `weir validate`), never as a traceback or a 500.
_UNEXPECTED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError,
               UnicodeError, MemoryError)


def _never_raw(run: Callable[[], RolloutPolicy], source: str | None) -> RolloutPolicy:
    try:
        return run()
    except PolicyValidationError:
        raise
    except RecursionError:
        raise PolicyValidationError([PolicyError("", "the document is nested too deeply")], source=source) from None
    except _UNEXPECTED as exc:
        _log.warning("a policy could not be read: %s: %s", type(exc).__name__, str(exc)[:200])
        raise PolicyValidationError(
            [PolicyError("", f"this policy cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                             "check the values near what it names")],
            source=source,
        ) from None


def load_policy(path: str | Path) -> RolloutPolicy:
    """Read one policy file (UTF-8 YAML or JSON) and validate it.

    File-system problems propagate as OSError (e.g. FileNotFoundError) so callers
    can tell "cannot read" from "invalid"; content problems raise PolicyValidationError.
    """
    source = str(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyValidationError(
            [PolicyError("", f"not UTF-8 text (undecodable byte at offset {exc.start}); save the file as UTF-8")],
            source=source,
        ) from None
    return parse_policy(text, source=source)


def validate_policy_data(data: Any, *, source: str | None = None) -> RolloutPolicy:
    """Validate already-parsed, file-shaped data (camelCase keys), e.g. a REST request body.

    Same rules and messages as :func:`parse_policy`, without line numbers.
    """
    return _never_raw(lambda: _validate(Document(data, format="data"), source), source)


M = TypeVar("M", bound=BaseModel)


def validate_document(
    doc: Document,
    model: type[M],
    rules: Callable[[Any], list[tuple[Loc, str]]],
    *,
    source: str | None = None,
    what: str,
    error_type: type[PolicyValidationError] = PolicyValidationError,
) -> M:
    """Validate a read document against ``model`` and its raw-data ``rules``; every problem at once.

    Shared by policies and the routing files of ``weir xds serve``, so both speak
    with one voice: the same paths, the same wording, the same line numbers.
    ``what`` names the expected document in the empty/not-a-mapping messages.
    """
    errors = list(doc.errors)  # reading problems (duplicate keys) come first, in file order
    if doc.data is None:
        errors.append(PolicyError("", f"the file is empty; expected {what}"))
        raise error_type(errors, source=source)
    if not isinstance(doc.data, dict):
        errors.append(PolicyError("", f"expected {what} (got {describe(doc.data)})", 1 if doc.format != "data" else None))
        raise error_type(errors, source=source)
    problems: list[tuple[Loc, str]] = []
    result = None
    try:
        result = model.model_validate(doc.data, by_name=False, context={SKIP_CROSS_FIELD_RULES: True})
    except ValidationError as exc:
        problems.extend(translate(exc, model))
    problems.extend(rules(doc.data))
    # File order: by (line, column) of the location or its nearest ancestor; unknown positions last,
    # grouped by the first list index (e.g. per service of a routing file) so each item's problems stay together.
    unknown = (1 << 30, 0)

    def order(problem: tuple[Loc, str]) -> tuple[tuple[int, int], int]:
        first_index = next((seg for seg in problem[0] if isinstance(seg, int)), -1)
        return doc.position_for(problem[0]) or unknown, first_index

    problems.sort(key=order)
    # A value that could not be read was replaced by null; "expected a number (got null)" there says nothing new.
    errors.extend(PolicyError(format_path(loc), message, doc.line_for(loc)) for loc, message in problems
                  if tuple(loc) not in doc.unreadable)
    if errors or result is None:
        raise error_type(sort_errors(errors), source=source)
    return result


def _validate(doc: Document, source: str | None) -> RolloutPolicy:
    return validate_document(
        doc, RolloutPolicy, cross_field_errors, source=source,
        what="a RolloutPolicy mapping with apiVersion, kind, metadata and spec",
    )


# ---------------------------------------------------------------------------
# pydantic error -> (file location, message)
# ---------------------------------------------------------------------------


@dataclass
class _Where:
    """What the model says about an error location."""

    loc: Loc  # location in the file: union tags removed
    parent: type[BaseModel] | None  # model owning the last key, if any
    field: Any  # FieldInfo of the last key, if it is a known field
    expected: Any  # type expected at the location (Annotated/Optional stripped)
    tag: str | None  # discriminator value that selected `parent`, if any


def _strip(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _variants(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if _is_model(a)]
    return []


def _tags(model: type[BaseModel]) -> list[str]:
    return [str(v) for f in model.model_fields.values() if get_origin(_strip(f.annotation)) is Literal for v in get_args(_strip(f.annotation))]


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _aliases(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _where(loc: tuple[Any, ...], root: type[BaseModel] = RolloutPolicy) -> _Where:
    tp: Any = root
    out: list[str | int] = []
    parent = field = tag = None
    for seg in loc:
        tp = _strip(tp)
        variants = _variants(tp)
        if variants and isinstance(seg, str):
            chosen = next((v for v in variants if seg in _tags(v)), None)
            if chosen is not None:
                tp, tag = chosen, seg
                continue
        out.append(seg)
        if _is_model(tp) and isinstance(seg, str):
            parent, field = tp, _field(tp, seg)
            tp = field.annotation if field is not None else None
        elif get_origin(tp) is list and isinstance(seg, int):
            parent = field = tag = None
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict and isinstance(seg, str):
            parent = field = tag = None
            tp = get_args(tp)[1]
        else:
            parent = field = tag = None
            tp = None
    return _Where(tuple(out), parent, field, _strip(tp), tag)


def _suggest(word: str, choices: list[str]) -> str | None:
    camel = to_camel(word)
    if camel != word and camel in choices:
        return camel
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _mapping_of(tp: Any) -> str:
    if _is_model(tp):
        names = _aliases(tp)
        return "an empty mapping {}" if not names else f"a mapping with {', '.join(names)}"
    if _variants(tp):
        return "a mapping with metric: " + " | ".join(t for v in _variants(tp) for t in _tags(v))
    return "a mapping"


_AT_LEAST_ONE = {
    "steps": "at least one step, e.g. `- weight: 10`",
    "slos": "at least one SLO, e.g. `- {metric: error-rate, maxIncrease: 0.5%}`",
    "endpoints": 'at least one endpoint, e.g. ["127.0.0.1:8081"]',
    "domains": 'at least one domain, e.g. ["*"]',
    "backends": 'at least one backend, e.g. `- {version: v1, endpoints: ["10.0.0.1:8080"]}`',
}

_SCALAR_EXPECTED = {
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "timedelta_type": "a duration such as 30s",
}


def _message(err: dict[str, Any], where: _Where) -> tuple[Loc, str]:
    kind, value, loc = err["type"], err.get("input"), where.loc
    if kind == "missing":
        description = getattr(where.field, "description", None)
        return loc, "required field is missing" + (f" ({description})" if description else "")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _aliases(where.parent) if where.parent else []
        guess = _suggest(key, allowed)
        if where.tag is not None:
            head = f"unknown field for metric {where.tag}"
        else:
            head = "unknown field"
        if guess:
            hint = " (files use camelCase)" if guess == to_camel(key) else ""
            return loc, f"{head}; did you mean `{guess}`?{hint}"
        return loc, f"{head}; allowed here: {', '.join(allowed)}"
    if kind == "literal_error":
        allowed = [str(a) for a in get_args(where.expected)] if get_origin(where.expected) is Literal else []
        if not allowed:
            return loc, f"{err['msg']} (got {describe(value)})"
        head = f"must be {allowed[0]}" if len(allowed) == 1 else f"must be one of {', '.join(allowed)}"
        guess = _suggest(value, allowed) if isinstance(value, str) and len(allowed) > 1 else None
        return loc, f"{head} (got {describe(value)})" + (f"; did you mean {guess}?" if guess else "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for v in _variants(where.expected) for t in _tags(v)] or ["error-rate", "latency", "custom"]
        discriminator = str(err.get("ctx", {}).get("discriminator", "metric")).strip("'")
        if not isinstance(value, dict):
            return loc, f"expected {_mapping_of(where.expected)} (got {describe(value)})"
        tag_value = value.get(discriminator)
        if kind == "union_tag_not_found" or tag_value is None:
            return loc + (discriminator,), f"required field is missing (one of {', '.join(tags)})"
        guess = _suggest(tag_value, tags) if isinstance(tag_value, str) else None
        return loc + (discriminator,), (
            f"must be one of {', '.join(tags)} (got {describe(tag_value)})" + (f"; did you mean {guess}?" if guess else "")
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected {_mapping_of(where.expected)} (got {describe(value)})"
    if kind == "list_type":
        hint = f'; write a list: ["{value}"]' if isinstance(value, str) else ""
        return loc, f"expected a list (got {describe(value)}){hint}"
    if kind == "string_type":
        hint = ""
        if isinstance(value, (bool, int, float)):
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            hint = f'; quote it if you meant the text: "{shown}"'
        return loc, f"expected a string (got {describe(value)}){hint}"
    if kind in _SCALAR_EXPECTED:
        hint = "; remove the quotes" if isinstance(value, str) and _numeric(value) and kind != "bool_type" else ""
        return loc, f"expected {_SCALAR_EXPECTED[kind]} (got {describe(value)}){hint}"
    if kind == "too_short":
        key = loc[-1] if loc and isinstance(loc[-1], str) else None
        need = _AT_LEAST_ONE.get(key or "", f"at least {err.get('ctx', {}).get('min_length', 1)} item(s)")
        return loc, f"needs {need} (got {describe(value)})"
    if kind in ("value_error", "assertion_error"):
        return loc, str(err.get("ctx", {}).get("error", err["msg"]))
    return loc, f"{err['msg']} (got {describe(value)})"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def translate(exc: ValidationError, root: type[BaseModel] = RolloutPolicy) -> list[tuple[Loc, str]]:
    """pydantic's errors for a ``root`` document (a RolloutPolicy by default) as ``(file location, message)`` pairs."""
    return [_message(err, _where(err["loc"], root)) for err in exc.errors(include_url=False)]
