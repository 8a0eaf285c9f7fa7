"""``weir validate`` and ``weir schema`` as plain functions (the CLI in control_plane wires them up).

They take an output stream and return an exit code instead of calling
sys.exit, so they are trivially testable and reusable from other front ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from .errors import PolicyValidationError
from .loader import load_policy
from .schema import json_schema

POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def _expand(paths: list[str]) -> list[tuple[str, str | None]]:
    """(path, problem) pairs; a directory stands for its *.yaml/*.yml/*.json files (not recursive)."""
    out: list[tuple[str, str | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in POLICY_SUFFIXES)
            if not files:
                out.append((raw, "directory contains no .yaml, .yml or .json files"))
            out.extend((str(p), None) for p in files)
        else:
            out.append((raw, None))
    return out


def cmd_validate(paths: list[str], out: TextIO | None = None) -> int:
    """Validate policy files; print ``FILE: ok`` or one ``FILE: path: message, line N`` per error.

    ``out`` defaults to the current ``sys.stdout`` (looked up at call time, so
    redirection and test capture work). A directory stands for its
    .yaml/.yml/.json files. Returns 0 when every file is valid, 1 otherwise
    (including missing or unreadable files and an empty argument list).
    """
    out = sys.stdout if out is None else out
    if not paths:
        print("no policy files given; usage: weir validate FILE [FILE...]", file=out)
        return 1
    ok = True
    for path, problem in _expand(paths):
        if problem is not None:
            ok = False
            print(f"{path}: {problem}", file=out)
            continue
        try:
            load_policy(path)
        except PolicyValidationError as exc:
            ok = False
            for error in exc.errors:
                print(f"{path}: {error}", file=out)
        except FileNotFoundError:
            ok = False
            print(f"{path}: no such file", file=out)
        except OSError as exc:
            ok = False
            print(f"{path}: cannot read: {exc.strerror or exc}", file=out)
        else:
            print(f"{path}: ok", file=out)
    return 0 if ok else 1


def cmd_schema(out: TextIO | None = None) -> int:
    """Print the JSON Schema of the policy format as indented JSON (to ``sys.stdout`` by default)."""
    out = sys.stdout if out is None else out
    json.dump(json_schema(), out, indent=2, sort_keys=False)
    out.write("\n")
    return 0


__all__ = ["cmd_validate", "cmd_schema"]
