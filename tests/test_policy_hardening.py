"""Bad policy input is refused with a pointed error, never accepted and never a traceback (issue 13).

Each finding of the review has a test here, and a seeded, bounded fuzz run
throws mutated policies at the loader asserting that every input is either a
valid policy or a PolicyValidationError naming what is wrong.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from policies import PolicyValidationError, RolloutPolicy, cmd_validate, parse_policy, validate_policy_data

MAX_NUMBER_DIGITS = 32  # policies.document.MAX_NUMBER_DIGITS (checked below)
MINIMAL = open("policies/examples/minimal.yaml").read()
SENTIMENT = open("policies/examples/sentiment.yaml").read()
MINIMAL_JSON = open("policies/examples/minimal.json").read()


def errors_of(text: str, source: str | None = None) -> list[str]:
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(text, source=source)
    return [str(e) for e in info.value.errors]


def one_error(text: str, where: str, fragment: str, line: int | None = None) -> None:
    errors = errors_of(text)
    hits = [e for e in errors if e.startswith(where + ":") and fragment in e]
    assert hits, f"no {fragment!r} at {where}; got {errors}"
    if line is not None:
        assert hits[0].endswith(f"line {line}"), hits


# --------------------------------------------------------------------------- patterns: fullmatch


@pytest.mark.parametrize("old, new, where", [
    ("name: echo\nspec", 'name: "echo\\n"\nspec', "metadata.name"),
    ("version: v2", 'version: "v2\\n"', "spec.canary.version"),
    ("    port: 10000", '    port: 10000\n    pathPrefix: "/v2\\n"', "spec.service.pathPrefix"),
])
def test_a_trailing_newline_is_not_accepted(old, new, where):
    """Defect: `$` matched before a final newline, so "echo\\n" passed the name pattern."""
    assert old in MINIMAL
    one_error(MINIMAL.replace(old, new), where, "must be")


def test_a_header_name_with_a_trailing_newline_is_refused():
    text = SENTIMENT.replace("header: {name: x-canary,", 'header: {name: "x-canary\\n",')
    assert text != SENTIMENT
    errors = errors_of(text)
    assert any("header.name: must be an HTTP header name" in e and "\\n" in e for e in errors), errors


# --------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize("endpoint, fragment", [
    ("0.0.0.0:8091", "unspecified address"),
    ("[::]:8091", "unspecified address"),
    ("255.255.255.255:8091", "broadcast address"),
    ("224.0.0.1:8091", "multicast address"),
    ("[ff02::1]:8091", "multicast address"),
    ("[fe80::1%eth0]:8091", "has a zone"),
    ("127.0.0.1:08091", "leading zero; write it as 8091"),
    ("127.0.0.1:8091@02", "leading zero; write it as 2"),
])
def test_endpoints_that_name_no_single_server_are_refused(endpoint, fragment):
    text = MINIMAL.replace('endpoints: ["127.0.0.1:8091"]', f'endpoints: ["{endpoint}"]')
    one_error(text, "spec.canary.endpoints[0]", fragment, line=18)


def test_ordinary_endpoints_still_pass():
    text = MINIMAL.replace('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["10.0.0.7:8091@3", "[2001:db8::7]:8091"]')
    assert [str(e) for e in parse_policy(text).spec.canary.endpoints] == ["10.0.0.7:8091@3", "[2001:db8::7]:8091"]


# --------------------------------------------------------------------------- webhooks


def test_a_webhook_timeout_is_bounded():
    text = MINIMAL + "  webhooks:\n    - {on: pre-rollout, url: http://127.0.0.1:9/hook, timeout: 99999h}\n"
    one_error(text, "spec.webhooks[0].timeout", "at most 5m")


def test_a_webhook_url_with_a_newline_is_refused():
    data = yaml.safe_load(MINIMAL)
    data["spec"]["webhooks"] = [{"on": "pre-rollout", "url": "http://127.0.0.1:9/hook\n", "timeout": "5s"}]
    with pytest.raises(PolicyValidationError) as info:
        validate_policy_data(data)
    assert "spec.webhooks[0].url: a URL must not contain spaces or control characters" in str(info.value)


# --------------------------------------------------------------------------- YAML tags and numbers


@pytest.mark.parametrize("old, new, where, tag, line", [
    ("name: echo\nspec", "name: !!float echo\nspec", "metadata.name", "!!float", 7),
    ("port: 10000", "port: !!int ten", "spec.service.port", "!!int", 12),
    ("port: 10000", "port: !!bool maybe", "spec.service.port", "!!bool", 12),
    ("port: 10000", "port: !!python/object:os.system ls", "spec.service.port", "!!python/object:os.system", 12),
    ('domains: ["*"]', 'domains: !!set {"*"}', "spec.service.domains", "!!set", 11),
    ("    port: 10000", "    !!float 1.5: 3\n    port: 10000", "spec.service", "!!float on a key", 12),
])
def test_yaml_tags_are_refused_with_the_line(old, new, where, tag, line):
    """Defect: !!float echo, !!int ten, !!bool maybe and a !!float key raised ValueError/KeyError: a 500."""
    assert old in MINIMAL
    errors = errors_of(MINIMAL.replace(old, new))
    assert any(e.startswith(f"{where}: YAML tag {tag}:") and e.endswith(f"line {line}") for e in errors), errors
    assert not any("got nothing (null)" in e for e in errors), errors  # one error per problem


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "9" * 4301, "0x" + "f" * 5000, "1." + "5" * 5000,
                                    "9" * (MAX_NUMBER_DIGITS + 1)])
def test_numbers_too_long_are_refused_in_yaml(number):
    """Defect: integers over 4,300 digits raised Python's int-digit-limit ValueError (500, traceback)."""
    one_error(MINIMAL.replace("port: 10000", f"port: {number}"), "spec.service.port", "too long", line=12)


