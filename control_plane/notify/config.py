"""Notification targets from the command line (``--notify FORMAT=URL``) or a file (``--notify-file FILE``).

The file keeps receiver URLs (for Slack, the URL is the secret) out of the
process list and shell history::

    notify:
      - format: slack                # slack | json
        url: https://hooks.slack.com/services/T000/B000/XXXX
        events: [promoted, rolled-back, failed]   # default: every kind
      - format: json
        url: https://ops.example/weir
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ..rollouts.webhooks import redact_url
from .notifier import FORMATS, NOTIFY_KINDS, Target

__all__ = ["add_notify_options", "load_targets", "parse_target"]


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: expected an http(s) URL of the receiver (got {redact_url(url, hide_path=True)!r})")
    return url


def parse_target(text: str) -> Target:
    """``slack=URL`` or ``json=URL`` (ValueError naming --notify and the form expected)."""
    kind, sep, url = text.partition("=")
    if not sep or kind not in FORMATS:
        raise ValueError(f"--notify: expected FORMAT=URL with FORMAT one of {', '.join(FORMATS)} "
                         f"(got {redact_url(text, hide_path=True) if '://' in text else text!r})")
    return Target(kind, _check_url(url.strip(), "--notify"))


def _from_file(path: str) -> list[Target]:
    where = f"--notify-file {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{where}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("notify"), list):
        raise ValueError(f"{where}: expected a mapping with a list 'notify: [{{format, url, events}}]'")
    errors, targets = [], []
    for i, item in enumerate(data["notify"]):
        at = f"notify[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{at}: expected a mapping with format and url")
            continue
        extra = sorted(set(item) - {"format", "url", "events"})
        if extra:
            errors.append(f"{at}: unknown key(s) {', '.join(map(str, extra))}; expected format, url, events")
        fmt, url, events = item.get("format"), item.get("url"), item.get("events", list(NOTIFY_KINDS))
        if fmt not in FORMATS:
            errors.append(f"{at}.format: expected one of {', '.join(FORMATS)} (got {fmt!r})")
        if not isinstance(url, str):
            errors.append(f"{at}.url: expected the receiver's http(s) URL")
        else:
            try:
                _check_url(url, f"{at}.url")
            except ValueError as err:
                errors.append(str(err))
        if not isinstance(events, list) or not events or any(e not in NOTIFY_KINDS for e in events):
            errors.append(f"{at}.events: expected a list of {', '.join(NOTIFY_KINDS)} (got {events!r})")
        if not any(e.startswith(at) for e in errors):
            targets.append(Target(fmt, url, frozenset(events)))
    if errors:
        raise ValueError(f"{where}: " + "; ".join(errors))
    return targets


def load_targets(args: argparse.Namespace) -> list[Target]:
    targets = [parse_target(t) for t in getattr(args, "notify", None) or ()]
    if getattr(args, "notify_file", None):
        targets += _from_file(args.notify_file)
    return targets


def add_notify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--notify", action="append", default=[], metavar="FORMAT=URL",
                   help="send notifications (step passed, paused, rolled back, promoted, failed) to a Slack-compatible "
                        "incoming webhook (slack=URL) or as JSON (json=URL); repeatable. The URL shows in the process "
                        "list: prefer --notify-file for secret URLs")
    p.add_argument("--notify-file", metavar="FILE",
                   help="notification targets as YAML: notify: [{format: slack|json, url: URL, events: [...]}] "
                        "(docs/dashboard.md)")
