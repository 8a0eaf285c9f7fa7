"""``weir istio render``, ``weir istio import`` and ``weir crd``.

Registered on the main parser by :func:`add_commands`. Each command prints its
result on stdout and exits 0, or prints every problem on stderr (one line
each, naming the object and field) and exits 1 with nothing on stdout - never
a traceback. Heavy imports happen inside the commands so ``weir --help`` stays
fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import yaml

__all__ = ["add_commands", "cmd_render", "cmd_import", "cmd_crd"]


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors/aliases, for people and kubectl alike."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(docs: list[dict[str, Any]], output: str, out: TextIO) -> None:
    if output == "json":
        json.dump(docs if len(docs) > 1 else docs[0], out, indent=2)
        out.write("\n")
    else:
        yaml.dump_all(docs, out, Dumper=_PlainDumper, sort_keys=False, explicit_start=len(docs) > 1)


def _fail(lines: list[str], err: TextIO) -> int:
    for line in lines:
        print(f"error: {line}", file=err)
    return 1


def cmd_render(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the VirtualService and DestinationRule of a policy at one step."""
    from policies import PolicyValidationError, load_policy

    from .adapter import parse_step
    from .errors import MeshError
    from .istio.render import IstioOptions, render_policy

    out, err = out or sys.stdout, err or sys.stderr
    try:
        step = parse_step(args.step)
    except ValueError as exc:
        return _fail([str(exc)], err)
    try:
        policy = load_policy(args.file)
    except PolicyValidationError as exc:
        return _fail([f"{args.file}: {e}" for e in exc.errors], err)
    except OSError as exc:
        return _fail([f"{args.file}: cannot read: {exc.strerror or exc}"], err)
    options = IstioOptions(
        namespace=args.namespace, host=args.host, gateways=tuple(args.gateway), version_label=args.version_label
    )
    try:
        objects = render_policy(policy, step, options)
    except MeshError as exc:
        return _fail([str(p) for p in exc.problems], err)
    docs = {"all": objects.documents(), "virtualservice": [objects.virtual_service],
            "destinationrule": [objects.destination_rule]}[args.only]
    _dump(docs, args.output, out)
    return 0


def _read_documents(paths: list[str]) -> tuple[list[Any], list[str]]:
    docs: list[Any] = []
    problems: list[str] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        try:
            docs += [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else path
            problems.append(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}")
    return docs, problems


def _parse_endpoints(values: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    endpoints: dict[str, list[str]] = {}
    problems = []
    for value in values:
        version, eq, addresses = value.partition("=")
        items = [a.strip() for a in addresses.split(",") if a.strip()]
        if not eq or not version or not items:
            problems.append(f"--endpoints {value!r}: expected VERSION=IP:PORT[,IP:PORT...], e.g. v1=10.0.1.11:8080")
            continue
        endpoints.setdefault(version, []).extend(items)
    return endpoints, problems


def cmd_import(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print a RolloutPolicy skeleton for an existing VirtualService and DestinationRule."""
    from .errors import MeshError
    from .istio.importer import ImportOptions, import_objects

    out, err = out or sys.stdout, err or sys.stderr
    docs, problems = _read_documents(args.file)
    endpoints, endpoint_problems = _parse_endpoints(args.endpoints)
    problems += endpoint_problems
    if problems:
        return _fail(problems, err)
    options = ImportOptions(
        endpoints=endpoints, port=args.port, canary=args.canary, version_label=args.version_label, name=args.name
    )
    try:
        result = import_objects(docs, options)
    except MeshError as exc:
        return _fail([str(p) for p in exc.problems], err)
    if args.output == "json":
        _dump([result.data], "json", out)
        return 0
    print(f"# RolloutPolicy skeleton imported from {', '.join(args.file)}; review before applying:", file=out)
    for note in result.notes:
        print(f"#   - {note}", file=out)
    _dump([result.data], "yaml", out)
    return 0


def cmd_crd(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the RolloutPolicy CustomResourceDefinition."""
    from .crd import crd

    _dump([crd()], args.output, out or sys.stdout)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``istio`` (``render``, ``import``) and ``crd`` to the ``weir`` parser's subcommands."""
    from .istio.defaults import DEFAULT_PORT, DEFAULT_VERSION_LABEL

    p = subparsers.add_parser("istio", help="Istio: render a policy as VirtualService + DestinationRule, or import them")
    isub = p.add_subparsers(dest="istio_command", required=True, metavar="SUBCOMMAND")

    r = isub.add_parser("render", help="print the VirtualService and DestinationRule of a policy at one step")
    r.add_argument("-f", "--file", required=True, metavar="POLICY", help="rollout policy YAML or JSON file")
    r.add_argument("--step", default="0", metavar="N", help="canary step index (0 = the first, default) or 'shadow'")
    r.add_argument("--namespace", default="default", help="namespace of the objects and the service (default 'default')")
    r.add_argument("--host", help="destination host (default SERVICE.NAMESPACE.svc.cluster.local)")
    r.add_argument("--gateway", action="append", default=[], metavar="NAMESPACE/NAME",
                   help="bind the VirtualService to this Istio gateway (repeatable; default: the mesh)")
    r.add_argument("--version-label", default=DEFAULT_VERSION_LABEL, metavar="KEY",
                   help=f"pod label that names the version (default {DEFAULT_VERSION_LABEL!r})")
    r.add_argument("--only", choices=("all", "virtualservice", "destinationrule"), default="all")
    r.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    r.set_defaults(func=cmd_render)

    i = isub.add_parser("import", help="print a RolloutPolicy skeleton from a VirtualService and a DestinationRule")
    i.add_argument("-f", "--file", required=True, action="append", metavar="FILE",
                   help="YAML with the VirtualService and/or DestinationRule (repeatable; '-' for stdin)")
    i.add_argument("--endpoints", action="append", default=[], metavar="VERSION=IP:PORT[,IP:PORT]",
                   help="model-server endpoints of one version (repeatable; Istio objects do not list them)")
    i.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Envoy listener port for the policy (default {DEFAULT_PORT})")
    i.add_argument("--canary", metavar="VERSION", help="the canary version (default: the DestinationRule's second subset)")
    i.add_argument("--version-label", default=DEFAULT_VERSION_LABEL, metavar="KEY",
                   help=f"subset label that names the version (default {DEFAULT_VERSION_LABEL!r})")
    i.add_argument("--name", help="metadata.name of the policy (default: the VirtualService's name)")
    i.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    i.set_defaults(func=cmd_import)

    c = subparsers.add_parser("crd", help="print the RolloutPolicy CustomResourceDefinition")
    c.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    c.set_defaults(func=cmd_crd)
