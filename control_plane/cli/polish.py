"""What makes `weir` behave like a finished Unix tool: closed pipes, help pages, server URLs.

Why a module of its own: these are rules about *every* command (a reader that
closes the pipe early, a ``--help`` page with a description, ``--server``
given without a scheme), not about any one of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

__all__ = ["EXIT_CLOSED_PIPE", "closed_pipe_exit", "describe_subcommands", "normalize_server"]

#: What a shell reports for a program ended by SIGPIPE (128 + 13), as git and coreutils do.
EXIT_CLOSED_PIPE = 141


def closed_pipe_exit() -> int:
    """The reader of stdout went away (``weir schema | head``): stop quietly, no traceback.

    Python flushes stdout once more at exit and would print "Exception ignored ...
    BrokenPipeError"; pointing stdout at /dev/null first leaves nothing to flush.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (tests capture it): nothing left to flush
        pass
    return EXIT_CLOSED_PIPE


def describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command's ``--help`` page a description: its one-line help, as a sentence.

    argparse shows ``help=`` only in the parent's list; a sub-command's own page
    stays bare unless ``description=`` is set too. Walks nested sub-commands.
    """
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            text = helps.get(name)
            if sub.description is None and text:
                text = text.replace("%%", "%")
                sub.description = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
            describe_subcommands(sub)


def normalize_server(url: str) -> str:
    """``--server`` as a base URL: ``HOST:PORT`` means ``http://HOST:PORT``; anything else but http(s) is refused.

    Raises ValueError naming the flag and the form expected.
    """
    text = (url or "").strip().rstrip("/")
    if not text:
        raise ValueError("--server: empty; expected a URL such as http://127.0.0.1:8080 (or set WEIR_SERVER)")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--server: the scheme {parts.scheme!r} is not served by Weir; expected "
                         f"http://HOST:PORT or https://HOST:PORT (got {url!r})")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--server: the port is not a number 1-65535 (got {url!r}); expected e.g. "
                         "http://127.0.0.1:8080") from None
    if not parts.hostname or (port is not None and not 0 < port < 65536):
        raise ValueError(f"--server: expected http://HOST:PORT or https://HOST:PORT (got {url!r})")
    return text
