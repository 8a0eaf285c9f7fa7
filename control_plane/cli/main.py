"""The `weir` command line.

Sub-commands are thin: each parses its flags and calls one function that
does the work, so everything here can also be used from Python.

Commands that talk to a running control plane (apply, get, describe, the
actions, events, proxies) use :class:`control_plane.cli.client.WeirClient`:
``--server`` (default ``$WEIR_SERVER`` or http://127.0.0.1:8080) and
``--token`` (default ``$WEIR_TOKEN``). They exit 0 on success and 1 on any
error, printed to stderr with every validation problem on its own line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import yaml


class _PlainDumper(yaml.SafeDumper):
    """YAML without &anchors/*aliases: bootstraps are read by people and by Envoy."""

    def ignore_aliases(self, data) -> bool:
        return True


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from xds.bootstrap import render_bootstrap

    from .security import bootstrap_tls

    addresses = []
    for value in args.xds:
        host, _, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            print(f"error: --xds: expected HOST:PORT with a port 1-65535 (got {value!r})", file=sys.stderr)
            return 2
        addresses.append((host, int(port)))
    (host, port), standby = addresses[0], addresses[1:]
    try:
        tls = bootstrap_tls(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = render_bootstrap(
        args.node_id, args.cluster, host, port, delta=args.delta, admin_port=args.admin_port, tls=tls,
        standby_xds=standby,
    )
    if args.output == "json":
        json.dump(config, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        yaml.dump(config, sys.stdout, Dumper=_PlainDumper, sort_keys=False)
    return 0


def _cmd_xds_serve(args: argparse.Namespace) -> int:
    from xds.routing import RoutingError
    from xds.static_server import serve_routing_file

    try:
        return asyncio.run(serve_routing_file(args.config, host=args.host, port=args.port, group=args.group))
    except RoutingError as err:
        print(f"error: {args.config}: invalid routing, nothing served:\n{err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from policies import cmd_validate

    return cmd_validate(args.files)


def _cmd_schema(args: argparse.Namespace) -> int:
    from policies import cmd_schema

    return cmd_schema()


# --------------------------------------------------------------------------- serve


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import main as serve_main  # lazily: pulls in grpc, uvicorn, the engine

    return serve_main(args)


# --------------------------------------------------------------------------- tokens


def _cmd_tokens_hash(args: argparse.Namespace) -> int:
    from ..api.auth import hash_token

    token = args.token
    if token is None:
        if sys.stdin.isatty():
            print("token (not echoed to the file; end with Enter): ", end="", file=sys.stderr, flush=True)
        token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        print("error: empty token; give TOKEN or pipe it on stdin", file=sys.stderr)
        return 1
    print(hash_token(token))
    return 0


def _cmd_tokens_new(args: argparse.Namespace) -> int:
    from ..api.auth import generate_token, hash_token

    token = generate_token()
    print(f"# token for {args.name} ({args.role}); shown only now, hand it over privately:")
    print(token)
    print("# add this line to the tokens file (weir serve --tokens FILE):")
    print(f"{args.name}:{args.role}:{hash_token(token)}")
    return 0


def _cmd_tokens_check(args: argparse.Namespace) -> int:
    from ..api.auth import TokenAuth, TokenFileError

    try:
        auth = TokenAuth.from_file(args.file)
    except TokenFileError as err:
        print(str(err), file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{args.file}: cannot read: {err.strerror or err}", file=sys.stderr)
        return 1
    who = ", ".join(f"{e.name} ({e.role})" for e in auth.entries)
    print(f"{args.file}: ok, {len(auth.entries)} token(s): {who}")
    return 0


# --------------------------------------------------------------------------- client commands


def _client(args: argparse.Namespace):
    from .client import WeirClient

    return WeirClient(args.server, args.token)


def _client_command(fn: Callable[[Any, argparse.Namespace, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    """Run fn(client, args, out); turn API and connection errors into messages and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from .client import ApiError, ServerUnreachable

        try:
            client = _client(args)
        except ValueError as err:  # --server that is no http(s) URL
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            with client:
                return fn(client, args, sys.stdout)
        except ApiError as err:
            lines = err.lines()
            print(f"error: {lines[0]}", file=sys.stderr)
            for line in lines[1:]:
                print(line, file=sys.stderr)
            if err.status == 401:
                print("hint: pass --token TOKEN or set WEIR_TOKEN", file=sys.stderr)
            return 1
        except ServerUnreachable as err:
            print(f"error: cannot reach the Weir API at {err.server} ({err.reason}); is `weir serve` running? "
                  "Set --server or WEIR_SERVER to point elsewhere.", file=sys.stderr)
            return 1

    run.__name__ = fn.__name__
    return run


def _dump(data: Any, output: str, out: TextIO) -> None:
    if output == "json":
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        yaml.safe_dump(data, out, sort_keys=False)


def _age(since: float | None, now: float | None = None) -> str:
    if not since:
        return "-"
    seconds = max(0, int((now or time.time()) - since))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _clock(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "-"


def _step(r: dict[str, Any]) -> str:
    step, n = r.get("step", -1), r.get("n_steps")
    if step is None or step < 0:
        return "shadow" if r.get("phase") == "Shadowing" or r.get("mirror") else "-"
    return f"{step + 1}/{n}" if n else str(step + 1)


def _weight(r: dict[str, Any]) -> str:
    text = f"{r.get('weight', 0)}%"
    if r.get("mirror"):
        text += f" (+{r['mirror']:g}% mirrored)"
    return text


def _table(headers: Sequence[str], rows: list[Sequence[str]], out: TextIO, indent: str = "") -> None:
    """Columns padded to their widest cell; the last column is left unpadded (it may be long)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [str(row[-1])]
        print(indent + "  ".join(cells).rstrip(), file=out)


def _cmd_apply(client, args: argparse.Namespace, out: TextIO) -> int:
    if args.file == "-":
        text, is_json = sys.stdin.read(), False
    else:
        path = Path(args.file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            print(f"error: {args.file}: no such file", file=sys.stderr)
            return 1
        except (OSError, UnicodeDecodeError) as err:
            print(f"error: {args.file}: cannot read: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            return 1
        is_json = path.suffix.lower() == ".json"
    result = client.apply(text, json_body=is_json)
    if args.output:
        _dump(result, args.output, out)
        return 0
    applied, rollout = result["applied"], (result if "name" in result else None)
    if rollout is None:
        print(f"{applied['action']}: {applied['message']}", file=out)
        return 0
    print(f"rollout/{rollout['name']} {applied['action']}: {applied['message']} "
          f"(revision {rollout['revision']}, {rollout['stable_version']} -> {rollout['canary_version']}, "
          f"{rollout['phase']})", file=out)
    return 0


def _rollout_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    now = time.time()
    rows = []
    for r in items:
        message = r.get("message", "")
        if len(message) > 80:
            message = message[:77] + "..."
        age = _age(r.get("created_at"), now)
        rows.append([r["name"], r["service"], r["phase"], _step(r), _weight(r), age, message])
    return rows


def _cmd_get(client, args: argparse.Namespace, out: TextIO) -> int:
    if args.watch:
        from .watch import watch

        try:
            return watch(client, args.name, args.interval, args.output, out, step_text=_step, weight_text=_weight)
        except KeyboardInterrupt:
            return 130
    if args.name:
        data: Any = client.get(args.name)
        items = [data]
    else:
        items = data = client.list()
    if args.output:
        _dump(data, args.output, out)
        return 0
    if not items:
        print("no rollouts (submit one with: weir apply -f POLICY.yaml)", file=out)
        return 0
    _table(["NAME", "SERVICE", "PHASE", "STEP", "WEIGHT", "AGE", "MESSAGE"], _rollout_rows(items), out)
    return 0


def _cmd_describe(client, args: argparse.Namespace, out: TextIO) -> int:
    r = client.get(args.name)
    events = client.events(args.name)
    if args.output:
        _dump({**r, "events": events}, args.output, out)
        return 0
    p = lambda text="": print(text, file=out)  # noqa: E731
    p(f"Name:        {r['name']}   (revision {r['revision']}, policy {r['policy_hash'][:12]})")
    group = "" if r.get("group") in (None, "*") else f"   (proxy group {r['group']})"
    p(f"Service:     {r['service']}{group}")
    p(f"Versions:    stable {r['stable_version']} -> canary {r['canary_version']}")
    gate = f"   (waiting on {r['gate']})" if r.get("gate") else ""
    p(f"Phase:       {r['phase']}{gate}")
    override = "   (set by an operator)" if r.get("weight_override") is not None else ""
    p(f"Weight:      {_weight(r)} of live traffic to the canary{override}")
    p(f"Created:     {_clock(r.get('created_at'))} ({_age(r.get('created_at'))} ago)")
    if r.get("deadline_at"):
        p(f"Deadline:    {_clock(r['deadline_at'])}")
    p(f"Message:     {r.get('message', '')}")
    if r.get("routing"):
        p(f"Routing:     {r['routing']['state']}: {r['routing']['detail']}")
    if r.get("release"):
        rel = r["release"]
        p(f"Live:        {rel['version']} on {', '.join(rel['endpoints'])}")
    if r.get("balancing"):
        p("Balancing:   latency-aware (weight of a fair share = 100; estimate = peak EWMA of latency, errors count as slow)")
        for version, rows in r["balancing"].items():
            for row in rows:
                est = "-" if row.get("estimate_ms") is None else f"{row['estimate_ms']:.1f} ms"
                queue = "" if row.get("queue") is None else f", queue {row['queue']:g}"
                p(f"  {version:<10} {row['endpoint']:<22} weight {row.get('weight') or '-':>4}  estimate {est}"
                  f" ({row['samples']} samples, {row['errors']} errors{queue})")
    p()
    p("Steps:")
    shadow, steps, current = r.get("shadow"), r.get("steps") or [], r.get("step", -1)
    rows = []
    if shadow:
        here = "->" if current == -1 and r["phase"] in ("Shadowing", "Paused", "Holding") else ""
        rows.append([here, "shadow", f"mirror {shadow['mirror']:g}%", _limits(shadow)])
    for s in steps:
        here = "->" if s["index"] == current and r.get("active") else ""
        what = "pause (manual gate: promote or resume)" if s["kind"] == "pause" else f"weight {s['weight']}%"
        rows.append([here, str(s["index"] + 1), what, _limits(s)])
    for row in rows:
        print(f"  {row[0]:<2} {row[1]:>6}  {row[2]:<40} {row[3]}".rstrip(), file=out)
    p()
    verdict = r.get("latest_verdict") or r.get("verdict")
    source = "latest analysis" if r.get("latest_verdict") else "verdict acted on"
    if verdict:
        p(f"Verdict ({source}): {verdict.get('outcome', '?')}: {verdict.get('reason', '')}")
        if verdict.get("samples_needed"):
            p(f"  samples still needed: {verdict['samples_needed']}")
        evidence = verdict.get("evidence")
        if evidence:
            p("  evidence:")
            for line in yaml.safe_dump(evidence, sort_keys=False, default_flow_style=False).splitlines():
                p(f"    {line}")
    else:
        p("Verdict:     none yet")
    p()
    recent = events[-args.events:] if args.events > 0 else []
    p(f"Events (last {len(recent)} of {len(events)}):")
    if recent:
        _event_table(recent, out, indent="  ")
    return 0


def _limits(step: dict[str, Any]) -> str:
    parts = []
    if step.get("min_requests"):
        parts.append(f"minRequests {step['min_requests']}")
    if step.get("max_duration_s"):
        parts.append(f"maxDuration {step['max_duration_s']:g}s")
    return ", ".join(parts)


def _event_table(events: list[dict[str, Any]], out: TextIO, indent: str = "") -> None:
    rows = []
    for e in events:
        phase = e["phase_to"] if not e.get("phase_from") or e["phase_from"] == e["phase_to"] else \
            f"{e['phase_from']}->{e['phase_to']}"
        step = "-" if e.get("step", -1) < 0 else str(e["step"] + 1)
        reason = e.get("reason", "")
        if e.get("verdict"):
            reason += f" [verdict {e['verdict'].get('outcome')}]"
        weight = f"{e.get('weight', 0)}%"
        rows.append([str(e.get("seq", "")), _clock(e.get("at")), e["kind"], phase, step, weight, reason])
    _table(["SEQ", "TIME", "KIND", "PHASE", "STEP", "WEIGHT", "REASON"], rows, out, indent)


def _cmd_events(client, args: argparse.Namespace, out: TextIO) -> int:
    events = client.events(args.name, args.after)
    if args.output:
        _dump(events, args.output, out)
    elif not events:
        print(f"no events for {args.name}" + (f" after {args.after}" if args.after else ""), file=out)
    else:
        _event_table(events, out)
    return 0


def _cmd_action(client, args: argparse.Namespace, out: TextIO) -> int:
    r = client.act(args.name, args.action)
    if args.output:
        _dump(r, args.output, out)
    else:
        print(f"rollout/{r['name']} {args.action}: {r['phase']}, step {_step(r)}, weight {_weight(r)}: "
              f"{r.get('message', '')}", file=out)
    return 0


def _cmd_set_weight(client, args: argparse.Namespace, out: TextIO) -> int:
    r = client.set_weight(args.name, args.weight)
    if args.output:
        _dump(r, args.output, out)
    else:
        print(f"rollout/{r['name']} weight set: {r['phase']}, weight {_weight(r)}: {r.get('message', '')}", file=out)
    return 0


def _cmd_report(client, args: argparse.Namespace, out: TextIO) -> int:
    from ..ui.report import collect, write_report

    data = collect(client.get_path, args.name)
    try:
        path = write_report(data, args.file or f"{args.name}.html")
    except OSError as err:
        print(f"error: -o {args.file}: cannot write: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {path}: rollout {args.name} ({data['rollout']['phase']}), {len(data['events'])} events with their "
          "evidence; open it in any browser (self-contained, no network)", file=out)
    return 0


def _cmd_proxies(client, args: argparse.Namespace, out: TextIO) -> int:
    data = client.proxies()
    if args.output:
        _dump(data, args.output, out)
        return 0
    connected, gone = data.get("connected", []), data.get("disconnected", [])
    if not connected:
        print("no proxies connected", file=out)
    else:
        rows = []
        for p in connected:
            nacks = p.get("nacks") or []
            last = f"{len(nacks)} ({nacks[-1]['type']}: {nacks[-1]['message'][:60]})" if nacks else "0"
            rows.append([p["node_id"], p["node_cluster"], p["group"], p["protocol"], p["peer"],
                         p.get("converged_version") or "-", _age(p.get("connected_at")), last])
        _table(["NODE", "CLUSTER", "GROUP", "PROTOCOL", "PEER", "CONVERGED", "AGE", "NACKS"], rows, out)
    if gone:
        print(f"\nrecently disconnected ({len(gone)}):", file=out)
        rows = [[p["node_id"], p["node_cluster"], p["peer"], f"{_age(p.get('disconnected_at'))} ago"]
                for p in gone[:20]]
        _table(["NODE", "CLUSTER", "PEER", "DISCONNECTED"], rows, out)
    return 0


def _cmd_endpoints_set(client, args: argparse.Namespace, out: TextIO) -> int:
    result = client.set_endpoints(args.service, args.version, args.endpoints)
    if args.output:
        _dump(result, args.output, out)
    else:
        print(result["message"], file=out)
    return 0


def _cmd_releases(client, args: argparse.Namespace, out: TextIO) -> int:
    items = client.releases()
    if args.output:
        _dump(items, args.output, out)
        return 0
    if not items:
        print("no releases yet (the first policy of a service names its stable version)", file=out)
        return 0
    rows = [[r["service"], r["version"], ", ".join(r["endpoints"]),
             f"{r['rollout']} (revision {r['revision']})" if r.get("rollout") else "declared as stable",
             _age(r.get("updated_at"))] for r in items]
    _table(["SERVICE", "LIVE", "ENDPOINTS", "MADE LIVE BY", "AGE"], rows, out)
    return 0


# --------------------------------------------------------------------------- the parser


def _connection_options(defaults: bool) -> argparse.ArgumentParser:
    """--server/--token, accepted before or after the sub-command (the later one wins)."""
    from .client import default_server, default_token

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--server", metavar="URL", default=default_server() if defaults else argparse.SUPPRESS,
                   help="the Weir API (default $WEIR_SERVER or http://127.0.0.1:8080)")
    p.add_argument("--token", default=default_token() if defaults else argparse.SUPPRESS,
                   help="bearer token (default $WEIR_TOKEN)")
    return p


def build_parser() -> argparse.ArgumentParser:
    from . import security  # weir certs; TLS and webhook options of bootstrap and serve
    parser = argparse.ArgumentParser(prog="weir", description="Progressive delivery for model serving on Envoy.",
                                     parents=[_connection_options(defaults=True)])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conn = _connection_options(defaults=False)

    def output_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", choices=("json", "yaml"), help="machine-readable output")

    p = sub.add_parser("bootstrap", help="print an Envoy bootstrap that connects to Weir's xDS server")
    p.add_argument("--node-id", required=True, help="this Envoy's node id (unique per proxy)")
    p.add_argument("--cluster", required=True, help="node cluster = the proxy group (policy spec.proxyGroup)")
    p.add_argument("--xds", required=True, metavar="HOST:PORT", action="append",
                   help="Weir's xDS (gRPC) address; repeat it for several replicas (weir serve --store etcd://...): "
                        "the first is preferred, the others take over when it is down")
    p.add_argument("--delta", action="store_true", help="use incremental (delta) ADS instead of state-of-the-world")
    p.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port, bound to 127.0.0.1 (default 9901)")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    security.add_bootstrap_tls_options(p)
    p.set_defaults(func=_cmd_bootstrap)

    p = sub.add_parser("xds", help="the xDS server alone")
    xsub = p.add_subparsers(dest="xds_command", required=True, metavar="SUBCOMMAND")
    s = xsub.add_parser("serve", help="serve a static desired-routing file (reloaded when it changes)")
    s.add_argument("--config", required=True, metavar="ROUTING.yaml")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=18000, help="xDS gRPC port (default 18000)")
    s.add_argument("--group", default="*", help="node group served (default '*': every proxy)")
    s.set_defaults(func=_cmd_xds_serve)

    p = sub.add_parser("validate", help="validate rollout policy files; exit 1 if any is invalid")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="print the RolloutPolicy JSON Schema")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("serve", help="run the control plane: xDS server, rollout engine and REST API")
    p.add_argument("--api-host", default="127.0.0.1", help="REST API bind address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=8080, help="REST API port (default 8080)")
    p.add_argument("--xds-host", default="127.0.0.1", help="xDS gRPC bind address (default 127.0.0.1)")
    p.add_argument("--xds-port", type=int, default=18000, help="xDS gRPC port (default 18000)")
    p.add_argument("--db", default="weir.db", help="SQLite database file (default weir.db)")
    p.add_argument("--tokens", metavar="FILE", help="API tokens file (see `weir tokens`); without it the API has no "
                                                    "authentication and must stay on loopback")
    p.add_argument("--policies", metavar="DIR",
                   help="GitOps: apply every policy file in DIR, and again whenever a file changes")
    p.add_argument("--listen-address", default="0.0.0.0", help="address Envoy listeners bind (default 0.0.0.0)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --api-host (requires --tokens)")
    p.add_argument("--tick", type=float, default=1.0, help="engine tick interval in seconds (default 1.0)")
    p.add_argument("--analyzer", metavar="SPEC", default="sources",
                   help="'sources' (default: the policy's metric source and judge), 'none' (never promotes) or, "
                        "for demos and tests only, 'scripted:pass,inconclusive,...' (verdicts from the script, not traffic)")
    p.add_argument("--router", choices=("xds", "istio"), default="xds",
                   help="how routing reaches the data plane: xds (default: Weir serves Envoy over ADS) or istio "
                        "(Weir writes VirtualServices into the cluster; needs the istio extra and cluster access)")
    p.add_argument("--istio-namespace", default="default", metavar="NS",
                   help="with --router istio: the namespace of the VirtualServices (default default)")
    p.add_argument("--istio-gateway", action="append", default=[], metavar="NAME",
                   help="with --router istio: bind the VirtualServices to this gateway (repeatable; default the mesh)")
    p.add_argument("--envoy-admin", metavar="URL", action="append", default=[],
                   help="an Envoy admin URL to poll for the envoy-stats source (repeatable)")
    security.add_serve_security_options(p)
    from ..ha.cli import add_options as add_replica_options  # --store etcd://... and its TLS, lease flags

    add_replica_options(p)
    from ..notify.config import add_notify_options

    add_notify_options(p)
    p.set_defaults(func=_cmd_serve)
    security.add_certs_command(sub)

    p = sub.add_parser("tokens", help="make API tokens and the tokens file")
    tsub = p.add_subparsers(dest="tokens_command", required=True, metavar="SUBCOMMAND")
    t = tsub.add_parser("new", help="generate a token and print its tokens-file line")
    t.add_argument("--name", required=True, help="who the token is for (shown in the API log)")
    t.add_argument("--role", choices=("viewer", "operator"), default="viewer", help="default viewer")
    t.set_defaults(func=_cmd_tokens_new)
    t = tsub.add_parser("hash", help="print the SHA-256 of a token (from the argument or stdin)")
    t.add_argument("token", nargs="?", metavar="TOKEN",
                   help="omit to read it from stdin (keeps it out of shell history)")
    t.set_defaults(func=_cmd_tokens_hash)
    t = tsub.add_parser("check", help="validate a tokens file")
    t.add_argument("file", metavar="FILE")
    t.set_defaults(func=_cmd_tokens_check)

    p = sub.add_parser("apply", help="apply a rollout policy: start, update or restart its rollout (nothing if unchanged)",
                       parents=[conn])
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="policy YAML or JSON file ('-' for stdin)")
    output_option(p)
    p.set_defaults(func=_client_command(_cmd_apply))

    p = sub.add_parser("get", help="list rollouts, or show one (--watch follows it)", parents=[conn])
    p.add_argument("name", nargs="?", metavar="NAME")
    output_option(p)
    p.add_argument("-w", "--watch", action="store_true",
                   help="follow live: a line per rollout with step, weight, samples and SLO progress, redrawn "
                        "in place on a terminal; with NAME until it ends (exit 0 if Succeeded, 1 otherwise), "
                        "without until none is active")
    p.add_argument("--interval", type=float, default=1.0, help="--watch refresh interval in seconds (default 1)")
    p.set_defaults(func=_client_command(_cmd_get))

    p = sub.add_parser("describe", help="one rollout in detail: steps, verdict, evidence, events", parents=[conn])
    p.add_argument("name", metavar="NAME")
    p.add_argument("--events", type=int, default=10, metavar="N", help="recent events shown (default 10)")
    output_option(p)
    p.set_defaults(func=_client_command(_cmd_describe))

    for action, text in (
        ("pause", "pause a rollout (keeps the current weights)"),
        ("resume", "resume a paused or holding rollout"),
        ("promote", "promote a rollout to 100%% (asks the confirm-promotion gate)"),
        ("abort", "abort a rollout: all traffic back to stable"),
        ("retry", "start a rolled-back or failed rollout again from the first step"),
    ):
        p = sub.add_parser(action, help=text, parents=[conn])
        p.add_argument("name", metavar="NAME")
        output_option(p)
        p.set_defaults(func=_client_command(_cmd_action), action=action)

    p = sub.add_parser("set-weight", aliases=["weight"], help="set the canary weight until the next step",
                       parents=[conn])
    p.add_argument("name", metavar="NAME")
    p.add_argument("weight", type=int, metavar="W", help="percent of live traffic to the canary, 0-100")
    output_option(p)
    p.set_defaults(func=_client_command(_cmd_set_weight))

    p = sub.add_parser("events", help="a rollout's events: every change and why", parents=[conn])
    p.add_argument("name", metavar="NAME")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after this sequence number")
    output_option(p)
    p.set_defaults(func=_client_command(_cmd_events))

    p = sub.add_parser("report", help="write one rollout as a self-contained HTML file: plots and every decision's "
                                      "evidence", parents=[conn])
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", dest="file", metavar="FILE", help="the HTML file to write (default NAME.html)")
    p.set_defaults(func=_client_command(_cmd_report))

    p = sub.add_parser("proxies", help="connected Envoy proxies, their versions and NACKs", parents=[conn])
    output_option(p)
    p.set_defaults(func=_client_command(_cmd_proxies))

    p = sub.add_parser("endpoints", help="change where a version runs, without restarting its rollout")
    esub = p.add_subparsers(dest="endpoints_command", required=True, metavar="COMMAND")
    e = esub.add_parser("set", parents=[conn],
                        help="set the endpoints of the live version or of the active canary (make-before-break)",
                        description="Replace the endpoints of one version of a service: the live version (its "
                                    "release) or the active rollout's canary. The rollout goes on; the change is an "
                                    "EDS update and an event.")
    e.add_argument("service")
    e.add_argument("version")
    e.add_argument("endpoints", nargs="+", metavar="HOST:PORT[@WEIGHT]")
    output_option(e)
    e.set_defaults(func=_client_command(_cmd_endpoints_set))

    p = sub.add_parser("releases", help="what is live per service: version, endpoints, the rollout that made it live",
                       parents=[conn])
    output_option(p)
    p.set_defaults(func=_client_command(_cmd_releases))

    from ..mesh import commands as mesh_commands  # weir istio render|import, weir crd

    mesh_commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .polish import closed_pipe_exit, describe_subcommands

    parser = build_parser()
    describe_subcommands(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one INFO line per HTTP request would bury the client commands' output
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `weir ... | head`: the reader has all it wanted
        return closed_pipe_exit()


if __name__ == "__main__":
    sys.exit(main())