def test_numbers_too_long_are_refused_in_json():
    text = MINIMAL_JSON.replace("10000", "9" * 5000)
    assert text != MINIMAL_JSON
    line = text[: text.index("9" * 50)].count("\n") + 1
    errors = errors_of(text, source="policy.json")
    assert errors == [f"this number is too long (more than {MAX_NUMBER_DIGITS} digits); no field takes a number "
                      f"that large, line {line}"]


def test_the_digit_limit_is_the_readers():
    from policies import document

    assert document.MAX_NUMBER_DIGITS == MAX_NUMBER_DIGITS


def test_a_number_just_inside_the_limit_is_judged_by_its_field():
    errors = errors_of(MINIMAL.replace("port: 10000", "port: " + "9" * MAX_NUMBER_DIGITS))
    assert errors == [f"spec.service.port: must be between 1 and 65535 (got {'9' * MAX_NUMBER_DIGITS}), line 12"]


def test_weir_validate_says_what_is_wrong_without_a_traceback(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(MINIMAL.replace("port: 10000", "port: " + "9" * 5000))
    out = io.StringIO()
    assert cmd_validate([str(path)], out) == 1
    assert out.getvalue() == (f"{path}: spec.service.port: cannot read this value: this number is too long "
                              f"(more than {MAX_NUMBER_DIGITS} digits); no field takes a number that large, line 12\n")


# --------------------------------------------------------------------------- the fuzz run

NASTY = [
    "!!float x", "!!int ten", "!!bool maybe", "!!binary AAAA", "!!timestamp 2001-12-14", "!foo bar", "!!map {}",
    "!!python/name:os.system", "9" * 5000, "-0x" + "f" * 4000, "1e99999", "-.inf", ".nan", "0o777", "0x", "1_000",
    "&a [*a]", "*nope", "<<: {a: 1}", "{a: 1, a: 2}", "[" * 200, "{" * 70 + "}" * 70, '"\\ud800"', "\x00", "\t",
    "'unterminated", '"\\x"', "\u202e", "~", "null", "true", "---", "...", "? complex key", "- - -", "|\n  block",
    "@", "`", "%YAML 1.1", "%TAG ! tag:evil.example,2000:", "!<tag:yaml.org,2002:str> x", "echo\n", "v2 ",
]


def _mutate(text: str, line: int, fragment: str, mode: int) -> str:
    lines = text.split("\n")
    i = line % len(lines)
    head, _, _ = lines[i].partition(":")
    if mode == 0 and ":" in lines[i]:  # replace a value
        lines[i] = f"{head}: {fragment}"
    elif mode == 1:  # insert a line
        lines.insert(i, fragment)
    else:  # replace a line
        lines[i] = fragment
    return "\n".join(lines)


def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 40), 10 ** 40),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                        st.sampled_from([5000, -4400]).map(lambda n: 10 ** n if n > 0 else -(10 ** -n)),
                        st.sampled_from(["\n", "0.0.0.0:1", "[fe80::1%lo]:1", "echo\n", "9" * 5000]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                        max_leaves=12)


FUZZ_COUNTS = {"tried": 0, "refused": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_fuzz_counts():
    """Print what the fuzz runs tried (pytest -s shows it): the counts for the issue's closing note."""
    yield
    if FUZZ_COUNTS["tried"]:
        print(f"\npolicy-loader fuzz: {FUZZ_COUNTS['tried']} inputs, {FUZZ_COUNTS['refused']} refused with "
              f"pointed errors, {FUZZ_COUNTS['tried'] - FUZZ_COUNTS['refused']} valid, 0 other exceptions")


class _Tally:
    tried = 0
    refused = 0


def _check(run, tally: _Tally) -> None:
    tally.tried += 1
    try:
        result = run()
    except PolicyValidationError as exc:
        tally.refused += 1
        assert exc.errors and all(e.message for e in exc.errors)
        return
    assert isinstance(result, RolloutPolicy)


@pytest.fixture
def no_tracebacks(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@seed(13)
@FUZZ
@given(base=st.sampled_from([MINIMAL, SENTIMENT]), line=st.integers(0, 80), fragment=st.sampled_from(NASTY) | st.text(max_size=12),
       mode=st.integers(0, 2), extra=st.sampled_from(NASTY))
def test_fuzz_mutated_policies_never_raise_anything_else(base, line, fragment, mode, extra, no_tracebacks):
    tally = _Tally()
    text = _mutate(_mutate(base, line, fragment, mode), line * 7 + 3, extra, (mode + 1) % 3)
    _check(lambda: parse_policy(text), tally)
    _check(lambda: parse_policy(text, source="policy.json"), tally)
    FUZZ_COUNTS["tried"] += tally.tried
    FUZZ_COUNTS["refused"] += tally.refused


@seed(13)
@FUZZ
@given(data=_json_values(), where=st.sampled_from(["metadata", "spec", "spec.service", "spec.canary", "spec.strategy"]))
def test_fuzz_json_values_in_any_field_never_raise_anything_else(data, where, no_tracebacks):
    tally = _Tally()
    policy = json.loads(MINIMAL_JSON)
    node = policy
    for key in where.split("."):
        node = node[key]
    node[f"{where.rsplit('.', 1)[-1]}Extra"] = data
    for key in list(node)[:2]:
        node[key] = data
    _check(lambda: validate_policy_data(policy), tally)
    try:
        text = json.dumps(policy)
    except ValueError:  # Python cannot even print a 5000-digit integer
        text = None
    if text is not None:
        _check(lambda: parse_policy(text, source="request.json"), tally)
    FUZZ_COUNTS["tried"] += tally.tried
    FUZZ_COUNTS["refused"] += tally.refused
