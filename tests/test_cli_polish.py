"""`weir` as a Unix tool: a closed pipe, --server without a scheme, a description on every help page."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from control_plane import cli
from control_plane.cli.main import build_parser
from control_plane.cli.polish import EXIT_CLOSED_PIPE, describe_subcommands, normalize_server
from tests.test_cli import make_server, no_env, policy_file, server, weir  # noqa: F401  (fixtures)


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """`weir ARGV | (a reader that is already gone)`: every write to stdout fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "control_plane.cli", *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    finally:
        os.close(write)


def test_schema_into_a_closed_pipe_is_quiet():
    result = run_into_closed_pipe("schema")
    assert result.returncode == EXIT_CLOSED_PIPE
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_client_commands_into_a_closed_pipe_are_quiet(server, policy_file):  # noqa: F811
    assert weir(server, "apply", "-f", policy_file()) == 0
    for argv in (["describe", "echo"], ["get", "-o", "yaml"], ["get", "echo", "--watch", "--interval", "0.05"]):
        result = run_into_closed_pipe("--server", server.url, "--token", "weir_cli-operator", *argv)
        assert result.returncode == EXIT_CLOSED_PIPE, (argv, result.stderr)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, (argv, result.stderr)


def test_server_without_a_scheme_is_accepted(server, capsys):  # noqa: F811
    bare = server.url.removeprefix("http://")
    assert cli.main(["--server", bare, "--token", "weir_cli-viewer", "get"]) == 0
    assert "no rollouts" in capsys.readouterr().out


@pytest.mark.parametrize("url, message", [
    ("ftp://127.0.0.1:8080", "the scheme 'ftp' is not served by Weir; expected http://HOST:PORT"),
    ("http://127.0.0.1:http", "the port is not a number"),
    ("http://:8080", "expected http://HOST:PORT or https://HOST:PORT"),
])
def test_a_server_url_that_cannot_work_is_refused_with_the_fix(url, message, capsys):
    assert cli.main(["--server", url, "get"]) == 2
    err = capsys.readouterr().err
    assert message in err and "is `weir serve` running" not in err


def test_normalize_server():
    assert normalize_server("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert normalize_server("https://weir.example/") == "https://weir.example"
    assert normalize_server("[::1]:8080") == "http://[::1]:8080"


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _subcommands(sub, prefix + (name,))


def test_every_subcommand_help_page_has_a_description():
    parser = build_parser()
    describe_subcommands(parser)
    pages = list(_subcommands(parser))
    assert len(pages) > 25
    bare = [" ".join(path) for path, sub in pages if not (sub.description or "").strip()]
    assert not bare, bare
    help_text = dict(pages)[("promote",)].format_help()
    assert "Promote a rollout to 100% (asks the confirm-promotion gate)." in help_text


def test_help_page_through_main_shows_the_description(capsys):
    with pytest.raises(SystemExit):
        cli.main(["describe", "--help"])
    assert "One rollout in detail: steps, verdict, evidence, events." in capsys.readouterr().out
