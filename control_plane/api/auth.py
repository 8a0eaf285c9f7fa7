"""Bearer-token authentication for the REST API: roles, the tokens file, constant-time checks.

Why hashes only: the tokens file sits on a disk, in a ConfigMap or in a backup;
if it leaks, a list of SHA-256 digests of random tokens gives nobody access.
A token is a long random string (``weir tokens new`` makes one), so a plain
SHA-256 is enough; a slow password hash would buy nothing for 256-bit secrets.

The tokens file (``weir serve --tokens FILE``) is YAML::

    tokens:
      - name: alice            # who; shows in the API log of every action
        role: operator         # viewer | operator
        sha256: 9f86d08...     # hex SHA-256 of the token (weir tokens hash)

or, for a shell-friendly file, one token per line, ``#`` comments allowed::

    alice:operator:9f86d08...
    viewer:2c26b46b...          # NAME omitted: named after the role and line

Roles: ``viewer`` may read (rollouts, events, proxies, /metrics); ``operator``
may also submit policies and act (pause, resume, promote, abort, retry, weight).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)
_RANK = {VIEWER: 1, OPERATOR: 2}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
TOKEN_PREFIX = "weir_"


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: what the tokens file stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random token (256 bits), prefixed so secret scanners and people recognise it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name and role."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


#: The principal of every request when authentication is disabled (loopback only).
ANONYMOUS_OPERATOR = Principal("anonymous", OPERATOR)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    sha256: str


class TokenFileError(ValueError):
    """A tokens file that cannot be used; ``errors`` lists every problem, with its line."""

    def __init__(self, errors: list[str], source: str = "tokens file"):
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {e}" for e in self.errors)


class TokenAuth:
    """Checks bearer tokens against the stored hashes.

    Every lookup hashes the presented token and compares it with *every*
    stored digest using :func:`hmac.compare_digest`, without stopping early,
    so the time taken does not tell which (or whether a) prefix matched.
    """

    def __init__(self, entries: Iterable[TokenEntry]):
        self.entries = tuple(entries)
        if not self.entries:
            raise TokenFileError(["no tokens: add at least one (weir tokens new --name NAME --role operator)"])

    @classmethod
    def from_file(cls, path: str | Path) -> "TokenAuth":
        """Load a tokens file; TokenFileError lists every problem (OSError if it cannot be read)."""
        return cls(parse_tokens(Path(path).read_text(encoding="utf-8"), source=str(path)))

    @classmethod
    def from_text(cls, text: str, source: str = "tokens file") -> "TokenAuth":
        return cls(parse_tokens(text, source=source))

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal a token belongs to, or None (no token, or not one of ours)."""
        if not token:
            return None
        digest = hash_token(token).encode()
        found: TokenEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.sha256.encode()) and found is None:
                found = entry
        return Principal(found.name, found.role) if found is not None else None


# -- the file format -----------------------------------------------------------------------------


def parse_tokens(text: str, source: str = "tokens file") -> list[TokenEntry]:
    """Parse the YAML form (a mapping with ``tokens:``) or the line form (``[NAME:]ROLE:SHA256``)."""
    data = None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        pass  # not YAML: the line form, whose checks say what is wrong
    if isinstance(data, dict) and "tokens" in data:
        return _parse_yaml(data, source)
    return _parse_lines(text, source)


def _check(name: str, role: str, digest: str, where: str, errors: list[str]) -> TokenEntry | None:
    ok = True
    if role not in ROLES:
        errors.append(f"{where}: role must be viewer or operator (got {role!r})")
        ok = False
    if not _NAME.fullmatch(name):
        errors.append(f"{where}: name must be 1-64 letters, digits or . _ @ - (got {name!r})")
        ok = False
    digest = digest.strip().lower()
    if not _HEX64.fullmatch(digest):
        hint = " - it looks like a token itself; store only its hash" if digest.startswith(TOKEN_PREFIX) else ""
        errors.append(
            f"{where}: expected the hex SHA-256 of the token (64 hex digits, from `weir tokens hash`){hint}"
        )
        ok = False
    return TokenEntry(name, role, digest) if ok else None


def _finish(entries: list[TokenEntry | None], wheres: list[str], errors: list[str], source: str) -> list[TokenEntry]:
    seen: dict[str, str] = {}
    for entry, where in zip(entries, wheres):
        if entry is None:
            continue
        if entry.sha256 in seen:
            errors.append(f"{where}: the same token hash as {seen[entry.sha256]}; each token must be unique")
        seen.setdefault(entry.sha256, where)
    if errors:
        raise TokenFileError(errors, source)
    return [e for e in entries if e is not None]


def _parse_yaml(data: dict, source: str) -> list[TokenEntry]:
    errors: list[str] = []
    unknown = sorted(set(data) - {"tokens"})
    if unknown:
        errors.append(f"unknown top-level key(s) {', '.join(map(str, unknown))}; expected only 'tokens'")
    items = data.get("tokens")
    if not isinstance(items, list):
        raise TokenFileError(errors + ["'tokens' must be a list of {name, role, sha256}"], source)
    entries: list[TokenEntry | None] = []
    wheres: list[str] = []
    for i, item in enumerate(items):
        where = f"tokens[{i}]"
        wheres.append(where)
        if not isinstance(item, dict):
            errors.append(f"{where}: expected a mapping with name, role and sha256")
            entries.append(None)
            continue
        extra = sorted(set(item) - {"name", "role", "sha256"})
        if extra:
            errors.append(f"{where}: unknown key(s) {', '.join(map(str, extra))}; expected name, role, sha256")
        missing = [k for k in ("name", "role", "sha256") if k not in item]
        if missing:
            errors.append(f"{where}: missing {', '.join(missing)}")
            entries.append(None)
            continue
        entries.append(_check(str(item["name"]), str(item["role"]), str(item["sha256"]), where, errors))
    return _finish(entries, wheres, errors, source)


def _parse_lines(text: str, source: str) -> list[TokenEntry]:
    errors: list[str] = []
    entries: list[TokenEntry | None] = []
    wheres: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number}"
        wheres.append(where)
        parts = [p.strip() for p in line.split(":")]
        if len(parts) == 2:
            name, role, digest = f"{parts[0]}-line{number}", parts[0], parts[1]
        elif len(parts) == 3:
            name, role, digest = parts
        else:
            errors.append(f"{where}: expected NAME:ROLE:SHA256 or ROLE:SHA256")
            entries.append(None)
            continue
        entries.append(_check(name, role, digest, where, errors))
    return _finish(entries, wheres, errors, source)


__all__ = [
    "ANONYMOUS_OPERATOR",
    "OPERATOR",
    "Principal",
    "ROLES",
    "TokenAuth",
    "TokenEntry",
    "TokenFileError",
    "VIEWER",
    "generate_token",
    "hash_token",
    "parse_tokens",
]
